"""What a DHT node keeps for others (BEP 5): announced peers, write tokens, per-IP rate limits.

* :class:`PeerStore` holds the peers announced to us, each for ``peer_ttl_s`` after its
  last announce, within two hard bounds (peers in all, info hashes): past a bound the
  oldest announce goes first, so a flood can only push out old entries, never grow memory.
* :class:`TokenIssuer` hands out the ``token`` of get_peers responses: a hash of the
  querier's IP and a secret that rotates every ``rotate_s``; a token from the current or
  the previous secret is accepted, so one stays valid between ``rotate_s`` and twice that
  (BEP 5: "tokens up to ten minutes old are accepted").
* :class:`RateLimiter` is a token bucket per source IP over a bounded set of IPs.

Everything takes ``now`` from the caller; randomness comes from the ``random.Random``
handed in (tests seed it; the node uses the system's).
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from torrent.proto.dht.krpc import Address, pack_host

MAX_PEERS: Final = 100_000
MAX_INFO_HASHES: Final = 10_000
MAX_PER_SWARM: Final = 500  # what one info hash keeps (libtorrent's DHT keeps as many)
MAX_PER_IP: Final = 200  # entries one address may hold across all info hashes
PEER_TTL_S: Final = 30 * 60  # announces are refreshed every ~15 to 30 minutes in practice
TOKEN_ROTATE_S: Final = 5 * 60  # BEP 5: tokens stay valid up to 10 minutes
TOKEN_LENGTH: Final = 8


class PeerStore:
    """Peers announced per info hash, bounded, oldest evicted first.

    Bounds: ``max_peers`` in all, ``max_info_hashes`` swarms, ``max_per_swarm`` peers in
    one swarm (what one get_peers answer samples from, so its cost stays small), and
    ``max_per_ip`` entries from one IP address across all swarms (one host cannot push
    everyone else out by announcing made-up ports or info hashes).

    Invariant: ``_order`` holds every (info_hash, peer) once, oldest announce first;
    ``_swarms`` holds exactly the same pairs grouped by info hash; ``_per_ip`` counts them
    by the peer's address.
    """

    def __init__(
        self,
        *,
        max_peers: int = MAX_PEERS,
        max_info_hashes: int = MAX_INFO_HASHES,
        max_per_swarm: int = MAX_PER_SWARM,
        max_per_ip: int = MAX_PER_IP,
        peer_ttl_s: float = PEER_TTL_S,
    ) -> None:
        self.max_peers = max_peers
        self.max_info_hashes = max_info_hashes
        self.max_per_swarm = max_per_swarm
        self.max_per_ip = max_per_ip
        self.peer_ttl_s = peer_ttl_s
        self._order: OrderedDict[tuple[bytes, Address], float] = OrderedDict()
        self._swarms: dict[bytes, dict[Address, None]] = {}
        self._per_ip: dict[str, int] = {}
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._order)

    @property
    def info_hash_count(self) -> int:
        return len(self._swarms)

    def add(self, info_hash: bytes, peer: Address, now: float) -> bool:
        """Store or refresh ``peer`` for ``info_hash``.

        Returns:
            False when the peer's address already holds ``max_per_ip`` entries (nothing stored).
        """
        key = (info_hash, peer)
        if key in self._order:
            self._order.move_to_end(key)
            self._order[key] = now
            return True
        if self._per_ip.get(peer[0], 0) >= self.max_per_ip:
            return False
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            while len(self._swarms) >= self.max_info_hashes:
                self._evict_oldest_swarm()
            swarm = self._swarms[info_hash] = {}
        elif len(swarm) >= self.max_per_swarm:
            oldest = next(iter(swarm))  # first stored; a refresh does not move it, so roughly the oldest
            del self._order[(info_hash, oldest)]
            self._drop((info_hash, oldest))
            self.evicted += 1
            swarm = self._swarms.setdefault(info_hash, {})
        while len(self._order) >= self.max_peers:
            self._evict_one()
            swarm = self._swarms.setdefault(info_hash, swarm)
        swarm[peer] = None
        self._order[key] = now
        self._per_ip[peer[0]] = self._per_ip.get(peer[0], 0) + 1
        return True

    def get(
        self, info_hash: bytes, now: float, rng: random.Random, *, limit: int = 50, v6: bool | None = None
    ) -> list[Address]:
        """Up to ``limit`` live peers of ``info_hash``, a random sample when there are more.

        Args:
            v6: only IPv6 peers (True), only IPv4 (False) or both (None).
        """
        self.expire(now)
        swarm = self._swarms.get(info_hash)
        if not swarm:
            return []
        peers = list(swarm) if v6 is None else [p for p in swarm if (":" in p[0]) == v6]
        return peers if len(peers) <= limit else rng.sample(peers, limit)

    def expire(self, now: float) -> None:
        """Drop announces older than ``peer_ttl_s``."""
        order = self._order
        while order:
            key, stamp = next(iter(order.items()))
            if now - stamp < self.peer_ttl_s:
                break
            order.popitem(last=False)
            self._drop(key)

    def _evict_one(self) -> None:
        key, _ = self._order.popitem(last=False)
        self._drop(key)
        self.evicted += 1

    def _evict_oldest_swarm(self) -> None:
        # the swarm of the oldest announce: its other peers go with it
        info_hash = next(iter(self._order))[0]
        for peer in list(self._swarms[info_hash]):
            del self._order[(info_hash, peer)]
            self._drop((info_hash, peer))
            self.evicted += 1

    def _drop(self, key: tuple[bytes, Address]) -> None:
        """Remove ``key`` from the swarms and the per-IP counts (the caller took it off ``_order``)."""
        info_hash, peer = key
        swarm = self._swarms[info_hash]
        del swarm[peer]
        if not swarm:
            del self._swarms[info_hash]
        left = self._per_ip[peer[0]] - 1
        if left:
            self._per_ip[peer[0]] = left
        else:
            del self._per_ip[peer[0]]


class TokenIssuer:
    """Write tokens bound to the querier's IP (BEP 5), from a secret rotated every ``rotate_s``."""

    def __init__(self, rng: random.Random, now: float, *, rotate_s: float = TOKEN_ROTATE_S) -> None:
        self._rng = rng
        self.rotate_s = rotate_s
        self._secret = rng.randbytes(16)
        self._previous = rng.randbytes(16)
        self._rotated_at = now

    def _rotate(self, now: float) -> None:
        if now - self._rotated_at >= 2 * self.rotate_s:
            self._previous = self._rng.randbytes(16)  # both are stale: neither may be accepted
            self._secret = self._rng.randbytes(16)
            self._rotated_at = now
        elif now - self._rotated_at >= self.rotate_s:
            self._previous, self._secret = self._secret, self._rng.randbytes(16)
            self._rotated_at = now

    @staticmethod
    def _make(secret: bytes, host: str) -> bytes:
        return hashlib.sha1(secret + pack_host(host)).digest()[:TOKEN_LENGTH]

    def issue(self, host: str, now: float) -> bytes:
        self._rotate(now)
        return self._make(self._secret, host)

    def valid(self, token: bytes, host: str, now: float) -> bool:
        self._rotate(now)
        return token in (self._make(self._secret, host), self._make(self._previous, host))


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """A token bucket per source IP: ``rate_per_s`` sustained, ``burst`` at once.

    At most ``max_tracked`` IPs are remembered; the least recently seen is forgotten
    first (it comes back with a full bucket, which costs at most one burst).
    """

    def __init__(self, rate_per_s: float, burst: float, *, max_tracked: int = 10_000) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_tracked = max_tracked
        self._ips: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ips)

    def allow(self, host: str, now: float) -> bool:
        if self.rate_per_s <= 0:
            return True
        bucket = self._ips.get(host)
        if bucket is None:
            if len(self._ips) >= self.max_tracked:
                self._ips.popitem(last=False)
            bucket = self._ips[host] = _Bucket(self.burst, now)
        else:
            self._ips.move_to_end(host)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate_per_s)
            bucket.stamp = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True
