"""Group commit of adds: torrents added together are stored in one transaction.

An add is answered only once its record is in the database (a kill -9 after the answer
keeps it), and 8 adds in flight, each with a transaction and its ``fsync`` of its own,
spend their time waiting on the disk. :class:`AddGroup` collects the adds that arrive
before the next turn of the event loop (the requests already read) and stores them with
one call to ``commit`` there; every add of the group waits for that one result
(:meth:`AddGroup.wait`). When the commit fails, ``dropped`` gets the group's items (the
caller forgets them: nothing of them was stored) and every waiter learns why.

The store gives each record its id at once and keeps the open group's rows
(:meth:`~torrent.daemon.store.StateStore.insert_pending`); any other write or read of
the store commits an open group first, so nothing sees a state the group is not in.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["AddGroup"]

log = logging.getLogger("torrent.daemon.service")

T = TypeVar("T")


class AddGroup(Generic[T]):
    """See the module doc.

    Args:
        commit: stores the open group (raises :class:`sqlite3.Error` when it cannot).
        dropped: called with the items of a group that could not be stored.
    """

    def __init__(self, commit: Callable[[], None], dropped: Callable[[list[T]], None]) -> None:
        self._commit = commit
        self._dropped = dropped
        #: The open group's items (none: no group is open), and a future per waiter for
        #: its result (None: stored; else why not). One future each, not one shared and
        #: shielded: a waiter that is cancelled cancels only its own.
        self._items: list[T] = []
        self._waiters: list[asyncio.Future[str | None]] = []
        #: The loop of the open group (set when it opens).
        self._loop: asyncio.AbstractEventLoop | None = None

    def join(self, item: T) -> None:
        """Add ``item`` (just inserted as pending) to the open group, opening one (its
        commit runs at the next turn of the loop) when there is none."""
        if not self._items:
            self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._run)
        self._items.append(item)

    async def wait(self) -> str | None:
        """Wait until every item joined so far is stored; None, or why its group could
        not be (its items were dropped)."""
        if not self._items or self._loop is None:
            return None
        # The group's loop, not asyncio.get_running_loop(): Python 3.11 makes a getpid()
        # system call for that, and the add path made three.
        waiter: asyncio.Future[str | None] = self._loop.create_future()
        self._waiters.append(waiter)
        return await waiter

    def _run(self) -> None:
        waiters, self._waiters = self._waiters, []
        items, self._items = self._items, []
        failure: str | None = None
        try:
            self._commit()
        except sqlite3.Error as exc:
            failure = f"cannot store the torrent: {exc}"
            log.error("%d added torrents not stored, dropped: %s", len(items), exc)
            self._dropped(items)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(failure)
