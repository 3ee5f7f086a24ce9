"""Random-swarm floods against the tracker's memory, and UDP and HTTP agreeing on port 0.

50,000 announces for random info hashes used to grow the tracker by ~55 MB for an hour
(one ~1.1 KB swarm each, living for the peer ttl). Now a one-peer swarm costs under
700 bytes, ``--max-swarms`` bounds how many there are (the announce that would start one
more gets a failure reason), and a swarm whose peers are gone is freed at once.
"""

from __future__ import annotations

import os
import re
import tracemalloc
from collections.abc import AsyncIterator
from urllib.parse import quote_from_bytes

import aiohttp
import pytest

from tests.integration.test_tracker_udp import Client
from torrent.proto import bencoding
from torrent.proto import tracker_codec_udp as tcu
from torrent.proto.tracker_codec import AnnounceEvent
from tracker.server import TrackerServer
from tracker.settings import TrackerSettings
from tracker.store import TRACKER_FULL, MemoryStore, PeerAnnounce, TrackerFull

E = AnnounceEvent


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def random_announce(event: E = E.STARTED) -> PeerAnnounce:
    return PeerAnnounce(os.urandom(20), os.urandom(20), os.urandom(4) + b"\x1a\xe1", 7, False, event, 50)


def test_a_random_hash_flood_stops_at_max_swarms_in_bounded_memory() -> None:
    store = MemoryStore(3600, max_swarms=10_000)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        refused = 0
        for _ in range(30_000):
            try:
                store.announce_nowait(random_announce())
            except TrackerFull:
                refused += 1
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert store.statistics_nowait().swarms == 10_000
    assert refused == 20_000
    # a one-peer swarm: ~650 bytes (it was ~1,040: a dict and two arrays fewer)
    assert grown / 10_000 < 700


def test_a_swarm_whose_peers_expired_is_freed_by_the_scrape_that_finds_it() -> None:
    clock = FakeClock()
    store = MemoryStore(60, clock=clock, max_swarms=1)
    a = random_announce()
    store.announce_nowait(a)
    clock.now += 61
    assert store.scrape_nowait([a.info_hash])[0].incomplete == 0
    assert store.statistics_nowait().swarms == 0
    store.announce_nowait(random_announce())  # its place is free again


@pytest.fixture
async def small_tracker() -> AsyncIterator[TrackerServer]:
    settings = TrackerSettings(host="127.0.0.1", port=0, udp_port=0, max_swarms=3)
    async with TrackerServer(settings) as srv:
        yield srv


def announce_url(port: int, ih: bytes, n: int, udp_port: int = 7000) -> str:
    pid = b"-MF0001-" + n.to_bytes(12, "big")
    return (
        f"http://127.0.0.1:{port}/announce?info_hash={quote_from_bytes(ih, safe='')}"
        f"&peer_id={quote_from_bytes(pid, safe='')}&port={udp_port}&left=1&compact=1"
    )


async def test_a_full_tracker_answers_with_a_failure_reason_on_http_and_udp(
    small_tracker: TrackerServer,
) -> None:
    assert small_tracker.udp_port is not None
    udp = Client("127.0.0.1", small_tracker.udp_port)
    try:
        async with aiohttp.ClientSession() as http:
            for n in range(3):
                async with http.get(announce_url(small_tracker.http_port, bytes([n]) * 20, n)) as resp:
                    assert b"failure" not in await resp.read()
            async with http.get(announce_url(small_tracker.http_port, b"\x09" * 20, 9)) as resp:
                assert bencoding.decode(await resp.read()) == {b"failure reason": TRACKER_FULL.encode()}
            answer = await udp.announce(9, info_hash=b"\x08" * 20)
            assert isinstance(answer, tcu.UdpError)
            assert answer.message == TRACKER_FULL
            async with http.get(f"http://127.0.0.1:{small_tracker.http_port}/metrics") as resp:
                metrics = await resp.text()
        assert re.search(r'pytorrent_tracker_failures_total\{reason="full"\} 2\b', metrics)
    finally:
        udp.close()


async def test_udp_and_http_both_refuse_port_0(small_tracker: TrackerServer) -> None:
    assert small_tracker.udp_port is not None
    udp = Client("127.0.0.1", small_tracker.udp_port)
    try:
        answer = await udp.announce(1, port=0)
        assert isinstance(answer, tcu.UdpError)
        assert answer.message == "bad port"
        url = announce_url(small_tracker.http_port, b"\x01" * 20, 1, udp_port=0)
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            assert bencoding.decode(await resp.read()) == {b"failure reason": b"bad port"}
        assert small_tracker.service.counters.failures_bad_request == 2
        assert (await small_tracker.store.statistics()).peers == 0
    finally:
        udp.close()
