"""What a DHT node stores for others (BEP 5): peers with expiry and bounds, tokens, rate limits."""

from __future__ import annotations

import random

from torrent.proto.dht.storage import PeerStore, RateLimiter, TokenIssuer

IH = [bytes([i]) * 20 for i in range(10)]


def test_peers_expire_and_a_reannounce_refreshes() -> None:
    s = PeerStore(peer_ttl_s=100)
    rng = random.Random(0)
    s.add(IH[0], ("192.0.2.1", 1), 0.0)
    s.add(IH[0], ("192.0.2.2", 2), 50.0)
    s.add(IH[0], ("192.0.2.1", 1), 60.0)  # refreshed
    assert sorted(s.get(IH[0], 99.0, rng)) == [("192.0.2.1", 1), ("192.0.2.2", 2)]
    assert s.get(IH[0], 155.0, rng) == [("192.0.2.1", 1)]
    assert s.get(IH[0], 160.0, rng) == []
    assert len(s) == 0
    assert s.info_hash_count == 0


def test_peer_bound_evicts_the_oldest_announce() -> None:
    s = PeerStore(max_peers=3)
    for i in range(5):
        s.add(IH[i % 2], (f"192.0.2.{i}", 1), float(i))
    assert len(s) == 3
    assert s.evicted == 2
    rng = random.Random(0)
    assert sorted(s.get(IH[0], 5.0, rng)) == [("192.0.2.2", 1), ("192.0.2.4", 1)]
    assert s.get(IH[1], 5.0, rng) == [("192.0.2.3", 1)]


def test_info_hash_bound_evicts_the_swarm_of_the_oldest_announce() -> None:
    s = PeerStore(max_info_hashes=2)
    s.add(IH[0], ("192.0.2.1", 1), 0.0)
    s.add(IH[1], ("192.0.2.2", 1), 1.0)
    s.add(IH[0], ("192.0.2.3", 1), 2.0)
    s.add(IH[2], ("192.0.2.4", 1), 3.0)  # IH[0] holds the oldest announce: its swarm goes
    assert s.info_hash_count == 2
    assert len(s) == 2
    assert s.get(IH[0], 4.0, random.Random(0)) == []


def test_get_samples_and_filters_by_family() -> None:
    s = PeerStore()
    for i in range(100):
        s.add(IH[0], (f"192.0.2.{i}", 1), 0.0)
    s.add(IH[0], ("2001:db8::1", 1), 0.0)
    got = s.get(IH[0], 1.0, random.Random(0), limit=50, v6=False)
    assert len(got) == 50
    assert len(set(got)) == 50
    assert all(":" not in h for h, _ in got)
    assert s.get(IH[0], 1.0, random.Random(0), v6=True) == [("2001:db8::1", 1)]


def test_tokens_are_bound_to_the_ip_and_valid_up_to_two_rotations() -> None:
    t = TokenIssuer(random.Random(1), 0.0, rotate_s=300)
    token = t.issue("192.0.2.1", 10.0)
    assert len(token) == 8
    assert t.valid(token, "192.0.2.1", 10.0)
    assert not t.valid(token, "192.0.2.2", 10.0)
    assert t.valid(token, "192.0.2.1", 350.0)  # one rotation later: still accepted
    assert not t.valid(token, "192.0.2.1", 650.0)  # two rotations: gone
    late = TokenIssuer(random.Random(1), 0.0, rotate_s=300)
    token = late.issue("192.0.2.1", 0.0)
    assert not late.valid(token, "192.0.2.1", 5000.0)  # a long silence forgets both secrets


def test_rate_limiter_bursts_then_refills_and_stays_bounded() -> None:
    r = RateLimiter(rate_per_s=10, burst=5, max_tracked=3)
    assert [r.allow("a", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert r.allow("a", 0.1)
    assert not r.allow("a", 0.1)
    assert r.allow("b", 0.1)  # per IP
    for host in "cdefg":
        r.allow(host, 0.2)
    assert len(r) == 3
    assert RateLimiter(0, 0).allow("x", 0.0)  # rate 0: no limit


def test_one_swarm_and_one_address_are_bounded_too() -> None:
    s = PeerStore(max_per_swarm=3, max_per_ip=4)
    for port in range(1, 6):
        assert s.add(IH[0], (f"192.0.2.{port}", port), float(port))
    assert sorted(s.get(IH[0], 6.0, random.Random(0))) == [
        ("192.0.2.3", 3),
        ("192.0.2.4", 4),
        ("192.0.2.5", 5),
    ]
    assert s.evicted == 2
    # one address: four entries, then no more (a refresh of one it has is still fine)
    assert all(s.add(IH[i], ("198.51.100.1", 1), 7.0) for i in range(1, 5))
    assert not s.add(IH[5], ("198.51.100.1", 1), 7.0)
    assert not s.add(IH[1], ("198.51.100.1", 2), 7.0)
    assert s.add(IH[1], ("198.51.100.1", 1), 8.0)
    s.expire(8.0 + s.peer_ttl_s - 0.5)  # the first four expire: the address has room again
    assert s.add(IH[6], ("198.51.100.1", 1), 8.0 + s.peer_ttl_s)
