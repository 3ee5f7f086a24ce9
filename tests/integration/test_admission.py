"""Peer admission limits hold for every connection: a magnet fetch's, and incoming ones."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.polling import wait_until
from torrent import config
from torrent.engine.clock import ManualClock
from torrent.engine.session import Session
from torrent.proto.magnet import Magnet
from torrent.types import InfoHash


class Silent:
    """Listeners that accept connections and never answer; counts those open at once."""

    def __init__(self) -> None:
        self.open = 0
        self.peak = 0
        self.servers: list[asyncio.Server] = []
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self, n: int) -> list[tuple[str, int]]:
        for _ in range(n):
            self.servers.append(await asyncio.start_server(self._serve, "127.0.0.1", 0))
        return [("127.0.0.1", s.sockets[0].getsockname()[1]) for s in self.servers]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.peak = max(self.peak, self.open)
        self._writers.append(writer)
        try:
            await reader.read()  # until the client gives up
        finally:
            self.open -= 1

    def close(self) -> None:
        for w in self._writers:
            w.close()
        for s in self.servers:
            s.close()


async def test_a_magnet_fetch_keeps_to_the_session_peer_limit(tmp_path: Path) -> None:
    settings = config.testing_settings().replace(max_peers_total=2, max_peers_per_torrent=10)
    silent = Silent()
    try:
        addrs = await silent.start(6)
        magnet = Magnet(info_hash=InfoHash(os.urandom(20)))
        async with Session(settings) as s:
            fetch = asyncio.ensure_future(s.fetch_metadata(magnet, peers=addrs))
            await wait_until(lambda: silent.peak >= 2, timeout_s=5, what="two connections")
            await asyncio.sleep(0.3)  # time for a third connection, were one allowed
            fetch.cancel()
            await asyncio.gather(fetch, return_exceptions=True)
        assert silent.peak == 2
    finally:
        silent.close()


async def test_incoming_connections_without_a_handshake_are_capped_and_expire() -> None:
    clock = ManualClock()
    settings = config.testing_settings().replace(max_pending_incoming=2)
    async with asyncio.timeout(10), Session(settings, clock=clock) as s:
        conns = [await asyncio.open_connection("127.0.0.1", s.port) for _ in range(4)]
        # The newest two are closed at once; the first two wait for their handshake.
        for r, _ in conns[2:]:
            assert await r.read(100) == b""
        assert s.pending_incoming == 2
        # the gate is full, so the handshake timeout is shortened to a quarter (at least 1 s)
        clock.advance(max(1.0, settings.handshake_timeout_s / 4) - 0.5)
        s.tick()
        assert s.pending_incoming == 2
        clock.advance(1.0)
        s.tick()
        assert s.pending_incoming == 0
        for r, _ in conns[:2]:
            assert await r.read(100) == b""
        for _, w in conns:
            w.close()
