"""Transmission's per-torrent limits as the daemon reads them: modes 0 (the session's),
1 (the torrent's own) and 2 (none), rates in kB/s of 1,000 bytes."""

from __future__ import annotations

from typing import Any

import pytest

from torrent.daemon.limits import (
    alt_speed_window,
    has_own_seed_limits,
    minute_of_week,
    minutes_until_alt_speed_change,
    rate_limits_bps,
    seed_limit_reached,
)

SESSION_OFF: dict[str, Any] = {
    "seedRatioLimit": 2.0,
    "seedRatioLimited": False,
    "idle-seeding-limit": 30,
    "idle-seeding-limit-enabled": False,
}
SESSION_ON: dict[str, Any] = {**SESSION_OFF, "seedRatioLimited": True, "idle-seeding-limit-enabled": True}


def test_rate_limits_count_only_when_limited() -> None:
    assert rate_limits_bps({}) == (0, 0)
    assert rate_limits_bps({"downloadLimit": 50, "uploadLimit": 20}) == (0, 0)
    assert rate_limits_bps({"downloadLimit": 50, "downloadLimited": True, "uploadLimited": True}) == (
        50_000,
        100_000,  # Transmission's default of 100 kB/s
    )


def _ratio(limits: dict[str, Any], session: dict[str, Any], *, up: int, down: int = 1_000) -> bool:
    return seed_limit_reached(limits, session, uploaded=up, downloaded=down, size=5_000, idle_s=0.0)


def test_ratio_modes() -> None:
    assert not _ratio({}, SESSION_OFF, up=2_000)
    assert _ratio({}, SESSION_ON, up=2_000)  # mode 0: the session's 2.0
    assert not _ratio({"seedRatioMode": 2}, SESSION_ON, up=2_000)
    own = {"seedRatioMode": 1, "seedRatioLimit": 2.5}
    assert not _ratio(own, SESSION_OFF, up=2_000)
    assert _ratio(own, SESSION_OFF, up=2_500)
    # Nothing downloaded (a seed from the start): the ratio is over its size.
    assert not _ratio(own, SESSION_OFF, up=2_500, down=0)
    assert _ratio(own, SESSION_OFF, up=12_500, down=0)


def test_idle_modes_in_minutes() -> None:
    idle = {"uploaded": 0, "downloaded": 0, "size": 1_000}
    assert not seed_limit_reached({}, SESSION_ON, **idle, idle_s=29 * 60.0)
    assert seed_limit_reached({}, SESSION_ON, **idle, idle_s=30 * 60.0)
    assert not seed_limit_reached({"seedIdleMode": 2}, SESSION_ON, **idle, idle_s=1e9)
    assert seed_limit_reached({"seedIdleMode": 1, "seedIdleLimit": 1}, SESSION_OFF, **idle, idle_s=60.0)
    assert has_own_seed_limits({"seedIdleMode": 1})
    assert has_own_seed_limits({"seedRatioMode": 1})
    assert not has_own_seed_limits({"seedRatioMode": 0, "seedIdleMode": 2})


# --------------------------------------------------------------------- alternative speed schedule

WEEK = 7 * 24 * 60


def _transmission_table(begin: int, end: int, days: int) -> list[bool]:
    """The minutes of the week inside the schedule, built as Transmission builds its turtle
    table (libtransmission ``turtleUpdateTable``): each chosen day from its begin minute up
    to its end, an end at or before the begin taken as the next day's."""
    table = [False] * WEEK
    for day in range(7):
        if days & (1 << day):
            stop = end if end > begin else end + 24 * 60
            for i in range(begin, stop):
                table[(i + day * 24 * 60) % WEEK] = True
    return table


def _schedule(begin: int, end: int, days: int) -> dict[str, Any]:
    return {"alt-speed-time-begin": begin, "alt-speed-time-end": end, "alt-speed-time-day": days}


@pytest.mark.parametrize(
    ("begin", "end", "days"),
    [
        (540, 1020, 127),  # Transmission's default: 09:00-17:00 every day
        (22 * 60, 6 * 60, 0b0111110),  # 22:00-06:00 on weekdays: wraps midnight
        (23 * 60, 60, 1 << 6),  # Saturday 23:00 to Sunday 01:00: wraps the week
        (600, 600, 1 << 3),  # begin == end: the whole of Wednesday
        (0, 0, 127),  # every minute
        (100, 200, 0),  # no day
    ],
)
def test_the_schedule_reads_as_transmissions_turtle_table(begin: int, end: int, days: int) -> None:
    table = _transmission_table(begin, end, days)
    schedule = _schedule(begin, end, days)
    assert [alt_speed_window(schedule, m) for m in range(WEEK)] == table
    # The minutes to the next change, for every minute: walked backwards over two weeks.
    until: list[int | None] = [None] * WEEK
    following: int | None = None
    for m in range(2 * WEEK - 1, -1, -1):
        if table[m % WEEK] != table[(m + 1) % WEEK]:
            following = m + 1
        if m < WEEK:
            until[m] = None if following is None else following - m
    for minute in range(0, WEEK, 7):  # every 7th minute: all weekdays and times of day
        assert minutes_until_alt_speed_change(schedule, minute) == until[minute], minute


def test_minute_of_week_counts_from_sunday_midnight() -> None:
    assert minute_of_week(6, 0, 0) == 0  # Sunday (Python's weekday 6)
    assert minute_of_week(0, 9, 30) == 24 * 60 + 9 * 60 + 30  # Monday 09:30
    assert minute_of_week(5, 23, 59) == WEEK - 1  # Saturday 23:59
