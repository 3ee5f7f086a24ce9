"""Known peer addresses of one torrent: where they came from is forgotten, their history is not.

A :class:`PeerList` remembers every address a tracker, the user, the resume state or
an incoming connection told us about, with its connection failures, whether it is
connected now, its peer id once known, and bans.

Every failure of a known peer (connect error, handshake mismatch, protocol error, a
connection that ended at once or gave nothing) doubles its back-off from
``retry_backoff_s`` up to ``retry_backoff_max_s``, with jitter so that many failed
peers are not redialled in lockstep; only a connection that lasted or carried payload
clears the count. A peer that completes the handshake and hangs up is therefore dialled
a handful of times with growing gaps, never in a loop. Protocol violations also count
towards a ban: the ``max_violations``-th one bans the address, with its reason. It is bounded by ``max_known_peers``: a new
address evicts the unconnected candidate with the most failures (libtorrent's
``peer_list`` does the same with its ``max_peerlist_size``).

It never dials anything: the connector (:mod:`torrent.engine.connector`) asks it for
``candidates(now, limit)`` and reports back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from torrent.config import Settings
from torrent.engine.addresses import canonical_host
from torrent.engine.peer import PeerAddr

__all__ = ["KnownPeer", "PeerAddr", "PeerList"]


@dataclass(slots=True)
class KnownPeer:
    """A peer address we may connect to, with its history."""

    addr: PeerAddr
    failures: int = 0
    next_try: float = 0.0
    banned: bool = False
    connected: bool = False
    peer_id: bytes | None = None
    #: Protocol violations so far (a ban at ``Settings.max_violations``).
    violations: int = 0
    #: Why the address was banned ("" when it is not, or no reason was given).
    ban_reason: str = ""


class PeerList:
    """Known peer addresses with failure counts, back-off and bans (bounded)."""

    def __init__(self, settings: Settings, *, rng: random.Random | None = None) -> None:
        self._settings = settings
        self._rng = rng or random.Random()
        #: The most recent ban with its reason, ``"HOST:PORT: why"`` ("" when none).
        self.last_ban = ""
        self._peers: dict[PeerAddr, KnownPeer] = {}

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, addr: object) -> bool:
        return addr in self._peers

    def get(self, addr: PeerAddr) -> KnownPeer | None:
        return self._peers.get(addr)

    def add(self, addr: PeerAddr) -> bool:
        """Remember ``addr``; returns True when it is new.

        The host is kept in one spelling (an IPv4-mapped IPv6 address is its IPv4 one), so
        an address heard in two forms is one entry. The same peer on both families is two
        entries until its handshake names its peer id: then the connector dials neither
        while one connection to that id is open, and the swarm keeps one of two
        simultaneous connections (the duplicate rule).
        """
        addr = (canonical_host(addr[0]), addr[1])
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

    def _dialable(self, p: KnownPeer) -> bool:
        return not p.connected and not p.banned and p.failures < self._settings.max_failures

    def candidates(self, now: float, limit: int) -> list[KnownPeer]:
        """Up to ``limit`` peers to dial now: not connected, not banned, back-off over."""
        ready = [p for p in self._peers.values() if self._dialable(p) and p.next_try <= now]
        ready.sort(key=lambda p: (p.failures, p.next_try))
        return ready[: max(limit, 0)]

    def next_wakeup(self, now: float) -> float | None:
        """Seconds until some peer's back-off ends, or None."""
        waits = [p.next_try - now for p in self._peers.values() if self._dialable(p) and p.next_try > now]
        return min(waits) if waits else None

    def backoff_s(self, failures: int) -> float:
        """The wait after the ``failures``-th consecutive failure, before jitter."""
        s = self._settings
        return float(min(s.retry_backoff_s * 2 ** min(failures - 1, 32), s.retry_backoff_max_s))

    def failed(self, addr: PeerAddr, now: float, *, violation: str = "") -> bool:
        """A connection to ``addr`` failed (or gave nothing): back off before the next try.

        ``violation`` names a protocol violation the peer committed; the
        ``max_violations``-th one bans the address. Returns True when this call banned it.
        """
        p = self._peers.get(addr)
        if p is None:
            return False
        p.failures += 1
        # Jitter: 75-100 % of the back-off, so failed peers spread out.
        p.next_try = now + self.backoff_s(p.failures) * self._rng.uniform(0.75, 1.0)
        if violation:
            p.violations += 1
            if p.violations >= self._settings.max_violations and not p.banned:
                what = "protocol violation" if p.violations == 1 else f"{p.violations} protocol violations"
                self.ban(addr, f"{what}, the last: {violation}")
                return True
        return False

    def succeeded(self, addr: PeerAddr) -> None:
        """A connection to ``addr`` was useful: forget its failures."""
        p = self._peers.get(addr)
        if p is not None:
            p.failures = 0

    def ban(self, addr: PeerAddr, reason: str = "") -> None:
        p = self._peers.get(addr)
        if p is None:
            p = self._peers[addr] = KnownPeer(addr)
        p.banned = True
        p.ban_reason = p.ban_reason or reason
        if reason:
            self.last_ban = f"{addr[0]}:{addr[1]}: {reason}"

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
