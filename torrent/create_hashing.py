"""Hash a payload for :mod:`torrent.create`: SHA-1 pieces (BEP 3) and BEP 52 piece nodes.

The payload (the files laid end to end, BEP 47 padding read as zeros) is cut into batches
of whole pieces, about :data:`BATCH_BYTES` each, and each batch is hashed by one worker
with a :class:`_Reader`: its files' pages are mapped and every hash of the format reads
each 256 KiB chunk while it is in the core's cache.

Two kinds of job hand the batches out, with the same methods (``feed``, ``close_feed``,
``start``, ``wait``, ``cancel``):

* :class:`ProcessHashJob`: worker processes started with ``fork``, which inherit the
  files fed before it and read later ones from a file table. Used for payloads of
  :data:`PROCESS_MIN_BYTES` or more where a fork is safe (:func:`processes_possible`);
  see the class for why processes.
* :class:`HashJob`: worker threads, which can start before the directory walk ends. Used
  for small payloads, where ``fork`` is missing, and beside other threads.

:func:`new_job` picks one. Left out: hashing on other machines, and GPUs.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal without its enum (and functools) import
import _thread
import bisect
import hashlib
import itertools
import marshal
import operator
import os
import sys
import time
from collections.abc import Callable, Sequence

from torrent.errors import StorageError
from torrent.types import BLOCK_SIZE

#: ``typing`` (about 4 ms with its imports) is not imported at run time: ``pytorrent create``
#: starts hashing without it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NamedTuple

# ``torrent.proto.merkle`` (with ``dataclasses``: about 9 ms) is imported only by a v2
# or hybrid job, and ``threading`` (about 1.5 ms of CPU) only by a job of threads: a v1
# ``pytorrent create`` forks its workers that much sooner.

#: Bytes of payload a worker takes at a time (rounded to whole pieces, at least one).
BATCH_BYTES = 4 * 1024 * 1024
#: Most bytes a worker hashes at once: small enough to stay in a core's cache while
#: every hash of the format reads them.
CHUNK_BYTES = 256 * 1024
#: Bytes of a file a worker asks the kernel to read ahead at once (``POSIX_FADV_WILLNEED``).
READ_AHEAD_BYTES = 64 * 1024 * 1024
#: A file with no more than this left to hash gets no ``POSIX_FADV_WILLNEED``.
ADVISE_MIN_BYTES = 1024 * 1024
#: A v1 job reads a file this small whole into its buffer instead of mapping it (see
#: :class:`_Reader`); as large as the buffer a chunk needs anyway.
READ_WHOLE_BYTES = CHUNK_BYTES
#: Most hashing threads a job starts, whatever it is asked for.
MAX_THREADS = 64
#: A payload at least this large is hashed in worker processes where they can run
#: (:func:`new_job`): starting one costs a few ms, about what 2 MiB of hashing does.
PROCESS_MIN_BYTES = 32 * 1024 * 1024
#: Most records written to the worker processes' queue at once: 32 of 16 bytes is
#: 512 bytes, the least ``PIPE_BUF`` POSIX allows (see :class:`ProcessHashJob`).
QUEUE_WRITE = 32
#: Seconds between two calls of the progress callback.
PROGRESS_INTERVAL_S = 0.1
#: Seconds a worker process keeps the digests it made before it sends them.
RESULT_INTERVAL_S = 0.05

#: ``progress(done_bytes, total_bytes)``, called from the thread that called :func:`create`.
ProgressCallback = Callable[[int, int], object]


if TYPE_CHECKING:

    class _SourceFileFields(NamedTuple):
        path: tuple[str, ...]
        fs_path: str
        length: int

else:
    from collections import namedtuple

    _SourceFileFields = namedtuple("SourceFile", ("path", "fs_path", "length"), module=__name__)


class SourceFile(_SourceFileFields):
    """One file found under the path given to :func:`create`.

    A named tuple rather than a dataclass: ``pytorrent create`` starts hashing before
    it imports anything it does not need (``typing`` included: the type checker sees a
    ``NamedTuple``, the interpreter a ``collections.namedtuple`` of the same fields).

    Attributes:
        path: components below the torrent's top directory (for a single file: its name).
        fs_path: where to read it (symlinks are followed when it is opened); "" for a
            BEP 47 padding file, which reads as zeros.
        length: size in bytes when it was scanned.
    """

    __slots__ = ()


def hash_files(
    files: Sequence[SourceFile],
    piece_length: int,
    *,
    threads: int | None = None,
    progress: ProgressCallback | None = None,
) -> bytes:
    """SHA-1 every piece of ``files`` laid end to end; returns the concatenated digests.

    Raises:
        StorageError: a file could not be opened or read, or is shorter than scanned.
    """
    job = new_job(piece_length, files, threads=threads)
    try:
        job.start()
        return job.wait(progress)
    except BaseException:
        job.cancel()  # a Ctrl-C between the two (wait() cancels on its own errors)
        raise


def _worker_count(threads: int | None, total: int | None, batch_bytes: int) -> int:
    """``threads`` (default: the usable cores), at most :data:`MAX_THREADS` and, when
    ``total`` is known, at most one per batch."""
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = min(threads, MAX_THREADS)
    if total is not None:
        threads = min(threads, -(-total // batch_bytes))
    return max(1, threads)


def processes_possible() -> bool:
    """True where :class:`ProcessHashJob` may run: ``fork`` exists and this process has
    no thread but the main one (a fork copies only the calling thread, so a lock that
    another thread held at that moment, in OpenSSL say, would stay locked in the child)."""
    if not hasattr(os, "fork"):
        return False
    threading = sys.modules.get("threading")
    if threading is None:
        # Not imported, so no thread was started through it: only a thread started with
        # ``_thread`` itself could run beside this one, and ``_count`` counts those.
        return _thread._count() == 0
    return threading.active_count() == 1 and threading.current_thread() is threading.main_thread()


def new_job(
    piece_length: int,
    files: Sequence[SourceFile],
    *,
    threads: int | None = None,
    v1: bool = True,
    v2: bool = False,
) -> HashJob | ProcessHashJob:
    """A job over ``files`` (complete, in torrent order), fed and closed, not started.

    Worker processes (:class:`ProcessHashJob`) for payloads of at least
    :data:`PROCESS_MIN_BYTES` when more than one worker would run and
    :func:`processes_possible`; threads (:class:`HashJob`) otherwise.
    """
    total = sum(f.length for f in files)
    job: HashJob | ProcessHashJob
    if total >= PROCESS_MIN_BYTES and processes_possible():
        job = ProcessHashJob(piece_length, threads=threads, total=total, v1=v1, v2=v2)
        if job.threads < 2:
            job = HashJob(piece_length, threads=threads, total=total, v1=v1, v2=v2)
    else:
        job = HashJob(piece_length, threads=threads, total=total, v1=v1, v2=v2)
    job.feed(files)
    job.close_feed()
    return job


class HashJob:
    """Hash files on worker threads while they are still being listed.

    :meth:`start` the workers, :meth:`feed` files in torrent order (as a directory walk
    finds them), :meth:`close_feed` when there are no more, then :meth:`wait` for the
    digests. Work is cut into batches of whole pieces (about :data:`BATCH_BYTES`); each
    worker takes the next batch from a shared counter, waits until the files that batch
    needs are known, reads and hashes it. A slow or descheduled thread never holds up a
    fixed share, and hashing starts before a large directory is fully listed.
    """

    def __init__(
        self,
        piece_length: int,
        *,
        threads: int | None = None,
        total: int | None = None,
        v1: bool = True,
        v2: bool = False,
    ) -> None:
        """Args: ``threads`` defaults to the usable cores; ``total``, when already known,
        caps the threads at the number of batches; ``v1`` SHA-1s each piece, ``v2``
        computes each piece's BEP 52 merkle node (the files must then start at piece
        boundaries, with padding files in the gaps)."""
        import threading

        self.piece_length = piece_length
        self.v1 = v1
        self.v2 = v2
        #: After :meth:`wait` with ``v2``: each piece's merkle node (32 bytes), in order.
        self.nodes_v2 = b""
        self.results_v2: dict[int, bytes] = {}
        self.per_batch = max(1, BATCH_BYTES // piece_length)
        self.batch_bytes = self.per_batch * piece_length
        self.threads = _worker_count(threads, total, self.batch_bytes)
        # Only files with bytes take part in reading; ``starts`` holds their payload offsets.
        self.files: list[SourceFile] = []
        self.starts: list[int] = []
        self.known = 0  # payload bytes covered by ``files`` so far
        self.closed = False  # no more files: ``known`` is the total
        self.fed = threading.Condition(threading.Lock())
        self.results: dict[int, bytes] = {}  # batch index -> its pieces' digests
        self.batches = itertools.count()  # next() on a count is atomic under the GIL
        self.done = [0] * self.threads
        self.remaining = self.threads
        self.lock = threading.Lock()
        self.finished = threading.Event()
        self.stop = False
        self.error: BaseException | None = None
        self.workers = [
            threading.Thread(target=self.work, args=(i,), name=f"pytorrent-hash-{i}", daemon=True)
            for i in range(self.threads)
        ]

    @property
    def total(self) -> int:
        return self.known

    def start(self) -> None:
        for w in self.workers:
            w.start()

    def feed(self, files: Sequence[SourceFile]) -> None:
        """Append files (in torrent order) to the payload."""
        with self.fed:
            for f in files:
                if f.length:
                    self.files.append(f)
                    self.starts.append(self.known)
                    self.known += f.length
            self.fed.notify_all()

    def close_feed(self) -> None:
        """No more files: the payload is complete."""
        with self.fed:
            self.closed = True
            self.fed.notify_all()

    def cancel(self) -> None:
        """Stop the workers after their current batch and wait for them."""
        self.stop = True
        self.close_feed()
        for w in self.workers:
            if w.is_alive():
                w.join()

    def wait(self, progress: ProgressCallback | None = None, *, reap: bool = True) -> bytes:
        """Block until every piece is hashed; returns the digests.

        Call :meth:`close_feed` first. If this thread is interrupted (or ``progress``
        raises), the workers stop after their current batch and the exception propagates.
        The threads have ended when it returns, whatever ``reap`` says (see
        :meth:`ProcessHashJob.wait`).

        Raises:
            StorageError: a worker could not read its files.
        """
        try:
            if progress is None:
                self.finished.wait()
            else:
                while not self.finished.wait(PROGRESS_INTERVAL_S):
                    progress(sum(self.done), self.known)
        finally:
            self.cancel()
        if self.error is not None:
            raise self.error
        if progress is not None:
            progress(self.known, self.known)
        if self.v2:
            self.nodes_v2 = b"".join(self.results_v2[i] for i in range(len(self.results_v2)))
        return b"".join(self.results[i] for i in range(len(self.results)))

    def reap(self) -> None:
        """Nothing to do: :meth:`wait` has joined the threads."""

    def _wait_for(self, end: int) -> int:
        """Block until the payload is known up to ``end`` (or complete); returns its known size."""
        with self.fed:
            while self.known < end and not self.closed:
                self.fed.wait()
            return self.known

    def work(self, slot: int) -> None:
        reader = _Reader(self.files, self.starts, self.piece_length, self.v1, self.v2)
        try:
            batch_bytes = self.batch_bytes
            while not self.stop:
                batch = next(self.batches)
                start = batch * batch_bytes
                known = self.known
                if known < start + batch_bytes and not self.closed:
                    known = self._wait_for(start + batch_bytes)
                if start >= known:
                    break  # the feed is closed and this batch lies past the end
                size = min(batch_bytes, known - start)
                self.results[batch], nodes = reader.hash_batch(start, size)
                if self.v2:
                    self.results_v2[batch] = nodes
                self.done[slot] += size
        except BaseException as exc:
            with self.lock:
                if self.error is None:
                    self.error = exc
            self.stop = True
        finally:
            reader.close()
            with self.lock:
                self.remaining -= 1
                if self.remaining == 0 or self.error is not None:
                    self.finished.set()


class ProcessHashJob:
    """Hash a payload in worker processes, one per core, started with ``fork``.

    Why processes: ``hashlib`` gives the GIL back on every call over 2 KiB, and a v2
    piece is hashed as one SHA-256 per 16 KiB block, so hashing threads hand the GIL
    to each other some 65,000 times per GiB; each hand-over may wake the other thread,
    and a busy machine does not run it at once. Threads of one process also share its
    address space, so mapping and unmapping a file's pages in one of them interrupts the
    others' cores (TLB shoot-downs: on 5,000 files, 7 % of all the command's samples were
    those interrupts, beside waits for the address space's lock and for the GIL). A
    process has its own GIL and its own address space.

    The workers inherit the files fed before :meth:`start`. Files fed after it (a walk
    that goes on while the first files are hashed) reach them through a file table the
    parent appends to (an anonymous file all of them share). They take batch numbers
    from one queue, a pipe the parent fills with every batch whose files are known (as
    far as the pipe holds them), and each sends the digests of its batches back over a
    pipe of its own. So a worker never waits for the parent to be scheduled: the next
    batch is in the queue whenever it finishes one (when the parent handed each worker
    two batches at a time, a busy machine left the workers idle for a third of the
    run), and a slow or descheduled worker holds up at most the batch it is on. The
    caller's thread reads the digests (and calls ``progress``) in :meth:`wait`, and
    between two :meth:`feed` calls.

    A queue record is 16 bytes: the batch number and how many bytes of the file table
    the worker must have read to know the batch's files. Records are written at most
    :data:`QUEUE_WRITE` at a time: a pipe write of up to ``PIPE_BUF`` bytes is never
    split or interleaved, so every 16-byte read by any worker takes one whole record.

    Stopping: a worker exits at the end of the queue, which comes when every batch has
    been handed out, when the job is cancelled, or when the parent has died (the kernel
    closes the parent's end), so no worker outlives its parent by more than the batch
    it is on. Workers ignore SIGINT: Ctrl-C reaches the whole process group, and the
    parent alone decides (it kills and reaps them). A worker that dies (a file truncated
    under its mapping raises SIGBUS) becomes a :class:`StorageError` naming the file.
    """

    def __init__(
        self,
        piece_length: int,
        *,
        threads: int | None = None,
        total: int | None = None,
        v1: bool = True,
        v2: bool = False,
    ) -> None:
        """Args as :class:`HashJob`'s; ``threads`` is the number of worker processes."""
        self.piece_length = piece_length
        self.v1 = v1
        self.v2 = v2
        self.nodes_v2 = b""
        self.batch_bytes = max(1, BATCH_BYTES // piece_length) * piece_length
        self.threads = _worker_count(threads, total, self.batch_bytes)
        self.files: list[SourceFile] = []
        self.starts: list[int] = []
        self.known = 0
        self.closed = False
        #: Worker process ids, while they run.
        self.pids: list[int] = []
        self._forked: list[int] = []  # per worker: its process id
        self._queue = -1  # the write end of the batch queue (-1: closed)
        self._table = -1  # the file table, once started (-1: none)
        self._table_end = 0  # bytes written to the file table
        self._results: list[int] = []  # per worker: the read end of its result pipe (-1: closed)
        self._by_fd: dict[int, int] = {}  # result pipe -> worker, while it is open
        self._poller: Any = None  # a ``select.poll`` over the result pipes, once started
        self._count = 0  # batches in the payload, once the feed is closed
        self._queued = 0  # batches written to the queue so far
        self._digests: dict[int, bytes] = {}
        self._nodes: dict[int, bytes] = {}
        self._buffers: list[bytearray] = []  # per worker: what it sent, not yet taken
        self._done = 0  # bytes hashed

    @property
    def total(self) -> int:
        return self.known

    def feed(self, files: Sequence[SourceFile]) -> None:
        """Append files (in torrent order); after :meth:`start`, the workers hash
        every batch they complete while the caller goes on."""
        # Loops in C rather than per file in Python: the walk hands over 256 at a time.
        lengths = list(map(_LENGTH, files))
        if 0 in lengths:  # an empty file takes no part in reading
            files = [f for f in files if f.length]
            lengths = [n for n in lengths if n]
        if not files:
            return
        self.files += files
        starts = list(itertools.accumulate(lengths, initial=self.known))
        self.known = starts.pop()
        self.starts += starts
        if self._table >= 0:
            # Rows a worker turns into SourceFile objects as they are (see _serve).
            data = marshal.dumps(list(zip(itertools.repeat(()), map(_FS_PATH, files), lengths)))
            _write_all(self._table, len(data).to_bytes(4, "little") + data)
            self._table_end += 4 + len(data)
            self._fill()
            self._gather(0)

    def close_feed(self) -> None:
        """No more files: the payload is complete."""
        self.closed = True
        self._count = -(-self.known // self.batch_bytes)
        if self.pids:
            self._fill()

    def start(self) -> None:
        """Fork the workers and queue every batch whose files are known."""
        import select

        if self.closed:
            self.threads = min(self.threads, max(1, -(-self.known // self.batch_bytes)))
        # SIGINT is blocked while the workers are forked: a worker must not see it before
        # it ignores it (it would unwind the parent's stack in the child). A Ctrl-C held
        # meanwhile is raised when it is let in again, here, and cancels the job; from
        # then on the caller cancels the job on any exception, as ``hash_files`` does.
        mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, {_signal.SIGINT})
        try:
            if not self.closed:
                self._table = _anonymous_file()
            queue_r, self._queue = os.pipe()
            try:
                # Queued before the forks: the first worker starts hashing while the
                # next one is forked (with every batch known, the queue may be closed).
                os.set_blocking(self._queue, False)
                self._fill()
                for _ in range(self.threads):
                    self._fork(mask, queue_r)
            finally:
                os.close(queue_r)  # the workers hold it: with them gone, writes fail
            self._buffers = [bytearray() for _ in self.pids]
            self._by_fd = {fd: i for i, fd in enumerate(self._results)}
            self._poller = select.poll()
            for fd in self._by_fd:
                self._poller.register(fd, select.POLLIN)
            _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)
        except BaseException:
            try:
                self.cancel()
            finally:
                _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)
            raise

    def _fork(self, mask: set[int], queue: int) -> None:
        """Start one worker reading ``queue``; ``mask`` is the signal mask it runs with."""
        results_r, results_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; its work is checked through the parent
            code = 1
            try:
                _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
                _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)
                for fd in (self._queue, results_r, *self._results):
                    if fd >= 0:
                        os.close(fd)
                self._serve(queue, results_w)
                code = 0
            finally:
                os._exit(code)
        self.pids.append(pid)
        self._forked.append(pid)
        os.close(results_w)
        self._results.append(results_r)

    def _serve(self, queue: int, results: int) -> None:
        """A worker's loop: hash each batch taken from the queue until it ends."""
        files, starts = self.files, self.starts
        reader = _Reader(files, starts, self.piece_length, self.v1, self.v2)
        batch_bytes, known, have = self.batch_bytes, self.known, 0
        done: list[bytes] = []  # result records not yet sent
        sent = time.monotonic()
        try:
            while True:
                record = os.read(queue, 16)  # one whole record (see the class docstring)
                if not record:
                    _write_all(results, b"".join(done))
                    return
                batch = int.from_bytes(record[:8], "little")
                need = int.from_bytes(record[8:], "little")
                if need > have:  # files fed after the fork
                    rows = _table_entries(self._table, have, need)
                    files += map(tuple.__new__, itertools.repeat(SourceFile), rows)
                    starts += itertools.accumulate(map(_LENGTH, rows), initial=known)
                    known = starts.pop()
                    have = need
                start = batch * batch_bytes
                try:
                    digests, nodes = reader.hash_batch(start, min(batch_bytes, known - start))
                except StorageError as exc:
                    text = str(exc).encode("utf-8", "replace")
                    done.append(_ERROR + len(text).to_bytes(4, "little") + bytes(4) + text)
                    _write_all(results, b"".join(done))
                    return
                done += (record[:8], len(digests).to_bytes(4, "little"), len(nodes).to_bytes(4, "little"))
                done += (digests, nodes)
                if time.monotonic() - sent >= RESULT_INTERVAL_S:
                    # Sent in a few large writes rather than one per batch: each write
                    # wakes the parent, which on a busy machine preempts a worker.
                    _write_all(results, b"".join(done))
                    done.clear()
                    sent = time.monotonic()
        finally:
            reader.close()

    def _fill(self) -> None:
        """Queue the batches whose files are known, as many as the pipe takes now; once
        the feed is closed and all are in, close it (each worker then ends when it
        finds the queue empty)."""
        ready = self._count if self.closed else self.known // self.batch_bytes
        end = self._table_end.to_bytes(8, "little")
        while self._queue >= 0 and self._queued < ready:
            upto = min(ready, self._queued + QUEUE_WRITE)
            record = b"".join(i.to_bytes(8, "little") + end for i in range(self._queued, upto))
            try:
                os.write(self._queue, record)  # all of it or nothing: at most PIPE_BUF bytes
            except BlockingIOError:
                return  # full: more go in as the workers take them
            except BrokenPipeError:
                return  # every worker is gone: :meth:`wait` finds out why
            self._queued = upto
        if self.closed and self._queued == self._count:
            self._close_queue()

    def cancel(self) -> None:
        """Stop the workers now (SIGKILL) and reap them."""
        self._close_queue()
        for pid in self.pids:
            try:
                os.kill(pid, _signal.SIGKILL)
            except ProcessLookupError:  # pragma: no cover - already reaped
                pass
        self._reap()

    def _close_queue(self) -> None:
        if self._queue >= 0:
            os.close(self._queue)
            self._queue = -1

    def _reap(self) -> None:
        """Wait for every worker. Closes the result pipes and the file table."""
        for pid in self.pids:
            _wait_status(pid)
        self.pids = []
        for i, fd in enumerate(self._results):
            if fd >= 0:
                os.close(fd)
                self._results[i] = -1
        self._by_fd = {}
        if self._table >= 0:
            os.close(self._table)
            self._table = -1

    def wait(self, progress: ProgressCallback | None = None, *, reap: bool = True) -> bytes:
        """Gather the digests; returns them (as :meth:`HashJob.wait`).

        Call :meth:`close_feed` first. If this thread is interrupted (or ``progress``
        raises), the workers are killed and reaped, and the exception propagates.

        With ``reap`` false, the workers, which have sent every digest and are exiting,
        are left for the caller to :meth:`reap` once it has done what it can do meanwhile:
        their exit (the kernel tearing down their address spaces) took about 1 ms that
        ``pytorrent create`` spent waiting, at the end of its run.

        Raises:
            StorageError: a worker could not read its files, or died.
        """
        try:
            count = self._count
            due = time.monotonic() + PROGRESS_INTERVAL_S
            while len(self._digests) < count:
                if not self._by_fd:
                    raise StorageError("the hashing processes ended before they finished their work")
                self._gather(PROGRESS_INTERVAL_S if progress is not None else None)
                if progress is not None and time.monotonic() >= due:
                    progress(self._done, self.known)
                    due = time.monotonic() + PROGRESS_INTERVAL_S
        except BaseException:
            self.cancel()
            raise
        if reap:
            self._reap()
        if progress is not None:
            progress(self.known, self.known)
        if self.v2:
            self.nodes_v2 = b"".join(self._nodes[i] for i in range(count))
        return b"".join(self._digests[i] for i in range(count))

    def reap(self) -> None:
        """Wait for the workers to exit, after :meth:`wait` with ``reap`` false."""
        self._reap()

    def _gather(self, timeout_s: float | None) -> None:
        """Take what the workers sent within ``timeout_s`` (None: until one sends), and
        queue more batches where the queue has room.

        Raises:
            StorageError: a worker sent an error record, or died.
        """
        import select

        queue = self._queue
        if queue >= 0 and self._queued < (self._count if self.closed else self.known // self.batch_bytes):
            self._poller.register(queue, select.POLLOUT)
        else:
            queue = -1
        try:
            events = self._poller.poll(None if timeout_s is None else timeout_s * 1000)
        finally:
            if queue >= 0:
                self._poller.unregister(queue)
        for fd, _ in events:
            if fd == queue:
                self._fill()
                continue
            i = self._by_fd.get(fd)
            if i is None:
                continue
            data = os.read(fd, 1 << 16)
            if not data:  # the worker has exited
                self._poller.unregister(fd)
                del self._by_fd[fd]
                self._ended(i)
                continue
            self._buffers[i] += data
            for batch in _records(self._buffers[i], self._digests, self._nodes):
                self._done += min(self.batch_bytes, self.known - batch * self.batch_bytes)

    def _ended(self, worker: int) -> None:
        """Worker ``worker`` closed its result pipe: fine once the queue ran dry
        (it exits with status 0), else a :class:`StorageError` saying why.

        Raises:
            StorageError: the worker sent an error record, or died.
        """
        # What it wrote before it ended: an error record there says why (it may have
        # ended on a read error while batches were still queued).
        while data := os.read(self._results[worker], 1 << 16):
            self._buffers[worker] += data
        _records(self._buffers[worker], self._digests, self._nodes)
        pid = self._forked[worker]
        status = _wait_status(pid)
        self.pids.remove(pid)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            return
        how = f"was killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else "ended"
        # A mapped file cut short under a worker raises SIGBUS there: name the file. It
        # held one of the batches not done yet.
        checked: set[int] = set()
        for batch in range(-(-self.known // self.batch_bytes)):
            if batch in self._digests:
                continue
            start = batch * self.batch_bytes
            first = max(bisect.bisect_right(self.starts, start) - 1, 0)
            last = bisect.bisect_left(self.starts, start + self.batch_bytes)
            for index in range(first, last):
                if index in checked:
                    continue
                checked.add(index)
                f = self.files[index]
                try:
                    size = os.stat(f.fs_path).st_size if f.fs_path else f.length
                except OSError as exc:
                    raise StorageError(f"cannot read {f.fs_path}: {exc.strerror or exc}") from None
                if size < f.length:
                    raise StorageError(f"{f.fs_path} shrank while it was being hashed")
        raise StorageError(f"a hashing process {how} before it finished its work")


def _wait_status(pid: int) -> int:
    """Reap worker ``pid``; returns its wait status."""
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:  # pragma: no cover - reaped by someone else
            break
        except InterruptedError:  # pragma: no cover - retried by Python itself
            continue
    return 0


def _anonymous_file() -> int:
    """A descriptor of a new file with no name, for the parent to write and the
    workers to read."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("pytorrent-create-files", os.MFD_CLOEXEC)
    import tempfile  # pragma: no cover - platforms without memfd_create

    return os.dup(tempfile.TemporaryFile().fileno())  # pragma: no cover


def _table_entries(table: int, start: int, end: int) -> list[tuple[tuple[str, ...], str, int]]:
    """The ``((), fs_path, length)`` entries in bytes ``start``..``end`` of a file table:
    frames of a 4-byte length and a ``marshal``-ed list."""
    data = b""
    while len(data) < end - start:
        more = os.pread(table, end - start - len(data), start + len(data))
        if not more:
            raise StorageError("the list of files to hash ended early")
        data += more
    entries: list[tuple[tuple[str, ...], str, int]] = []
    pos = 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "little")
        entries += marshal.loads(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return entries


#: A worker's record that carries an error message instead of digests.
_ERROR = b"\xff" * 8


def _records(buffer: bytearray, digests: dict[int, bytes], nodes: dict[int, bytes]) -> list[int]:
    """Take the whole records off the front of ``buffer``; returns their batch numbers.

    A record: batch number (8 bytes), lengths of its SHA-1 digests and of its v2 nodes
    (4 bytes each), then both. An error record has :data:`_ERROR` for batch number and
    the message for digests.

    Raises:
        StorageError: an error record.
    """
    got = []
    while len(buffer) >= 16:
        n1 = int.from_bytes(buffer[8:12], "little")
        n2 = int.from_bytes(buffer[12:16], "little")
        end = 16 + n1 + n2
        if len(buffer) < end:
            break
        head = bytes(buffer[:8])
        if head == _ERROR:
            raise StorageError(buffer[16:end].decode("utf-8", "replace"))
        batch = int.from_bytes(head, "little")
        digests[batch] = bytes(buffer[16 : 16 + n1])
        nodes[batch] = bytes(buffer[16 + n1 : end])
        del buffer[:end]
        got.append(batch)
    return got


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Reader:
    """One worker's reading and hashing of batches, chunk by chunk, without a second pass.

    A file's part of a batch is mapped (``mmap``: the page cache's own pages, no copy)
    and hashed there in chunks of at most :data:`CHUNK_BYTES` that never cross a piece
    or file boundary; every hash the format needs (SHA-1 of the piece, SHA-256 of its
    16 KiB blocks) reads a chunk while it is in the core's cache (a v1 job, with one
    hash, takes a mapped part up to a piece at a time). Where ``mmap`` is
    missing or the file system cannot map a file, each chunk is read with ``preadv``
    into a buffer this reader owns (small enough to stay in the core's cache). Each
    mapping lives only while its part is hashed. A v1 job reads a file of up to
    :data:`READ_WHOLE_BYTES` whole into that buffer instead: a mapping's fixed cost
    (an ``fstat``, a ``dup``, ``mmap``, ``munmap``, a fault per page-cache folio, and
    a small file's folios are small) is more than the copy's. On 1 GiB in 5,000 files
    of 210 KiB, reading them whole took the workers from 17,000 to 2,500 page faults
    and the command from 0.65 to 0.61 CPU s (median of 9: 0.96x → 1.02x mktorrent);
    on 12,000 files of 87 KiB from 0.80 to 0.69 s. One file of 1 GiB is still hashed
    faster mapped (0.280 against 0.286 s).

    Why map: on a warm page cache with both cores busy, reading every chunk with
    ``preadv`` instead cost the whole ``pytorrent create`` of 1 GiB 0.90 s of CPU
    against 0.83 s mapped, and of 1 GiB in 5,000 files 1.05 against 0.93 s (medians of
    8, the difference in the kernel's copy); mktorrent's reads copy too. With worker
    processes, an earlier machine of the same kind measured ``preadv`` for parts of
    256 KiB or less at 0.86 against 0.84 s on 5,000 files (where the runs above measured
    the reverse, well outside their spread), and ``MAP_POPULATE`` at 0.87 against 0.85 s.
    The price: a file truncated by another program *while* its mapped part is hashed
    raises SIGBUS in the worker, which a :class:`ProcessHashJob` reports as a
    :class:`StorageError` naming the file, and which ends the whole process when the
    worker is a thread. One shorter than scanned when its part is mapped (the common
    case: it changed since the walk) is a :class:`StorageError` either way, as with
    ``preadv``.

    The kernel is asked to read each file ahead in :data:`READ_AHEAD_BYTES` stretches
    (``POSIX_FADV_WILLNEED``), so a cold cache is read in large requests.
    """

    def __init__(
        self, files: list[SourceFile], starts: list[int], piece_length: int, v1: bool, v2: bool
    ) -> None:
        self.files = files
        self.starts = starts
        self.piece_length = piece_length
        self.v1 = v1
        self.v2 = v2
        self.fd = -1
        self.fd_index = -1
        self.advised = 0  # bytes of the open file asked to be read ahead
        self.mapped: Any = None  # the mapping of the part being hashed
        self.buffer = memoryview(bytearray())  # for ``preadv``, made when first needed
        self.zeros = memoryview(bytes(CHUNK_BYTES))  # BEP 47 padding reads as zeros
        # A chunk's whole blocks, as slices made once: its leaves are hashed by a loop
        # in C (``map``), with no Python code between two blocks.
        self.slices = [slice(i, i + BLOCK_SIZE) for i in range(0, CHUNK_BYTES, BLOCK_SIZE)]
        if v2:
            from torrent.proto import merkle

            self.root = merkle.root
            self.next_pow2 = merkle.next_pow2

    def hash_batch(self, start: int, size: int) -> tuple[bytes, bytes]:
        """SHA-1 digests and BEP 52 nodes of the pieces in ``start``..``start + size``.

        The batch is whole pieces (the payload's last one may be short). For ``v2``
        every file starts a piece (padding fills the gaps), so each piece's node is the
        merkle root over one file's blocks in it: padded to the piece's width for a file
        larger than a piece, to a power of two of its own blocks otherwise.
        """
        if not self.v2:
            return self._hash_v1(start, size), b""
        files, starts = self.files, self.starts
        piece_length, v1, v2 = self.piece_length, self.v1, self.v2
        chunk_bytes = CHUNK_BYTES
        sha1 = hashlib.sha1
        digests: list[bytes] = []
        nodes: list[bytes] = []
        leaves: list[bytes] = []
        hasher = sha1()
        in_piece = 0  # bytes of the current piece hashed so far
        pos, end = start, start + size
        index = bisect.bisect_right(starts, start) - 1
        while pos < end:
            f = files[index]
            file_pos = pos - starts[index]
            stop = min(end, starts[index] + f.length)
            padding = not f.fs_path
            part = None if padding else self._map(index, file_pos, stop - pos)
            offset = 0  # into ``part``
            # One hash reads a mapped part once, in any size: up to a piece at a time.
            step = piece_length if part is not None and not v2 else chunk_bytes
            while pos < stop:
                n = min(step, stop - pos, piece_length - in_piece)
                if padding:
                    view = self.zeros[:n]
                elif part is not None:
                    view = part[offset : offset + n]
                else:
                    view = self._read(f, file_pos + offset, n)
                if v1:
                    hasher.update(view)
                if v2 and not padding:
                    leaves += self._leaves(view, n)
                view.release()
                pos += n
                offset += n
                in_piece += n
                if in_piece == piece_length:
                    if v1:
                        digests.append(hasher.digest())
                        hasher = sha1()
                    if leaves:
                        nodes.append(self._node(f, leaves))
                        leaves = []
                    in_piece = 0
            if part is not None:
                part.release()
                self._unmap()
            if leaves:  # the file ends inside this piece
                nodes.append(self._node(f, leaves))
                leaves = []
            index += 1
        if in_piece and v1:  # the payload's short last piece
            digests.append(hasher.digest())
        return b"".join(digests), b"".join(nodes)

    def _hash_v1(self, start: int, size: int) -> bytes:
        """:meth:`hash_batch` for a v1 job: the SHA-1 digests only.

        A small file that starts in the batch (the common case of a payload of many
        files) is opened, mapped (or, up to :data:`READ_WHOLE_BYTES`, read whole),
        hashed in one call when it lies within one piece, and closed here, with no
        other Python between those system calls: on 5,000 files this took 2.4 against
        1.6 µs of Python a file. Other parts go through :meth:`_map` (which keeps a file
        open across batches and asks for read-ahead) or, where a file cannot be mapped,
        :meth:`_read`.
        """
        files, starts, piece_length = self.files, self.starts, self.piece_length
        sha1 = hashlib.sha1
        digests: list[bytes] = []
        hasher = sha1()
        room = piece_length  # bytes the current piece still takes
        pos, end = start, start + size
        index = bisect.bisect_right(starts, start) - 1
        while pos < end:
            f = files[index]
            file_pos = pos - starts[index]
            n = min(end - pos, f.length - file_pos)  # this file's bytes in the batch
            part: memoryview | None = None
            mapped = None
            if f.fs_path and not file_pos and f.length <= ADVISE_MIN_BYTES:
                if f.length <= READ_WHOLE_BYTES:
                    part = self._read_whole(f, n)
                elif _mmap is not None:
                    mapped = _map_whole(f, n)
                whole = part if part is not None else mapped
                if whole is not None and n <= room:
                    hasher.update(whole)
                    if mapped is not None:
                        mapped.close()
                    else:
                        whole.release()
                    room -= n
                    if not room:
                        digests.append(hasher.digest())
                        hasher = sha1()
                        room = piece_length
                    pos += n
                    index += 1
                    continue
            if mapped is not None:
                part = memoryview(mapped)
            elif part is None and f.fs_path:  # else BEP 47 padding, read as zeros
                part = self._map(index, file_pos, n)
            hasher, room = self._hash_part(f, file_pos, n, part, hasher, room, digests)
            if part is not None:
                part.release()
            if mapped is not None:
                mapped.close()
            elif f.fs_path:
                self._unmap()
            pos += n
            index += 1
        if room != piece_length:  # the payload's short last piece
            digests.append(hasher.digest())
        return b"".join(digests)

    def _hash_part(
        self,
        f: SourceFile,
        file_pos: int,
        n: int,
        part: memoryview | None,
        hasher: Any,
        room: int,
        digests: list[bytes],
    ) -> tuple[Any, int]:
        """:meth:`_hash_v1`'s work on ``n`` bytes of ``f`` from ``file_pos``, in ``part``
        (None: read them, or zeros for padding), across as many pieces as they reach;
        ``room`` is what the piece ``hasher`` hashes still takes. Returns both updated."""
        piece_length = self.piece_length
        offset = 0
        while offset < n:
            if part is not None:
                k = min(n - offset, room)
                view = part[offset : offset + k]
            else:
                k = min(n - offset, room, CHUNK_BYTES)
                view = self._read(f, file_pos + offset, k) if f.fs_path else self.zeros[:k]
            hasher.update(view)
            view.release()
            offset += k
            room -= k
            if not room:
                digests.append(hasher.digest())
                hasher = hashlib.sha1()
                room = piece_length
        return hasher, room

    def _leaves(self, view: memoryview, n: int) -> list[bytes]:
        """SHA-256 of each 16 KiB block of a chunk (the last one may be shorter)."""
        whole = n // BLOCK_SIZE
        out = list(map(_digest, map(hashlib.sha256, map(view.__getitem__, self.slices[:whole]))))
        if n % BLOCK_SIZE:
            out.append(hashlib.sha256(view[whole * BLOCK_SIZE : n]).digest())
        return out

    def _node(self, f: SourceFile, leaves: list[bytes]) -> bytes:
        piece_length = self.piece_length
        width = piece_length // BLOCK_SIZE if f.length > piece_length else self.next_pow2(len(leaves))
        return self.root(leaves, width)

    def _map(self, index: int, file_pos: int, size: int) -> memoryview | None:
        """Bytes ``file_pos``..``file_pos + size`` of file ``index``, mapped; None where
        the file cannot be mapped (then :meth:`_read` reads it)."""
        if self.fd_index != index:
            self._open(index)
        f = self.files[index]
        if file_pos + size > self.advised and _FADVISE is not None and f.length - file_pos > ADVISE_MIN_BYTES:
            # Ask for the next stretch of the file at once, in large reads, before its
            # pages are touched (a cold cache would otherwise be read a fault at a time).
            # On a warm cache this costs about 2 ms a GiB in stretches this long, but
            # about 6 µs a call, so the rest of a small file is left to the kernel's own
            # readahead: on 5,000 files of 210 KiB the calls cost 30 ms of 800.
            self.advised = file_pos + READ_AHEAD_BYTES
            _FADVISE(self.fd, file_pos, READ_AHEAD_BYTES, os.POSIX_FADV_WILLNEED)
        if _mmap is None:
            return None
        skip = file_pos % _mmap.ALLOCATIONGRANULARITY
        try:
            # Positional (fd, length, flags, prot, access, offset): cheaper to parse.
            mapped = _mmap.mmap(self.fd, size + skip, _MAP_FLAGS, _mmap.PROT_READ, 0, file_pos - skip)
        except ValueError:  # CPython checks the size first: "mmap length is greater than file size"
            raise StorageError(f"{f.fs_path} shrank while it was being hashed") from None
        except OSError:
            return None  # a file system that cannot map files: read this part instead
        self.mapped = mapped
        return memoryview(mapped)[skip:] if skip else memoryview(mapped)

    def _unmap(self) -> None:
        if self.mapped is not None:
            try:
                self.mapped.close()
            except BufferError:  # a view still held by an exception's traceback: freed with it
                pass
            self.mapped = None

    def _open(self, index: int) -> None:
        self.close()
        self.fd = _open(self.files[index])
        self.fd_index = index
        self.advised = 0

    def _read_whole(self, f: SourceFile, n: int) -> memoryview:
        """The first ``n`` bytes of a small file, read into the buffer (it is opened and
        closed again here)."""
        fd = _open(f)
        try:
            return self._read(f, 0, n, fd)
        finally:
            os.close(fd)

    def _read(self, f: SourceFile, file_pos: int, n: int, fd: int = -1) -> memoryview:
        """Bytes ``file_pos``..``file_pos + n`` of the open file (or ``fd``), read into the
        buffer."""
        if not self.buffer:
            self.buffer = memoryview(bytearray(max(CHUNK_BYTES, READ_WHOLE_BYTES)))
        if fd < 0:
            fd = self.fd
        view = self.buffer[:n]
        got = 0
        while got < n:
            try:
                k = _preadv(fd, view[got:] if got else view, file_pos + got)
            except OSError as exc:
                raise StorageError(f"cannot read {f.fs_path}: {exc.strerror or exc}") from None
            if k == 0:
                raise StorageError(f"{f.fs_path} shrank while it was being hashed")
            got += k
        return view

    def close(self) -> None:
        self._unmap()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self.fd_index = -1


def _map_whole(f: SourceFile, n: int) -> Any:
    """The first ``n`` bytes of ``f`` mapped (its descriptor closed again at once: the
    mapping holds its own); None where the file system cannot map it.

    Raises:
        StorageError: it cannot be opened, or is shorter than ``n``.
    """
    fd = _open(f)
    try:
        return _mmap.mmap(fd, n, _MAP_FLAGS, _mmap.PROT_READ, 0, 0)
    except ValueError:  # shorter than ``n``: see :meth:`_Reader._map`
        raise StorageError(f"{f.fs_path} shrank while it was being hashed") from None
    except OSError:
        return None
    finally:
        os.close(fd)


def _open(f: SourceFile) -> int:
    try:
        return os.open(f.fs_path, _OPEN_FLAGS)
    except OSError as exc:
        raise StorageError(f"cannot open {f.fs_path}: {exc.strerror or exc}") from None


try:
    import mmap as _mmap

    _MAP_FLAGS = _mmap.MAP_SHARED
except ImportError:  # pragma: no cover - platforms without mmap
    _mmap = None  # type: ignore[assignment]
    _MAP_FLAGS = 0

_FADVISE = getattr(os, "posix_fadvise", None)
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
_digest = operator.methodcaller("digest")
_FS_PATH = operator.itemgetter(1)  # a SourceFile's fs_path
_LENGTH = operator.itemgetter(2)  # its length

if hasattr(os, "preadv"):

    def _preadv(fd: int, into: memoryview, pos: int) -> int:
        return os.preadv(fd, (into,), pos)

else:  # pragma: no cover - platforms without preadv

    def _preadv(fd: int, into: memoryview, pos: int) -> int:
        os.lseek(fd, pos, os.SEEK_SET)  # each worker owns its descriptor, so seeking is safe
        return os.readv(fd, (into,))
