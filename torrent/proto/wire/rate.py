"""A rolling-window byte-rate meter, a pure function of the byte counts and the ``now`` passed in.

The one rate meter of the client: the wire connection keeps one per direction, and the engine
reads them through it (``PeerProtocol.download_rate_bps(now)``); nothing else keeps rates.
"""

from __future__ import annotations

__all__ = ["RateMeter"]


class RateMeter:
    """Bytes per second over a rolling window, from a clock passed in.

    The window is split into ``bucket_s`` buckets; the rate is the bytes in the buckets that
    cover ``(now - window_s, now]`` divided by the time they cover (less while the meter is
    younger than the window). The meter starts at ``now`` if given, else at the first time it
    sees. A clock that goes backwards counts as standing still.
    """

    __slots__ = ("_bucket_s", "_buckets", "_slot", "_start", "total", "window_s")

    def __init__(self, window_s: float = 20.0, bucket_s: float = 1.0, now: float | None = None) -> None:
        if window_s <= 0 or bucket_s <= 0 or bucket_s > window_s:
            raise ValueError("need 0 < bucket_s <= window_s")
        self._bucket_s = bucket_s
        self.window_s = window_s
        self._buckets = [0] * max(1, round(window_s / bucket_s))
        self._start = now
        self._slot = 0 if now is None else int(now // bucket_s)
        #: All bytes ever added.
        self.total = 0

    def _advance(self, now: float) -> None:
        slot = int(now // self._bucket_s)
        if self._start is None:
            self._start = now
            self._slot = slot
            return
        if slot <= self._slot:
            return
        buckets = self._buckets
        n = len(buckets)
        if slot - self._slot >= n:
            for i in range(n):
                buckets[i] = 0
        else:
            for s in range(self._slot + 1, slot + 1):
                buckets[s % n] = 0
        self._slot = slot

    def add(self, nbytes: int, now: float) -> None:
        if self._start is None or now >= (self._slot + 1) * self._bucket_s:
            self._advance(now)
        self._buckets[self._slot % len(self._buckets)] += nbytes
        self.total += nbytes

    def rate_bps(self, now: float) -> float:
        """Bytes per second over the window ending at ``now``."""
        self._advance(now)
        assert self._start is not None
        covered = (len(self._buckets) - 1) * self._bucket_s + (now - self._slot * self._bucket_s)
        covered = min(covered, now - self._start)
        if covered <= 0:
            return 0.0
        return sum(self._buckets) / covered

    def warming_up(self, now: float) -> bool:
        """True until the meter has seen a whole window (its rate is still a short average)."""
        return self._start is None or now - self._start < self.window_s
