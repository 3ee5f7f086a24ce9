"""SmartBan on literal bytes: only the senders of blocks that differ from the good copy are named."""

from __future__ import annotations

from torrent.proto.smart_ban import SmartBan
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
