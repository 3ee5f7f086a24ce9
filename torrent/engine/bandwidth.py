"""Bandwidth: the session-wide rate limits, and clock-bound snapshots of a connection's rates.

* :class:`RateLimiter`: a token bucket shared by every peer of a session (one for download,
  one for upload). ``Peer`` takes from it on every read and before every block it uploads.
  A torrent's own bucket has the session's as its ``parent``: taking from it takes from
  both, and the caller waits for the slower.
* :class:`RateSnapshot`: a connection's rate and total at one moment, read from the rate meter
  its wire protocol keeps (``PeerProtocol.download_meter``/``upload_meter``). The meter itself
  is :class:`torrent.proto.wire.RateMeter`, the only one in the client: it lives with the
  sans-IO protocol, which owns the connection's state, and takes ``now`` from the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

from torrent.engine.clock import SYSTEM_CLOCK, Clock
from torrent.proto.wire import RateMeter
from torrent.types import BLOCK_SIZE

__all__ = ["RateLimiter", "RateSnapshot"]


class RateLimiter:
    """A token bucket shared by every peer of a session (one for down, one for up).

    ``rate_bps == 0`` means unlimited. Debt is allowed: a caller takes what it needs and
    waits for the bucket to come back above zero, so large blocks never starve.

    Args:
        rate_bps: bytes per second; 0 for no limit.
        burst_s: seconds of ``rate_bps`` the bucket holds (at least two blocks).
        clock: where the time comes from.
        parent: a bucket every take also draws from (a torrent's bucket: the session's).
    """

    def __init__(
        self,
        rate_bps: int,
        burst_s: float = 0.5,
        *,
        clock: Clock = SYSTEM_CLOCK,
        parent: RateLimiter | None = None,
    ) -> None:
        self.parent = parent
        self.rate_bps = rate_bps
        self._clock = clock
        self._burst_s = burst_s
        self._burst = max(rate_bps * burst_s, BLOCK_SIZE * 2)
        self._tokens = self._burst
        self._stamp = clock.monotonic()

    @property
    def unlimited(self) -> bool:
        """Neither this bucket nor its parents limit anything."""
        return self.rate_bps <= 0 and (self.parent is None or self.parent.unlimited)

    def set_rate(self, rate_bps: int) -> None:
        """Change the limit at once (0: unlimited); every peer sharing the bucket follows."""
        if rate_bps < 0:
            raise ValueError("a rate limit must not be negative")
        self._refill()
        self.rate_bps = rate_bps
        self._burst = max(rate_bps * self._burst_s, BLOCK_SIZE * 2)
        self._tokens = min(self._tokens, self._burst)

    def _refill(self) -> None:
        now = self._clock.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self.rate_bps)
        self._stamp = now

    def take_nowait(self, n: int) -> float:
        """Take ``n`` bytes (from the parents too); returns how long the caller should
        wait before more (0: none)."""
        wait = self.parent.take_nowait(n) if self.parent is not None else 0.0
        if self.rate_bps <= 0:
            return wait
        self._refill()
        self._tokens -= n
        return max(wait, 0.0 if self._tokens >= 0 else -self._tokens / self.rate_bps)


@dataclass(frozen=True, slots=True)
class RateSnapshot:
    """One direction of a connection at one moment: what the choker and the totals read."""

    #: Bytes per second over the meter's window.
    rate_bps: float = 0.0
    #: Bytes since the connection started.
    total: int = 0
    #: The meter has not seen a whole window yet (its rate is a short average).
    warming_up: bool = True

    @classmethod
    def of(cls, meter: RateMeter | None, now: float) -> RateSnapshot:
        """Read ``meter`` at ``now``; ``None`` (no connection yet) reads as idle."""
        if meter is None:
            return cls()
        return cls(meter.rate_bps(now), meter.total, meter.warming_up(now))
