"""``HandshakeGate``: incoming connections that have not finished their handshake.

An accepted connection holds a descriptor and a little memory until its BitTorrent (or
MSE) handshake names a torrent. A stranger who opens a thousand connections and sends
half a handshake on each would hold them all for the handshake timeout, and an honest
peer arriving meanwhile would find no room. The gate keeps four rules:

1. At most ``per_ip`` connections from one address may be handshaking at once; past it
   the newcomer from that address is closed at once (one address cannot take the room).
2. At most ``total`` may be handshaking at once. Past it the connection that has been
   handshaking longest is closed to make room, if it has waited ``evict_after_s`` (an
   honest handshake takes a round trip or two). Otherwise a newcomer from an address that
   holds none of the places takes the oldest place of the address holding the most, or,
   when every address holds one, the oldest place of all: a flood from more addresses
   than there are places cannot keep a new address out, and an honest newcomer keeps its
   place while ``total`` more arrive, far longer than its handshake takes to come in.
   A newcomer from an address that already holds a place is closed.
3. A connection that has not finished within ``timeout_s`` is closed; while the gate is
   three-quarters full, within a quarter of that (at least a second).
4. A connection that closed by itself leaves at once (at the next admission or sweep).

The gate only decides: the caller closes what it is told to close. It reads no clock of
its own (``now`` comes in), so the rules are tested on plain numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["GateStats", "HandshakeGate"]

C = TypeVar("C", bound=Hashable)


@dataclass(frozen=True, slots=True)
class GateStats:
    """What the gate has done so far (a snapshot)."""

    handshaking: int
    refused_per_ip: int
    refused_total: int
    evicted: int
    timed_out: int


class HandshakeGate(Generic[C]):
    """Caps and times the connections still handshaking (see the module doc).

    Args:
        total: connections handshaking at once.
        per_ip: of those, from one address.
        timeout_s: time allowed for a handshake.
        is_closed: tells whether a connection has closed by itself.
    """

    def __init__(self, *, total: int, per_ip: int, timeout_s: float, is_closed: Callable[[C], bool]) -> None:
        self.total = total
        self.per_ip = per_ip
        self.timeout_s = timeout_s
        self.evict_after_s = min(1.0, timeout_s / 8)
        self._is_closed = is_closed
        #: connection -> (address, since); insertion order is arrival order
        self._waiting: dict[C, tuple[str, float]] = {}
        self._by_ip: dict[str, int] = {}
        self._refused_per_ip = self._refused_total = self._evicted = self._timed_out = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, conn: object) -> bool:
        return conn in self._waiting

    def admit(self, conn: C, ip: str, now: float) -> tuple[bool, C | None]:
        """A new connection from ``ip``: (admitted, a connection to close to make room)."""
        if self._by_ip.get(ip, 0) >= self.per_ip:
            self._drop_closed(ip)
            if self._by_ip.get(ip, 0) >= self.per_ip:
                self._refused_per_ip += 1
                return False, None
        evicted: C | None = None
        if len(self._waiting) >= self.total:
            self._drop_closed(None)
            if len(self._waiting) >= self.total:
                victim = self._victim(ip, now)
                if victim is None:
                    self._refused_total += 1
                    return False, None
                self.done(victim)
                self._evicted += 1
                evicted = victim
        self._waiting[conn] = (ip, now)
        self._by_ip[ip] = self._by_ip.get(ip, 0) + 1
        return True, evicted

    def _victim(self, ip: str, now: float) -> C | None:
        """The place a newcomer from ``ip`` may take when the gate is full (rule 2)."""
        oldest, (_, since) = next(iter(self._waiting.items()))
        if now - since >= self.evict_after_s:
            return oldest
        if ip in self._by_ip:
            return None
        crowded = max(self._by_ip, key=self._by_ip.__getitem__)
        if self._by_ip[crowded] < 2:
            return oldest
        return next(c for c, (addr, _) in self._waiting.items() if addr == crowded)

    def done(self, conn: C) -> None:
        """``conn`` finished its handshake (or was closed): it no longer counts."""
        entry = self._waiting.pop(conn, None)
        if entry is not None:
            ip = entry[0]
            left = self._by_ip[ip] - 1
            if left:
                self._by_ip[ip] = left
            else:
                del self._by_ip[ip]

    def expire(self, now: float) -> list[C]:
        """Take out and return the connections whose handshake is overdue (the caller
        closes them); those that closed by themselves leave too."""
        self._drop_closed(None)
        timeout = self.timeout_s
        if len(self._waiting) * 4 >= self.total * 3:
            timeout = max(1.0, timeout / 4)
        overdue = []
        for conn, (_, since) in self._waiting.items():
            if now - since < timeout:
                break  # arrival order: the rest are younger
            overdue.append(conn)
        for conn in overdue:
            self.done(conn)
        self._timed_out += len(overdue)
        return overdue

    def clear(self) -> list[C]:
        """Take out every connection (the session is closing)."""
        out = list(self._waiting)
        self._waiting.clear()
        self._by_ip.clear()
        return out

    def _drop_closed(self, ip: str | None) -> None:
        gone = [
            c for c, (addr, _) in self._waiting.items() if (ip is None or addr == ip) and self._is_closed(c)
        ]
        for conn in gone:
            self.done(conn)

    def statistics(self) -> GateStats:
        return GateStats(
            handshaking=len(self._waiting),
            refused_per_ip=self._refused_per_ip,
            refused_total=self._refused_total,
            evicted=self._evicted,
            timed_out=self._timed_out,
        )
