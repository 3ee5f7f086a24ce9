"""Transmission's per-torrent limits, as the daemon reads them (pure: no I/O, no time).

A torrent's limits are the ``torrent-set`` names kept in its record
(``downloadLimit``/``downloadLimited``, ``uploadLimit``/``uploadLimited`` in kB/s of 1,000
bytes; ``seedRatioLimit``/``seedRatioMode``; ``seedIdleLimit`` minutes/``seedIdleMode``);
the session's are the ``session-set`` names (``seedRatioLimit``/``seedRatioLimited``,
``idle-seeding-limit``/``idle-seeding-limit-enabled``). A mode is Transmission's
``tr_ratiolimit``/``tr_idlelimit``: 0 follows the session, 1 the torrent's own value, 2 none.
``honorsSessionLimits`` false takes a running torrent's buckets out from under the
session's (the daemon applies it with the rate limits).

The alternative speed limits' schedule (Transmission's turtle-mode clock,
``alt-speed-time-*``) is read here too: :func:`alt_speed_window` says whether a minute of
the week is inside it, :func:`minutes_until_alt_speed_change` when that next changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "MINUTES_PER_WEEK",
    "alt_speed_window",
    "has_own_seed_limits",
    "minute_of_week",
    "minutes_until_alt_speed_change",
    "rate_limits_bps",
    "seed_idle_limit_s",
    "seed_limit_reached",
    "seed_ratio_limit",
]

#: Transmission's modes.
FOLLOW_SESSION, OWN, UNLIMITED = 0, 1, 2


def rate_limits_bps(limits: Mapping[str, Any]) -> tuple[int, int]:
    """``(download, upload)`` bytes per second of the torrent's own buckets (0: none)."""
    down = int(limits.get("downloadLimit", 100)) * 1000 if limits.get("downloadLimited") else 0
    up = int(limits.get("uploadLimit", 100)) * 1000 if limits.get("uploadLimited") else 0
    return max(down, 0), max(up, 0)


def has_own_seed_limits(limits: Mapping[str, Any]) -> bool:
    """The torrent has a seed ratio or idle limit of its own (mode 1)."""
    return limits.get("seedRatioMode") == OWN or limits.get("seedIdleMode") == OWN


def seed_ratio_limit(limits: Mapping[str, Any], session: Mapping[str, Any]) -> float | None:
    """The ratio at which the torrent stops seeding, or None."""
    mode = limits.get("seedRatioMode", FOLLOW_SESSION)
    if mode == OWN:
        return float(limits.get("seedRatioLimit", 2.0))
    if mode == FOLLOW_SESSION and session["seedRatioLimited"]:
        return float(session["seedRatioLimit"])
    return None


def seed_idle_limit_s(limits: Mapping[str, Any], session: Mapping[str, Any]) -> float | None:
    """How long the torrent may seed without moving data before it stops (s), or None."""
    mode = limits.get("seedIdleMode", FOLLOW_SESSION)
    if mode == OWN:
        return float(limits.get("seedIdleLimit", 30)) * 60.0
    if mode == FOLLOW_SESSION and session["idle-seeding-limit-enabled"]:
        return float(session["idle-seeding-limit"]) * 60.0
    return None


def seed_limit_reached(
    limits: Mapping[str, Any],
    session: Mapping[str, Any],
    *,
    uploaded: int,
    downloaded: int,
    size: int,
    idle_s: float,
) -> bool:
    """A seed's ratio (uploaded over downloaded, or over its size when it downloaded
    nothing) or its idle time reached its limit."""
    ratio = seed_ratio_limit(limits, session)
    base = downloaded or size
    if ratio is not None and base and uploaded >= ratio * base:
        return True
    idle = seed_idle_limit_s(limits, session)
    return idle is not None and idle_s >= idle


MINUTES_PER_DAY = 24 * 60
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY


def minute_of_week(weekday: int, hour: int, minute: int) -> int:
    """The minute of the week Transmission counts from Sunday 00:00 (``weekday``: Python's,
    Monday 0 ... Sunday 6)."""
    return ((weekday + 1) % 7) * MINUTES_PER_DAY + hour * 60 + minute


def alt_speed_window(schedule: Mapping[str, Any], minute: int) -> bool:
    """Whether ``minute`` (of the week, :func:`minute_of_week`) is inside the schedule.

    The schedule is ``alt-speed-time-begin``/``-end`` (minutes after midnight) on the days
    of ``alt-speed-time-day`` (bit 0 Sunday ... bit 6 Saturday), as Transmission reads
    them: an end at or before the begin wraps past midnight into the next day (so begin
    equal to end is the whole day), and Saturday's window wraps into Sunday.
    """
    begin = int(schedule["alt-speed-time-begin"])
    end = int(schedule["alt-speed-time-end"])
    days = int(schedule["alt-speed-time-day"])
    length = (end - begin) % MINUTES_PER_DAY or MINUTES_PER_DAY
    for day in range(7):
        if days & (1 << day):
            start = day * MINUTES_PER_DAY + begin
            if (minute - start) % MINUTES_PER_WEEK < length:
                return True
    return False


def minutes_until_alt_speed_change(schedule: Mapping[str, Any], minute: int) -> int | None:
    """Whole minutes from ``minute`` until the first minute whose :func:`alt_speed_window`
    differs from this one's, or None when it never does (no day set, or every minute in)."""
    now = alt_speed_window(schedule, minute)
    # A change can only come at a window's begin or end: look at those, in time order.
    begin = int(schedule["alt-speed-time-begin"])
    end = int(schedule["alt-speed-time-end"])
    edges = sorted(
        {
            (day * MINUTES_PER_DAY + edge - minute) % MINUTES_PER_WEEK
            for day in range(7)
            for edge in (begin, end)
        }
    )
    for ahead in edges:
        if ahead and alt_speed_window(schedule, (minute + ahead) % MINUTES_PER_WEEK) != now:
            return ahead
    return None
