"""When the dormant seeds announce: one heap and one task for all of them.

A dormant seed (see :mod:`torrent.daemon.service`) has no timer of its own: its next
announce is an entry ``(when, id)`` in :class:`DormantAnnounces`' heap, and one loop
runs each seed when its announce is due. Announces are spread at ``per_s`` a second:
a seed parked without a time of its own gets the next free slot (:meth:`next_slot`: a
restart with 10,000 seeds does not burst 10,000 announces), and when the loop fell
behind (a busy machine) the overdue ones still go out one slot apart. An entry whose
seed was woken, stopped or rescheduled meanwhile is skipped when it comes up (the
caller's ``due`` says so); nothing is removed from the heap early.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import Callable

__all__ = ["DormantAnnounces"]

#: The loop's wait when nothing is scheduled (s): it is woken by the first entry anyway.
IDLE_WAIT_S = 60.0


class DormantAnnounces:
    """The dormant seeds' announce heap and its loop (see the module doc).

    Args:
        per_s: announces started per second at most.
    """

    def __init__(self, per_s: float) -> None:
        self._gap = 1.0 / per_s
        #: ``(when, id)`` of the next announces (monotonic; a stale entry is skipped).
        self._heap: list[tuple[float, int]] = []
        #: The last slot given out by :meth:`next_slot` (monotonic).
        self._slot = 0.0
        self._wake = asyncio.Event()
        self._stopped = False

    def next_slot(self, now: float) -> float:
        """The next free announce slot: a gap after the last one given, and not before ``now``."""
        self._slot = max(self._slot, now) + self._gap
        return self._slot

    def schedule(self, torrent_id: int, when: float) -> None:
        """Announce torrent ``torrent_id`` at ``when`` (monotonic)."""
        heapq.heappush(self._heap, (when, torrent_id))
        if self._heap[0][1] == torrent_id:
            self._wake.set()

    def stop(self) -> None:
        """End :meth:`run`."""
        self._stopped = True
        self._wake.set()

    async def run(self, due: Callable[[int, float], bool]) -> None:
        """Until :meth:`stop`: call ``due(id, when)`` for each entry whose time came, one
        slot apart; ``due`` starts the seed's announce and returns True, or returns False
        for a stale entry (which takes no slot)."""
        heap = self._heap
        gap = self._gap
        last = -gap
        while not self._stopped:
            now = time.monotonic()
            # Due, and a slot's gap after the last one: when the loop fell behind (a busy
            # machine), the overdue announces still go out one slot apart, not in a burst.
            delay = max(heap[0][0] - now, last + gap - now) if heap else IDLE_WAIT_S
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                continue
            when, torrent_id = heapq.heappop(heap)
            if due(torrent_id, when):
                last = now
