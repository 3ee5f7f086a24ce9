"""uTP's clocks and brakes: round-trip time and timeout, one-way delay, LEDBAT.

* :class:`RttEstimator`: smoothed RTT and its variance from ACKs of packets sent once (Karn's
  rule), the retransmission timeout ``max(rtt + 4 * rtt_var, 500 ms)`` (BEP 29), doubled on
  each timeout.
* :class:`DelayHistory`: the one-way delay samples of our packets as the other side reports
  them (``timestamp_difference_microseconds``), against a *base delay*, the lowest sample of the
  last two minutes (kept as two one-minute minima). The clocks of the two hosts are not
  synchronised, so only the difference to the base means something: it is the queueing delay
  our traffic adds. Samples are 32-bit microsecond counters and compared modulo 2**32.
* :class:`Ledbat`: the congestion window in bytes. Slow start doubles it per RTT until a loss
  or until the queueing delay nears the target; then each ACK moves it by
  ``MAX_CWND_INCREASE * off_target * acked / cwnd`` with ``off_target = (target - delay) /
  target`` (LEDBAT, RFC 6817, with libtorrent's gain of 3000 bytes per RTT): it grows while
  the delay is under the 100 ms target and shrinks above it. A loss halves it (once per
  window), a timeout drops it to one packet.

Times are seconds (floats) and delays microseconds (ints), as on the wire.
"""

from __future__ import annotations

__all__ = [
    "BASE_HISTORY_S",
    "MAX_CWND_INCREASE",
    "MIN_RTO_S",
    "TARGET_DELAY_US",
    "DelayHistory",
    "Ledbat",
    "RttEstimator",
]

#: LEDBAT's target queueing delay (BEP 29: 100 ms).
TARGET_DELAY_US = 100_000
#: Bytes the window may grow by per RTT at zero delay (libtorrent's ``utp_gain_factor``).
MAX_CWND_INCREASE = 3000
#: The lowest retransmission timeout (BEP 29).
MIN_RTO_S = 0.5
#: The first timeout, before any RTT sample (BEP 29: 1000 ms).
INITIAL_RTO_S = 1.0
#: The highest timeout after back-off.
MAX_RTO_S = 60.0
#: How far back the base delay looks (BEP 29: two minutes).
BASE_HISTORY_S = 120.0

_U32 = 0xFFFFFFFF


class RttEstimator:
    """Smoothed round-trip time, its variance and the timeout derived from them."""

    __slots__ = ("_backoff", "_sampled", "rto_s", "rtt_s", "rtt_var_s")

    def __init__(self) -> None:
        self.rtt_s = 0.0
        self.rtt_var_s = 0.0
        self.rto_s = INITIAL_RTO_S
        self._backoff = 1
        self._sampled = False

    def sample(self, rtt_s: float) -> None:
        """An ACK of a packet sent once, ``rtt_s`` after it was sent."""
        if rtt_s < 0:
            return
        if not self._sampled:
            self._sampled = True
            self.rtt_s = rtt_s
            self.rtt_var_s = rtt_s / 2
        else:
            self.rtt_var_s += (abs(self.rtt_s - rtt_s) - self.rtt_var_s) / 4
            self.rtt_s += (rtt_s - self.rtt_s) / 8
        self._backoff = 1
        self.rto_s = max(self.rtt_s + 4 * self.rtt_var_s, MIN_RTO_S)

    def back_off(self) -> None:
        """A timeout fired: wait twice as long for the next one."""
        self._backoff = min(self._backoff * 2, 64)
        base = max(self.rtt_s + 4 * self.rtt_var_s, MIN_RTO_S) if self._sampled else INITIAL_RTO_S
        self.rto_s = min(base * self._backoff, MAX_RTO_S)


class DelayHistory:
    """Base delay over two minutes, and the current queueing delay above it."""

    __slots__ = ("_base", "_minute_start", "_next", "_prev_min", "_recent", "_this_min")

    def __init__(self) -> None:
        self._this_min: int | None = None
        self._prev_min: int | None = None
        self._minute_start = 0.0
        self._base: int | None = None
        self._recent: list[int] = []
        self._next = 0

    def add(self, sample_us: int, now: float) -> int:
        """Record a one-way delay sample; returns the queueing delay (µs) it implies.

        Called for every packet that carries a sample, so it avoids generators and sorting.
        """
        if now - self._minute_start >= BASE_HISTORY_S / 2:
            self._prev_min, self._this_min = self._this_min, None
            self._minute_start = now
            self._base = self._prev_min
        # Modulo 2**32: a sample is lower when (old - sample) is a small positive number.
        this_min = self._this_min
        if this_min is None or 0 < ((this_min - sample_us) & _U32) < 0x80000000:
            self._this_min = sample_us
        base = self._base
        if base is None or 0 < ((base - sample_us) & _U32) < 0x80000000:
            self._base = base = sample_us
        recent = self._recent
        if len(recent) < 3:
            recent.append(sample_us)
        else:
            recent[self._next] = sample_us
            self._next = (self._next + 1) % 3
        # The lowest of the last three samples filters out one-packet spikes.
        low = (recent[0] - base) & _U32
        for s in recent[1:]:
            d = (s - base) & _U32
            if d < low:
                low = d
        return low

    @property
    def base_us(self) -> int | None:
        return self._base


class Ledbat:
    """The congestion window (bytes) of one connection."""

    __slots__ = ("cwnd", "loss_seq", "min_cwnd", "slow_start", "ssthresh", "target_us")

    def __init__(self, mss: int, *, target_us: int = TARGET_DELAY_US) -> None:
        self.min_cwnd = mss
        self.cwnd = float(2 * mss)
        self.ssthresh = float(1 << 30)
        self.slow_start = True
        self.target_us = target_us
        #: Losses of packets up to this sequence number belong to a window already halved.
        self.loss_seq = -1

    def on_ack(self, acked_bytes: int, delay_us: int | None, *, window_full: bool) -> None:
        """``acked_bytes`` were newly acknowledged; ``delay_us`` is the queueing delay now.

        The window grows only while it limits the sender (``window_full``): an application
        that writes little must not build up a window it never tested.
        """
        if acked_bytes <= 0:
            return
        target = self.target_us
        if delay_us is None:
            delay_us = 0
        if self.slow_start:
            if delay_us > target * 0.9 or self.cwnd >= self.ssthresh:
                self.slow_start = False
            elif window_full:
                self.cwnd += acked_bytes
                return
        off_target = (target - delay_us) / target
        if off_target < 0 or window_full:
            self.cwnd += MAX_CWND_INCREASE * off_target * acked_bytes / max(self.cwnd, acked_bytes)
        if self.cwnd < self.min_cwnd:
            self.cwnd = float(self.min_cwnd)

    def on_loss(self, seq_nr: int, highest_sent: int) -> bool:
        """A packet was lost (3 duplicate ACKs or SACKs past it): halve the window once per
        window of data. Returns True when this loss cut the window."""
        if self.loss_seq >= 0 and ((self.loss_seq - seq_nr) & 0xFFFF) < 0x8000:
            return False  # a loss from the window already cut
        self.loss_seq = highest_sent
        self.cwnd = max(self.cwnd / 2, float(self.min_cwnd))
        self.ssthresh = self.cwnd
        self.slow_start = False
        return True

    def on_timeout(self) -> None:
        """Nothing was acknowledged for a whole timeout: restart from one packet."""
        self.ssthresh = max(self.cwnd / 2, float(self.min_cwnd))
        self.cwnd = float(self.min_cwnd)
        self.slow_start = True
