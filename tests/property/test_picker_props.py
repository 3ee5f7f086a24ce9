"""Hypothesis drives the picker through random peer events; its invariants hold after each step.

Besides the internal consistency check, the rules assert what a caller relies on: a pick never
returns a block of a piece the peer lacks, we have, or is skipped, never the same block twice to
one peer, and a delivered block is NEW exactly once until its piece fails.
"""

from __future__ import annotations

import pickle
import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.picker_helpers import check_invariants
from torrent.proto.picker import BlockStatus, Picker
from torrent.types import BLOCK_SIZE

N = 12
PIECE = 3 * BLOCK_SIZE
TOTAL = N * PIECE - 1000  # a short last piece with a short last block
PEERS = st.sampled_from(["a", "b", "c", "d"])
PIECES = st.integers(0, N - 1)


class PickerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.p = Picker(N, PIECE, TOTAL, rng=random.Random(0), random_first_pieces=2)
        self.received: set[tuple[int, int]] = set()

    @rule(peer=PEERS, bits=st.lists(st.booleans(), min_size=N, max_size=N))
    def bitfield(self, peer: str, bits: list[bool]) -> None:
        self.p.on_peer_bitfield(peer, bytearray(bits))

    @rule(peer=PEERS, piece=PIECES)
    def have(self, peer: str, piece: int) -> None:
        assert self.p.on_peer_have(peer, piece) == self.p.wants(piece)

    @rule(peer=PEERS)
    def have_all(self, peer: str) -> None:
        self.p.on_peer_have_all(peer)

    @rule(peer=PEERS)
    def disconnect(self, peer: str) -> None:
        self.p.on_peer_disconnect(peer)
        assert self.p.outstanding(peer) == []

    @rule(peer=PEERS, n=st.integers(1, 8), t=st.floats(0, 100))
    def pick(self, peer: str, n: int, t: float) -> None:
        before = set(self.p.outstanding(peer))
        got = self.p.pick(peer, n, now=t)
        assert len(got) <= n
        assert len(set(got)) == len(got)
        for blk in got:
            assert blk not in before
            assert self.p.peer_has(peer, blk.piece)
            assert self.p.wants(blk.piece)
            assert (blk.piece, blk.offset) not in self.received
        assert set(self.p.outstanding(peer)) == before | set(got)

    @rule(peer=PEERS, data=st.data())
    def deliver(self, peer: str, data: st.DataObject) -> None:
        out = self.p.outstanding(peer)
        if not out:
            return
        blk = data.draw(st.sampled_from(out))
        r = self.p.on_block(peer, blk)
        key = (blk.piece, blk.offset)
        assert (r.status is BlockStatus.NEW) == (key not in self.received)
        self.received.add(key)
        assert all(q != peer and b == blk for q, b in r.cancels)
        for q, _ in r.cancels:
            assert blk not in self.p.outstanding(q)

    @rule(peer=PEERS, data=st.data())
    def time_out(self, peer: str, data: st.DataObject) -> None:
        out = self.p.outstanding(peer)
        if out:
            self.p.on_request_timeout(peer, data.draw(st.sampled_from(out)))

    @precondition(lambda self: any(d.received == d.num_blocks for d in self.p._downloads.values()))
    @rule(data=st.data(), good=st.booleans())
    def hash_result(self, data: st.DataObject, good: bool) -> None:
        done = sorted(i for i, d in self.p._downloads.items() if d.received == d.num_blocks)
        piece = data.draw(st.sampled_from(done))
        if good:
            assert self.p.on_piece_verified(piece) is True
            assert self.p.have(piece)
        else:
            self.p.on_piece_failed(piece)
            self.received = {k for k in self.received if k[0] != piece}
            assert not self.p.have(piece)

    @rule(prios=st.lists(st.sampled_from([0, 1, 4, 7]), min_size=N, max_size=N))
    def priorities(self, prios: list[int]) -> None:
        self.p.set_piece_priorities(prios)

    @invariant()
    def consistent(self) -> None:
        check_invariants(self.p)
        s = self.p.statistics()
        assert s.left == s.bytes_wanted - sum(
            self.p.piece_size(i) for i in range(N) if self.p.have(i) and self.p.piece_priority(i)
        )


TestPicker = PickerMachine.TestCase
TestPicker.settings = settings(
    stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _state(p: Picker) -> bytes:
    """Everything a picker holds (its random generator included), comparable."""
    return pickle.dumps(p)


class BatchMachine(RuleBasedStateMachine):
    """``on_blocks`` for a run leaves the picker as ``on_block`` for each of its blocks does,
    with the same results: two pickers take the same events, one a block at a time."""

    def __init__(self) -> None:
        super().__init__()
        self.one, self.run = (
            Picker(N, PIECE, TOTAL, rng=random.Random(0), random_first_pieces=2) for _ in "12"
        )

    def both(self, call: str, *args: object, **kw: object) -> None:
        assert getattr(self.one, call)(*args, **kw) == getattr(self.run, call)(*args, **kw)

    @rule(peer=PEERS, bits=st.lists(st.booleans(), min_size=N, max_size=N))
    def bitfield(self, peer: str, bits: list[bool]) -> None:
        self.both("on_peer_bitfield", peer, bytearray(bits))

    @rule(peer=PEERS)
    def have_all(self, peer: str) -> None:
        self.both("on_peer_have_all", peer)

    @rule(peer=PEERS)
    def disconnect(self, peer: str) -> None:
        self.both("on_peer_disconnect", peer)

    @rule(peer=PEERS, n=st.integers(1, 8), t=st.floats(0, 100))
    def pick(self, peer: str, n: int, t: float) -> None:
        self.both("pick", peer, n, now=t)

    @rule(peer=PEERS, data=st.data())
    def deliver_run(self, peer: str, data: st.DataObject) -> None:
        # Mostly blocks asked of this peer (or of others: endgame copies), some of them twice,
        # and some that nobody asked for or that are malformed.
        asked = sorted({(b.piece, b.offset, b.length) for q in "abcd" for b in self.one.outstanding(q)})
        any_block = st.tuples(
            PIECES,
            st.sampled_from([0, BLOCK_SIZE, 2 * BLOCK_SIZE, 5, 3 * BLOCK_SIZE]),
            st.sampled_from([BLOCK_SIZE, BLOCK_SIZE - 1000, 7]),
        )
        pool = st.one_of(st.sampled_from(asked), any_block) if asked else any_block
        run = data.draw(st.lists(pool, max_size=10))
        each = [self.one.on_block(peer, blk) for blk in run]
        assert self.run.on_blocks(peer, [(p, o, bytes(n)) for p, o, n in run]) == each

    @rule(peer=PEERS, data=st.data())
    def time_out(self, peer: str, data: st.DataObject) -> None:
        out = self.one.outstanding(peer)
        if out:
            self.both("on_request_timeout", peer, data.draw(st.sampled_from(out)))

    @precondition(lambda self: any(d.received == d.num_blocks for d in self.one._downloads.values()))
    @rule(data=st.data(), good=st.booleans())
    def hash_result(self, data: st.DataObject, good: bool) -> None:
        done = sorted(i for i, d in self.one._downloads.items() if d.received == d.num_blocks)
        piece = data.draw(st.sampled_from(done))
        self.both("on_piece_verified" if good else "on_piece_failed", piece)

    @invariant()
    def same(self) -> None:
        check_invariants(self.run)
        assert _state(self.run) == _state(self.one)


TestBatch = BatchMachine.TestCase
TestBatch.settings = settings(
    stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
