"""Getting a magnet link's ``info`` dict from peers (BEP 9 over BEP 10).

The fetch announces the info hash to the magnet's trackers (``tr``) and connects to the
peers they and ``x.pe`` name, through the same :class:`~torrent.engine.announcer.Announcer`
and :class:`~torrent.engine.connector.PeerConnector` as a torrent, so the session's
half-open and peer limits hold for it too. Every peer whose extension handshake offers
``ut_metadata`` is asked for 16 KiB pieces; ``ut_metadata.MetadataAssembler`` decides
who is asked for what, checks the SHA-1 against the info hash and bans liars. The
connections are dropped once the metadata is verified; the torrent then starts as from
a .torrent file (a :class:`~torrent.engine.swarm.Swarm`), which connects again.

With the session's DHT on, a :class:`~torrent.engine.dht_source.DhtSource` looks the
info hash up too, so a magnet link with neither ``tr`` nor ``x.pe`` works through the DHT
alone. A hybrid link (``btih`` and ``btmh``) is announced to the trackers and looked up
in the DHT under both of its hashes, as the torrent will be. (Whether the torrent is
private is only known once the metadata is in; the swarm that follows keeps a private
torrent off the DHT.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

from torrent.engine.announcer import Announcer
from torrent.engine.connector import PeerConnector
from torrent.engine.dht_source import DhtSource
from torrent.engine.host import PeerHostBase, SwarmContext
from torrent.engine.peer import Peer, PeerAddr
from torrent.engine.peer_list import PeerList
from torrent.engine.tracker_client import AnnounceEvent, AnnounceRequest
from torrent.errors import MetainfoError, RemoteProtocolError
from torrent.proto import ut_metadata, wire
from torrent.proto.magnet import Magnet
from torrent.proto.metainfo import Metainfo
from torrent.types import InfoHash

__all__ = ["MetadataFetcher"]

#: Re-announce at least this often while no peer has sent the metadata.
REANNOUNCE_S = 5.0


class MetadataFetcher(PeerHostBase):
    """Fetches one magnet link's metadata; see the module docstring."""

    def __init__(self, magnet: Magnet, ctx: SwarmContext) -> None:
        super().__init__()
        self.magnet = magnet
        self.info_hash: InfoHash = magnet.info_hash
        self.name = magnet.name or magnet.info_hash.hex()
        self.ctx = ctx
        self.settings = ctx.settings
        self._clock = ctx.clock
        self.asm = ut_metadata.MetadataAssembler(magnet.info_hash, info_hash_v2=magnet.info_hash_v2)
        self.peer_list = PeerList(self.settings)
        self.connector = PeerConnector(self, ctx, self.peer_list)
        self.peers: dict[PeerAddr, Peer] = self.connector.peers
        self.announcer = Announcer(
            [[url] for url in magnet.trackers],
            ctx,
            request=self._announce_request,
            on_peers=self.add_peers,
            max_interval_s=REANNOUNCE_S,
            info_hashes=magnet.info_hashes,
        )
        self.dht_source: DhtSource | None = None
        if ctx.dht is not None:
            self.dht_source = DhtSource(
                ctx.dht,
                magnet.info_hashes,
                ctx,
                on_peers=self.add_peers,
                known_peers=lambda: len(self.peer_list),
                announce=False,
            )
        self._done = asyncio.Event()
        #: Extension handshakes seen, and those that offered ut_metadata (for shortfall()).
        self._handshakes = self._offered = 0
        for addr in magnet.peers:
            self.peer_list.add(addr)

    @property
    def tracker_message(self) -> str:
        return self.announcer.message

    async def run(self) -> Metainfo:
        """Fetch and verify the metadata; returns the torrent's :class:`Metainfo`.

        Raises:
            MetainfoError: the verified ``info`` dict does not validate.
        """
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tasks = [
                    tg.create_task(self.announcer.run()),
                    tg.create_task(self.connector.run()),
                    tg.create_task(self._tick()),
                ]
                if self.dht_source is not None:
                    tasks.append(tg.create_task(self.dht_source.run()))
                await self._done.wait()
                self.halt()
                for t in tasks:
                    t.cancel()
                self.connector.close_all("metadata received")
        finally:
            self.halt()
            self._tg = None
            await self.announcer.aclose()
        if self.asm.conflict is not None:
            raise MetainfoError(self.asm.conflict, "magnet.xt")
        assert self.asm.result is not None
        return ut_metadata.metainfo_from_info(self.asm.result, self.magnet.trackers)

    def shortfall(self) -> str:
        """Why there is no metadata yet, in a few words (for a timeout's message)."""
        asm = self.asm
        if asm.hash_failures:
            copies = "copy" if asm.hash_failures == 1 else "copies"
            banned = f"{asm.banned_count} peer{'' if asm.banned_count == 1 else 's'} banned"
            return f"{asm.hash_failures} {copies} of the metadata failed the hash check ({banned})"
        if self._offered:
            return f"{self._offered} peer(s) offered the metadata but none sent all of it"
        if self._handshakes:
            return f"{self._handshakes} peer(s) connected, none offered the metadata (ut_metadata)"
        tracker = self.announcer.message
        return "no peer reachable" + (f" (tracker: {tracker})" if tracker else "")

    def statistics(self) -> tuple[int, int, int]:
        """(metadata pieces received, pieces in all, peers connected)."""
        got, total = self.asm.progress()
        return got, total, len(self.peers)

    def _announce_request(self, event: AnnounceEvent) -> AnnounceRequest:
        return AnnounceRequest(
            info_hash=self.info_hash, peer_id=self.ctx.peer_id, port=self.ctx.port(),
            left=1, event=event, numwant=self.settings.numwant if event is not AnnounceEvent.STOPPED else 0,
        )  # fmt: skip

    def add_peers(self, addrs: Sequence[PeerAddr]) -> None:
        self.connector.add(list(addrs))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = self._clock.monotonic()
            self.asm.tick(now)
            for peer in list(self.peers.values()):
                peer.tick(now)
                self._request(peer)
            self._drop_banned()

    def _request(self, peer: Peer) -> None:
        if peer.closed or peer.proto is None or ut_metadata.EXTENSION_NAME not in peer.proto.peer_extensions:
            return
        now = self._clock.monotonic()
        while (piece := self.asm.next_request(peer.addr, now)) is not None:
            msg = ut_metadata.encode(ut_metadata.MetadataRequest(piece))
            peer.send(wire.ExtendedMessage(ut_metadata.EXTENSION_NAME, msg))

    def _drop_banned(self) -> None:
        for key in self.asm.take_banned():
            addr = cast(PeerAddr, key)
            self.peer_list.ban(addr, "sent metadata that does not match the info hash")
            peer = self.peers.get(addr)
            if peer is not None:
                peer.close("sent metadata that does not match the info hash")

    # PeerHost: only the handshakes and ut_metadata matter before the metadata is known.

    def on_peer_ready(self, peer: Peer) -> None:
        # Failures are cleared on a useful close (PeerConnector.on_closed), not here.
        if peer.proto is not None and peer.proto.fast_extension:
            peer.send(wire.HaveNone())  # BEP 6: one of the piece-set messages comes first

    def extension_fields(self) -> dict[str, Any]:
        return {"p": self.ctx.port()}

    def on_extension_handshake(self, peer: Peer, ev: wire.ExtensionHandshake) -> None:
        self._handshakes += 1
        if ut_metadata.EXTENSION_NAME not in ev.extensions:
            return
        self._offered += 1
        if self.asm.add_peer(peer.addr, ev.metadata_size):
            self._request(peer)

    def on_metadata_message(self, peer: Peer, payload: bytes) -> None:
        try:
            self.asm.on_message(peer.addr, ut_metadata.decode(payload), self._clock.monotonic())
        except RemoteProtocolError as exc:
            self.asm.remove_peer(peer.addr)
            peer.close(str(exc))
            return
        self._drop_banned()
        if self.asm.done or self.asm.conflict is not None:
            self._done.set()
        else:
            self._request(peer)

    def on_peer_closed(self, peer: Peer) -> None:
        self.asm.remove_peer(peer.addr)
        self.connector.on_closed(peer, failed=peer.peer_id is None)
