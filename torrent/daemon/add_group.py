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
        #: The open group's result (None: stored; else why not), and its items.
        self._result: asyncio.Future[str | None] | None = None
        self._items: list[T] = []

    def join(self, item: T) -> None:
        """Add ``item`` (just inserted as pending) to the open group, opening one (its
        commit runs at the next turn of the loop) when there is none."""
        if self._result is None:
            loop = asyncio.get_running_loop()
            self._result = loop.create_future()
            loop.call_soon(self._run)
        self._items.append(item)

    async def wait(self) -> str | None:
        """Wait until every item joined so far is stored; None, or why its group could
        not be (its items were dropped)."""
        result = self._result
        if result is None:
            return None
        return await asyncio.shield(result)

    def _run(self) -> None:
        result, self._result = self._result, None
        items, self._items = self._items, []
        failure: str | None = None
        try:
            self._commit()
        except sqlite3.Error as exc:
            failure = f"cannot store the torrent: {exc}"
            log.error("%d added torrents not stored, dropped: %s", len(items), exc)
            self._dropped(items)
        if result is not None and not result.done():
            result.set_result(failure)
