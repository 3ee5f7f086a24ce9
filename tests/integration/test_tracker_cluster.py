"""``--store redis-cluster://``: key placement, two tracker processes, and a failover.

The cluster is real: six Debian ``redis-server`` processes on loopback (see
``tracker_cluster_fixture``). The failover test SIGKILLs a master under a bounded
announce load and checks what the issue promises: the announces that hit the dead
shard fail with ``tracker store unavailable`` (the others go on), service comes back
by itself once the replica is promoted, and no tracker process exits.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator
from urllib.parse import quote_from_bytes

import aiohttp
import pytest
from redis.crc import key_slot

from torrent.proto import bencoding
from torrent.proto.tracker_codec import AnnounceEvent
from tracker.settings import TrackerSettings
from tracker.store import PeerAnnounce, StoreUnavailable
from tracker.store_redis_cluster import RedisClusterStore, parse_cluster_url

from .test_tracker_processes import Tracker, announce, peer_ports
from .tracker_cluster_fixture import (
    NODE_TIMEOUT_MS,
    RedisCluster,
    fresh_redis_cluster,  # noqa: F401
    redis_cluster,  # noqa: F401
)

#: Info hashes spread over every bucket range, so over every master.
HASHES = [bytes([0x5A, n * 4]) + bytes([n]) * 18 for n in range(64)]


@pytest.fixture
def trackers() -> Iterator[list[Tracker]]:
    started: list[Tracker] = []
    yield started
    for t in started:
        t.stop()


def test_cluster_url_parsing() -> None:
    assert parse_cluster_url("redis-cluster://a:1,[::1]:7000/") == ([("a", 1), ("::1", 7000)], None, None)
    assert parse_cluster_url("redis-cluster://u:pw@h:7000")[1:] == ("u", "pw")
    for bad in ("redis://h:1", "redis-cluster://h", "redis-cluster://h:0", "redis-cluster://h:x,h:2"):
        with pytest.raises(ValueError, match=r"HOST:PORT|not a redis-cluster"):
            parse_cluster_url(bad)
        if bad.startswith("redis-cluster"):
            with pytest.raises(ValueError, match="is not HOST:PORT"):
                TrackerSettings(store=bad).validate()
    TrackerSettings(store="redis-cluster://h:1,h:2").validate()
    assert "pw" not in " ".join(TrackerSettings(store="redis-cluster://u:pw@h:1").describe())


async def test_a_swarm_and_its_index_share_one_slot_and_swarms_spread() -> None:
    store = RedisClusterStore("redis-cluster://127.0.0.1:1", 60)
    try:
        slots = set()
        for ih in HASHES:
            b = store._buckets[store._bucket(ih)]
            keys = [b + ih + s for s in (b":l4", b":s4", b":l6", b":s6", b":p", b":d")] + [b + b"swarms"]
            assert len({key_slot(k) for k in keys}) == 1
            slots.add(key_slot(keys[0]))
        assert len(slots) > 32  # different swarms land on different slots
        # nothing listens on port 1: an announce fails as an outage, not a crash
        with pytest.raises(StoreUnavailable):
            await store.announce(PeerAnnounce(HASHES[0], b"-XX0001-" + bytes(12), bytes(6), None, False,
                                              AnnounceEvent.NONE, 10))  # fmt: skip
    finally:
        await store.aclose()


def test_two_trackers_share_the_cluster(
    redis_cluster: RedisCluster,  # noqa: F811
    trackers: list[Tracker],
) -> None:
    a = Tracker("--no-udp", "--store", redis_cluster.url)
    trackers.append(a)
    b = Tracker("--no-udp", "--store", redis_cluster.url)
    trackers.append(b)
    for ih in HASHES[::8]:
        assert peer_ports(announce(a.port, 1, ih)) == set()
        assert peer_ports(announce(b.port, 2, ih)) == {1}
        assert peer_ports(announce(a.port, 1, ih)) == {2}
    # a scrape of hashes on several masters (one script per bucket, in parallel)
    query = "&".join(f"info_hash={quote_from_bytes(ih, safe='')}" for ih in HASHES[::8])
    with urllib.request.urlopen(f"http://127.0.0.1:{b.port}/scrape?{query}", timeout=5) as resp:
        files = bencoding.decode(resp.read())[b"files"]
    assert {ih: files[ih][b"incomplete"] for ih in HASHES[::8]} == dict.fromkeys(HASHES[::8], 2)
    assert a.stop() == 0
    assert b.stop() == 0


async def _announce(http: aiohttp.ClientSession, port: int, ih: bytes, n: int) -> bytes | None:
    """One announce; the failure reason, or None when it succeeded."""
    query = (
        f"info_hash={quote_from_bytes(ih, safe='')}&peer_id=-FO0001-{n:012d}"
        f"&port={7000 + n % 1000}&left=1&compact=1"
    )
    async with http.get(f"http://127.0.0.1:{port}/announce?{query}") as resp:
        assert resp.status == 200
        body = bencoding.decode(await resp.read())
    reason = body.get(b"failure reason")
    assert reason is None or isinstance(reason, bytes)
    return reason


@pytest.mark.slow
async def test_failover_under_load(
    fresh_redis_cluster: RedisCluster,  # noqa: F811
    trackers: list[Tracker],
) -> None:
    cluster = fresh_redis_cluster
    a = Tracker("--no-udp", "--store", cluster.url)
    trackers.append(a)
    b = Tracker("--no-udp", "--store", cluster.url)
    trackers.append(b)
    ports = [a.port, b.port]
    ok = failed = 0
    other: list[bytes] = []
    killed_at: float | None = None
    last_failure = 0.0

    async def worker(w: int, stop: asyncio.Event) -> None:
        nonlocal ok, failed, last_failure
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            n = 0
            while not stop.is_set():
                ih = HASHES[(w * 7 + n) % len(HASHES)]
                reason = await _announce(http, ports[n % 2], ih, w * 100_000 + n % 10)
                n += 1
                if reason is None:
                    ok += 1
                    if ok >= 500:
                        warm.set()
                else:
                    assert reason == b"tracker store unavailable", reason
                    failed += 1
                    last_failure = time.monotonic()
                    other.append(ih)

    stop = asyncio.Event()
    warm = asyncio.Event()
    async with asyncio.timeout(60), asyncio.TaskGroup() as tg:
        for w in range(8):  # eight announces in flight at any time: a bounded load
            tg.create_task(worker(w, stop))
        await warm.wait()
        assert failed == 0
        victim = cluster.masters()[0]
        cluster.kill(victim)
        killed_at = time.monotonic()
        # the promoted replica takes over within node timeout + election; then a
        # stretch of 1 s with no failure at all means every shard serves again
        bound = killed_at + 30
        while time.monotonic() < bound:
            await asyncio.sleep(0.1)
            if failed and time.monotonic() - last_failure > 1.0:
                break
        stop.set()
    assert killed_at is not None
    recovered_s = last_failure - killed_at
    assert failed > 0, "no announce hit the dead master"
    assert time.monotonic() - last_failure > 1.0, f"still failing {time.monotonic() - killed_at:.1f} s after"
    # failure detection takes node timeout to 2x it, the election ~1 s; leave room for a
    # loaded machine
    assert recovered_s < NODE_TIMEOUT_MS / 1000 * 6, recovered_s
    # not every shard was down: only the swarms of the killed master's slots failed
    assert len(set(other)) < len(HASHES)
    assert a.proc.poll() is None
    assert b.proc.poll() is None
    cluster.wait_ok()
    # soft state: a swarm whose shard was lost fills again with the next announces
    ih = other[0]
    async with aiohttp.ClientSession() as http:
        assert await _announce(http, a.port, ih, 1) is None
        assert await _announce(http, b.port, ih, 2) is None
    assert {1, 2} <= peer_ports(announce(a.port, 3, ih, numwant=200))
    print(f"failover: {failed} of {ok + failed} announces failed, last {recovered_s:.2f} s after the kill")
    assert a.stop() == 0
    assert b.stop() == 0
