"""Iterative lookups (BEP 5): alpha, convergence on the k closest, slow and failed queries."""

from __future__ import annotations

from torrent.proto.dht.krpc import NodeInfo
from torrent.proto.dht.lookup import Lookup

TARGET = bytes(20)


def n(d: int) -> NodeInfo:
    """A node at XOR distance ``d`` from the target."""
    return NodeInfo(d.to_bytes(20, "big"), f"10.0.{d // 250}.{d % 250 + 1}", 6881)


def test_alpha_queries_closest_first_then_converges_on_k() -> None:
    lk = Lookup(TARGET, [n(d) for d in (50, 40, 30, 20, 10)], 0.0, k=3, alpha=2)
    first = lk.next_queries(0.0)
    assert [c.address for c in first] == [n(10).address, n(20).address]
    assert lk.next_queries(0.0) == []  # alpha pending
    lk.on_response(n(10).address, n(10).id, [n(5), n(3)], 0.1)
    assert [c.address for c in lk.next_queries(0.1)] == [n(3).address]  # n(20) still pending
    lk.on_response(n(3).address, n(3).id, [n(1)], 0.2)
    assert [c.address for c in lk.next_queries(0.2)] == [n(1).address]
    lk.on_response(n(1).address, n(1).id, [], 0.3)
    assert [c.address for c in lk.next_queries(0.3)] == [n(5).address]
    assert not lk.done
    lk.on_response(n(5).address, n(5).id, [], 0.4)
    # the 3 closest (1, 3, 5) answered: done, though n(20) never did
    assert lk.done
    assert [x.id for x, _ in lk.closest()] == [n(1).id, n(3).id, n(5).id]
    assert lk.hops == 3
    assert lk.queries_sent == 5


def test_slow_queries_free_their_slot_and_late_ones_fail() -> None:
    lk = Lookup(TARGET, [n(d) for d in (1, 2, 3, 4)], 0.0, k=2, alpha=1, slow_s=1.0, timeout_s=3.0)
    assert [c.address for c in lk.next_queries(0.0)] == [n(1).address]
    assert lk.next_deadline() == 1.0
    lk.tick(1.0)
    assert [c.address for c in lk.next_queries(1.0)] == [n(2).address]  # n(1) is slow
    assert lk.next_deadline() == 2.0  # n(2) goes slow; n(1) times out at 3
    assert lk.tick(3.0) == [n(1).address]  # n(2), asked at 1.0, has until 4.0
    lk.on_response(n(2).address, n(2).id, [], 3.1)
    assert [c.address for c in lk.next_queries(3.1)] == [n(3).address]
    lk.on_response(n(3).address, n(3).id, [], 3.2)
    assert lk.done
    assert [x.id for x, _ in lk.closest()] == [n(2).id, n(3).id]


def test_ticking_at_the_deadline_it_gave_moves_the_lookup_on() -> None:
    """At 0.4 s, ``0.4 + 1.0 - 0.4`` is just under 1.0 in floating point: the query must
    still go slow, then fail, at exactly the times ``next_deadline`` named."""
    lk = Lookup(TARGET, [n(1), n(2)], 0.0, k=2, alpha=1, slow_s=1.0, timeout_s=1.0)
    sent = 0.4
    assert [c.address for c in lk.next_queries(sent)] == [n(1).address]
    deadline = lk.next_deadline()
    assert deadline == sent + 1.0
    assert lk.tick(deadline) == [n(1).address]
    assert [c.address for c in lk.next_queries(deadline)] == [n(2).address]


def test_a_late_answer_still_counts() -> None:
    lk = Lookup(TARGET, [n(1), n(2)], 0.0, k=2, alpha=2, timeout_s=1.0)
    lk.next_queries(0.0)
    assert lk.tick(1.5) == [n(1).address, n(2).address]
    assert lk.done
    assert lk.closest() == []
    lk2 = Lookup(TARGET, [n(1), n(2), n(3)], 0.0, k=2, alpha=1, timeout_s=1.0, slow_s=0.5)
    lk2.next_queries(0.0)
    lk2.tick(1.0)  # n(1) failed
    lk2.on_response(n(1).address, n(1).id, [], 1.1)  # ... but answers after all
    assert [x.id for x, _ in lk2.closest()] == [n(1).id]


def test_get_peers_keeps_tokens_and_peers_and_seeds_without_ids() -> None:
    router = NodeInfo(b"", "192.0.2.1", 6881)
    lk = Lookup(TARGET, [router], 0.0, get_peers=True, k=2)
    (c,) = lk.next_queries(0.0)
    assert c.address == router.address
    lk.on_response(router.address, n(9).id, [n(4)], 0.1, token=b"tok", values=(("192.0.2.50", 1),))
    lk.next_queries(0.1)
    lk.on_response(n(4).address, n(4).id, [], 0.2, token=b"t4")
    assert lk.done
    assert lk.closest() == [(n(4), b"t4"), (NodeInfo(n(9).id, "192.0.2.1", 6881), b"tok")]
    assert list(lk.peers) == [("192.0.2.50", 1)]


def test_a_node_answering_with_another_id_is_not_trusted() -> None:
    lk = Lookup(TARGET, [n(1)], 0.0, k=1)
    lk.next_queries(0.0)
    lk.on_response(n(1).address, n(7).id, [n(2)], 0.1)
    assert lk.done
    assert lk.closest() == []


def test_candidates_are_bounded() -> None:
    lk = Lookup(TARGET, [n(1)], 0.0, max_candidates=20)
    lk.next_queries(0.0)
    lk.on_response(n(1).address, n(1).id, [n(d) for d in range(100, 200)], 0.1)
    assert len(lk._candidates) == 20
