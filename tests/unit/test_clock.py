"""The engine's injectable clock."""

from __future__ import annotations

import pytest

from torrent.engine.clock import SYSTEM_CLOCK, Clock, ManualClock


def test_manual_clock_moves_only_when_told() -> None:
    clock: Clock = ManualClock(start=5.0)
    assert clock.monotonic() == 5.0
    assert isinstance(clock, ManualClock)
    assert clock.advance(2.5) == 7.5
    assert clock.monotonic() == 7.5
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


def test_system_clock_is_monotonic() -> None:
    a = SYSTEM_CLOCK.monotonic()
    assert SYSTEM_CLOCK.monotonic() >= a
