"""Hypothesis: a seed that knows only the piece layer answers every hash request below it
exactly as one holding the whole tree would (``merkle.proof_below`` against ``merkle.proof``);
a piece's leaf hashes prove its node against the file's root (``merkle.PieceProofs``)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torrent.proto import merkle
from torrent.types import BLOCK_SIZE


def _trees(
    data: bytes, per_piece: int
) -> tuple[merkle.MerkleTree, merkle.MerkleTree, dict[int, merkle.MerkleTree]]:
    """The whole tree of ``data``, the tree a seed builds from its piece layer (or root),
    and the trees of its pieces."""
    piece_length = per_piece * BLOCK_SIZE
    leaves = merkle.block_hashes(data)
    if len(data) <= piece_length:
        width = merkle.next_pow2(len(leaves))
        full = merkle.MerkleTree(leaves, width)
        known = merkle.MerkleTree([full.root], width, merkle.log2(width))
        return full, known, {0: merkle.MerkleTree(leaves, width)}
    layer = [
        merkle.piece_hash(data[i : i + piece_length], piece_length) for i in range(0, len(data), piece_length)
    ]
    width = merkle.next_pow2(len(layer)) * per_piece
    full = merkle.MerkleTree(leaves, width)
    known = merkle.MerkleTree(layer, width, merkle.log2(per_piece))
    pieces = {
        k: merkle.MerkleTree(merkle.block_hashes(data[k * piece_length : (k + 1) * piece_length]), per_piece)
        for k in range(len(layer))
    }
    return full, known, pieces


@settings(deadline=None, max_examples=60)
@given(
    per_piece_log=st.integers(0, 4),
    length=st.integers(1, 40 * BLOCK_SIZE),
    seed=st.integers(0, 2**32),
    data=st.data(),
)
def test_a_proof_from_the_piece_trees_equals_the_whole_trees(
    per_piece_log: int, length: int, seed: int, data: st.DataObject
) -> None:
    payload = random.Random(seed).randbytes(length)
    full, known, pieces = _trees(payload, 1 << per_piece_log)
    assert known.root == full.root
    if known.base == 0:
        return  # one block per piece: nothing lies below the piece layer
    base = data.draw(st.integers(0, known.base - 1), label="base")
    width = full.num_leaves >> base
    run = 1 << data.draw(st.integers(0, merkle.log2(width)), label="log2 length")
    index = run * data.draw(st.integers(0, width // run - 1), label="run")
    proof_layers = data.draw(st.integers(0, full.height), label="proof layers")
    try:
        expected = merkle.proof(full, base, index, run, proof_layers)
    except ValueError:
        with pytest.raises(ValueError, match="past the root"):
            merkle.proof_below(known, pieces, base, index, run, proof_layers)
        return
    under = merkle.pieces_under(known, base, index, run)
    assert (
        merkle.proof_below(known, {k: pieces[k] for k in under}, base, index, run, proof_layers) == expected
    )


@settings(deadline=None, max_examples=60)
@given(
    per_piece_log=st.integers(0, 4),
    pieces=st.integers(2, 40),
    tail=st.integers(1, BLOCK_SIZE * 16),
    seed=st.integers(0, 2**32),
    data=st.data(),
)
def test_a_pieces_leaf_hashes_prove_its_node_against_the_root(
    per_piece_log: int, pieces: int, tail: int, seed: int, data: st.DataObject
) -> None:
    """Per-block proofs: the answer a whole tree gives to ``leaf_proof_run`` proves the
    piece's node (the node of the piece layer), its leaves and its uncles; a changed
    byte anywhere in the answer is refused."""
    per_piece = 1 << per_piece_log
    piece_length = per_piece * BLOCK_SIZE
    length = (pieces - 1) * piece_length + min(tail, piece_length)
    payload = random.Random(seed).randbytes(length)
    full, known, _ = _trees(payload, per_piece)
    k = data.draw(st.integers(0, pieces - 1), label="piece")
    run = merkle.leaf_proof_run(full.root, length, piece_length, k)
    answer = merkle.proof(full, *run[1:])
    proofs = merkle.PieceProofs(per_peer=1, in_all=1, timeout=10, retry=3)
    proofs.add(100 + k, run, k, per_piece)
    assert proofs.next_requests("p", lambda i: True, 0) == [run]
    if data.draw(st.booleans(), label="corrupt"):
        at = data.draw(st.integers(0, len(answer) - 1), label="hash")
        bit = data.draw(st.integers(0, 255), label="bit")
        bad = list(answer)
        bad[at] = bytes([bad[at][0] ^ (1 << bit % 8), *bad[at][1:]])
        with pytest.raises(ValueError, match="do not prove"):
            proofs.on_hashes("p", run, bad)
        assert 100 + k in proofs
        return
    (proven,) = proofs.on_hashes("p", run, answer)
    assert proven.index == 100 + k
    assert proven.node == known.node(known.base, k)
    assert proven.node == merkle.piece_hash(payload[k * piece_length : (k + 1) * piece_length], piece_length)
    assert list(proven.leaves) == [full.node(0, k * per_piece + j) for j in range(per_piece)]
    base = merkle.log2(per_piece)
    assert merkle.verify_proof(full.root, full.height, base, k, [proven.node], proven.uncles)
    assert not len(proofs)
