"""The session's HTTP client for trackers and web seeds, started on first use.

aiohttp costs about 120 ms and 20 MiB to import (it builds its TLS contexts then), so a
session whose torrents reach no HTTP tracker or web seed (UDP trackers, the DHT, a
``--peer``) never loads it. The first HTTP announce or web seed request does, and every
later one shares the same connection pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp

__all__ = ["HttpClient"]

#: Connections the pool keeps open at once, across every host.
POOL_LIMIT = 20


class HttpClient:
    """One aiohttp client session, made when :meth:`session` is first called."""

    def __init__(self, user_agent: str = "", *, session: aiohttp.ClientSession | None = None) -> None:
        """``session``: use this one instead (the caller closes it; :meth:`close` does not)."""
        self._user_agent = user_agent
        self._session = session
        self._owned = session is None

    @property
    def started(self) -> bool:
        return self._session is not None

    def session(self) -> aiohttp.ClientSession:
        """The client session; call from a coroutine on the loop that will use it."""
        if self._session is None:
            import aiohttp  # the first HTTP request of this process pays for the import

            headers = {"User-Agent": self._user_agent} if self._user_agent else None
            self._session = aiohttp.ClientSession(
                headers=headers, connector=aiohttp.TCPConnector(limit=POOL_LIMIT, force_close=False)
            )
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._owned:
            await session.close()
