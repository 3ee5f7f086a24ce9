"""Transmission's per-torrent limits as the daemon reads them: modes 0 (the session's),
1 (the torrent's own) and 2 (none), rates in kB/s of 1,000 bytes."""

from __future__ import annotations

from typing import Any

from torrent.daemon.limits import has_own_seed_limits, rate_limits_bps, seed_limit_reached

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
