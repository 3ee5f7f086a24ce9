"""MemoryStore rules (see tracker/store.py): identity, keys, events, expiry, sampling."""

from __future__ import annotations

import random

import pytest

from torrent.proto.tracker_codec import AnnounceEvent, decode_compact_peers
from tracker.store import AnnounceRejected, MemoryStore, PeerAnnounce

IH = b"i" * 20
E = AnnounceEvent


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def addr(n: int, port: int = 6881) -> bytes:
    return bytes([10, 0, n >> 8, n & 0xFF]) + port.to_bytes(2, "big")


def pid(n: int) -> bytes:
    return b"-PT0001-" + n.to_bytes(12, "big")


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
    return PeerAnnounce(ih, pid(n), a if a is not None else addr(n), key, seed, event, numwant, both, ids)


def check_invariants(store: MemoryStore) -> None:
    for sw in store._swarms.values():
        for t in (sw.t4, sw.t6):
            if t is None:
                continue
            assert len(t.pids) == len(t.meta) // 3 == len(t.addrs) // t.stride
            if t.index is None:  # a small table finds its peers by scanning
                assert len(t.pids) <= 8
                assert all(t.slot_of(p) == i for i, p in enumerate(t.pids))
            else:
                assert {p: i for i, p in enumerate(t.pids)} == t.index
            assert 0 <= t.n_leech <= len(t.pids)


def test_counts_seeds_and_leechers_and_never_self() -> None:
    store = MemoryStore(100)
    store.announce_nowait(ann(1, seed=True))
    store.announce_nowait(ann(2))
    res = store.announce_nowait(ann(3))
    assert (res.complete, res.incomplete) == (1, 2)
    assert sorted(decode_compact_peers(res.peers4), key=lambda p: p.ip) == sorted(
        decode_compact_peers(addr(1) + addr(2)), key=lambda p: p.ip
    )
    check_invariants(store)


def test_a_seed_gets_no_seeds() -> None:
    store = MemoryStore(100)
    for n in range(10):
        store.announce_nowait(ann(n, seed=True))
    store.announce_nowait(ann(99))
    res = store.announce_nowait(ann(5, seed=True))
    assert res.peers4 == addr(99)
    res = store.announce_nowait(ann(99))
    assert len(res.peers4) == 60
    assert addr(99) not in [res.peers4[i : i + 6] for i in range(0, 60, 6)]


def test_stopped_removes_and_completed_counts_once() -> None:
    store = MemoryStore(100)
    store.announce_nowait(ann(1))
    res = store.announce_nowait(ann(1, seed=True, event=E.COMPLETED))
    assert (res.complete, res.incomplete, res.downloaded) == (1, 0, 1)
    res = store.announce_nowait(ann(1, seed=True, event=E.COMPLETED))
    assert res.downloaded == 1
    store.announce_nowait(ann(2, seed=True, event=E.COMPLETED))
    res = store.announce_nowait(ann(1, seed=True, event=E.STOPPED))
    assert (res.complete, res.incomplete, res.downloaded, res.peers4) == (1, 0, 2, b"")
    res = store.announce_nowait(ann(2, seed=True, event=E.STOPPED))
    assert (res.complete, res.incomplete) == (0, 0)
    assert store.statistics_nowait().swarms == 0
    assert store.announce_nowait(ann(3, event=E.STOPPED)).complete == 0  # unknown swarm: nothing created
    assert store.statistics_nowait().swarms == 0


def test_key_is_honoured_when_the_address_changes() -> None:
    store = MemoryStore(100)
    store.announce_nowait(ann(1, key=77))
    with pytest.raises(AnnounceRejected):
        store.announce_nowait(ann(1, key=78, a=addr(200)))
    with pytest.raises(AnnounceRejected):
        store.announce_nowait(ann(1, a=addr(200)))
    store.announce_nowait(ann(1, key=77, a=addr(200)))
    assert store.announce_nowait(ann(2)).peers4 == addr(200)
    # no key registered: the newest address wins
    store.announce_nowait(ann(3))
    store.announce_nowait(ann(3, a=addr(201)))
    peers = store.announce_nowait(ann(2)).peers4
    assert addr(201) in [peers[i : i + 6] for i in range(0, len(peers), 6)]
    check_invariants(store)


def test_families_are_separate_and_udp_gets_its_own_family() -> None:
    store = MemoryStore(100)
    v6 = bytes(15) + b"\x01" + b"\x1a\xe1"
    store.announce_nowait(ann(1, a=v6))
    store.announce_nowait(ann(2))
    res = store.announce_nowait(ann(3))
    assert (res.peers4, res.peers6) == (addr(2), v6)
    res = store.announce_nowait(ann(3, both=False))
    assert (res.peers4, res.peers6) == (addr(2), b"")
    res = store.announce_nowait(ann(1, a=v6, both=False))
    assert (res.peers4, res.peers6) == (b"", b"")
    res = store.announce_nowait(ann(4, a=bytes(15) + b"\x02\x00\x01", ids=True))
    assert set(res.peer_ids[:2]) == {pid(2), pid(3)}
    assert res.peer_ids[2:] == (pid(1),)


def test_numwant_and_peer_ids() -> None:
    store = MemoryStore(100)
    for n in range(30):
        store.announce_nowait(ann(n))
    res = store.announce_nowait(ann(0, numwant=7, ids=True))
    assert len(res.peers4) == 42
    assert len(set(res.peer_ids)) == 7
    assert pid(0) not in res.peer_ids
    for ident, packed in zip(res.peer_ids, [res.peers4[i : i + 6] for i in range(0, 42, 6)], strict=True):
        assert packed == addr(int.from_bytes(ident[8:], "big"))
    assert store.announce_nowait(ann(0, numwant=0)).peers4 == b""


def test_expiry_with_a_fake_clock() -> None:
    clock = FakeClock()
    store = MemoryStore(60, clock=clock)
    store.announce_nowait(ann(1))
    store.announce_nowait(ann(2, ih=b"j" * 20))
    clock.now += 30
    store.announce_nowait(ann(3))
    clock.now += 30  # peer 1 is exactly ttl old: still there
    assert store.scrape_nowait([IH])[0].incomplete == 2
    clock.now += 1
    res = store.announce_nowait(ann(4))
    assert (res.incomplete, res.peers4) == (2, addr(3))
    # the idle swarm is freed by collect() without anyone announcing to it
    assert store.statistics_nowait().swarms == 2
    assert store.collect_nowait() == 1
    assert store.statistics_nowait().swarms == 1
    clock.now += 61
    assert store.collect_nowait() == 2
    assert store.statistics_nowait().swarms == 0
    check_invariants(store)


def test_collect_only_touches_due_swarms() -> None:
    clock = FakeClock()
    store = MemoryStore(60, clock=clock)
    for i in range(100):
        store.announce_nowait(ann(1, ih=i.to_bytes(20, "big")))
    clock.now += 30
    assert store.collect_nowait() == 0
    assert len(store._due) == 100  # nothing was due, nothing was popped


def test_random_churn_keeps_the_tables_consistent() -> None:
    rng = random.Random(7)
    clock = FakeClock()
    store = MemoryStore(50, clock=clock, rng=rng)
    live: dict[int, bool] = {}
    for _ in range(5000):
        n = rng.randrange(60)
        event = rng.choice([E.NONE, E.STARTED, E.COMPLETED, E.STOPPED])
        seed = rng.random() < 0.4
        clock.now += rng.random()
        res = store.announce_nowait(ann(n, seed=seed, event=event, numwant=rng.randrange(80)))
        got = [res.peers4[i : i + 6] for i in range(0, len(res.peers4), 6)]
        assert addr(n) not in got
        assert len(set(got)) == len(got)
        if seed:
            t4 = store._swarms[IH].t4
            slots = [t4.slot_of(pid(int.from_bytes(g[2:4], "big"))) for g in got]
            assert all(slot is not None and slot < t4.n_leech for slot in slots)
        if event is E.STOPPED:
            live.pop(n, None)
        else:
            live[n] = seed
    check_invariants(store)


def test_sample_is_uniform_chi_square() -> None:
    """Swarm of 200, numwant 50: every peer shows up about equally often."""
    store = MemoryStore(10_000, rng=random.Random(12345))
    n_peers, rounds = 200, 2000
    for n in range(n_peers):
        store.announce_nowait(ann(n))
    seen = [0] * n_peers
    requester_rng = random.Random(1)
    for _ in range(rounds):
        me = requester_rng.randrange(n_peers)
        res = store.announce_nowait(ann(me))
        got = [int.from_bytes(res.peers4[i + 2 : i + 4], "big") for i in range(0, len(res.peers4), 6)]
        assert len(got) == 50
        assert me not in got
        assert len(set(got)) == 50
        for g in got:
            seen[g] += 1
    # each peer is a requester ~10 times (then it cannot be picked), so compare with
    # its own expectation: rounds it was not the requester x 50 / 199
    mean = rounds * 50 / n_peers
    chi2 = sum((s - mean) ** 2 / mean for s in seen)
    # 199 degrees of freedom: the 99.9th percentile is about 267
    assert chi2 < 290, chi2


def _state(store: MemoryStore) -> list[object]:
    out: list[object] = []
    for ih, sw in sorted(store._swarms.items()):
        out.append((ih, sw.downloaded, sw.purge_at))
        for t in (sw.t4, sw.t6):
            if t is not None:
                out.append((list(t.pids), bytes(t.addrs), list(t.meta), t.n_leech))
    return out


def test_reannounce_answers_as_announce_does() -> None:
    """Two stores with the same history and random source: one answers every announce
    with announce_nowait, the other tries reannounce_nowait first. Same answers, same
    tables, and the cheap path answers most announces."""
    rng = random.Random(21)
    clock = FakeClock()
    slow_rng, fast_rng = random.Random(4), random.Random(4)
    slow = MemoryStore(40, clock=clock, rng=slow_rng)
    fast = MemoryStore(40, clock=clock, rng=fast_rng)
    v6 = bytes(15) + b"\x01"
    cheap = 0
    for _ in range(6000):
        n = rng.randrange(70)
        clock.now += rng.random() * 0.05
        seed = (n % 3 == 0) != (rng.random() < 0.03)
        event = E.NONE if rng.random() < 0.9 else rng.choice([E.STARTED, E.COMPLETED, E.STOPPED])
        a = addr(n) if n % 18 else v6 + n.to_bytes(2, "big")  # IPv6 peers in the second swarm only
        if rng.random() < 0.02:
            a = addr(n, 7000)  # a peer moving
        numwant = 0 if event is E.STOPPED else rng.choice([0, 3, 30, 50, 200])
        ih = IH if n % 9 else b"j" * 20
        pa = PeerAnnounce(ih, pid(n), a, None, seed, event, numwant, False, False)
        want = slow.announce_nowait(pa)
        got = None
        if event is E.NONE:
            got = fast.reannounce_nowait(ih, pid(n), a, seed, numwant)
        if got is None:
            res = fast.announce_nowait(pa)
            got = (res.complete, res.incomplete, res.peers4 or res.peers6)
        else:
            cheap += 1
            assert addr(n) not in [bytes(got[2][i : i + 6]) for i in range(0, len(got[2]), 6)]
        assert (got[0], got[1], bytes(got[2])) == (want.complete, want.incomplete, want.peers4 or want.peers6)
    assert _state(fast) == _state(slow)
    assert fast_rng.getstate() == slow_rng.getstate()
    check_invariants(fast)
    assert cheap > 3000


def test_reannounce_declines_without_changing_anything() -> None:
    clock = FakeClock()
    rng = random.Random(5)
    store = MemoryStore(60, clock=clock, rng=rng)
    for n in range(20):
        store.announce_nowait(ann(n, seed=n < 5))
    before = [_state(store), rng.getstate()]
    assert store.reannounce_nowait(b"x" * 20, pid(1), addr(1), False, 50) is None  # unknown swarm
    assert store.reannounce_nowait(IH, pid(99), addr(99), False, 50) is None  # unknown peer
    assert store.reannounce_nowait(IH, pid(7), addr(7, 7000), False, 50) is None  # moved
    assert store.reannounce_nowait(IH, pid(7), addr(7), True, 50) is None  # now a seed
    assert store.reannounce_nowait(IH, pid(1), addr(1), False, 50) is None  # no longer a seed
    v6 = bytes(15) + b"\x01\x1a\xe1"
    assert store.reannounce_nowait(IH, pid(7), v6, False, 50) is None  # no IPv6 table
    assert [_state(store), rng.getstate()] == before
    clock.now += 61  # every peer is past its time: the swarm must be purged first
    assert store.reannounce_nowait(IH, pid(7), addr(7), False, 50) is None
    assert [_state(store), rng.getstate()] == before
    clock.now -= 61
    seeds, leech, peers = store.reannounce_nowait(IH, pid(7), addr(7), False, 50)  # type: ignore[misc]
    assert (seeds, leech, len(peers)) == (5, 15, 19 * 6)
    seeds, leech, peers = store.reannounce_nowait(IH, pid(2), addr(2), True, 50)  # type: ignore[misc]
    assert (seeds, leech, len(peers)) == (5, 15, 15 * 6)  # a seed gets the leechers only
    assert store.reannounce_nowait(IH, pid(7), addr(7), False, 0) == (5, 15, b"")
