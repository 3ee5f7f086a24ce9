"""One torrent's runtime: its peers, its picker, its trackers, its storage and resume state.

A :class:`Swarm` is owned by a :class:`~torrent.engine.session.Session`, which runs
:meth:`Swarm.run` in its task group. Inside, the swarm owns one task group with:

* the check (resume state, or a hash check of what is on disk),
* the announce loop (BEP 3 events ``started``/``completed``/``stopped``, BEP 12 tiers),
* the connect loop (known peers → outgoing connections, under the half-open limit),
* one task per connected peer (``Peer.run_*``; peer failures end inside the peer),
* the resume saver (every ``resume_save_interval_s`` while something changed).

The walk of a block (STYLE.md §10): ``Peer.data_received`` → ``wire`` → ``Block`` →
:meth:`Swarm.on_peer_block` → picker bookkeeping and one copy into the piece's buffer →
when the piece is whole, ``DiskIO.write_piece`` (SHA-1 then ``pwrite`` on the thread
pool) → ``picker`` verified → ``Have`` to every peer. A piece that fails its hash goes
back to the picker; every peer that contributed to it is suspected, and once the piece
passes, the peers whose blocks differed from the good data are banned (the idea of
libtorrent's smart ban).

Shutdown is cancellation: ``finally`` closes the peers, lets in-flight writes finish,
sends ``stopped`` under a short timeout and saves the resume state.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp

from torrent.config import Settings
from torrent.disk.diskio import DiskIO
from torrent.disk.resume import ResumeStore
from torrent.disk.storage import FileStorage
from torrent.engine.peer import Peer, PeerAddr, RateLimiter
from torrent.engine.tracker_client import AnnounceEvent, AnnounceRequest, TrackerTiers, make_tracker
from torrent.errors import RemoteProtocolError, StorageError, TorrentError, TrackerError
from torrent.proto import choker as choker_mod
from torrent.proto import picker as picker_mod
from torrent.proto import ut_metadata, wire
from torrent.proto.magnet import Magnet
from torrent.proto.metainfo import Metainfo
from torrent.proto.pieceset import PieceSet
from torrent.types import BLOCK_SIZE, InfoHash, PeerId

log = logging.getLogger(__name__)

#: States a torrent goes through, in order; ``error`` and ``stopped`` end it.
STATES = ("checking", "downloading", "endgame", "seeding", "finished", "stopped", "error")


@dataclass(frozen=True, slots=True)
class TorrentStats:
    """A snapshot of one torrent (``Torrent.statistics()``).

    Attributes:
        wanted_bytes: size of the selected files' pieces (the whole torrent by default).
        done_bytes: verified bytes of those pieces.
        downloaded_bytes / uploaded_bytes: payload moved this run.
        checked_fraction: progress of the hash check (1.0 once done).
        eta_s: seconds to completion at the current rate, None when unknown.
    """

    info_hash: InfoHash
    name: str
    state: str
    wanted_bytes: int
    done_bytes: int
    total_bytes: int
    pieces_done: int
    pieces_wanted: int
    downloaded_bytes: int
    uploaded_bytes: int
    download_rate_bps: float
    upload_rate_bps: float
    peers_connected: int
    peers_known: int
    seeds_connected: int
    checked_fraction: float
    eta_s: float | None
    error: str
    tracker_message: str
    wasted_bytes: int
    hash_failures: int
    banned_peers: int

    @property
    def progress(self) -> float:
        return self.done_bytes / self.wanted_bytes if self.wanted_bytes else 1.0


@dataclass(frozen=True, slots=True)
class TorrentEvent:
    """Something that happened to a torrent (``Torrent.events()``).

    ``kind`` is one of: ``checked``, ``state``, ``piece``, ``completed``, ``finished``,
    ``tracker_warning``, ``tracker_error``, ``peer_banned``, ``error``, ``stopped``.
    """

    kind: str
    info_hash: InfoHash
    name: str
    message: str = ""


@dataclass(slots=True)
class KnownPeer:
    """A peer address we may connect to, with its history."""

    addr: PeerAddr
    failures: int = 0
    next_try: float = 0.0
    banned: bool = False
    connected: bool = False
    hash_failures: int = 0
    peer_id: bytes | None = None


class PeerList:
    """Known peer addresses with failure counts, back-off and bans (bounded)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._peers: dict[PeerAddr, KnownPeer] = {}

    def __len__(self) -> int:
        return len(self._peers)

    def get(self, addr: PeerAddr) -> KnownPeer | None:
        return self._peers.get(addr)

    def add(self, addr: PeerAddr) -> bool:
        """Remember ``addr``; returns True when it is new."""
        if addr in self._peers:
            return False
        if len(self._peers) >= self._settings.max_known_peers:
            # Forget the worst candidate: one not connected, most failures.
            victims = [p for p in self._peers.values() if not p.connected and not p.banned]
            if not victims:
                return False
            worst = max(victims, key=lambda p: p.failures)
            del self._peers[worst.addr]
        self._peers[addr] = KnownPeer(addr)
        return True

    def candidates(self, now: float, limit: int) -> list[KnownPeer]:
        """Up to ``limit`` peers to dial now: not connected, not banned, back-off over."""
        ready = [
            p
            for p in self._peers.values()
            if not p.connected and not p.banned and p.next_try <= now and p.failures < self._settings.max_failures
        ]
        ready.sort(key=lambda p: (p.failures, p.next_try))
        return ready[:limit]

    def next_wakeup(self, now: float) -> float | None:
        """Seconds until some peer's back-off ends, or None."""
        waits = [
            p.next_try - now
            for p in self._peers.values()
            if not p.connected and not p.banned and p.failures < self._settings.max_failures and p.next_try > now
        ]
        return min(waits) if waits else None

    def failed(self, addr: PeerAddr, now: float) -> None:
        p = self._peers.get(addr)
        if p is not None:
            p.failures += 1
            p.next_try = now + self._settings.retry_backoff_s * 2 ** (p.failures - 1)

    def succeeded(self, addr: PeerAddr) -> None:
        p = self._peers.get(addr)
        if p is not None:
            p.failures = 0

    def ban(self, addr: PeerAddr) -> None:
        p = self._peers.get(addr)
        if p is None:
            p = self._peers[addr] = KnownPeer(addr)
        p.banned = True

    def is_banned(self, addr: PeerAddr) -> bool:
        p = self._peers.get(addr)
        return p is not None and p.banned

    @property
    def banned_count(self) -> int:
        return sum(1 for p in self._peers.values() if p.banned)

    def retry_worthy(self, limit: int = 50) -> list[PeerAddr]:
        """Addresses worth saving in the resume state: never failed, not banned."""
        good = [p.addr for p in self._peers.values() if not p.banned and p.failures == 0]
        return good[:limit]


@dataclass(slots=True)
class _PartialPiece:
    """Blocks of one piece received so far, assembled in memory until it is whole
    (the picker knows which blocks are in; this holds the bytes and who sent them)."""

    buf: bytearray
    sources: dict[int, PeerAddr] = field(default_factory=dict)  # begin -> who sent it


@dataclass(slots=True)
class SwarmContext:
    """What the session shares with each of its swarms."""

    settings: Settings
    peer_id: PeerId
    port: Callable[[], int]
    http: aiohttp.ClientSession
    down_limit: RateLimiter
    up_limit: RateLimiter
    half_open: asyncio.Semaphore
    peer_slots: Callable[[], int]  # free connection slots session-wide


class Swarm:
    """One torrent: see the module docstring.

    Args:
        metainfo: the torrent.
        storage: its payload on disk.
        ctx: what the session shares.
        file_priorities: as given to ``storage``; pieces with no wanted byte are never
            requested.
        sequential: pick pieces in order (for streaming) instead of rarest first.
        seed: keep seeding after completion (until the ratio or time limit); False
            makes the swarm finish as soon as every wanted piece is verified.
        initial_peers: addresses to try besides the trackers' (e.g. tests, magnet ``x.pe``).
    """

    def __init__(
        self,
        metainfo: Metainfo,
        storage: FileStorage,
        ctx: SwarmContext,
        *,
        sequential: bool = False,
        seed: bool = True,
        initial_peers: Sequence[PeerAddr] = (),
    ) -> None:
        self.metainfo = metainfo
        self.info = metainfo.info
        self.info_hash: InfoHash = metainfo.info_hash
        self.num_pieces = self.info.num_pieces
        self.piece_length: int | None = self.info.piece_length
        self.total_length: int | None = self.info.total_length
        self.name = self.info.name
        self.storage = storage
        self.ctx = ctx
        self.settings = ctx.settings
        self.sequential = sequential
        self.seed_after = seed
        self.disk: DiskIO | None = None
        self.state = "checking"
        self.checked_fraction = 0.0
        self.error = ""
        self.tracker_message = ""
        self.peers: dict[PeerAddr, Peer] = {}
        #: Why recent connections ended (bounded; for diagnostics and tests).
        self.closed_peers: collections.OrderedDict[PeerAddr, str] = collections.OrderedDict()
        self.peer_list = PeerList(self.settings)
        for addr in initial_peers:
            self.peer_list.add(addr)
        self.picker = picker_mod.Picker(
            self.info.num_pieces,
            self.info.piece_length,
            self.info.total_length,
            priorities=[picker_mod.DEFAULT_PRIORITY if w else picker_mod.SKIP for w in storage.wanted_pieces()],
            sequential=sequential,
        )
        self._partial: dict[int, _PartialPiece] = {}
        self._suspects: dict[tuple[int, int], tuple[PeerAddr, bytes]] = {}
        self._verifying: set[int] = set()
        self._prefetching: set[int] = set()
        self._metadata_server = ut_metadata.MetadataServer(metainfo.info_bytes)
        self.downloaded_bytes = 0
        self.uploaded_bytes = 0
        self.wasted_bytes = 0
        self.hash_failures = 0
        self._complete = asyncio.Event()
        self._checked = asyncio.Event()
        self._finished = asyncio.Event()
        self._stopped = asyncio.Event()
        #: Set as soon as a stop is requested: nothing new is spawned from then on.
        self._stopping = False
        self._wake_connector = asyncio.Event()
        self._wake_announcer = asyncio.Event()
        self._resume_dirty = asyncio.Event()
        self._announce_event = AnnounceEvent.STARTED
        self._tg: asyncio.TaskGroup | None = None
        self._subscribers: list[asyncio.Queue[TorrentEvent | None]] = []
        self._seeding_since: float | None = None
        self._start_time = time.monotonic()
        self._down_rate = 0.0
        self._up_rate = 0.0
        self.choker = choker_mod.Choker(
            slots=self.settings.unchoke_slots, optimistic_interval_s=self.settings.optimistic_interval_s
        )
        self._trackers: TrackerTiers | None = None
        self.resume = ResumeStore(self.info, self.info_hash, storage.directory)
        self._began = False
        self._prior_uploaded = 0
        self._prior_downloaded = 0
        self.rechecked_pieces = 0
        self.resume_saves = 0

    # ------------------------------------------------------------------ public

    @property
    def complete(self) -> bool:
        return self._complete.is_set()

    async def _wait_or_stopped(self, event: asyncio.Event) -> None:
        """Return when ``event`` is set or the torrent stopped, whichever comes first."""
        if event.is_set() or self._stopped.is_set():
            return
        waiter = asyncio.ensure_future(event.wait())
        stopper = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            stopper.cancel()

    async def wait_complete(self) -> None:
        """Wait until every wanted piece is verified.

        Raises:
            TorrentError: the torrent stopped with an error (e.g. a disk error) first.
        """
        await self._wait_or_stopped(self._complete)
        if not self._complete.is_set():
            raise StorageError(self.error) if self.error else TorrentError("torrent stopped")

    async def wait_checked(self) -> None:
        """Wait until the resume state or hash check told us what we have (or we stopped)."""
        await self._wait_or_stopped(self._checked)

    async def wait_finished(self) -> None:
        """Wait until seeding is over (ratio or time limit reached), or forever when
        there is no limit. Raises like :meth:`wait_complete`."""
        await self.wait_complete()
        await self._wait_or_stopped(self._finished)
        if not self._finished.is_set() and self.error:
            raise StorageError(self.error)

    @property
    def wanted_bytes(self) -> int:
        """Bytes of the selected files' pieces."""
        return self.picker.bytes_wanted

    @property
    def done_bytes(self) -> int:
        """Verified bytes of the wanted pieces."""
        return self.picker.bytes_wanted - self.picker.left

    def statistics(self) -> TorrentStats:
        left = self.picker.left
        eta = left / self._down_rate if self._down_rate > 0 and left > 0 else (0.0 if left == 0 else None)
        return TorrentStats(
            info_hash=self.info_hash,
            name=self.name,
            state=self.state,
            wanted_bytes=self.wanted_bytes,
            done_bytes=self.done_bytes,
            total_bytes=self.info.total_length,
            pieces_done=self.picker.num_have,
            pieces_wanted=self.picker.pieces_wanted,
            downloaded_bytes=self.downloaded_bytes,
            uploaded_bytes=self.uploaded_bytes,
            download_rate_bps=self._down_rate,
            upload_rate_bps=self._up_rate,
            peers_connected=sum(1 for p in self.peers.values() if p.proto is not None and p.peer_id is not None),
            peers_known=len(self.peer_list) + sum(1 for a in self.peers if self.peer_list.get(a) is None),
            seeds_connected=sum(1 for p in self.peers.values() if p.is_seed),
            checked_fraction=self.checked_fraction,
            eta_s=eta,
            error=self.error,
            tracker_message=self.tracker_message,
            wasted_bytes=self.wasted_bytes,
            hash_failures=self.hash_failures,
            banned_peers=self.peer_list.banned_count,
        )

    async def events(self) -> AsyncIterator[TorrentEvent]:
        """Every event from now on, until the torrent stops."""
        queue: asyncio.Queue[TorrentEvent | None] = asyncio.Queue(maxsize=1000)
        self._subscribers.append(queue)
        try:
            while True:
                ev = await queue.get()
                if ev is None:
                    return
                yield ev
        finally:
            self._subscribers.remove(queue)

    def add_peers(self, addrs: Sequence[PeerAddr]) -> None:
        """Learn addresses (from a tracker, the user, PEX...)."""
        for addr in addrs:
            self.peer_list.add(addr)
        self._wake_connector.set()

    def stop(self) -> None:
        """Ask the swarm to end (``run`` returns after its clean-up).

        The peers are closed at once, before the task group aborts: a late block can then
        no longer complete a piece and spawn its verification into a group that is
        shutting down.
        """
        self._stopping = True
        self._stopped.set()
        self._shutdown_peers()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> bool:
        """Run ``coro`` in the swarm's task group; refused (and closed, so it is never
        left un-awaited) once the swarm is stopping or its group is gone."""
        return spawn(self._tg, coro, stopping=self._stopping)

    # ------------------------------------------------------------------ events

    def _emit(self, kind: str, message: str = "") -> None:
        ev = TorrentEvent(kind, self.info_hash, self.name, message)
        for q in self._subscribers:
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(ev)

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._emit("state", state)

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Run the torrent until it is stopped, cancelled, or fails on disk."""
        store = self.resume
        try:
            async with DiskIO(self.storage, journal=store) as disk:
                self.disk = disk
                try:
                    await self._run(disk)
                finally:
                    self._shutdown_peers()
                    if self._began:
                        with contextlib.suppress(StorageError):
                            await disk.flush()
            # DiskIO has waited for every write it started: no piece is half written now.
        except StorageError as exc:
            self._fail(str(exc))
        finally:
            self.disk = None
            if self._began:
                await self._save_resume(clean=True)
            store.close()
            self._set_state("error" if self.error else "stopped")
            self._stopped.set()
            self._emit("stopped", self.error or "stopped")
            for q in self._subscribers:
                with contextlib.suppress(asyncio.QueueFull):
                    q.put_nowait(None)

    def _fail(self, message: str) -> None:
        if not self.error:
            self.error = message
            self._emit("error", message)

    async def _run(self, disk: DiskIO) -> None:
        await self._check(disk)
        self._trackers = TrackerTiers(
            [
                [
                    make_tracker(url, self.ctx.http, timeout_s=self.settings.tracker_timeout_s)
                    for url in tier
                    if _supported_tracker(url)
                ]
                for tier in self.metainfo.announce_list
            ]
        )
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                stop_task = tg.create_task(self._stopped.wait())
                tg.create_task(self._announce_loop())
                tg.create_task(self._connect_loop())
                tg.create_task(self._resume_loop())
                await stop_task
                self.stop()  # idempotent: the stop may have come from a disk error
                raise _Stop
        except* _Stop:
            pass
        finally:
            self._tg = None
            with contextlib.suppress(Exception):
                await self._announce_stopped()
            await self._trackers.close()

    async def _check(self, disk: DiskIO) -> None:
        """Find which pieces we already have: resume state, else a hash check.

        The resume store decides (see :mod:`torrent.disk.resume`): trust a clean state, after a
        crash recheck only the pieces that may have been written since the last save,
        without usable state hash everything that is on disk (every core).
        """
        self._set_state("checking")
        plan = await asyncio.to_thread(self.resume.plan, self.storage)
        verified = set(plan.verified)
        if plan.recheck:
            total = len(plan.recheck)

            def progress(done: int, _total: int) -> None:
                self.checked_fraction = done / total if total else 1.0

            verified |= await disk.check(plan.recheck, progress=progress)
        disk.mark_verified(verified)
        for index in verified:
            self.picker.on_piece_verified(index)
        if plan.state is not None:
            self._prior_uploaded = plan.state.uploaded
            self._prior_downloaded = plan.state.downloaded
            for addr in plan.state.peers:
                self.peer_list.add(addr)
        self.checked_fraction = 1.0
        self.rechecked_pieces = len(plan.recheck)
        # Before anything is written: the state on disk now says "a run is under way".
        await asyncio.to_thread(
            self.resume.begin,
            self.storage,
            verified,
            peers=self.peer_list.retry_worthy(),
            uploaded=self._prior_uploaded,
            downloaded=self._prior_downloaded,
        )
        self._began = True
        await disk.allocate()
        self._checked.set()
        self._emit(
            "checked", f"{plan.reason}; {self.picker.num_have}/{self.num_pieces} pieces verified on disk"
        )
        self._update_completion()
        if not self.complete:
            self._set_state("downloading")

    def _update_completion(self) -> None:
        if self.complete:
            return
        if self.picker.is_complete:
            self._complete.set()
            self._emit("completed", f"download complete: {self.done_bytes} bytes verified")
            self._resume_dirty.set()
            self._announce_event = AnnounceEvent.COMPLETED if self.downloaded_bytes else AnnounceEvent.NONE
            self._wake_announcer.set()
            self._seeding_since = time.monotonic()
            if self.seed_after:
                self._set_state("seeding")
                self._check_seed_limits()
            else:
                self._set_state("finished")
                self._finished.set()
            # Disconnect seeds: neither of us can give the other anything.
            for peer in list(self.peers.values()):
                if peer.is_seed:
                    peer.close("both seeds")
                else:
                    peer.set_interested(False)

    def _check_seed_limits(self) -> None:
        if self.state != "seeding" or self._finished.is_set():
            return
        s = self.settings
        ratio_hit = s.seed_ratio is not None and self.uploaded_bytes >= s.seed_ratio * max(self.done_bytes, 1)
        time_hit = (
            s.seed_time_s is not None
            and self._seeding_since is not None
            and time.monotonic() - self._seeding_since >= s.seed_time_s
        )
        if ratio_hit or time_hit:
            self._set_state("finished")
            self._emit("finished", "seed ratio reached" if ratio_hit else "seed time reached")
            self._finished.set()

    def _shutdown_peers(self) -> None:
        for peer in list(self.peers.values()):
            peer.close("shutting down")

    # ------------------------------------------------------------------ trackers

    def _announce_request(self, event: AnnounceEvent) -> AnnounceRequest:
        return AnnounceRequest(
            info_hash=self.info_hash,
            peer_id=self.ctx.peer_id,
            port=self.ctx.port(),
            uploaded=self.uploaded_bytes,
            downloaded=self.downloaded_bytes,
            left=self.picker.left,
            event=event,
            numwant=self.settings.numwant if event is not AnnounceEvent.STOPPED else 0,
            ip=self.settings.announce_ip,
            key=int.from_bytes(self.ctx.peer_id[-4:], "big"),
        )

    async def _announce_loop(self) -> None:
        assert self._trackers is not None
        if not self._trackers:
            return
        s = self.settings
        retry = s.announce_retry_s
        min_gap = s.min_announce_interval_s
        while True:
            event = self._announce_event
            try:
                outcome = await self._trackers.announce(self._announce_request(event))
            except TrackerError as exc:
                self.tracker_message = exc.reason
                self._emit("tracker_error", exc.reason)
                delay = retry
                retry = min(retry * 2, s.announce_retry_max_s)
            else:
                retry = s.announce_retry_s
                if self._announce_event is event:
                    self._announce_event = AnnounceEvent.NONE
                resp = outcome.response
                if resp.warning_message:
                    self.tracker_message = resp.warning_message
                    self._emit("tracker_warning", resp.warning_message)
                else:
                    self.tracker_message = ""
                self.add_peers([(p.ip, p.port) for p in resp.peers if p.port])
                interval = resp.interval or s.default_announce_interval_s
                delay = max(interval, resp.min_interval or 0, s.min_announce_interval_s)
                min_gap = max(resp.min_interval or 0, s.min_announce_interval_s)
            self._wake_announcer.clear()
            try:
                async with asyncio.timeout(delay):
                    await self._wake_announcer.wait()
                # Woken early (completed, or we need peers): still respect min interval.
                await asyncio.sleep(min_gap)
            except TimeoutError:
                pass

    async def _announce_stopped(self) -> None:
        if self._trackers is None or not self._trackers:
            return
        if self._announce_event is AnnounceEvent.STARTED:
            return  # never announced: nothing to stop
        with contextlib.suppress(TrackerError, TimeoutError):
            async with asyncio.timeout(self.settings.stopped_announce_timeout_s):
                await self._trackers.announce(self._announce_request(AnnounceEvent.STOPPED))

    def need_peers(self) -> None:
        """Re-announce soon (respecting min interval) because we are short of peers."""
        self._wake_announcer.set()

    # ------------------------------------------------------------------ connecting

    async def _connect_loop(self) -> None:
        s = self.settings
        while True:
            self._wake_connector.clear()
            now = time.monotonic()
            room = min(s.max_peers_per_torrent - len(self.peers), self.ctx.peer_slots())
            if room > 0 and not self._finished.is_set() and not (self.complete and not self.seed_after):
                connected_ids = {p.peer_id for p in self.peers.values() if p.peer_id is not None}
                for kp in self.peer_list.candidates(now, room):
                    if kp.addr in self.peers or (kp.peer_id is not None and kp.peer_id in connected_ids):
                        continue
                    await self.ctx.half_open.acquire()
                    if self._stopping:
                        self.ctx.half_open.release()
                        return
                    kp.connected = True
                    peer = self._new_peer(kp.addr)
                    self._spawn(self._run_outgoing(peer))
            wake = self.peer_list.next_wakeup(time.monotonic())
            try:
                async with asyncio.timeout(wake if wake is not None else None):
                    await self._wake_connector.wait()
            except TimeoutError:
                pass

    def _new_peer(self, addr: PeerAddr) -> Peer:
        peer = Peer(
            self,
            addr,
            settings=self.settings,
            our_peer_id=self.ctx.peer_id,
            down_limit=self.ctx.down_limit,
            up_limit=self.ctx.up_limit,
        )
        self.peers[addr] = peer
        return peer

    async def _run_outgoing(self, peer: Peer) -> None:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.ctx.half_open.release()

        peer.on_connected = release
        try:
            await peer.run_outgoing()
        finally:
            release()

    def adopt_incoming(self, peer: Peer) -> bool:
        """An incoming connection routed to us; returns False when we refuse it."""
        if self.peer_list.is_banned(peer.addr) or self._stopping:
            return False
        if len(self.peers) >= self.settings.max_peers_per_torrent or peer.addr in self.peers:
            return False
        if not self._spawn(peer.run_incoming()):
            return False
        self.peers[peer.addr] = peer
        return True

    # ------------------------------------------------------------------ PeerHost

    def on_peer_ready(self, peer: Peer) -> None:
        kp = self.peer_list.get(peer.addr)
        if kp is not None:
            kp.connected = True
            kp.peer_id = peer.peer_id
        self.peer_list.succeeded(peer.addr)
        if peer.peer_id == self.ctx.peer_id:
            self.peer_list.ban(peer.addr)  # our own address: never dial it again
            peer.close("connected to ourselves")
            return
        for other in self.peers.values():
            if other is peer or other.peer_id != peer.peer_id or other.closed:
                continue
            # The same peer twice (we dialled each other at once). Both sides must drop
            # the same one: keep the connection opened by the smaller peer id.
            keep_outgoing = self.ctx.peer_id < (peer.peer_id or b"")
            if peer.outgoing == other.outgoing or peer.outgoing != keep_outgoing:
                peer.close("duplicate connection")
                return
            other.close("duplicate connection")
            break
        self.picker.on_peer_have_none(peer.addr)  # registered; a bitfield or haves follow
        # BEP 6: with the fast extension exactly one of these comes first; without it an
        # empty bitfield may be left out.
        assert peer.proto is not None
        have = self.picker.num_have
        if have == self.num_pieces and peer.proto.fast_extension:
            peer.send(wire.HaveAll())
        elif have == 0 and peer.proto.fast_extension:
            peer.send(wire.HaveNone())
        elif have:
            peer.send(wire.Bitfield(PieceSet.from_indexes(self.picker.have_pieces(), self.num_pieces)))
        # Until the choker runs, let the first peers in: a fresh swarm should not wait 10 s.
        unchoked = sum(1 for p in self.peers.values() if not p.am_choking)
        if unchoked < self.settings.unchoke_slots + 1:
            peer.set_choking(False)

    def on_peer_has(self, peer: Peer, indices: list[int] | None) -> None:
        if indices is None:
            if peer.is_seed:
                interesting = self.picker.on_peer_have_all(peer.addr)
            else:
                interesting = self.picker.on_peer_bitfield(peer.addr, peer.has)
        else:
            interesting = False
            for index in indices:
                interesting = self.picker.on_peer_have(peer.addr, index) or interesting
        if self.complete and peer.is_seed:
            peer.close("both seeds")
            return
        if indices is None:
            peer.set_interested(interesting and not self.complete)
        elif interesting and not peer.am_interested and not self.complete:
            peer.set_interested(True)
        if peer.am_interested:
            peer.fill_pipeline()

    def on_peer_unchoked(self, peer: Peer) -> None:
        pass

    def extension_fields(self) -> dict[str, Any]:
        # BEP 9: we can serve the metadata to peers that came from a magnet link.
        return {"p": self.ctx.port(), **self._metadata_server.handshake_fields()}

    def on_extension_handshake(self, peer: Peer, ev: wire.ExtensionHandshake) -> None:
        pass

    def on_metadata_message(self, peer: Peer, payload: bytes) -> None:
        msg = ut_metadata.decode(payload)
        reply = self._metadata_server.answer(msg)
        # BEP 10: we may only send what the peer's handshake offered; a request from a peer
        # that never offered ut_metadata gets no answer (sending would be our protocol error).
        if reply is not None and peer.proto is not None and ut_metadata.EXTENSION_NAME in peer.proto.peer_extensions:
            peer.send(wire.ExtendedMessage(ut_metadata.EXTENSION_NAME, ut_metadata.encode(reply)))

    def on_peer_interest_changed(self, peer: Peer) -> None:
        pass

    def pick_blocks(self, peer: Peer, n: int) -> list[tuple[int, int, int]]:
        if self.complete:
            return []
        # Too many pieces in memory: only continue the pieces already being assembled.
        room = len(self._partial) + len(self._verifying) < self.settings.max_pieces_in_flight
        picks: list[tuple[int, int, int]] = list(self.picker.pick(peer.addr, n, now=time.monotonic(), start_new=room))
        if not picks and not peer.outstanding and not self.picker.is_interesting(peer.addr):
            peer.set_interested(False)
        return picks

    def on_requests_dropped(self, peer: Peer, blocks: list[tuple[int, int, int]]) -> None:
        freed = self.picker.abort_requests(peer.addr, blocks)
        if freed:
            # Give the blocks to someone else right away.
            for other in list(self.peers.values()):
                if other is not peer and not other.peer_choking and other.am_interested:
                    other.fill_pipeline()

    def on_peer_block(self, peer: Peer, index: int, begin: int, data: Any) -> None:
        n = len(data)
        self.downloaded_bytes += n
        result = self.picker.on_block(peer.addr, (index, begin, n))
        if result.status is not picker_mod.BlockStatus.NEW:
            self.wasted_bytes += n
            return
        part = self._partial.get(index)
        if part is None:
            part = self._partial[index] = _PartialPiece(bytearray(self.info.piece_size(index)))
        part.buf[begin : begin + n] = data
        part.sources[begin] = peer.addr
        for key, blk in result.cancels:
            other = self.peers.get(cast(PeerAddr, key))
            if other is not None:
                other.cancel(blk.piece, blk.offset, blk.length)
        if self.state == "downloading" and self.picker.in_endgame:
            self._set_state("endgame")
        if result.piece_complete:
            del self._partial[index]
            # Refused while stopping: the piece is not verified; the next run fetches it.
            if self._spawn(self._verify(index, part)):
                self._verifying.add(index)

    async def _verify(self, index: int, part: _PartialPiece) -> None:
        assert self.disk is not None
        try:
            ok = await self.disk.write_piece(index, part.buf)
        except StorageError as exc:
            self._verifying.discard(index)
            self._fail(str(exc))
            self.stop()
            return
        self._verifying.discard(index)
        if ok:
            self._on_piece_passed(index, part)
        else:
            self._on_piece_failed(index, part)

    def _on_piece_passed(self, index: int, part: _PartialPiece) -> None:
        if not self.picker.on_piece_verified(index):
            return
        self._resume_dirty.set()
        # Smart ban: blocks of an earlier failed copy that differ from the good one
        # came from a liar.
        if self._suspects:
            for begin in list(part.sources):
                suspect = self._suspects.pop((index, begin), None)
                if suspect is None:
                    continue
                addr, digest = suspect
                length = min(BLOCK_SIZE, len(part.buf) - begin)
                if hashlib.sha1(part.buf[begin : begin + length]).digest() != digest:
                    self._ban(addr, f"sent corrupt data for piece {index}")
        msg = wire.Have(index)
        for peer in self.peers.values():
            if peer.proto is not None and peer.peer_id is not None:
                peer.send(msg)
        self._update_completion()

    def _on_piece_failed(self, index: int, part: _PartialPiece) -> None:
        self.hash_failures += 1
        self.wasted_bytes += len(part.buf)
        failure = self.picker.on_piece_failed(index)
        for begin, addr in part.sources.items():
            length = min(BLOCK_SIZE, len(part.buf) - begin)
            self._suspects[(index, begin)] = (addr, hashlib.sha1(part.buf[begin : begin + length]).digest())
        for key in failure.ban:
            self._ban(cast(PeerAddr, key), f"piece {index} failed its hash check")
        self._emit("piece", f"piece {index} failed its hash check")
        for peer in list(self.peers.values()):
            peer.fill_pipeline()

    def _ban(self, addr: PeerAddr, why: str) -> None:
        if self.peer_list.is_banned(addr):
            return
        self.peer_list.ban(addr)
        self._emit("peer_banned", f"{addr[0]}:{addr[1]} banned: {why}")
        peer = self.peers.get(addr)
        if peer is not None:
            peer.close(f"banned: {why}")

    def may_upload(self, peer: Peer, index: int, begin: int, length: int) -> bool:
        return (
            not peer.am_choking
            and 0 <= index < self.num_pieces
            and self.picker.have(index)
            and 0 < length <= 2 * BLOCK_SIZE
            and begin + length <= self.info.piece_size(index)
        )

    async def read_block(self, index: int, begin: int, length: int) -> bytes:
        assert self.disk is not None
        data = await self.disk.read(index, begin, length)
        self.uploaded_bytes += length
        return data

    def prefetch(self, index: int) -> None:
        if self.disk is None or self._tg is None or index in self._prefetching or not self.picker.have(index):
            return
        if len(self._prefetching) >= 8:
            return
        self._prefetching.add(index)
        if not self._spawn(self._prefetch(index)):
            self._prefetching.discard(index)

    async def _prefetch(self, index: int) -> None:
        try:
            if self.disk is not None:
                with contextlib.suppress(StorageError):
                    await self.disk.read(index, 0, min(BLOCK_SIZE, self.info.piece_size(index)))
        finally:
            self._prefetching.discard(index)

    def on_peer_closed(self, peer: Peer) -> None:
        if self.peers.get(peer.addr) is peer:
            del self.peers[peer.addr]
        self.picker.on_peer_disconnect(peer.addr)
        kp = self.peer_list.get(peer.addr)
        if kp is not None:
            kp.connected = False
            if peer.peer_id is None or peer.close_reason.startswith(("no data", "idle")):
                self.peer_list.failed(peer.addr, time.monotonic())
        log.debug("peer %s closed: %s", peer.addr, peer.close_reason)
        self.closed_peers[peer.addr] = peer.close_reason
        if len(self.closed_peers) > 200:
            self.closed_peers.popitem(last=False)
        self._wake_connector.set()

    # ------------------------------------------------------------------ timers

    def tick(self, now: float) -> None:
        """Once a second (from the session): peers' timers, rates, seed limits."""
        down = up = 0.0
        for peer in list(self.peers.values()):
            peer.tick(now)
            down += peer.down.rate_bps
            up += peer.up.rate_bps
        self._down_rate, self._up_rate = down, up
        self._check_seed_limits()
        if len(self.peers) < self.settings.max_peers_per_torrent // 2 and not self.complete:
            self._wake_connector.set()

    def rechoke(self, now: float) -> None:
        """Apply the choker's ranking (every ``choke_interval_s``; BEP 3)."""
        candidates = [p for p in self.peers.values() if p.peer_id is not None and not p.closed]
        decision = self.choker.rank(
            [
                choker_mod.PeerSnapshot(
                    key=p.addr,
                    interested=p.peer_interested,
                    choked=p.am_choking,
                    download_rate_bps=p.down.rate_bps,
                    upload_rate_bps=p.up.rate_bps,
                    snubbed=p.snubbed,
                    connected_at=p.connected_at,
                    unchoked_at=p.unchoked_at,
                    uploaded_since_unchoke=p.up.total - p.uploaded_at_unchoke,
                )
                for p in candidates
            ],
            now=now,
            seeding=self.complete,
        )
        for p in candidates:
            if p.addr in decision.unchoke:
                p.set_choking(False)
            elif p.addr in decision.choke:
                p.set_choking(True)

    # ------------------------------------------------------------------ resume

    async def _resume_loop(self) -> None:
        """Save every ``resume_save_interval_s`` while pieces get verified, and at once on
        completion."""
        while True:
            await self._resume_dirty.wait()
            if not self.complete:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.resume_save_interval_s):
                        await self._complete.wait()
            self._resume_dirty.clear()
            await self._save_resume(clean=False)

    async def _save_resume(self, *, clean: bool) -> None:
        """Save the resume state; a failure is reported, the previous state stays intact."""
        verified = self.picker.have_pieces()
        disk = self.disk
        try:
            await self.resume.save(
                self.storage,
                verified,
                clean=clean,
                flush=disk.flush if disk is not None else None,
                peers=self.peer_list.retry_worthy(),
                uploaded=self._prior_uploaded + self.uploaded_bytes,
                downloaded=self._prior_downloaded + self.downloaded_bytes,
            )
            self.resume_saves += 1
        except StorageError as exc:
            # The previous state stays intact. After a disk error it is expected (the
            # disk is full): the error that stopped the torrent is the one to report.
            if self.error:
                log.debug("%s: cannot save resume state: %s", self.name, exc)
            else:
                self._fail(f"cannot save resume state: {exc}")
                self.stop()


class MetadataFetcher:
    """Gets the ``info`` dict of a magnet link from peers (BEP 9 over BEP 10).

    Announces the info hash to the magnet's trackers (``tr``), connects to the peers they
    and ``x.pe`` name, and asks every peer whose extension handshake offers
    ``ut_metadata`` for 16 KiB pieces; ``ut_metadata.MetadataAssembler`` decides who is
    asked for what, checks the SHA-1 against the info hash and bans liars. The
    connections are dropped once the metadata is verified; the torrent then starts as
    from a .torrent file (a :class:`Swarm`), which connects again.
    """

    num_pieces = 0
    piece_length: int | None = None
    total_length: int | None = None

    def __init__(self, magnet: Magnet, ctx: SwarmContext) -> None:
        self.magnet = magnet
        self.info_hash: InfoHash = magnet.info_hash
        self.name = magnet.name or magnet.info_hash.hex()
        self.ctx = ctx
        self.settings = ctx.settings
        self.asm = ut_metadata.MetadataAssembler(magnet.info_hash)
        self.peer_list = PeerList(self.settings)
        self.peers: dict[PeerAddr, Peer] = {}
        self.tracker_message = ""
        self._done = asyncio.Event()
        self._wake = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        for addr in magnet.peers:
            self.peer_list.add(addr)

    async def run(self) -> Metainfo:
        """Fetch and verify the metadata; returns the torrent's :class:`Metainfo`.

        Raises:
            MetainfoError: the verified ``info`` dict does not validate.
        """
        trackers = TrackerTiers(
            [[make_tracker(u, self.ctx.http, timeout_s=self.settings.tracker_timeout_s)] for u in self.magnet.trackers if _supported_tracker(u)]
        )
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tasks = [tg.create_task(self._announce(trackers)), tg.create_task(self._connect()), tg.create_task(self._tick())]
                await self._done.wait()
                for t in tasks:
                    t.cancel()
                for peer in list(self.peers.values()):
                    peer.close("metadata received")
        finally:
            self._tg = None
            await trackers.close()
        assert self.asm.result is not None
        return ut_metadata.metainfo_from_info(self.asm.result, self.magnet.trackers)

    def statistics(self) -> tuple[int, int, int]:
        """(metadata pieces received, pieces in all, peers connected)."""
        got, total = self.asm.progress()
        return got, total, len(self.peers)

    async def _announce(self, trackers: TrackerTiers) -> None:
        if not trackers:
            return
        retry = self.settings.announce_retry_s
        while True:
            req = AnnounceRequest(
                info_hash=self.info_hash, peer_id=self.ctx.peer_id, port=self.ctx.port(),
                left=1, event=AnnounceEvent.STARTED, numwant=self.settings.numwant,
            )  # fmt: skip
            try:
                outcome = await trackers.announce(req)
            except TrackerError as exc:
                self.tracker_message = exc.reason
                await asyncio.sleep(retry)
                retry = min(retry * 2, self.settings.announce_retry_max_s)
                continue
            self.add_peers([(p.ip, p.port) for p in outcome.response.peers if p.port])
            await asyncio.sleep(max(outcome.response.min_interval or 0, self.settings.min_announce_interval_s, 5.0))

    def add_peers(self, addrs: Sequence[PeerAddr]) -> None:
        for addr in addrs:
            self.peer_list.add(addr)
        self._wake.set()

    async def _connect(self) -> None:
        while True:
            self._wake.clear()
            room = self.settings.max_peers_per_torrent - len(self.peers)
            for kp in self.peer_list.candidates(time.monotonic(), max(room, 0)):
                if kp.addr in self.peers:
                    continue
                kp.connected = True
                peer = Peer(
                    self, kp.addr, settings=self.settings, our_peer_id=self.ctx.peer_id,
                    down_limit=self.ctx.down_limit, up_limit=self.ctx.up_limit,
                )  # fmt: skip
                if not spawn(self._tg, peer.run_outgoing(), stopping=self._done.is_set()):
                    kp.connected = False
                    return
                self.peers[kp.addr] = peer
            wake = self.peer_list.next_wakeup(time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wake):
                    await self._wake.wait()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            self.asm.tick(now)
            for peer in list(self.peers.values()):
                peer.tick(now)
                self._request(peer)
            self._drop_banned()

    def _request(self, peer: Peer) -> None:
        if peer.closed or peer.proto is None or ut_metadata.EXTENSION_NAME not in peer.proto.peer_extensions:
            return
        now = time.monotonic()
        while (piece := self.asm.next_request(peer.addr, now)) is not None:
            msg = ut_metadata.encode(ut_metadata.MetadataRequest(piece))
            peer.send(wire.ExtendedMessage(ut_metadata.EXTENSION_NAME, msg))

    def _drop_banned(self) -> None:
        for key in self.asm.take_banned():
            addr = cast(PeerAddr, key)
            self.peer_list.ban(addr)
            peer = self.peers.get(addr)
            if peer is not None:
                peer.close("sent metadata that does not match the info hash")

    # PeerHost: only the handshakes and ut_metadata matter before the metadata is known.

    def on_peer_ready(self, peer: Peer) -> None:
        self.peer_list.succeeded(peer.addr)
        if peer.proto is not None and peer.proto.fast_extension:
            peer.send(wire.HaveNone())  # BEP 6: one of the piece-set messages comes first

    def extension_fields(self) -> dict[str, Any]:
        return {"p": self.ctx.port()}

    def on_extension_handshake(self, peer: Peer, ev: wire.ExtensionHandshake) -> None:
        if ut_metadata.EXTENSION_NAME in ev.extensions and self.asm.add_peer(peer.addr, ev.metadata_size):
            self._request(peer)

    def on_metadata_message(self, peer: Peer, payload: bytes) -> None:
        try:
            self.asm.on_message(peer.addr, ut_metadata.decode(payload), time.monotonic())
        except RemoteProtocolError as exc:
            self.asm.remove_peer(peer.addr)
            peer.close(str(exc))
            return
        self._drop_banned()
        if self.asm.done:
            self._done.set()
        else:
            self._request(peer)

    def on_peer_has(self, peer: Peer, indices: list[int] | None) -> None:
        pass

    def on_peer_block(self, peer: Peer, index: int, begin: int, data: Any) -> None:
        pass

    def on_peer_unchoked(self, peer: Peer) -> None:
        pass

    def pick_blocks(self, peer: Peer, n: int) -> list[tuple[int, int, int]]:
        return []

    def on_requests_dropped(self, peer: Peer, blocks: list[tuple[int, int, int]]) -> None:
        pass

    def may_upload(self, peer: Peer, index: int, begin: int, length: int) -> bool:
        return False

    async def read_block(self, index: int, begin: int, length: int) -> bytes:
        raise StorageError("no data before the metadata is known")

    def prefetch(self, index: int) -> None:
        pass

    def on_peer_interest_changed(self, peer: Peer) -> None:
        pass

    def on_peer_closed(self, peer: Peer) -> None:
        if self.peers.get(peer.addr) is peer:
            del self.peers[peer.addr]
        self.asm.remove_peer(peer.addr)
        kp = self.peer_list.get(peer.addr)
        if kp is not None:
            kp.connected = False
            if peer.peer_id is None:
                self.peer_list.failed(peer.addr, time.monotonic())
        self._wake.set()


def spawn(tg: asyncio.TaskGroup | None, coro: Coroutine[Any, Any, None], *, stopping: bool) -> bool:
    """Start ``coro`` in ``tg`` unless the owner is stopping or the group is gone or
    aborting; a refused coroutine is closed, so it never warns "never awaited".

    Returns:
        True when the task was started.
    """
    if tg is None or stopping:
        coro.close()
        return False
    try:
        tg.create_task(coro)
    except RuntimeError:  # the group is shutting down (a sibling failed)
        coro.close()
        return False
    return True


class _Stop(Exception):
    """Ends the swarm's task group on ``stop()``."""


def _supported_tracker(url: str) -> bool:
    return url.split(":", 1)[0].lower() in ("http", "https", "udp")

