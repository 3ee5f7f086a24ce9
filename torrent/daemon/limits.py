"""Transmission's per-torrent limits, as the daemon reads them (pure: no I/O, no time).

A torrent's limits are the ``torrent-set`` names kept in its record
(``downloadLimit``/``downloadLimited``, ``uploadLimit``/``uploadLimited`` in kB/s of 1,000
bytes; ``seedRatioLimit``/``seedRatioMode``; ``seedIdleLimit`` minutes/``seedIdleMode``);
the session's are the ``session-set`` names (``seedRatioLimit``/``seedRatioLimited``,
``idle-seeding-limit``/``idle-seeding-limit-enabled``). A mode is Transmission's
``tr_ratiolimit``/``tr_idlelimit``: 0 follows the session, 1 the torrent's own value, 2 none.
``honorsSessionLimits`` false takes a running torrent's buckets out from under the
session's (the daemon applies it with the rate limits).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "has_own_seed_limits",
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
