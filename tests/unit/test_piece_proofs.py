"""Per-block proofs (BEP 52) for pieces whose piece layer is not known yet: the rules of
``merkle.PieceProofs`` with literal bytes, and ``Info.add_piece_hash_v2`` building a
file's layer from its proven pieces."""

from __future__ import annotations

import random

import pytest

from torrent.create import create
from torrent.errors import MetainfoError
from torrent.proto import merkle, ut_metadata
from torrent.types import BLOCK_SIZE

PIECE = 4 * BLOCK_SIZE  # four leaves a piece
PIECES = 5  # a piece layer 8 wide: a tree of 32 leaves
LENGTH = (PIECES - 1) * PIECE + 2 * BLOCK_SIZE + 7  # the last piece: three blocks, a zero leaf


def _file() -> tuple[bytes, merkle.MerkleTree]:
    data = random.Random(7).randbytes(LENGTH)
    leaves = merkle.block_hashes(data)
    return data, merkle.MerkleTree(leaves, merkle.next_pow2(PIECES) * (PIECE // BLOCK_SIZE))


def _proofs(**limits: float) -> merkle.PieceProofs:
    kw: dict[str, float] = {"per_peer": 2, "in_all": 3, "timeout": 10, "retry": 3, **limits}
    return merkle.PieceProofs(
        per_peer=int(kw["per_peer"]), in_all=int(kw["in_all"]), timeout=kw["timeout"], retry=kw["retry"]
    )


def _wait_all(proofs: merkle.PieceProofs, tree: merkle.MerkleTree) -> list[merkle.HashRun]:
    runs = [merkle.leaf_proof_run(tree.root, LENGTH, PIECE, k) for k in range(PIECES)]
    for k, run in enumerate(runs):
        proofs.add(k, run, k, PIECE // BLOCK_SIZE)
    return runs


def test_the_run_asks_for_the_pieces_leaves_with_every_uncle_to_the_root() -> None:
    _, tree = _file()
    assert tree.height == 5
    # Piece 3: leaves 12-15 of layer 0; proof layers 4 = height - 1, the most allowed.
    assert merkle.leaf_proof_run(tree.root, LENGTH, PIECE, 3) == (tree.root, 0, 12, 4, 4)
    answer = merkle.proof(tree, 0, 12, 4, 4)
    assert len(answer) == 4 + 3  # the leaves, then the uncles of layers 2, 3 and 4
    # A piece of one block asks for its pair: libtorrent leaves out a lone node's sibling.
    assert merkle.leaf_proof_run(b"r" * 32, 5 * BLOCK_SIZE, BLOCK_SIZE, 3) == (b"r" * 32, 0, 2, 2, 2)


def test_an_answer_proves_the_node_leaves_and_uncles_of_its_piece() -> None:
    data, tree = _file()
    proofs = _proofs()
    run = merkle.leaf_proof_run(tree.root, LENGTH, PIECE, 4)
    proofs.add(40, run, 4, 4)
    assert 40 in proofs
    assert proofs.next_requests("a", lambda i: True, 0) == [run]
    (proven,) = proofs.on_hashes("a", run, merkle.proof(tree, *run[1:]))
    # The last piece: two blocks and a short one, then a zero leaf.
    assert proven.node == merkle.piece_hash(data[4 * PIECE :], PIECE)
    assert proven.leaves == (*merkle.block_hashes(data[4 * PIECE :]), merkle.ZERO_HASH)
    assert merkle.verify_proof(tree.root, 5, 2, 4, [proven.node], proven.uncles)
    assert 40 not in proofs
    assert proofs.on_hashes("a", run, merkle.proof(tree, *run[1:])) == []  # a late second answer


def test_a_wrong_leaf_is_refused_and_its_peer_never_asked_again() -> None:
    _, tree = _file()
    proofs = _proofs()
    run = merkle.leaf_proof_run(tree.root, LENGTH, PIECE, 1)
    proofs.add(1, run, 1, 4)
    assert proofs.next_requests("liar", lambda i: True, 0) == [run]
    answer = merkle.proof(tree, *run[1:])
    answer[2] = bytes(32)
    with pytest.raises(ValueError, match="do not prove"):
        proofs.on_hashes("liar", run, answer)
    assert 1 in proofs
    assert proofs.next_requests("liar", lambda i: True, 1000) == []
    assert proofs.next_requests("honest", lambda i: True, 1) == [run]


def test_runs_per_peer_and_in_all_are_bounded() -> None:
    _, tree = _file()
    proofs = _proofs(per_peer=2, in_all=3)
    runs = _wait_all(proofs, tree)
    assert proofs.next_requests("a", lambda i: True, 0) == runs[:2]
    assert proofs.next_requests("a", lambda i: True, 0) == []
    assert proofs.next_requests("b", lambda i: True, 0) == runs[2:3]  # three in all
    assert proofs.in_flight() == 3
    assert proofs.in_flight("a") == 2
    proofs.on_hashes("a", runs[0], merkle.proof(tree, *runs[0][1:]))
    assert proofs.next_requests("b", lambda i: True, 0) == runs[3:4]


def test_only_a_peer_that_has_the_piece_is_asked() -> None:
    _, tree = _file()
    proofs = _proofs()
    runs = _wait_all(proofs, tree)
    assert proofs.next_requests("a", lambda i: i in (2, 4), 0) == [runs[2], runs[4]]


def test_a_reject_a_departure_or_a_time_out_waits_before_the_same_peer_is_asked_again() -> None:
    _, tree = _file()
    proofs = _proofs(per_peer=5, in_all=5, timeout=10, retry=3)
    runs = _wait_all(proofs, tree)
    proofs.next_requests("a", lambda i: True, 0)
    proofs.give_back("a", 0, runs[0])  # a reject of one run
    assert proofs.next_requests("a", lambda i: True, 2) == []
    assert proofs.next_requests("a", lambda i: True, 3) == [runs[0]]
    proofs.give_back("a", 3)  # it left: every run it held goes back
    assert proofs.in_flight() == 0
    assert proofs.next_requests("b", lambda i: True, 4) == runs
    proofs.expire(13)
    assert proofs.in_flight("b") == 5
    proofs.expire(14)  # ten ticks unanswered
    assert proofs.in_flight() == 0
    assert proofs.next_requests("c", lambda i: True, 14) == runs
    # A late answer from the peer that timed out still proves its piece.
    (proven,) = proofs.on_hashes("b", runs[3], merkle.proof(tree, *runs[3][1:]))
    assert proven.index == 3


def test_two_one_block_pieces_share_a_run_and_one_answer_proves_both() -> None:
    data = random.Random(3).randbytes(5 * BLOCK_SIZE - 100)
    tree = merkle.MerkleTree(merkle.block_hashes(data), 8)
    proofs = _proofs()
    run = merkle.leaf_proof_run(tree.root, len(data), BLOCK_SIZE, 2)
    assert run == merkle.leaf_proof_run(tree.root, len(data), BLOCK_SIZE, 3)
    proofs.add(12, run, 2, 1)
    proofs.add(13, run, 3, 1)
    assert len(proofs) == 2
    assert proofs.next_requests("a", lambda i: True, 0) == [run]
    got = {p.index: p for p in proofs.on_hashes("a", run, merkle.proof(tree, *run[1:]))}
    assert sorted(got) == [12, 13]
    for index, k in ((12, 2), (13, 3)):
        assert got[index].node == tree.node(0, k)
        assert merkle.verify_proof(tree.root, 3, 0, k, [got[index].node], got[index].uncles)
    assert not len(proofs)


def test_a_files_proven_pieces_make_its_piece_layer(tmp_path: object) -> None:
    from pathlib import Path

    content = Path(str(tmp_path)) / "f.bin"
    data, tree = _file()
    content.write_bytes(data)
    meta = create(content, piece_length=PIECE, torrent_format="v2")
    info = ut_metadata.metainfo_from_info(meta.info_bytes).info  # a magnet's: no layers
    (f,) = info.missing_piece_layers
    assert tree.root == f.pieces_root
    for k in range(PIECES):
        run = merkle.leaf_proof_run(f.pieces_root, f.length, PIECE, k)
        answer = merkle.proof(tree, *run[1:])
        node = merkle.root(answer[:4], 4)
        with pytest.raises(MetainfoError, match="does not prove"):
            info.add_piece_hash_v2(k, node, [bytes(32), *answer[5:]])
        assert info.piece_hash_v2(k) is None
        info.add_piece_hash_v2(k, node, answer[4:])
        assert info.piece_hash_v2(k) == node
        assert bool(info.missing_piece_layers) is (k < PIECES - 1)
    assert dict(info.piece_layers) == dict(meta.info.piece_layers)
    with pytest.raises(MetainfoError, match="does not match"):
        info.add_piece_hash_v2(0, bytes(32), [])
