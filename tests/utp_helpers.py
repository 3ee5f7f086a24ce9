"""A simulated network for two :class:`UtpConnection` objects: loss, duplication, jitter
(which reorders), a base delay and a bandwidth limit, all on a simulated clock."""

from __future__ import annotations

import contextlib
import heapq
import random
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

from torrent.proto.utp import UtpConnection, UtpCounters

__all__ = ["Link", "SimNet", "connected_pair", "in_loopback_namespace", "loopback_mtu"]


@dataclass
class Link:
    """One direction of the path."""

    loss: float = 0.0
    duplicate: float = 0.0
    delay_s: float = 0.005
    jitter_s: float = 0.0
    rate_bps: float | None = None  # bytes per second; None: unlimited
    queue_s: float = 0.5  # a bottleneck queue longer than this drops (tail drop)
    busy_until: float = 0.0
    sent: int = 0
    dropped: int = 0

    def arrivals(self, rng: random.Random, size: int, now: float) -> list[float]:
        """When copies of a datagram of ``size`` bytes sent at ``now`` arrive (none: lost)."""
        self.sent += 1
        depart = now
        if self.rate_bps:
            start = max(now, self.busy_until)
            if start - now > self.queue_s:
                self.dropped += 1
                return []
            self.busy_until = start + size / self.rate_bps
            depart = self.busy_until
        if rng.random() < self.loss:
            self.dropped += 1
            return []
        copies = 2 if rng.random() < self.duplicate else 1
        return [depart + self.delay_s + rng.random() * self.jitter_s for _ in range(copies)]


@dataclass
class SimNet:
    """Moves datagrams between ``a`` and ``b`` over two links on a simulated clock."""

    a: UtpConnection
    b: UtpConnection
    ab: Link = field(default_factory=Link)
    ba: Link = field(default_factory=Link)
    seed: int = 0
    now: float = 0.0
    got_a: bytearray = field(default_factory=bytearray)
    got_b: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._events: list[tuple[float, int, int, bytes]] = []
        self._n = 0

    def _collect(self) -> None:
        for src, dst, link in ((self.a, 1, self.ab), (self.b, 0, self.ba)):
            for d in src.outgoing:
                for t in link.arrivals(self.rng, len(d), self.now):
                    self._n += 1
                    heapq.heappush(self._events, (t, self._n, dst, d))
            src.outgoing.clear()
        for conn, got in ((self.a, self.got_a), (self.b, self.got_b)):
            for chunk in conn.received:
                got += chunk
            conn.received.clear()

    def step(self) -> bool:
        """Deliver the next datagram or fire the next timer; False when nothing is left."""
        self._collect()
        deadlines = [d for d in (self.a.next_deadline(), self.b.next_deadline()) if d is not None]
        next_timer = min(deadlines) if deadlines else None
        if self._events and (next_timer is None or self._events[0][0] <= next_timer):
            t, _, dst, d = heapq.heappop(self._events)
            self.now = max(self.now, t)
            conn = self.b if dst else self.a
            conn.receive(d, self.now)
            conn.flush(self.now)
        elif next_timer is not None:
            self.now = max(self.now, next_timer)
            for conn in (self.a, self.b):
                conn.tick(self.now)
                conn.flush(self.now)
        else:
            return False
        self._collect()
        return True

    def run_until(self, condition: object, *, limit_s: float = 600.0, max_steps: int = 10_000_000) -> None:
        """Step until ``condition()`` holds (or nothing is left, or ``limit_s`` passed)."""
        assert callable(condition)
        steps = 0
        while not condition() and self.now < limit_s and steps < max_steps:
            if not self.step():
                break
            steps += 1

    def send(self, conn: UtpConnection, data: bytes, chunk: int = 64 * 1024, buffer: int = 1 << 20) -> None:
        """Write ``data`` through ``conn`` as the engine would: keep at most ``buffer`` queued."""
        pos = 0
        while pos < len(data):
            while pos < len(data) and conn.send_buffer_bytes < buffer:
                conn.write(data[pos : pos + chunk])
                pos += chunk
            conn.flush(self.now)
            if pos < len(data):
                before = conn.send_buffer_bytes
                self.run_until(lambda b=before: conn.send_buffer_bytes < b or conn.closed)
                assert not conn.closed, conn.close_reason


def connected_pair(
    *,
    now: float = 0.0,
    counters: UtpCounters | None = None,
    mtu_ceiling: int = 1472,
    recv_buffer: int = 1 << 20,
) -> tuple[UtpConnection, UtpConnection, UtpCounters]:
    """A dialled connection and the one that accepted its SYN (the SYN and STATE are queued)."""
    c = counters or UtpCounters()
    a = UtpConnection.dial(
        recv_id=1000, seq_nr=1, now=now, counters=c, mtu_ceiling=mtu_ceiling, recv_buffer=recv_buffer
    )
    syn = a.outgoing.pop()
    b = UtpConnection.accept(
        syn, seq_nr=30000, now=now, counters=c, mtu_ceiling=mtu_ceiling, recv_buffer=recv_buffer
    )
    assert b is not None
    return a, b, c


def in_loopback_namespace() -> bool:
    """``lo`` is the only interface: a namespace of the test's own (``unshare --net``)."""
    return sorted(name for _, name in socket.if_nameindex()) == ["lo"]


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


@contextlib.contextmanager
def loopback_mtu(mtu: int = 1500) -> Iterator[bool]:
    """``lo`` at ``mtu`` inside a loopback-only namespace (yields True), restored after;
    anywhere else ``lo`` is left alone (yields False): the host's is not ours to change.
    (``/sys/class/net/lo/mtu`` may still show the host's value inside the namespace.)"""
    if not in_loopback_namespace() or shutil.which("ip") is None:
        yield False
        return
    show = _ip("-o", "link", "show", "lo").stdout.split()
    before = show[show.index("mtu") + 1] if "mtu" in show else "65536"
    if _ip("link", "set", "lo", "mtu", str(mtu)).returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        _ip("link", "set", "lo", "mtu", before)
