"""Routing table (BEP 5) and BEP 42 node ids."""

from __future__ import annotations

import random

import pytest

from torrent.proto.dht import routing
from torrent.proto.dht.krpc import NodeInfo
from torrent.proto.dht.routing import GOOD_FOR_S, RoutingTable

OWN = bytes(20)  # id 0: bucket splits go towards the low end


def nid(top: int, rest: int = 0) -> bytes:
    """An id whose first byte is ``top`` (so its bucket is easy to tell)."""
    return bytes([top]) + rest.to_bytes(19, "big")


def node(top: int, rest: int = 0, host: str | None = None) -> NodeInfo:
    return NodeInfo(nid(top, rest), host or f"10.{top}.{rest % 256}.{rest // 256 % 256 + 1}", 6881)


# BEP 42's table of examples: (address, rand, id prefix and last byte)
BEP42_VECTORS = [
    ("124.31.75.21", 1, "5fbfbf", 0x01),
    ("21.75.31.124", 86, "5a3ce9", 0x56),
    ("65.23.51.170", 22, "a5d432", 0x16),
    ("84.124.73.14", 65, "1b0321", 0x41),
    ("43.213.53.83", 90, "e56f6c", 0x5A),
]


def test_crc32c_check_value() -> None:
    assert routing.crc32c(b"123456789") == 0xE3069283


@pytest.mark.parametrize(("ip", "rand", "prefix", "last"), BEP42_VECTORS)
def test_bep42_examples(ip: str, rand: int, prefix: str, last: int) -> None:
    example = bytes.fromhex(prefix) + bytes(16) + bytes([last])
    assert routing.conforms(example, ip)
    # only the first 21 bits are fixed: the rest of the third byte is free
    assert routing.conforms(example[:2] + bytes([example[2] ^ 0x07]) + example[3:], ip)
    assert not routing.conforms(example[:2] + bytes([example[2] ^ 0x08]) + example[3:], ip)
    assert not routing.conforms(example[:19] + bytes([last ^ 0x01]), ip)


def test_bep42_generated_ids_conform_and_local_addresses_are_exempt() -> None:
    rng = random.Random(5)
    for ip in ("124.31.75.21", "8.8.4.4", "2a00:1450:4001::5"):
        assert routing.conforms(routing.node_id_for_ip(ip, rng), ip)
        assert not routing.conforms(bytes(20), ip)
    for local in ("127.0.0.1", "10.1.2.3", "192.168.1.1", "172.16.0.9", "169.254.1.1", "::1", "fe80::1"):
        assert routing.is_exempt(local)
        assert routing.conforms(bytes(20), local)


def test_states_follow_the_fifteen_minute_rules() -> None:
    t = RoutingTable(OWN, 0.0)
    n = node(0x80)
    t.heard_response(n, 100.0)
    e = t.get(n.id)
    assert e is not None
    assert e.state(100.0 + GOOD_FOR_S - 1) == "good"
    assert e.state(100.0 + GOOD_FOR_S) == "questionable"
    t.heard_query(n, 100.0 + GOOD_FOR_S + 10)  # ever answered, and queried us lately: good
    assert e.state(100.0 + GOOD_FOR_S + 20) == "good"
    t.failed(n.address, 2000.0)
    t.failed(n.address, 2001.0)
    assert e.state(2002.0) == "bad"


def test_only_our_own_bucket_splits_and_full_far_buckets_keep_replacements() -> None:
    t = RoutingTable(OWN, 0.0)
    for i in range(8):
        t.heard_response(node(0x80 + i), 1.0)  # all in the far half
    assert len(t.buckets) == 1
    # a ninth node: the bucket holds our id, so it splits into [0, 2^159) and [2^159, 2^160)
    assert t.heard_response(node(0x01), 2.0) is None
    assert len(t.buckets) == 2
    assert len(t) == 9
    # the far half is full of good nodes and cannot split: the newcomer waits
    ping = t.heard_response(node(0xF0), 3.0)
    assert ping is None  # no questionable node to ping: they are all good
    assert len(t) == 9
    assert t.replacement_count() == 1
    # 15 minutes on, all are questionable: the least recently seen one is to be pinged
    ping = t.heard_response(node(0xF1), 3.0 + GOOD_FOR_S)
    assert ping == node(0x80)
    assert t.to_ping(3.0 + GOOD_FOR_S) == [node(0x80)]
    # it fails once: a replacement that answered us takes its place at once
    t.failed(node(0x80).address, 4.0 + GOOD_FOR_S)
    assert t.get(node(0x80).id) is None
    assert t.get(node(0xF1).id) is not None
    assert len(t) == 9


def test_unconfirmed_nodes_never_push_out_and_are_first_to_go() -> None:
    t = RoutingTable(OWN, 0.0)
    for i in range(8):
        t.heard_query(node(0x80 + i), 1.0)  # they queried us, never answered
    t.heard_response(node(0x01), 1.0)
    assert len(t) == 9
    t.heard_query(node(0xF0), 2.0)
    assert t.get(node(0xF0).id) is None  # a querier does not displace anyone
    t.heard_response(node(0xF1), 3.0)
    assert t.get(node(0xF1).id) is not None  # a node that answered replaces an unconfirmed one
    assert t.get(node(0x80).id) is None


def test_bep42_conforming_newcomer_displaces_a_nonconforming_node() -> None:
    rng = random.Random(1)
    t = RoutingTable(OWN, 0.0)
    public = [f"203.0.113.{i}" for i in range(1, 10)]
    for i in range(8):
        bad_id = bytes([0x80 + i]) + bytes(19)  # almost surely not conforming for its address
        assert not routing.conforms(bad_id, public[i])
        t.heard_response(NodeInfo(bad_id, public[i], 6881), 1.0)
    t.heard_response(node(0x01), 1.0)
    good_id = routing.node_id_for_ip("198.51.100.1", rng)
    while good_id[0] < 0x80:  # one for the full far half
        good_id = routing.node_id_for_ip("198.51.100.1", rng)
    t.heard_response(NodeInfo(good_id, "198.51.100.1", 6881), 2.0)
    assert t.get(good_id) is not None
    assert len(t) == 9
    assert sum(1 for e in t if not e.conforming) == 7


def test_enforce_node_id_refuses_nonconforming_public_nodes() -> None:
    t = RoutingTable(OWN, 0.0, enforce_node_id=True)
    t.heard_response(NodeInfo(nid(0x80), "203.0.113.1", 6881), 1.0)
    assert len(t) == 0
    conforming = routing.node_id_for_ip("203.0.113.1", random.Random(2))
    t.heard_response(NodeInfo(conforming, "203.0.113.1", 6881), 1.0)
    t.heard_response(NodeInfo(nid(0x81), "10.0.0.1", 6881), 1.0)  # local: exempt
    assert len(t) == 2


def test_one_node_per_ip() -> None:
    t = RoutingTable(OWN, 0.0, max_per_ip=1)
    for i in range(50):
        t.heard_query(NodeInfo(nid(0x80, i), "192.0.2.9", 1000 + i), 1.0)
    assert len(t) == 1


def test_closest_is_by_xor_and_skips_failed_nodes() -> None:
    t = RoutingTable(OWN, 0.0)
    nodes = [node(top) for top in (0x10, 0x11, 0x13, 0x40, 0x90)]
    for n in nodes:
        t.heard_response(n, 1.0)
    assert t.closest(nid(0x12), 3) == sorted(nodes, key=lambda n: n.id[0] ^ 0x12)[:3]
    t.failed(nodes[2].address, 2.0)
    assert nodes[2] not in t.closest(nid(0x12), 3, now=2.0)


def test_refresh_targets_fall_in_stale_buckets() -> None:
    rng = random.Random(3)
    t = RoutingTable(OWN, 0.0)
    for i in range(9):
        t.heard_response(node(0x80 + i if i < 8 else 0x01), 10.0)
    assert t.refresh_targets(100.0, rng) == []
    assert t.next_refresh() == 10.0 + routing.REFRESH_AFTER_S
    targets = t.refresh_targets(10.0 + routing.REFRESH_AFTER_S, rng)
    assert len(targets) == len(t.buckets)
    for target, bucket in zip(targets, t.buckets, strict=True):
        assert bucket.covers(int.from_bytes(target, "big"))
    assert t.refresh_targets(10.0 + routing.REFRESH_AFTER_S, rng) == []  # marked as refreshed
