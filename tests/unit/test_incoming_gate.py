"""HandshakeGate on plain numbers: per-address and total caps, eviction, shortened timeout."""

from __future__ import annotations

from torrent.engine.incoming import HandshakeGate


def gate(total: int = 8, per_ip: int = 2, timeout_s: float = 10.0) -> tuple[HandshakeGate[int], set[int]]:
    closed: set[int] = set()
    return HandshakeGate(
        total=total, per_ip=per_ip, timeout_s=timeout_s, is_closed=closed.__contains__
    ), closed


def test_one_address_cannot_take_more_than_its_share() -> None:
    g, _ = gate()
    assert g.admit(1, "10.0.0.1", 0.0) == (True, None)
    assert g.admit(2, "10.0.0.1", 0.0) == (True, None)
    assert g.admit(3, "10.0.0.1", 0.0) == (False, None)
    assert g.admit(4, "10.0.0.2", 0.0) == (True, None)  # another address still gets in
    g.done(1)
    assert g.admit(5, "10.0.0.1", 0.0) == (True, None)
    assert g.statistics().refused_per_ip == 1


def test_a_closed_connection_frees_its_place_at_once() -> None:
    g, closed = gate(per_ip=1)
    assert g.admit(1, "a", 0.0)[0]
    closed.add(1)
    assert g.admit(2, "a", 0.0) == (True, None)
    assert len(g) == 1


def test_when_full_the_oldest_is_evicted_once_it_has_waited_a_little() -> None:
    g, _ = gate(total=3, per_ip=4)
    for n in range(3):
        g.admit(n, "10.0.0.1", 0.0)
    assert g.admit(9, "10.0.0.1", 0.5) == (False, None)  # nobody has waited long enough
    assert g.admit(9, "10.0.0.1", 2.0) == (True, 0)  # the oldest goes
    assert 0 not in g
    assert 9 in g
    stats = g.statistics()
    assert (stats.refused_total, stats.evicted, stats.handshaking) == (1, 1, 3)


def test_timeout_is_shortened_while_the_gate_is_nearly_full() -> None:
    g, _ = gate(total=4, per_ip=4, timeout_s=10.0)
    g.admit(1, "a", 0.0)
    g.admit(2, "a", 5.0)
    assert g.expire(9.0) == []  # half full: the full 10 s
    assert g.expire(10.0) == [1]
    g.admit(3, "a", 6.0)
    g.admit(4, "a", 6.0)
    # three of four: a quarter of the timeout (2.5 s)
    assert g.expire(7.0) == []
    assert g.expire(7.5) == [2]
    assert g.expire(9.0) == []  # two of four again: back to 10 s
    assert g.expire(16.0) == [3, 4]
    assert g.statistics().timed_out == 4


def test_when_full_a_new_address_takes_a_place_of_the_most_crowded_one() -> None:
    g, _ = gate(total=4, per_ip=3)
    for n, ip in enumerate(["a", "a", "a", "b"]):
        g.admit(n, ip, 0.0)
    # nobody has waited a second, but "c" holds nothing and "a" holds three: its oldest goes
    assert g.admit(9, "c", 0.1) == (True, 0)
    assert g.admit(10, "b", 0.1) == (False, None)  # "b" already holds a place: refused
    assert g.admit(11, "d", 0.2) == (True, 1)  # "a" is still the most crowded
    # every address holds one now: a new one takes the oldest place of all
    assert g.admit(12, "e", 0.3) == (True, 2)
    assert g.admit(13, "e", 0.3) == (False, None)  # "e" holds one: refused
    assert g.statistics().evicted == 3
