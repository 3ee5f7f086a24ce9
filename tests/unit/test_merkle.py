"""BEP 52 merkle trees: pad hashes, roots, piece layers, proofs and the layer fetch."""

from __future__ import annotations

import hashlib

import pytest

from torrent.proto import merkle
from torrent.types import BLOCK_SIZE


def _h(a: bytes, b: bytes) -> bytes:
    return hashlib.sha256(a + b).digest()


def test_pad_hashes_are_hashes_of_zero_subtrees() -> None:
    assert merkle.pad_hash(0) == bytes(32)
    assert merkle.pad_hash(1) == _h(bytes(32), bytes(32))
    assert merkle.pad_hash(2) == _h(merkle.pad_hash(1), merkle.pad_hash(1))


def test_a_file_of_three_blocks_pads_its_fourth_leaf_with_zeros() -> None:
    data = b"a" * BLOCK_SIZE + b"b" * BLOCK_SIZE + b"c" * 100
    leaves = [hashlib.sha256(data[i : i + BLOCK_SIZE]).digest() for i in range(0, len(data), BLOCK_SIZE)]
    expected = _h(_h(leaves[0], leaves[1]), _h(leaves[2], bytes(32)))
    assert merkle.small_file_root(data) == expected
    assert merkle.small_file_root(b"x") == hashlib.sha256(b"x").digest()  # one block: the leaf


def test_root_from_the_piece_layer_equals_the_root_from_the_leaves() -> None:
    piece = 4 * BLOCK_SIZE
    data = bytes(range(256)) * (5 * piece // 256 + 7)  # five pieces and a bit: six
    layer = [merkle.piece_hash(data[i : i + piece], piece) for i in range(0, len(data), piece)]
    leaves = merkle.block_hashes(data)
    tree = merkle.MerkleTree(leaves, merkle.next_pow2(len(leaves)))
    assert merkle.root_from_piece_layer(layer, piece) == tree.root
    assert tree.layer(2) == layer


@pytest.mark.parametrize(
    ("index", "length", "proof_layers"), [(0, 2, 0), (4, 4, 3), (0, 16, 3), (6, 2, 3), (8, 8, 2)]
)
def test_proofs_check_against_the_root_and_a_changed_node_fails(
    index: int, length: int, proof_layers: int
) -> None:
    leaves = [hashlib.sha256(b"%d" % i).digest() for i in range(13)]
    tree = merkle.MerkleTree(leaves, 16)  # height 4
    hashes = merkle.proof(tree, 0, index, length, proof_layers)
    uncles = merkle.uncles_needed(tree.height, 0, index, length, proof_layers)
    assert len(hashes) == length + uncles
    nodes, extra = hashes[:length], hashes[length:]
    full = proof_layers == tree.height - 1
    assert merkle.verify_proof(tree.root, tree.height, 0, index, nodes, extra) == full
    if full:
        bad = [nodes[0][::-1], *nodes[1:]]
        assert not merkle.verify_proof(tree.root, tree.height, 0, index, bad, extra)


def test_a_proof_past_the_root_is_refused() -> None:
    tree = merkle.MerkleTree([bytes(32)] * 4, 4)
    with pytest.raises(ValueError, match="root"):
        merkle.proof(tree, 0, 0, 2, 2)


def test_piece_layer_fetch_keeps_only_proven_layers() -> None:
    piece = 2 * BLOCK_SIZE
    length = 1500 * piece + 5  # 1501 pieces: three runs of 512
    data_nodes = [hashlib.sha256(b"p%d" % i).digest() for i in range(1501)]
    root = merkle.root_from_piece_layer(data_nodes, piece)
    tree = merkle.MerkleTree(data_nodes, merkle.next_pow2(1501) * 2, 1)
    fetch = merkle.PieceLayerFetch([(root, length)], piece)
    runs = fetch.next_requests("a", 10)
    assert [r[2] for r in runs] == [0, 512, 1024]
    assert all(r[3] == 512 and r[1] == 1 for r in runs)
    # A liar's run is refused and handed back.
    liar = merkle.proof(tree, *runs[0][1:])
    liar[3] = bytes(32)
    with pytest.raises(ValueError, match="prove"):
        fetch.on_hashes("a", runs[0], liar)
    assert fetch.next_requests("b", 1) == [runs[0]]
    done: dict[bytes, bytes] = {}
    for peer, run in (("b", runs[0]), ("a", runs[1]), ("a", runs[2])):
        done |= fetch.on_hashes(peer, run, merkle.proof(tree, *run[1:]))
    assert fetch.done
    assert done == {root: b"".join(data_nodes)}
