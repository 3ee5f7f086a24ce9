"""The daemon's SQLite store: records round-trip, ids are never reused, WAL mode,
settings persist, and a batch of statistics is one write."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from torrent.daemon.store import StateStore, StoredTorrent, Summary


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


def test_records_sharing_list_texts_load_with_lists_of_their_own(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    for i, name in enumerate(("a", "c", "d")):
        store.insert(_record(name, i))
    a, c, d = store.load()
    assert a.wanted == c.wanted == [True, False, True]
    a.wanted[0] = False
    a.priorities.append(1)
    a.labels.clear()
    a.limits["uploadLimit"] = 1
    assert (c.wanted, c.priorities, c.labels, c.limits) == (
        [True, False, True],
        [0, 1, -1],
        ["x", "y"],
        {"downloadLimit": 5},
    )
    assert d.files_done is not c.files_done
    assert d.files_done == [1, 2, 3]


def test_a_summarized_record_loads_without_its_metainfo_which_is_read_on_demand(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    a, old = _record("a", 0), _record("old", 1)
    a.summary = Summary(100, (60, 40), True, False, "ab" * 20)
    for r in (a, old):
        store.insert(r)
    store.close()
    store = StateStore(tmp_path)
    loaded, unsummarized = store.load()
    assert (loaded.metainfo, loaded.summary) == (None, a.summary)
    assert store.metainfo(loaded.id) == b"d4:infod...ee"
    # A record from before summaries comes with its bytes, to be summarized.
    assert (unsummarized.metainfo, unsummarized.summary) == (b"d4:infod...ee", None)
    assert store.metainfo(12345) is None


def test_every_record_gets_its_own_summary_read_in_one_pass(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    summaries = [
        Summary(i * 10, (i * 10,), i % 2 == 0, i == 3, "cd" * 20 if i == 2 else "") for i in range(5)
    ]
    records = [_record(f"t{i}", i) for i in range(6)]  # the last has no summary (a magnet's, unknown)
    for r, summary in zip(records, [*summaries, None], strict=True):
        r.summary = summary
        store.insert(r)
    store.close()
    loaded = StateStore(tmp_path).load()
    assert [r.summary for r in loaded] == [*summaries, None]
    assert all(isinstance(r.summary.file_lengths, tuple) for r in loaded[:5] if r.summary is not None)


def test_a_malformed_summary_fails_the_load_as_it_always_did(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.insert(_record("a", 0))
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        db.execute("UPDATE torrents SET summary = '1, 2'")
    with pytest.raises((ValueError, TypeError)):
        StateStore(tmp_path).load()


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


def test_a_schema_1_database_gains_the_renames_column_and_keeps_its_records(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "state.sqlite3")
    db.executescript(
        """
        CREATE TABLE torrents (
            id INTEGER PRIMARY KEY AUTOINCREMENT, info_hash TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
            metainfo BLOB, magnet TEXT NOT NULL DEFAULT '', download_dir TEXT NOT NULL,
            paused INTEGER NOT NULL DEFAULT 0, queue_position INTEGER NOT NULL,
            priorities TEXT NOT NULL DEFAULT '[]', wanted TEXT NOT NULL DEFAULT '[]',
            labels TEXT NOT NULL DEFAULT '[]', limits TEXT NOT NULL DEFAULT '{}',
            added_date INTEGER NOT NULL, done_date INTEGER NOT NULL DEFAULT 0,
            uploaded INTEGER NOT NULL DEFAULT 0, downloaded INTEGER NOT NULL DEFAULT 0,
            error TEXT NOT NULL DEFAULT '', have_bytes INTEGER NOT NULL DEFAULT 0,
            files_done TEXT NOT NULL DEFAULT '[]'
        );
        INSERT INTO torrents (info_hash, name, download_dir, queue_position, added_date)
            VALUES ('00112233445566778899aabbccddeeff00112233', 'old', '/data', 0, 1700000000);
        PRAGMA user_version=1;
        """
    )
    db.close()
    store = StateStore(tmp_path)
    [old] = store.load()
    assert (old.name, old.renames) == ("old", {})
    assert not old.check_owed  # every later column too, at its default
    old.renames = {"name": "new"}
    old.check_owed = True
    store.update(old)
    store.close()
    [again] = StateStore(tmp_path).load()
    assert again.renames == {"name": "new"}
    assert again.check_owed


def test_a_group_of_inserts_is_stored_by_one_commit_and_only_then(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    other = sqlite3.connect(tmp_path / "state.sqlite3")
    commits: list[str] = []
    store._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    records = [_record(name, i) for i, name in enumerate(("a", "b", "c"))]
    ids = [store.insert_pending(r) for r in records]
    assert ids == [1, 2, 3]
    assert store.pending == 3
    assert other.execute("SELECT COUNT(*) FROM torrents").fetchone()[0] == 0  # not yet committed
    store.commit()
    assert store.pending == 0
    assert commits == ["COMMIT"]
    assert other.execute("SELECT COUNT(*) FROM torrents").fetchone()[0] == 3
    store.commit()  # nothing open: nothing to do
    assert commits == ["COMMIT"]
    other.close()
    store.delete(3)
    store.close()
    store = StateStore(tmp_path)
    assert store.insert_pending(_record("d", 3)) == 4  # never an id used before, removed or not
    assert store.insert(_record("e", 4)) == 5
    assert store.insert_pending(_record("f", 5)) == 6
    store.commit()
    assert [r.id for r in store.load()] == [1, 2, 4, 5, 6]


def test_another_write_commits_the_open_group_first(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    a = _record("a", 0)
    store.insert_pending(a)
    store.set_settings({"speed-limit-up": 5})  # its own transaction, after the group's
    store.commit()
    store._db.close()  # as a kill -9 would: no commit at close
    assert [r.name for r in StateStore(tmp_path).load()] == ["a"]


class _FailingCommits:
    """A connection whose COMMIT fails (as on a full disk) while ``failing``."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.failing = True

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT" and self.failing:
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def test_a_group_that_cannot_be_stored_is_rolled_back_and_reported(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.insert(_record("a", 0))
    store.insert_pending(_record("b", 1))
    failing = _FailingCommits(store._db)
    store._db = failing  # type: ignore[assignment]
    with pytest.raises(sqlite3.OperationalError):
        store.set_settings({"x": 1})  # the group's commit fails first, then this one's
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        store.commit()  # the group's failure, reported to whoever waits for the group
    store.commit()  # reported once
    failing.failing = False
    assert [r.name for r in store.load()] == ["a"]
    store.insert_pending(_record("c", 1))
    store.commit()
    assert [r.name for r in store.load()] == ["a", "c"]


@pytest.mark.parametrize(
    "values", [[], [0], [1], [-1, 0, 1], [0, 0, 0, 0], [2, -2], [3], [16384], [0, 1, 0, 1, 0], [1] * 9]
)
def test_list_texts_are_what_json_makes_of_them_twice_over(values: list[int]) -> None:
    from torrent.daemon.store import _list_text

    assert _list_text(values) == _list_text(list(values)) == json.dumps(values)
