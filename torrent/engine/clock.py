"""The engine's time source, injectable so timer tests move time by hand instead of sleeping.

Every timer decision in the engine (request and handshake timeouts, snubbing, keep-alives,
idle peers, announce intervals, retry back-off, seed time) reads ``clock.monotonic()``
from the :class:`Clock` it was given, never :func:`time.monotonic` directly. Production
code uses :data:`SYSTEM_CLOCK`; a test hands in a :class:`ManualClock` and calls
``advance()`` (after the manner of trio's ``MockClock``), then drives the code's
``tick(now)`` methods.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["SYSTEM_CLOCK", "Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """Something that tells the time in seconds, monotonic (never goes backwards)."""

    def monotonic(self) -> float: ...


class SystemClock:
    """:func:`time.monotonic`."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to (tests)."""

    __slots__ = ("_now",)

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (not negative) and return the new time."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go backwards")
        self._now += seconds
        return self._now


#: The clock production code uses.
SYSTEM_CLOCK = SystemClock()
