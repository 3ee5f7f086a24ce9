"""The dormant seeds' announce heap (``torrent/daemon/announces.py``): slots a gap apart,
entries run in time order, stale entries skipped without taking a slot."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from torrent.daemon.announces import DormantAnnounces


def test_slots_are_a_gap_apart_and_never_in_the_past() -> None:
    announces = DormantAnnounces(per_s=10.0)
    assert announces.next_slot(100.0) == pytest.approx(100.1)
    assert announces.next_slot(100.0) == pytest.approx(100.2)
    assert announces.next_slot(500.0) == pytest.approx(500.1)  # the machine slept: from now on


async def test_due_entries_run_in_order_one_gap_apart_and_stale_ones_take_no_slot() -> None:
    announces = DormantAnnounces(per_s=5.0)  # 200 ms apart
    now = time.monotonic()
    calls: list[tuple[int, float]] = []
    done = asyncio.Event()

    def due(torrent_id: int, when: float) -> bool:
        calls.append((torrent_id, time.monotonic()))
        if torrent_id == 4:
            done.set()
        return torrent_id != 2  # 2 is stale: woken or stopped meanwhile

    for torrent_id, delay in ((3, 0.0), (1, -1.0), (2, -0.5), (4, 0.1)):
        announces.schedule(torrent_id, now + delay)
    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        tg.create_task(announces.run(due))
        await done.wait()
        announces.stop()
    assert [c[0] for c in calls] == [1, 2, 3, 4]
    started = [at for torrent_id, at in calls if torrent_id != 2]
    assert all(b - a >= 0.2 - 0.01 for a, b in itertools.pairwise(started))  # overdue, yet a gap apart
    # The stale entry took no slot: 3 came right after it, not a gap later.
    assert calls[2][1] - calls[1][1] < 0.1
