"""The whole DHT node, sans-IO: literal datagrams in, literal datagrams and events out."""

from __future__ import annotations

import random

from torrent.proto import bencoding
from torrent.proto.dht import DhtConfig, DhtProtocol, LookupDone, NodeInfo, krpc, routing
from torrent.proto.dht import node as node_mod

OURS = b"O" * 20
THEIRS = b"abcdefghij0123456789"
IH = b"mnopqrstuvwxyz123456"
PEER = ("192.0.2.10", 6881)
PACKED_PEER = bytes([192, 0, 2, 10, 0x1A, 0xE1])
QUORUM = node_mod.EXTERNAL_IP_QUORUM


def make(**config: object) -> DhtProtocol:
    return DhtProtocol(OURS, 0.0, config=DhtConfig(**config), rng=random.Random(7))  # type: ignore[arg-type]


def one_reply(dht: DhtProtocol) -> bytes:
    out = dht.datagrams_to_send()
    assert len(out) == 1, out
    return out[0][0]


def test_ping_is_answered_with_our_id_and_the_requesters_address() -> None:
    dht = make()
    dht.receive_datagram(b"d1:ad2:id20:" + THEIRS + b"e1:q4:ping1:t2:aa1:y1:qe", PEER, 1.0)
    assert one_reply(dht) == b"d2:ip6:" + PACKED_PEER + b"1:rd2:id20:" + OURS + b"e1:t2:aa1:y1:re"
    # the querier went into the table, unconfirmed
    entry = dht.tables[4].get(THEIRS)
    assert entry is not None
    assert entry.last_response is None


def test_get_peers_token_then_announce_then_values() -> None:
    dht = make()
    dht.receive_datagram(
        b"d1:ad2:id20:" + THEIRS + b"9:info_hash20:" + IH + b"e1:q9:get_peers1:t2:g1" + b"1:y1:qe", PEER, 1.0
    )
    reply = krpc.decode(one_reply(dht))
    assert isinstance(reply, krpc.Response)
    assert reply.token is not None
    assert reply.values == ()
    announce = krpc.AnnouncePeer(b"a1", THEIRS, IH, 51413, reply.token)
    dht.receive_datagram(krpc.encode(announce), PEER, 2.0)
    assert krpc.decode(one_reply(dht)) == krpc.Response(b"a1", OURS, ip=PEER)
    # implied_port: the datagram's source port is stored instead
    implied = krpc.AnnouncePeer(b"a2", THEIRS, IH, 1, reply.token, implied_port=True)
    dht.receive_datagram(krpc.encode(implied), ("192.0.2.10", 7000), 2.0)
    dht.datagrams_to_send()
    dht.receive_datagram(krpc.encode(krpc.GetPeers(b"g2", b"z" * 20, IH)), ("192.0.2.99", 1), 3.0)
    reply = krpc.decode(one_reply(dht))
    assert isinstance(reply, krpc.Response)
    assert sorted(reply.values) == [("192.0.2.10", 7000), ("192.0.2.10", 51413)]
    assert dht.statistics(3.0).stored_peers == 2


def test_announce_with_a_bad_token_is_refused_and_counted() -> None:
    dht = make()
    dht.receive_datagram(krpc.encode(krpc.AnnouncePeer(b"a1", THEIRS, IH, 51413, b"forged")), PEER, 1.0)
    assert one_reply(dht) == b"d1:eli203e9:bad tokene1:t2:a11:y1:ee"
    # a token given to another address is just as bad
    dht.receive_datagram(krpc.encode(krpc.GetPeers(b"g1", THEIRS, IH)), ("192.0.2.11", 1), 1.0)
    token = krpc.decode(one_reply(dht)).token  # type: ignore[union-attr]
    dht.receive_datagram(krpc.encode(krpc.AnnouncePeer(b"a2", THEIRS, IH, 51413, token)), PEER, 1.0)  # type: ignore[arg-type]
    assert krpc.decode(one_reply(dht)) == krpc.Error(b"a2", 203, "bad token")
    stats = dht.statistics(1.0)
    assert stats.stored_peers == 0
    assert stats.dropped["bad_token"] == 2


def test_malformed_queries_get_errors_and_other_garbage_is_dropped_and_counted() -> None:
    dht = make()
    dht.receive_datagram(b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe", PEER, 1.0)
    assert one_reply(dht) == b"d1:eli203e6:bad ide1:t2:aa1:y1:ee"
    dht.receive_datagram(b"d1:ad2:id20:" + THEIRS + b"e1:q4:vote1:t2:bb1:y1:qe", PEER, 1.0)
    assert one_reply(dht) == b"d1:eli204e14:unknown methode1:t2:bb1:y1:ee"
    for garbage in (
        b"d",
        b"d1:t2:aa1:y1:re",
        b"d" + b"x" * 5000,
        b"d1:rd2:id20:" + THEIRS + b"e1:t2:zz1:y1:re",
    ):
        dht.receive_datagram(garbage, PEER, 1.0)
    assert dht.datagrams_to_send() == []
    assert dht.statistics(1.0).dropped == {
        "bad_id": 1,
        "unknown_method": 1,
        "bencode": 1,
        "bad_response": 1,
        "oversized": 1,
        "unexpected_answer": 1,
    }


def test_queries_are_rate_limited_per_ip() -> None:
    dht = make(rate_per_ip_per_s=1, rate_burst=3)
    ping = krpc.encode(krpc.Ping(b"aa", THEIRS))
    for _ in range(10):
        dht.receive_datagram(ping, PEER, 1.0)
    assert len(dht.datagrams_to_send()) == 3
    dht.receive_datagram(ping, ("192.0.2.77", 1), 1.0)
    assert len(dht.datagrams_to_send()) == 1
    assert dht.statistics(1.0).dropped == {"rate_limited": 7}


def test_want_n6_answers_from_the_ipv6_table() -> None:
    dht = make(families=(4, 6))
    v6 = NodeInfo(b"6" * 20, "2001:db8::6", 6881)
    v4 = NodeInfo(b"4" * 20, "192.0.2.4", 6881)
    dht.tables[6].heard_response(v6, 0.0)
    dht.tables[4].heard_response(v4, 0.0)
    dht.receive_datagram(krpc.encode(krpc.FindNode(b"f1", THEIRS, IH, want=(b"n4", b"n6"))), PEER, 1.0)
    reply = krpc.decode(one_reply(dht))
    assert isinstance(reply, krpc.Response)
    assert reply.nodes == (v4,)
    assert reply.nodes6 == (v6,)
    dht.receive_datagram(krpc.encode(krpc.FindNode(b"f2", THEIRS, IH)), ("2001:db8::9", 1), 1.0)
    reply = krpc.decode(one_reply(dht))
    assert isinstance(reply, krpc.Response)
    assert reply.nodes == ()
    assert reply.nodes6 == (v6,)


class FakeNet:
    """Nodes that exchange datagrams through a dict; an address with no node loses them."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[str, int], DhtProtocol] = {}
        self.now = 0.0

    def add(self, host: str, node_id: bytes) -> DhtProtocol:
        dht = self.nodes[(host, 6881)] = DhtProtocol(
            node_id,
            self.now,
            config=DhtConfig(query_timeout_s=2.0, query_slow_s=0.5),
            rng=random.Random(host),
        )
        return dht

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            moved = True
            while moved:
                moved = False
                for addr, dht in self.nodes.items():
                    for data, dst in dht.datagrams_to_send():
                        moved = True
                        if dst in self.nodes:
                            self.nodes[dst].receive_datagram(data, addr, self.now)
            due = min(d.next_timeout() or end for d in self.nodes.values())
            if due > end:
                self.now = end
                return
            self.now = max(self.now, due)
            for dht in self.nodes.values():
                if (dht.next_timeout() or end) <= self.now:
                    dht.tick(self.now)


def events(dht: DhtProtocol) -> list[LookupDone]:
    out = []
    while (ev := dht.next_event()) is not None:
        out.append(ev)
    return out


def test_bootstrap_lookup_announce_and_get_peers_over_a_fake_network() -> None:
    net = FakeNet()
    rng = random.Random(11)
    first = net.add("10.0.0.1", rng.randbytes(20))
    others = [net.add(f"10.0.1.{i}", rng.randbytes(20)) for i in range(1, 30)]
    for dht in others:
        dht.bootstrap([("10.0.0.1", 6881)], net.now)
        net.run(0.01)
    net.run(5.0)
    assert all(len(d.tables[4]) >= 8 for d in others)
    # a router that is down: the bootstrap lookup still ends, after the timeout
    lonely = net.add("10.0.2.1", rng.randbytes(20))
    boot = lonely.bootstrap([("10.9.9.9", 6881)], net.now)
    net.run(1.0)
    assert events(lonely) == []
    net.run(2.0)
    (done,) = events(lonely)
    assert done.lookup_id == boot
    assert done.closest == ()
    assert lonely.statistics(net.now).timeouts == 1

    for d in [first, *others]:
        events(d)
    announce = others[3].get_peers(IH, net.now, announce_port=51413)
    net.run(3.0)
    (ev,) = events(others[3])
    assert ev.lookup_id == announce
    assert ev.kind == "get_peers"
    assert ev.announced >= 6
    assert ev.peers == ()
    lookup = others[20].get_peers(IH, net.now)
    net.run(3.0)
    (ev,) = events(others[20])
    assert ev.lookup_id == lookup
    assert ("10.0.1.4", 51413) in ev.peers
    assert 1 <= ev.hops <= 4
    assert ev.queries >= 3


def test_next_timeout_and_tick_time_out_a_query() -> None:
    dht = make(query_timeout_s=2.0, query_slow_s=0.5)
    assert dht.next_timeout() == 10.0  # table maintenance
    dht.bootstrap([("192.0.2.200", 6881)], 1.0)
    (query,) = dht.datagrams_to_send()
    assert krpc.decode(query[0]) == krpc.FindNode(query[0][query[0].index(b"1:t2:") + 5 :][:2], OURS, OURS)
    assert dht.next_timeout() == 1.5
    dht.tick(1.5)
    assert dht.next_timeout() == 3.0
    dht.tick(3.0)
    (ev,) = events(dht)
    assert ev.closest == ()
    assert dht.statistics(3.0).timeouts == 1


def test_answers_from_the_wrong_address_are_ignored() -> None:
    dht = make()
    dht.bootstrap([("192.0.2.200", 6881)], 1.0)
    (query,) = dht.datagrams_to_send()
    tid = bencoding.decode(query[0])[b"t"]
    answer = krpc.encode(krpc.Response(tid, THEIRS))
    dht.receive_datagram(answer, ("192.0.2.201", 6881), 1.1)
    assert events(dht) == []
    assert dht.statistics(1.1).dropped == {"unexpected_answer": 1}
    dht.receive_datagram(answer, ("192.0.2.200", 6881), 1.2)
    (ev,) = events(dht)
    assert ev.closest == (NodeInfo(THEIRS, "192.0.2.200", 6881),)
    assert dht.tables[4].get(THEIRS) is not None


def test_joining_is_tried_again_with_backoff_while_the_table_is_empty() -> None:
    dht = make(query_timeout_s=2.0)
    dht.bootstrap([("192.0.2.200", 6881)], 0.0)
    sent_at = [0.0]
    dht.datagrams_to_send()
    now = 0.0
    while now < 200.0:
        now = dht.next_timeout() or now + 1
        dht.tick(now)
        if dht.datagrams_to_send():
            sent_at.append(now)
    assert sent_at == [0.0, 10.0, 30.0, 70.0, 150.0]
    assert len(events(dht)) == 1  # only the first attempt is the caller's lookup
    # the next attempt reaches the router: the table fills and the attempts stop
    dht.tick(310.0)
    ((query, addr),) = dht.datagrams_to_send()
    tid = bencoding.decode(query)[b"t"]
    dht.receive_datagram(krpc.encode(krpc.Response(tid, THEIRS)), addr, 310.5)
    assert dht.datagrams_to_send() == []
    assert len(dht.tables[4]) == 1
    for t in (700.0, 1000.0):
        dht.tick(t)
        assert dht.datagrams_to_send() == []


def _answer_everything(dht: DhtProtocol, my_ip: str, now: float, *, limit: int) -> list[tuple[str, int]]:
    """Answer up to ``limit`` queries, each responder (a different address) reporting ``my_ip``."""
    answered: list[tuple[str, int]] = []
    while len(answered) < limit:
        out = dht.datagrams_to_send()
        if not out:
            break
        for query, addr in out[: limit - len(answered)]:
            tid = bencoding.decode(query)[b"t"]
            sender = bytes([len(answered) + 1]) * 20
            dht.receive_datagram(krpc.encode(krpc.Response(tid, sender, ip=(my_ip, 6881))), addr, now)
            answered.append(addr)
    return answered


def test_our_id_follows_a_quorum_of_voters_on_our_external_address() -> None:
    dht = make()
    routers = [(f"198.51.100.{i}", 6881) for i in range(1, 13)]
    dht.bootstrap(routers, 0.0)
    _answer_everything(dht, "203.0.113.7", 1.0, limit=QUORUM - 1)
    assert dht.node_id == OURS  # not enough voters yet
    assert dht.statistics(1.0).external_ip == "203.0.113.7"
    known = {n.address for n in dht.nodes()}
    _answer_everything(dht, "203.0.113.7", 2.0, limit=1)
    assert dht.node_id != OURS
    assert routing.conforms(dht.node_id, "203.0.113.7")
    assert not routing.conforms(OURS, "203.0.113.7")
    assert dht.statistics(2.0).id_changes == 1
    # ... and we join again around the new id, through the nodes we knew
    rejoin = dht.datagrams_to_send()
    assert {bencoding.decode(q)[b"a"].get(b"target") for q, _ in rejoin} == {dht.node_id}
    assert {addr for _, addr in rejoin} <= known
    # more votes for the same address change nothing
    _answer_everything(dht, "203.0.113.7", 3.0, limit=5)
    assert dht.statistics(3.0).id_changes == 1


def test_a_local_or_minority_external_address_keeps_our_id() -> None:
    for my_ip in ("192.168.1.20", "127.0.0.1"):
        dht = make()
        dht.bootstrap([(f"198.51.100.{i}", 6881) for i in range(1, 31)], 0.0)
        _answer_everything(dht, my_ip, 1.0, limit=20)
        assert dht.node_id == OURS
        assert dht.statistics(1.0).id_changes == 0
    dht = make()
    dht.bootstrap([(f"198.51.100.{i}", 6881) for i in range(1, 41)], 0.0)
    _answer_everything(dht, "203.0.113.7", 1.0, limit=QUORUM - 1)
    _answer_everything(dht, "203.0.113.99", 1.0, limit=QUORUM + 5)
    # 203.0.113.99 leads now and has a quorum: the id follows the leader only
    assert routing.conforms(dht.node_id, "203.0.113.99")
    assert dht.statistics(1.0).id_changes == 1


def test_a_new_node_id_rebuilds_the_tables_and_rejoins() -> None:
    """BEP 42: learning our external address may change our id; the table is rebuilt
    around the new id from the nodes we knew, and the peers we store are kept."""
    net = FakeNet()
    rng = random.Random(5)
    net.add("10.0.0.1", rng.randbytes(20))
    others = [net.add(f"10.0.1.{i}", rng.randbytes(20)) for i in range(1, 20)]
    for dht in others:
        dht.bootstrap([("10.0.0.1", 6881)], net.now)
        net.run(0.01)
    net.run(5.0)
    me = others[0]
    me.store.add(IH, PEER, net.now)
    before = {n.id for n in me.nodes()}
    assert len(before) >= 8
    events(me)
    new_id = routing.node_id_for_ip("81.2.3.4", random.Random(1))
    join = me.change_node_id(new_id, net.now)
    assert me.node_id == new_id
    assert all(t.own_id == new_id for t in me.tables.values())
    net.run(3.0)
    assert join in [ev.lookup_id for ev in events(me)]
    assert len(me.tables[4]) >= 8  # the nodes came back as they answered
    assert len(me.store) == 1  # stored peers are kept
    # the nodes it queried learn the new id
    assert any(e.info.id == new_id for d in net.nodes.values() for e in d.tables[4])
