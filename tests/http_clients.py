"""Both ways an :class:`HttpClient` sends a plain-HTTP GET, for tests that run over each:
``own`` (its own HTTP/1.1 GET, aiohttp never loaded) and ``aiohttp`` (a client handed an
aiohttp session, which it then uses for every request)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp

from torrent.engine.http_client import HttpClient

KINDS = ("own", "aiohttp")


@contextlib.asynccontextmanager
async def http_client(kind: str) -> AsyncIterator[HttpClient]:
    """An :class:`HttpClient` of ``kind``; an ``own`` one must not have started aiohttp by the end."""
    if kind == "own":
        client = HttpClient("pytorrent-test/1.0")
        try:
            yield client
            assert not client.started, "a plain-HTTP GET loaded aiohttp"
        finally:
            await client.close()
        return
    async with aiohttp.ClientSession() as session:
        yield HttpClient(session=session)
