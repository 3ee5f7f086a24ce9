"""``Session``: the listening socket, every torrent, the timers, global limits.

Usage::

    async with Session(Settings(listen_port=0)) as session:
        torrent = await session.add_torrent(read_metainfo("x.torrent"), "downloads")
        await torrent.wait_complete()

``__aenter__`` binds the listening socket (errors reach the caller; ``session.port``
is then known) and starts the session's task group: one task per torrent
(:meth:`Swarm.run`), a one-second tick (rates, timeouts, keep-alives, seed limits) and
the choker (every ``choke_interval_s``, optimistic slot every
``optimistic_interval_s``, BEP 3). ``__aexit__`` cancels all of it; each swarm's
``finally`` sends ``stopped`` and saves its resume state.

Incoming connections are routed by the info hash of their handshake; an unknown hash
is dropped. Peer ids are ``-PT0100-`` plus 12 random bytes (BEP 20 style).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp

from torrent.config import PEER_ID_PREFIX, Settings
from torrent.disk.storage import FileStorage
from torrent.engine.peer import Peer, PeerAddr, RateLimiter
from torrent.engine.swarm import MetadataFetcher, Swarm, SwarmContext, TorrentEvent, TorrentStats
from torrent.errors import StorageError, TorrentError
from torrent.proto.magnet import Magnet
from torrent.proto.metainfo import Metainfo
from torrent.types import InfoHash, PeerId


def make_peer_id() -> PeerId:
    """``-PT0100-`` followed by 12 random bytes."""
    return PeerId(PEER_ID_PREFIX + secrets.token_bytes(20 - len(PEER_ID_PREFIX)))


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
    def swarm(self) -> Swarm:
        return self._swarm

    async def wait_complete(self) -> None:
        """Wait until every selected file is downloaded and verified.

        Raises:
            StorageError: the torrent stopped on a disk error.
            TorrentError: it was stopped before completing.
        """
        await self._swarm.wait_complete()

    async def wait_checked(self) -> None:
        """Wait until the resume state or the hash check told what is on disk (or it stopped)."""
        await self._swarm.wait_checked()

    async def wait_finished(self) -> None:
        """Wait until seeding is over (ratio or time limit; forever without one)."""
        await self._swarm.wait_finished()

    def statistics(self) -> TorrentStats:
        return self._swarm.statistics()

    def events(self) -> AsyncIterator[TorrentEvent]:
        """An async iterator of this torrent's events from now on."""
        return self._swarm.events()

    def add_peers(self, addrs: Sequence[PeerAddr]) -> None:
        """Connect to these addresses too (besides the trackers' peers)."""
        self._swarm.add_peers(addrs)

    async def stop(self) -> None:
        """Stop the torrent: ``stopped`` announce, resume state saved."""
        self._swarm.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._task)


class Session:
    """See the module docstring.

    Args:
        settings: every knob; defaults are documented in :mod:`torrent.config`.
        peer_id: our 20-byte id; default ``-PT0100-`` plus random bytes.
    """

    def __init__(self, settings: Settings | None = None, *, peer_id: PeerId | None = None) -> None:
        self.settings = (settings or Settings()).validate()
        self.peer_id = peer_id or make_peer_id()
        self._swarms: dict[InfoHash, Swarm] = {}
        self._torrents: dict[InfoHash, Torrent] = {}
        self._server: asyncio.Server | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._http: aiohttp.ClientSession | None = None
        self._port = 0
        self._down = RateLimiter(self.settings.max_download_bps)
        self._up = RateLimiter(self.settings.max_upload_bps)
        self._half_open: asyncio.Semaphore | None = None
        self._pending_incoming: set[Peer] = set()
        self._timer_tasks: list[asyncio.Task[None]] = []
        self._fetchers: dict[InfoHash, MetadataFetcher] = {}

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        """The listening port (known once the session is entered)."""
        return self._port

    async def __aenter__(self) -> Session:
        loop = asyncio.get_running_loop()
        s = self.settings
        self._half_open = asyncio.Semaphore(s.half_open_limit)
        self._server = await loop.create_server(
            self._incoming_factory, host=s.listen_host, port=s.listen_port, reuse_address=True
        )
        self._port = self._server.sockets[0].getsockname()[1]
        self._http = aiohttp.ClientSession(
            headers={"User-Agent": "pytorrent/0.1.0"},
            connector=aiohttp.TCPConnector(limit=20, force_close=False),
        )
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._timer_tasks = [self._tg.create_task(self._tick_loop()), self._tg.create_task(self._choke_loop())]
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool | None:
        assert self._tg is not None
        if self._server is not None:
            self._server.close()
        for peer in list(self._pending_incoming):
            peer.close("session closing")
        # Ask each swarm to stop cleanly (stopped announce, resume), then cancel timers.
        for swarm in self._swarms.values():
            swarm.stop()
        pending = [t._task for t in self._torrents.values() if not t._task.done()]
        if pending:
            # Give each swarm time to finish in-flight writes, announce ``stopped`` and
            # save its resume state; then cancel whatever is left.
            await asyncio.wait(pending, timeout=self.settings.stopped_announce_timeout_s + 3)
        for task in [*pending, *self._timer_tasks]:
            task.cancel()
        try:
            await self._tg.__aexit__(exc_type, exc, tb)
        finally:
            self._tg = None
            if self._http is not None:
                await self._http.close()
            if self._server is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1):
                        await self._server.wait_closed()
        return None

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
    ) -> Torrent:
        """Start downloading (or seeding) ``metainfo`` into ``download_dir``.

        Args:
            content_path: where the content already is, when not ``download_dir/<name>``.
            file_priorities: one int per file of the torrent; 0 skips it.
            sequential: pick pieces in order instead of rarest first.
            seed: keep seeding once complete (until the seed ratio/time limit).
            peers: addresses to connect to besides the trackers' peers.

        Raises:
            TorrentError: the torrent is already in the session.
        """
        if self._tg is None or self._http is None or self._half_open is None:
            raise TorrentError("the session is not running (use 'async with Session(...)')")
        if metainfo.info_hash in self._swarms:
            raise TorrentError(f"torrent {metainfo.info_hash.hex()} is already in the session")
        try:
            storage = FileStorage(
                metainfo.info,
                download_dir,
                content_path=content_path,
                file_priorities=file_priorities,
                info_hash=metainfo.info_hash,
            )
        except ValueError as exc:
            raise StorageError(str(exc)) from None
        ctx = self._context()
        swarm = Swarm(metainfo, storage, ctx, sequential=sequential, seed=seed, initial_peers=peers)
        self._swarms[metainfo.info_hash] = swarm
        task = self._tg.create_task(self._run_swarm(swarm))
        torrent = Torrent(swarm, task)
        self._torrents[metainfo.info_hash] = torrent
        return torrent

    async def fetch_metadata(self, magnet: Magnet, *, peers: Sequence[PeerAddr] = ()) -> Metainfo:
        """Get a magnet link's metadata from its peers (BEP 9); returns the Metainfo.

        Wrap it in ``asyncio.timeout``: with no peer that has the metadata it waits
        forever. Then :meth:`add_torrent` the result.

        Raises:
            MetainfoError: the verified ``info`` dict does not validate.
        """
        if self._http is None or self._half_open is None:
            raise TorrentError("the session is not running (use 'async with Session(...)')")
        fetcher = MetadataFetcher(magnet, self._context())
        fetcher.add_peers(peers)
        self._fetchers[magnet.info_hash] = fetcher
        try:
            return await fetcher.run()
        finally:
            self._fetchers.pop(magnet.info_hash, None)

    def _context(self) -> SwarmContext:
        assert self._http is not None and self._half_open is not None
        return SwarmContext(
            settings=self.settings,
            peer_id=self.peer_id,
            port=lambda: self._port,
            http=self._http,
            down_limit=self._down,
            up_limit=self._up,
            half_open=self._half_open,
            peer_slots=self._free_peer_slots,
        )

    async def _run_swarm(self, swarm: Swarm) -> None:
        try:
            await swarm.run()
        finally:
            self._swarms.pop(swarm.info_hash, None)

    def torrents(self) -> list[Torrent]:
        return list(self._torrents.values())

    def statistics(self) -> list[TorrentStats]:
        """One snapshot per torrent, in the order they were added."""
        return [t.statistics() for t in self._torrents.values()]

    def _free_peer_slots(self) -> int:
        used = sum(len(s.peers) for s in self._swarms.values())
        return self.settings.max_peers_total - used

    # ------------------------------------------------------------------ incoming

    def _incoming_factory(self) -> asyncio.Protocol:
        peer = Peer(
            None,
            ("", 0),
            settings=self.settings,
            our_peer_id=self.peer_id,
            down_limit=self._down,
            up_limit=self._up,
        )
        return _Incoming(self, peer)

    def _route(self, peer: Peer, info_hash: InfoHash) -> Swarm | None:
        swarm = self._swarms.get(info_hash)
        self._pending_incoming.discard(peer)
        if swarm is None or self._free_peer_slots() <= 0:
            return None
        if not swarm.adopt_incoming(peer):
            return None
        return swarm

    # ------------------------------------------------------------------ timers

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for swarm in list(self._swarms.values()):
                swarm.tick(now)

    async def _choke_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.choke_interval_s)
            now = time.monotonic()
            for swarm in list(self._swarms.values()):
                swarm.rechoke(now)


class _Incoming(asyncio.Protocol):
    """Accepts one incoming connection and hands it to a :class:`Peer` once routed.

    The peer reads the handshake's info hash, asks the session for the swarm, and the
    swarm starts ``Peer.run_incoming`` in its own task group. Connections that never
    send a handshake are closed after ``handshake_timeout_s``.
    """

    def __init__(self, session: Session, peer: Peer) -> None:
        self._session = session
        self._peer = peer
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sockname = transport.get_extra_info("peername") or ("", 0)
        self._peer.addr = (str(sockname[0]), int(sockname[1]))
        self._peer.connection_made(transport)
        session = self._session

        def route(info_hash: InfoHash) -> Swarm | None:
            return session._route(self._peer, info_hash)

        self._peer.accept(transport, route)
        session._pending_incoming.add(self._peer)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(session.settings.handshake_timeout_s, self._timeout)
        transport.set_protocol(self._peer)

    def _timeout(self) -> None:
        if self._peer.host is None:
            self._session._pending_incoming.discard(self._peer)
            self._peer.close("no handshake")
