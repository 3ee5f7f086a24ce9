"""Hypothesis: KRPC round-trips, random bytes raise only our error, and the node and its table keep their bounds."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torrent.proto import bencoding
from torrent.proto.dht import DhtConfig, DhtProtocol, krpc
from torrent.proto.dht.krpc import KrpcDecodeError, NodeInfo
from torrent.proto.dht.lookup import Lookup
from torrent.proto.dht.routing import RoutingTable
from torrent.proto.dht.storage import PeerStore

#: no per-example deadline: the machine running the suite may be busy
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(SETTINGS, max_examples=60)

ids = st.binary(min_size=20, max_size=20)
tids = st.binary(min_size=0, max_size=krpc.MAX_TID_LENGTH)
ports = st.integers(1, 65535)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
want = st.sampled_from([(), (b"n4",), (b"n6",), (b"n4", b"n6")])
nodes4 = st.lists(st.builds(NodeInfo, ids, ipv4, ports), max_size=krpc.MAX_NODES).map(tuple)
nodes6 = st.lists(st.builds(NodeInfo, ids, ipv6, ports), max_size=krpc.MAX_NODES).map(tuple)
peers = st.lists(st.tuples(ipv4 | ipv6, ports), max_size=krpc.MAX_VALUES).map(tuple)

messages = st.one_of(
    st.builds(krpc.Ping, tids, ids),
    st.builds(krpc.FindNode, tids, ids, ids, want),
    st.builds(krpc.GetPeers, tids, ids, ids, want),
    st.builds(
        krpc.AnnouncePeer, tids, ids, ids, ports, st.binary(max_size=krpc.MAX_TOKEN_LENGTH), st.booleans()
    ),
    st.builds(
        krpc.Response,
        tids,
        ids,
        nodes4,
        nodes6,
        peers,
        st.none() | st.binary(max_size=krpc.MAX_TOKEN_LENGTH),
        st.none() | st.tuples(ipv4 | ipv6, ports),
    ),
    st.builds(krpc.Error, tids, st.integers(-(2**31), 2**31 - 1), st.text(max_size=50)),
)


@SETTINGS
@given(messages)
def test_messages_round_trip(msg: krpc.Message) -> None:
    raw = krpc.encode(msg)
    if len(raw) > krpc.MAX_PACKET_SIZE:
        return  # beyond what we accept on input (200 IPv6 peers and 64 nodes do not fit)
    assert krpc.decode(raw) == msg
    assert krpc.encode(krpc.decode(raw)) == raw


@SETTINGS
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_our_error(data: bytes) -> None:
    try:
        krpc.decode(data)
    except KrpcDecodeError:
        pass
    try:
        krpc.decode(b"d" + data)
    except KrpcDecodeError:
        pass


values: st.SearchStrategy[Any] = st.recursive(
    st.integers(-(2**70), 2**70) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.binary(max_size=12), inner, max_size=4),
    max_leaves=12,
)
keys = st.sampled_from(
    [
        b"t",
        b"y",
        b"q",
        b"a",
        b"r",
        b"e",
        b"ip",
        b"id",
        b"target",
        b"info_hash",
        b"nodes",
        b"nodes6",
        b"values",
        b"token",
        b"port",
        b"implied_port",
        b"want",
    ]
)
field_values = st.one_of(
    values,
    st.sampled_from([b"q", b"r", b"e", b"ping", b"find_node", b"get_peers", b"announce_peer"]),
    ids,
    st.binary(max_size=100).map(lambda b: b * 3),
)
almost = st.recursive(
    field_values,
    lambda inner: st.dictionaries(keys, inner, max_size=8) | st.lists(inner, max_size=3),
    max_leaves=20,
)


@FEWER
@given(st.dictionaries(keys, almost, max_size=8))
def test_near_miss_messages_raise_only_our_error(top: dict[bytes, Any]) -> None:
    raw = bencoding.encode(top)
    try:
        krpc.decode(raw)
    except KrpcDecodeError:
        pass


@FEWER
@given(
    st.lists(
        st.binary(max_size=200) | st.dictionaries(keys, almost, max_size=6).map(bencoding.encode), max_size=30
    )
)
def test_the_node_never_raises_and_only_sends_valid_krpc(datagrams: list[bytes]) -> None:
    dht = DhtProtocol(b"O" * 20, 0.0, config=DhtConfig(max_per_ip=100), rng=random.Random(0))
    for i, data in enumerate(datagrams):
        dht.receive_datagram(data, (f"192.0.2.{i % 5}", 1000 + i), float(i))
        dht.tick(float(i))
    for raw, _ in dht.datagrams_to_send():
        krpc.decode(raw)


@SETTINGS
@given(
    st.lists(st.tuples(st.sampled_from(["response", "query", "fail"]), ids, st.integers(0, 40)), max_size=200)
)
def test_the_table_keeps_its_invariants(ops: list[tuple[str, bytes, int]]) -> None:
    own = b"\x55" * 20
    t = RoutingTable(own, 0.0, k=4, max_per_ip=2)
    for step, (op, node_id, host) in enumerate(ops):
        n = NodeInfo(node_id, f"10.0.0.{host}", 6881 + host % 3)
        if op == "response":
            t.heard_response(n, float(step))
        elif op == "query":
            t.heard_query(n, float(step))
        else:
            t.failed(n.address, float(step))
    assert t.buckets[0].lo == 0
    assert t.buckets[-1].hi == 1 << 160
    for a, b in zip(t.buckets, t.buckets[1:], strict=False):
        assert a.hi == b.lo
    per_ip: dict[str, int] = {}
    for b in t.buckets:
        assert len(b.nodes) <= 4
        assert len(b.replacements) <= 4
        for e in b.nodes:
            assert b.covers(e.id_int)
            assert e.info.id != own
            per_ip[e.info.host] = per_ip.get(e.info.host, 0) + 1
    assert max(per_ip.values(), default=0) <= 2
    assert len(t) == sum(len(b.nodes) for b in t.buckets)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 50), st.floats(0, 1)), max_size=300))
def test_the_peer_store_keeps_its_bounds(adds: list[tuple[int, int, float]]) -> None:
    s = PeerStore(max_peers=20, max_info_hashes=5, max_per_swarm=6, max_per_ip=3, peer_ttl_s=10)
    now = 0.0
    for ih, peer, dt in adds:
        now += dt
        s.add(bytes([ih]) * 20, (f"10.0.0.{peer % 10}", peer), now)
        assert len(s) <= 20
        assert s.info_hash_count <= 5
        assert all(n <= 3 for n in s._per_ip.values())
        assert sum(s._per_ip.values()) == len(s)
        assert all(len(swarm) <= 6 for swarm in s._swarms.values())
    rng = random.Random(0)
    total = sum(len(s.get(bytes([ih]) * 20, now, rng, limit=100)) for ih in range(31))
    assert total == len(s)


@SETTINGS
@given(
    st.lists(ids, min_size=1, max_size=60, unique=True),
    st.lists(
        st.tuples(st.sampled_from(["answer", "fail", "silent"]), st.lists(st.integers(0, 59), max_size=8)),
        max_size=200,
    ),
)
def test_every_lookup_ends_with_the_closest_answering_nodes(
    pool_ids: list[bytes], script: list[tuple[str, list[int]]]
) -> None:
    """Whatever nodes answer, fail or stay silent, a lookup converges within its timeouts."""
    pool = [NodeInfo(i, f"10.0.{n // 250}.{n % 250 + 1}", 6881) for n, i in enumerate(pool_ids)]
    target = b"\x42" * 20
    lk = Lookup(target, pool[:3], 0.0, k=4, alpha=2, slow_s=1.0, timeout_s=3.0)
    now = 0.0
    steps = iter(script)
    answered = set()
    for _ in range(10_000):
        if lk.done:
            break
        for c in lk.next_queries(now):
            action, named = next(steps, ("silent", []))
            if action == "answer":
                assert c.id is not None
                lk.on_response(c.address, c.id, [pool[i % len(pool)] for i in named], now)
                answered.add(c.id)
            elif action == "fail":
                lk.on_failure(c.address, now)
        deadline = lk.next_deadline()
        if deadline is not None:
            now = max(now, deadline)
            lk.tick(now)
        lk.check_done(now)
    assert lk.done, "the lookup did not end"
    closest = [n.id for n, _ in lk.closest()]
    assert len(closest) <= 4
    assert set(closest) <= answered
    t = int.from_bytes(target, "big")
    assert closest == sorted(closest, key=lambda i: int.from_bytes(i, "big") ^ t)


@FEWER
@given(st.lists(messages, min_size=1, max_size=40))
def test_any_answer_to_our_own_queries_is_taken_without_raising(answers: list[krpc.Message]) -> None:
    """Answers that match a real transaction (right tid, right address) but carry anything at all."""
    dht = DhtProtocol(b"O" * 20, 0.0, config=DhtConfig(max_per_ip=100), rng=random.Random(1))
    for i in range(20):
        dht.tables[4].heard_response(NodeInfo(bytes([i * 12]) + bytes(19), f"10.0.0.{i + 1}", 6881), 0.0)
    dht.get_peers(b"\x42" * 20, 0.0, announce_port=6881)
    now = 0.0
    for answer in answers:
        pending = dht.datagrams_to_send()
        if not pending:
            break
        for raw, addr in pending:
            tid = bencoding.decode(raw)[b"t"]
            if isinstance(answer, (krpc.Response, krpc.Error)):
                dht.receive_datagram(krpc.encode(dataclasses.replace(answer, tid=tid)), addr, now)
            else:
                dht.receive_datagram(krpc.encode(answer), addr, now)
        now += 0.3
        dht.tick(now)
    for _ in range(100):  # whatever happened, the lookup (and its announces) end by the timeouts
        if dht.next_event() is not None:
            break
        now = max(now, dht.next_timeout() or now)
        dht.tick(now)
        dht.datagrams_to_send()
    else:
        raise AssertionError("the lookup never ended")
