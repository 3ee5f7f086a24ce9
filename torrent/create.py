"""Make .torrent files (BEP 3, 12, 19, 27, 47, 52): scan a file or directory, hash it on every core.

:func:`create` returns a frozen :class:`~torrent.proto.metainfo.Metainfo` whose ``info`` dict
we bencoded ourselves (keys sorted, as BEP 3 requires), so the same input always gives
the same info hash. :func:`make` returns the same torrent as the file's bytes and the
facts ``pytorrent create`` prints, and builds the ``Metainfo`` only when asked, so the
command never loads the metainfo parser.

What goes in, and in which order:

* A file gives a single-file torrent; a directory gives a multi-file torrent even when it
  holds one file. Files are sorted by their path components (compared as UTF-8 bytes,
  component by component, which is also the order of a BEP 52 file tree). Empty files
  are listed; empty directories cannot be expressed in v1 metainfo and are left out.
* Symlinks are **followed**: a link to a file is hashed as that file, a link to a
  directory is walked. A link that points nowhere, a link loop, a special file (FIFO,
  socket, device) or a name that is not valid UTF-8 (or that the parser would refuse,
  such as one containing a backslash) is refused with a :class:`MetainfoError` naming
  the path.
* A payload with no bytes at all (an empty directory, only empty files, a zero-byte
  file) is refused: a torrent needs at least one piece.

Automatic piece length (:func:`auto_piece_length`): the smallest power of two from
16 KiB up to 16 MiB with ``piece_length >= 10 * sqrt(total_size)``. This is libtorrent's
rule (``create_torrent``: a piece list of about ``2 * sqrt(total_size)`` bytes), extended
with its 16 MiB cap: 1 MiB of data gets 16 KiB pieces, 1 GiB gets 512 KiB pieces
(2048 of them), 100 GiB gets 4 MiB pieces, and anything above ~2.7 TiB gets 16 MiB.

Hashing (:mod:`torrent.create_hashing`): the payload is cut into batches of whole pieces
(about 4 MiB each). Workers, one per core, take the next batch, map its files' pages
(``mmap``; ``os.preadv`` into a buffer of their own where a file cannot be mapped) and
hash them there (for v2 and hybrid in chunks of 256 KiB, each read by every hash of the
format while it is in the core's cache; a batch may span many files: each worker opens
the files it needs itself, so many small files do not serialize on one reader). From
32 MiB up the workers are processes (each has its own GIL: a v2 leaf hash is one call
per 16 KiB block), forked once the walk is done, or, for a v1 torrent whose piece length
is given, as soon as the walk has found 32 MiB (they learn the files found after that
from a file table). Below that, or where ``fork`` is missing or unsafe (other threads
running), they are threads, which start before the walk ends when the piece length is
given. The metainfo around the hashes is built while they run.

Formats (``torrent_format``): ``v1`` (BEP 3, the default), ``v2`` (BEP 52: a ``file
tree`` with a SHA-256 merkle root per file, ``piece layers`` for files larger than a
piece) and ``hybrid`` (both, in one ``info`` dict). They are laid out as libtorrent lays
them out, so the same input and piece length give libtorrent's info hashes: every
non-empty file starts a piece; a hybrid's v1 ``files`` list holds a BEP 47 padding file
(``attr`` ``p``, path ``.pad/N``) after every file that ends inside a piece, the last one
included (a single-file hybrid has none). The same worker threads hash both: each piece
once with SHA-1 (v1, hybrid; padding read as zeros) and once as a merkle subtree of
SHA-256 over its 16 KiB blocks (v2, hybrid; padding left out). Files are ordered as the
file tree orders them (one exception to libtorrent: it sorts whole path strings, so
``a b`` before ``a/x``, and then refuses its own hybrid; we keep the tree's order).

Left out: BEP 47 file attributes (executable, hidden) and symlinks in the output.
"""

from __future__ import annotations

import hashlib
import itertools
import operator
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator, Sequence

from torrent import create_hashing, version
from torrent.create_hashing import (
    MAX_THREADS,
    HashJob,
    ProcessHashJob,
    ProgressCallback,
    SourceFile,
    hash_files,
    new_job,
    processes_possible,
)
from torrent.errors import MetainfoError
from torrent.types import BLOCK_SIZE

#: ``typing`` is not imported at run time: ``pytorrent create`` starts hashing without it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NamedTuple

    from torrent.proto.metainfo import Metainfo

# ``torrent.proto.metainfo`` and ``torrent.proto.bencoding`` (and their imports) load while the
# hashing workers already run: see :func:`create`. ``torrent.proto.merkle`` loads for v2 and
# hybrid torrents only.

#: Smallest and largest piece length :func:`auto_piece_length` picks.
MIN_AUTO_PIECE_LENGTH = BLOCK_SIZE
MAX_AUTO_PIECE_LENGTH = 16 * 1024 * 1024
#: Largest piece length :func:`create` accepts when asked for one explicitly.
MAX_PIECE_LENGTH = 256 * 1024 * 1024
#: GIL switch interval while this thread works beside the hashing threads.
SWITCH_INTERVAL_S = 0.0002
#: While walking a directory, hand files to the hashing threads this many at a time
#: (and look this often whether the walk has found enough to fork worker processes).
FEED_EVERY = 32
#: Running worker processes get the files found in runs of ``FEED_EVERY`` times this
#: many: each run costs the walk a write to their file table and a look at their
#: results, and the walk finds 256 files (about 3 ms of it) well before two workers
#: have hashed what is queued.
FEED_PROCESSES_FACTOR = 8

DEFAULT_CREATED_BY = version.CREATED_BY

#: What :func:`create` can make.
FORMATS = ("v1", "v2", "hybrid")

__all__ = [
    "FORMATS",
    "MAX_AUTO_PIECE_LENGTH",
    "MAX_PIECE_LENGTH",
    "MAX_THREADS",
    "HashJob",
    "Made",
    "ProgressCallback",
    "SourceFile",
    "auto_piece_length",
    "create",
    "hash_files",
    "make",
    "padded_layout",
    "scan",
]


def auto_piece_length(total_size: int) -> int:
    """The piece length :func:`create` picks for ``total_size`` bytes.

    The smallest power of two in [16 KiB, 16 MiB] that is at least
    ``10 * sqrt(total_size)`` (libtorrent's rule: a piece list of about
    ``2 * sqrt(total_size)`` bytes, 20 bytes per piece).
    """
    piece_length = MIN_AUTO_PIECE_LENGTH
    # (piece_length / 10) ** 2 rounded to the nearest integer: libtorrent's size table.
    while piece_length < MAX_AUTO_PIECE_LENGTH and total_size > (piece_length * piece_length + 50) // 100:
        piece_length *= 2
    return piece_length


def scan(
    path: str | os.PathLike[str],
    on_file: Callable[[SourceFile], object] | None = None,
    *,
    on_files: Callable[[list[SourceFile]], object] | None = None,
) -> tuple[bool, list[SourceFile]]:
    """List the files :func:`create` would hash, in torrent order.

    Args:
        path: a file or directory.
        on_file: called with each file as soon as it is found (in torrent order).
        on_files: called with the files found, a list at a time (in torrent order): a
            directory's files up to :data:`FEED_EVERY` at a time, or as many as a walk
            made elsewhere (``walks_ahead``) hands over at once.

    Returns:
        ``(multi_file, files)``: ``multi_file`` is true when ``path`` is a directory.

    Raises:
        MetainfoError: ``path`` is missing, or something under it is refused (see the
            module docstring). An empty directory gives an empty list, not an error.
    """
    top = os.fspath(path)
    try:
        st = os.stat(top)
    except FileNotFoundError:
        if os.path.islink(top):
            raise MetainfoError(f"{top} is a symlink that points nowhere", "path") from None
        raise MetainfoError(f"{top} does not exist", "path") from None
    except OSError as exc:
        raise MetainfoError(f"cannot read {top}: {exc.strerror or exc}", "path") from None
    found: list[SourceFile] = []
    if on_file is None and on_files is None:
        emit: Callable[[list[SourceFile]], object] = found.extend
    else:

        def emit(files: list[SourceFile]) -> None:
            found.extend(files)
            if on_files is not None:
                on_files(files)
            if on_file is not None:
                for f in files:
                    on_file(f)

    if stat.S_ISREG(st.st_mode):
        name = os.path.basename(os.path.abspath(top))
        if not _plain_name(name):
            name = _component(name, top)
        emit([SourceFile(path=(name,), fs_path=top, length=st.st_size)])
        return False, found
    if not stat.S_ISDIR(st.st_mode):
        raise MetainfoError(f"{top} is neither a file nor a directory", "path")
    ancestors = frozenset({(st.st_dev, st.st_ino)})
    ahead = walks_ahead.pop(top, None)
    if ahead is None or not _take_walk(ahead, emit):
        _walk_rest(top, ancestors, found, emit)
    return True, found


#: Walks of a directory already under way elsewhere, by path as given to :func:`scan`
#: (``pytorrent create`` forks one before its imports: ``cli/prewalk.py``). Each gives its
#: files' ``(path, fs_path, length)`` a list at a time, and a final None when it failed;
#: the next :func:`scan` of that path takes the walk instead of walking.
walks_ahead: dict[str, Callable[[], Iterator[list[tuple[tuple[str, ...], str, int]] | None]]] = {}


def _take_walk(
    ahead: Callable[[], Iterator[list[tuple[tuple[str, ...], str, int]] | None]],
    emit: Callable[[list[SourceFile]], object],
) -> bool:
    """Emit a walk made elsewhere, a list at a time; False when it failed (what it gave
    is emitted)."""
    for rows in ahead():
        if rows is None:
            return False
        # SourceFile(*row) without its Python-level __new__, in a loop in C.
        emit(list(map(tuple.__new__, itertools.repeat(SourceFile), rows)))
    return True


def _walk_rest(
    top: str,
    ancestors: frozenset[tuple[int, int]],
    found: list[SourceFile],
    emit: Callable[[list[SourceFile]], object],
) -> None:
    """Walk ``top``, emitting the files after the ``found`` ones (a failed walk made elsewhere
    gave those): the walk here raises the error it meets, as it would have alone."""
    if not found:
        _walk(top, (), ancestors, emit)
        return
    again: list[SourceFile] = []
    _walk(top, (), ancestors, again.extend)
    if again[: len(found)] != found:
        raise MetainfoError(f"{top} changed while it was walked", "path")
    if len(again) > len(found):
        emit(again[len(found) :])


def _plain_name(name: str) -> bool:
    """True for a name that surely passes the parser's path check (the common case)."""
    if not name or name in (".", "..") or len(name) > 200 or name[1:2] == ":":
        return False
    if "/" in name or "\\" in name or "\x00" in name:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _component(name: str, where: str) -> str:
    from torrent.proto.metainfo import check_path_component

    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise MetainfoError(f"{where}: the name is not valid UTF-8", "path") from None
    try:
        return check_path_component(name, "path")
    except MetainfoError as exc:
        raise MetainfoError(f"{where}: {exc}", "path") from None


def _walk(
    directory: str,
    prefix: tuple[str, ...],
    ancestors: frozenset[tuple[int, int]],
    emit: Callable[[list[SourceFile]], object],
) -> None:
    """Pass the files under ``directory`` to ``emit`` in torrent order, a list at a time.

    Sorting each directory's names and descending in that order gives the same order as
    sorting whole paths component by component (code point order is UTF-8 byte order).
    Each name is looked up relative to its directory's descriptor, where the platform
    allows: a directory of 5,000 files was walked in 11 ms of CPU against 13 by path.
    """
    base = directory if directory.endswith(os.sep) else directory + os.sep
    try:
        if _SCANDIR_FD:
            fd = os.open(directory, _DIR_FLAGS)
            try:
                with os.scandir(fd) as it:
                    _walk_entries(base, list(it), prefix, ancestors, emit)
            finally:
                os.close(fd)
        else:  # pragma: no cover - platforms whose scandir takes no descriptor
            with os.scandir(directory) as it:
                entries = list(it)
            _walk_entries(base, entries, prefix, ancestors, emit)
    except OSError as exc:
        raise MetainfoError(f"cannot list {directory}: {exc.strerror or exc}", "path") from None


def _walk_entries(
    base: str,
    entries: list[os.DirEntry[str]],
    prefix: tuple[str, ...],
    ancestors: frozenset[tuple[int, int]],
    emit: Callable[[list[SourceFile]], object],
) -> None:
    """:func:`_walk`'s work on one directory's entries; ``base`` is its path and a separator.
    Its files are emitted in lists of up to :data:`FEED_EVERY`, each before the walk goes
    down into the next subdirectory."""
    for entry in entries:
        name = entry.name
        # The parser's full check only when a name could fail it (scandir never yields
        # "", ".", ".." or a name with "/" or NUL); an ASCII name's length is its size.
        if not name.isascii() or "\\" in name or len(name) > 200 or name[1:2] == ":":
            try:
                encoded = name.encode("utf-8")
            except UnicodeEncodeError:
                raise MetainfoError(f"{base}{name}: the name is not valid UTF-8", "path") from None
            if b"\\" in encoded or len(encoded) > 200 or encoded[1:2] == b":":
                _component(name, base + name)
    entries.sort(key=_name)
    new = tuple.__new__  # SourceFile(...) without its Python-level __new__: 5,000 files, 1 ms
    run: list[SourceFile] = []
    for entry in entries:
        name = entry.name
        try:
            st = entry.stat()
        except FileNotFoundError:
            raise MetainfoError(f"{base}{name} is a symlink that points nowhere", "path") from None
        except OSError as exc:
            # ELOOP and friends: a link loop or an unreadable entry.
            raise MetainfoError(f"cannot read {base}{name}: {exc.strerror or exc}", "path") from None
        mode = st.st_mode
        if stat.S_ISREG(mode):
            run.append(new(SourceFile, ((*prefix, name), base + name, st.st_size)))
            if len(run) >= FEED_EVERY:
                emit(run)
                run = []
        elif stat.S_ISDIR(mode):
            ident = (st.st_dev, st.st_ino)
            if ident in ancestors:
                raise MetainfoError(f"{base}{name} is a symlink loop (it leads back to a parent)", "path")
            if run:
                emit(run)
                run = []
            _walk(base + name, (*prefix, name), ancestors | {ident}, emit)
        else:
            raise MetainfoError(f"{base}{name} is a special file (not a regular file or directory)", "path")
    if run:
        emit(run)


_name = operator.attrgetter("name")
_length = operator.itemgetter(2)  # a SourceFile's length
_utf8 = operator.methodcaller("encode", "utf-8")
_SCANDIR_FD = os.scandir in os.supports_fd
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


def make(
    path: str | os.PathLike[str],
    *,
    piece_length: int | None = None,
    trackers: Sequence[str | Sequence[str]] = (),
    private: bool = False,
    comment: str = "",
    source: str = "",
    web_seeds: Sequence[str] = (),
    name: str | None = None,
    no_date: bool = False,
    creation_date: int | None = None,
    created_by: str = DEFAULT_CREATED_BY,
    threads: int | None = None,
    progress: ProgressCallback | None = None,
    torrent_format: str = "v1",
) -> Made:
    """Hash a file or directory: the .torrent file's bytes and what ``pytorrent create`` prints.

    :func:`create` with the same arguments gives the same torrent as a
    :class:`~torrent.proto.metainfo.Metainfo`; ``make`` builds that only when asked
    (:meth:`Made.metainfo`), so the command does not load the parser at all.

    Args:
        path: the file or directory to share.
        piece_length: bytes per piece, a power of two from 16 KiB to 256 MiB; ``None``
            picks one with :func:`auto_piece_length`.
        trackers: BEP 12 tiers. Each item is a tier: a sequence of URLs, or one URL
            (a tier of its own). The first URL also becomes ``announce``; an
            ``announce-list`` is written when there is more than one URL.
        private: set the BEP 27 private flag.
        comment: the ``comment`` field.
        source: ``info.source`` (changes the info hash; private trackers use it).
        web_seeds: BEP 19 ``url-list`` URLs.
        name: the torrent's name instead of the file or directory's base name.
        no_date: leave out ``creation date``.
        creation_date: seconds since the epoch to write instead of now.
        created_by: the ``created by`` field ("" leaves it out).
        threads: hashing threads; default one per usable core.
        progress: ``progress(done_bytes, total_bytes)``, called from this thread about
            every 0.1 s while hashing and once at the end.
        torrent_format: ``v1``, ``v2`` or ``hybrid`` (see the module docstring).

    Raises:
        MetainfoError: the path is missing or refused, the payload holds no bytes, or
            an argument is invalid (the message names it).
        StorageError: a file could not be read or changed size while being hashed.
    """
    if piece_length is not None and (
        not isinstance(piece_length, int)
        or piece_length < BLOCK_SIZE
        or piece_length > MAX_PIECE_LENGTH
        or piece_length & (piece_length - 1)
    ):
        raise MetainfoError(
            f"{piece_length} is not a power of two from 16 KiB to {MAX_PIECE_LENGTH // 2**20} MiB",
            "piece length",
        )
    if torrent_format not in FORMATS:
        raise MetainfoError(f"{torrent_format!r} is not one of {', '.join(FORMATS)}", "format")
    if torrent_format != "v1":
        return _create_v2(
            path,
            piece_length,
            trackers,
            torrent_format,
            threads,
            progress,
            name,
            _TopFields(
                private,
                source,
                comment,
                created_by,
                None if no_date else (int(time.time()) if creation_date is None else int(creation_date)),
                [w for w in web_seeds if w],
            ),
        )
    job: HashJob | ProcessHashJob | None = None
    feed: _Feed | None = None
    interval = sys.getswitchinterval()
    try:
        # With the piece length known, hashing starts while the walk goes on.
        feed = _Feed(piece_length, threads) if piece_length is not None else None
        if feed is not None and feed.job is not None:
            sys.setswitchinterval(min(interval, SWITCH_INTERVAL_S))
        multi_file, files = scan(path, on_files=feed.many if feed is not None and feed.feeds else None)
        total = _check_payload(path, multi_file, files)
        top_name = _top_name(path, name, multi_file, files)
        chosen = piece_length or auto_piece_length(total)
        if feed is not None and feed.job is not None:
            job = feed.finish()
        else:
            job = new_job(chosen, files, threads=threads)
            job.start()
        # Checked once the workers run: the URL checks' imports stay off the start-up path.
        tiers = _tiers(trackers)
        # While the workers hash (mostly without the GIL), build everything else. A
        # short switch interval lets a worker coming back from a hash take the GIL at
        # once instead of waiting up to 5 ms for this thread's Python code.
        sys.setswitchinterval(min(interval, SWITCH_INTERVAL_S))
        parts = _Assembly(
            files,
            multi_file,
            top_name,
            chosen,
            tiers,
            private,
            source,
            comment,
            created_by,
            None if no_date else (int(time.time()) if creation_date is None else int(creation_date)),
            [w for w in web_seeds if w],
        )
    except BaseException:
        running = job or (feed.job if feed is not None else None)
        if running is not None:
            running.cancel()
        raise
    finally:
        sys.setswitchinterval(interval)
    pieces = job.wait(progress, reap=False)
    try:
        return parts.made(pieces)
    finally:
        job.reap()  # the workers exit while the torrent is put together


class _Feed:
    """Hands the files a walk finds (in torrent order) to a hashing job while the walk
    goes on; the piece length must be known. Call :meth:`many` with each list of them;
    :attr:`job` is then the job that runs, if any, and :meth:`finish` gives it the rest.

    Worker processes are forked once the walk has found
    :data:`~torrent.create_hashing.PROCESS_MIN_BYTES`:
    they inherit the files found so far and read the rest from the job's file table,
    so on 1 GiB in 5,000 files they hash while most of the walk goes on. A smaller
    payload is left to :func:`new_job` after the walk (threads). Where processes cannot
    run, hashing threads start at once.
    """

    def __init__(self, piece_length: int, threads: int | None) -> None:
        self.piece_length = piece_length
        self.threads = threads
        self.pending: list[SourceFile] = []  # found, not yet fed
        self.counted = 0  # files of ``pending`` whose bytes are in ``found``
        self.found = 0  # bytes found, while no job runs
        self.every = FEED_EVERY  # :meth:`_flush` when ``pending`` holds this many
        #: The job, once it runs.
        self.job: HashJob | ProcessHashJob | None = None
        # The job for a large payload, not yet started (one worker: none at all).
        self.processes: ProcessHashJob | None = None
        if processes_possible():
            self.processes = ProcessHashJob(piece_length, threads=threads)
            if self.processes.threads < 2:
                self.processes = None
        else:
            self.job = HashJob(piece_length, threads=threads)
            self.job.start()
        #: False when no job wants the files before the walk ends (one worker).
        self.feeds = self.job is not None or self.processes is not None

    def many(self, files: list[SourceFile]) -> None:
        """Take ``files``, the next ones the walk found."""
        pending = self.pending
        pending += files
        if len(pending) >= self.every:
            self._flush()

    def _flush(self) -> None:
        pending = self.pending
        if self.job is None:
            self.found += sum(map(_length, pending[self.counted :]))
            self.counted = len(pending)
            self.every = len(pending) + FEED_EVERY
            if self.found < create_hashing.PROCESS_MIN_BYTES or self.processes is None:
                return  # kept: the processes will inherit them
            self.job = self.processes
            self.job.feed(pending)
            pending.clear()
            self.every = FEED_EVERY * FEED_PROCESSES_FACTOR
            self.job.start()
            return
        self.job.feed(pending)
        pending.clear()

    def finish(self) -> HashJob | ProcessHashJob:
        """:attr:`job` (which must run) with every file fed."""
        if self.job is None:
            raise RuntimeError("no job runs")
        self.job.feed(self.pending)
        self.pending.clear()
        self.job.close_feed()
        return self.job


def create(
    path: str | os.PathLike[str],
    *,
    piece_length: int | None = None,
    trackers: Sequence[str | Sequence[str]] = (),
    private: bool = False,
    comment: str = "",
    source: str = "",
    web_seeds: Sequence[str] = (),
    name: str | None = None,
    no_date: bool = False,
    creation_date: int | None = None,
    created_by: str = DEFAULT_CREATED_BY,
    threads: int | None = None,
    progress: ProgressCallback | None = None,
    torrent_format: str = "v1",
) -> Metainfo:
    """Hash a file or directory and return its metainfo (arguments: :func:`make`).

    Returns:
        The validated, frozen metainfo; ``to_bytes()`` gives the .torrent file.

    Raises:
        MetainfoError: the path is missing or refused, the payload holds no bytes, or
            an argument is invalid (the message names it).
        StorageError: a file could not be read or changed size while being hashed.
    """
    return make(
        path,
        piece_length=piece_length,
        trackers=trackers,
        private=private,
        comment=comment,
        source=source,
        web_seeds=web_seeds,
        name=name,
        no_date=no_date,
        creation_date=creation_date,
        created_by=created_by,
        threads=threads,
        progress=progress,
        torrent_format=torrent_format,
    ).metainfo()


class Made:
    """A torrent :func:`make` hashed: the .torrent file's bytes and what describes it.

    Attributes:
        data: the .torrent file (what :meth:`Metainfo.to_bytes` gives).
        name: the torrent's name.
        info_hash_v1: SHA-1 of the ``info`` dict (v1 and hybrid), else None.
        info_hash_v2: SHA-256 of the ``info`` dict (v2 and hybrid), else None.
        size: bytes of the files, padding left out.
        files: how many files, padding left out.
        piece_length: bytes per piece.
        pieces: how many pieces.
    """

    __slots__ = (
        "_build",
        "data",
        "files",
        "info_hash_v1",
        "info_hash_v2",
        "name",
        "piece_length",
        "pieces",
        "size",
    )

    def __init__(
        self,
        data: bytes,
        name: str,
        info_hash_v1: bytes | None,
        info_hash_v2: bytes | None,
        size: int,
        files: int,
        piece_length: int,
        pieces: int,
        build: Callable[[], Metainfo],
    ) -> None:
        self.data = data
        self.name = name
        self.info_hash_v1 = info_hash_v1
        self.info_hash_v2 = info_hash_v2
        self.size = size
        self.files = files
        self.piece_length = piece_length
        self.pieces = pieces
        self._build = build

    def metainfo(self) -> Metainfo:
        """The torrent as a validated, frozen metainfo (built, not parsed back)."""
        return self._build()


def _check_payload(path: str | os.PathLike[str], multi_file: bool, files: Sequence[SourceFile]) -> int:
    """The payload's size; an empty directory or payload is refused."""
    if not files:
        raise MetainfoError(f"{os.fspath(path)} is an empty directory: nothing to share", "path")
    total: int = sum(map(_length, files))
    if total == 0:
        what = "holds only empty files" if multi_file else "is an empty file"
        raise MetainfoError(f"{os.fspath(path)} {what}: a torrent needs at least one byte", "path")
    return total


def _top_name(
    path: str | os.PathLike[str], name: str | None, multi_file: bool, files: Sequence[SourceFile]
) -> str:
    if name is not None:
        from torrent.proto.metainfo import check_path_component

        return check_path_component(name, "name")
    if multi_file:
        top_name = os.path.basename(os.path.abspath(os.fspath(path)))
        return top_name if _plain_name(top_name) else _component(top_name, os.fspath(path))
    return files[0].path[0]


if TYPE_CHECKING:

    class _TopFields(NamedTuple):
        """What goes around the ``info`` dict (and ``private``/``source`` inside it)."""

        private: bool
        source: str
        comment: str
        created_by: str
        creation_date: int | None
        web_seeds: list[str]

else:
    from collections import namedtuple

    _TopFields = namedtuple(
        "_TopFields", ("private", "source", "comment", "created_by", "creation_date", "web_seeds")
    )


def padded_layout(files: Sequence[SourceFile], piece_length: int, *, tail: bool) -> list[SourceFile]:
    """``files`` with a BEP 47 padding file after each one that ends inside a piece.

    With ``tail`` the last file is padded too (libtorrent's hybrids); without, a
    trailing padding file is dropped (a v2-only torrent's piece space).
    """
    out: list[SourceFile] = []
    offset = 0
    for f in files:
        out.append(f)
        offset += f.length
        if offset % piece_length:
            gap = piece_length - offset % piece_length
            out.append(SourceFile((".pad", str(gap)), "", gap))
            offset += gap
    while not tail and out and out[-1].fs_path == "" and out[-1].path[:1] == (".pad",):
        out.pop()
    return out


def _create_v2(
    path: str | os.PathLike[str],
    piece_length: int | None,
    trackers: Sequence[str | Sequence[str]],
    torrent_format: str,
    threads: int | None,
    progress: ProgressCallback | None,
    name: str | None,
    fields: _TopFields,
) -> Made:
    """:func:`make` for ``v2`` and ``hybrid``: scan, hash both ways at once, assemble."""
    from torrent.proto import merkle

    multi_file, files = scan(path)
    total = _check_payload(path, multi_file, files)
    top_name = _top_name(path, name, multi_file, files)
    chosen = piece_length or auto_piece_length(total)
    hybrid = torrent_format == "hybrid"
    layout = padded_layout(files, chosen, tail=hybrid) if multi_file else list(files)
    job = new_job(chosen, layout, threads=threads, v1=hybrid, v2=True)
    try:
        job.start()
        # While the workers hash: what they do not need is imported and checked now.
        from torrent.proto import bencoding

        tiers = _tiers(trackers)
    except BaseException:
        job.cancel()
        raise
    pieces = job.wait(progress)
    nodes = job.nodes_v2

    info: dict[bytes, Any] = {}
    tree: dict[bytes, Any] = {}
    layers: dict[bytes, bytes] = {}
    v1_files: list[dict[bytes, Any]] = []
    entries: list[tuple[tuple[str, ...], int, int, bool, bytes]] = []  # FileEntry fields
    offset = 0
    for f in layout:
        raw_path = [c.encode("utf-8") for c in f.path]
        shown = f.path if multi_file else (top_name,)
        if not f.fs_path:  # BEP 47 padding
            v1_files.append({b"attr": b"p", b"length": f.length, b"path": raw_path})
            entries.append((shown, f.length, offset, True, b""))
            offset += f.length
            continue
        v1_files.append({b"length": f.length, b"path": raw_path})
        entry: dict[bytes, Any] = {b"length": f.length}
        root = b""
        if f.length:
            first = offset // chosen
            count = -(-f.length // chosen)
            file_nodes = [nodes[i * 32 : i * 32 + 32] for i in range(first, first + count)]
            root = merkle.file_root(f.length, file_nodes, chosen)
            entry[b"pieces root"] = root
            if count > 1:
                layers[root] = b"".join(file_nodes)
        entries.append((shown, f.length, offset, False, root))
        node = tree
        keys = raw_path if multi_file else [top_name.encode("utf-8")]
        for c in keys[:-1]:
            node = node.setdefault(c, {})
        node[keys[-1]] = {b"": entry}
        offset += f.length
    info[b"file tree"] = tree
    info[b"meta version"] = 2
    info[b"name"] = top_name.encode("utf-8")
    info[b"piece length"] = chosen
    if hybrid:
        if multi_file:
            info[b"files"] = v1_files
        else:
            info[b"length"] = files[0].length
        info[b"pieces"] = pieces
    if fields.private:
        info[b"private"] = 1
    if fields.source:
        info[b"source"] = fields.source.encode("utf-8")
    top = _top_dict(tiers, fields)
    top[b"info"] = info
    if layers:
        top[b"piece layers"] = layers
    # Built here rather than parsed back: every field is ours and already checked, and
    # parsing a 5,000-file torrent again took longer than hashing half of it.
    # ``tests/unit/test_create.py`` checks that parsing the bytes gives the same object.
    info_bytes = bencoding.encode(info)
    info_hash_v2 = hashlib.sha256(info_bytes).digest()
    info_hash_v1 = hashlib.sha1(info_bytes).digest() if hybrid else None

    def build() -> Metainfo:
        from torrent.proto.metainfo import FileEntry, Info, Metainfo
        from torrent.types import InfoHash

        urls = [u for tier in tiers for u in tier]
        return Metainfo(
            info=Info(
                name=top_name,
                piece_length=chosen,
                pieces=pieces if hybrid else b"",
                files=tuple(
                    FileEntry(path=p, length=n, offset=o, padding=True, attr="p")
                    if pad
                    else FileEntry(path=p, length=n, offset=o, pieces_root=r)
                    for p, n, o, pad, r in entries
                ),
                multi_file=multi_file,
                private=fields.private,
                source=fields.source,
                raw=info,
                meta_version=2,
                has_v1=hybrid,
                piece_layers=layers,
            ),
            info_hash=InfoHash(info_hash_v1 if info_hash_v1 is not None else info_hash_v2[:20]),
            info_bytes=info_bytes,
            announce=urls[0] if urls else "",
            announce_list=tuple(tiers) if urls else (),
            url_list=tuple(fields.web_seeds),
            creation_date=fields.creation_date,
            comment=fields.comment,
            created_by=fields.created_by,
            raw=top,
            info_hash_v2=info_hash_v2,
        )

    whole = dict(top)
    whole[b"info"] = bencoding.Raw(info_bytes)
    return Made(
        bencoding.encode(whole),
        top_name,
        info_hash_v1,
        info_hash_v2,
        sum(f.length for f in files),
        len(files),
        chosen,
        -(-offset // chosen),
        build,
    )


def _top_dict(tiers: list[tuple[str, ...]], fields: _TopFields) -> dict[bytes, Any]:
    top: dict[bytes, Any] = {}
    urls = [u for tier in tiers for u in tier]
    if urls:
        top[b"announce"] = urls[0].encode("utf-8")
    if len(urls) > 1:
        top[b"announce-list"] = [[u.encode("utf-8") for u in t] for t in tiers]
    if fields.comment:
        top[b"comment"] = fields.comment.encode("utf-8")
    if fields.created_by:
        top[b"created by"] = fields.created_by.encode("utf-8")
    if fields.creation_date is not None:
        top[b"creation date"] = fields.creation_date
    if fields.web_seeds:
        top[b"url-list"] = [w.encode("utf-8") for w in fields.web_seeds]
    return top


class _Assembly:
    """The metainfo around the piece hashes, bencoded before the hashes are known.

    ``info`` keys sort as ``files``/``length``, ``name``, ``piece length``, ``pieces``,
    ``private``, ``source``, so its bytes are a prefix, the hashes and a suffix; around
    them, the file's keys before ``info`` and after it. The info hash is started on the
    prefix here too, so that once the hashes are in, only they are left to hash.
    """

    def __init__(
        self,
        files: Sequence[SourceFile],
        multi_file: bool,
        name: str,
        piece_length: int,
        tiers: list[tuple[str, ...]],
        private: bool,
        source: str,
        comment: str,
        created_by: str,
        creation_date: int | None,
        web_seeds: list[str],
    ) -> None:
        from torrent.proto import bencoding

        parts: list[bytes] = [b"d"]
        if multi_file:
            # The file list is most of the work for many files, so it is bencoded here
            # directly ({length, path} per file, keys already in order) rather than
            # through the generic encoder; the dicts a Metainfo holds are built only
            # when one is asked for (:meth:`metainfo`).
            # Files come directory by directory, so each directory's part of the path
            # is encoded once.
            parts.append(b"5:filesl")
            folder: tuple[str, ...] = ()
            head = b""  # ``folder``, bencoded
            for f in files:
                path = f.path
                if path[:-1] != folder:
                    folder = path[:-1]
                    head = b"".join([b"%d:%b" % (len(c), c) for c in map(_utf8, folder)])
                c = path[-1].encode("utf-8")
                parts.append(b"d6:lengthi%de4:pathl%b%d:%bee" % (f.length, head, len(c), c))
            parts.append(b"e")
        else:
            parts.append(b"6:lengthi%de" % files[0].length)
        encoded_name = name.encode("utf-8")
        parts.append(bencoding.encode({b"name": encoded_name, b"piece length": piece_length})[1:-1])
        self.prefix = b"".join(parts) + b"6:pieces"
        suffix: dict[bytes, Any] = {}
        if private:
            suffix[b"private"] = 1
        if source:
            suffix[b"source"] = source.encode("utf-8")
        self.suffix = bencoding.encode(suffix)[1:]
        self.files = files
        self.size = sum(map(_length, files))
        self.multi_file = multi_file
        self.name = name
        self.piece_length = piece_length
        self.private = private
        self.source = source

        urls = [u for tier in tiers for u in tier]
        self.top = _top_dict(
            tiers, _TopFields(private, source, comment, created_by, creation_date, web_seeds)
        )
        # All but the piece hashes is bencoded and hashed now, while the workers hash:
        # what is left for the end is the hashes themselves.
        self.head = bencoding.encode({k: v for k, v in self.top.items() if k < b"info"})[:-1] + b"4:info"
        self.tail = bencoding.encode({k: v for k, v in self.top.items() if k > b"info"})[1:]
        self.hashed = hashlib.sha1(self.prefix)
        self.tiers = tuple(tiers) if urls else ()
        self.announce = urls[0] if urls else ""
        self.comment = comment
        self.created_by = created_by
        self.creation_date = creation_date
        self.web_seeds = tuple(web_seeds)

    def made(self, pieces: bytes) -> Made:
        size = b"%d:" % len(pieces)
        info_hash = self.hashed.copy()
        info_hash.update(size)
        info_hash.update(pieces)
        info_hash.update(self.suffix)
        return Made(
            b"".join((self.head, self.prefix, size, pieces, self.suffix, self.tail)),
            self.name,
            info_hash.digest(),
            None,
            self.size,
            len(self.files),
            self.piece_length,
            len(pieces) // 20,
            lambda: self.metainfo(pieces, b"".join((self.prefix, size, pieces, self.suffix))),
        )

    def metainfo(self, pieces: bytes, info_bytes: bytes) -> Metainfo:
        from torrent.proto.metainfo import FileEntry, Info, Metainfo
        from torrent.types import InfoHash

        info_raw: dict[bytes, Any] = {}
        entries: list[tuple[tuple[str, ...], int, int]] = []  # FileEntry fields
        if self.multi_file:
            raw_files = []
            offset = 0
            for f in self.files:
                raw_files.append({b"length": f.length, b"path": [c.encode("utf-8") for c in f.path]})
                entries.append((f.path, f.length, offset))
                offset += f.length
            info_raw[b"files"] = raw_files
        else:
            info_raw[b"length"] = self.files[0].length
            entries.append(((self.name,), self.files[0].length, 0))
        info_raw[b"name"] = self.name.encode("utf-8")
        info_raw[b"piece length"] = self.piece_length
        info_raw[b"pieces"] = pieces
        if self.private:
            info_raw[b"private"] = 1
        if self.source:
            info_raw[b"source"] = self.source.encode("utf-8")
        top = dict(self.top)
        top[b"info"] = info_raw
        return Metainfo(
            info=Info(
                name=self.name,
                piece_length=self.piece_length,
                pieces=pieces,
                files=tuple(FileEntry(path=p, length=n, offset=o) for p, n, o in entries),
                multi_file=self.multi_file,
                private=self.private,
                source=self.source,
                raw=info_raw,
            ),
            info_hash=InfoHash(hashlib.sha1(info_bytes).digest()),
            info_bytes=info_bytes,
            announce=self.announce,
            announce_list=self.tiers,
            url_list=self.web_seeds,
            creation_date=self.creation_date,
            comment=self.comment,
            created_by=self.created_by,
            raw=top,
        )


def _tiers(trackers: Sequence[str | Sequence[str]]) -> list[tuple[str, ...]]:
    from torrent.proto.tracker_url import tracker_url_problem as _tracker_url_problem

    if isinstance(trackers, str):
        trackers = [trackers]
    tiers: list[tuple[str, ...]] = []
    for i, tier in enumerate(trackers):
        urls = (tier,) if isinstance(tier, str) else tuple(tier)
        for url in urls:
            if not isinstance(url, str):
                raise MetainfoError(f"expected a URL, got {type(url).__name__}", f"trackers[{i}]")
        urls = tuple(u.strip() for u in urls if u.strip())
        for url in urls:
            problem = _tracker_url_problem(url)
            if problem is not None:
                raise MetainfoError(problem, "tracker")
        if urls:
            tiers.append(urls)
    return tiers
