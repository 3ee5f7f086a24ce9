"""Resume state: which pieces are verified, kept so that nothing verified is ever lost.

Files, beside the data (``directory`` is the download directory, ``<ih>`` the info
hash in hex):

* ``<directory>/.pytorrent/<ih>.resume``: bencoded dict, ``version`` 1 (keys below),
  replaced atomically: temp file, ``fsync``, ``rename``, ``fsync`` of the directory.
* ``<directory>/.pytorrent/<ih>.journal``: the write journal, 4-byte big-endian piece
  indices appended *before the first write to a piece* since the last save.

Resume keys: ``format`` (``"pytorrent resume"``), ``version``, ``info-hash``,
``piece-length``, ``num-pieces``, ``verified`` (a BEP 3 bitfield, as
:class:`~torrent.proto.pieceset.PieceSet` encodes it), ``dirty``
(bitfield: pieces written in the run but not verified at that save),
``files`` (``[size, mtime_ns]`` per file, ``[]`` when absent), ``clean-shutdown``,
``peers`` (``[[host, port], ...]``), ``uploaded``, ``downloaded``, ``saved-at``.

How a run uses it (the invariants make kill -9 at any moment safe):

1. A piece enters ``verified`` only after its SHA-1 matched *and* its bytes were
   written (:mod:`torrent.disk.diskio` rule 2); verified pieces are never written again.
   So every piece in a saved ``verified`` set is intact on disk from then on.
2. Every write to a piece is preceded by a journal record, or the piece is already in
   the last saved ``dirty`` set (:meth:`ResumeStore.note_write`, called by DiskIO in
   the worker thread before the bytes go out). So after a crash, ``dirty ∪ journal``
   holds every piece that may have new bytes since the last save.
3. :meth:`ResumeStore.save` fsyncs the data (``DiskIO.flush``), writes the state
   (``dirty`` = pieces journaled or carried over, minus the verified ones), renames it
   into place, and only then replaces the journal with the records made after its
   snapshot. A crash between any two steps leaves an old or new state plus a journal
   that together still satisfy rule 2.
4. :meth:`ResumeStore.begin` saves ``clean-shutdown = 0`` before the run writes
   anything; the engine saves every 30 s, on completion, and on exit with
   ``clean=True`` once every write finished.

On start (:meth:`ResumeStore.plan`):

* clean state, empty journal: files whose size or mtime changed are suspect; their
  pieces are rechecked, every other verified piece is trusted (no recheck at all when
  nothing changed);
* unclean state (a crash): mtimes are expected to differ for files we wrote to, so the
  saved ``verified`` set is trusted and only ``dirty ∪ journal`` is rechecked (pieces
  that may have been completed since the save), plus every piece of a file that is
  missing, shrank, or changed without us writing to it;
* no usable state (missing, corrupt, another torrent's, unknown version): a full
  recheck, unless no file of the torrent exists yet. A corrupt file is logged as a
  warning and ignored, never a crash.

Left out: fast-resume interoperability with libtorrent/Transmission files, per-block
(partial piece) resume: a piece not verified at a crash is downloaded again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torrent.disk.diskio import DiskIO
from torrent.disk.storage import Storage, describe_os_error, state_path
from torrent.errors import BencodeError
from torrent.proto import bencoding
from torrent.proto.metainfo import Info
from torrent.proto.pieceset import PieceSet
from torrent.types import InfoHash

log = logging.getLogger(__name__)

FORMAT = b"pytorrent resume"
VERSION = 1
#: A resume file larger than this is not ours (a million pieces is ~300 KB).
MAX_RESUME_BYTES = 16 * 1024 * 1024
#: Peers kept for the next run.
MAX_PEERS = 200
_ENTRY = struct.Struct(">I")

FileStat = tuple[int, int] | None


@dataclass(slots=True)
class ResumeState:
    """The contents of a resume file.

    Attributes:
        verified: pieces whose data was verified and on disk at the save.
        dirty: pieces written in that run but not verified at the save.
        file_stats: ``(size, mtime_ns)`` per entry of ``info.files``, None when absent.
        clean_shutdown: the run ended normally (no write after this save).
        peers: ``(host, port)`` worth retrying.
        uploaded, downloaded: payload byte totals over every run.
        saved_at: Unix time of the save.
    """

    verified: set[int]
    dirty: set[int] = field(default_factory=set)
    file_stats: list[FileStat] = field(default_factory=list)
    clean_shutdown: bool = False
    peers: list[tuple[str, int]] = field(default_factory=list)
    uploaded: int = 0
    downloaded: int = 0
    saved_at: int = 0


@dataclass(frozen=True, slots=True)
class StartPlan:
    """What to do before a run (see the module docstring).

    Attributes:
        verified: pieces trusted without hashing.
        recheck: pieces to hash now (disjoint from ``verified``).
        full_recheck: every piece is to be hashed (no usable state).
        reason: one line for the user ("clean resume", "unclean shutdown: ...").
        state: the loaded state (peers, totals), or None.
    """

    verified: frozenset[int]
    recheck: frozenset[int]
    full_recheck: bool
    reason: str
    state: ResumeState | None


class ResumeStore:
    """Loads, plans and saves one torrent's resume state; also its write journal.

    Pass it as ``journal=`` to :class:`~torrent.disk.diskio.DiskIO` so every first write to
    a piece is journaled. Thread-safe.

    Args:
        info: the torrent's ``info``.
        info_hash: names the files.
        directory: the download directory (state goes to ``<directory>/.pytorrent/``).
    """

    def __init__(self, info: Info, info_hash: InfoHash | bytes, directory: str | os.PathLike[str]) -> None:
        self.info = info
        self.info_hash = bytes(info_hash)
        self.path = state_path(directory, self.info_hash, "resume")
        self.journal_path = state_path(directory, self.info_hash, "journal")
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()  # one save at a time: they share a temp file
        self._journal_fd: int | None = None
        self._noted: set[int] = set()
        self._carried: set[int] = set()

    # --- loading ----------------------------------------------------------------------

    def load(self) -> tuple[ResumeState | None, str]:
        """Read the resume file.

        Returns:
            ``(state, "")`` or ``(None, why)`` when there is no usable state. A corrupt
            file is logged as a warning, never raised.
        """
        try:
            with open(self.path, "rb") as fh:
                data = fh.read(MAX_RESUME_BYTES + 1)
        except FileNotFoundError:
            return None, "no resume state"
        except OSError as exc:
            why = f"resume state {self.path} unreadable ({exc.strerror or exc})"
            log.warning("%s; ignoring it", why)
            return None, why
        try:
            return self._parse(data), ""
        except (BencodeError, ValueError, TypeError, KeyError, IndexError) as exc:
            why = f"resume state {self.path} is corrupt ({exc})"
            log.warning("%s; ignoring it", why)
            return None, why

    def _parse(self, data: bytes) -> ResumeState:
        if len(data) > MAX_RESUME_BYTES:
            raise ValueError("too large")
        top = bencoding.decode(data)
        if not isinstance(top, dict) or top.get(b"format") != FORMAT:
            raise ValueError("not a pytorrent resume file")
        if top.get(b"version") != VERSION:
            raise ValueError(f"unknown version {top.get(b'version')!r}")
        if top.get(b"info-hash") != self.info_hash:
            raise ValueError("it belongs to another torrent")
        n = self.info.num_pieces
        if top.get(b"num-pieces") != n or top.get(b"piece-length") != self.info.piece_length:
            raise ValueError("piece layout differs")
        files_raw = top[b"files"]
        if not isinstance(files_raw, list) or len(files_raw) != len(self.info.files):
            raise ValueError("file list differs")
        stats: list[FileStat] = []
        for entry in files_raw:
            if entry == []:
                stats.append(None)
            elif isinstance(entry, list) and len(entry) == 2 and all(_is_int(v) for v in entry):
                stats.append((entry[0], entry[1]))
            else:
                raise ValueError("bad file entry")
        peers: list[tuple[str, int]] = []
        for p in top.get(b"peers", [])[:MAX_PEERS]:
            if isinstance(p, list) and len(p) == 2 and isinstance(p[0], bytes) and _is_int(p[1]):
                peers.append((p[0].decode("ascii", "replace"), p[1]))
        return ResumeState(
            verified=set(PieceSet.from_bytes(_bytes(top[b"verified"]), n)),
            dirty=set(PieceSet.from_bytes(_bytes(top[b"dirty"]), n)),
            file_stats=stats,
            clean_shutdown=top[b"clean-shutdown"] == 1,
            peers=peers,
            uploaded=_int(top.get(b"uploaded", 0)),
            downloaded=_int(top.get(b"downloaded", 0)),
            saved_at=_int(top.get(b"saved-at", 0)),
        )

    def read_journal(self) -> set[int]:
        """Piece indices recorded in the journal (a torn last entry is ignored)."""
        try:
            with open(self.journal_path, "rb") as fh:
                data = fh.read(_ENTRY.size * (self.info.num_pieces * 4 + 16))
        except FileNotFoundError:
            return set()
        except OSError as exc:
            log.warning("journal %s unreadable (%s); ignoring it", self.journal_path, exc.strerror or exc)
            return set()
        n = self.info.num_pieces
        whole = len(data) - len(data) % _ENTRY.size
        return {p for (p,) in _ENTRY.iter_unpack(data[:whole]) if p < n}

    def plan(self, storage: Storage, *, full_recheck: bool = False) -> StartPlan:
        """Decide which pieces to trust and which to hash before the run.

        ``full_recheck`` trusts nothing and hashes every piece on disk (``--recheck``:
        a verified piece changed in place with the same size and mtime is otherwise
        not noticed); the saved peers and totals are kept.

        Call it before :meth:`Storage.allocate` would change anything, or after: both
        are safe (allocation only ever creates files or extends short ones).
        """
        n = self.info.num_pieces
        everything = frozenset(range(n))
        state, why = self.load()
        current = storage.file_stats()
        if full_recheck and any(s is not None for s in current):
            return StartPlan(frozenset(), everything, True, "full recheck asked for", state)
        if state is None:
            if all(s is None for s in current):
                return StartPlan(frozenset(), frozenset(), False, f"{why}; nothing on disk yet", None)
            return StartPlan(frozenset(), everything, True, f"{why}: full recheck", None)

        journal = self.read_journal()
        suspect_files: list[int] = []
        if state.clean_shutdown and not journal:
            for i, (was, now) in enumerate(zip(state.file_stats, current, strict=True)):
                if was != now:
                    suspect_files.append(i)
            recheck: set[int] = set()
            for i in suspect_files:
                recheck.update(self._file_pieces(i))
            trusted = state.verified - recheck
            if not suspect_files:
                reason = "clean resume: no recheck"
            else:
                reason = (
                    f"clean resume; {len(suspect_files)} file(s) changed: {len(recheck)} piece(s) to recheck"
                )
            return StartPlan(frozenset(trusted), frozenset(recheck), recheck == everything, reason, state)

        # The last run did not exit cleanly: trust what was saved as verified and hash
        # what may have been written since, plus files changed behind our back.
        written = (state.dirty | journal) - state.verified
        for i, (was, now) in enumerate(zip(state.file_stats, current, strict=True)):
            if was == now or was is None:
                # A file absent at the save backs no saved piece; what we wrote to it
                # since is in ``written`` already.
                continue
            pieces = self._file_pieces(i)
            vanished = now is None or now[0] < was[0]
            if vanished or not (written & set(pieces)):
                suspect_files.append(i)
        recheck = set(written)
        for i in suspect_files:
            recheck.update(self._file_pieces(i))
        trusted = state.verified - recheck
        reason = f"unclean shutdown: {len(recheck)} piece(s) to recheck"
        if suspect_files:
            reason += f" ({len(suspect_files)} file(s) changed)"
        return StartPlan(frozenset(trusted), frozenset(recheck), recheck == everything, reason, state)

    def _file_pieces(self, index: int) -> range:
        f = self.info.files[index]
        if f.length == 0:
            return range(0)
        plen = self.info.piece_length
        return range(f.offset // plen, (f.offset + f.length - 1) // plen + 1)

    # --- the write journal --------------------------------------------------------------

    def note_write(self, piece: int) -> None:
        """Record that ``piece`` is about to be written (before the bytes go out).

        Raises:
            StorageError: the journal could not be written; the caller must not write.
        """
        with self._lock:
            if piece in self._noted or piece in self._carried:
                return
            try:
                if self._journal_fd is None:
                    os.makedirs(os.path.dirname(self.journal_path), exist_ok=True)
                    self._journal_fd = os.open(
                        self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644
                    )
                os.write(self._journal_fd, _ENTRY.pack(piece))
            except OSError as exc:
                raise describe_os_error(exc, self.journal_path, "write") from None
            self._noted.add(piece)

    # --- saving -----------------------------------------------------------------------

    def begin(
        self,
        storage: Storage,
        verified: Iterable[int],
        *,
        peers: Sequence[tuple[str, int]] = (),
        uploaded: int = 0,
        downloaded: int = 0,
    ) -> None:
        """Mark the run as started (``clean-shutdown = 0``) before anything is written.

        What an earlier crash left in the journal is absorbed by the recheck that
        precedes this call (``verified`` holds its result), so the journal restarts
        with only the pieces this run has written, normally none.
        """
        self.write_state(
            storage, verified, clean=False, peers=peers, uploaded=uploaded, downloaded=downloaded
        )

    def write_state(
        self,
        storage: Storage,
        verified: Iterable[int],
        *,
        clean: bool,
        peers: Sequence[tuple[str, int]] = (),
        uploaded: int = 0,
        downloaded: int = 0,
    ) -> None:
        """Save the state now (synchronous; :meth:`save` is the async front).

        Args:
            storage: asked for file sizes and mtimes.
            verified: pieces verified *and* written.
            clean: no write is in flight and none will follow (the run is ending).

        Raises:
            StorageError: the state could not be written; the previous file is intact.
        """
        with self._save_lock:
            self._write_state(storage, set(verified), clean, peers, uploaded, downloaded)

    def _write_state(
        self,
        storage: Storage,
        verified_set: set[int],
        clean: bool,
        peers: Sequence[tuple[str, int]],
        uploaded: int,
        downloaded: int,
    ) -> None:
        with self._lock:
            snapshot = set(self._noted)
            carried = set(self._carried)
        dirty = (snapshot | carried) - verified_set
        stats = storage.file_stats()
        state = {
            b"format": FORMAT,
            b"version": VERSION,
            b"info-hash": self.info_hash,
            b"piece-length": self.info.piece_length,
            b"num-pieces": self.info.num_pieces,
            b"verified": PieceSet.from_indexes(verified_set, self.info.num_pieces).to_bytes(),
            b"dirty": PieceSet.from_indexes(dirty, self.info.num_pieces).to_bytes(),
            b"files": [list(s) if s is not None else [] for s in stats],
            b"clean-shutdown": 1 if clean else 0,
            b"peers": [[h.encode("ascii", "replace"), p] for h, p in list(peers)[:MAX_PEERS]],
            b"uploaded": uploaded,
            b"downloaded": downloaded,
            b"saved-at": int(time.time()),
        }
        _atomic_write(self.path, bencoding.encode(state))
        # The new state covers the snapshot: keep in the journal only what came after.
        with self._lock:
            later = self._noted - snapshot
            self._carried = dirty
            self._noted = later
            self._rewrite_journal(sorted(later))

    def _rewrite_journal(self, pieces: list[int]) -> None:
        tmp = self.journal_path + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise describe_os_error(exc, tmp, "write") from None
        try:
            if pieces:
                os.write(fd, b"".join(_ENTRY.pack(p) for p in pieces))
            os.replace(tmp, self.journal_path)
        except OSError as exc:
            os.close(fd)
            raise describe_os_error(exc, self.journal_path, "write") from None
        if self._journal_fd is not None:
            os.close(self._journal_fd)
        self._journal_fd = fd
        if not pieces:
            # Nothing to append to until the next first write (note_write reopens the
            # path): an idle torrent keeps no descriptor open.
            os.close(fd)
            self._journal_fd = None

    async def save(
        self,
        storage: Storage,
        verified: Iterable[int],
        *,
        clean: bool = False,
        flush: Callable[[], Awaitable[None]] | None = None,
        peers: Sequence[tuple[str, int]] = (),
        uploaded: int = 0,
        downloaded: int = 0,
    ) -> None:
        """Flush the data, then save the state off the event loop.

        Args:
            flush: an awaitable factory run first, normally ``disk.flush`` (fsync the
                data so a power loss cannot undo what the state calls verified).
            others: as :meth:`write_state`.

        Raises:
            StorageError: flushing or saving failed; the previous state is intact.
        """
        verified_copy = set(verified)  # copied on the loop: the caller keeps mutating it
        peers_copy = list(peers)
        if flush is not None:
            await flush()
        await asyncio.to_thread(
            self.write_state,
            storage,
            verified_copy,
            clean=clean,
            peers=peers_copy,
            uploaded=uploaded,
            downloaded=downloaded,
        )

    def close(self) -> None:
        """Close the journal descriptor."""
        with self._lock:
            if self._journal_fd is not None:
                os.close(self._journal_fd)
                self._journal_fd = None


def _atomic_write(path: str, data: bytes) -> None:
    directory = os.path.dirname(path)
    tmp = f"{path}.tmp"
    try:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dfd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise describe_os_error(exc, path, "save resume state to") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(v: Any) -> int:
    if not _is_int(v) or v < 0:
        raise ValueError("expected a non-negative integer")
    return int(v)


def _bytes(v: Any) -> bytes:
    if not isinstance(v, bytes):
        raise ValueError("expected a string")
    return v


async def start(
    store: ResumeStore,
    disk: DiskIO,
    *,
    progress: Callable[[int, int], None] | None = None,
    peers: Sequence[tuple[str, int]] = (),
    full_recheck: bool = False,
) -> tuple[set[int], StartPlan]:
    """The whole start-up: plan, allocate, recheck what needs it, mark the run begun.

    The engine runs exactly this before a torrent's first write; the kill -9 crash test
    runs it too, so the crash-safety guarantee is tested on the code that ships.

    Args:
        store: this torrent's resume store (also ``disk``'s journal).
        disk: a :class:`~torrent.disk.diskio.DiskIO` over the torrent's storage.
        progress: ``progress(done, total)`` during the recheck.
        peers: addresses to save besides those of the loaded state.
        full_recheck: hash every piece whatever the resume state says.

    Returns:
        ``(verified pieces, plan)``; ``plan.state`` carries peers and totals.

    Raises:
        StorageError: files could not be created or read, or the state not saved.
    """
    storage = disk.storage
    plan = await asyncio.to_thread(functools.partial(store.plan, storage, full_recheck=full_recheck))
    await disk.allocate()
    verified = set(plan.verified)
    if plan.recheck:
        verified |= await disk.check(plan.recheck, progress=progress)
    disk.mark_verified(verified)
    state = plan.state
    await asyncio.to_thread(
        store.begin,
        storage,
        verified,
        peers=list(dict.fromkeys([*(state.peers if state else ()), *peers])),
        uploaded=state.uploaded if state else 0,
        downloaded=state.downloaded if state else 0,
    )
    # The check's descriptors are closed: an idle torrent holds no open file (the
    # storage reopens a file on its next read or write).
    await asyncio.to_thread(storage.close)
    return verified, plan
