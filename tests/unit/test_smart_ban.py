"""SmartBan on literal bytes: only the senders of blocks that differ from the good copy are
named; LeafBlame names them from a v2 piece's leaf hashes, checked against its node."""

from __future__ import annotations

import hashlib

from torrent.proto import merkle
from torrent.proto.smart_ban import LeafBlame, SmartBan
from torrent.types import BLOCK_SIZE

B = BLOCK_SIZE
GOOD = b"a" * B + b"b" * B + b"c" * 100  # three blocks, the last one short


def corrupt(data: bytes, block: int) -> bytes:
    start = block * B
    return data[:start] + b"X" + data[start + 1 :]


def test_the_sender_of_the_differing_block_is_named_and_the_honest_ones_are_not() -> None:
    ban: SmartBan[str] = SmartBan()
    ban.on_piece_failed(7, corrupt(GOOD, 1), {0: "alice", B: "mallory", 2 * B: "bob"})
    assert len(ban) == 1
    assert ban.on_piece_passed(7, GOOD) == ["mallory"]
    assert len(ban) == 0, "a passed piece's suspects are forgotten"
    assert ban.on_piece_passed(7, GOOD) == []


def test_the_short_last_block_is_compared_too() -> None:
    ban: SmartBan[str] = SmartBan()
    ban.on_piece_failed(0, corrupt(GOOD, 2), {0: "alice", B: "bob", 2 * B: "mallory"})
    assert ban.on_piece_passed(0, GOOD) == ["mallory"]


def test_liars_of_two_failed_copies_are_all_found_once() -> None:
    ban: SmartBan[str] = SmartBan()
    ban.on_piece_failed(3, corrupt(GOOD, 0), {0: "m1", B: "alice", 2 * B: "alice"})
    ban.on_piece_failed(3, corrupt(corrupt(GOOD, 0), 2), {0: "m2", B: "bob", 2 * B: "m1"})
    assert sorted(ban.on_piece_passed(3, bytearray(GOOD))) == ["m1", "m2"]


def test_a_good_block_in_a_failed_copy_clears_its_sender() -> None:
    ban: SmartBan[tuple[str, int]] = SmartBan()
    ban.on_piece_failed(1, GOOD, {0: ("10.0.0.1", 1), B: ("10.0.0.2", 2)})  # e.g. a disk error
    assert ban.on_piece_passed(1, memoryview(GOOD)) == []


def test_pieces_are_independent_and_forget_drops_one() -> None:
    ban: SmartBan[str] = SmartBan()
    ban.on_piece_failed(1, corrupt(GOOD, 0), {0: "m"})
    ban.on_piece_failed(2, corrupt(GOOD, 0), {0: "n"})
    ban.forget(1)
    assert ban.on_piece_passed(1, GOOD) == []
    assert ban.on_piece_passed(2, GOOD) == ["n"]


def _v2_piece(blocks: int, seed: int) -> tuple[bytes, list[bytes]]:
    import random

    data = random.Random(seed).randbytes(blocks * BLOCK_SIZE - 100)  # the last block is short
    return data, merkle.block_hashes(data)


def test_leaf_blame_names_exactly_the_senders_of_the_bad_blocks() -> None:
    data, leaves = _v2_piece(6, 1)
    width = 8  # leaves past the file's end are zero hashes
    node = merkle.root(leaves, width)
    bad = bytearray(data)
    bad[2 * BLOCK_SIZE + 7] ^= 1  # block 2, from "liar"
    bad[-1] ^= 1  # the short last block, from "other liar"
    senders = {0: "a", BLOCK_SIZE: "b", 2 * BLOCK_SIZE: "liar", 3 * BLOCK_SIZE: "a", 4 * BLOCK_SIZE: "b"}
    senders[5 * BLOCK_SIZE] = "other liar"
    blame: LeafBlame[str] = LeafBlame()
    assert blame.on_piece_failed(7, bad, senders, node, width) == []
    assert 7 in blame
    padded = leaves + [merkle.ZERO_HASH] * (width - len(leaves))
    # Leaves that do not prove the node are worthless: nobody is blamed, the piece waits on.
    forged = list(padded)
    forged[2] = hashlib.sha256(bytes(bad[2 * BLOCK_SIZE : 3 * BLOCK_SIZE])).digest()
    assert blame.on_leaves(7, forged) is None
    assert blame.on_leaves(7, padded[:4]) is None
    assert 7 in blame
    assert blame.on_leaves(7, padded) == [(2 * BLOCK_SIZE, "liar"), (5 * BLOCK_SIZE, "other liar")]
    assert 7 not in blame
    assert blame.on_leaves(7, padded) == []  # answered already


def test_leaf_blame_with_every_block_good_blames_nobody_and_stays_bounded() -> None:
    data, leaves = _v2_piece(4, 2)
    node = merkle.root(leaves, 4)
    blame: LeafBlame[str] = LeafBlame(max_pending=2)
    assert blame.on_piece_failed(0, data, {0: "a", BLOCK_SIZE: "b"}, node, 4) == []
    assert blame.on_piece_failed(1, data, {0: "a"}, node, 4) == []
    assert blame.on_piece_failed(2, data, {0: "a"}, node, 4) == [0]  # the oldest goes
    assert len(blame) == 2
    assert blame.on_leaves(1, leaves) == []
    blame.forget(2)
    assert len(blame) == 0
