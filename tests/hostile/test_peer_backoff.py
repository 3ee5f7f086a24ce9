"""PeerList back-off and bans, on plain numbers (no network)."""

from __future__ import annotations

import random

import pytest

from torrent.config import Settings
from torrent.engine.peer_list import PeerList

A = ("10.0.0.1", 6881)


def test_backoff_doubles_is_capped_and_jittered_down_by_at_most_a_quarter() -> None:
    s = Settings(retry_backoff_s=10.0, retry_backoff_max_s=60.0, max_failures=100).validate()
    pl = PeerList(s, rng=random.Random(1))
    pl.add(A)
    waits = []
    for _ in range(8):
        pl.failed(A, 0.0)
        kp = pl.get(A)
        assert kp is not None
        waits.append(kp.next_try)
    for n, wait in enumerate(waits, start=1):
        full = min(10.0 * 2 ** (n - 1), 60.0)
        assert 0.75 * full <= wait <= full
    assert max(waits) <= 60.0
    assert len(set(waits)) == len(waits)  # jittered, not lockstep


def test_success_clears_failures_and_violations_ban_with_the_reason() -> None:
    s = Settings(max_violations=2).validate()
    pl = PeerList(s)
    pl.add(A)
    pl.failed(A, 0.0)
    pl.succeeded(A)
    kp = pl.get(A)
    assert kp is not None
    assert kp.failures == 0
    assert not pl.failed(A, 0.0, violation="message of 4294967295 bytes")
    assert pl.failed(A, 0.0, violation="bitfield of 1000 bytes")
    assert pl.is_banned(A)
    assert kp.ban_reason == "2 protocol violations, the last: bitfield of 1000 bytes"
    assert pl.last_ban == "10.0.0.1:6881: 2 protocol violations, the last: bitfield of 1000 bytes"
    assert pl.candidates(1e9, 10) == []


def test_settings_refuse_a_cap_below_the_base() -> None:
    with pytest.raises(ValueError, match="retry_backoff_max_s"):
        Settings(retry_backoff_s=30.0, retry_backoff_max_s=10.0).validate()
