"""Peers of one torrent from the DHT: the DHT's twin of :class:`~torrent.engine.announcer.Announcer`.

A :class:`DhtSource` runs next to a torrent's tracker announcer. Once the session's node
has joined the DHT it runs a get_peers lookup for the info hash, announces our listen
port to the closest nodes that answered (BEP 5; a magnet fetch only looks), and hands
the peers found to the same ``on_peers`` callback as the trackers' peers: they go
through the torrent's peer list and connector with the same admission rules. It looks
again every ``dht_announce_interval_s`` (15 minutes), or every ``dht_retry_interval_s``
while the torrent knows fewer than ``dht_few_peers`` peers.

A torrent named by two hashes (a BEP 52 hybrid: its v1 hash and its v2 hash truncated
to 20 bytes) is looked up and announced under both in each round, at once, as libtorrent
does: a peer that knows either finds us, and the peers found under either go to the
same torrent.

A private torrent (BEP 27) never gets a source: the swarm does not create one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from torrent.engine.dht_node import DhtNode
from torrent.engine.host import SwarmContext
from torrent.engine.peer import PeerAddr
from torrent.proto.dht.node import LookupDone
from torrent.types import InfoHash

__all__ = ["DhtSource"]

log = logging.getLogger(__name__)

#: Seconds the first lookup waits for the node to join; after that it looks with what
#: the routing table holds (a lookup with no node to ask just finds nothing).
JOIN_WAIT_S = 30.0
#: Distinct peer addresses remembered for the "found through the DHT" count.
MAX_REMEMBERED = 10_000


class DhtSource:
    """Looks up (and announces) one torrent on the DHT; see the module docstring.

    Args:
        node: the session's DHT node.
        info_hashes: every hash the torrent is known by (one, or a hybrid's two).
        ctx: the session's settings and listen port.
        on_peers: receives the addresses a lookup found.
        known_peers: how many peers the torrent knows now (few: look again sooner).
        announce: announce our port too (False for a magnet fetch: it has nothing to give).
    """

    def __init__(
        self,
        node: DhtNode,
        info_hashes: Sequence[InfoHash],
        ctx: SwarmContext,
        *,
        on_peers: Callable[[list[PeerAddr]], None],
        known_peers: Callable[[], int],
        announce: bool = True,
    ) -> None:
        self._node = node
        self._info_hashes = tuple(dict.fromkeys(info_hashes))
        self._ctx = ctx
        self._on_peers = on_peers
        self._known_peers = known_peers
        self._announce = announce
        self._found: set[PeerAddr] = set()
        #: Lookups finished, and announce_peer queries the nodes accepted in all.
        self.lookups = 0
        self.announced = 0

    @property
    def node(self) -> DhtNode:
        """The DHT node this source asks."""
        return self._node

    @property
    def peers_found(self) -> int:
        """Distinct peer addresses the DHT gave this torrent (bounded count)."""
        return len(self._found)

    async def run(self) -> None:
        """Look up until cancelled; returns when the node is closed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(JOIN_WAIT_S):
                await self._node.wait_bootstrapped()
        s = self._ctx.settings
        while True:
            if len(self._info_hashes) == 1:
                results = [await self._look(self._info_hashes[0])]
            else:
                async with asyncio.TaskGroup() as tg:
                    tasks = [tg.create_task(self._look(h)) for h in self._info_hashes]
                results = [t.result() for t in tasks]
            if any(done is None for done in results):
                return  # the session closed its node
            self.lookups += len(results)
            peers: list[PeerAddr] = []
            for h, done in zip(self._info_hashes, results, strict=True):
                assert done is not None
                self.announced += done.announced
                found = [p for p in done.peers if p[1]]
                log.debug(
                    "DHT lookup %s: %d peers, %d hops, announced to %d",
                    h.hex(), len(found), done.hops, done.announced,
                )  # fmt: skip
                peers.extend(found)
            peers = list(dict.fromkeys(peers))
            for p in peers:
                if len(self._found) < MAX_REMEMBERED:
                    self._found.add(p)
            if peers:
                self._on_peers(peers)
            few = self._known_peers() < s.dht_few_peers
            await asyncio.sleep(s.dht_retry_interval_s if few else s.dht_announce_interval_s)

    async def _look(self, info_hash: InfoHash) -> LookupDone | None:
        """One lookup (and announce) of ``info_hash``; None when the node was closed."""
        try:
            if self._announce:
                return await self._node.announce(info_hash, self._ctx.port())
            return await self._node.lookup_peers(info_hash)
        except ConnectionAbortedError:
            return None
