"""Pieces ⇄ files: the synchronous storage layer (BEP 3 file layout, BEP 47 padding).

A torrent's payload is the concatenation of its files in ``info`` order; piece ``i``
covers payload bytes ``[i * piece_length, i * piece_length + piece_size(i))`` and may
span several files. :class:`FileStorage` maps block reads and writes onto that layout
with ``os.pread``/``os.pwrite`` on cached descriptors. It is synchronous on purpose:
:mod:`torrent.disk.diskio` runs it on a thread pool so the event loop never touches a file.

Layout on disk (``directory`` is what ``download -o`` names):

* multi-file torrent: ``<directory>/<info.disk_name>/<disk_path...>``;
* single-file torrent: ``<directory>/<info.disk_name>``;

Only the sanitised names (``Info.disk_name``, ``FileEntry.disk_path``; see
:mod:`torrent.proto.paths`) are ever joined to a directory here, never the names as the
torrent gives them.
* state beside the data: ``<directory>/.pytorrent/<info hash hex>.{resume,journal,parts}``.

Rules the rest of the client relies on:

1. BEP 47 padding files are never created: reading them yields zeros, writing them
   is dropped (padding is zeros by definition, and the piece hash covers those zeros).
2. Files are created sparse at their final names (``ftruncate`` to full length) by
   :meth:`FileStorage.allocate`; a write also creates a missing file and its parents.
   An existing file longer than expected is left alone (it may be the user's data).
3. Selective download: a file with priority 0 ("skipped") is not created. Its bytes
   that fall in a piece shared with a wanted file (a *boundary piece*) must still be
   hashed, so they go to the *parts file* (the idea of libtorrent's part file): one
   sparse file addressed by absolute payload offset, so it only takes the space of the
   bytes actually stored there (normally under two pieces per skipped run) and needs no
   index. Reads of a skipped file come from the parts file (holes read as zeros). When
   a skipped file becomes wanted, :meth:`FileStorage.allocate` (call it before the
   first write) moves its bytes from the parts file into the real file. A skipped file that already exists on disk (an
   earlier run wanted it) keeps being read and written in place: we never hide or
   delete the user's data. Pieces with no byte in a wanted file are not wanted at all
   (:meth:`FileStorage.wanted_pieces`); the engine never requests them.
4. Every path is joined below the content root and resolved; a path that resolves
   outside the root (a symlink planted in the tree) is refused. Metainfo's sanitised
   paths already have no ``..``, no separator and no absolute component; this is the
   second wall.
8. BEP 47 symlinks: metainfo keeps a link's target only when it is one of the
   torrent's own files or directories. :meth:`FileStorage.allocate` creates such a
   link (relative, after every regular file) only when both the link's directory and
   its target resolve inside the content root, and never replaces anything already
   at the link's path. Every other symlink entry is an ordinary empty file.
5. Every ``OSError`` becomes a one-line :class:`StorageError` that names the file and
   the problem (full disk, permission denied, a directory where a file should be,
   read-only file system, file too large), with ``errno`` and ``path`` attributes.
6. A file missing on read raises ``StorageError`` with ``errno == ENOENT`` (callers that
   hash treat that as "piece not there"); a file shorter than expected reads as zeros
   past its end, like a sparse hole.
7. Thread safety: every method may be called from several threads at once. Descriptors
   live in a bounded LRU cache; one in use by another thread is closed only when that
   thread is done with it (a plain close could let the number be reused under it).
9. Large writes bypass the page cache: the page-aligned run of a write of at least
   ``DIRECT_MIN`` bytes (a whole piece from :meth:`DiskIO.write_piece`) goes out with
   ``O_DIRECT``: straight from the caller's memory when it is a whole
   :func:`piece_buffer` (page-aligned), else copied through a reused page-aligned buffer
   of at most ``DIRECT_CHUNK`` bytes. The unaligned ends and small writes (single
   blocks) go through the page cache.
   Filling fresh page-cache pages was most of a download's disk-thread CPU (the copy
   into new pages: about 1.1 of 2 CPU seconds a GiB on the 2-core benchmark machine,
   against about 0.15 for the bounce copy and the direct write), and the final
   ``fsync`` then has almost nothing left to write. A file system that refuses
   ``O_DIRECT`` (``EINVAL`` on open or write) gets buffered writes for that file from
   then on. Reads stay buffered; the kernel keeps them coherent with direct writes.

Left out: memory-mapped I/O, moving storage while running, file renames, v2 (BEP 52)
per-file piece alignment beyond what padding files give.
"""

from __future__ import annotations

import bisect
import contextlib
import errno as errno_mod
import hashlib
import mmap
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from torrent.errors import StorageError
from torrent.proto.metainfo import Info
from torrent.types import InfoHash

#: Directory beside the data that holds resume state, the write journal and parts files.
STATE_DIR_NAME = ".pytorrent"
#: Default bound on open file descriptors per FileStorage (libtorrent's file pool is 40).
DEFAULT_MAX_OPEN_FILES = 32
#: Chunk size when copying from the parts file into a newly wanted file.
_COPY_CHUNK = 1024 * 1024

#: Writes of at least this many bytes go out with ``O_DIRECT`` (module rule 9).
DIRECT_MIN = 64 * 1024
#: Bytes per ``O_DIRECT`` write, and the most one bounce buffer holds.
DIRECT_CHUNK = 1024 * 1024
#: File offsets, lengths and memory of ``O_DIRECT`` writes are multiples of this (the
#: page size covers every common logical block size).
DIRECT_ALIGN = 4096
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)

#: File modes for ``FileStorage`` files.
_PAD, _FILE, _PARTS = 0, 1, 2

_PROBLEMS = {
    errno_mod.ENOSPC: "no space left on device",
    errno_mod.EDQUOT: "disk quota exceeded",
    errno_mod.EACCES: "permission denied",
    errno_mod.EPERM: "operation not permitted",
    errno_mod.EISDIR: "is a directory, expected a file",
    errno_mod.ENOTDIR: "a parent path is a file, expected a directory",
    errno_mod.EEXIST: "a file is in the way of a directory",
    errno_mod.EROFS: "read-only file system",
    errno_mod.EFBIG: "file too large (file system or RLIMIT_FSIZE limit)",
    errno_mod.ENOENT: "file is missing",
    errno_mod.EMFILE: "too many open files",
    errno_mod.ENFILE: "too many open files in the system",
    errno_mod.EIO: "input/output error",
    errno_mod.ENAMETOOLONG: "file name too long",
    errno_mod.ELOOP: "too many levels of symbolic links",
}


def describe_os_error(exc: OSError, path: str, action: str) -> StorageError:
    """Turn ``exc`` into a one-line :class:`StorageError` naming ``path`` and the problem.

    Args:
        exc: the error the operating system raised.
        path: the file or directory the operation was about.
        action: a verb phrase such as ``"write"`` or ``"create"``.
    """
    code = exc.errno
    problem = _PROBLEMS.get(code) if code is not None else None
    if problem is None:
        problem = exc.strerror or str(exc) or type(exc).__name__
    return StorageError(f"cannot {action} {path}: {problem}", path=path, errno=code)


def state_dir(directory: str | os.PathLike[str]) -> str:
    """Where resume state, the write journal and parts files live for ``directory``."""
    return os.path.join(os.fspath(directory), STATE_DIR_NAME)


def state_path(directory: str | os.PathLike[str], info_hash: InfoHash | bytes, suffix: str) -> str:
    """``<directory>/.pytorrent/<info hash hex>.<suffix>``."""
    return os.path.join(state_dir(directory), f"{bytes(info_hash).hex()}.{suffix}")


class Storage(Protocol):
    """What the async disk layer needs from a storage backend.

    Every method is synchronous and may be called from several threads at once.
    ``piece`` is a piece index; ``offset`` is a byte offset within that piece.
    """

    @property
    def info(self) -> Info: ...

    def allocate(self) -> None:
        """Create the wanted files (sparse, full length) and their directories."""

    def write_block(self, piece: int, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``offset`` within ``piece``."""

    def read_block(self, piece: int, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset`` within ``piece``."""

    def read_piece(self, piece: int) -> bytes:
        """Read the whole of ``piece``."""

    def file_stats(self) -> list[tuple[int, int] | None]:
        """``(size, mtime_ns)`` of where each file's bytes live, None when absent."""

    def sync(self) -> None:
        """Flush every written byte to stable storage (``fsync``)."""

    def close(self) -> None:
        """Close every descriptor; the storage may be used again afterwards."""


@dataclass(slots=True)
class _Handle:
    fd: int
    writable: bool
    users: int = 0
    retired: bool = False


class _FdCache:
    """A bounded LRU of open descriptors that never closes one while it is in use."""

    def __init__(self, capacity: int) -> None:
        self._capacity = max(1, capacity)
        self._lock = threading.Lock()
        # (path, O_DIRECT?) -> descriptor; a direct descriptor is always read-write.
        self._entries: OrderedDict[tuple[str, bool], _Handle] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @contextmanager
    def use(self, path: str, *, write: bool, direct: bool = False) -> Iterator[int]:
        """Yield a descriptor for ``path``: read-write (created if missing) when ``write``,
        opened with ``O_DIRECT`` when ``direct`` (a descriptor of its own).

        Raises:
            OSError: opening failed.
        """
        key = (path, direct)
        with self._lock:
            handle = self._entries.get(key)
            if handle is not None and (handle.writable or not write):
                self._entries.move_to_end(key)
            else:
                if handle is not None:  # read-only handle, now we need to write
                    del self._entries[key]
                    self._retire(handle)
                write = write or direct
                flags = (os.O_RDWR | os.O_CREAT) if write else os.O_RDONLY
                if direct:
                    flags |= _O_DIRECT
                fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o666)
                handle = _Handle(fd, write)
                self._entries[key] = handle
                while len(self._entries) > self._capacity:
                    _, old = self._entries.popitem(last=False)
                    self._retire(old)
            handle.users += 1
        try:
            yield handle.fd
        finally:
            with self._lock:
                handle.users -= 1
                if handle.retired and handle.users == 0:
                    os.close(handle.fd)

    def _retire(self, handle: _Handle) -> None:
        handle.retired = True
        if handle.users == 0:
            os.close(handle.fd)

    def writable_paths(self) -> list[str]:
        with self._lock:
            return list(dict.fromkeys(p for (p, _), h in self._entries.items() if h.writable))

    def close_all(self) -> None:
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
            for handle in entries:
                self._retire(handle)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        if n <= 0:  # pragma: no cover - pwrite raises rather than returning 0 on Linux
            raise OSError(errno_mod.ENOSPC, os.strerror(errno_mod.ENOSPC))
        data = data[n:]
        offset += n


def piece_buffer(size: int) -> memoryview:
    """Zeroed memory to assemble a piece of ``size`` bytes in.

    From ``DIRECT_MIN`` bytes up it is a page-aligned anonymous mapping, which
    :meth:`FileStorage.write_block` writes with ``O_DIRECT`` without copying it first
    (module rule 9); smaller pieces are never written direct and get a bytearray.
    """
    if size >= DIRECT_MIN and _O_DIRECT:
        return memoryview(mmap.mmap(-1, size))
    return memoryview(bytearray(size))


class _BouncePool:
    """Page-aligned ``DIRECT_CHUNK`` buffers for ``O_DIRECT`` writes, shared by every
    :class:`FileStorage`: one per thread writing at once, reused (fresh memory would cost
    the page faults the direct write saves)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[memoryview] = []

    @contextmanager
    def take(self) -> Iterator[memoryview]:
        with self._lock:
            buf = self._free.pop() if self._free else None
        if buf is None:
            buf = memoryview(mmap.mmap(-1, DIRECT_CHUNK))
        try:
            yield buf
        finally:
            with self._lock:
                self._free.append(buf)


_bounces = _BouncePool()


def _pwrite_direct(fd: int, bounce: memoryview | None, data: memoryview, offset: int) -> tuple[int, bool]:
    """Write ``data`` (page-aligned length) to an ``O_DIRECT`` descriptor at ``offset``:
    copied through ``bounce``, or as it is when ``bounce`` is None (``data``'s memory is
    page-aligned).

    Returns:
        The bytes written, and True when the file system refused ``O_DIRECT``
        (``EINVAL``). Fewer bytes than ``data`` holds after a short write too.
    """
    done = 0
    while done < len(data):
        if bounce is None:
            k = len(data) - done
            out = data[done:]
        else:
            k = min(len(bounce), len(data) - done)
            bounce[:k] = data[done : done + k]
            out = bounce[:k]
        try:
            n = os.pwrite(fd, out, offset + done)
        except OSError as exc:
            if exc.errno == errno_mod.EINVAL:
                return done, True
            raise
        done += n
        if n < k:  # e.g. the disk filled up: the buffered write of the rest says why
            break
    return done, False


def _pread_into(fd: int, buf: memoryview, offset: int) -> None:
    """Fill ``buf`` from ``offset``; bytes past end of file stay as they are (zeros)."""
    while buf:
        n = os.preadv(fd, [buf], offset)
        if n <= 0:
            return
        buf = buf[n:]
        offset += n


class FileStorage:
    """A torrent's payload as real files under ``directory`` (see the module rules).

    Args:
        info: the torrent's ``info``.
        directory: the download directory; the content lands at ``<directory>/<name>``.
        content_path: where the content itself is, when it is not ``<directory>/<name>``
            (``seed`` of a renamed file or directory; see :func:`locate_payload`).
        file_priorities: one int per entry of ``info.files`` (padding included and
            ignored); 0 skips the file. None wants every file.
        parts_path: the parts file for skipped files' boundary bytes; default
            ``<directory>/.pytorrent/<id>.parts`` where ``<id>`` is ``info_hash`` hex.
        info_hash: used only to name the default parts file (falls back to the SHA-1
            of the piece hashes when not given).
        max_open_files: bound on cached descriptors.
        direct_writes: large writes bypass the page cache (module rule 9); False writes
            everything through it.

    The constructor does no I/O beyond checking which skipped files already exist.
    """

    def __init__(
        self,
        info: Info,
        directory: str | os.PathLike[str],
        *,
        content_path: str | os.PathLike[str] | None = None,
        file_priorities: Sequence[int] | None = None,
        parts_path: str | os.PathLike[str] | None = None,
        info_hash: InfoHash | bytes | None = None,
        max_open_files: int = DEFAULT_MAX_OPEN_FILES,
        direct_writes: bool = True,
    ) -> None:
        self._info = info
        self.directory = os.path.abspath(os.fspath(directory))
        content = (
            os.fspath(content_path)
            if content_path is not None
            else os.path.join(self.directory, info.disk_name)
        )
        #: The file (single-file torrent) or top directory (multi-file) of the content.
        self.content_path = os.path.abspath(content)
        if parts_path is None:
            key = bytes(info_hash) if info_hash is not None else hashlib.sha1(info.pieces).digest()
            parts_path = state_path(self.directory, key, "parts")
        self.parts_path = os.path.abspath(os.fspath(parts_path))

        n = len(info.files)
        if file_priorities is None:
            priorities = [1] * n
        else:
            priorities = [int(p) for p in file_priorities]
            if len(priorities) != n:
                raise ValueError(f"{len(priorities)} file priorities for {n} files")
            if any(p < 0 for p in priorities):
                raise ValueError("file priorities must be >= 0")
        self._priorities = priorities

        self._paths: list[str] = []
        for f in info.files:
            if info.multi_file:
                self._paths.append(os.path.join(self.content_path, *f.disk_path))
            else:
                self._paths.append(self.content_path)
        # Bytes of every non-empty file, for bisecting a payload offset to its file.
        self._nonempty = [i for i, f in enumerate(info.files) if f.length > 0]
        self._starts = [info.files[i].offset for i in self._nonempty]
        self._modes = [self._initial_mode(i) for i in range(n)]
        self._fds = _FdCache(max_open_files)
        #: Whether large writes go past the page cache (False where the system has no
        #: ``O_DIRECT``); a file whose file system refuses it is written through the cache.
        self.direct_writes = direct_writes and _O_DIRECT != 0
        #: Paths whose file system refused ``O_DIRECT``: written through the page cache.
        self._no_direct: set[str] = set()
        self._checked: set[str] = set()
        self._mode_lock = threading.Lock()

    # --- layout ---------------------------------------------------------------------

    @property
    def info(self) -> Info:
        return self._info

    @property
    def file_priorities(self) -> list[int]:
        return list(self._priorities)

    def file_path(self, index: int) -> str:
        """Absolute path of file ``index`` (where it is or would be created)."""
        return self._paths[index]

    def stored_in_parts(self, index: int) -> bool:
        """True when file ``index``'s bytes currently go to the parts file."""
        return self._modes[index] == _PARTS

    def _initial_mode(self, index: int) -> int:
        f = self._info.files[index]
        if f.padding:
            return _PAD
        if self._priorities[index] > 0:
            return _FILE
        # A skipped file that exists (an earlier run wanted it) stays where it is.
        return _FILE if os.path.lexists(self._paths[index]) else _PARTS

    def spans(self, piece: int, offset: int, length: int) -> list[tuple[int, int, int]]:
        """Where ``length`` bytes at ``offset`` in ``piece`` live.

        Returns:
            ``(file_index, offset_in_file, length)`` triples in payload order; empty
            files never appear.

        Raises:
            ValueError: the range is not inside the piece.
        """
        size = self._info.piece_size(piece)
        if offset < 0 or length < 0 or offset + length > size:
            raise ValueError(f"range {offset}+{length} is outside piece {piece} of {size} bytes")
        pos = piece * self._info.piece_length + offset
        end = pos + length
        out: list[tuple[int, int, int]] = []
        k = bisect.bisect_right(self._starts, pos) - 1
        while pos < end:
            index = self._nonempty[k]
            f = self._info.files[index]
            in_file = pos - f.offset
            n = min(end - pos, f.length - in_file)
            out.append((index, in_file, n))
            pos += n
            k += 1
        return out

    def piece_files(self, piece: int) -> list[int]:
        """Indices of the (non-empty) files that piece ``piece`` touches."""
        return [i for i, _, _ in self.spans(piece, 0, self._info.piece_size(piece))]

    def file_pieces(self, index: int) -> range:
        """The pieces that hold bytes of file ``index`` (empty for an empty file)."""
        f = self._info.files[index]
        if f.length == 0:
            return range(0)
        plen = self._info.piece_length
        return range(f.offset // plen, (f.offset + f.length - 1) // plen + 1)

    def wanted_pieces(self) -> list[bool]:
        """Per piece: True when it holds at least one byte of a wanted (non-padding) file."""
        wanted = [False] * self._info.num_pieces
        for i, f in enumerate(self._info.files):
            if not f.padding and self._priorities[i] > 0:
                for p in self.file_pieces(i):
                    wanted[p] = True
        return wanted

    def set_file_priorities(self, priorities: Sequence[int]) -> None:
        """Change which files are wanted; call :meth:`allocate` afterwards.

        Call both while no write is in flight (a write racing the move of a file's
        bytes out of the parts file could land on the old side and be lost; the piece
        would then fail its hash and be fetched again).

        A file that becomes wanted is created and gets its bytes from the parts file in
        :meth:`allocate`; a file that becomes skipped keeps its bytes where they are.
        """
        if len(priorities) != len(self._info.files):
            raise ValueError(f"{len(priorities)} file priorities for {len(self._info.files)} files")
        with self._mode_lock:
            self._priorities = [int(p) for p in priorities]

    # --- path safety ------------------------------------------------------------------

    def _checked_path(self, index: int) -> str:
        path = self._paths[index]
        if path in self._checked or not self._info.multi_file:
            return path
        root = os.path.realpath(self.content_path)
        real = os.path.realpath(path)
        if os.path.commonpath([root, real]) != root or real == root:
            raise StorageError(f"refusing {path}: it resolves outside {self.content_path}", path=path)
        self._checked.add(path)
        return path

    # --- allocation -------------------------------------------------------------------

    def allocate(self) -> None:
        """Create every wanted file sparse at full length, with its directories.

        Also moves the bytes of files that became wanted out of the parts file.

        Raises:
            StorageError: a directory or file could not be created or sized.
        """
        with self._mode_lock:
            links: list[int] = []
            for i, f in enumerate(self._info.files):
                if f.padding or self._priorities[i] == 0:
                    continue
                if f.symlink is not None and self._info.multi_file:
                    links.append(i)
                    continue
                path = self._checked_path(i)
                created = self._create_file(path, f.length)
                if created or self._modes[i] == _PARTS:
                    # A file that did not exist had its bytes, if any, in the parts file.
                    self._move_from_parts(i)
                    self._modes[i] = _FILE
            for i in links:
                self._create_symlink(i)

    def _create_symlink(self, index: int) -> None:
        """Create file ``index`` as a relative link to its target (module rule 8)."""
        target_parts = self._info.files[index].symlink
        assert target_parts is not None
        path = self._paths[index]
        if os.path.lexists(path):
            return  # an earlier run made it, or the user put something there: leave it
        parent = os.path.dirname(path)
        target = os.path.join(self.content_path, *target_parts)
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise describe_os_error(exc, parent, "create directory") from None
        root = os.path.realpath(self.content_path)
        for where in (os.path.realpath(parent), os.path.realpath(target)):
            if os.path.commonpath([root, where]) != root:
                raise StorageError(
                    f"refusing symlink {path}: it resolves outside {self.content_path}", path=path
                )
        try:
            os.symlink(os.path.relpath(target, parent), path)
        except OSError as exc:
            raise describe_os_error(exc, path, "create symlink") from None

    def _create_file(self, path: str, length: int) -> bool:
        """Create ``path`` sparse at ``length`` bytes; True when it did not exist."""
        existed = os.path.lexists(path)
        parent = os.path.dirname(path)
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise describe_os_error(exc, parent, "create directory") from None
        try:
            with self._fds.use(path, write=True) as fd:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise OSError(errno_mod.EISDIR, "not a regular file")
                if st.st_size < length:
                    os.ftruncate(fd, length)
        except OSError as exc:
            raise describe_os_error(exc, path, "create") from None
        return not existed

    def _move_from_parts(self, index: int) -> None:
        f = self._info.files[index]
        try:
            pfd = os.open(self.parts_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise describe_os_error(exc, self.parts_path, "open") from None
        try:
            start, end = f.offset, f.offset + f.length
            pos = start
            with self._fds.use(self._paths[index], write=True) as fd:
                while pos < end:
                    try:
                        data_at = os.lseek(pfd, pos, os.SEEK_DATA)
                    except OSError as exc:
                        if exc.errno == errno_mod.ENXIO:  # no data past pos
                            break
                        raise
                    if data_at >= end:
                        break
                    hole_at = min(os.lseek(pfd, data_at, os.SEEK_HOLE), end)
                    while data_at < hole_at:
                        chunk = os.pread(pfd, min(_COPY_CHUNK, hole_at - data_at), data_at)
                        if not chunk:
                            break
                        _pwrite_all(fd, memoryview(chunk), data_at - f.offset)
                        data_at += len(chunk)
                    pos = hole_at
        except OSError as exc:
            raise describe_os_error(exc, self._paths[index], "move parts data into") from None
        finally:
            os.close(pfd)

    # --- block I/O --------------------------------------------------------------------

    def _target(self, index: int, in_file: int) -> tuple[str, int]:
        if self._modes[index] == _PARTS:
            return self.parts_path, self._info.files[index].offset + in_file
        return self._checked_path(index), in_file

    def write_block(self, piece: int, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``offset`` within ``piece``.

        Padding bytes are dropped; skipped files' bytes go to the parts file.

        Raises:
            ValueError: the range is not inside the piece.
            StorageError: the write failed (the message names the file).
        """
        view = memoryview(data).cast("B")
        # A whole piece_buffer() is page-aligned: its span at ``pos`` is at address base+pos.
        aligned = isinstance(view.obj, mmap.mmap) and len(view) == len(view.obj)
        pos = 0
        for index, in_file, n in self.spans(piece, offset, len(view)):
            chunk = view[pos : pos + n]
            mem_at = pos if aligned else None
            pos += n
            if self._modes[index] == _PAD:
                continue
            path, at = self._target(index, in_file)
            try:
                self._write_at(path, chunk, at, mem_at)
            except OSError as exc:
                raise describe_os_error(exc, path, "write") from None

    def _write_at(self, path: str, chunk: memoryview, at: int, mem_at: int | None = None) -> None:
        """Write ``chunk`` at file offset ``at``; ``mem_at``: where ``chunk`` starts from a
        page boundary in memory, when known."""
        n = len(chunk)
        if n >= DIRECT_MIN and self.direct_writes and path not in self._no_direct:
            # Module rule 9: the page-aligned run direct, the unaligned ends buffered.
            head = -at % DIRECT_ALIGN
            body = (n - head) // DIRECT_ALIGN * DIRECT_ALIGN
            if body >= DIRECT_MIN:
                in_place = mem_at is not None and (mem_at + head) % DIRECT_ALIGN == 0
                done = self._write_direct(path, chunk[head : head + body], at + head, in_place)
                if head:
                    self._write_buffered(path, chunk[:head], at)
                if head + done < n:
                    self._write_buffered(path, chunk[head + done :], at + head + done)
                return
        self._write_buffered(path, chunk, at)

    def _write_buffered(self, path: str, chunk: memoryview, at: int) -> None:
        try:
            with self._fds.use(path, write=True) as fd:
                _pwrite_all(fd, chunk, at)
        except FileNotFoundError:
            # Not allocated yet: create the parents and try once more.
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with self._fds.use(path, write=True) as fd:
                _pwrite_all(fd, chunk, at)

    def _write_direct(self, path: str, data: memoryview, at: int, in_place: bool) -> int:
        """Write ``data`` (page-aligned length) at ``at`` with ``O_DIRECT``, from its own
        memory when ``in_place`` (page-aligned) else through a bounce buffer; return the
        bytes written (fewer after a short write, or when the file system refused: then
        the path is written through the page cache from now on)."""
        with contextlib.nullcontext(None) if in_place else _bounces.take() as bounce:
            try:
                try:
                    with self._fds.use(path, write=True, direct=True) as fd:
                        done, refused = _pwrite_direct(fd, bounce, data, at)
                except FileNotFoundError:
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    with self._fds.use(path, write=True, direct=True) as fd:
                        done, refused = _pwrite_direct(fd, bounce, data, at)
            except OSError as exc:
                if exc.errno != errno_mod.EINVAL:
                    raise
                done, refused = 0, True  # the open itself was refused
        if refused:
            self._no_direct.add(path)
        return done

    def read_block(self, piece: int, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset`` within ``piece``.

        Padding reads as zeros, and so does anything past the end of a short file or in
        a hole of the parts file.

        Raises:
            ValueError: the range is not inside the piece.
            StorageError: a file is missing (``errno == ENOENT``) or unreadable.
        """
        spans = self.spans(piece, offset, length)
        if len(spans) == 1 and self._modes[spans[0][0]] != _PAD:
            index, in_file, n = spans[0]
            path, at = self._target(index, in_file)
            data = self._read_at(path, at, n)
            return data if len(data) == n else data + bytes(n - len(data))
        buf = bytearray(length)
        view = memoryview(buf)
        pos = 0
        for index, in_file, n in spans:
            if self._modes[index] != _PAD:
                path, at = self._target(index, in_file)
                self._read_into(path, view[pos : pos + n], at)
            pos += n
        return bytes(buf)

    def _read_at(self, path: str, at: int, n: int) -> bytes:
        try:
            with self._fds.use(path, write=False) as fd:
                data = os.pread(fd, n, at)
                if len(data) < n and data:
                    # A short read that is not end of file: gather the rest.
                    buf = bytearray(data) + bytes(n - len(data))
                    _pread_into(fd, memoryview(buf)[len(data) :], at + len(data))
                    return bytes(buf)
                return data
        except FileNotFoundError:
            if path == self.parts_path:
                return bytes(n)
            raise describe_os_error(FileNotFoundError(errno_mod.ENOENT, "missing"), path, "read") from None
        except OSError as exc:
            raise describe_os_error(exc, path, "read") from None

    def _read_into(self, path: str, buf: memoryview, at: int) -> None:
        try:
            with self._fds.use(path, write=False) as fd:
                _pread_into(fd, buf, at)
        except FileNotFoundError:
            if path == self.parts_path:
                return
            raise describe_os_error(FileNotFoundError(errno_mod.ENOENT, "missing"), path, "read") from None
        except OSError as exc:
            raise describe_os_error(exc, path, "read") from None

    def read_piece(self, piece: int) -> bytes:
        """Read the whole of ``piece`` (see :meth:`read_block`)."""
        return self.read_block(piece, 0, self._info.piece_size(piece))

    # --- bookkeeping ------------------------------------------------------------------

    def file_stats(self) -> list[tuple[int, int] | None]:
        """Per entry of ``info.files``: ``(size, mtime_ns)`` of where its bytes live.

        Padding and missing files give None; a file stored in the parts file reports the
        parts file (so a change there is seen as a change of that file's pieces).
        """
        cache: dict[str, tuple[int, int] | None] = {}
        out: list[tuple[int, int] | None] = []
        for i, f in enumerate(self._info.files):
            if f.padding:
                out.append(None)
                continue
            path = self.parts_path if self._modes[i] == _PARTS else self._paths[i]
            if path not in cache:
                try:
                    st = os.stat(path)
                    cache[path] = (st.st_size, st.st_mtime_ns)
                except OSError:
                    cache[path] = None
            out.append(cache[path])
        return out

    def sync(self) -> None:
        """``fsync`` every file this storage has open for writing.

        Raises:
            StorageError: the flush failed (e.g. the disk filled up on write-back).
        """
        for path in self._fds.writable_paths():
            try:
                with self._fds.use(path, write=True) as fd:
                    os.fsync(fd)
            except OSError as exc:
                raise describe_os_error(exc, path, "flush") from None

    def open_files(self) -> int:
        """How many descriptors are cached right now (at most ``max_open_files``)."""
        return len(self._fds)

    def close(self) -> None:
        """Close every cached descriptor (ones in use close when their user is done)."""
        self._fds.close_all()


@dataclass(frozen=True, slots=True)
class Payload:
    """Where an existing payload is: pass both to :class:`FileStorage`.

    Attributes:
        directory: the directory that holds the content (and ``.pytorrent/`` state).
        content_path: the single file, or the top directory of a multi-file torrent.
    """

    directory: str
    content_path: str


def locate_payload(info: Info, data_path: str | os.PathLike[str]) -> Payload:
    """Find the content of ``info`` given what the user typed for ``seed``.

    ``data_path`` is either the content itself (the file of a single-file torrent, the
    top directory of a multi-file one, whatever its name) or the directory that contains
    it as ``<name>``. For a multi-file torrent both readings are scored by how many of
    the torrent's files exist there with the right size; the better one wins, the
    ``<name>`` child on a tie.

    Raises:
        StorageError: nothing usable is there; the message says what was expected.
    """
    path = os.path.abspath(os.fspath(data_path))
    if not os.path.exists(path):
        raise StorageError(f"{path} does not exist", path=path, errno=errno_mod.ENOENT)
    child = os.path.join(path, info.disk_name)
    if not info.multi_file:
        if os.path.isfile(path):
            return Payload(os.path.dirname(path), path)
        if os.path.isfile(child):
            return Payload(path, child)
        raise StorageError(
            f"{path} is a directory without a file named {info.disk_name!r} (the torrent's single file)",
            path=path,
        )
    if not os.path.isdir(path):
        raise StorageError(
            f"{path} is a file, but the torrent {info.name!r} is a directory of {len(info.files)} files",
            path=path,
        )

    def score(root: str) -> int:
        hits = 0
        for f in info.files:
            if f.padding:
                continue
            try:
                st = os.stat(os.path.join(root, *f.disk_path))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size == f.length:
                hits += 1
        return hits

    here = score(path)
    below = score(child) if os.path.isdir(child) else -1
    if below >= here and below > 0:
        return Payload(path, child)
    if here > 0:
        return Payload(os.path.dirname(path), path)
    raise StorageError(
        f"no file of the torrent {info.name!r} found in {path} or {child}", path=path, errno=errno_mod.ENOENT
    )
