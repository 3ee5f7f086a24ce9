"""Hypothesis: whatever the peers look like, a choke decision keeps the choker's rules."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from torrent.proto.choker import Choker, PeerSnapshot

snapshots = st.lists(
    st.builds(
        PeerSnapshot,
        key=st.integers(0, 30),
        interested=st.booleans(),
        choked=st.booleans(),
        download_rate_bps=st.floats(0, 1e7),
        upload_rate_bps=st.floats(0, 1e7),
        snubbed=st.booleans(),
        connected_at=st.floats(0, 1000),
        unchoked_at=st.none() | st.floats(0, 1000),
        uploaded_since_unchoke=st.integers(0, 1 << 30),
    ),
    max_size=25,
    unique_by=lambda p: p.key,
)


@given(
    rounds=st.lists(st.tuples(snapshots, st.booleans()), min_size=1, max_size=6),
    slots=st.integers(0, 6),
    seed=st.integers(0, 2**32),
)
def test_decisions_keep_the_rules(
    rounds: list[tuple[list[PeerSnapshot], bool]], slots: int, seed: int
) -> None:
    ch = Choker(slots=slots, rng=random.Random(seed))
    now = 1000.0
    for peers, seeding in rounds:
        d = ch.rank(peers, now=now, seeding=seeding)
        by_key = {p.key: p for p in peers}
        interested = {p.key for p in peers if p.interested}
        assert len(d.regular) == len(set(d.regular)) <= slots
        assert d.unchoke == set(d.regular) | ({d.optimistic} if d.optimistic is not None else set())
        assert d.unchoke <= interested
        assert d.optimistic not in d.regular
        assert not d.choke & d.unchoke
        assert d.choke == {p.key for p in peers if not p.choked} - d.unchoke
        if not seeding:
            assert not any(by_key[k].snubbed for k in d.regular)
            # Nobody left out ranks above a regular slot holder.
            cands = [p for p in peers if p.interested and not p.snubbed]
            if d.regular:
                worst = min(by_key[k].download_rate_bps for k in d.regular)
                assert all(p.download_rate_bps <= worst for p in cands if p.key not in d.regular)
        # Somebody interested and left out means the optimistic slot is used.
        if interested - set(d.regular):
            assert d.optimistic is not None
        assert ch.optimistic == d.optimistic
        now += 10.0
