"""``create`` of v2 and hybrid torrents gives libtorrent's info dict byte for byte (so both
info hashes equal libtorrent's) for the same input and piece length.

No network: libtorrent only creates torrents here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cli.main import main
from tests.lt_create import lt_create, lt_info
from torrent.create import create
from torrent.disk.torrent_file import read_metainfo
from torrent.proto import bencoding
from torrent.proto.metainfo import Metainfo

PIECES = [16384, 32768, 65536, 2**20, 4 * 2**20]


def _same_as_libtorrent(path: Path, fmt: str, piece_length: int) -> Metainfo:
    ours = create(path, piece_length=piece_length, torrent_format=fmt, no_date=True)
    theirs_bytes = lt_create(path, fmt, piece_length)
    theirs = bencoding.decode(theirs_bytes)
    assert ours.info_bytes == bencoding.encode(theirs[b"info"])
    assert ours.raw.get(b"piece layers", {}) == theirs.get(b"piece layers", {})
    hashes = lt_info(ours.to_bytes()).info_hashes()
    assert ours.info_hash_v2 is not None
    assert str(hashes.v2) == ours.info_hash_v2.hex()
    if fmt == "hybrid":
        assert str(hashes.v1) == ours.info_hash.hex()
    return ours


@pytest.mark.parametrize("fmt", ["v2", "hybrid"])
@pytest.mark.parametrize("piece_length", PIECES)
@pytest.mark.parametrize("size", [1, 16383, 16384, 16385, 65537, 1_000_001])
def test_single_file(tmp_path: Path, fmt: str, piece_length: int, size: int) -> None:
    f = tmp_path / "one.bin"
    f.write_bytes(os.urandom(size))
    _same_as_libtorrent(f, fmt, piece_length)


@pytest.mark.parametrize("fmt", ["v2", "hybrid"])
@pytest.mark.parametrize("piece_length", PIECES)
def test_many_files(tmp_path: Path, fmt: str, piece_length: int) -> None:
    d = tmp_path / "many"
    sizes = {
        "a.txt": 1,
        "b/c/d.bin": 40_000,
        "b/empty": 0,
        "b/x-y": 16_384,
        "ünï/日本.txt": 777,
        "z/last.bin": 300_003,
        "zz/empty too": 0,
        "a.b": 65_536,
        "big.bin": 2 * 2**20 + 5,
    }
    for rel, size in sizes.items():
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size))
    m = _same_as_libtorrent(d, fmt, piece_length)
    assert m.info.multi_file


def test_cli_create_format_writes_a_hybrid(tmp_path: Path) -> None:
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(100_000))
    out = tmp_path / "h.torrent"
    argv = ["create", str(f), "--format", "hybrid", "--piece-length", "16384", "--no-date", "-o", str(out)]
    assert main(argv) == 0
    m = read_metainfo(out)
    assert m.info.has_v1
    assert m.info.has_v2
    assert m.info_hash_v2 == create(f, piece_length=16384, torrent_format="hybrid", no_date=True).info_hash_v2


@pytest.mark.parametrize("fmt", ["v2", "hybrid"])
@pytest.mark.parametrize("piece_length", [16384, 65536, 2**20])
def test_worker_processes_give_libtorrents_info_dict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, piece_length: int
) -> None:
    import torrent.create_hashing as hashing

    # Processes for any payload, a piece per batch: batches end inside files and
    # padding, and every worker hashes some of each.
    monkeypatch.setattr(hashing, "PROCESS_MIN_BYTES", 0)
    monkeypatch.setattr(hashing, "BATCH_BYTES", 16384)
    workers: list[int] = []
    real_start = hashing.ProcessHashJob.start

    def start(job: hashing.ProcessHashJob) -> None:
        real_start(job)
        workers.append(len(job.pids))

    monkeypatch.setattr(hashing.ProcessHashJob, "start", start)
    d = tmp_path / "many"
    for i in range(40):
        p = d / f"d{i % 4}" / f"f{i:02d}"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(0 if i % 9 == 0 else (i * 37_171) % 300_000 + 1))
    (d / "big.bin").write_bytes(os.urandom(3 * 2**20 + 7))
    _same_as_libtorrent(d, fmt, piece_length)
    _same_as_libtorrent(d / "big.bin", fmt, piece_length)
    assert len(workers) == 2
    assert min(workers) >= 2
