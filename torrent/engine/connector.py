"""Peer admission for one torrent: dialling known peers and adopting incoming ones.

Shared by :class:`~torrent.engine.swarm.Swarm` and
:class:`~torrent.engine.metadata_fetch.MetadataFetcher`, so both keep the same limits:

* at most ``max_peers_per_torrent`` connections for the torrent, and no more than the
  session's free slots (``max_peers_total`` across every torrent and magnet fetch);
* at most ``half_open_limit`` outgoing attempts in flight, session-wide (a slot is taken
  before the dial and given back once TCP is up or the attempt failed);
* one connection per peer id, never a banned address, nothing once the host is stopping.

Outgoing connections are plain TCP with ``encryption = off`` and MSE otherwise
(:class:`~torrent.engine.mse_stream.MseConnector`: ``prefer`` falls back to plaintext
when the peer refuses the encrypted handshake, ``require`` does not). With uTP on, the
stream under either is dialled uTP first, then TCP
(:class:`~torrent.engine.utp_dial.UtpFirstConnector`).

The loop sleeps until woken (:meth:`PeerConnector.wake`: new addresses, a closed peer) or
until the next peer's back-off ends (:meth:`PeerList.next_wakeup`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from torrent.config import Encryption
from torrent.engine.host import PeerHostBase, SwarmContext
from torrent.engine.mse_stream import MseConnector
from torrent.engine.peer import Peer, PeerAddr
from torrent.engine.peer_list import PeerList
from torrent.engine.transport import Connector, tcp_connect
from torrent.engine.utp_dial import UtpFirstConnector

__all__ = ["PeerConnector"]


class PeerConnector:
    """Dials and admits the peers of one host.

    Args:
        host: the torrent (or magnet fetch) the peers belong to; its ``spawn`` runs them.
        ctx: the session's limits and identity.
        peer_list: where addresses come from and connection outcomes go.
        may_dial: False while the host wants no new outgoing connection (e.g. a
            finished torrent); incoming ones are still admitted.
    """

    def __init__(
        self,
        host: PeerHostBase,
        ctx: SwarmContext,
        peer_list: PeerList,
        *,
        may_dial: Callable[[], bool] = lambda: True,
    ) -> None:
        self._host = host
        self._ctx = ctx
        self._settings = ctx.settings
        self.peer_list = peer_list
        self._may_dial = may_dial
        #: Every connection of the host, outgoing and incoming, by address.
        self.peers: dict[PeerAddr, Peer] = {}
        self._wake = asyncio.Event()
        self._connect: Connector | None = None

    def connect(self) -> Connector:
        """How this host dials: plain or MSE first (``Settings.encryption``), over uTP
        first when the session speaks it, else TCP."""
        if self._connect is None:
            ctx = self._ctx
            raw: Connector = tcp_connect
            if ctx.utp is not None:
                raw = UtpFirstConnector(
                    ctx.utp,
                    utp_timeout_s=self._settings.utp_connect_timeout_s,
                    budget_s=self._settings.connect_timeout_s,
                    counters=ctx.utp_dials,
                )
            self._connect = (
                raw
                if self._settings.encryption == Encryption.OFF
                else MseConnector(
                    self._host.info_hash,
                    encryption=Encryption(self._settings.encryption),
                    clock=ctx.clock,
                    timeout_s=self._settings.handshake_timeout_s,
                    counters=ctx.encryption,
                    fallback=raw,
                    dial=raw,
                )
            )
        return self._connect

    def reconfigure(self) -> None:
        """The session changed its settings or its uTP socket (``ctx``): dials from now on
        follow them; those in flight finish as they began."""
        self._settings = self._ctx.settings
        self._connect = None

    def room(self) -> int:
        """Connections the torrent may still open under its own and the session's limit."""
        return min(self._settings.max_peers_per_torrent - len(self.peers), self._ctx.peer_slots())

    def wake(self) -> None:
        """Look at the peer list again (new addresses, a slot freed)."""
        self._wake.set()

    def add(self, addrs: list[PeerAddr] | tuple[PeerAddr, ...]) -> None:
        """Learn addresses (a tracker, the user, the resume state) and dial them soon."""
        for addr in addrs:
            self.peer_list.add(addr)
        self._wake.set()

    async def run(self) -> None:
        """Dial candidates while there is room; forever (cancelled by the owner)."""
        clock = self._ctx.clock
        while True:
            self._wake.clear()
            if self._may_dial():
                await self._dial_candidates()
            wake = self.peer_list.next_wakeup(clock.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wake):
                    await self._wake.wait()

    async def _dial_candidates(self) -> None:
        room = self.room()
        if room <= 0:
            return
        connected_ids = {p.peer_id for p in self.peers.values() if p.peer_id is not None}
        for kp in self.peer_list.candidates(self._ctx.clock.monotonic(), room):
            if kp.addr in self.peers or (kp.peer_id is not None and kp.peer_id in connected_ids):
                continue
            await self._ctx.half_open.acquire()
            if self._host.stopping or self.room() <= 0:
                self._ctx.half_open.release()
                return
            peer = self._new_peer(kp.addr)
            if not self._host.spawn(self._run_outgoing(peer)):
                self._ctx.half_open.release()
                return
            kp.connected = True
            self.peers[kp.addr] = peer

    def _new_peer(self, addr: PeerAddr) -> Peer:
        ctx = self._ctx
        return Peer(
            self._host,
            addr,
            settings=self._settings,
            our_peer_id=ctx.peer_id,
            down_limit=ctx.down_limit,
            up_limit=ctx.up_limit,
            clock=ctx.clock,
            connect=self.connect(),
        )

    async def _run_outgoing(self, peer: Peer) -> None:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._ctx.half_open.release()

        peer.on_connected = release
        try:
            await peer.run_outgoing()
        finally:
            release()

    def adopt_incoming(self, peer: Peer) -> bool:
        """An incoming connection routed to this host; False when it is refused."""
        if self._host.stopping or self.peer_list.is_banned(peer.addr) or peer.addr in self.peers:
            return False
        if self.room() <= 0:
            return False
        if not self._host.spawn(peer.run_incoming()):
            return False
        self.peers[peer.addr] = peer
        return True

    def on_closed(self, peer: Peer, *, failed: bool = False) -> str:
        """``peer`` is gone: a failed attempt backs its address off before the next try.

        A failure is what the owner says (``failed``), a connection that never finished
        its handshake, a protocol violation, or one that ended within
        ``short_connection_s`` without carrying payload; anything else clears the
        address's failures. Returns the ban reason when this close got the address
        banned (its ``max_violations``-th violation), else "".
        """
        if self.peers.get(peer.addr) is peer:
            del self.peers[peer.addr]
        banned = ""
        kp = self.peer_list.get(peer.addr)
        if kp is not None:
            kp.connected = False
            now = self._ctx.clock.monotonic()
            violation = peer.violation if peer.peer_id is not None else ""
            useful = (
                peer.down.total + peer.up.total > 0
                or now - peer.connected_at >= self._settings.short_connection_s
            )
            if failed or violation or peer.peer_id is None or not useful:
                if self.peer_list.failed(peer.addr, now, violation=violation):
                    banned = kp.ban_reason
            else:
                self.peer_list.succeeded(peer.addr)
        self._wake.set()
        return banned

    def close_all(self, reason: str) -> None:
        for peer in list(self.peers.values()):
            peer.close(reason)
