"""``Session``: the listening socket, every torrent, the timers, global limits.

Usage::

    async with Session(Settings(listen_port=0)) as session:
        torrent = await session.add_torrent(read_metainfo("x.torrent"), "downloads")
        await torrent.wait_complete()

``__aenter__`` binds the listening socket (errors reach the caller; ``session.port``
is then known) and starts the session's task group: one task per torrent
(:meth:`Swarm.run`), a one-second tick (rates, timeouts, keep-alives, seed limits,
incoming connections that never sent a handshake) and the choker (every
``choke_interval_s``, optimistic slot every ``optimistic_interval_s``, BEP 3).
``__aexit__`` asks every torrent to stop (``stopped`` announce, resume state saved),
gives them a moment, then cancels what is left. Everything entered is unwound by one
``AsyncExitStack``, in reverse order.

With ``settings.dht_enabled`` or ``settings.utp_enabled`` the session also binds a UDP
socket on the same port number (:class:`~torrent.engine.udp.UdpSocket`, shared by first
byte: ``d`` is KRPC, uTP has its own), and a second, IPv6 one when it listens on both
families. With uTP on, a :class:`~torrent.engine.utp_socket.UtpSocketManager` accepts uTP
connections on both (each goes through the same classifier and routing as a TCP one) and
torrents dial uTP first; it is made by the first torrent that runs or the first uTP
datagram, so a session of dormant torrents never imports uTP.
With the DHT on, the session runs one :class:`~torrent.engine.dht_node.DhtNode` on it (:attr:`Session.dht`),
joined through ``dht_bootstrap`` or the routing table saved in ``dht_state_file``
(saved again on exit). Every non-private torrent then asks it for peers.

Incoming connections are routed by the info hash of their handshake; an unknown hash
is dropped. At most ``max_pending_incoming`` may wait for their handshake at once, and
``max_pending_incoming_per_ip`` from one address (:class:`~torrent.engine.incoming.HandshakeGate`).
Unless ``encryption`` is ``off``, the listener first tells a plaintext BitTorrent
handshake from an MSE one by the first bytes; an MSE connection runs the receiver's
handshake (its ``SKEY`` hash is looked up over every torrent of the session) in a
:class:`~torrent.engine.mse_stream.MseStream` before it is routed, and ``require``
closes plaintext ones.
Every timer reads the session's :class:`~torrent.engine.clock.Clock`.

A running session changes some settings in place (a front end's preferences): the
listen port (:meth:`Session.set_listen_port`: new listeners first, then the UDP socket
moves, the DHT node keeping its table; trackers, the DHT and the router's mappings learn
the new port), the encryption policy of new connections, and the DHT, uTP, PEX and LSD
switches, each starting or stopping its sockets and tasks. The torrents follow through
:meth:`Swarm.reconfigure <torrent.engine.swarm.Swarm.reconfigure>`; :attr:`Session.settings`
always holds what applies now.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from torrent.config import PEER_ID_PREFIX, Encryption, Settings
from torrent.engine.addresses import OurAddresses, canonical_host
from torrent.engine.bandwidth import RateLimiter
from torrent.engine.clock import SYSTEM_CLOCK, Clock
from torrent.engine.http_client import HttpClient
from torrent.engine.incoming import HandshakeGate
from torrent.engine.status import (
    AnnounceReport,
    PeerStats,
    TorrentBrief,
    TorrentEvent,
    TorrentState,
    TorrentStats,
)
from torrent.errors import MetadataTimeout, StorageError, TorrentError
from torrent.types import InfoHash, PeerId
from torrent.version import USER_AGENT

# What a session with only dormant torrents never runs (the swarm and what it drives, the
# DHT node, LSD, port mapping, the disk layer's checks; the peer until one connects) is
# imported where it is first used: a daemon restarting with thousands of seeds answers
# sooner. So is MSE, by the first connection or the first look at its counters, uTP
# by the first torrent that runs or the first uTP datagram, and the UDP sockets by the
# DHT or uTP (a download with both off never loads them).
if TYPE_CHECKING:
    from torrent.engine.dht_node import DhtNode
    from torrent.engine.host import SwarmContext
    from torrent.engine.lsd import LsdService
    from torrent.engine.metadata_fetch import MetadataFetcher
    from torrent.engine.mse_stream import EncryptionCounters, EncryptionStats, MseStream, Outcome
    from torrent.engine.peer import Peer, PeerAddr
    from torrent.engine.portmap import PortMapper
    from torrent.engine.swarm import Swarm
    from torrent.engine.udp import UdpSocket
    from torrent.engine.utp_dial import DialCounters, DialStats
    from torrent.engine.utp_socket import UtpSocketManager
    from torrent.engine.utp_stream import UtpStream
    from torrent.proto.magnet import Magnet
    from torrent.proto.metainfo import Info, Metainfo
    from torrent.proto.utp import UtpStats

log = logging.getLogger(__name__)

#: First bytes of uTP version 1 packets, one per type (BEP 29: types 0-4 in the high
#: nibble): :data:`torrent.engine.utp_socket.FIRST_BYTES`, routed before uTP is imported.
UTP_FIRST_BYTES = bytes((t << 4) | 1 for t in range(5))

#: Seconds each torrent gets on exit, besides the ``stopped`` announce, to finish its
#: writes and save its resume state before it is cancelled.
STOP_GRACE_S = 3.0


def make_peer_id() -> PeerId:
    """Our prefix (``-PT0100-``) followed by 12 random bytes (BEP 20 style)."""
    return PeerId(PEER_ID_PREFIX + os.urandom(20 - len(PEER_ID_PREFIX)))  # = secrets.token_bytes


class Torrent:
    """A handle on one torrent of a session (what :meth:`Session.add_torrent` returns)."""

    def __init__(self, swarm: Swarm, task: asyncio.Task[None]) -> None:
        self._swarm = swarm
        self._task = task

    @property
    def info_hash(self) -> InfoHash:
        return self._swarm.info_hash

    @property
    def name(self) -> str:
        return self._swarm.name

    @property
    def metainfo(self) -> Metainfo:
        return self._swarm.metainfo

    @property
    def state(self) -> TorrentState:
        return self._swarm.state

    @property
    def swarm(self) -> Swarm:
        """The engine object behind this handle (diagnostics and tests; not a stable API)."""
        return self._swarm

    async def wait_checked(self) -> None:
        """Wait until the resume state or the hash check told what is on disk (or it stopped)."""
        await self._swarm.wait_checked()

    async def wait_complete(self) -> None:
        """Wait until every selected file is downloaded and verified.

        Raises:
            StorageError: the torrent stopped on a disk error.
            TorrentError: it was stopped before completing.
        """
        await self._swarm.wait_complete()

    async def wait_finished(self) -> None:
        """Wait until seeding is over (ratio or time limit; forever without one)."""
        await self._swarm.wait_finished()

    def statistics(self) -> TorrentStats:
        return self._swarm.statistics()

    def brief(self) -> TorrentBrief:
        """Progress, rates, totals and errors only: a cheap :meth:`statistics`."""
        sw = self._swarm
        picker = sw.picker
        wanted = picker.bytes_wanted
        return TorrentBrief(
            sw.state,
            wanted - picker.left,
            wanted,
            sw._down_rate,
            sw._up_rate,
            sw.downloaded_bytes,
            sw.uploaded_bytes,
            sw.error,
            sw.announcer.message,
        )

    def events(self) -> AsyncIterator[TorrentEvent]:
        """An async iterator of this torrent's events from now on."""
        return self._swarm.events()

    def add_peers(self, addrs: Sequence[PeerAddr]) -> None:
        """Connect to these addresses too (besides the trackers' peers)."""
        self._swarm.add_peers(addrs)

    def file_progress(self) -> list[int]:
        """Verified bytes of each file, in the order of the torrent's files."""
        return file_progress(self._swarm.info, self._swarm.picker.have)

    @property
    def num_peers(self) -> int:
        """Connections open now (handshaken or not)."""
        return len(self._swarm.peers)

    @property
    def announce_settled(self) -> bool:
        """The first announce of this run got an answer or failed (or there is no tracker)."""
        from torrent.engine.tracker_client import AnnounceEvent

        announcer = self._swarm.announcer
        return not announcer or announcer.event is not AnnounceEvent.STARTED or bool(announcer.message)

    def set_rate_limits(
        self,
        *,
        download_bps: int | None = None,
        upload_bps: int | None = None,
        parents: tuple[RateLimiter | None, RateLimiter | None] | None = None,
    ) -> None:
        """This torrent's own limits (0: none of its own; None: unchanged), under
        ``parents``: the ``(download, upload)`` buckets every take also draws from
        (None: unchanged; at first :attr:`Session.rate_limiters`; a bandwidth group's, or
        none for a torrent that does not honor the session's limits)."""
        ctx = self._swarm.ctx
        if download_bps is not None:
            ctx.down_limit.set_rate(download_bps)
        if upload_bps is not None:
            ctx.up_limit.set_rate(upload_bps)
        if parents is not None:
            ctx.down_limit.parent, ctx.up_limit.parent = parents

    def last_announce(self) -> AnnounceReport | None:
        """How the last announce to the trackers went (None before the first one ended)."""
        return self._swarm.announcer.report()

    def have_pieces(self) -> list[int]:
        """The indices of the pieces verified so far (a front end's pieces map)."""
        return self._swarm.picker.have_pieces()

    def reannounce(self) -> None:
        """Announce to the trackers soon (still keeping the minimum interval)."""
        self._swarm.announcer.wake()

    def peers(self) -> list[PeerStats]:
        """One snapshot per connected peer (handshake done)."""
        swarm = self._swarm
        return [_peer_stats(p, swarm.num_pieces) for p in swarm.peers.values() if p.peer_id is not None]

    def stop_nowait(self) -> None:
        """Ask the torrent to stop and return at once (:meth:`stop` waits for it)."""
        self._swarm.stop()

    async def stop(self, *, announce: bool = True) -> None:
        """Stop the torrent: ``stopped`` announce (unless ``announce`` is False: the caller
        keeps the torrent listed at its trackers, e.g. a dormant seed), resume state saved."""
        self._swarm.stop(announce=announce)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._task)


def file_progress(info: Info, have: Callable[[int], bool]) -> list[int]:
    """Verified bytes of each file of ``info``, given which pieces are verified."""
    piece_length = info.piece_length
    out = []
    for f in info.files:
        done = 0
        if f.length:
            end = f.offset + f.length
            for p in range(f.offset // piece_length, (end - 1) // piece_length + 1):
                if have(p):
                    start = max(f.offset, p * piece_length)
                    done += min(end, (p + 1) * piece_length) - start
        out.append(done)
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class CheckResult:
    """What :meth:`Session.check_torrent` found on disk.

    Attributes:
        complete: every wanted piece is verified.
        done_bytes: verified bytes of the wanted pieces.
        wanted_bytes: bytes of the wanted pieces.
        files_done: verified bytes of each file.
    """

    complete: bool
    done_bytes: int
    wanted_bytes: int
    files_done: list[int]


def _peer_stats(peer: Peer, num_pieces: int) -> PeerStats:
    proto, transport = peer.proto, peer.transport
    ext = proto.peer_extension_handshake if proto is not None else None
    client = ext.client if ext is not None else None
    if not client:
        client = bytes(peer.peer_id or b"")[:8].decode("ascii", "replace").strip("-")
    return PeerStats(
        host=peer.addr[0],
        port=peer.addr[1],
        client=client or "",
        progress=peer.num_have / num_pieces if num_pieces else 0.0,
        down_rate_bps=peer.down.rate_bps,
        up_rate_bps=peer.up.rate_bps,
        incoming=not peer.outgoing,
        am_choking=peer.am_choking,
        am_interested=peer.am_interested,
        peer_choking=peer.peer_choking,
        peer_interested=peer.peer_interested,
        encrypted=transport is not None and _rc4(transport.get_extra_info("mse_method")),
        utp=transport is not None and bool(transport.get_extra_info("utp")),
    )


def _rc4(method: object) -> bool:
    """The connection's MSE method is RC4 (None: no MSE)."""
    if method is None:
        return False
    from torrent.proto.mse import CryptoMethod

    return method is CryptoMethod.RC4


class Session:
    """See the module docstring.

    Args:
        settings: every knob; defaults are documented in :mod:`torrent.config`.
        peer_id: our 20-byte id; default our prefix plus random bytes.
        clock: the time source of every timer (tests pass a ``ManualClock``).
    """

    def __init__(
        self, settings: Settings | None = None, *, peer_id: PeerId | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.settings = (settings or Settings()).validate()
        self.peer_id = peer_id or make_peer_id()
        self.clock = clock
        self._swarms: dict[InfoHash, Swarm] = {}
        #: A hybrid torrent's truncated v2 hash -> its v1 hash (BEP 52: peers may use either).
        self._aliases: dict[InfoHash, InfoHash] = {}
        self._tasks: dict[InfoHash, asyncio.Task[None]] = {}
        self._torrents: dict[InfoHash, Torrent] = {}
        self._fetchers: dict[InfoHash, MetadataFetcher] = {}
        #: Dormant torrents: not running, but an incoming peer naming one wakes it.
        self._dormant: dict[InfoHash, Callable[[InfoHash], None]] = {}
        #: A dormant hybrid's truncated v2 hash -> its v1 hash.
        self._dormant_aliases: dict[InfoHash, InfoHash] = {}
        self._stack: contextlib.AsyncExitStack | None = None
        self._servers: list[asyncio.Server] = []
        self._addresses = OurAddresses()
        self._tg: asyncio.TaskGroup | None = None
        self._http: HttpClient | None = None
        self._udp: UdpSocket | None = None
        self._udp6: UdpSocket | None = None
        self._dht: DhtNode | None = None
        #: uTP is on: its datagrams are routed here (the manager made when first needed).
        self._utp_on = False
        self._utp: UtpSocketManager | None = None
        self._utp_dial_counters: DialCounters | None = None
        self._lsd: LsdService | None = None
        self._lsd_services: list[LsdService] = []
        self._lsd_stack: contextlib.AsyncExitStack | None = None
        self._dht_stack: contextlib.AsyncExitStack | None = None
        self._portmap: PortMapper | None = None
        self._portmap_task: asyncio.Task[None] | None = None
        self._disk_pool: ThreadPoolExecutor | None = None
        self._port = 0
        self._down = RateLimiter(self.settings.max_download_bps)
        self._up = RateLimiter(self.settings.max_upload_bps)
        self._half_open = asyncio.Semaphore(self.settings.half_open_limit)
        #: Incoming connections waiting for their handshake (per-address and total caps).
        self._pending_incoming: HandshakeGate[Peer] = self._handshake_gate()
        self._encryption_counters: EncryptionCounters | None = None
        self._closing = False
        #: One settings change at a time (each may wait for sockets and tasks).
        self._reconfiguring = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        """The listening port (known once the session is entered)."""
        return self._port

    @property
    def lsd(self) -> LsdService | None:
        """Local service discovery (BEP 14), None when off."""
        return self._lsd

    def _lsd_torrents(self) -> list[bytes]:
        # A hybrid under both of its hashes, as its trackers and the DHT hear it.
        return [
            ih for swarm in self._swarms.values() if swarm.lsd_enabled for ih in swarm.metainfo.info_hashes
        ]

    def _lsd_peer(self, info_hash: bytes, addr: tuple[str, int]) -> None:
        key = InfoHash(info_hash)
        swarm = self._swarms.get(self._aliases.get(key, key))
        if swarm is not None and swarm.lsd_enabled:
            swarm.add_local_peer(addr)

    @property
    def dht(self) -> DhtNode | None:
        """The session's DHT node (``dht.statistics()``), None when the DHT is off."""
        return self._dht

    async def __aenter__(self) -> Session:
        s = self.settings
        self._closing = False
        self._half_open = asyncio.Semaphore(s.half_open_limit)  # bound to this loop
        self._reconfiguring = asyncio.Lock()
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self._close_servers)
            self._servers, self._port = await self._bind(s.listen_addresses())
            self._addresses.learn_listeners([a[0] for a in self.listen_addresses])
            http = HttpClient(USER_AGENT)
            stack.push_async_callback(http.close)
            self._http = http
            # Each part below is undone on exit in reverse order, whether it was started
            # here or later (the ``set_*`` methods start and stop them while running).
            stack.callback(self._close_udp)
            if s.dht_enabled or s.utp_enabled:
                await self._open_udp()
            stack.callback(self._stop_utp)
            if s.utp_enabled:
                self._start_utp()
            stack.push_async_callback(self._stop_dht)
            if s.dht_enabled:
                await self._start_dht()
            stack.push_async_callback(self._stop_lsd)
            if s.lsd_enabled:
                await self._start_lsd()
            # One disk pool for every torrent: an idle torrent holds no thread of its own.
            pool = ThreadPoolExecutor(
                max_workers=max(8, 2 * (os.cpu_count() or 1) + 2), thread_name_prefix="diskio"
            )
            stack.callback(pool.shutdown, wait=False)
            self._disk_pool = pool
            tg = await stack.enter_async_context(asyncio.TaskGroup())
            self._tg = tg
            timers = [tg.create_task(self._tick_loop()), tg.create_task(self._choke_loop())]
            self._start_port_mapping()
            # Runs first on exit, inside the group: stop the torrents, cancel the timers.
            stack.push_async_callback(self._stop_all, timers)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool | None:
        stack, self._stack = self._stack, None
        assert stack is not None, "the session was not entered"
        try:
            return await stack.__aexit__(exc_type, exc, tb)
        finally:
            self._tg = None
            self._http = None
            self._portmap = None
            self._portmap_task = None

    async def _bind(self, addresses: Sequence[tuple[str, int]]) -> tuple[list[asyncio.Server], int]:
        """Bind every listen address; the first one's port is the session's, and a later
        entry with port 0 takes that number too. An IPv6 wildcard the settings only
        implied (dual stack by default) is skipped with a log line when the machine has no
        IPv6; an address the user named must bind. On an error nothing stays bound.

        Returns:
            The servers, and the port of the first one.
        """
        loop = asyncio.get_running_loop()
        explicit = bool(self.settings.listen_interfaces)
        servers: list[asyncio.Server] = []
        first_port = 0
        try:
            for i, (host, port) in enumerate(addresses):
                try:
                    server = await loop.create_server(
                        self._incoming_factory, host=host, port=port or first_port, reuse_address=True
                    )
                except OSError as exc:
                    if i == 0 or explicit:
                        raise
                    log.info("not listening on [%s]:%d: %s", host, port or first_port, exc)
                    continue
                servers.append(server)
                if i == 0:
                    first_port = server.sockets[0].getsockname()[1]
        except BaseException:
            for server in servers:
                await _close_server(server)
            raise
        return servers, first_port

    async def _close_servers(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            await _close_server(server)

    @property
    def listen_addresses(self) -> list[tuple[str, int]]:
        """Every (host, port) a listening socket of the session is bound to."""
        return [(str(name[0]), int(name[1])) for server in self._servers for name in _socknames(server)]

    @property
    def addresses(self) -> OurAddresses:
        """What the session knows of its own addresses (BEP 7 hints, BEP 10 fields)."""
        return self._addresses

    # ------------------------------------------------------------------ live settings

    def _running(self) -> None:
        if self._tg is None or self._closing:
            raise TorrentError("the session is not running (use 'async with Session(...)')")

    def _settings_changed(self, **changes: Any) -> None:
        """Take ``changes`` into :attr:`settings` and hand the result to every torrent
        (new connections, lookups and announces follow it)."""
        self.settings = dataclasses.replace(self.settings, **changes).validate()
        for swarm in list(self._swarms.values()):
            swarm.reconfigure(self.settings, dht=self._dht, utp=self._utp_manager())

    def set_encryption(self, mode: Encryption) -> None:
        """Change how new connections use MSE (``Settings.encryption``); the open ones
        keep what they negotiated.

        Raises:
            ValueError: not an :class:`~torrent.config.Encryption` value.
        """
        self._settings_changed(encryption=Encryption(mode))

    def set_pex_enabled(self, on: bool) -> None:
        """Turn peer exchange (BEP 11) on or off. Our extension handshake offers
        ``ut_pex`` to connections made from now on; with it off no torrent sends or
        takes ``ut_pex`` messages any more."""
        self._settings_changed(pex_enabled=on)

    async def set_dht_enabled(self, on: bool) -> None:
        """Start or stop the DHT node (its routing table is saved to ``dht_state_file``
        when it stops) and every torrent's lookups; the UDP socket is opened or closed
        with it when uTP does not use it.

        Raises:
            OSError: no UDP socket could be bound.
            TorrentError: the session is not running.
        """
        await self._switch_udp_user(
            on,
            "dht_enabled",
            running=lambda: self._dht is not None,
            start=self._start_dht,
            stop=self._stop_dht,
        )

    async def set_utp_enabled(self, on: bool) -> None:
        """Accept and dial uTP (BEP 29) or stop: turning it off resets the uTP
        connections, and torrents dial TCP only from then on.

        Raises:
            OSError: no UDP socket could be bound.
            TorrentError: the session is not running.
        """
        await self._switch_udp_user(
            on,
            "utp_enabled",
            running=lambda: self._utp_on,
            start=self._start_utp,
            stop=self._stop_utp,
        )

    async def _switch_udp_user(
        self,
        on: bool,
        setting: str,
        *,
        running: Callable[[], bool],
        start: Callable[[], Awaitable[None] | None],
        stop: Callable[[], Awaitable[None] | None],
    ) -> None:
        """Start or stop one user of the UDP sockets (the DHT node or uTP) and record
        ``setting``: the sockets open with the first user and close after the last."""
        async with self._reconfiguring:
            self._running()
            if on != running():
                if on and self._udp is None:
                    await self._open_udp()
                done = start() if on else stop()
                if done is not None:
                    await done
            self._settings_changed(**{setting: on})
            if not on and self._dht is None and not self._utp_on:
                self._close_udp()

    async def set_lsd_enabled(self, on: bool) -> None:
        """Join or leave the local service discovery groups (BEP 14).

        Raises:
            TorrentError: the session is not running.
        """
        async with self._reconfiguring:
            self._running()
            if on and not self._lsd_services:
                await self._start_lsd()
            elif not on:
                await self._stop_lsd()
            self._settings_changed(lsd_enabled=on)

    async def set_listen_port(self, port: int) -> None:
        """Listen on ``port`` instead (0: any free one; :attr:`port` then tells which).

        The new listeners are bound before the old ones close: when the port cannot be
        bound the error reaches the caller and nothing changes. The UDP socket moves to
        the same number (the DHT node keeps its routing table; uTP connections are
        reset), every torrent announces the new port to its trackers and the DHT soon,
        and the router's port mappings are replaced.

        Raises:
            OSError: the port cannot be bound.
            ValueError: not a port number.
            TorrentError: the session is not running.
        """
        async with self._reconfiguring:
            self._running()
            if not 0 <= port <= 65535:
                raise ValueError(f"{port} is not a port number")
            s = self.settings
            interfaces = tuple((host, port) for host, _ in s.listen_interfaces)
            addresses = interfaces or dataclasses.replace(s, listen_port=port).listen_addresses()
            servers, bound = await self._bind(addresses)
            old, self._servers, self._port = self._servers, servers, bound
            for server in old:
                server.close()  # accepted connections stay open
            self._addresses.learn_listeners([a[0] for a in self.listen_addresses])
            await self._move_udp()
            if interfaces:
                self._settings_changed(listen_interfaces=interfaces)
            else:
                self._settings_changed(listen_port=port)
            for swarm in list(self._swarms.values()):
                swarm.restart_dht_lookups()
                swarm.announcer.wake()
            await self._stop_port_mapping()
            self._start_port_mapping()

    async def _move_udp(self) -> None:
        """Rebind the UDP sockets on the TCP port's number."""
        if self._udp is None:
            return
        utp = self._utp_on
        self._stop_utp()
        self._close_udp()
        await self._open_udp()
        if utp:
            self._start_utp()
        if self._dht is not None and self._udp is not None:
            udp6 = self._udp6
            self._route_dht(self._dht)
            assert self._udp.transport is not None
            self._dht.rebind(self._udp.transport, udp6.transport if udp6 is not None else None)

    def _let_go(self) -> None:
        """Every torrent drops what the session stopped (a DHT node, the uTP socket)."""
        for swarm in list(self._swarms.values()):
            swarm.reconfigure(self.settings, dht=self._dht, utp=self._utp_manager())

    async def _start_lsd(self) -> None:
        """One LSD member per address family the session listens on (BEP 14: the IPv4
        and the IPv6 group)."""
        from torrent.engine.lsd import LsdService

        s = self.settings
        hosts = {6 if ":" in host else 4: host for host, _ in reversed(s.listen_addresses())}
        stack = contextlib.AsyncExitStack()
        self._lsd_stack = stack
        for family in sorted(hosts):
            service = await stack.enter_async_context(
                LsdService(
                    hosts[family] if family == 4 else "::",
                    port=lambda: self._port,
                    torrents=self._lsd_torrents,
                    on_peer=self._lsd_peer,
                    interval_s=s.lsd_interval_s,
                    family=family,
                )
            )
            self._lsd_services.append(service)
        self._lsd = self._lsd_services[0] if self._lsd_services else None

    async def _stop_lsd(self) -> None:
        stack, self._lsd_stack = self._lsd_stack, None
        self._lsd = None
        self._lsd_services = []
        if stack is not None:
            await stack.aclose()

    @property
    def lsd_services(self) -> list[LsdService]:
        """Every LSD member (one per address family listened on)."""
        return list(self._lsd_services)

    @property
    def port_mapping(self) -> PortMapper | None:
        """The router port mapping (``port_mapping.statistics()``), None when off."""
        return self._portmap

    def _start_port_mapping(self) -> None:
        """Map the TCP listen port and the UDP port on the router (the task renews them
        until cancelled; :meth:`_stop_port_mapping` deletes them)."""
        if not (self.settings.port_mapping and self._http is not None and _mappable(self.listen_addresses)):
            return
        from torrent.engine.host import spawn

        mapper = self._port_mapper(self._http)
        task = spawn(self._tg, mapper.run(), stopping=self._closing)
        if task is not None:
            self._portmap, self._portmap_task = mapper, task

    async def _stop_port_mapping(self) -> None:
        mapper, task = self._portmap, self._portmap_task
        self._portmap = self._portmap_task = None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # our own cancellation still propagates
        if mapper is not None:
            await mapper.close()  # delete the router's mappings (bounded)

    def _port_mapper(self, http: HttpClient) -> PortMapper:
        """What maps the TCP listen port and the UDP port on the router."""
        from torrent.engine.portmap import PortMapper

        return PortMapper(
            tcp_port=lambda: self._port,
            udp_port=lambda: self._udp.port if self._udp is not None else None,
            lease_s=self.settings.port_mapping_lease_s,
            http=http,
            on_external=self._on_external_address,
            clock=self.clock,
        )

    def _on_external_address(self, address: str) -> None:
        self._addresses.mapped_ipv4 = address
        if self._dht is not None:
            self._dht.adopt_external_address(address)  # BEP 42: an id that fits it

    async def _open_udp6(self) -> None:
        """With listeners on both families, a second UDP socket (the first one's IPv4, this
        one IPv6, on the IPv6 listener's port number when free) so the DHT node joins both
        DHTs (BEP 32) and uTP is reached over IPv6 too."""
        first = self._udp_host()
        v6 = [(host, port) for host, port in self.settings.listen_addresses() if ":" in host]
        if ":" in first or not v6:
            return
        host, port = v6[0][0], v6[0][1] or self._port
        from torrent.engine.udp import UdpSocket

        try:
            udp6 = await UdpSocket.open(host, port)
        except OSError:
            try:
                udp6 = await UdpSocket.open(host, 0)
            except OSError as exc:
                log.info("the DHT and uTP stay IPv4 only: no UDP socket on [%s] (%s)", host, exc)
                return
        self._udp6 = udp6

    def _udp_host(self) -> str:
        """The address the UDP socket (DHT) binds: the first listen address's host."""
        return self.settings.listen_addresses()[0][0]

    async def _open_udp(self) -> None:
        """Bind the UDP socket of the DHT and uTP (the TCP port's number when free)."""
        # Imported with the first user of the sockets: with neither the DHT nor uTP on,
        # a session never loads it (nor ctypes, for recvmmsg): about 2 ms of start-up.
        from torrent.engine.udp import UdpSocket

        try:
            udp = await UdpSocket.open(self._udp_host(), self._port)
        except OSError as exc:
            # Another program holds that UDP port: a different number still works for the
            # DHT (our announces carry the TCP port explicitly); peers dial uTP on our TCP
            # port's number, so those connections will be TCP.
            log.warning("UDP port %d is taken (%s); the DHT and uTP use another one", self._port, exc)
            udp = await UdpSocket.open(self._udp_host(), 0)
        self._udp = udp
        await self._open_udp6()

    def _close_udp(self) -> None:
        """Close the UDP sockets (what still uses them has been stopped)."""
        for udp in (self._udp, self._udp6):
            if udp is not None:
                udp.close()
        self._udp = self._udp6 = None

    def _start_utp(self) -> None:
        """Accept and dial uTP on the UDP sockets (both families when there are two).

        The :class:`~torrent.engine.utp_socket.UtpSocketManager` (and uTP with it) is
        made by the first torrent that runs or the first uTP datagram: a session of
        dormant torrents (a restarting daemon) never imports it.
        """
        assert self._udp is not None
        self._utp_on = True
        for udp in (self._udp, self._udp6):
            if udp is not None:
                udp.route(UTP_FIRST_BYTES, self._utp_first_datagram)

    def _utp_manager(self) -> UtpSocketManager | None:
        """The uTP manager (made now if uTP is on and it was not yet); None when off."""
        if not self._utp_on:
            return None
        if self._utp is None:
            from torrent.engine.utp_socket import UtpSocketManager

            assert self._udp is not None
            self._utp = UtpSocketManager(
                self._udp,
                on_accept=self._utp_incoming,
                clock=self.clock,
                recv_buffer=self.settings.utp_recv_buffer_bytes,
            )
            if self._udp6 is not None:
                self._utp.add_socket(self._udp6)
        return self._utp

    def _utp_first_datagram(self, data: bytes, addr: Any) -> None:
        """The first uTP datagram before the manager was made: it makes it (which routes
        uTP to itself from now on) and gets this one."""
        utp = self._utp_manager()
        if utp is not None:
            utp.datagram_received(data, addr)

    def _stop_utp(self) -> None:
        """Reset every uTP connection and give the socket's uTP datagrams to nobody."""
        utp, self._utp, self._utp_on = self._utp, None, False
        if utp is not None:
            self._let_go()
            utp.close()
        for udp in (self._udp, self._udp6):
            if udp is not None:
                udp.unroute(UTP_FIRST_BYTES)
                if utp is not None:
                    udp.remove_drained(utp.drained)

    def _utp_incoming(self, stream: UtpStream) -> None:
        """An accepted uTP connection: the same classifier and routing as a TCP one."""
        incoming = self._incoming_factory()
        stream.set_protocol(incoming)
        incoming.connection_made(stream)  # type: ignore[arg-type]

    def utp_statistics(self) -> UtpStats | None:
        """What uTP dropped and recovered (a snapshot); None when uTP is off."""
        utp = self._utp_manager()
        return None if utp is None else utp.statistics()

    @property
    def _utp_dials(self) -> DialCounters:
        """How outgoing connections were made (made when first needed, as uTP is)."""
        counters = self._utp_dial_counters
        if counters is None:
            from torrent.engine.utp_dial import DialCounters

            counters = self._utp_dial_counters = DialCounters()
        return counters

    def dial_statistics(self) -> DialStats:
        """How outgoing connections were made: over uTP, or over TCP after uTP (a snapshot)."""
        return self._utp_dials.statistics()

    def _route_dht(self, node: DhtNode) -> None:
        for udp in (self._udp, self._udp6):
            if udp is not None:
                udp.route(b"d", node.datagram_received)

    async def _start_dht(self) -> None:
        """Start the DHT node on the UDP socket; :meth:`_stop_dht` saves its routing table
        and closes it before the socket closes."""
        from pathlib import Path

        from torrent.engine.dht_node import DhtNode

        s = self.settings
        udp = self._udp
        assert udp is not None
        assert udp.transport is not None
        udp6 = self._udp6
        if s.dht_state_file:
            Path(s.dht_state_file).parent.mkdir(parents=True, exist_ok=True)
        node = DhtNode(
            self._udp_host(),
            udp.port,
            bootstrap=s.dht_bootstrap,
            state_file=Path(s.dht_state_file) if s.dht_state_file else None,
            transport=udp.transport,
            transport6=udp6.transport if udp6 is not None else None,
        )
        self._route_dht(node)
        stack = contextlib.AsyncExitStack()
        try:
            self._dht = await stack.enter_async_context(node)
        except BaseException:
            self._unroute_dht()
            raise
        self._dht_stack = stack

    def _unroute_dht(self) -> None:
        for udp in (self._udp, self._udp6):
            if udp is not None:
                udp.unroute(b"d")

    async def _stop_dht(self) -> None:
        stack, self._dht_stack = self._dht_stack, None
        if self._dht is not None:
            self._dht = None
            self._let_go()  # their lookups end before the node closes
        if stack is not None:
            await stack.aclose()
            self._unroute_dht()

    async def _stop_all(self, timers: list[asyncio.Task[None]]) -> None:
        self._closing = True
        for server in self._servers:
            server.close()
        for peer in self._pending_incoming.clear():
            peer.close("session closing")
        # Ask each swarm to stop cleanly (stopped announce, resume), then cancel timers.
        for swarm in self._swarms.values():
            swarm.stop()
        pending = [t for t in self._tasks.values() if not t.done()]
        if pending:
            # Give each swarm time to finish in-flight writes, announce ``stopped`` and
            # save its resume state; then cancel whatever is left.
            await asyncio.wait(pending, timeout=self.settings.stopped_announce_timeout_s + STOP_GRACE_S)
        for task in [*pending, *timers]:
            task.cancel()
        await self._stop_port_mapping()

    # ------------------------------------------------------------------ torrents

    async def add_torrent(
        self,
        metainfo: Metainfo,
        download_dir: str | os.PathLike[str],
        *,
        content_path: str | os.PathLike[str] | None = None,
        file_priorities: Sequence[int] | None = None,
        sequential: bool = False,
        seed: bool = True,
        peers: Sequence[PeerAddr] = (),
        recheck: bool = False,
    ) -> Torrent:
        """Start downloading (or seeding) ``metainfo`` into ``download_dir``.

        Args:
            content_path: where the content already is, when not ``download_dir/<name>``.
            file_priorities: one int per file of the torrent; 0 skips it.
            sequential: pick pieces in order instead of rarest first.
            seed: keep seeding once complete (until the seed ratio/time limit).
            peers: addresses to connect to besides the trackers' peers.
            recheck: hash every piece on disk at start, whatever the resume state says.

        Raises:
            TorrentError: the session is not running, or the torrent is already in it.
        """
        return self.add_torrent_nowait(
            metainfo,
            download_dir,
            content_path=content_path,
            file_priorities=file_priorities,
            sequential=sequential,
            seed=seed,
            peers=peers,
            recheck=recheck,
        )

    def add_torrent_nowait(
        self,
        metainfo: Metainfo,
        download_dir: str | os.PathLike[str],
        *,
        content_path: str | os.PathLike[str] | None = None,
        file_priorities: Sequence[int] | None = None,
        sequential: bool = False,
        seed: bool = True,
        peers: Sequence[PeerAddr] = (),
        recheck: bool = False,
        after: asyncio.Future[Any] | None = None,
    ) -> Torrent:
        """:meth:`add_torrent` from synchronous code (it never blocks): same arguments,
        same errors. A dormant torrent of the same hash stops being dormant.

        ``after``: its start-up (reading the resume state, hashing what it must) waits
        until this is done, however it ends: a check of the same data under way
        (:meth:`check_torrent`), whose saved state it then trusts. Incoming peers are
        held meanwhile, as during any start-up."""
        from torrent.disk.storage import FileStorage
        from torrent.engine.host import spawn
        from torrent.engine.swarm import Swarm

        ctx = self._context()
        if any(h in self._swarms or h in self._aliases for h in metainfo.info_hashes):
            raise TorrentError(f"torrent {metainfo.info_hash.hex()} is already in the session")
        try:
            storage = FileStorage(
                metainfo.info,
                download_dir,
                content_path=content_path,
                file_priorities=file_priorities,
                info_hash=metainfo.info_hash,
                direct_writes=self.settings.direct_writes,
            )
        except ValueError as exc:
            raise StorageError(str(exc)) from None
        swarm = Swarm(
            metainfo, storage, ctx, sequential=sequential, seed=seed, initial_peers=peers, recheck=recheck
        )
        task = spawn(self._tg, self._run_swarm(swarm, after), stopping=self._closing)
        if task is None:
            storage.close()
            raise TorrentError("the session is closing")
        self._dormant.pop(metainfo.info_hash, None)
        self._swarms[metainfo.info_hash] = swarm
        for alias in metainfo.info_hashes[1:]:
            self._aliases[alias] = metainfo.info_hash
        self._tasks[metainfo.info_hash] = task
        torrent = Torrent(swarm, task)
        self._torrents[metainfo.info_hash] = torrent
        return torrent

    async def check_torrent(
        self,
        metainfo: Metainfo,
        download_dir: str | os.PathLike[str],
        *,
        file_priorities: Sequence[int] | None = None,
        recheck: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> CheckResult:
        """Find what of a torrent that is not running is on disk, without running it.

        The first half of the start-up of :func:`torrent.disk.resume.start` (plan: a clean
        resume state is trusted, otherwise the pieces are hashed on the session's disk
        pool; files allocated), then the state is saved clean, as a stopped run leaves it
        (not at all when a clean state was trusted whole and the torrent is complete:
        it is already on disk). A later :meth:`add_torrent` trusts it and hashes nothing.
        Nothing is written to the data, so the run is not marked begun (no dirty state
        with its ``fsync`` first). No swarm, peer, tracker or task of its own; nothing
        stays open afterwards.

        Raises:
            StorageError: the data or the resume state could not be read or written.
            TorrentError: the session is not running.
        """
        from torrent.disk.diskio import DiskIO
        from torrent.disk.resume import ResumeStore
        from torrent.disk.storage import FileStorage

        if self._disk_pool is None or self._closing:
            raise TorrentError("the session is not running (use 'async with Session(...)')")
        info = metainfo.info
        try:
            storage = FileStorage(
                info, download_dir, file_priorities=file_priorities, info_hash=metainfo.info_hash
            )
        except ValueError as exc:
            raise StorageError(str(exc)) from None
        store = ResumeStore(info, metainfo.info_hash, storage.directory)
        wanted = storage.wanted_pieces()
        try:
            async with DiskIO(storage, journal=store, executor=self._disk_pool) as disk:
                plan = await asyncio.to_thread(functools.partial(store.plan, storage, full_recheck=recheck))
                await disk.allocate()
                verified = set(plan.verified)
                if plan.recheck:
                    verified |= await disk.check(plan.recheck, progress=progress)
                state = plan.state
                unchanged = state is not None and state.clean_shutdown and not plan.recheck
                if not (unchanged and all(verified.__contains__(i) for i, w in enumerate(wanted) if w)):
                    await store.save(
                        storage,
                        verified,
                        clean=True,
                        peers=state.peers if state else (),
                        uploaded=state.uploaded if state else 0,
                        downloaded=state.downloaded if state else 0,
                    )
        finally:
            store.close()
            await asyncio.to_thread(storage.close)
        wanted_bytes = sum(info.piece_size(i) for i, w in enumerate(wanted) if w)
        done_bytes = sum(info.piece_size(i) for i in verified if wanted[i])
        return CheckResult(
            complete=done_bytes == wanted_bytes,
            done_bytes=done_bytes,
            wanted_bytes=wanted_bytes,
            files_done=file_progress(info, verified.__contains__),
        )

    def park(
        self, info_hash: InfoHash, on_wanted: Callable[[InfoHash], None], *, aliases: Sequence[InfoHash] = ()
    ) -> None:
        """Keep a torrent that is not running reachable: an incoming peer naming it (or
        one of its ``aliases``: a hybrid's truncated v2 hash, BEP 52) calls
        ``on_wanted(info_hash)`` (once), which should add it (:meth:`add_torrent_nowait`)
        for the connection to reach it. Costs a dict entry: no task, no file, no timer."""
        if info_hash not in self._swarms:
            self._dormant[info_hash] = on_wanted
            for alias in aliases:
                self._dormant_aliases[alias] = info_hash

    def unpark(self, info_hash: InfoHash) -> None:
        """Forget a dormant torrent (its peers are refused again)."""
        self._dormant.pop(info_hash, None)
        self._forget_dormant_aliases(info_hash)

    async def announce_stopped(self, metainfo: Metainfo, *, uploaded: int, downloaded: int) -> None:
        """Tell the trackers of a complete torrent that does not run (a dormant seed,
        which announced when it last ran) that it stops: one ``stopped`` announce (BEP 3)
        walking its tiers, under ``stopped_announce_timeout_s``; failures are ignored.

        Raises:
            TorrentError: the session is not running.
        """
        from torrent.engine.announcer import Announcer
        from torrent.engine.tracker_client import AnnounceEvent, AnnounceRequest

        ctx = self._context()

        def request(event: AnnounceEvent) -> AnnounceRequest:
            return AnnounceRequest(
                info_hash=metainfo.info_hash,
                peer_id=self.peer_id,
                port=self._port,
                uploaded=uploaded,
                downloaded=downloaded,
                left=0,
                event=event,
                numwant=0,
                ip=self.settings.announce_ip,
                key=int.from_bytes(self.peer_id[-4:], "big"),
            )

        announcer = Announcer(
            metainfo.announce_list,
            ctx,
            request=request,
            on_peers=lambda _: None,
            info_hashes=metainfo.info_hashes,
        )
        announcer.event = AnnounceEvent.NONE  # it announced ``started`` when it last ran
        try:
            await announcer.stop()
        finally:
            await announcer.aclose()

    def _forget_dormant_aliases(self, info_hash: InfoHash) -> None:
        if self._dormant_aliases:  # hybrids only
            for alias in [a for a, h in self._dormant_aliases.items() if h == info_hash]:
                del self._dormant_aliases[alias]

    async def fetch_metadata(
        self, magnet: Magnet, *, peers: Sequence[PeerAddr] = (), timeout_s: float | None = None
    ) -> Metainfo:
        """Get a magnet link's metadata from its peers (BEP 9); returns the Metainfo, with
        the magnet's ``ws=`` web seeds added to its url-list.

        Without ``timeout_s`` it waits as long as it takes (forever, with no peer that has
        the metadata). Then :meth:`add_torrent` the result. The fetch keeps to the
        session's peer and half-open limits.

        Raises:
            MetadataTimeout: ``timeout_s`` passed; the message says what was seen.
            MetainfoError: the verified ``info`` dict does not validate.
            TorrentError: the session is not running.
        """
        from torrent.engine.metadata_fetch import MetadataFetcher

        fetcher = MetadataFetcher(magnet, self._context())
        fetcher.add_peers(peers)
        self._fetchers[magnet.info_hash] = fetcher
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                meta = await fetcher.run()
        except TimeoutError:
            if not deadline.expired():
                raise
            raise MetadataTimeout(f"no metadata within {timeout_s:g} s: {fetcher.shortfall()}") from None
        finally:
            self._fetchers.pop(magnet.info_hash, None)
        extra = tuple(url for url in magnet.web_seeds if url not in meta.url_list)
        # BEP 19 by way of the magnet's ``ws=``: the torrent gets them as its url-list.
        return dataclasses.replace(meta, url_list=(*meta.url_list, *extra)) if extra else meta

    def _context(self) -> SwarmContext:
        from torrent.engine.host import SwarmContext

        if self._tg is None or self._http is None or self._closing:
            raise TorrentError("the session is not running (use 'async with Session(...)')")
        return SwarmContext(
            settings=self.settings,
            peer_id=self.peer_id,
            port=lambda: self._port,
            http=self._http,
            down_limit=RateLimiter(0, parent=self._down),
            up_limit=RateLimiter(0, parent=self._up),
            half_open=self._half_open,
            peer_slots=self._free_peer_slots,
            clock=self.clock,
            encryption=self._encryption,
            dht=self._dht,
            utp=self._utp_manager(),
            utp_dials=self._utp_dials,
            disk_executor=self._disk_pool,
            addresses=self._addresses,
        )

    async def _run_swarm(self, swarm: Swarm, after: asyncio.Future[Any] | None = None) -> None:
        try:
            if after is not None:
                try:
                    await asyncio.wait((after,))  # its result or error is its owner's
                except asyncio.CancelledError:
                    swarm.storage.close()  # the session closes: ``run`` never opened it
                    raise
            await swarm.run()
        finally:
            self._swarms.pop(swarm.info_hash, None)
            for alias in [a for a, h in self._aliases.items() if h == swarm.info_hash]:
                del self._aliases[alias]
            for service in self._lsd_services:
                for ih in swarm.metainfo.info_hashes:
                    service.forget(ih)

    async def remove_torrent(self, info_hash: InfoHash, *, announce: bool = True) -> None:
        """Stop the torrent (``stopped`` announce unless ``announce`` is False, resume
        state saved) and forget it.

        It may be added again afterwards (to restart it, or with other settings).

        Raises:
            TorrentError: no such torrent in the session.
        """
        torrent = self._torrents.pop(info_hash, None)
        if torrent is None:
            raise TorrentError(f"torrent {info_hash.hex()} is not in the session")
        await torrent.stop(announce=announce)
        self._tasks.pop(info_hash, None)

    @property
    def rate_limiters(self) -> tuple[RateLimiter, RateLimiter]:
        """The session-wide ``(download, upload)`` buckets, above every torrent's unless
        told otherwise (:meth:`Torrent.set_rate_limits`)."""
        return self._down, self._up

    def set_rate_limits(self, *, download_bps: int | None = None, upload_bps: int | None = None) -> None:
        """Change the session-wide rate limits at once (0: unlimited; None: unchanged)."""
        if download_bps is not None:
            self._down.set_rate(download_bps)
        if upload_bps is not None:
            self._up.set_rate(upload_bps)

    def torrents(self) -> list[Torrent]:
        return list(self._torrents.values())

    def statistics(self) -> list[TorrentStats]:
        """One snapshot per torrent, in the order they were added."""
        return [t.statistics() for t in self._torrents.values()]

    @property
    def _encryption(self) -> EncryptionCounters:
        """What the MSE handshakes did (made, with MSE imported, when first needed)."""
        counters = self._encryption_counters
        if counters is None:
            from torrent.engine.mse_stream import EncryptionCounters

            counters = self._encryption_counters = EncryptionCounters()
        return counters

    def encryption_statistics(self) -> EncryptionStats:
        """What the MSE handshakes of every connection did, both ways (a snapshot)."""
        return self._encryption.statistics()

    def _free_peer_slots(self) -> int:
        used = sum(len(s.peers) for s in self._swarms.values()) + sum(
            len(f.peers) for f in self._fetchers.values()
        )
        return self.settings.max_peers_total - used

    # ------------------------------------------------------------------ incoming

    def _incoming_factory(self) -> asyncio.Protocol:
        from torrent.engine.peer import Peer  # with the first incoming connection

        peer = Peer(
            None,
            ("", 0),
            settings=self.settings,
            our_peer_id=self.peer_id,
            down_limit=self._down,
            up_limit=self._up,
            clock=self.clock,
        )
        return _Incoming(
            peer,
            admit=self._admit_pending,
            route=self._route,
            encryption=self.settings.encryption,
            new_stream=self._mse_receiver,
            counters=self._encryption,
        )

    def _mse_receiver(self, peer: Peer, on_outcome: Callable[[Outcome], None]) -> MseStream:
        """The MSE side of an accepted connection, knowing every torrent of the session."""
        from torrent.engine.mse_stream import MseStream, receiver_for

        return MseStream(
            peer,
            receiver_for(
                lambda: [*self._swarms, *self._aliases, *self._dormant, *self._dormant_aliases],
                Encryption(self.settings.encryption),
            ),
            clock=self.clock,
            timeout_s=self.settings.handshake_timeout_s,
            counters=self._encryption,
            on_outcome=on_outcome,
        )

    def _handshake_gate(self) -> HandshakeGate[Peer]:
        s = self.settings
        return HandshakeGate(
            total=s.max_pending_incoming,
            per_ip=s.max_pending_incoming_per_ip,
            timeout_s=s.handshake_timeout_s,
            is_closed=lambda peer: peer.closed,
        )

    def _admit_pending(self, peer: Peer) -> bool:
        """A new incoming connection; False (close it) when its address or the session
        has too many awaiting their handshake (see :class:`HandshakeGate`)."""
        if self._closing:
            return False
        admitted, evicted = self._pending_incoming.admit(peer, peer.addr[0], self.clock.monotonic())
        if evicted is not None:
            evicted.close("handshake too slow while others wait")
        return admitted

    def _route(self, peer: Peer, info_hash: InfoHash) -> Swarm | None:
        key = self._aliases.get(info_hash) or self._dormant_aliases.get(info_hash, info_hash)
        swarm = self._swarms.get(key)
        if swarm is None and key in self._dormant:
            # Its owner adds it now (add_torrent_nowait); the swarm holds this connection
            # until it has read its resume state (Swarm.adopt_incoming).
            self._forget_dormant_aliases(key)
            self._dormant.pop(key)(key)
            swarm = self._swarms.get(key)
        self._pending_incoming.done(peer)
        if swarm is None or not swarm.adopt_incoming(peer):
            return None
        return swarm

    def _expire_pending(self, now: float) -> None:
        """Close incoming connections that sent no handshake in time."""
        for peer in self._pending_incoming.expire(now):
            peer.close("no handshake")

    @property
    def pending_incoming(self) -> int:
        """Incoming connections that have not sent their handshake yet."""
        return len(self._pending_incoming)

    # ------------------------------------------------------------------ timers

    def tick(self) -> None:
        """Once a second: every torrent's timers, and the pending incoming connections."""
        now = self.clock.monotonic()
        self._expire_pending(now)
        for service in self._lsd_services:
            service.tick(now)
        for swarm in list(self._swarms.values()):
            swarm.tick(now)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.tick()

    async def _choke_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.choke_interval_s)
            now = self.clock.monotonic()
            for swarm in list(self._swarms.values()):
                swarm.rechoke(now)


def _mappable(addresses: list[tuple[str, int]]) -> bool:
    """A router could forward to one of these listen addresses (IPv4, not loopback)."""
    return any(":" not in host and not host.startswith("127.") for host, _ in addresses)


def _socknames(server: asyncio.Server) -> list[Any]:
    return [sock.getsockname() for sock in server.sockets]


async def _close_server(server: asyncio.Server) -> None:
    server.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1):
            await server.wait_closed()


class _Incoming(asyncio.Protocol):
    """Accepts one incoming connection and hands it to a :class:`Peer` once routed.

    ``admit(peer)`` may refuse it (too many connections await their handshake): it is
    closed at once. Otherwise the first bytes tell plaintext from MSE (not with
    ``encryption = off``: those go to the peer as they come). A plaintext connection goes
    to the peer as is (``require`` closes it); an MSE one runs through ``new_stream`` and
    reaches the peer once its handshake is done, with the torrent MSE named, which its
    BitTorrent handshake must name too. The peer reads the handshake's info hash and calls
    ``route(peer, info_hash)``, whose swarm starts ``Peer.run_incoming`` in its own task
    group. The session's tick closes connections that never send a handshake.
    """

    def __init__(
        self,
        peer: Peer,
        *,
        admit: Callable[[Peer], bool],
        route: Callable[[Peer, InfoHash], Swarm | None],
        encryption: Encryption,
        new_stream: Callable[[Peer, Callable[[Outcome], None]], MseStream],
        counters: EncryptionCounters,
    ) -> None:
        self._peer = peer
        self._admit = admit
        self._route = route
        self._encryption = encryption
        self._new_stream = new_stream
        self._counters = counters
        self._transport: asyncio.BaseTransport | None = None
        self._first = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = self._peer
        sockname = transport.get_extra_info("peername") or ("", 0)
        peer.addr = (canonical_host(str(sockname[0])), int(sockname[1]))
        peer.connection_made(transport)
        if not self._admit(peer):
            peer.close("too many connections awaiting their handshake")
            return
        self._transport = transport
        if self._encryption == Encryption.OFF:
            self._plaintext(transport, b"")

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        self._first += data
        from torrent.proto.mse import IncomingKind, classify_incoming

        kind = classify_incoming(self._first)
        if kind is IncomingKind.NEED_MORE:
            return
        first, self._first = bytes(self._first), bytearray()
        if kind is IncomingKind.ENCRYPTED:
            self._encrypted(transport, first)
        elif self._encryption == Encryption.REQUIRE:
            self._counters.plaintext_refused += 1
            self._peer.close("plaintext handshake refused: encryption is required")
        else:
            self._plaintext(transport, first)

    def eof_received(self) -> bool | None:
        return None  # closed before it said what it speaks

    def connection_lost(self, exc: Exception | None) -> None:
        self._peer.connection_lost(exc)

    def _plaintext(self, transport: asyncio.BaseTransport, first: bytes) -> None:
        peer = self._peer
        peer.accept(transport, self._router(None))
        transport.set_protocol(peer)
        if first:
            peer.data_received(first)

    def _encrypted(self, transport: asyncio.BaseTransport, first: bytes) -> None:
        peer = self._peer

        from torrent.proto.mse import HandshakeDone

        def on_outcome(outcome: Outcome) -> None:
            if isinstance(outcome, HandshakeDone):
                peer.accept(stream, self._router(outcome.skey))
            else:
                peer.close(str(outcome))

        stream = self._new_stream(peer, on_outcome)
        transport.set_protocol(stream)
        stream.connection_made(transport)
        stream.data_received(first)

    def _router(self, skey: bytes | None) -> Callable[[InfoHash], Swarm | None]:
        peer = self._peer
        route = self._route

        def router(info_hash: InfoHash) -> Swarm | None:
            if skey is not None and info_hash != skey:
                return None  # MSE named another torrent than the BitTorrent handshake does
            return route(peer, info_hash)

        return router
