"""``torrent-get``'s fields: a torrent that does not run reads the same through its record
as through a view, and a listing's text is the JSON ``json.dumps`` would write."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from torrent.daemon.fields import FIELDS, Listing, View
from torrent.daemon.service import Record
from torrent.daemon.store import StoredTorrent
from torrent.proto import bencoding
from torrent.proto.metainfo import Metainfo

PIECE = 16 * 1024


def _meta(name: str, sizes: list[int]) -> Metainfo:
    total = sum(sizes)
    pieces = b"".join(hashlib.sha1(bytes([i])).digest() for i in range(-(-total // PIECE)))
    info: dict[bytes, Any] = {b"name": name.encode(), b"piece length": PIECE, b"pieces": pieces}
    if len(sizes) == 1:
        info[b"length"] = sizes[0]
    else:
        info[b"files"] = [{b"length": n, b"path": [f"f{i}".encode()]} for i, n in enumerate(sizes)]
    top = {b"info": info, b"announce": b"http://127.0.0.1:1/announce", b"comment": "c\u00e9 \u2603".encode()}
    return Metainfo.from_bytes(bencoding.encode(top))


def _record(tid: int, meta: Metainfo | None, **stored: Any) -> Record:
    n = len(meta.info.files) if meta is not None else 0
    values: dict[str, Any] = {
        "id": tid,
        "info_hash": f"{tid:040x}",
        "name": meta.info.name if meta is not None else f"magnet {tid}",
        "metainfo": None,
        "magnet": "" if meta is not None else f"magnet:?xt=urn:btih:{tid:040x}",
        "download_dir": "/data/d\u00fcr",
        "paused": False,
        "queue_position": tid,
        "priorities": [0] * n,
        "wanted": [True] * n,
        "added_date": 1_700_000_000 + tid,
    }
    values.update(stored)
    return Record(StoredTorrent(**values), meta)


def _records() -> list[Record]:
    multi = _meta("multi", [40_000, 1_000, 70_000])
    single = _meta('caf\u00e9 "q" \\ \u2603', [50_000])
    complete = _record(1, single, done_date=1_700_000_100, uploaded=123_456, downloaded=50_000)
    complete.parked = True
    partial = _record(
        2,
        multi,
        wanted=[True, False, True],
        priorities=[1, 0, -1],
        have_bytes=30_000,
        labels=["a", "b"],
        limits={"downloadLimit": 7, "downloadLimited": True, "seedRatioLimit": 1.5},
    )
    stopped = _record(3, multi, paused=True, error="disk full", uploaded=5, downloaded=0)
    checking = _record(4, single)
    checking.checking = 0.25
    magnet = _record(5, None)
    empty = _record(6, multi, have_bytes=0)
    empty.finished = True
    return [complete, partial, stopped, checking, magnet, empty]


@pytest.mark.parametrize("name", sorted(n for n, f in FIELDS.items() if f.idle is not None))
def test_a_torrent_that_does_not_run_reads_the_same_without_a_view(name: str) -> None:
    field = FIELDS[name]
    assert field.idle is not None
    for r in _records():
        assert field.idle(r) == field.view(View(r, 1_700_000_500.0)), (name, r.id)


@pytest.mark.parametrize("table", [False, True])
def test_a_listing_is_the_json_of_its_fields(table: bool) -> None:
    records = _records()
    now = 1_700_000_500.0
    names = [*FIELDS, "noSuchField"]
    known = [n for n in names if n in FIELDS]
    views = [View(r, now) for r in records]
    if table:
        expected: Any = [known, *([FIELDS[n].view(v) for n in known] for v in views)]
    else:
        expected = [{n: FIELDS[n].view(v) for n in known} for v in views]
    text = Listing(names, table=table).json(records, now)
    assert text == json.dumps(expected, separators=(",", ":"))
    assert json.loads(text) == expected


def test_the_usual_list_fields_of_idle_torrents_need_no_view() -> None:
    listing = Listing(["id", "name", "status", "percentDone", "rateDownload", "rateUpload", "eta"])
    assert listing._idle is not None
    assert Listing(["id", "files"])._idle is None  # files always go through the view


def test_an_empty_field_list_lists_an_empty_object_per_torrent() -> None:
    assert Listing([]).json(_records()[:2], 0.0) == "[{},{}]"
    assert Listing([], table=True).json(_records()[:2], 0.0) == "[[],[],[]]"


def test_fields_of_one_value_for_every_idle_torrent_are_written_once() -> None:
    listing = Listing(["rateUpload", "etaIdle", "primary-mime-type"])
    assert listing._idle == []
    row = '{"rateUpload":0,"etaIdle":-1,"primary-mime-type":"application/octet-stream"}'
    assert listing.json(_records()[:2], 0.0) == f"[{row},{row}]"


def test_an_answer_is_the_json_of_its_values_with_raw_json_copied_in() -> None:
    from torrent.daemon.rpc import RawJson, _encode

    plain = {
        "result": "success",
        "arguments": {"torrent-added": {"id": 3, "name": "n\u00e9", "x": [1, None]}},
    }
    assert _encode(plain) == json.dumps(plain, separators=(",", ":"))
    listed = {"result": "success", "arguments": {"torrents": RawJson('[{"id":1}]'), "removed": [2]}}
    assert json.loads(_encode(listed)) == {
        "result": "success",
        "arguments": {"torrents": [{"id": 1}], "removed": [2]},
    }
