"""A connection made before the metadata is known (magnet links): bounded early announcements,
no requests until ``set_geometry``, and ut_metadata through the BEP 10 handshake."""

from __future__ import annotations

import pytest

from tests.wire_helpers import NUM_PIECES, PIECE_LENGTH, TOTAL_LENGTH, Pair, connected, feed
from torrent.errors import LocalProtocolError, RemoteProtocolError
from torrent.proto.pieceset import PieceSet
from torrent.proto.ut_metadata import MetadataRequest, decode, encode
from torrent.proto.wire import (
    MAX_UNKNOWN_BITFIELD,
    Bitfield,
    ExtendedMessage,
    ExtensionHandshake,
    Have,
    HaveAll,
    HaveNone,
    Request,
)

UNKNOWN = {"piece_length": None, "total_length": None}


def test_both_or_neither_geometry() -> None:
    with pytest.raises(ValueError, match="piece_length and total_length are both known or both None"):
        connected({"piece_length": None})


def test_early_bitfield_then_geometry() -> None:
    proto = connected(UNKNOWN)
    assert not proto.geometry_known
    # 10 pieces: pieces 0 and 9 -> 0b10000000 0b01000000
    events = feed(proto, b"\x00\x00\x00\x03\x05\x80\x40")
    assert isinstance(events[0], Bitfield)
    proto.set_geometry(PIECE_LENGTH, TOTAL_LENGTH)
    assert proto.num_pieces == NUM_PIECES
    assert list(proto.peer_pieces) == [0, 9]
    proto.send(HaveNone())
    feed(proto, b"\x00\x00\x00\x01\x01")  # they unchoke us
    assert proto.send(Request(9, 0, 10000)) == b"\x00\x00\x00\x0d\x06" + (9).to_bytes(4, "big") + bytes(4) + (
        10000
    ).to_bytes(4, "big")


def test_early_bitfield_of_wrong_length_fails_at_geometry() -> None:
    proto = connected(UNKNOWN)
    feed(proto, b"\x00\x00\x00\x04\x05\x80\x40\x00")
    with pytest.raises(RemoteProtocolError):
        proto.set_geometry(PIECE_LENGTH, TOTAL_LENGTH)
    with pytest.raises(RemoteProtocolError):
        proto.next_event()


def test_early_spare_bits_fail_at_geometry() -> None:
    proto = connected(UNKNOWN)
    feed(proto, b"\x00\x00\x00\x03\x05\x80\x20")  # bit 10 set, torrent has 10 pieces
    with pytest.raises(RemoteProtocolError):
        proto.set_geometry(PIECE_LENGTH, TOTAL_LENGTH)


def test_early_haves_and_have_all() -> None:
    proto = connected(UNKNOWN)
    events = feed(proto, b"\x00\x00\x00\x01\x0f" + b"\x00\x00\x00\x05\x04\x00\x00\x00\x03")
    assert events[-1] == Have(3)
    proto.set_geometry(PIECE_LENGTH, TOTAL_LENGTH)
    assert list(proto.peer_pieces) == [3]

    proto = connected(UNKNOWN)
    feed(proto, b"\x00\x00\x00\x01\x0e")
    proto.set_geometry(PIECE_LENGTH, TOTAL_LENGTH)
    assert proto.peer_pieces == PieceSet.full(NUM_PIECES)

    proto = connected(UNKNOWN)
    feed(proto, b"\x00\x00\x00\x05\x04\x00\x00\x00\x0a")  # piece 10: past the end
    with pytest.raises(RemoteProtocolError):
        proto.set_geometry(PIECE_LENGTH, TOTAL_LENGTH)


def test_early_bitfield_is_bounded() -> None:
    proto = connected(UNKNOWN)
    n = MAX_UNKNOWN_BITFIELD + 1
    with pytest.raises(RemoteProtocolError):
        feed(proto, (n + 1).to_bytes(4, "big") + b"\x05")
    proto = connected(UNKNOWN)
    with pytest.raises(RemoteProtocolError):
        feed(proto, b"\x00\x00\x00\x05\x04" + (MAX_UNKNOWN_BITFIELD * 8).to_bytes(4, "big"))


def test_no_requests_haves_or_bitfields_before_geometry() -> None:
    proto = connected(UNKNOWN)
    feed(proto, b"\x00\x00\x00\x01\x0e\x00\x00\x00\x01\x01")  # have all, unchoke
    proto.send(HaveNone())
    for ev in (Request(0, 0, 16384), Have(0), Bitfield(PieceSet(0))):
        with pytest.raises(LocalProtocolError, match="geometry"):
            proto.send(ev)
    with pytest.raises(LocalProtocolError):
        proto.set_geometry(0, 5)


def test_their_requests_are_rejected_before_geometry() -> None:
    proto = connected(UNKNOWN)
    proto.send(HaveNone())
    feed(proto, b"\x00\x00\x00\x01\x0f")
    req = b"\x00\x00\x00\x0d\x06" + bytes(4) + bytes(4) + (16384).to_bytes(4, "big")
    assert feed(proto, req) == []
    assert proto.data_to_send() == b"\x00\x00\x00\x0d\x10" + req[5:]  # BEP 6 reject


def test_geometry_only_once() -> None:
    proto = connected()
    with pytest.raises(LocalProtocolError):
        proto.set_geometry(PIECE_LENGTH, TOTAL_LENGTH)


def test_ut_metadata_through_extension_handshake() -> None:
    pair = Pair(
        {**UNKNOWN, "extensions": {"ut_metadata": 2}},
        {"extensions": {"ut_metadata": 3}},
    )
    pair.handshake()
    got = pair.send(pair.b, ExtensionHandshake({"metadata_size": 31235}))
    assert isinstance(got[0], ExtensionHandshake)
    assert got[0].metadata_size == 31235
    assert got[0].extensions == {"ut_metadata": 3}
    got = pair.send(pair.a, ExtensionHandshake({}))
    assert pair.b.peer_extensions == {"ut_metadata": 2}
    raw = pair.a.send(ExtendedMessage("ut_metadata", encode(MetadataRequest(1))))
    assert raw == b"\x00\x00\x00\x1b\x14\x03d8:msg_typei0e5:piecei1ee"
    got = feed(pair.b, raw)
    assert got == [ExtendedMessage("ut_metadata", b"d8:msg_typei0e5:piecei1ee")]
    assert decode(got[0].payload) == MetadataRequest(1)
    pair.send(pair.b, HaveAll())
    pair.a.set_geometry(PIECE_LENGTH, TOTAL_LENGTH)
    assert pair.a.peer_pieces.is_full()
