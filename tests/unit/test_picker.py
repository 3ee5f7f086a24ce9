"""Piece picker: availability, pick order, block bookkeeping, endgame, hash failures.

Fixtures are short strings, one character per piece (libtorrent ``test_piece_picker.cpp``):
availability ``"1132"`` means piece 0 and 1 are held by one peer, piece 2 by three...
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from tests.picker_helpers import check_invariants
from torrent.proto.picker import Block, BlockStatus, Picker
from torrent.types import BLOCK_SIZE

BPP = 4  # blocks per piece in these fixtures
PL = BPP * BLOCK_SIZE


def setup_picker(
    availability: str,
    have: str = "",
    priority: str = "",
    *,
    seed: int = 1,
    **kw: object,
) -> Picker:
    """A picker whose pieces have the given availability (peers named "p0", "p1", ...)."""
    n = len(availability)
    levels = [int(c) for c in availability]
    have_set = [i for i, c in enumerate(have) if c == "1"]
    prios = [int(c) for c in priority] if priority else None
    kw.setdefault("random_first_pieces", 0)
    p = Picker(n, PL, n * PL, have=have_set, priorities=prios, rng=random.Random(seed), **kw)  # type: ignore[arg-type]
    for k in range(max(levels, default=0)):
        p.on_peer_bitfield(f"p{k}", bytearray(1 if a > k else 0 for a in levels))
    check_invariants(p)
    return p


def pieces_of(blocks: list[Block]) -> list[int]:
    out: list[int] = []
    for b in blocks:
        if not out or out[-1] != b.piece:
            out.append(b.piece)
    return out


# ---------------------------------------------------------------------------- geometry


def test_last_piece_and_last_block_are_shorter() -> None:
    total = 2 * PL + BLOCK_SIZE + 100
    p = Picker(3, PL, total)
    assert p.piece_size(0) == PL
    assert p.piece_size(2) == BLOCK_SIZE + 100
    assert p.blocks(2) == [Block(2, 0, BLOCK_SIZE), Block(2, BLOCK_SIZE, 100)]
    assert p.num_blocks(0) == BPP


def test_piece_length_not_a_multiple_of_the_block_size() -> None:
    p = Picker(2, BLOCK_SIZE + 10, 2 * BLOCK_SIZE + 15)
    assert p.blocks(0) == [Block(0, 0, BLOCK_SIZE), Block(0, BLOCK_SIZE, 10)]
    assert p.blocks(1) == [Block(1, 0, BLOCK_SIZE), Block(1, BLOCK_SIZE, 5)]


@pytest.mark.parametrize(
    ("n", "pl", "total", "match"),
    [
        (0, PL, 1, "must be positive"),
        (2, PL, PL, "2 pieces of 65536 bytes cannot hold 65536 bytes"),
        (1, 0, 10, "must be positive"),
        (3, PL, 2 * PL, "3 pieces of 65536 bytes cannot hold 131072 bytes"),
        (1, PL, 0, "must be positive"),
    ],
)
def test_bad_geometry_is_refused(n: int, pl: int, total: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Picker(n, pl, total)


# ---------------------------------------------------------------------------- availability


def test_availability_follows_bitfield_have_and_disconnect() -> None:
    p = setup_picker("1132")
    assert [p.availability(i) for i in range(4)] == [1, 1, 3, 2]
    p.on_peer_have("p1", 0)
    p.on_peer_have("p1", 0)  # a repeated have counts once
    assert p.availability(0) == 2
    p.on_peer_disconnect("p0")
    assert [p.availability(i) for i in range(4)] == [1, 0, 2, 1]
    check_invariants(p)


def test_have_all_have_none_and_bitfield_replace() -> None:
    p = setup_picker("0000")
    assert p.on_peer_have_all("s") is True
    assert [p.availability(i) for i in range(4)] == [1, 1, 1, 1]
    p.on_peer_have_none("s")
    assert [p.availability(i) for i in range(4)] == [0, 0, 0, 0]
    assert p.on_peer_bitfield("s", bytearray([0, 1, 0, 0])) is True
    assert p.on_peer_bitfield("s", bytearray([0, 0, 1, 1])) is True
    assert [p.availability(i) for i in range(4)] == [0, 0, 1, 1]
    p.on_peer_have("s", 0)
    p.on_peer_have("s", 1)  # now it has everything: counted as a seed
    assert p.statistics().seeds == 1
    assert [p.availability(i) for i in range(4)] == [1, 1, 1, 1]
    p.on_peer_disconnect("s")
    assert [p.availability(i) for i in range(4)] == [0, 0, 0, 0]
    check_invariants(p)


def test_bitfield_of_wrong_length_and_have_out_of_range_are_refused() -> None:
    p = setup_picker("00")
    with pytest.raises(ValueError, match="bitfield of 3 entries for 2 pieces"):
        p.on_peer_bitfield("x", bytearray(3))
    with pytest.raises(ValueError, match="have: piece 2 out of range"):
        p.on_peer_have("x", 2)


def test_interest() -> None:
    p = setup_picker("0000", have="1100")
    assert p.on_peer_bitfield("a", bytearray([1, 1, 0, 0])) is False
    assert p.on_peer_have("a", 3) is True
    assert p.is_interesting("a")
    p.on_piece_verified(3)
    assert not p.is_interesting("a")


# ---------------------------------------------------------------------------- pick order


def test_rarest_first_one_of_ten_before_nine_of_ten() -> None:
    # piece 0: 1 of 10 peers; piece 1: 9 of 10; piece 2: 5 of 10.
    p = Picker(3, PL, 3 * PL, rng=random.Random(3), random_first_pieces=0)
    for k in range(10):
        p.on_peer_bitfield(k, bytearray([k == 0, k != 0, k < 5]))
    p.on_peer_have_all("seed")
    assert pieces_of(p.pick("seed", 3 * BPP)) == [0, 2, 1]
    check_invariants(p)


def test_rarest_first_with_availability_string() -> None:
    p = setup_picker("3213421", seed=5)
    p.on_peer_have_all("me")
    got = pieces_of(p.pick("me", 7 * BPP))
    assert {*got[:2]} == {2, 6}
    assert {*got[2:4]} == {1, 5}
    assert {*got[4:6]} == {0, 3}
    assert got[6] == 4


def test_only_pieces_the_peer_has() -> None:
    p = setup_picker("1132")
    # p2 holds pieces 2 only (availability > 2)
    assert pieces_of(p.pick("p2", 100)) == [2]
    assert pieces_of(p.pick("p1", 100)) == [3]
    assert p.pick("nobody", 5) == []


def test_ties_are_broken_at_random() -> None:
    firsts = Counter()
    for seed in range(200):
        p = setup_picker("2111112", seed=seed)
        p.on_peer_have_all("me")
        firsts[p.pick("me", 1)[0].piece] += 1
    assert set(firsts) == {1, 2, 3, 4, 5}
    assert min(firsts.values()) > 15  # roughly 40 each


def test_ties_are_random_for_a_peer_with_a_few_pieces() -> None:
    firsts = Counter()
    for seed in range(200):
        p = setup_picker("11111111", seed=seed)
        p.on_peer_bitfield("me", bytearray([0, 1, 0, 1, 1, 0, 0, 1]))
        firsts[p.pick("me", 1)[0].piece] += 1
    assert set(firsts) == {1, 3, 4, 7}


def test_partial_pieces_are_finished_first() -> None:
    p = setup_picker("1113")
    # Piece 0 is the rarest; "a" starts it, then "b" must continue piece 0 rather than start
    # another rare piece.
    p.on_peer_have_all("a")
    p.on_peer_have_all("b")
    first = p.pick("a", 2)
    assert [b.piece for b in first] == [first[0].piece] * 2
    started = first[0].piece
    second = p.pick("b", 3)
    assert [b.piece for b in second][:2] == [started, started]
    assert second[2].piece != started
    # The piece closest to completion comes first.
    for blk in first:
        p.on_block("a", blk)
    third = p.pick("a", 1)
    assert third[0].piece == second[2].piece or third == []
    check_invariants(p)


def test_partial_piece_closest_to_done_first() -> None:
    p = setup_picker("1111")
    p.on_peer_have_all("a")
    x = p.pick("a", 1)  # starts piece X
    y = p.pick("a", BPP)  # finishes X's requests, then starts Y with one block
    px, py = x[0].piece, y[-1].piece
    assert px != py
    for blk in x + y:
        if blk.piece == py:
            p.abort_requests("a", [blk])  # Y is now partial with every block free
    p.abort_requests("a", [x[0]])  # X has one free block, three requested
    nxt = p.pick("a", 2)
    assert nxt[0].piece == px
    assert nxt[1].piece == py


def test_rarer_new_piece_before_a_common_partial_piece() -> None:
    # Piece 0 is held by everyone and half done; piece 1 is held by one peer only. A seed
    # must spend its upload on piece 1, not on a piece the swarm already has plenty of.
    p = setup_picker("51")
    p.on_peer_have_all("seed")
    first = p.pick("p0", 2)
    assert {b.piece for b in first} == {1}
    p.abort_requests("p0")
    common = p.pick("p1", 2)  # p1 only has piece 0
    assert {b.piece for b in common} == {0}
    p.abort_requests("p1")
    got = p.pick("seed", BPP + 2)
    assert pieces_of(got) == [1, 0]
    check_invariants(p)


def test_too_many_partials_are_finished_before_new_pieces() -> None:
    p = setup_picker("5555111", max_partials=3)
    for i, k in enumerate(("a", "b", "c")):
        p.on_peer_bitfield(k, bytearray([1, 1, 1, 1, 0, 0, 0]))
        p.pick(k, 1, restrict_to={i})
        p.abort_requests(k)
    assert len(p._downloads) == 3  # three common pieces half started, all blocks free again
    p.on_peer_have_all("seed")
    got = p.pick("seed", 3 * BPP)
    assert pieces_of(got) == [0, 1, 2]  # not the rarer pieces 4, 5, 6
    check_invariants(p)


def test_first_pieces_are_random_not_rarest() -> None:
    counts = Counter()
    for seed in range(300):
        p = setup_picker("19999999", seed=seed, random_first_pieces=4)
        p.on_peer_have_all("me")
        counts[p.pick("me", 1)[0].piece] += 1
    assert counts[0] < 100  # rarest-first would always give 0
    assert len(counts) == 8


def test_random_first_ends_after_enough_pieces() -> None:
    for seed in range(20):
        p = setup_picker("19999999", have="01111000", seed=seed, random_first_pieces=4)
        p.on_peer_have_all("me")
        assert p.pick("me", 1)[0].piece == 0


def test_priorities_order_and_skip() -> None:
    p = setup_picker("1211", priority="0471")
    p.on_peer_have_all("me")
    # piece 0 skipped; piece 2 (priority 7) before the rarer piece 1 (priority 4).
    got = pieces_of(p.pick("me", 100))
    assert got == [2, 1, 3]
    assert p.statistics().pieces_wanted == 3
    check_invariants(p)


def test_skipped_pieces_are_never_requested_even_in_endgame() -> None:
    p = setup_picker("11", priority="40")
    p.on_peer_have_all("a")
    p.on_peer_have_all("b")
    assert pieces_of(p.pick("a", 100)) == [0]
    assert pieces_of(p.pick("b", 100)) == [0]  # endgame duplicates of piece 0 only
    assert p.in_endgame


def test_file_priorities_keep_shared_pieces() -> None:
    # files: [0, 1.5 pieces) skipped, [1.5, 2.5) wanted, [2.5, 4) skipped
    p = setup_picker("1111")
    p.set_file_priorities([PL + PL // 2, PL, PL + PL // 2], [0, 4, 0])
    assert [p.piece_priority(i) for i in range(4)] == [0, 4, 4, 0]
    assert p.left == 2 * PL
    p.on_peer_have_all("me")
    assert sorted(pieces_of(p.pick("me", 100))) == [1, 2]
    with pytest.raises(ValueError, match="file lengths do not add up to the torrent's length"):
        p.set_file_priorities([PL], [4])
    with pytest.raises(ValueError, match=r"priority 9 is not within 0\.\.7"):
        p.set_file_priorities([4 * PL], [9])
    check_invariants(p)


def test_priority_change_mid_download() -> None:
    p = setup_picker("1111")
    p.on_peer_have_all("me")
    first = p.pick("me", 1)
    p.set_piece_priorities([0, 0, 0, 0])
    assert p.pick("me", 10) == []
    assert p.is_complete
    assert p.left == 0
    p.set_piece_priorities([4, 4, 4, 4])
    more = p.pick("me", BPP)
    assert more[0].piece == first[0].piece  # the partial piece continues
    check_invariants(p)


def test_sequential() -> None:
    p = setup_picker("3121", have="0100", sequential=True)
    p.on_peer_have_all("me")
    assert pieces_of(p.pick("me", 100)) == [0, 2, 3]
    check_invariants(p)


def test_sequential_prefers_a_lower_new_piece_over_a_higher_partial() -> None:
    p = setup_picker("1111", sequential=True)
    p.on_peer_bitfield("late", bytearray([0, 0, 1, 1]))
    p.pick("late", 1)  # starts piece 2: "late" has no earlier piece
    p.abort_requests("late")
    p.on_peer_have_all("me")
    assert pieces_of(p.pick("me", 3 * BPP)) == [0, 1, 2]
    check_invariants(p)


def test_sequential_resumes_after_failure() -> None:
    p = setup_picker("1111", sequential=True)
    p.on_peer_have_all("me")
    blocks = p.pick("me", 2 * BPP)
    for blk in blocks:
        p.on_block("me", blk)
    p.on_piece_verified(1)
    p.on_piece_failed(0)
    assert p.pick("me", 1)[0].piece == 0


def test_start_new_false_only_continues_partial_pieces() -> None:
    p = setup_picker("1111")
    p.on_peer_have_all("me")
    first = p.pick("me", 1)
    more = p.pick("me", 100, start_new=False)
    assert pieces_of(more) == [first[0].piece]
    assert len(more) == BPP - 1
    assert p.pick("me", 100, start_new=False) == []
    check_invariants(p)


def test_restrict_to_allowed_fast_set() -> None:
    p = setup_picker("1111")
    p.on_peer_have_all("me")
    assert pieces_of(p.pick("me", 100, restrict_to={2})) == [2]


# ---------------------------------------------------------------------------- block bookkeeping


def test_block_received_and_piece_complete() -> None:
    p = setup_picker("1")
    p.on_peer_have_all("a")
    blocks = p.pick("a", 10, now=5.0)
    assert len(blocks) == BPP
    assert p.outstanding("a") == blocks
    results = [p.on_block("a", b) for b in blocks]
    assert [r.status for r in results] == [BlockStatus.NEW] * BPP
    assert [r.piece_complete for r in results] == [False] * (BPP - 1) + [True]
    assert p.on_block("a", blocks[0]).status is BlockStatus.DUPLICATE
    assert p.on_piece_verified(0) is True
    assert p.on_piece_verified(0) is False
    assert p.is_complete
    assert p.left == 0
    assert p.bytes_done == PL
    assert p.on_block("a", blocks[0]).status is BlockStatus.DUPLICATE
    check_invariants(p)


def test_unexpected_blocks() -> None:
    p = setup_picker("11", priority="40")
    p.on_peer_have_all("a")
    assert p.on_block("a", (0, 1, BLOCK_SIZE)).status is BlockStatus.UNEXPECTED
    assert p.on_block("a", (0, 0, 100)).status is BlockStatus.UNEXPECTED
    assert p.on_block("a", (5, 0, BLOCK_SIZE)).status is BlockStatus.UNEXPECTED
    assert p.on_block("a", (1, 0, BLOCK_SIZE)).status is BlockStatus.UNEXPECTED  # skipped piece
    # An unrequested block of a wanted piece is still useful.
    assert p.on_block("a", (0, 0, BLOCK_SIZE)).status is BlockStatus.NEW
    check_invariants(p)


def test_timeout_reassigns_and_late_copy_is_accepted() -> None:
    p = setup_picker("1")
    p.on_peer_have_all("slow")
    p.on_peer_have_all("fast")
    blocks = p.pick("slow", BPP, now=0.0)
    assert p.pick("fast", 1) == [blocks[0]]  # endgame: a duplicate request
    p.abort_requests("fast")
    assert p.expired_requests("slow", now=10.0, timeout_s=20.0) == []
    expired = p.expired_requests("slow", now=30.0, timeout_s=20.0)
    assert expired == blocks
    assert p.on_request_timeout("slow", blocks[1]) is True
    assert not p.in_endgame
    assert p.pick("fast", 1, now=30.0) == [blocks[1]]
    # The slow peer delivers after all: accepted, and the fast peer's request is cancelled.
    r = p.on_block("slow", blocks[1])
    assert r.status is BlockStatus.NEW
    assert r.cancels == (("fast", blocks[1]),)
    assert p.outstanding("fast") == []
    check_invariants(p)


def test_choke_and_disconnect_free_requests() -> None:
    p = setup_picker("11")
    p.on_peer_have_all("a")
    p.on_peer_have_all("b")
    got = p.pick("a", 3)
    assert p.abort_requests("a", got[:1]) == got[:1]
    assert p.on_peer_disconnect("a") == got[1:]
    assert p.on_peer_disconnect("a") == []
    assert [p.availability(i) for i in range(2)] == [2, 2]
    assert p.pick("b", 3) == got  # the same blocks, now from b
    check_invariants(p)


def test_endgame_duplicates_and_cancels() -> None:
    p = setup_picker("111")
    peers = ["a", "b", "c", "d"]
    for k in peers:
        p.on_peer_have_all(k)
    everything = p.pick("a", 100)
    assert len(everything) == 3 * BPP + 0 or len(everything) == 3 * BPP
    assert p.in_endgame
    dup_b = p.pick("b", 4)
    assert len(dup_b) == 4
    assert set(dup_b) <= set(everything)
    dup_c = p.pick("c", 100)
    assert len(dup_c) == 3 * BPP  # every block once more; the least-requested first
    assert set(dup_c[:8]).isdisjoint(dup_b)
    dup_d = p.pick("d", 100)  # at most three requesters per block
    assert set(dup_d) == set(everything) - set(dup_b)
    blk = dup_b[0]
    r = p.on_block("c", blk)
    assert r.status is BlockStatus.NEW
    assert sorted(r.cancels) == [("a", blk), ("b", blk)]
    assert blk not in p.outstanding("a")
    assert blk not in p.outstanding("b")
    assert p.on_block("a", blk).status is BlockStatus.DUPLICATE
    check_invariants(p)


def test_endgame_never_asks_the_same_peer_twice() -> None:
    p = setup_picker("1")
    p.on_peer_have_all("a")
    assert len(p.pick("a", 100)) == BPP
    assert p.pick("a", 100) == []


# ---------------------------------------------------------------------------- hash results


def deliver(p: Picker, piece: int, senders: list[str]) -> None:
    for b, blk in enumerate(p.blocks(piece)):
        who = senders[b % len(senders)]
        r = p.on_block(who, blk)
        assert r.status is BlockStatus.NEW


def test_hash_failure_requeues_and_flags_contributors() -> None:
    p = setup_picker("11")
    for k in ("a", "b", "c"):
        p.on_peer_have_all(k)
    deliver(p, 0, ["a", "b"])
    fail = p.on_piece_failed(0)
    assert fail.contributors == {"a", "b"}
    assert fail.ban == frozenset()
    assert p.failures("a") == 1
    assert not p.have(0)
    assert p.left == 2 * PL
    assert 0 in pieces_of(p.pick("c", 100))
    check_invariants(p)
    p.abort_requests("c")
    deliver(p, 0, ["a", "c"])
    fail = p.on_piece_failed(0)
    assert fail.ban == {"a"}  # second failed piece for a
    check_invariants(p)


def test_sole_contributor_is_banned_at_once() -> None:
    p = setup_picker("1")
    p.on_peer_have_all("a")
    deliver(p, 0, ["a"])
    assert p.on_piece_failed(0).ban == {"a"}


def test_failed_piece_with_outstanding_requests() -> None:
    p = setup_picker("1")
    p.on_peer_have_all("a")
    p.pick("a", BPP)
    fail = p.on_piece_failed(0)  # e.g. a check found garbage before the blocks arrived
    assert fail.contributors == frozenset()
    assert p.outstanding("a") == []
    check_invariants(p)
    deliver(p, 0, ["a"])
    p.on_piece_verified(0)
    with pytest.raises(ValueError, match="piece 0 is verified; it cannot fail"):
        p.on_piece_failed(0)


def test_statistics_and_resume() -> None:
    total = 3 * PL + 100
    p = Picker(4, PL, total, have=[3])
    s = p.statistics()
    assert (s.pieces_have, s.bytes_done, s.left, s.bytes_wanted) == (1, 100, 3 * PL, total)
    assert not s.is_complete
    assert not s.in_endgame
    for i in range(3):
        p.on_piece_verified(i)
    assert p.is_complete
    assert p.left == 0
    assert p.bytes_done == total
    assert p.have_pieces() == [0, 1, 2, 3]


# ---------------------------------------------------------------------------- random operations


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_random_operations_keep_the_invariants(seed: int) -> None:
    rng = random.Random(seed)
    n = 40
    p = Picker(n, PL, n * PL - 5, rng=random.Random(1), random_first_pieces=3)
    peers = [f"q{i}" for i in range(8)]
    for step in range(3000):
        op = rng.random()
        k = rng.choice(peers)
        if op < 0.6:
            _random_peer_op(p, rng, op, k, n, step)
        else:
            _random_transfer_op(p, rng, op, k, n)
        if step % 50 == 0:
            check_invariants(p)
    check_invariants(p)
    assert p.num_have > 5  # the walk got somewhere


def _random_peer_op(p: Picker, rng: random.Random, op: float, k: str, n: int, step: int) -> None:
    """Availability changes and picks (``op`` below 0.6)."""
    if op < 0.15:
        p.on_peer_bitfield(k, bytearray(rng.random() < 0.5 for _ in range(n)))
    elif op < 0.3:
        p.on_peer_have(k, rng.randrange(n))
    elif op < 0.35:
        p.on_peer_have_all(k)
    elif op < 0.4:
        p.on_peer_disconnect(k)
    elif op < 0.55:
        p.pick(k, rng.randrange(1, 10), now=step)
    else:
        allowed = set(rng.sample(range(n), 5))
        got = p.pick(k, rng.randrange(1, 10), now=step, restrict_to=allowed, start_new=rng.random() < 0.5)
        assert all(b.piece in allowed for b in got)


def _random_transfer_op(p: Picker, rng: random.Random, op: float, k: str, n: int) -> None:
    """Blocks, timeouts, piece outcomes and priority changes (``op`` from 0.6 up)."""
    if op < 0.8:
        out = p.outstanding(k)
        if out:
            p.on_block(k, rng.choice(out))
    elif op < 0.85:
        out = p.outstanding(k)
        if out:
            p.on_request_timeout(k, out[0])
    elif op < 0.9:
        done = [i for i, d in p._downloads.items() if d.received == d.num_blocks]
        if done:
            i = rng.choice(done)
            if rng.random() < 0.7:
                p.on_piece_verified(i)
            else:
                p.on_piece_failed(i)
    elif op < 0.92:
        p.set_piece_priorities([rng.choice([0, 1, 4, 7]) for _ in range(n)])
    elif op < 0.93:
        p.sequential = not p.sequential


# --- padding (BEP 47, v2 alignment gaps) -------------------------------------------------


def test_blocks_wholly_of_padding_are_never_requested_nor_counted() -> None:
    # Piece 0: data then 2.5 blocks of padding (blocks 2 and 3 are padding, block 1 partly).
    pad_start = BLOCK_SIZE + BLOCK_SIZE // 2
    p = setup_picker("11", padding=[(pad_start, PL - pad_start)])
    assert p.padding_blocks(0) == (2, 3)
    assert p.padding_blocks(1) == ()
    assert p.bytes_wanted == 2 * PL - (PL - pad_start)
    picked = p.pick("p0", 100, now=0.0)
    assert {(b.piece, b.offset) for b in picked} == {(0, 0), (0, BLOCK_SIZE)} | {
        (1, i * BLOCK_SIZE) for i in range(BPP)
    }
    assert p.in_endgame
    results = [p.on_block("p0", b) for b in picked if b.piece == 0]
    assert results[-1].piece_complete
    assert p.on_piece_verified(0)
    assert p.bytes_done == pad_start
    assert p.left == PL
    # A padding block arriving anyway (another client asked for it) is nothing new.
    assert p.on_block("p0", Block(0, 2 * BLOCK_SIZE, BLOCK_SIZE)).status is BlockStatus.DUPLICATE
    check_invariants(p)


def test_a_failed_piece_with_padding_gives_back_only_its_data_blocks() -> None:
    p = setup_picker("1", padding=[(2 * BLOCK_SIZE, 2 * BLOCK_SIZE)])
    picked = p.pick("p0", 100, now=0.0)
    assert len(picked) == 2
    for b in picked:
        p.on_block("p0", b)
    p.on_piece_failed(0)
    assert len(p.pick("p1", 100, now=0.0)) == 0  # p1 has nothing
    p.on_peer_have_all("p1")
    assert len(p.pick("p1", 100, now=0.0)) == 2
    check_invariants(p)
