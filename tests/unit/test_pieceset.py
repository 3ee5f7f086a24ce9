"""PieceSet: a set of piece indexes in BEP 3 bitfield form."""

from __future__ import annotations

import pytest

from torrent.proto.pieceset import PieceSet


def test_empty_full_and_bytes() -> None:
    empty = PieceSet(10)
    assert len(empty) == 0
    assert empty.size == 10
    assert list(empty) == []
    assert empty.to_bytes() == b"\x00\x00"
    full = PieceSet.full(10)
    assert len(full) == 10
    assert full.is_full()
    assert full.to_bytes() == b"\xff\xc0"
    assert list(full) == list(range(10))
    assert list(full.missing()) == []
    assert PieceSet.full(16).to_bytes() == b"\xff\xff"
    assert PieceSet.full(0).to_bytes() == b""


def test_high_bit_of_first_byte_is_piece_zero() -> None:
    pieces = PieceSet.from_bytes(b"\xa0\x40", 10)
    assert list(pieces) == [0, 2, 9]
    assert len(pieces) == 3
    assert 0 in pieces
    assert 1 not in pieces
    assert 9 in pieces
    assert 10 not in pieces
    assert -1 not in pieces
    assert list(pieces.missing()) == [1, 3, 4, 5, 6, 7, 8]


def test_add_discard_keep_the_count() -> None:
    pieces = PieceSet(20)
    assert pieces.add(19)
    assert not pieces.add(19)
    assert pieces.add(0)
    assert len(pieces) == 2
    assert pieces.discard(19)
    assert not pieces.discard(19)
    assert not pieces.discard(99)
    assert list(pieces) == [0]
    assert len(pieces) == 1
    with pytest.raises(IndexError):
        pieces.add(20)
    pieces.clear()
    assert len(pieces) == 0
    assert pieces.to_bytes() == bytes(3)


def test_from_bytes_checks_length_and_spare_bits() -> None:
    with pytest.raises(ValueError, match="needs 2"):
        PieceSet.from_bytes(b"\x00", 10)
    with pytest.raises(ValueError, match="needs 2"):
        PieceSet.from_bytes(b"\x00\x00\x00", 10)
    with pytest.raises(ValueError, match="spare bits"):
        PieceSet.from_bytes(b"\x00\x20", 10)
    assert PieceSet.from_bytes(b"\xff", 8).is_full()


def test_set_algebra_and_equality() -> None:
    a = PieceSet.from_indexes([1, 2, 3], 12)
    b = PieceSet.from_indexes([3, 4], 12)
    assert list(a & b) == [3]
    assert list(a | b) == [1, 2, 3, 4]
    assert list(a - b) == [1, 2]
    assert len(a | b) == 4
    assert a == PieceSet.from_indexes([3, 2, 1], 12)
    assert a != b
    assert a != PieceSet.from_indexes([1, 2, 3], 13)
    with pytest.raises(ValueError, match="different sizes"):
        a & PieceSet(13)
    c = a.copy()
    c.add(11)
    assert 11 not in a
    assert 11 in c
