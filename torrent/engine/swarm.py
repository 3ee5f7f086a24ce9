"""One torrent's runtime: its peers, its picker, its storage and resume state.

A :class:`Swarm` is owned by a :class:`~torrent.engine.session.Session`, which runs
:meth:`Swarm.run` in its task group. Its parts, each in its own module:

* the start-up (:func:`torrent.disk.resume.start`: resume state, or a hash check of
  what is on disk; the sequence the kill -9 crash test exercises),
* the announce loop (:class:`~torrent.engine.announcer.Announcer`) and its DHT twin
  (:class:`~torrent.engine.dht_source.DhtSource`; never for a private torrent, BEP 27),
* peer admission, outgoing and incoming (:class:`~torrent.engine.connector.PeerConnector`,
  over a :class:`~torrent.engine.peer_list.PeerList`),
* completion, piece choice and endgame (:class:`~torrent.proto.picker.Picker`),
* peer exchange (:class:`~torrent.engine.peer_exchange.PeerExchange`, BEP 11) and local
  service discovery (``add_local_peer``, fed by the session, BEP 14); neither for a
  private torrent,
* who sent corrupt data (:class:`~torrent.proto.smart_ban.SmartBan`),
* the resume saver (every ``resume_save_interval_s`` while something changed).

What stays here is the glue: the peer callbacks, piece assembly, upload gating, choke
application and the torrent's lifecycle.

The walk of a block (docs/ARCHITECTURE.md): the peer's stream → ``wire`` → ``Block``
→ :meth:`Swarm.on_peer_blocks` (the blocks of one read) → picker bookkeeping and one
copy into the piece's buffer → when the piece is whole, ``DiskIO.write_piece`` (SHA-1
then ``pwrite`` on the thread pool) → ``picker`` verified → ``Have`` to every peer. A
piece that fails its hash goes back to the picker; once it passes, the peers whose blocks
differed from the good data are banned.

Shutdown: :meth:`Swarm.stop` refuses new tasks and closes every peer at once, so no late
block reaches a task group that is aborting; then the group is cancelled, in-flight
writes finish, ``stopped`` is announced under a short timeout and the resume state saved.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from torrent.config import Settings
from torrent.disk import resume
from torrent.disk.diskio import DiskIO
from torrent.disk.resume import ResumeStore
from torrent.disk.storage import FileStorage, piece_buffer
from torrent.engine.announcer import Announcer
from torrent.engine.connector import PeerConnector
from torrent.engine.hash_exchange import HashExchange
from torrent.engine.host import PeerHostBase, SwarmContext, spawn
from torrent.engine.peer import Peer, PeerAddr
from torrent.engine.peer_exchange import PeerExchange
from torrent.engine.peer_list import PeerList
from torrent.engine.status import EventBus, TorrentEvent, TorrentEventKind, TorrentState, TorrentStats
from torrent.engine.tracker_client import AnnounceEvent, AnnounceRequest
from torrent.engine.web_seed import WebSeedKey, WebSeeds
from torrent.errors import MetainfoError, StorageError, TorrentError
from torrent.proto import picker as picker_mod
from torrent.proto import wire
from torrent.proto.metainfo import Metainfo
from torrent.proto.pieceset import PieceSet
from torrent.proto.smart_ban import SmartBan
from torrent.types import BLOCK_SIZE, InfoHash

if TYPE_CHECKING:  # the DHT's and uTP's modules load only when they are enabled
    from torrent.engine.dht_node import DhtNode
    from torrent.engine.dht_source import DhtSource
    from torrent.engine.utp_socket import UtpSocketManager
    from torrent.proto import choker as choker_mod  # the choker's with its first round
    from torrent.proto import ut_metadata  # and BEP 9's with the first metadata message

__all__ = ["Swarm", "SwarmContext", "TorrentEvent", "TorrentStats"]

log = logging.getLogger(__name__)

#: Pieces read ahead into the cache for uploads at once.
MAX_PREFETCH = 8
#: Fewest pieces that may be assembled or verified at once, whatever the rates say.
MIN_PIECES_IN_FLIGHT = 4
#: Failed v2 pieces held at once while their leaf hashes are asked for (each holds its
#: buffer); more are fetched again whole.
MAX_PIECES_BLAMING = 8
#: Complete v2 pieces held while a per-block proof of their hash is asked for (their
#: file's piece layer not known yet): no new piece is started while this many are held.
#: They count among the pieces in flight too, so memory stays within this plus that
#: allowance (and the pieces one pick started before the bound was reached).
MAX_PIECES_PROVING = 16
#: Pieces allowed beyond what the pipelines span, for verification: two, or one when a
#: piece is larger than VERIFY_SLACK_BYTES (one verifying while the next arrives).
VERIFY_SLACK_PIECES = 2
VERIFY_SLACK_BYTES = 2 << 20
#: Verified pieces' buffers are kept for reuse while downloading (a fresh buffer costs zeroing
#: and a page fault per 4 KiB): as many as the pieces-in-flight allowance, or this many bytes.
SPARE_BUFFER_BYTES = 4 << 20
#: Why recent connections ended, kept for diagnostics.
MAX_CLOSED_PEERS = 200
#: Incoming connections held while the torrent reads its resume state (see
#: :meth:`Swarm.adopt_incoming`).
MAX_EARLY_PEERS = 16

#: Looked up once per block received.
_NEW = picker_mod.BlockStatus.NEW
_DOWNLOADING = TorrentState.DOWNLOADING

#: Who sent a block: a peer or a web seed.
Source = PeerAddr | WebSeedKey


@dataclass(slots=True)
class _PartialPiece:
    """Blocks of one piece received so far, assembled in memory until it is whole
    (the picker knows which blocks are in; this holds the bytes and who sent them)."""

    buf: memoryview  # see torrent.disk.storage.piece_buffer
    sources: dict[int, Source] = field(default_factory=dict)  # begin -> who sent it


class Swarm(PeerHostBase):
    """One torrent: see the module docstring.

    Args:
        metainfo: the torrent.
        storage: its payload on disk (its file priorities decide the wanted pieces).
        ctx: what the session shares.
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
        recheck: bool = False,
    ) -> None:
        super().__init__()
        #: Hash every piece at start whatever the resume state says.
        self._full_recheck = recheck
        self.metainfo = metainfo
        self.info = metainfo.info
        self.info_hash: InfoHash = metainfo.info_hash
        if metainfo.info_hash_v2 is not None and metainfo.info.has_v1:
            self.hybrid_hashes = (metainfo.info_hash, InfoHash(metainfo.info_hash_v2[:20]))
        self.num_pieces = self.info.num_pieces
        self.piece_length = self.info.piece_length
        self.total_length = self.info.total_length
        self.name = self.info.name
        self.storage = storage
        self.ctx = ctx
        self.settings = ctx.settings
        self._clock = ctx.clock
        self.seed_after = seed
        self.disk: DiskIO | None = None
        self.state = TorrentState.CHECKING
        self.checked_fraction = 0.0
        self.error = ""
        #: Why recent connections ended (bounded; for diagnostics and tests).
        self.closed_peers: collections.OrderedDict[PeerAddr, str] = collections.OrderedDict()
        self.peer_list = PeerList(self.settings)
        for addr in initial_peers:
            self.peer_list.add(addr)
        self.connector = PeerConnector(
            self, ctx, self.peer_list, may_dial=lambda: not self._finished.is_set()
        )
        self.peers: dict[PeerAddr, Peer] = self.connector.peers
        self.announcer = Announcer(
            metainfo.announce_list,
            ctx,
            request=self._announce_request,
            on_peers=self.add_peers,
            on_message=self._on_tracker_message,
            info_hashes=metainfo.info_hashes,  # a hybrid: both hashes, as libtorrent does
        )
        #: Peers from the DHT, unless it is off or the torrent is private (BEP 27).
        self.dht_source: DhtSource | None = None
        self._dht_task: asyncio.Task[None] | None = None
        if ctx.dht is not None and not self.info.private:
            self.dht_source = self._new_dht_source(ctx.dht)
        self.picker = picker_mod.Picker(
            self.info.num_pieces,
            self.info.piece_length,
            self.info.total_length,
            priorities=[
                picker_mod.DEFAULT_PRIORITY if w else picker_mod.SKIP for w in storage.wanted_pieces()
            ],
            sequential=sequential,
            padding=[(f.offset, f.length) for f in self.info.files if f.padding],
        )
        #: Made by the first rechoke, ``choke_interval_s`` after the start (until then the
        #: first peers are let in unranked): a short download never loads it.
        self.choker: choker_mod.Choker | None = None
        self.smart_ban: SmartBan[Source] = SmartBan()
        s = self.settings
        self.hashes = HashExchange(
            self.info,
            ban=self._ban,
            wire_hash_v2=metainfo.info_hash_v2[:20] if metainfo.info_hash_v2 is not None else None,
            have=self.picker.have,
            read=self._read_for_hashes,
            spawn=self.spawn,
            on_blamed=self._on_blamed,
            on_proven=self._on_proven,
        )
        self.web_seeds = WebSeeds(
            [*(metainfo.url_list if s.use_web_seeds else ()), *s.web_seeds],
            self.info,
            self.picker,
            self,
            ctx.http,
            s,
            ctx.clock,
            http_seeds=metainfo.httpseeds if s.use_web_seeds else (),
            info_hash=self.info_hash,
            throttle=ctx.down_limit.take_nowait,
        )
        self.resume = ResumeStore(self.info, self.info_hash, storage.directory)
        self._events = EventBus(self.info_hash, self.name)
        self._partial: dict[int, _PartialPiece] = {}
        # Failed v2 pieces held (not asked for again) until their leaf hashes say which
        # blocks were bad: only those are fetched again.
        self._blaming: dict[int, _PartialPiece] = {}
        # Complete v2 pieces whose file's piece layer is not known yet, held until a
        # per-block proof (or the layer) gives their hash: see HashExchange.prove.
        self._proving: dict[int, _PartialPiece] = {}
        #: Buffers of verified pieces, reused for the next ones (see _piece_buffer).
        self._spare_buffers: list[memoryview] = []
        self._verifying: set[int] = set()
        self._pieces_allowed = min(MIN_PIECES_IN_FLIGHT, self.settings.max_pieces_in_flight)
        self._prefetching: set[int] = set()
        self._metadata_server: ut_metadata.MetadataServer | None = None  # on the first request
        #: Peer exchange (BEP 11), unless it is off or the torrent is private (BEP 27).
        self.pex: PeerExchange | None = None
        if self.settings.pex_enabled and not self.info.private:
            self.pex = self._new_pex()
        self._lsd_found: set[PeerAddr] = set()
        self.downloaded_bytes = 0
        self.uploaded_bytes = 0
        self.wasted_bytes = 0
        self.hash_failures = 0
        self._complete = asyncio.Event()
        self._checked = asyncio.Event()
        self._finished = asyncio.Event()
        self._stopped = asyncio.Event()
        self._announce_stop = True
        #: Incoming peers accepted before the start-up was done: their tasks start, and
        #: the ready ones get our pieces, once it is (``_admit_early``).
        self._early: list[Peer] = []
        self._early_ready: list[Peer] = []
        self._resume_dirty = asyncio.Event()
        self._seeding_since: float | None = None
        self._down_rate = 0.0
        self._up_rate = 0.0
        self._began = False
        self._prior_uploaded = 0
        self._prior_downloaded = 0

    # ------------------------------------------------------------------ public

    @property
    def complete(self) -> bool:
        """Every wanted piece is verified."""
        return self._complete.is_set()

    @property
    def wanted_bytes(self) -> int:
        """Bytes of the selected files' pieces."""
        return self.picker.bytes_wanted

    @property
    def done_bytes(self) -> int:
        """Verified bytes of the wanted pieces."""
        return self.picker.bytes_wanted - self.picker.left

    @property
    def tracker_message(self) -> str:
        return self.announcer.message

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
            peers_connected=sum(
                1 for p in self.peers.values() if p.proto is not None and p.peer_id is not None
            ),
            peers_known=len(self.peer_list) + sum(1 for a in self.peers if a not in self.peer_list),
            seeds_connected=sum(1 for p in self.peers.values() if p.is_seed),
            checked_fraction=self.checked_fraction,
            eta_s=eta,
            error=self.error,
            tracker_message=self.tracker_message,
            wasted_bytes=self.wasted_bytes,
            hash_failures=self.hash_failures,
            banned_peers=self.peer_list.banned_count,
            dht_nodes=self.ctx.dht.node_count if self.ctx.dht is not None and self.dht_source else 0,
            dht_peers=self.dht_source.peers_found if self.dht_source is not None else 0,
            external_ip=self.ctx.addresses.external_ipv4,
            web_seeds_active=self.web_seeds.active,
            web_seeds_total=self.web_seeds.total,
            last_ban=self.peer_list.last_ban,
        )

    def events(self) -> AsyncIterator[TorrentEvent]:
        """Every event from now on, until the torrent stops."""
        return self._events.subscribe()

    def add_peers(self, addrs: Sequence[PeerAddr]) -> None:
        """Learn addresses (from a tracker, the user, PEX...)."""
        self.connector.add(list(addrs))

    def stop(self, *, announce: bool = True) -> None:
        """Ask the swarm to end (``run`` returns after its clean-up); ``announce=False``
        sends no ``stopped`` to the trackers (it stays listed there, dormant).

        The peers are closed at once, before the task group aborts: a late block can then
        no longer complete a piece and spawn its verification into a group that is
        shutting down.
        """
        self._announce_stop = self._announce_stop and announce
        self._stopped.set()
        self._halt()

    def _halt(self) -> None:
        """Refuse new tasks and close every peer (waiters are told later, by ``run``,
        once the error, if any, is recorded)."""
        self.halt()
        self.connector.close_all("shutting down")

    # ------------------------------------------------------------------ events

    def _emit(self, kind: TorrentEventKind, message: str = "") -> None:
        self._events.emit(kind, message)

    def _set_state(self, state: TorrentState) -> None:
        if state != self.state:
            self.state = state
            self._emit(TorrentEventKind.STATE, state)

    def _on_tracker_message(self, is_error: bool, text: str) -> None:
        self._emit(TorrentEventKind.TRACKER_ERROR if is_error else TorrentEventKind.TRACKER_WARNING, text)

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Run the torrent until it is stopped, cancelled, or fails on disk."""
        store = self.resume
        try:
            async with DiskIO(self.storage, journal=store, executor=self.ctx.disk_executor) as disk:
                self.disk = disk
                try:
                    await self._run(disk)
                finally:
                    self._halt()
                    if self._began:
                        with contextlib.suppress(StorageError):
                            await disk.flush()
            # DiskIO has waited for every write it started: no piece is half written now.
        except StorageError as exc:
            self._fail(str(exc))
        finally:
            self.disk = None
            await self.announcer.aclose()
            if self._began:
                await self._save_resume(clean=True)
            store.close()
            self._set_state(TorrentState.ERROR if self.error else TorrentState.STOPPED)
            self._stopped.set()
            self._emit(TorrentEventKind.STOPPED, self.error or "stopped")
            self._events.close()

    def _fail(self, message: str) -> None:
        if not self.error:
            self.error = message
            self._emit(TorrentEventKind.ERROR, message)

    async def _run(self, disk: DiskIO) -> None:
        if self._stopped.is_set():
            return  # stopped before it began (its start-up waited on a check): nothing to hash
        await self._start(disk)
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self._admit_early()
                stop_task = tg.create_task(self._stopped.wait())
                tg.create_task(self.announcer.run())
                if self.dht_source is not None:
                    self._dht_task = tg.create_task(self.dht_source.run())
                tg.create_task(self.connector.run())
                tg.create_task(self._resume_loop())
                tg.create_task(self.web_seeds.run())
                await stop_task
                self.stop()  # idempotent: the stop may have come from a disk error
                raise _Stop
        except* _Stop:
            pass
        finally:
            self._tg = None
            if self._announce_stop:
                with contextlib.suppress(Exception):
                    await self.announcer.stop()

    async def _start(self, disk: DiskIO) -> None:
        """Find which pieces we already have (see :func:`torrent.disk.resume.start`: trust
        a clean state, after a crash recheck only what may have been written since the
        last save, without usable state hash everything on disk), then mark the run begun."""
        self._set_state(TorrentState.CHECKING)

        def progress(done: int, total: int) -> None:
            self.checked_fraction = done / total if total else 1.0

        verified, plan = await resume.start(
            self.resume,
            disk,
            progress=progress,
            peers=self.peer_list.retry_worthy(),
            full_recheck=self._full_recheck,
        )
        self._began = True
        for index in verified:
            self.picker.on_piece_verified(index)
        if plan.state is not None:
            self._prior_uploaded = plan.state.uploaded
            self._prior_downloaded = plan.state.downloaded
            for addr in plan.state.peers:
                self.peer_list.add(addr)
        self.checked_fraction = 1.0
        self._checked.set()
        self._emit(
            TorrentEventKind.CHECKED,
            f"{plan.reason}; {self.picker.num_have}/{self.num_pieces} pieces verified on disk",
        )
        self._update_completion()
        if not self.complete:
            self._set_state(TorrentState.DOWNLOADING)

    def _update_completion(self) -> None:
        if self.complete or not self.picker.is_complete:
            return
        self._complete.set()
        self._emit(TorrentEventKind.COMPLETED, f"download complete: {self.done_bytes} bytes verified")
        if self.downloaded_bytes:
            # Complete from the start: the state written as the run began already holds
            # every verified piece; saving it again would only cost two fsyncs.
            self._resume_dirty.set()
        self.announcer.completed(downloaded=self.downloaded_bytes > 0)
        self._seeding_since = self._clock.monotonic()
        if self.seed_after:
            self._set_state(TorrentState.SEEDING)
            self._check_seed_limits()
        else:
            self._set_state(TorrentState.FINISHED)
            self._finished.set()
        # Disconnect seeds: neither of us can give the other anything.
        for peer in list(self.peers.values()):
            if peer.is_seed:
                peer.close("both seeds")
            else:
                peer.set_interested(False)

    def _check_seed_limits(self) -> None:
        if self.state != TorrentState.SEEDING or self._finished.is_set():
            return
        s = self.settings
        ratio_hit = s.seed_ratio is not None and self.uploaded_bytes >= s.seed_ratio * max(self.done_bytes, 1)
        time_hit = (
            s.seed_time_s is not None
            and self._seeding_since is not None
            and self._clock.monotonic() - self._seeding_since >= s.seed_time_s
        )
        if ratio_hit or time_hit:
            self._set_state(TorrentState.FINISHED)
            self._emit(TorrentEventKind.FINISHED, "seed ratio reached" if ratio_hit else "seed time reached")
            self._finished.set()

    # ------------------------------------------------------------------ trackers

    def _announce_request(self, event: AnnounceEvent) -> AnnounceRequest:
        hints = self.ctx.addresses.announce_hints(external=self.settings.announce_external_ip)  # BEP 7
        return AnnounceRequest(
            info_hash=self.info_hash,
            peer_id=self.ctx.peer_id,
            port=self.ctx.port(),
            uploaded=self.uploaded_bytes,
            downloaded=self.downloaded_bytes,
            left=self.picker.left,
            event=event,
            numwant=self.settings.numwant if event is not AnnounceEvent.STOPPED else 0,
            ip=self._announce_ip(),
            key=int.from_bytes(self.ctx.peer_id[-4:], "big"),
            ipv4=hints.get("ipv4"),
            ipv6=hints.get("ipv6"),
        )

    def _announce_ip(self) -> str | None:
        """``ip=``: the configured address, else (when asked to) the router's external one."""
        s = self.settings
        if s.announce_ip is None and s.announce_external_ip:
            return self.ctx.addresses.mapped_ipv4
        return s.announce_ip

    # ------------------------------------------------------------------ peers

    def adopt_incoming(self, peer: Peer) -> bool:
        """An incoming connection routed to us; returns False when we refuse it.

        One that comes while the torrent still reads its resume state (a torrent just
        added, or woken by this very connection) is held, not refused: its handshake goes
        on, and it runs, and learns our pieces, once the start-up is done.
        """
        if self._tg is None and not self.stopping and self.state is TorrentState.CHECKING:
            if (
                len(self._early) >= MAX_EARLY_PEERS
                or self.peer_list.is_banned(peer.addr)
                or peer.addr in self.peers
                or self.connector.room() <= 0
            ):
                return False
            self._early.append(peer)
            self.peers[peer.addr] = peer
        elif not self.connector.adopt_incoming(peer):
            return False
        # Accepted before its torrent was known: from now on it counts against this
        # torrent's own rate limits too (whose buckets draw from the session's).
        peer.down_limit, peer.up_limit = self.ctx.down_limit, self.ctx.up_limit
        return True

    def on_peer_ready(self, peer: Peer) -> None:
        kp = self.peer_list.get(peer.addr)
        if kp is not None:
            kp.connected = True
            kp.peer_id = peer.peer_id
        # Failures are cleared when the connection closes having been useful
        # (PeerConnector.on_closed), not here: a peer that handshakes and hangs up must
        # keep backing off.
        if peer.peer_id == self.ctx.peer_id:
            self.peer_list.ban(peer.addr)  # our own address: never dial it again
            peer.close("connected to ourselves")
            return
        if self._drop_duplicate(peer):
            return
        self.picker.on_peer_have_none(peer.addr)  # registered; a bitfield or haves follow
        if self._tg is None:
            self._early_ready.append(peer)  # held during the start-up: pieces not known yet
            return
        self._send_piece_set(peer)
        self.hashes.ask(peer)  # a v2 magnet: the piece layers come first
        self._first_unchoke(peer)

    def _admit_early(self) -> None:
        """Run the peers held during the start-up; send the ready ones our pieces."""
        early, self._early = self._early, []
        ready, self._early_ready = self._early_ready, []
        for peer in early:
            if not peer.closed and not self.spawn(peer.run_incoming()):
                peer.close("torrent stopping")
            if peer.closed:  # gone while held: no run of its own will say so
                self.on_peer_closed(peer)
        for peer in ready:
            if not peer.closed:
                self._send_piece_set(peer)
                self.hashes.ask(peer)
                if not self.complete and self.picker.is_interesting(peer.addr):
                    peer.set_interested(True)  # what it announced while held
                self._first_unchoke(peer)

    def _first_unchoke(self, peer: Peer) -> None:
        # Until the choker runs, let the first peers in: a fresh swarm should not wait 10 s.
        unchoked = sum(1 for p in self.peers.values() if not p.am_choking)
        if unchoked < self.settings.unchoke_slots + 1:
            peer.set_choking(False)

    def _drop_duplicate(self, peer: Peer) -> bool:
        """The same peer twice (we dialled each other at once): both sides must drop the
        same connection, the one not opened by the smaller peer id. True when ``peer``
        was the one dropped."""
        for other in self.peers.values():
            if other is peer or other.peer_id != peer.peer_id or other.closed:
                continue
            keep_outgoing = self.ctx.peer_id < (peer.peer_id or b"")
            if peer.outgoing == other.outgoing or peer.outgoing != keep_outgoing:
                peer.close("duplicate connection")
                return True
            other.close("duplicate connection")
            return False
        return False

    def _send_piece_set(self, peer: Peer) -> None:
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
        if self._early_ready and peer in self._early_ready:
            return  # held during the start-up: our interest follows our piece set (_admit_early)
        if indices is None:
            peer.set_interested(interesting and not self.complete)
        elif interesting and not peer.am_interested and not self.complete:
            peer.set_interested(True)
        if peer.am_interested:
            peer.fill_pipeline()

    def extension_fields(self) -> dict[str, Any]:
        # BEP 9: we can serve the metadata to peers that came from a magnet link (the
        # field MetadataServer.handshake_fields gives, without loading its module).
        metadata_size = len(self.metainfo.info_bytes)
        return {"p": self.ctx.port(), "metadata_size": metadata_size, **_address_fields(self.ctx)}

    # ------------------------------------------------------------------ live settings

    def reconfigure(self, settings: Settings, *, dht: DhtNode | None, utp: UtpSocketManager | None) -> None:
        """Follow the session's settings, DHT node and uTP socket, changed while running:
        dials from now on use its encryption and uTP; PEX is offered to the connections
        made from now on (and with it off, no ``ut_pex`` goes out or is taken in); LSD
        announces follow ``lsd_enabled``; DHT lookups start, or stop now."""
        ctx = self.ctx
        self.settings = ctx.settings = settings
        ctx.utp = utp
        self.connector.reconfigure()
        if not settings.pex_enabled:
            self.pex = None
        elif self.pex is None and not self.info.private:
            self.pex = self._new_pex()
        elif self.pex is not None:
            self.pex.utp_hints = utp.hints if utp is not None else None
        if dht is not ctx.dht:
            ctx.dht = dht
            self._stop_dht_lookups()
            if dht is not None and not self.info.private:
                self.dht_source = self._new_dht_source(dht)
                self._start_dht_lookups()

    def _new_pex(self) -> PeerExchange:
        utp = self.ctx.utp
        hints = utp.hints if utp is not None else None
        return PeerExchange(self.settings, peers=self.peers, on_peers=self.add_peers, utp_hints=hints)

    def restart_dht_lookups(self) -> None:
        """Look up and announce on the DHT now (our port changed)."""
        if self.dht_source is not None:
            node = self.dht_source.node
            self._stop_dht_lookups()
            self.dht_source = self._new_dht_source(node)
            self._start_dht_lookups()

    def _new_dht_source(self, node: DhtNode) -> DhtSource:
        from torrent.engine.dht_source import DhtSource

        return DhtSource(
            node,
            self.metainfo.info_hashes,
            self.ctx,
            on_peers=self.add_peers,
            known_peers=lambda: len(self.peer_list),
        )

    def _start_dht_lookups(self) -> None:
        if self.dht_source is not None and self._dht_task is None:
            self._dht_task = spawn(self._tg, self.dht_source.run(), stopping=self.stopping)

    def _stop_dht_lookups(self) -> None:
        task, self._dht_task = self._dht_task, None
        if task is not None:
            task.cancel()
        self.dht_source = None

    # ------------------------------------------------------------------ peer exchange

    @property
    def pex_enabled(self) -> bool:
        """BEP 11 for this torrent: on unless turned off or the torrent is private (BEP 27)."""
        return self.pex is not None

    @property
    def pex_peers(self) -> int:
        """Distinct addresses peers told us about over ``ut_pex``."""
        return self.pex.found if self.pex is not None else 0

    @property
    def lsd_enabled(self) -> bool:
        """BEP 14 for this torrent: on unless turned off or the torrent is private (BEP 27)."""
        return self.settings.lsd_enabled and not self.info.private

    @property
    def lsd_peers(self) -> int:
        """Distinct addresses local service discovery gave this torrent."""
        return len(self._lsd_found)

    def add_local_peer(self, addr: PeerAddr) -> None:
        """A peer on the local network announced this torrent (BEP 14)."""
        if not self.lsd_enabled:
            return
        if len(self._lsd_found) < self.settings.max_known_peers:
            self._lsd_found.add(addr)
        if addr not in self.peers:
            self.add_peers([addr])

    def on_extension_handshake(self, peer: Peer, ev: wire.ExtensionHandshake) -> None:
        if ev.yourip is not None:
            self.ctx.addresses.vote(peer.addr[0], ev.yourip)
        if self.pex is not None:
            self.pex.on_extension_handshake(peer, ev)

    def on_pex_message(self, peer: Peer, payload: bytes) -> None:
        if self.pex is not None:
            self.pex.on_message(peer, payload)

    def on_metadata_message(self, peer: Peer, payload: bytes) -> None:
        from torrent.proto import ut_metadata  # most torrents never get a metadata message

        msg = ut_metadata.decode(payload)
        if self._metadata_server is None:
            self._metadata_server = ut_metadata.MetadataServer(self.metainfo.info_bytes)
        reply = self._metadata_server.answer(msg)
        # BEP 10: we may only send what the peer's handshake offered; a request from a peer
        # that never offered ut_metadata gets no answer (sending would be our protocol error).
        if (
            reply is not None
            and peer.proto is not None
            and ut_metadata.EXTENSION_NAME in peer.proto.peer_extensions
        ):
            peer.send(wire.ExtendedMessage(ut_metadata.EXTENSION_NAME, ut_metadata.encode(reply)))

    def on_peer_closed(self, peer: Peer) -> None:
        self.hashes.on_peer_closed(peer)
        if self.pex is not None:
            self.pex.forget(peer)
        self.picker.on_peer_disconnect(peer.addr)
        # A connection that never finished its handshake, or gave nothing, backs off.
        failed = peer.peer_id is None or peer.close_reason.startswith(("no data", "idle"))
        banned = self.connector.on_closed(peer, failed=failed)
        if banned:
            self._emit(TorrentEventKind.PEER_BANNED, f"{peer.addr[0]}:{peer.addr[1]} banned: {banned}")
        log.debug("peer %s closed: %s", peer.addr, peer.close_reason)
        self.closed_peers[peer.addr] = peer.close_reason
        if len(self.closed_peers) > MAX_CLOSED_PEERS:
            self.closed_peers.popitem(last=False)

    def _ban(self, addr: Source, why: str) -> None:
        if isinstance(addr, WebSeedKey):
            if self.web_seeds.ban(addr, why):
                self._emit(TorrentEventKind.PEER_BANNED, f"{addr} banned: {why}")
            return
        if self.peer_list.is_banned(addr):
            return
        self.peer_list.ban(addr, why)
        self._emit(TorrentEventKind.PEER_BANNED, f"{addr[0]}:{addr[1]} banned: {why}")
        peer = self.peers.get(addr)
        if peer is not None:
            peer.close(f"banned: {why}")

    # ------------------------------------------------------------------ downloading

    def pick_blocks(self, peer: Peer, n: int) -> list[tuple[int, int, int]]:
        if self.complete or not self.hashes.ready or peer in self._early_ready:
            return []  # v2 piece layers still missing, or a peer held during the start-up
        # Too many pieces in memory: only continue the pieces already being assembled.
        room = self.may_start_pieces()
        picks: list[tuple[int, int, int]] = list(
            self.picker.pick(peer.addr, n, now=self._clock.monotonic(), start_new=room)
        )
        if not picks and not peer.num_outstanding() and not self.picker.is_interesting(peer.addr):
            peer.set_interested(False)
        return picks

    def on_requests_dropped(self, peer: Peer, blocks: list[tuple[int, int, int]]) -> None:
        self._blocks_freed(peer.addr, self.picker.abort_requests(peer.addr, blocks))

    def _blocks_freed(self, source: Source, freed: Sequence[object]) -> None:
        """Give blocks a source will not deliver to someone else right away."""
        if not freed:
            return
        self.web_seeds.wake()
        for other in list(self.peers.values()):
            if other.addr != source and not other.peer_choking and other.am_interested:
                other.fill_pipeline()

    # Web seeds (torrent.engine.web_seed.WebSeedHost): a web seed is one more source.

    def may_start_pieces(self) -> bool:
        proving = len(self._proving)
        return (
            len(self._partial) + len(self._verifying) + proving < self._pieces_allowed
            and proving < MAX_PIECES_PROVING
        )

    def _size_pieces_in_flight(self) -> None:
        """Memory follows the rate: as many pieces as the request pipelines span (each
        peer's depth comes from its measured rate), one more per source for the piece it
        is in, and a little for verification; at most ``max_pieces_in_flight``."""
        piece_length = self.info.piece_length
        slack = VERIFY_SLACK_PIECES if piece_length <= VERIFY_SLACK_BYTES else 1
        wanted = slack + self.web_seeds.active
        for peer in self.peers.values():
            if not peer.peer_choking and peer.am_interested:
                wanted += 1 - (-peer.pipeline_depth() * BLOCK_SIZE // piece_length)
        self._pieces_allowed = min(self.settings.max_pieces_in_flight, max(MIN_PIECES_IN_FLIGHT, wanted))
        spares = self._spare_buffers
        if spares:  # fewer pieces in flight from now on: let the extra spares go
            del spares[self._max_spares(len(spares[0])) :]

    def peer_supply(self) -> tuple[int, float]:
        live = [p for p in self.peers.values() if p.peer_id is not None and not p.closed]
        return len(live), sum(p.down.rate_bps for p in live)

    def on_source_block(self, key: WebSeedKey, index: int, begin: int, data: bytes | memoryview) -> None:
        self._on_block(key, index, begin, data)

    def on_source_dropped(self, key: WebSeedKey, blocks: list[picker_mod.Block]) -> None:
        self._blocks_freed(key, blocks)

    def on_web_seed_warning(self, text: str) -> None:
        log.info("%s: %s", self.name, text)
        self._emit(TorrentEventKind.WEB_SEED_WARNING, text)

    def on_peer_block(self, peer: Peer, index: int, begin: int, data: Any) -> None:
        self._on_block(peer.addr, index, begin, data)

    def on_peer_blocks(self, peer: Peer, blocks: list[tuple[int, int, Any]]) -> None:
        """The blocks of one read: :meth:`_on_block` for each, the picker's part done for
        the run at once (``Picker.on_blocks``) and the commonest case (a new block of a
        piece still incomplete, nothing to cancel) inlined: it repeats :meth:`_assemble`'s
        four lines, to save two calls and the look-ups per block (the swarm's part of a
        block, in process: 3.9 → 3.3 µs). A unit test checks that it leaves the swarm as
        block-by-block handling does."""
        source = peer.addr
        partial = self._partial
        new_block = picker_mod.NEW_BLOCK
        # The picker's bookkeeping for the whole run first (one call, not one per block):
        # nothing between two blocks looks at the picker.
        results = self.picker.on_blocks(source, blocks)
        for (index, begin, data), result in zip(blocks, results, strict=True):
            n = len(data)
            self.downloaded_bytes += n
            if result is not new_block:
                self._settle_block(source, index, begin, data, result)
                continue
            part = partial.get(index)
            if part is None:
                part = partial[index] = _PartialPiece(self._piece_buffer(index))
            part.buf[begin : begin + n] = data
            part.sources[begin] = source
        if self.state is _DOWNLOADING and self.picker.in_endgame:
            self._set_state(TorrentState.ENDGAME)

    def _on_block(self, source: Source, index: int, begin: int, data: Any) -> None:
        n = len(data)
        self.downloaded_bytes += n
        self._settle_block(source, index, begin, data, self.picker.on_block(source, (index, begin, n)))

    def _settle_block(
        self, source: Source, index: int, begin: int, data: Any, result: picker_mod.BlockResult
    ) -> None:
        """What the picker's ``result`` for a block says to do with its ``data``."""
        if result.status is not _NEW:
            self.wasted_bytes += len(data)
            return
        part = self._assemble(source, index, begin, data)
        if result.cancels:
            for key, blk in result.cancels:
                other = self.peers.get(cast(PeerAddr, key))
                if other is not None:
                    other.cancel(blk.piece, blk.offset, blk.length)
        if self.state is _DOWNLOADING and self.picker.in_endgame:
            self._set_state(TorrentState.ENDGAME)
        if result.piece_complete:
            del self._partial[index]
            self._size_pieces_in_flight()
            if self.hashes.needs_proof(index):
                self._proving[index] = part
                self.hashes.prove(index, self.peers.values())
                return
            # Refused while stopping: the piece is not verified; the next run fetches it.
            if self.spawn(self._verify(index, part)):
                self._verifying.add(index)

    def _assemble(self, source: Source, index: int, begin: int, data: Any) -> _PartialPiece:
        """Put a new block (the picker said so) into its piece's buffer, from ``source``."""
        part = self._partial.get(index)
        if part is None:
            part = self._partial[index] = _PartialPiece(self._piece_buffer(index))
        part.buf[begin : begin + len(data)] = data
        part.sources[begin] = source
        return part

    def _piece_buffer(self, index: int) -> memoryview:
        """Memory to assemble piece ``index`` in: a spare one when it fits (no page faults,
        no zeroing), else a new one, page-aligned so that the disk layer writes it without a
        copy (:func:`torrent.disk.storage.piece_buffer`). A piece with padding blocks needs a
        zeroed buffer: those blocks are never received."""
        size = self.info.piece_size(index)
        if self._spare_buffers and size == self.info.piece_length and not self.picker.padding_blocks(index):
            return self._spare_buffers.pop()
        return piece_buffer(size)

    def _recycle(self, buf: memoryview) -> None:
        """Keep a verified piece's buffer for the next piece, up to the pieces-in-flight
        allowance (at least SPARE_BUFFER_BYTES). A buffer is made only when no spare is left,
        so the buffers alive never outnumber the most pieces that were in flight at once:
        keeping them costs no new memory. Verifications finish in bursts, and new pieces
        start in bursts: a fixed 4 MiB of spares left half the pieces of a 1 GiB download
        in fresh buffers."""
        if self.complete:
            self._spare_buffers.clear()  # seeding from here: nothing more to assemble
            return
        if len(buf) == self.info.piece_length and len(self._spare_buffers) < self._max_spares(len(buf)):
            self._spare_buffers.append(buf)

    def _max_spares(self, size: int) -> int:
        return max(self._pieces_allowed, SPARE_BUFFER_BYTES // size)

    async def _verify(self, index: int, part: _PartialPiece) -> None:
        assert self.disk is not None
        try:
            ok = await self.disk.write_piece(index, part.buf)
        except (StorageError, MetainfoError) as exc:
            self._fail(str(exc))
            self.stop()
            return
        finally:
            was_full = not self.may_start_pieces()
            self._verifying.discard(index)
        if ok:
            self._on_piece_passed(index, part)
        else:
            self._on_piece_failed(index, part)
        # Written (or thrown away) and looked at by the smart ban: nothing holds it any more
        # (unless it waits for its leaf hashes).
        if self._blaming.get(index) is not part:
            self._recycle(part.buf)
        if was_full and ok:
            # Peers stopped asking for new pieces while memory was full; without this
            # they would idle until their next block or the next tick.
            self._refill_all()

    def _refill_all(self) -> None:
        """Every source asks for more blocks (each checks its own choke and interest)."""
        self.web_seeds.wake()
        for peer in list(self.peers.values()):
            peer.fill_pipeline()

    def _on_piece_passed(self, index: int, part: _PartialPiece) -> None:
        if not self.picker.on_piece_verified(index):
            return
        self._resume_dirty.set()
        for addr in self.smart_ban.on_piece_passed(index, part.buf):
            self._ban(addr, f"sent corrupt data for piece {index}")
        msg = wire.Have(index)
        for peer in self.peers.values():
            if peer.proto is not None and peer.peer_id is not None:
                peer.queue(msg)  # with the requests a refill writes next, if any
        self._update_completion()

    def _on_piece_failed(self, index: int, part: _PartialPiece) -> None:
        self.hash_failures += 1
        self.wasted_bytes += len(part.buf)
        self.smart_ban.on_piece_failed(index, part.buf, part.sources)
        # v2: the piece's leaf hashes, once a peer sends them, name the liars exactly; a
        # count of failed pieces would also ban the honest peers that shared them.
        asked = self.hashes.on_piece_failed(index, part.buf, part.sources, self.peers.values())
        self._emit(TorrentEventKind.PIECE, f"piece {index} failed its hash check")
        if asked and len(self._blaming) < MAX_PIECES_BLAMING:
            # The picker still counts every block in: none is asked for until the leaves say.
            self._blaming[index] = part
            return
        self._reset_failed(index, asked)

    def _reset_failed(
        self, index: int, asked: bool, held: _PartialPiece | None = None, keep: Sequence[int] = ()
    ) -> None:
        """The failed piece is missing again, but for the blocks of ``held`` at the offsets
        ``keep`` (proven by the piece's leaf hashes), kept from their first senders."""
        failure = self.picker.on_piece_failed(index)
        for key in failure.ban if not asked or len(failure.contributors) == 1 else ():
            self._ban(cast(Source, key), f"piece {index} failed its hash check")
        if held is not None:
            size = self.info.piece_size(index)
            data = memoryview(held.buf)
            for begin in keep:
                n = min(BLOCK_SIZE, size - begin)
                source = held.sources[begin]
                if self.picker.on_block(source, (index, begin, n)).status is _NEW:
                    self.wasted_bytes -= n
                    self._assemble(source, index, begin, data[begin : begin + n])
        self._refill_all()

    def _on_proven(self, index: int) -> None:
        """A piece held for its proof has a known hash now: check it as any other."""
        part = self._proving.pop(index, None)
        if part is None:
            return
        # Refused while stopping: the piece is not verified; the next run fetches it.
        if self.spawn(self._verify(index, part)):
            self._verifying.add(index)

    def _on_blamed(self, index: int, bad: frozenset[int] | None) -> None:
        """A held piece's leaf hashes named its ``bad`` blocks (None: none will come)."""
        held = self._blaming.pop(index, None)
        if held is None:
            return
        # No bad block: the piece failed for another reason (a hybrid's SHA-1); fetch it all.
        keep = [begin for begin in held.sources if begin not in bad] if bad else []
        self._reset_failed(index, True, held, keep)
        self._recycle(held.buf)

    # ------------------------------------------------------------------ uploading

    def may_upload(self, peer: Peer, index: int, begin: int, length: int) -> bool:
        return (
            not peer.am_choking
            and 0 <= index < self.num_pieces
            and self.picker.have(index)
            and 0 < length <= 2 * BLOCK_SIZE
            and begin + length <= self.picker.piece_size(index)
        )

    async def read_block(self, index: int, begin: int, length: int) -> bytes | memoryview:
        assert self.disk is not None
        data = await self.disk.read(index, begin, length)
        self.uploaded_bytes += length
        return data

    async def _read_for_hashes(self, index: int, length: int) -> bytes | memoryview:
        """The first ``length`` bytes of piece ``index`` (BEP 52 hashes below the piece layer)."""
        if self.disk is None:
            raise StorageError("the torrent's files are closed")
        return await self.disk.read(index, 0, length)

    def cached_block(self, index: int, begin: int, length: int) -> bytes | memoryview | None:
        if self.disk is None:
            return None
        data = self.disk.read_cached(index, begin, length)
        if data is not None:
            self.uploaded_bytes += length
        return data

    def prefetch(self, index: int) -> None:
        if self.disk is None or index in self._prefetching or not self.picker.have(index):
            return
        if len(self._prefetching) >= MAX_PREFETCH:
            return
        self._prefetching.add(index)
        if not self.spawn(self._prefetch(index)):
            self._prefetching.discard(index)

    async def _prefetch(self, index: int) -> None:
        try:
            if self.disk is not None:
                with contextlib.suppress(StorageError):
                    await self.disk.read(index, 0, min(BLOCK_SIZE, self.info.piece_size(index)))
        finally:
            self._prefetching.discard(index)

    # ------------------------------------------------------------------ timers

    # ------------------------------------------------------------------ BEP 52 hashes

    def on_hash_request(self, peer: Peer, ev: wire.HashRequest) -> None:
        self.hashes.on_request(peer, ev)

    def on_hashes(self, peer: Peer, ev: wire.Hashes) -> None:
        if self.hashes.on_hashes(peer, ev):
            self._emit(TorrentEventKind.METADATA, "every piece layer is known")
            for other in list(self.peers.values()):
                other.fill_pipeline()

    def on_hash_reject(self, peer: Peer, ev: wire.HashReject) -> None:
        self.hashes.on_reject(peer, ev)  # asked again of the peers at the next tick

    def tick(self, now: float) -> None:
        """Once a second (from the session): peers' timers, rates, seed limits."""
        down = up = 0.0
        self.hashes.tick(self.peers.values())
        for peer in list(self.peers.values()):
            peer.tick(now)
            if not self.hashes.ready:
                self.hashes.ask(peer)
            down += peer.down.rate_bps
            up += peer.up.rate_bps
        self._down_rate, self._up_rate = down + self.web_seeds.rate_bps(), up
        self._size_pieces_in_flight()
        self._check_seed_limits()
        if self.pex is not None:
            self.pex.tick(now)
        if len(self.peers) < self.settings.max_peers_per_torrent // 2 and not self.complete:
            self.connector.wake()

    def rechoke(self, now: float) -> None:
        """Apply the choker's ranking (every ``choke_interval_s``; BEP 3)."""
        from torrent.proto import choker as choker_mod

        if self.choker is None:
            s = self.settings
            self.choker = choker_mod.Choker(
                slots=s.unchoke_slots, optimistic_interval_s=s.optimistic_interval_s
            )
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
        disk = self.disk
        try:
            await self.resume.save(
                self.storage,
                self.picker.have_pieces(),
                clean=clean,
                flush=disk.flush if disk is not None else None,
                peers=self.peer_list.retry_worthy(),
                uploaded=self._prior_uploaded + self.uploaded_bytes,
                downloaded=self._prior_downloaded + self.downloaded_bytes,
            )
        except StorageError as exc:
            # The previous state stays intact. After a disk error it is expected (the
            # disk is full): the error that stopped the torrent is the one to report.
            if self.error:
                log.debug("%s: cannot save resume state: %s", self.name, exc)
            else:
                self._fail(f"cannot save resume state: {exc}")
                self.stop()


class _Stop(Exception):
    """Ends the swarm's task group on ``stop()``."""


def _address_fields(ctx: SwarmContext) -> dict[str, bytes]:
    """BEP 10 ``ipv4``/``ipv6``: our global addresses, packed (none when unknown)."""
    book = ctx.addresses
    out = {}
    v4 = book.ipv4 or book.external_ipv4
    if v4 is not None:
        out["ipv4"] = ipaddress.ip_address(v4).packed
    if book.ipv6 is not None:
        out["ipv6"] = ipaddress.ip_address(book.ipv6).packed
    return out
