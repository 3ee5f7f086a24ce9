"""Async front for a :class:`~torrent.disk.storage.Storage`: file I/O and SHA-1 off the event loop.

Every read, write and hash runs on a bounded thread pool (``pread``/``pwrite`` and
``hashlib`` release the GIL for large buffers, so hashing uses every core). The loop
only awaits results (libtorrent's ``disk_interface`` plays the same role).

Rules:

1. Back-pressure: at most ``max_queued`` operations are submitted or running; one
   more ``await`` waits for a slot, so a fast network cannot queue unbounded blocks.
2. A piece counts as verified only when its SHA-1 matched *and* its bytes were
   written: :meth:`DiskIO.hash_piece` hashes what is on disk (after the writes it
   follows returned), and :meth:`DiskIO.write_piece` hashes the in-memory piece first
   and returns True only once the write returned. Either way the caller marks the
   piece verified after the ``await`` returned True, never before.
3. Before the first write to a piece, the optional write journal is told (in the same
   worker thread, before the bytes go out), so a crash leaves a record of every piece
   that may hold new bytes (see :mod:`torrent.disk.resume`).
4. The read cache (for uploads) holds *whole pieces* when a piece is at most a quarter
   of the cache, otherwise single blocks; it is an LRU bounded in bytes. A write to a
   piece invalidates its cached copy (a per-piece generation number), and concurrent
   reads of the same piece share one disk read.
5. :meth:`DiskIO.check` hashes many pieces in parallel, one per core, each streamed in
   1 MiB chunks, so memory stays at about ``cores`` MiB whatever the piece length.
6. A verified piece is never written again: :meth:`DiskIO.write` and
   :meth:`DiskIO.write_piece` drop writes to a piece that passed its hash check (a
   late duplicate block in endgame, or a peer's garbage) and count them in
   ``writes_dropped``. Resume state relies on this (see :mod:`torrent.disk.resume`).
7. Cancelling an ``await`` does not cancel a write already running in a thread;
   :meth:`DiskIO.aclose` waits for every submitted operation, so shutdown finishes
   in-flight writes.
8. Operations go through one shared queue drained by at most one pool job per core
   at a time (two on one core; a job runs until the queue is empty); a job reports its finished
   operations in batches, one loop wake-up per batch (at least every 2 ms). A thread
   hand-off costs tens of microseconds, a 16 KiB ``pwrite`` only a few; and a slow
   operation holds up only its own thread, the other jobs keep draining the queue.
   More jobs than cores only contend: with three downloads on two cores, up to four
   threads wrote 1 MiB pieces into the same file at once, and each piece's hash and
   write took 30-45 ms of a thread instead of about 10 ms.
9. The engine assembles a piece in memory and hands it whole to
   :meth:`DiskIO.write_piece`: one thread hand-off per piece instead of one per block
   (the fast path; see ``bench/disk.py``).
10. "Hash" means every hash the torrent has for the piece (``Info.check_piece``): the
    SHA-1 of v1, the BEP 52 merkle node of v2, both for a hybrid. A hybrid piece that
    matches one and not the other means the torrent's two halves describe different
    data: :meth:`DiskIO.write_piece` raises :class:`MetainfoError` and the torrent
    stops (nothing is written). A v2 piece whose hash is not known yet (no piece
    layer) raises it too, rather than blaming the peers that sent it.
11. Flush ahead: after every ``FLUSH_AHEAD_BYTES`` written by :meth:`DiskIO.write_piece`,
    the worker that crossed the mark calls ``fsync`` on the storage (best effort; an error is
    left for :meth:`DiskIO.flush` to report). The kernel would otherwise hold a whole
    download's pages dirty until the ``fsync`` before the final resume state, which then
    waits for all of them at once (0.3-0.4 s a GiB at the end of every download); spread
    out, that write-back overlaps the transfer. Durability still comes only from
    :meth:`DiskIO.flush`. A whole piece's aligned bytes bypass the page cache (see
    :mod:`torrent.disk.storage`, rule 9), so the flush mostly commits file metadata; it
    matters where the file system refuses ``O_DIRECT``.

Left out: write coalescing across pieces, io_uring, a write-back cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from torrent.disk.storage import Storage
from torrent.errors import MetainfoError, StorageError
from torrent.proto.metainfo import PieceCheck

T = TypeVar("T")

#: Bytes read per step when hashing a piece from disk.
HASH_CHUNK = 1024 * 1024
#: Default bound on operations submitted to the pool and not yet finished.
DEFAULT_MAX_QUEUED = 64
#: Default read-cache size in bytes.
DEFAULT_READ_CACHE_BYTES = 16 * 1024 * 1024

#: Bytes of verified pieces written between two background fsyncs (rule 11).
FLUSH_AHEAD_BYTES = 64 * 1024 * 1024

#: A worker reports finished operations at least this often while it keeps draining.
_REPORT_EVERY_S = 0.002
#: One queued operation: the function, its arguments, the future awaiting it.
_Op = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]

#: ``progress(done, total)`` callback of :meth:`DiskIO.check`, called on the loop.
Progress = Callable[[int, int], None]


class WriteJournal(Protocol):
    """Told about a piece before its first write (thread-safe; called from workers)."""

    def note_write(self, piece: int) -> None: ...


@dataclass(frozen=True, slots=True)
class DiskStats:
    """A snapshot of :class:`DiskIO` counters (see :meth:`DiskIO.statistics`)."""

    bytes_written: int
    bytes_read: int
    bytes_hashed: int
    pieces_passed: int
    pieces_failed: int
    cache_hits: int
    cache_misses: int
    cache_bytes: int
    queued: int
    max_queued: int
    writes_dropped: int


class DiskIO:
    """Runs a storage's I/O and hashing on a bounded thread pool.

    Use as ``async with DiskIO(storage) as disk:``; or call :meth:`aclose` yourself.

    Args:
        storage: the synchronous backend (thread-safe).
        threads: pool size; default ``cores + 2`` (at least 4): cores for hashing plus
            room for I/O that waits on the disk.
        max_queued: bound on operations submitted and unfinished (back-pressure).
        read_cache_bytes: LRU read cache size for uploads (0 disables it).
        journal: told about each piece before its first write (see rule 3).
        executor: a thread pool to share with other DiskIOs (a session's torrents share
            one, so an idle torrent holds no thread); its owner shuts it down. Default:
            a pool of this DiskIO's own, of ``threads`` threads.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        threads: int | None = None,
        max_queued: int = DEFAULT_MAX_QUEUED,
        read_cache_bytes: int = DEFAULT_READ_CACHE_BYTES,
        journal: WriteJournal | None = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        if max_queued < 1:
            raise ValueError("max_queued must be at least 1")
        cores = os.cpu_count() or 1
        self.storage = storage
        self._info = storage.info
        self._threads = threads if threads is not None else max(4, cores + 2)
        self._cores = max(1, min(cores, self._threads))
        self._own_pool = executor is None
        self._pool = executor or ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="diskio")
        self._max_queued = max_queued
        self._slots = asyncio.Semaphore(max_queued)
        self._queued = 0
        self._submitted: set[Future[Any]] = set()
        self._pending: deque[_Op] = deque()  # appended on the loop, popped by workers
        self._kick_scheduled = False
        #: Jobs draining the queue now (at most ``_jobs``), guarded by the lock. Two even
        #: on one core, so that a slow operation leaves one job draining the others.
        self._jobs = min(self._threads, max(2, self._cores))
        self._draining = 0
        self._draining_lock = threading.Lock()
        self._closed = False
        self._journal = journal
        self._journaled: set[int] = set()
        self._verified: set[int] = set()
        self._dropped = 0
        # Read cache: key -> (generation of the piece when read, data).
        self._cache_limit = max(0, read_cache_bytes)
        self._whole_pieces = self._info.piece_length * 4 <= self._cache_limit
        #: The last piece and its size (read_cached runs per uploaded block).
        self._last_piece = self._info.num_pieces - 1
        self._last_piece_size = self._info.piece_size(self._last_piece) if self._last_piece >= 0 else 0
        self._cache: OrderedDict[tuple[int, int, int], tuple[int, bytes]] = OrderedDict()
        self._cache_bytes = 0
        self._generation: dict[int, int] = {}
        self._reading: dict[tuple[int, int, int], asyncio.Future[bytes]] = {}
        # Counters.
        self._bytes_written = 0
        self._unflushed = 0  # bytes written by write_piece since the last flush ahead (rule 11)
        self._bytes_read = 0
        self._bytes_hashed = 0
        self._passed = 0
        self._failed = 0
        self._hits = 0
        self._misses = 0

    async def __aenter__(self) -> DiskIO:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Wait for every submitted operation, then stop the pool and close the files."""
        self._closed = True
        if self._pending:
            self._kick(asyncio.get_running_loop())
        pending = [asyncio.wrap_future(f) for f in list(self._submitted)]
        if pending:
            await asyncio.wait(pending)
        if self._own_pool:
            self._pool.shutdown(wait=False)
        self.storage.close()

    # --- plumbing ---------------------------------------------------------------------

    async def _submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``fn(*args)`` for the pool once a slot is free; return its future."""
        if self._closed:
            raise StorageError("disk I/O is closed")
        await self._slots.acquire()  # released when the operation finished (_finish)
        if self._closed:  # closed while we waited for the slot
            self._slots.release()
            raise StorageError("disk I/O is closed")
        self._queued += 1
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._pending.append((fn, args, fut))
        if not self._kick_scheduled:
            self._kick_scheduled = True
            loop.call_soon(self._kick, loop)
        return fut

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await (await self._submit(fn, *args))

    def _kick(self, loop: asyncio.AbstractEventLoop) -> None:
        # Rule 8: the queue is drained by at most one job per core at a time; each job
        # reports back with one wake-up per batch of results.
        self._kick_scheduled = False
        with self._draining_lock:
            jobs = min(len(self._pending), self._jobs - self._draining)
            self._draining += max(0, jobs)
        for _ in range(jobs):
            cf = self._pool.submit(self._drain, loop)
            self._submitted.add(cf)
            cf.add_done_callback(self._submitted.discard)

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        # Runs in a worker: take operations from the shared queue until it is empty, so
        # a slow one in this thread never holds up the others (they go to other jobs).
        results: list[tuple[asyncio.Future[Any], bool, Any]] = []
        posted_at = time.monotonic()
        while True:
            try:
                fn, args, fut = self._pending.popleft()
            except IndexError:
                with self._draining_lock:  # _kick counts this job until it has left
                    if self._pending:
                        continue
                    self._draining -= 1
                break
            try:
                results.append((fut, True, fn(*args)))
            except Exception as exc:
                results.append((fut, False, exc))
            if time.monotonic() - posted_at > _REPORT_EVERY_S:
                self._post(loop, results)
                results = []
                posted_at = time.monotonic()
        if results:
            self._post(loop, results)

    def _post(
        self, loop: asyncio.AbstractEventLoop, results: list[tuple[asyncio.Future[Any], bool, Any]]
    ) -> None:
        try:
            loop.call_soon_threadsafe(self._finish, results)
        except RuntimeError:  # pragma: no cover - the loop closed under us
            pass

    def _finish(self, results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
        for fut, ok, value in results:
            self._queued -= 1
            self._slots.release()
            if fut.cancelled():
                continue  # the caller gave up; the operation ran anyway (rule 7)
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def _journal_sync(self, piece: int) -> None:
        # Runs in the worker, before the write: the record exists before the bytes.
        if self._journal is not None and piece not in self._journaled:
            self._journal.note_write(piece)
            self._journaled.add(piece)

    def _invalidate(self, piece: int) -> None:
        self._generation[piece] = self._generation.get(piece, 0) + 1

    # --- writes -----------------------------------------------------------------------

    def _write_sync(self, piece: int, offset: int, data: bytes | bytearray | memoryview) -> None:
        self._journal_sync(piece)
        self.storage.write_block(piece, offset, data)

    async def write(self, piece: int, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write a block; returns once ``pwrite`` returned.

        Raises:
            StorageError: the write failed (full disk, permissions, ...).
            ValueError: the range is not inside the piece.
        """
        if piece in self._verified:
            # Rule 6: a late duplicate (endgame) must not touch a verified piece.
            self._dropped += 1
            return
        self._invalidate(piece)
        await self._run(self._write_sync, piece, offset, data)
        self._bytes_written += len(data)
        self._invalidate(piece)

    def _write_piece_sync(self, piece: int, data: bytes | bytearray | memoryview) -> bool:
        result = self._info.check_piece(piece, data)
        if result is PieceCheck.CONFLICT:
            raise MetainfoError(
                f"piece {piece} matches one of the hybrid torrent's hashes and not the other: its v1 "
                "and v2 halves describe different data",
                "info.pieces",
            )
        if result is PieceCheck.UNKNOWN:
            raise MetainfoError(
                f"the hash of piece {piece} is not known (the torrent has no piece layer for its file)",
                "piece layers",
            )
        if result is not PieceCheck.PASSED:
            return False
        self._journal_sync(piece)
        self.storage.write_block(piece, 0, data)
        # Two workers may race on the count: that only moves the next flush a little.
        self._unflushed += len(data)
        if self._unflushed >= FLUSH_AHEAD_BYTES:
            self._unflushed = 0
            with contextlib.suppress(StorageError):  # flush() reports it where it matters
                self.storage.sync()
        return True

    async def write_piece(self, piece: int, data: bytes | bytearray | memoryview) -> bool:
        """Hash a whole in-memory piece and, when it matches, write it.

        Returns:
            True when the hash matched and the bytes were written; False when the hash
            did not match (nothing was written).

        Raises:
            StorageError: the write failed.
            MetainfoError: a hybrid's two hashes disagree about the piece, or a v2 piece's
                hash is unknown (rule 10).
            ValueError: ``data`` is not exactly the piece's size.
        """
        if len(data) != self._info.piece_size(piece):
            raise ValueError(f"piece {piece} is {self._info.piece_size(piece)} bytes, got {len(data)}")
        if piece in self._verified:
            self._dropped += 1
            return True
        self._invalidate(piece)
        ok = await self._run(self._write_piece_sync, piece, data)
        self._invalidate(piece)
        self._bytes_hashed += len(data)
        if ok:
            self._verified.add(piece)
            self._bytes_written += len(data)
            self._passed += 1
        else:
            self._failed += 1
        return ok

    # --- hashing ----------------------------------------------------------------------

    def _hash_sync(self, piece: int) -> bool:
        size = self._info.piece_size(piece)
        if self._info.has_v2:
            return self._check_sync(piece, size)
        h = hashlib.sha1()
        try:
            for offset in range(0, size, HASH_CHUNK):
                h.update(self.storage.read_block(piece, offset, min(HASH_CHUNK, size - offset)))
        except StorageError as exc:
            if exc.errno == errno.ENOENT:  # a missing file: the piece is simply not there
                return False
            raise
        return h.digest() == self._info.piece_hash(piece)

    def _check_sync(self, piece: int, size: int) -> bool:
        """A v2 or hybrid piece from disk, read whole (its tree needs every block)."""
        try:
            data = b"".join(
                self.storage.read_block(piece, offset, min(HASH_CHUNK, size - offset))
                for offset in range(0, size, HASH_CHUNK)
            )
        except StorageError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        return self._info.check_piece(piece, data) is PieceCheck.PASSED

    async def hash_piece(self, piece: int) -> bool:
        """SHA-1 the piece as it is on disk and compare it with the metainfo.

        Returns:
            True when it matches (a missing file counts as a mismatch).

        Raises:
            StorageError: a file could not be read (other than missing).
        """
        ok = await self._run(self._hash_sync, piece)
        self._bytes_hashed += self._info.piece_size(piece)
        if ok:
            self._verified.add(piece)
            self._passed += 1
        else:
            self._failed += 1
        return ok

    async def check(self, pieces: Iterable[int] | None = None, progress: Progress | None = None) -> set[int]:
        """Hash many pieces in parallel (one per core) and return those that match.

        Args:
            pieces: which pieces to check; default every piece.
            progress: ``progress(done, total)`` after each piece, on the event loop.

        Returns:
            The indices of the pieces whose data on disk matches the metainfo.

        Raises:
            StorageError: a file could not be read (other than missing).
        """
        todo = sorted(set(range(self._info.num_pieces) if pieces is None else pieces))
        total = len(todo)
        good: set[int] = set()
        done = 0
        if progress is not None:
            progress(0, total)
        queue = iter(todo)  # shared by the workers: each takes the next piece

        async def worker() -> None:
            nonlocal done
            for piece in queue:
                if await self.hash_piece(piece):
                    good.add(piece)
                done += 1
                if progress is not None:
                    progress(done, total)

        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(min(self._cores, total)):
                    tg.create_task(worker())
        except BaseExceptionGroup as group:
            # One failing worker cancels the others; give the caller the real error.
            first = group.exceptions[0]
            raise first from None
        return good

    def mark_verified(self, pieces: Iterable[int]) -> None:
        """Tell the disk layer which pieces are verified (e.g. trusted from resume state).

        Pieces that pass :meth:`hash_piece`, :meth:`write_piece` or :meth:`check` are
        marked by themselves.
        """
        self._verified.update(pieces)

    def is_verified(self, piece: int) -> bool:
        """True once ``piece`` passed its hash check (or was marked verified)."""
        return piece in self._verified

    # --- reads ------------------------------------------------------------------------

    async def read(self, piece: int, offset: int, length: int) -> bytes | memoryview:
        """Read a block for an upload, through the read cache.

        A block of a cached whole piece is a view of it, not a copy (the piece stays in
        memory while the view is referenced, e.g. queued in a transport).

        Raises:
            StorageError: a file is missing or unreadable.
            ValueError: the range is not inside the piece.
        """
        cached = self.read_cached(piece, offset, length)
        if cached is not None:
            return cached
        if self._cache_limit == 0:
            data = await self._run(self.storage.read_block, piece, offset, length)
            self._bytes_read += length
            return data
        size = self._info.piece_size(piece)
        key = (piece, 0, size) if self._whole_pieces else (piece, offset, length)
        self._misses += 1
        data = await self._load(key, self._generation.get(piece, 0))
        if self._whole_pieces and length != len(data):
            return memoryview(data)[offset : offset + length]
        return data

    def read_cached(self, piece: int, offset: int, length: int) -> bytes | memoryview | None:
        """:meth:`read` when the block is in the read cache (no wait), else None.

        Raises:
            ValueError: the range is not inside the piece.
        """
        if not 0 <= piece <= self._last_piece:
            raise IndexError(f"piece index {piece} out of range")
        size = self._last_piece_size if piece == self._last_piece else self._info.piece_length
        if offset < 0 or length < 0 or offset + length > size:
            raise ValueError(f"range {offset}+{length} is outside piece {piece} of {size} bytes")
        whole = self._whole_pieces
        key = (piece, 0, size) if whole else (piece, offset, length)
        entry = self._cache.get(key)
        if entry is None or entry[0] != self._generation.get(piece, 0):
            return None
        self._cache.move_to_end(key)
        self._hits += 1
        data = entry[1]
        if whole and length != len(data):
            return memoryview(data)[offset : offset + length]
        return data

    async def _load(self, key: tuple[int, int, int], generation: int) -> bytes:
        # One disk read per key however many peers want it. The read's future is
        # shielded: a reader that gives up (its peer left) cancels neither the read nor
        # the others waiting on it.
        reading = self._reading.get(key)
        if reading is None:
            reading = await self._submit(self.storage.read_block, *key)
            self._reading[key] = reading
            reading.add_done_callback(functools.partial(self._loaded, key, generation))
        return await asyncio.shield(reading)

    def _loaded(self, key: tuple[int, int, int], generation: int, fut: asyncio.Future[bytes]) -> None:
        if self._reading.get(key) is fut:
            del self._reading[key]
        if fut.cancelled() or fut.exception() is not None:
            return  # the exception reaches every waiter through the shield
        data = fut.result()
        self._bytes_read += len(data)
        if self._generation.get(key[0], 0) != generation or len(data) > self._cache_limit:
            return  # written meanwhile (or too big): do not cache a stale copy
        old = self._cache.pop(key, None)
        if old is not None:
            self._cache_bytes -= len(old[1])
        self._cache[key] = (generation, data)
        self._cache_bytes += len(data)
        while self._cache_bytes > self._cache_limit:
            _, (_, evicted) = self._cache.popitem(last=False)
            self._cache_bytes -= len(evicted)

    # --- whole-storage operations --------------------------------------------------------

    async def allocate(self) -> None:
        """Create the wanted files (see :meth:`Storage.allocate`)."""
        await self._run(self.storage.allocate)

    async def flush(self) -> None:
        """``fsync`` everything written so far (call before saving resume state)."""
        await self._run(self.storage.sync)

    def statistics(self) -> DiskStats:
        """A frozen snapshot of the counters."""
        return DiskStats(
            bytes_written=self._bytes_written,
            bytes_read=self._bytes_read,
            bytes_hashed=self._bytes_hashed,
            pieces_passed=self._passed,
            pieces_failed=self._failed,
            cache_hits=self._hits,
            cache_misses=self._misses,
            cache_bytes=self._cache_bytes,
            queued=self._queued,
            max_queued=self._max_queued,
            writes_dropped=self._dropped,
        )
