"""The alternative speed limits' schedule (Transmission's "turtle mode" clock).

:class:`AltSpeedSchedule` switches ``alt-speed-enabled`` in the session's limits at the
boundaries of the ``alt-speed-time-*`` window (local time; :mod:`torrent.daemon.limits`
reads the window). It waits once per boundary (at most :data:`RECHECK_S`, so a change of
the clock itself, as for daylight saving, is noticed) and has no timer while the
schedule is off. It acts only at the boundaries: a user's switch in between holds until
the next one, as Transmission's does. A changed schedule applies at once
(:meth:`AltSpeedSchedule.changed`), then at its boundaries.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable
from typing import Any

from torrent.daemon import limits as limit_rules

__all__ = ["RECHECK_S", "AltSpeedSchedule"]

log = logging.getLogger("torrent.daemon.service")

#: The schedule's wait is at most this long (s).
RECHECK_S = 3600.0


class AltSpeedSchedule:
    """Switches the alternative speed limits on the schedule (see the module doc).

    Args:
        limits: the session's limits under their ``session-set`` names; the schedule
            reads ``alt-speed-time-*`` there and sets ``alt-speed-enabled``.
        clock: the local time now.
        switched: called after the schedule changed ``alt-speed-enabled`` (apply the
            rates, store the setting).
    """

    def __init__(
        self,
        limits: dict[str, Any],
        clock: Callable[[], datetime.datetime],
        switched: Callable[[bool], None],
    ) -> None:
        self._limits = limits
        self._clock = clock
        self._switched = switched
        #: What the schedule last switched to (None: not yet, or it changed since).
        self._auto: bool | None = None
        #: Set to look again now (a changed schedule, the end of the run).
        self.wake = asyncio.Event()
        self._stopped = False

    def changed(self) -> None:
        """The schedule's settings changed: apply its state now, then at its boundaries."""
        self._auto = None
        self.wake.set()

    def stop(self) -> None:
        """End :meth:`run`."""
        self._stopped = True
        self.wake.set()

    async def run(self) -> None:
        """One wait per boundary until :meth:`stop`."""
        while not self._stopped:
            self.wake.clear()
            delay = self.step()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if delay is None else min(delay, RECHECK_S)):
                    await self.wake.wait()

    def step(self) -> float | None:
        """Apply the schedule's state if it changed since it was last applied; the seconds
        until its next boundary (None: the schedule is off or never changes)."""
        lim = self._limits
        if not lim["alt-speed-time-enabled"]:
            self._auto = None
            return None
        now = self._clock()
        minute = limit_rules.minute_of_week(now.weekday(), now.hour, now.minute)
        inside = limit_rules.alt_speed_window(lim, minute)
        if inside != self._auto:
            self._auto = inside
            if lim["alt-speed-enabled"] != inside:
                lim["alt-speed-enabled"] = inside
                self._switched(inside)
                log.info("alternative speed limits %s by the schedule", "on" if inside else "off")
        ahead = limit_rules.minutes_until_alt_speed_change(lim, minute)
        if ahead is None:
            return None
        # Just past the boundary's minute, so the next step reads the minute after it.
        return ahead * 60.0 - now.second - now.microsecond / 1e6 + 0.05
