"""Token buckets: a torrent's own bucket under the session's."""

from __future__ import annotations

import pytest

from torrent.engine.bandwidth import RateLimiter
from torrent.engine.clock import ManualClock
from torrent.types import BLOCK_SIZE


def test_a_child_bucket_waits_for_the_slower_of_itself_and_its_parent() -> None:
    clock = ManualClock()
    session = RateLimiter(0, clock=clock)
    torrent = RateLimiter(0, clock=clock, parent=session)
    assert torrent.unlimited
    assert torrent.take_nowait(10 * BLOCK_SIZE) == 0.0

    torrent.set_rate(BLOCK_SIZE)  # 16 KiB/s of its own, the session unlimited
    assert not torrent.unlimited
    assert torrent.take_nowait(4 * BLOCK_SIZE) == pytest.approx(2.0)  # burst of 2 blocks, 2 over

    clock.advance(10.0)
    session.set_rate(BLOCK_SIZE // 2)  # now the session is the slower one
    assert torrent.take_nowait(4 * BLOCK_SIZE) == pytest.approx(4.0)

    torrent.set_rate(0)  # none of its own: the session's alone
    clock.advance(100.0)
    assert torrent.take_nowait(2 * BLOCK_SIZE) == 0.0
    assert torrent.take_nowait(BLOCK_SIZE) == pytest.approx(2.0)


def test_the_parent_counts_what_every_child_takes() -> None:
    clock = ManualClock()
    session = RateLimiter(BLOCK_SIZE, clock=clock)
    a = RateLimiter(0, clock=clock, parent=session)
    b = RateLimiter(0, clock=clock, parent=session)
    assert a.take_nowait(2 * BLOCK_SIZE) == 0.0  # the session's burst
    assert b.take_nowait(BLOCK_SIZE) == pytest.approx(1.0)  # b pays for a's bytes too
