"""The daemon's SQLite store: records round-trip, ids are never reused, WAL mode,
settings persist, and a batch of statistics is one write."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from torrent.daemon.store import StateStore, StoredTorrent


def _record(name: str, position: int) -> StoredTorrent:
    return StoredTorrent(
        id=0,
        info_hash=(name.encode().hex() * 40)[:40],
        name=name,
        metainfo=b"d4:infod...ee" if name != "magnet" else None,
        magnet="magnet:?xt=urn:btih:" + "ab" * 20 if name == "magnet" else "",
        download_dir="/data",
        paused=name == "b",
        queue_position=position,
        priorities=[0, 1, -1],
        wanted=[True, False, True],
        labels=["x", "y"],
        limits={"downloadLimit": 5},
        added_date=1700000000,
        files_done=[1, 2, 3],
        have_bytes=6,
    )


def test_records_round_trip_in_queue_order(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    a, b, m = _record("a", 2), _record("b", 0), _record("magnet", 1)
    for r in (a, b, m):
        store.insert(r)
    assert [a.id, b.id, m.id] == [1, 2, 3]
    b.labels = ["changed"]
    store.update(b)
    store.save_stats([(a.id, 10, 20), (m.id, 30, 40)])
    store.close()
    loaded = StateStore(tmp_path).load()
    assert [r.name for r in loaded] == ["b", "magnet", "a"]
    assert loaded[0] == b
    assert (loaded[2].uploaded, loaded[2].downloaded) == (10, 20)
    assert loaded[1].metainfo is None
    assert loaded[2].wanted == [True, False, True]


def test_ids_are_never_reused_and_wal_is_on(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    first = store.insert(_record("a", 0))
    store.delete(first)
    assert store.insert(_record("a", 0)) == first + 1
    store.close()
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_settings_persist_as_json(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.set_settings({"speed-limit-down": 50, "speed-limit-down-enabled": True})
    store.set_settings({"speed-limit-down": 70})
    store.close()
    assert StateStore(tmp_path).settings() == {"speed-limit-down": 70, "speed-limit-down-enabled": True}


def test_a_failed_transaction_changes_nothing(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    a = _record("a", 0)
    store.insert(a)
    dup = _record("a", 1)  # same info hash: the UNIQUE constraint refuses it
    with pytest.raises(sqlite3.IntegrityError):
        store.insert(dup)
    assert [r.id for r in store.load()] == [a.id]
