"""Invariant check for ``torrent.proto.picker.Picker``, shared by the unit and property tests.

It reads the picker's private state on purpose: it is the picker's own consistency check
(libtorrent's ``check_invariant()``), kept out of the library.
"""

from __future__ import annotations

from torrent.proto.picker import Picker
from torrent.types import BLOCK_SIZE


def check_invariants(p: Picker) -> None:
    """The ordered arrays hold exactly the startable pieces, sorted, with correct buckets."""
    seen = set()
    for level, b in p._levels.items():
        assert b.start[-1] == len(b.order)
        for idx, piece in enumerate(b.order):
            assert p._pos[piece] == idx
            assert p._prio[piece] == level
            a = p._avail[piece]
            assert b.start[a] <= idx < b.start[a + 1], (piece, a, b.start)
            seen.add(piece)
        assert all(x <= y for x, y in zip(b.start, b.start[1:], strict=False))
    startable = {i for i in range(p.num_pieces) if p._prio[i] and not p._have[i] and i not in p._downloads}
    assert seen == startable
    assert all(p._pos[i] == -1 for i in range(p.num_pieces) if i not in seen)
    free = sum(
        (p._downloads[i].free if i in p._downloads else p.num_blocks(i) - len(p.padding_blocks(i)))
        for i in range(p.num_pieces)
        if p._prio[i] and not p._have[i]
    )
    assert p._free_blocks == free
    if p._bound is not None:
        cached, p._bound = p._bound, None
        assert p._new_piece_bound() == cached
    requested = sum(d.state.count(1) for d in p._downloads.values())
    assert p._requested == requested
    for key, st in p._peers.items():
        for blk in st.requests:
            d = p._downloads[blk.piece]
            r = d.req[blk.offset // BLOCK_SIZE]
            assert r is not None
            assert key in r
    # Availability is what the peers announced.
    seeds = sum(1 for st in p._peers.values() if st.has is None)
    assert p._seeds == seeds
    for i in range(p.num_pieces):
        assert p._avail[i] == sum(1 for st in p._peers.values() if st.has is not None and st.has[i])
    # Block states, counters and the two directions of the request map agree.
    for piece, d in p._downloads.items():
        assert d.free == d.state.count(0)
        assert d.received == d.state.count(2)
        assert (piece in p._open) == (d.free > 0)
        assert all(d.state[b] for b in range(d.hint))
        for b in range(d.num_blocks):
            r = d.req[b]
            assert (d.state[b] == 1) == bool(r)
            for key in r or ():
                assert p.block(piece, b) in p._peers[key].requests
    assert set(p._open) <= set(p._downloads)
    assert p._num_have == sum(p._have)
