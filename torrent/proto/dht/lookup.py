"""Iterative Kademlia lookups for find_node and get_peers (BEP 5).

A :class:`Lookup` keeps the candidates it has heard of, sorted by XOR distance to the
target, and says which to query next; it never sends anything itself.

Rules:

1. At most ``alpha`` queries are *pending* at once. A query that has not been answered
   after ``slow_s`` stops counting against ``alpha`` (the lookup moves on) but an answer
   arriving later is still used; after ``timeout_s`` it has failed.
2. The next queries go to the closest candidates not yet asked.
3. The lookup has converged when each of the ``k`` closest candidates that did not fail
   has answered: nothing closer is left to ask and nothing closer is in flight.
4. Candidates are bounded (``max_candidates``): the farthest unasked ones are dropped.
5. Seeds may come with no id (bootstrap routers known by address only): they are asked
   first, and take their id from their answer.

get_peers answers carry a ``token`` per node (kept for announce_peer) and ``values``
(peers, collected). ``hops`` is the depth at which the closest answering node was found
(a seed is depth 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from torrent.proto.dht.krpc import Address, NodeInfo

ALPHA: Final = 3  # BEP 5 / Kademlia parallelism
SLOW_S: Final = 1.0
TIMEOUT_S: Final = 4.0
MAX_CANDIDATES: Final = 128
MAX_PEERS: Final = 2000

NEW, ASKED, ANSWERED, FAILED = "new", "asked", "answered", "failed"


@dataclass(slots=True)
class Candidate:
    address: Address
    id: bytes | None
    distance: int  # -1 while the id is unknown (asked first)
    depth: int
    state: str = NEW
    sent_at: float = 0.0
    slow: bool = False  # asked more than slow_s ago: no longer holds a slot
    token: bytes | None = None


class Lookup:
    """One iterative lookup of ``target``.

    Args:
        target: the 20-byte id or info hash looked for.
        get_peers: ask get_peers (collect tokens and peers) rather than find_node.
        seeds: where to start: the closest nodes our table knows, and/or bootstrap
            addresses (``NodeInfo`` with an empty id).
    """

    def __init__(
        self,
        target: bytes,
        seeds: list[NodeInfo],
        now: float,
        *,
        get_peers: bool = False,
        k: int = 8,
        alpha: int = ALPHA,
        slow_s: float = SLOW_S,
        timeout_s: float = TIMEOUT_S,
        max_candidates: int = MAX_CANDIDATES,
    ) -> None:
        self.target = target
        self.target_int = int.from_bytes(target, "big")
        self.get_peers = get_peers
        self.k = k
        self.alpha = alpha
        self.slow_s = slow_s
        self.timeout_s = timeout_s
        self.max_candidates = max_candidates
        self.started_at = now
        self.finished_at: float | None = None
        self.queries_sent = 0
        self.peers: dict[Address, None] = {}
        self._candidates: dict[Address, Candidate] = {}
        for node in seeds:
            self._add(node, depth=1)

    # -- the caller's side --

    def next_queries(self, now: float) -> list[Candidate]:
        """Candidates to query now (marked asked); empty when ``alpha`` are pending or none is left."""
        if self.finished_at is not None:
            return []
        pending = sum(
            1
            for c in self._candidates.values()
            if c.state == ASKED and not c.slow and now < c.sent_at + self.slow_s
        )
        room = self.alpha - pending
        out: list[Candidate] = []
        if room <= 0:
            return out
        live = 0
        for c in self._ordered():
            if c.state == FAILED:
                continue
            live += 1
            if live > self.k:
                break  # rule 3: only the k closest live candidates are worth asking
            if c.state == NEW:
                c.state = ASKED
                c.sent_at = now
                out.append(c)
                self.queries_sent += 1
                if len(out) >= room:
                    break
        return out

    def add_seed(self, node: NodeInfo) -> None:
        """Add a starting candidate (depth 1) after the lookup was made."""
        self._add(node, depth=1)

    def on_response(
        self,
        address: Address,
        node_id: bytes,
        nodes: tuple[NodeInfo, ...] | list[NodeInfo],
        now: float,
        *,
        token: bytes | None = None,
        values: tuple[Address, ...] = (),
    ) -> None:
        """``address`` answered with ``nodes`` (and, for get_peers, ``token`` and ``values``)."""
        c = self._candidates.get(address)
        if c is None or c.state not in (ASKED, FAILED):
            return
        if c.id is None:
            c.id = node_id
            c.distance = int.from_bytes(node_id, "big") ^ self.target_int
        elif c.id != node_id:
            c.state = FAILED  # it changed its id under us: not the node we were told of
            self.check_done(now)
            return
        c.state = ANSWERED
        c.token = token
        for peer in values:
            if len(self.peers) < MAX_PEERS:
                self.peers[peer] = None
        for node in nodes:
            self._add(node, depth=c.depth + 1)
        self.check_done(now)

    def on_failure(self, address: Address, now: float) -> None:
        """The query to ``address`` timed out or was answered with an error."""
        c = self._candidates.get(address)
        if c is not None and c.state == ASKED:
            c.state = FAILED
            self.check_done(now)

    def tick(self, now: float) -> list[Address]:
        """Mark queries older than ``slow_s`` slow and fail those older than ``timeout_s``.

        Returns:
            the addresses whose queries failed now.
        """
        # ``sent_at + limit``, as next_deadline says it: ``now - sent_at >= limit`` can stay
        # false at that very time (float rounding), and a caller ticking at the deadline it
        # was given would never see the query fail.
        for c in self._candidates.values():
            if c.state == ASKED and now >= c.sent_at + self.slow_s:
                c.slow = True
        late = [
            c for c in self._candidates.values() if c.state == ASKED and now >= c.sent_at + self.timeout_s
        ]
        for c in late:
            c.state = FAILED
        if late:
            self.check_done(now)
        return [c.address for c in late]

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (a query going slow, or late)."""
        times = []
        for c in self._candidates.values():
            if c.state == ASKED:
                times.append(c.sent_at + (self.timeout_s if c.slow else self.slow_s))
        return min(times) if times else None

    @property
    def done(self) -> bool:
        return self.finished_at is not None

    def closest(self) -> list[tuple[NodeInfo, bytes | None]]:
        """The (up to) k closest nodes that answered, with their tokens; nearest first."""
        out = []
        for c in self._ordered():
            if c.state == ANSWERED and c.id is not None:
                out.append((NodeInfo(c.id, *c.address), c.token))
                if len(out) >= self.k:
                    break
        return out

    @property
    def hops(self) -> int:
        best = self.closest()
        return self._candidates[best[0][0].address].depth if best else 0

    # -- internals --

    def _ordered(self) -> list[Candidate]:
        return sorted(self._candidates.values(), key=lambda c: c.distance)

    def _add(self, node: NodeInfo, depth: int) -> None:
        if node.address in self._candidates:
            return
        dist = int.from_bytes(node.id, "big") ^ self.target_int if node.id else -1
        self._candidates[node.address] = Candidate(node.address, node.id or None, dist, depth)
        if len(self._candidates) > self.max_candidates:
            # drop the farthest candidate we have not asked yet
            for c in reversed(self._ordered()):
                if c.state == NEW:
                    del self._candidates[c.address]
                    break

    def check_done(self, now: float) -> None:
        """Finish the lookup if it has converged (rule 3) or has nothing left to ask."""
        if self.finished_at is not None:
            return
        live = 0
        for c in self._ordered():
            if c.state == FAILED:
                continue
            if c.state in (NEW, ASKED):
                return
            live += 1
            if live >= self.k:
                break
        self.finished_at = now
