"""Cross-checks with libtorrent (PyPI ``libtorrent``), the reference implementation.

Every torrent ``create`` makes loads in libtorrent with the same info hash, name, file
list, piece length and piece hashes; every fixture gives the same info hash in both;
libtorrent's piece-length limits are ours. No network: libtorrent only parses here.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import pytest

from torrent.create import create
from torrent.disk.torrent_file import read_metainfo
from torrent.errors import MetainfoError
from torrent.proto import bencoding
from torrent.proto.metainfo import MAX_PIECE_LENGTH, Metainfo

if os.environ.get("CI") == "true":
    import libtorrent as lt
else:
    lt = pytest.importorskip("libtorrent", reason="libtorrent (pip install libtorrent) is the reference")

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
HASHES = json.loads((FIXTURES / "HASHES.json").read_text(encoding="utf-8"))


def _lt_info(data: bytes) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return lt.torrent_info(data)  # from the bytes: libtorrent hashes the raw info span too


def _check_same(m: Metainfo) -> None:
    ti = _lt_info(m.to_bytes())
    assert str(ti.info_hashes().v1) == m.info_hash.hex()
    assert ti.name() == m.info.name
    assert ti.piece_length() == m.info.piece_length
    assert ti.num_pieces() == m.info.num_pieces
    assert ti.total_size() == m.info.total_length
    fs = ti.files()
    ours = [
        (os.path.join(m.info.name, *f.path) if m.info.multi_file else f.path[0], f.length)
        for f in m.info.files
    ]
    theirs = [(fs.file_path(i), fs.file_size(i)) for i in range(fs.num_files())]
    assert theirs == ours
    for i in range(ti.num_pieces()):
        assert bytes(ti.hash_for_piece(i)) == m.info.piece_hash(i)
    assert ti.priv() == m.info.private
    assert [t.url for t in ti.trackers()] == list(m.trackers)
    assert [t.tier for t in ti.trackers()] == [i for i, tier in enumerate(m.announce_list) for _ in tier]


@pytest.mark.parametrize("size", [1, 16383, 16384, 16385, 100_001, 3 * 2**20 + 7])
@pytest.mark.parametrize("piece_length", [None, 16384, 65536])
def test_single_file_torrents_load_identically(tmp_path: Path, size: int, piece_length: int | None) -> None:
    f = tmp_path / "odd size.bin"
    f.write_bytes(os.urandom(size))
    _check_same(create(f, piece_length=piece_length, trackers=["http://127.0.0.1:1/a"], no_date=True))


@pytest.mark.parametrize("piece_length", [None, 16384, 32768, 2**20])
def test_multi_file_torrents_load_identically(tmp_path: Path, piece_length: int | None) -> None:
    d = tmp_path / "multi"
    sizes = {
        "a.txt": 1,
        "b/c/d.bin": 40_000,
        "b/empty": 0,
        "b/x-y": 16_384,
        "ünï/日本.txt": 777,
        "z/last.bin": 200_003,
        "a-b": 5,
        "a.b": 6,
    }
    for rel, n in sizes.items():
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(n))
    m = create(
        d,
        piece_length=piece_length,
        private=True,
        source="S",
        trackers=[["http://127.0.0.1:1/a", "http://127.0.0.1:2/a"], "udp://127.0.0.1:3"],
        web_seeds=["http://127.0.0.1:4/ws/"],
        comment="c",
    )
    _check_same(m)
    ti = _lt_info(m.to_bytes())
    assert [w["url"] for w in ti.web_seeds()] == ["http://127.0.0.1:4/ws/"]


@pytest.mark.parametrize("name", sorted(HASHES["torrents"]))
def test_fixtures_have_the_same_info_hash_in_both(name: str) -> None:
    data = (FIXTURES / name).read_bytes()
    ours = Metainfo.from_bytes(data)
    ti = _lt_info(data)
    assert str(ti.info_hashes().v1) == ours.info_hash.hex() == HASHES["torrents"][name]["info_hash"]
    fs = ti.files()
    assert fs.num_files() == len(ours.info.files)
    assert [fs.file_size(i) for i in range(fs.num_files())] == [f.length for f in ours.info.files]
    assert [bool(fs.file_flags(i) & 1) for i in range(fs.num_files())] == [f.padding for f in ours.info.files]


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("single.mktorrent.torrent", {}),
        ("multi.mktorrent.torrent", {}),
        ("private.mktorrent.torrent", {"private": True, "source": "PYTORRENT"}),
    ],
)
def test_create_reproduces_mktorrents_info_hash(name: str, options: dict[str, Any]) -> None:
    """Same payload, same piece length, same order: the same info dict, byte for byte."""
    facts = HASHES["torrents"][name]
    m = create(FIXTURES / facts["payload"], piece_length=facts["piece_length"], **options)
    assert m.info_hash.hex() == facts["info_hash"]
    assert m.info_bytes == read_metainfo(FIXTURES / name).info_bytes


@pytest.mark.parametrize("piece_length", [1, 1000, 20_000, 3 * 16384, MAX_PIECE_LENGTH])
def test_piece_lengths_libtorrent_accepts_we_accept(piece_length: int) -> None:
    data = b"p" * 50_000
    import hashlib

    pieces = b"".join(
        hashlib.sha1(data[i : i + piece_length]).digest() for i in range(0, len(data), piece_length)
    )
    raw = bencoding.encode(
        {b"info": {b"name": b"x", b"piece length": piece_length, b"pieces": pieces, b"length": len(data)}}
    )
    ti = _lt_info(raw)
    m = Metainfo.from_bytes(raw)
    assert ti.piece_length() == m.info.piece_length == piece_length
    assert str(ti.info_hashes().v1) == m.info_hash.hex()
    is_power = piece_length & (piece_length - 1) == 0 and piece_length >= 16384
    assert bool(m.warnings) is not is_power


@pytest.mark.parametrize("piece_length", [0, -16384, MAX_PIECE_LENGTH + 1, 2**29, 2**30])
def test_piece_lengths_libtorrent_refuses_we_refuse(piece_length: int) -> None:
    raw = bencoding.encode(
        {b"info": {b"name": b"x", b"piece length": piece_length, b"pieces": b"\x00" * 20, b"length": 1}}
    )
    with pytest.raises(RuntimeError):
        _lt_info(raw)
    with pytest.raises(MetainfoError, match="piece length"):
        Metainfo.from_bytes(raw)


@pytest.mark.parametrize("name", sorted(HASHES["repaired"]))
def test_repaired_fixtures_load_in_libtorrent_and_here_alike(name: str) -> None:
    # libtorrent sanitises odd paths, renames duplicates, ignores a wrongly typed
    # announce-list or url-list, takes 'files' over 'length' and ignores bytes after the
    # top-level dict; so do we (tests/integration/test_corpus_libtorrent.py compares the
    # file lists).
    data = (FIXTURES / "repaired" / name).read_bytes()
    assert str(_lt_info(data).info_hashes().v1) == Metainfo.from_bytes(data).info_hash.hex()


@pytest.mark.parametrize("name", sorted(HASHES["malformed"]))
def test_malformed_fixtures_libtorrent_refuses_too(name: str) -> None:
    with pytest.raises(RuntimeError):
        _lt_info((FIXTURES / "malformed" / name).read_bytes())
