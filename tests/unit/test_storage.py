"""FileStorage: pieces ⇄ files, padding, sparse files, selective download, errors."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.disk_helpers import can_mount, make_torrent, tmpfs
from torrent.disk.storage import FileStorage, describe_os_error, locate_payload, state_path
from torrent.errors import StorageError
from torrent.proto.metainfo import Metainfo

ROOT = Path(__file__).resolve().parents[2]

# Three files of odd sizes, an empty one and a padding file: pieces of 64 bytes span them.
LAYOUT = [("a.bin", 100), ("empty", 0), ("dir/b.bin", 30), ("pad", 26, True), ("dir/sub/c.bin", 150)]


def write_all(st: FileStorage, fx, block: int = 16, pieces=None, rng=None) -> None:
    """Write every block of ``pieces`` (default all) in a shuffled order."""
    info = fx.info
    todo = []
    for p in range(info.num_pieces) if pieces is None else pieces:
        for off in range(0, info.piece_size(p), block):
            todo.append((p, off, min(block, info.piece_size(p) - off)))
    (rng or random.Random(7)).shuffle(todo)
    for p, off, n in todo:
        st.write_block(p, off, fx.piece(p)[off : off + n])


def test_spans_cover_pieces_across_files_and_skip_empty_files(tmp_path: Path) -> None:
    fx = make_torrent(LAYOUT, 64)
    st = FileStorage(fx.info, tmp_path)
    # piece 1 = payload [64, 128): the end of a.bin then all of dir/b.bin (empty skipped).
    assert st.spans(1, 0, 64) == [(0, 64, 36), (2, 0, 28)]
    # piece 2 = [128, 192): last 2 of b.bin, 26 of padding, 36 of c.bin
    assert st.spans(2, 0, 64) == [(2, 28, 2), (3, 0, 26), (4, 0, 36)]
    assert st.piece_files(2) == [2, 3, 4]
    # last piece is short: 306 bytes total, 4 full pieces + 50
    assert fx.info.num_pieces == 5
    assert fx.info.piece_size(4) == 50
    assert st.spans(4, 10, 40) == [(4, 110, 40)]
    assert st.file_pieces(0) == range(0, 2)
    assert st.file_pieces(1) == range(0)
    assert st.file_pieces(4) == range(2, 5)
    with pytest.raises(ValueError, match=r"range 40\+11 is outside piece 4 of 50 bytes"):
        st.spans(4, 40, 11)
    with pytest.raises(IndexError):
        st.spans(5, 0, 1)


def test_round_trip_multi_file_with_padding_and_empty_files(tmp_path: Path) -> None:
    fx = make_torrent(LAYOUT, 64)
    st = FileStorage(fx.info, tmp_path)
    st.allocate()
    write_all(st, fx)
    root = tmp_path / "t"
    assert (root / "a.bin").read_bytes() == fx.file_bytes(0)
    assert (root / "empty").exists()
    assert (root / "empty").stat().st_size == 0
    assert (root / "dir/b.bin").read_bytes() == fx.file_bytes(2)
    assert (root / "dir/sub/c.bin").read_bytes() == fx.file_bytes(4)
    assert not (root / "pad").exists(), "padding files are never created"
    for p in range(fx.info.num_pieces):
        assert st.read_piece(p) == fx.piece(p)
        assert hashlib.sha1(st.read_piece(p)).digest() == fx.info.piece_hash(p)
    assert st.read_block(2, 1, 40) == fx.piece(2)[1:41]
    st.close()


def test_padding_reads_zeros_and_drops_writes(tmp_path: Path) -> None:
    fx = make_torrent(LAYOUT, 64)
    st = FileStorage(fx.info, tmp_path)
    st.write_block(2, 2, b"\xff" * 26)  # exactly the padding file's bytes
    assert not (tmp_path / "t" / "pad").exists()
    assert st.read_block(2, 2, 26) == bytes(26)


def test_single_file_lands_at_dir_name_and_short_last_piece(tmp_path: Path) -> None:
    fx = make_torrent([("movie.mkv", 1000)], 256, name="movie.mkv", multi=False)
    st = FileStorage(fx.info, tmp_path)
    st.allocate()
    write_all(st, fx, block=100)
    assert (tmp_path / "movie.mkv").read_bytes() == fx.payload
    assert st.read_piece(3) == fx.payload[768:]


def test_files_are_created_sparse(tmp_path: Path) -> None:
    fx = make_torrent([("big", 0), ("x", 10)], 16384)
    big = 256 * 1024 * 1024
    info = fx.info
    from dataclasses import replace

    from torrent.proto.metainfo import FileEntry

    files = (FileEntry(("big",), big, 0), FileEntry(("x",), 10, big))
    info = replace(info, files=files, pieces=b"\0" * 20 * ((big + 10 + 16383) // 16384))
    st = FileStorage(info, tmp_path)
    st.allocate()
    s = os.stat(tmp_path / "t" / "big")
    assert s.st_size == big
    assert s.st_blocks * 512 < 1024 * 1024, "allocation must not write the file out"


def test_existing_longer_file_is_not_truncated(tmp_path: Path) -> None:
    fx = make_torrent([("a", 10), ("b", 10)], 16)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a").write_bytes(b"x" * 50)
    FileStorage(fx.info, tmp_path).allocate()
    assert (tmp_path / "t" / "a").stat().st_size == 50


def test_missing_file_raises_enoent_and_short_file_reads_zeros(tmp_path: Path) -> None:
    fx = make_torrent([("a", 40), ("b", 40)], 32)
    st = FileStorage(fx.info, tmp_path)
    with pytest.raises(StorageError) as e:
        st.read_piece(0)
    assert e.value.errno == errno.ENOENT
    assert "file is missing" in str(e.value)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a").write_bytes(fx.file_bytes(0)[:20])
    (tmp_path / "t" / "b").write_bytes(b"")
    assert st.read_piece(0) == fx.file_bytes(0)[:20] + bytes(12)


def test_bounded_descriptor_cache(tmp_path: Path) -> None:
    fx = make_torrent([(f"f{i}", 37) for i in range(9)], 32)
    st = FileStorage(fx.info, tmp_path, max_open_files=2)
    st.allocate()
    write_all(st, fx, block=5)
    assert st.open_files() <= 2
    for p in range(fx.info.num_pieces):
        assert st.read_piece(p) == fx.piece(p)
    assert st.open_files() <= 2
    st.sync()
    st.close()
    assert st.open_files() == 0
    assert st.read_piece(0) == fx.piece(0), "usable after close"


def test_descriptor_cache_is_thread_safe(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    fx = make_torrent([(f"f{i}", 3000 + i) for i in range(12)], 1024)
    st = FileStorage(fx.info, tmp_path, max_open_files=3)
    jobs = [(p, off) for p in range(fx.info.num_pieces) for off in range(0, fx.info.piece_size(p), 256)]
    random.Random(3).shuffle(jobs)

    def job(args: tuple[int, int]) -> None:
        p, off = args
        n = min(256, fx.info.piece_size(p) - off)
        st.write_block(p, off, fx.piece(p)[off : off + n])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(job, jobs))
        results = list(pool.map(st.read_piece, range(fx.info.num_pieces)))
    assert b"".join(results) == fx.payload


# --- selective download ----------------------------------------------------------------

SEL = [("a", 100), ("skip", 200), ("c", 100)]  # pieces of 64: skip covers 100..300


def test_skipped_file_not_created_and_boundary_pieces_hash(tmp_path: Path) -> None:
    fx = make_torrent(SEL, 64)
    st = FileStorage(fx.info, tmp_path, file_priorities=[1, 0, 1], info_hash=fx.info_hash)
    assert st.parts_path == state_path(tmp_path, fx.info_hash, "parts")
    wanted = st.wanted_pieces()
    # a: pieces 0-1; skip: 1-4; c: 4-6. Pieces 2 and 3 are only in the skipped file.
    assert wanted == [True, True, False, False, True, True, True]
    st.allocate()
    write_all(st, fx, pieces=[p for p, w in enumerate(wanted) if w])
    assert not (tmp_path / "t" / "skip").exists()
    assert (tmp_path / "t" / "a").read_bytes() == fx.file_bytes(0)
    assert (tmp_path / "t" / "c").read_bytes() == fx.file_bytes(2)
    for p in (1, 4):  # boundary pieces: read back whole from file + parts file
        assert hashlib.sha1(st.read_piece(p)).digest() == fx.info.piece_hash(p)
    # The parts file is sparse and holds only the boundary bytes (28 + 44 of them).
    parts = Path(st.parts_path)
    assert parts.exists()
    assert parts.stat().st_blocks * 512 <= 64 * 1024
    # Nothing of pieces 2-3 was stored anywhere: they read as zeros.
    assert st.read_piece(2) == bytes(64)
    st.close()

    # A later run wants everything: the skipped file is created with its boundary bytes.
    st2 = FileStorage(fx.info, tmp_path, info_hash=fx.info_hash)
    st2.allocate()
    write_all(st2, fx, pieces=[2, 3])
    assert (tmp_path / "t" / "skip").read_bytes() == fx.file_bytes(1)
    for p in range(fx.info.num_pieces):
        assert st2.read_piece(p) == fx.piece(p)


def test_set_file_priorities_moves_parts_into_new_file(tmp_path: Path) -> None:
    fx = make_torrent(SEL, 64)
    st = FileStorage(fx.info, tmp_path, file_priorities=[1, 0, 1])
    st.allocate()
    write_all(st, fx, pieces=[0, 1, 4, 5, 6])
    assert st.stored_in_parts(1)
    st.set_file_priorities([1, 1, 1])
    st.allocate()
    assert not st.stored_in_parts(1)
    write_all(st, fx, pieces=[2, 3])
    assert (tmp_path / "t" / "skip").read_bytes() == fx.file_bytes(1)


def test_skipped_file_already_on_disk_is_used_in_place(tmp_path: Path) -> None:
    fx = make_torrent(SEL, 64)
    full = FileStorage(fx.info, tmp_path)
    full.allocate()
    write_all(full, fx)
    full.close()
    st = FileStorage(fx.info, tmp_path, file_priorities=[1, 0, 1])
    assert not st.stored_in_parts(1)
    for p in range(fx.info.num_pieces):
        assert st.read_piece(p) == fx.piece(p)
    assert not os.path.exists(st.parts_path)


def test_priorities_are_validated(tmp_path: Path) -> None:
    fx = make_torrent(SEL, 64)
    with pytest.raises(ValueError, match="2 file priorities for 3 files"):
        FileStorage(fx.info, tmp_path, file_priorities=[1, 1])
    with pytest.raises(ValueError, match="file priorities must be >= 0"):
        FileStorage(fx.info, tmp_path, file_priorities=[1, -1, 1])


# --- path safety ---------------------------------------------------------------------------


def test_symlink_out_of_the_tree_is_refused(tmp_path: Path) -> None:
    fx = make_torrent([("sub/x", 10), ("y", 10)], 16)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "dl" / "t").mkdir(parents=True)
    (tmp_path / "dl" / "t" / "sub").symlink_to(outside)
    st = FileStorage(fx.info, tmp_path / "dl")
    with pytest.raises(StorageError, match="resolves outside"):
        st.write_block(0, 0, fx.piece(0))
    with pytest.raises(StorageError, match="resolves outside"):
        st.allocate()
    assert list(outside.iterdir()) == []


# --- locating a payload for seeding ----------------------------------------------------


def test_locate_payload_multi_file_content_or_parent(tmp_path: Path) -> None:
    fx = make_torrent([("a", 10), ("d/b", 20)], 16, name="album")
    st = FileStorage(fx.info, tmp_path / "dl")
    st.allocate()
    write_all(st, fx)
    content = tmp_path / "dl" / "album"
    for given in (content, tmp_path / "dl"):
        loc = locate_payload(fx.info, given)
        assert loc.content_path == str(content)
        assert loc.directory == str(tmp_path / "dl")
    # The content renamed: given directly, it is still found.
    renamed = tmp_path / "other"
    content.rename(renamed)
    loc = locate_payload(fx.info, renamed)
    assert loc.content_path == str(renamed)
    st2 = FileStorage(fx.info, loc.directory, content_path=loc.content_path)
    assert b"".join(st2.read_piece(p) for p in range(fx.info.num_pieces)) == fx.payload
    with pytest.raises(StorageError, match="no file of the torrent"):
        locate_payload(fx.info, tmp_path / "dl")
    with pytest.raises(StorageError, match="does not exist"):
        locate_payload(fx.info, tmp_path / "nope")
    with pytest.raises(StorageError, match="is a file"):
        locate_payload(fx.info, renamed / "a")


def test_locate_payload_single_file(tmp_path: Path) -> None:
    fx = make_torrent([("f.iso", 10)], 16, name="f.iso", multi=False)
    (tmp_path / "f.iso").write_bytes(fx.payload)
    for given in (tmp_path, tmp_path / "f.iso"):
        loc = locate_payload(fx.info, given)
        assert loc.content_path == str(tmp_path / "f.iso")
        assert loc.directory == str(tmp_path)
    (tmp_path / "renamed.iso").write_bytes(fx.payload)
    assert locate_payload(fx.info, tmp_path / "renamed.iso").content_path == str(tmp_path / "renamed.iso")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StorageError, match="without a file named"):
        locate_payload(fx.info, tmp_path / "empty")


# --- disk errors -------------------------------------------------------------------------


def test_error_messages_name_file_and_problem() -> None:
    for code, words in [
        (errno.ENOSPC, "no space left"),
        (errno.EACCES, "permission denied"),
        (errno.EISDIR, "is a directory"),
        (errno.EROFS, "read-only file system"),
        (errno.EFBIG, "file too large"),
        (errno.EXDEV, os.strerror(errno.EXDEV)),
    ]:
        err = describe_os_error(OSError(code, os.strerror(code)), "/x/y", "write")
        assert str(err).startswith(f"cannot write /x/y: {words}")
        assert err.errno == code
        assert err.path == "/x/y"
        assert "\n" not in str(err)


def test_directory_in_place_of_file(tmp_path: Path) -> None:
    fx = make_torrent([("a", 10), ("b", 10)], 16)
    (tmp_path / "t" / "b").mkdir(parents=True)
    st = FileStorage(fx.info, tmp_path)
    with pytest.raises(StorageError) as e:
        st.allocate()
    assert e.value.errno == errno.EISDIR
    assert str(tmp_path / "t" / "b") in str(e.value)
    with pytest.raises(StorageError, match="is a directory"):
        st.write_block(0, 0, fx.piece(0))
    with pytest.raises(StorageError, match="is a directory"):
        st.read_piece(0)


def test_file_in_place_of_directory(tmp_path: Path) -> None:
    fx = make_torrent([("d/a", 10), ("b", 10)], 16)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "d").write_bytes(b"in the way")
    st = FileStorage(fx.info, tmp_path)
    with pytest.raises(StorageError) as e:
        st.allocate()
    assert "cannot create directory" in str(e.value)
    assert str(tmp_path / "t" / "d") in str(e.value)


@pytest.mark.skipif(not can_mount(), reason="needs root to mount a tmpfs")
def test_full_disk_is_a_storage_error() -> None:
    fx = make_torrent([("a", 700_000), ("b", 700_000)], 65536)
    with tmpfs("1m") as where:
        st = FileStorage(fx.info, where)
        st.allocate()  # sparse: fits
        with pytest.raises(StorageError) as e:
            write_all(st, fx, block=65536)
        assert e.value.errno == errno.ENOSPC
        assert "no space left on device" in str(e.value)
        assert where in str(e.value)
        st.close()


@pytest.mark.skipif(not can_mount(), reason="needs root to mount a tmpfs")
def test_read_only_file_system() -> None:
    fx = make_torrent([("a", 10), ("b", 10)], 16)
    with tmpfs("1m", read_only=True) as where:
        st = FileStorage(fx.info, where)
        with pytest.raises(StorageError, match="read-only file system"):
            st.allocate()


def _run_child(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


CHILD_PRELUDE = """
import os, resource, sys
from tests.disk_helpers import make_torrent
from torrent.errors import StorageError
from torrent.proto.metainfo import Metainfo
from torrent.disk.storage import FileStorage
where = sys.argv[1]
fx = make_torrent([("a", 300_000), ("b", 300_000)], 65536)
"""


def test_file_size_limit_is_efbig(tmp_path: Path) -> None:
    code = (
        CHILD_PRELUDE
        + """
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
st = FileStorage(fx.info, where)
try:
    for p in range(fx.info.num_pieces):
        st.write_block(p, 0, fx.piece(p))
except StorageError as e:
    print("ERR", e.errno, e)
"""
    )
    out = _run_child(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"ERR {errno.EFBIG} cannot write "), out.stdout
    assert "file too large" in out.stdout
    assert "/t/a" in out.stdout


def test_permission_denied(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    code = (
        CHILD_PRELUDE
        + """
if os.geteuid() == 0:
    os.setgid(65534); os.setuid(65534)  # root ignores modes: become nobody
st = FileStorage(fx.info, os.path.join(where, "locked"))
try:
    st.allocate()
except StorageError as e:
    print("ERR", e.errno, e)
"""
    )
    out = _run_child(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"ERR {errno.EACCES} cannot create directory "), out.stdout
    assert "permission denied" in out.stdout


# --- sanitised names and BEP 47 symlinks --------------------------------------------------


def _hostile(files: list[dict[bytes, object]], name: bytes = b"t") -> Metainfo:
    from torrent.proto import bencoding

    total = sum(0 if b"l" in f.get(b"attr", b"") else f[b"length"] for f in files)  # type: ignore[operator]
    payload = bytes(total)
    pieces = b"".join(hashlib.sha1(payload[i : i + 64]).digest() for i in range(0, total, 64))
    info = {b"name": name, b"piece length": 64, b"pieces": pieces, b"files": files}
    return Metainfo.from_bytes(bencoding.encode({b"info": info}))


def test_storage_writes_only_at_sanitised_paths(tmp_path: Path) -> None:
    meta = _hostile(
        [
            {b"length": 10, b"path": [b"..", b"..", b"x"]},
            {b"length": 10, b"path": [b"/abs"]},
            {b"length": 10, b"path": [b"A"]},
            {b"length": 10, b"path": [b"a"]},
        ],
        name=b"../up",
    )
    st = FileStorage(meta.info, tmp_path / "dl")
    content = tmp_path / "dl" / "..up"
    assert [st.file_path(i) for i in range(4)] == [
        str(content / "_" / "_" / "x"),
        str(content / "abs"),
        str(content / "A"),
        str(content / "a.1"),
    ]
    st.allocate()
    for p in range(meta.info.num_pieces):
        st.write_block(p, 0, bytes(meta.info.piece_size(p)))
    st.close()
    made = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert made == ["dl/..up/A", "dl/..up/_/_/x", "dl/..up/a.1", "dl/..up/abs"]


def test_symlinks_are_relative_created_once_and_never_replace_anything(tmp_path: Path) -> None:
    meta = _hostile(
        [
            {b"length": 10, b"path": [b"d", b"f"]},
            {b"attr": b"l", b"path": [b"to-file"], b"symlink path": [b"d", b"f"]},
            {b"attr": b"l", b"path": [b"e", b"to-dir"], b"symlink path": [b"d"]},
            {b"attr": b"l", b"path": [b"taken"], b"symlink path": [b"d", b"f"]},
            {b"attr": b"l", b"path": [b"out"], b"symlink path": [b"..", b"..", b"..", b"etc"]},
        ]
    )
    root = tmp_path / "t"
    root.mkdir()
    (root / "taken").write_bytes(b"user data")
    st = FileStorage(meta.info, tmp_path)
    st.allocate()
    st.allocate()  # a second pass (resume) finds the links in place
    st.close()
    assert os.readlink(root / "to-file") == "d/f"
    assert os.readlink(root / "e" / "to-dir") == "../d"
    assert (root / "taken").read_bytes() == b"user data"
    assert not (root / "out").is_symlink()
    assert (root / "out").stat().st_size == 0
    assert all(os.path.realpath(p).startswith(str(root) + os.sep) for p in root.rglob("*"))


def test_locate_payload_finds_sanitised_names(tmp_path: Path) -> None:
    meta = _hostile([{b"length": 10, b"path": [b"..", b"x"]}], name=b"a/b")
    (tmp_path / "ab" / "_").mkdir(parents=True)
    (tmp_path / "ab" / "_" / "x").write_bytes(bytes(10))
    found = locate_payload(meta.info, tmp_path)
    assert found.content_path == str(tmp_path / "ab")


# --- module rule 9: large writes bypass the page cache ----------------------------------


def _direct_supported(where: Path) -> bool:
    probe = where / "direct-probe"
    try:
        fd = os.open(probe, os.O_RDWR | os.O_CREAT | getattr(os, "O_DIRECT", 0))
    except OSError:
        return False
    os.close(fd)
    probe.unlink()
    return hasattr(os, "O_DIRECT")


def _record_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, int, int]]:
    """Every ``os.pwrite`` from now on as ``(through O_DIRECT?, offset, length)``."""
    import fcntl

    writes: list[tuple[bool, int, int]] = []
    real = os.pwrite

    def pwrite(fd: int, data, offset: int) -> int:  # type: ignore[no-untyped-def]
        direct = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)
        writes.append((direct, offset, len(data)))
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    return writes


def test_whole_pieces_go_out_direct_with_the_unaligned_ends_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _direct_supported(tmp_path):
        pytest.skip("the file system refuses O_DIRECT")
    # Files of odd sizes: most spans start or end off a page boundary.
    fx = make_torrent([("a", 100_001), ("b", 700_000), ("c", 1_300_000)], 256 * 1024)
    st = FileStorage(fx.info, tmp_path)
    st.allocate()
    writes = _record_writes(monkeypatch)
    for p in range(fx.info.num_pieces):
        st.write_block(p, 0, fx.piece(p))
    st.close()
    assert b"".join((tmp_path / "t" / n).read_bytes() for n in "abc") == fx.payload
    direct = [(at, n) for is_direct, at, n in writes if is_direct]
    assert sum(n for _, n in direct) > len(fx.payload) * 3 // 4
    assert all(at % 4096 == 0 and n % 4096 == 0 for at, n in direct)
    assert sum(n for _, _, n in writes) == len(fx.payload)
    # A single block stays in the page cache.
    del writes[:]
    st.write_block(1, 0, fx.piece(1)[:16384])
    assert writes == [(False, 256 * 1024 - 100_001, 16384)]


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no O_DIRECT on this system")
def test_a_file_system_that_refuses_o_direct_gets_buffered_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fx = make_torrent([("one", 3 * 1024 * 1024)], 1024 * 1024, multi=False)
    st = FileStorage(fx.info, tmp_path)
    st.allocate()
    refused: list[str] = []
    real_open = os.open

    def open_(path, flags, *args):  # type: ignore[no-untyped-def]
        if flags & getattr(os, "O_DIRECT", 0):
            refused.append(os.fspath(path))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", open_)
    for p in range(fx.info.num_pieces):
        st.write_block(p, 0, fx.piece(p))
    st.close()
    assert (tmp_path / "t").read_bytes() == fx.payload
    assert refused == [str(tmp_path / "t")]  # asked once, then buffered


def test_a_direct_write_refused_midway_finishes_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _direct_supported(tmp_path):
        pytest.skip("the file system refuses O_DIRECT")
    import fcntl

    fx = make_torrent([("one", 4 * 1024 * 1024)], 4 * 1024 * 1024, multi=False)
    st = FileStorage(fx.info, tmp_path)
    st.allocate()
    real = os.pwrite
    direct_calls = 0

    def pwrite(fd: int, data, offset: int) -> int:  # type: ignore[no-untyped-def]
        nonlocal direct_calls
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            direct_calls += 1
            if direct_calls == 2:
                raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    st.write_block(0, 0, fx.piece(0))
    st.write_block(0, 0, fx.piece(0))  # buffered now: no third direct call
    st.close()
    assert (tmp_path / "t").read_bytes() == fx.payload
    assert direct_calls == 2


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no O_DIRECT on this system")
def test_direct_writes_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fx = make_torrent([("one", 2 * 1024 * 1024)], 1024 * 1024, multi=False)
    st = FileStorage(fx.info, tmp_path, direct_writes=False)
    st.allocate()
    writes = _record_writes(monkeypatch)
    for p in range(fx.info.num_pieces):
        st.write_block(p, 0, fx.piece(p))
    st.close()
    assert (tmp_path / "t").read_bytes() == fx.payload
    assert writes
    assert not any(direct for direct, _, _ in writes)


def test_a_whole_piece_buffer_is_written_direct_without_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _direct_supported(tmp_path):
        pytest.skip("the file system refuses O_DIRECT")
    from torrent.disk import storage

    fx = make_torrent([("one", 2 * 1024 * 1024 + 100_000)], 1024 * 1024, multi=False)
    st = FileStorage(fx.info, tmp_path)
    st.allocate()
    copies = 0
    real_take = storage._bounces.take

    def take():  # type: ignore[no-untyped-def]
        nonlocal copies
        copies += 1
        return real_take()

    monkeypatch.setattr(storage._bounces, "take", take)
    writes = _record_writes(monkeypatch)
    for p in range(fx.info.num_pieces):
        buf = storage.piece_buffer(fx.info.piece_size(p))
        buf[:] = fx.piece(p)
        st.write_block(p, 0, buf)
    assert copies == 0
    # Each whole piece in one direct write; the last piece's unaligned tail buffered.
    assert writes == [
        (True, 0, 1024 * 1024),
        (True, 1024 * 1024, 1024 * 1024),
        (True, 2 * 1024 * 1024, 98304),
        (False, 2 * 1024 * 1024 + 98304, 1696),
    ]
    # Part of a buffer: its address is not known to be aligned, so it is copied.
    buf = storage.piece_buffer(1024 * 1024)
    buf[:] = fx.piece(0)
    st.write_block(0, 4096, buf[4096:])
    assert copies == 1
    st.close()
    assert (tmp_path / "t").read_bytes() == fx.payload
    assert isinstance(storage.piece_buffer(16384).obj, bytearray)  # never written direct
