"""One contract, three stores: MemoryStore, RedisStore (a real redis-server) and
RedisClusterStore (a real 6-node Redis Cluster)."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from torrent.proto.tracker_codec import AnnounceEvent, decode_compact_peers
from tracker.store import (
    AnnounceRejected,
    MemoryStore,
    PeerAnnounce,
    PeerStore,
    StoreUnavailable,
    TrackerFull,
)
from tracker.store_redis import RedisStore
from tracker.store_redis_cluster import RedisClusterStore

from .tracker_cluster_fixture import RedisCluster, redis_cluster  # noqa: F401
from .tracker_redis_fixture import RedisServer, redis_server  # noqa: F401

E = AnnounceEvent
IH = b"c" * 20


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def addr(n: int) -> bytes:
    return bytes([10, 0, 0, n]) + (6000 + n).to_bytes(2, "big")


V6 = bytes(15) + b"\x01"


def pid(n: int) -> bytes:
    return b"-CT0001-" + n.to_bytes(12, "big")


def ann(
    n: int,
    *,
    seed: bool = False,
    event: E = E.NONE,
    numwant: int = 50,
    key: int | None = None,
    a: bytes | None = None,
    ih: bytes = IH,
    ids: bool = False,
    both: bool = True,
) -> PeerAnnounce:
    return PeerAnnounce(ih, pid(n), addr(n) if a is None else a, key, seed, event, numwant, both, ids)


def ports(packed: bytes, size: int = 6) -> set[int]:
    return {p.port - 6000 for p in decode_compact_peers(packed, ipv6=size == 18)}


_prefixes = itertools.count()


def make_store(request: pytest.FixtureRequest, clock: FakeClock, **kwargs: Any) -> PeerStore:
    """The store ``request.param`` names, with keys of its own."""
    if request.param == "memory":
        return MemoryStore(60, clock=clock, **kwargs)
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return RedisStore(server.url, 60, clock=clock, prefix=b"r%d:" % next(_prefixes), **kwargs)
    # one cluster for the module: each test gets keys of its own
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    return RedisClusterStore(cluster.url, 60, clock=clock, prefix=b"c%d:" % next(_prefixes), **kwargs)


@pytest.fixture(params=["memory", "redis", "cluster"])
async def store_and_clock(request: pytest.FixtureRequest) -> AsyncIterator[tuple[PeerStore, FakeClock]]:
    clock = FakeClock()
    store = make_store(request, clock)
    yield store, clock
    await store.aclose()


@pytest.fixture(params=["memory", "redis", "cluster"])
async def small_store(request: pytest.FixtureRequest) -> AsyncIterator[PeerStore]:
    """A store that holds at most 4 swarms (the cluster in one bucket, so exactly 4)."""
    extra: dict[str, Any] = {"buckets": 1} if request.param == "cluster" else {}
    store = make_store(request, FakeClock(), max_swarms=4, **extra)
    yield store
    await store.aclose()


async def test_contract(store_and_clock: tuple[PeerStore, FakeClock]) -> None:
    store, clock = store_and_clock
    async with asyncio.timeout(10):
        r = await store.announce(ann(1, event=E.STARTED, key=11))
        assert (r.complete, r.incomplete, r.downloaded, r.peers4) == (0, 1, 0, b"")
        r = await store.announce(ann(2, seed=True, event=E.COMPLETED))
        assert (r.complete, r.incomplete, r.downloaded) == (1, 1, 1)
        assert ports(r.peers4) == {1}
        r = await store.announce(ann(2, seed=True, event=E.COMPLETED))  # counted once
        assert r.downloaded == 1
        r = await store.announce(ann(3, seed=True))
        assert ports(r.peers4) == {1}  # a seed gets no seeds, never itself
        r = await store.announce(ann(4, ids=True))
        assert ports(r.peers4) == {1, 2, 3}
        assert set(r.peer_ids) == {pid(1), pid(2), pid(3)}
        r = await store.announce(ann(4, numwant=2))
        assert len(ports(r.peers4)) == 2
        assert 4 not in ports(r.peers4)
        # key honoured on an address change
        with pytest.raises(AnnounceRejected):
            await store.announce(ann(1, a=addr(99)))
        await store.announce(ann(1, a=addr(99), key=11))
        r = await store.announce(ann(4))
        assert 99 in ports(r.peers4)
        assert 1 not in ports(r.peers4)
        # IPv6 peers: separate family, in peers6 over HTTP, not in a UDP (same-family) answer
        await store.announce(ann(5, a=V6 + (6005).to_bytes(2, "big")))
        r = await store.announce(ann(4))
        assert ports(r.peers6, 18) == {5}
        r = await store.announce(ann(4, both=False))
        assert r.peers6 == b""
        assert (r.complete, r.incomplete) == (2, 3)
        # stopped removes
        r = await store.announce(ann(3, seed=True, event=E.STOPPED))
        assert (r.complete, r.incomplete, r.peers4) == (1, 3, b"")
        stats = await store.scrape([IH, b"z" * 20])
        assert [(s.complete, s.downloaded, s.incomplete) for s in stats] == [(1, 1, 3), (0, 0, 0)]
        full = await store.full_scrape(10)
        assert list(full) == [IH]
        st = await store.statistics()
        assert (st.swarms, st.peers, st.seeds, st.downloaded) == (1, 4, 1, 1)
        # expiry
        clock.now += 40
        await store.announce(ann(4))
        clock.now += 21
        r = await store.announce(ann(6))
        assert ports(r.peers4) == {4}
        assert (r.complete, r.incomplete) == (0, 2)
        clock.now += 61
        assert (await store.collect()) >= 2
        assert (await store.statistics()).peers == 0


async def test_max_swarms_refuses_new_swarms_and_an_emptied_swarm_frees_its_place(
    small_store: PeerStore,
) -> None:
    store = small_store
    hashes = [bytes([n]) * 20 for n in range(6)]
    for n, ih in enumerate(hashes[:4]):
        await store.announce(ann(n, ih=ih, event=E.STARTED))
    with pytest.raises(TrackerFull):
        await store.announce(ann(9, ih=hashes[4], event=E.STARTED))
    # a known swarm still takes new peers; a stopped announce for a new hash is no swarm
    assert (await store.announce(ann(8, ih=hashes[0]))).incomplete == 2
    assert (await store.announce(ann(9, ih=hashes[5], event=E.STOPPED))).incomplete == 0
    # the last peer of a swarm stops: the swarm is gone at once, and its place is free
    await store.announce(ann(3, ih=hashes[3], event=E.STOPPED))
    assert (await store.announce(ann(9, ih=hashes[4], event=E.STARTED))).incomplete == 1
    assert (await store.statistics()).swarms == 4


async def test_tallies_are_swapped_per_peer_across_families_and_expire(
    store_and_clock: tuple[PeerStore, FakeClock],
) -> None:
    """Rule 6: the baseline an announce leaves is what the next one (from any process
    sharing the store, over either family) gets back."""
    store, clock = store_and_clock
    v6 = V6 + (6001).to_bytes(2, "big")
    assert (await store.announce(ann(1, event=E.STARTED)._replace(tally=b"A"))).tally is None
    assert (await store.announce(ann(1, a=v6)._replace(tally=b"B"))).tally == b"A"
    assert (await store.announce(ann(1)._replace(tally=b"C"))).tally == b"B"
    assert (await store.announce(ann(2)._replace(tally=b"x"))).tally is None  # per peer
    stopped = await store.announce(ann(1, event=E.STOPPED)._replace(tally=b""))
    assert stopped.tally == b"C"
    assert (await store.announce(ann(1)._replace(tally=b"D"))).tally is None
    # a public announce neither reads nor changes it
    assert (await store.announce(ann(1))).tally is None
    assert (await store.announce(ann(1)._replace(tally=b"E"))).tally == b"D"
    clock.now += 61  # past the ttl: peer and tally are gone
    assert (await store.announce(ann(1)._replace(tally=b"F"))).tally is None


async def test_refuse_new_refuses_only_peers_the_swarm_does_not_hold(
    store_and_clock: tuple[PeerStore, FakeClock],
) -> None:
    store, _clock = store_and_clock
    with pytest.raises(AnnounceRejected, match="ratio"):
        await store.announce(ann(1, event=E.STARTED)._replace(refuse_new="ratio below the floor"))
    assert (await store.statistics()).swarms == 0  # nothing was created
    await store.announce(ann(1, event=E.STARTED))
    r = await store.announce(ann(1)._replace(refuse_new="ratio below the floor"))  # goes on
    assert r.incomplete == 1
    r = await store.announce(ann(1, event=E.STOPPED)._replace(refuse_new="ratio below the floor"))
    assert r.incomplete == 0


async def test_sample_is_spread_over_the_swarm(store_and_clock: tuple[PeerStore, FakeClock]) -> None:
    store, _ = store_and_clock
    async with asyncio.timeout(20):
        for n in range(40):
            await store.announce(ann(n))
        seen: dict[int, int] = dict.fromkeys(range(40), 0)
        rng = random.Random(3)
        for _ in range(200):
            me = rng.randrange(40)
            r = await store.announce(ann(me, numwant=10))
            got = ports(r.peers4)
            assert len(got) == 10
            assert me not in got
            for g in got:
                seen[g] += 1
        # expected about 50 each; a broken sampler gives 0 to most peers
        assert min(seen.values()) > 20, seen
        assert max(seen.values()) < 90, seen


async def test_redis_down_and_back(redis_server: RedisServer) -> None:  # noqa: F811
    store = RedisStore(redis_server.url, 60, timeout_s=0.5)
    try:
        async with asyncio.timeout(20):
            await store.announce(ann(1))
            redis_server.stop()
            with pytest.raises(StoreUnavailable) as info:
                await store.announce(ann(2))
            assert info.value.reason == "tracker store unavailable"
            with pytest.raises(StoreUnavailable):
                await store.scrape([IH])
            redis_server.start()  # same port, empty (no persistence)
            for _ in range(50):
                try:
                    r = await store.announce(ann(2))
                    break
                except StoreUnavailable:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("the store did not recover")
            assert r.incomplete == 1
    finally:
        await store.aclose()


def _unused(*_: Callable[..., Any]) -> None: ...
