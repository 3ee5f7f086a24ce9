"""torrent.create: scanning, ordering, refusals, the piece-length rule and the hashes."""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from torrent.create import (
    MAX_AUTO_PIECE_LENGTH,
    HashJob,
    SourceFile,
    auto_piece_length,
    create,
    hash_files,
    make,
    scan,
)
from torrent.errors import MetainfoError, StorageError
from torrent.proto.metainfo import Metainfo, PieceCheck


def _tree(base: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = base / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return base


def _expected_pieces(data: bytes, piece_length: int) -> bytes:
    return b"".join(
        hashlib.sha1(data[i : i + piece_length]).digest() for i in range(0, len(data), piece_length)
    )


def test_single_file_fields_and_hashes(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    f = tmp_path / "payload.bin"
    f.write_bytes(data)
    m = create(f, piece_length=16384, trackers=["http://t/a"], comment="c", no_date=True)
    assert m.info.name == "payload.bin"
    assert not m.info.multi_file
    assert m.info.total_length == 100_000
    assert m.info.pieces == _expected_pieces(data, 16384)
    assert m.announce == "http://t/a"
    assert m.announce_list == (("http://t/a",),)
    assert b"announce-list" not in m.raw  # one URL: announce alone
    assert m.comment == "c"
    assert m.creation_date is None
    assert m.created_by.startswith("pytorrent/")
    assert m.info_bytes == m.to_bytes()[m.to_bytes().index(b"4:infod") + 6 : -1]
    assert m.info_hash == hashlib.sha1(m.info_bytes).digest()


def test_created_metainfo_equals_its_parse(tmp_path: Path) -> None:
    _tree(tmp_path / "d", {"a": b"x" * 5000, "sub/b": b"y" * 40000, "sub/empty": b""})
    m = create(
        tmp_path / "d",
        piece_length=16384,
        trackers=[["http://a/1", "http://b/1"], "udp://c:80"],
        private=True,
        source="SRC",
        web_seeds=["http://ws/"],
        comment="hello",
        creation_date=1_700_000_000,
    )
    again = Metainfo.from_bytes(m.to_bytes())
    assert again == m
    assert again.raw == m.raw
    assert again.info.raw == m.info.raw
    assert m.announce_list == (("http://a/1", "http://b/1"), ("udp://c:80",))
    assert m.info.private
    assert m.info.source == "SRC"
    assert m.url_list == ("http://ws/",)
    assert m.creation_date == 1_700_000_000


def test_multi_file_order_is_by_path_components_and_includes_empty_files(tmp_path: Path) -> None:
    # "a.txt" sorts before "a/..." in a whole-string compare ('.' < '/') but after it
    # component-wise ("a" < "a.txt"): we use components, like a BEP 52 file tree.
    files = {"a.txt": b"1", "a/z": b"22", "b": b"", "A": b"4444", "é/x": b"55555", "a-b": b"666666"}
    _tree(tmp_path / "d", files)
    m = create(tmp_path / "d", piece_length=16384, no_date=True)
    paths = [f.path_str for f in m.info.files]
    assert paths == ["A", "a/z", "a-b", "a.txt", "b", "é/x"]
    assert [f.length for f in m.info.files] == [4, 2, 6, 1, 0, 5]
    joined = b"".join(files[p] for p in paths)
    assert m.info.pieces == _expected_pieces(joined, 16384)


def test_same_input_same_info_hash(tmp_path: Path) -> None:
    _tree(tmp_path / "d", {f"dir{i}/f{j}": os.urandom(3000 + i * j) for i in range(3) for j in range(4)})
    a = create(tmp_path / "d", no_date=True, threads=1)
    b = create(tmp_path / "d", no_date=True, threads=4)
    c = create(tmp_path / "d")  # the date lives outside info
    assert a.info_hash == b.info_hash == c.info_hash
    assert a.to_bytes() == b.to_bytes()


def test_pieces_spanning_many_files_match_a_plain_hash(tmp_path: Path) -> None:
    rnd = os.urandom(300_000)
    sizes = [0, 1, 16383, 16384, 16385, 7, 0, 100_000, 3, 50_000]
    files, pos = {}, 0
    for i, n in enumerate(sizes):
        files[f"f{i:02d}"] = rnd[pos : pos + n]
        pos += n
    _tree(tmp_path / "d", files)
    m = create(tmp_path / "d", piece_length=16384, threads=3)
    assert m.info.pieces == _expected_pieces(rnd[:pos], 16384)


def test_name_override_and_output_is_validated(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    assert create(tmp_path / "f", name="other").info.name == "other"
    with pytest.raises(MetainfoError, match="name"):
        create(tmp_path / "f", name="../evil")


@pytest.mark.parametrize("bad", [1000, 16385, 3 * 16384, 512 * 2**20, 0, -16384])
def test_explicit_piece_length_must_be_a_power_of_two_in_range(tmp_path: Path, bad: int) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    with pytest.raises(MetainfoError, match="piece length"):
        create(tmp_path / "f", piece_length=bad)


def test_empty_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    with pytest.raises(MetainfoError, match="empty directory"):
        create(tmp_path / "d")


def test_zero_byte_payloads_are_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(MetainfoError, match="empty file"):
        create(tmp_path / "empty")
    _tree(tmp_path / "d", {"a": b"", "b/c": b""})
    with pytest.raises(MetainfoError, match="only empty files"):
        create(tmp_path / "d")


def test_missing_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MetainfoError, match="does not exist"):
        create(tmp_path / "nope")


def test_symlinks_are_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _tree(outside, {"real.bin": b"r" * 1000, "dir/inner": b"i" * 10})
    d = tmp_path / "d"
    d.mkdir()
    (d / "own").write_bytes(b"o" * 5)
    (d / "link.bin").symlink_to(outside / "real.bin")
    (d / "linkdir").symlink_to(outside / "dir")
    m = create(d, piece_length=16384)
    assert [(f.path_str, f.length) for f in m.info.files] == [
        ("link.bin", 1000),
        ("linkdir/inner", 10),
        ("own", 5),
    ]
    assert m.info.pieces == _expected_pieces(b"r" * 1000 + b"i" * 10 + b"o" * 5, 16384)
    # A symlink given as the path is followed too; the name is the link's.
    single = create(d / "link.bin")
    assert single.info.name == "link.bin"
    assert single.info.total_length == 1000


def test_broken_symlink_and_loop_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_bytes(b"a")
    (d / "dangling").symlink_to(tmp_path / "missing")
    with pytest.raises(MetainfoError, match="points nowhere"):
        create(d)
    (d / "dangling").unlink()
    (d / "loop").symlink_to(d)
    with pytest.raises(MetainfoError, match="loop"):
        create(d)


def test_special_files_and_bad_names_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_bytes(b"a")
    os.mkfifo(d / "fifo")
    with pytest.raises(MetainfoError, match="special file"):
        create(d)
    (d / "fifo").unlink()
    (d / "back\\slash").write_bytes(b"b")
    with pytest.raises(MetainfoError, match="separator"):
        create(d)
    (d / "back\\slash").unlink()
    os.close(os.open(os.fsencode(d) + b"/bad\xff", os.O_CREAT | os.O_WRONLY))
    with pytest.raises(MetainfoError, match="UTF-8"):
        create(d)


def test_scan_returns_torrent_order(tmp_path: Path) -> None:
    _tree(tmp_path / "d", {"b": b"1", "a/c": b"22"})
    multi, files = scan(tmp_path / "d")
    assert multi
    assert [(f.path, f.length) for f in files] == [(("a", "c"), 2), (("b",), 1)]


def test_scan_hands_the_files_over_in_order_each_and_a_list_at_a_time(tmp_path: Path) -> None:
    from torrent.create import FEED_EVERY

    names = {f"m/{i:03d}": bytes(i % 3) for i in range(2 * FEED_EVERY + 5)}
    names.update({"a/x": b"1", "m/040d/deeper": b"22", "z": b""})
    d = _tree(tmp_path / "d", names)
    runs: list[list[SourceFile]] = []
    each: list[SourceFile] = []
    multi, files = scan(d, each.append, on_files=runs.append)
    assert multi
    assert [f.path for f in files] == sorted(tuple(n.split("/")) for n in names)
    assert each == files
    assert [f for run in runs for f in run] == files
    assert all(1 <= len(run) <= FEED_EVERY for run in runs)
    # A directory's files before a subdirectory are handed over before the walk goes down.
    assert any(run[-1].path == ("m", "040") for run in runs)


@pytest.fixture(
    params=[
        "mmap",
        "preadv",
        "mmap, small chunks",
        "preadv, small chunks",
        "no fadvise",
        "processes",
        "small files whole",
        "small files mapped",
        "small files unmappable",
    ]
)
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each hashing test runs with the mapped reader, with the ``preadv`` one, with chunks
    smaller than the test's pieces (so pieces and blocks span chunks) on both, without
    ``posix_fadvise`` (the others ask for read-ahead even on these small files), in
    worker processes (one piece per batch, so even these small payloads get two workers;
    the test fails if no worker process was started), and with a v1 job's small files
    read whole, mapped whole (none read), or refused by ``mmap`` (a file system that
    cannot map them)."""
    import torrent.create_hashing as hashing

    if not request.param.startswith("small files"):
        monkeypatch.setattr(hashing, "ADVISE_MIN_BYTES", 0)
    if request.param.startswith("preadv"):
        monkeypatch.setattr(hashing, "_mmap", None)
    if request.param in ("small files mapped", "small files unmappable"):
        monkeypatch.setattr(hashing, "READ_WHOLE_BYTES", 0)
    if request.param == "small files unmappable":

        def refuse(*args: object) -> object:
            raise OSError(errno.ENODEV, "no mapping here")

        monkeypatch.setattr(hashing, "_mmap", types.SimpleNamespace(**{**vars(mmap), "mmap": refuse}))
    if request.param.endswith("small chunks"):
        monkeypatch.setattr(hashing, "CHUNK_BYTES", 2 * 16384)
    if request.param == "no fadvise":
        monkeypatch.setattr(hashing, "_FADVISE", None)
    started: list[int] = []
    if request.param == "processes":
        assert hashing.processes_possible(), f"threads left running: {threading.enumerate()}"
        monkeypatch.setattr(hashing, "PROCESS_MIN_BYTES", 0)
        monkeypatch.setattr(hashing, "BATCH_BYTES", 16384)
        real_start = hashing.ProcessHashJob.start

        def start(job: hashing.ProcessHashJob) -> None:
            real_start(job)
            started.append(len(job.pids))

        monkeypatch.setattr(hashing.ProcessHashJob, "start", start)
    yield str(request.param)
    if request.param == "processes":
        assert started
        assert min(started) >= 2


def test_both_readers_give_the_hashes_of_the_bytes(tmp_path: Path, reader: str) -> None:
    # Files that end inside pieces, a file smaller than a page, batches spanning files,
    # padding (hybrid), and a short last piece.
    d = _tree(
        tmp_path / "d",
        {"a": os.urandom(70_001), "b/c": os.urandom(5), "b/d": os.urandom(300_000), "e": b""},
    )
    payload = b"".join((d / rel).read_bytes() for rel in ("a", "b/c", "b/d", "e"))
    for piece_length in (16384, 65536):
        meta = create(d, piece_length=piece_length, threads=3)
        expected = b"".join(
            hashlib.sha1(payload[i : i + piece_length]).digest() for i in range(0, len(payload), piece_length)
        )
        assert meta.info.pieces == expected
        for fmt in ("v2", "hybrid"):
            v2 = create(d, piece_length=piece_length, torrent_format=fmt, threads=2)
            checks = {v2.info.check_piece(i, _piece_of(d, v2, i)) for i in range(v2.info.num_pieces)}
            assert checks == {PieceCheck.PASSED}


def _piece_of(d: Path, meta: Metainfo, index: int) -> bytes:
    """Piece ``index`` of ``meta``'s payload read from ``d`` (padding as zeros)."""
    out = bytearray()
    start, end = index * meta.info.piece_length, (index + 1) * meta.info.piece_length
    for f in meta.info.files:
        lo, hi = max(start, f.offset), min(end, f.offset + f.length)
        if lo < hi:
            out += (
                bytes(hi - lo)
                if f.padding
                else d.joinpath(*f.path).read_bytes()[lo - f.offset : hi - f.offset]
            )
    return bytes(out)


@pytest.mark.parametrize("fmt", ["v2", "hybrid"])
def test_v2_metainfo_built_by_create_is_what_parsing_its_bytes_gives(tmp_path: Path, fmt: str) -> None:
    d = _tree(
        tmp_path / "d",
        {"a/x": os.urandom(100_000), "a/empty": b"", "b": os.urandom(40_000), "c": os.urandom(5)},
    )
    fields = dict(
        trackers=[["http://a.example/announce", "http://b.example/announce"], "udp://c.example:1"],
        web_seeds=["http://w.example/"],
        comment="c",
        private=True,
        source="s",
        torrent_format=fmt,
    )
    for path, piece_length in (
        (d, 16384),
        (d, 65536),
        (d / "b", 16384),
        (d / "c", 16384),
        (d / "a" / "x", 32768),
    ):
        made = create(path, piece_length=piece_length, **fields)  # type: ignore[arg-type]
        parsed = Metainfo.from_bytes(made.to_bytes())
        assert made == parsed
        assert made.info.piece_layers == parsed.info.piece_layers
        assert made.info.raw == parsed.info.raw
        assert made.raw == parsed.raw


@pytest.mark.parametrize("fmt", ["v1", "v2", "hybrid"])
def test_make_gives_the_bytes_and_facts_of_the_metainfo_create_gives(tmp_path: Path, fmt: str) -> None:
    d = _tree(
        tmp_path / "d",
        {"a/x": os.urandom(100_000), "a/empty": b"", "b": os.urandom(40_000), "c": os.urandom(5)},
    )
    fields = dict(
        trackers=[["http://a.example/announce", "http://b.example/announce"], "udp://c.example:1"],
        web_seeds=["http://w.example/"],
        comment="c",
        private=True,
        source="s",
        creation_date=1_700_000_000,
        torrent_format=fmt,
    )
    for path, piece_length in (
        (d, 16384),
        (d, None),
        (d / "b", 16384),
        (d / "c", None),
        (d / "a" / "x", 32768),
    ):
        made = make(path, piece_length=piece_length, **fields)  # type: ignore[arg-type]
        meta = create(path, piece_length=piece_length, **fields)  # type: ignore[arg-type]
        assert made.data == meta.to_bytes()
        assert made.metainfo() == meta
        info = meta.info
        assert made.name == info.name
        assert made.info_hash_v1 == meta.info_hash_v1
        assert made.info_hash_v2 == meta.info_hash_v2
        assert made.size == info.total_length - info.padding_bytes
        assert made.files == sum(1 for f in info.files if not f.padding)
        assert made.piece_length == info.piece_length
        assert made.pieces == info.num_pieces


def test_padding_given_to_hash_files_reads_as_zeros(tmp_path: Path, reader: str) -> None:
    # A caller's own BEP 47 layout hashed with SHA-1 alone (no v2): padding between
    # files and across a piece boundary, and a small file that starts inside a piece
    # and ends in the next.
    a, b = os.urandom(10_000), os.urandom(20_000)
    (tmp_path / "a").write_bytes(a)
    (tmp_path / "b").write_bytes(b)
    files = [
        SourceFile(("a",), str(tmp_path / "a"), len(a)),
        SourceFile((".pad", "30000"), "", 30_000),
        SourceFile(("b",), str(tmp_path / "b"), len(b)),
    ]
    payload = a + bytes(30_000) + b
    expected = b"".join(hashlib.sha1(payload[i : i + 16384]).digest() for i in range(0, len(payload), 16384))
    assert hash_files(files, 16384, threads=2) == expected


def test_file_that_shrinks_while_hashing_is_a_storage_error(tmp_path: Path, reader: str) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x" * 100)
    # A whole piece before: two batches when each is one piece (two worker processes).
    first = tmp_path / "first"
    first.write_bytes(b"y" * 16384)
    before = SourceFile(("first",), str(first), 16384)
    with pytest.raises(StorageError, match="shrank"):
        hash_files([before, SourceFile(("f",), str(f), 200)], 16384)
    with pytest.raises(StorageError, match="cannot open"):
        hash_files([before, SourceFile(("g",), str(tmp_path / "g"), 10)], 16384)


def test_progress_reports_reach_the_total_on_the_calling_thread(tmp_path: Path) -> None:
    import threading

    f = tmp_path / "f"
    f.write_bytes(os.urandom(200_000))
    calls: list[tuple[int, int, str]] = []
    create(f, piece_length=16384, progress=lambda d, t: calls.append((d, t, threading.current_thread().name)))
    assert calls[-1][:2] == (200_000, 200_000)
    assert all(name == threading.current_thread().name for _, _, name in calls)
    assert [d for d, _, _ in calls] == sorted(d for d, _, _ in calls)


def test_a_failing_progress_callback_stops_the_workers(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"z" * 50_000)

    def boom(done: int, total: int) -> None:
        raise KeyboardInterrupt

    job = HashJob(16384)
    job.start()
    job.feed([SourceFile(("f",), str(f), 50_000)])
    job.close_feed()
    with pytest.raises(KeyboardInterrupt):
        job.wait(boom)
    assert not any(w.is_alive() for w in job.workers)


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (1, 16 * 1024),
        (2_684_355, 16 * 1024),  # libtorrent's size table, first step
        (2_684_356, 32 * 1024),
        (2**30, 512 * 1024),  # 1 GiB: 2048 pieces
        (687_194_767, 256 * 1024),
        (687_194_768, 512 * 1024),
        (100 * 2**30, 4 * 2**20),
        (2**50, MAX_AUTO_PIECE_LENGTH),
    ],
)
def test_auto_piece_length_rule(total: int, expected: int) -> None:
    assert auto_piece_length(total) == expected


def test_auto_piece_length_is_used_and_reported(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"q" * 3_000_000)
    assert create(f).info.piece_length == 32 * 1024


def test_hashing_starts_while_files_are_still_being_fed(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    parts = [data[:1], data[1:70_000], data[70_000:]]
    files = []
    for i, part in enumerate(parts):
        (tmp_path / f"f{i}").write_bytes(part)
        files.append(SourceFile((f"f{i}",), str(tmp_path / f"f{i}"), len(part)))
    job = HashJob(16384, threads=3)
    job.start()
    for f in files:  # one at a time, as a directory walk finds them
        job.feed([f])
    job.close_feed()
    assert job.wait() == _expected_pieces(data, 16384)


def test_a_walk_error_stops_the_started_workers(tmp_path: Path) -> None:
    import threading

    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_bytes(b"a" * 100_000)
    (d / "z-dangling").symlink_to(tmp_path / "missing")
    before = threading.active_count()
    with pytest.raises(MetainfoError, match="points nowhere"):
        create(d, piece_length=16384)
    assert threading.active_count() == before


def test_thread_count_is_capped_by_the_work_and_by_max_threads(tmp_path: Path) -> None:
    from torrent.create import MAX_THREADS

    assert HashJob(16384, threads=64, total=100).threads == 1
    assert HashJob(16384, threads=10_000).threads == MAX_THREADS
    f = tmp_path / "f"
    f.write_bytes(b"x" * 1000)
    assert create(f, threads=500).info.pieces == hashlib.sha1(b"x" * 1000).digest()
    assert create(f, threads=500, piece_length=16384).info.num_pieces == 1
