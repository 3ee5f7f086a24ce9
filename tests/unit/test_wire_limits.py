"""Every limit of the peer-wire codec raises RemoteProtocolError naming the violation."""

from __future__ import annotations

import pytest

from tests.wire_helpers import INFO_HASH, PEER_B, connected, feed, make
from torrent.errors import LocalProtocolError, RemoteProtocolError
from torrent.proto.wire import (
    NEED_DATA,
    Block,
    ConnectionClosed,
    Handshake,
    HaveAll,
    Interested,
    PeerProtocol,
    Phase,
    Request,
    Unchoke,
    UnrequestedBlock,
    encode,
)

NO_EXTENSIONS = b"\x00" * 8
ONLY_FAST = b"\x00" * 7 + b"\x04"


def ready(**kwargs: object) -> PeerProtocol:
    proto = connected(dict(kwargs))
    proto.send(HaveAll())
    proto.send(Unchoke())
    feed(proto, b"\x00\x00\x00\x01\x0e\x00\x00\x00\x01\x01")
    return proto


def req(msg_id: int, index: int, begin: int, length: int) -> bytes:
    return (
        b"\x00\x00\x00\x0d" + bytes([msg_id]) + b"".join(v.to_bytes(4, "big") for v in (index, begin, length))
    )


def drain(proto: PeerProtocol) -> None:
    """Take events until the machine needs more data (or raises)."""
    while proto.next_event() is not NEED_DATA:
        pass


def raises(proto: PeerProtocol, data: bytes, match: str) -> None:
    proto.receive_data(data)
    with pytest.raises(RemoteProtocolError, match=match):
        drain(proto)
    # The machine moved to its error state before raising, and stays there.
    assert proto.their_phase is Phase.ERROR
    with pytest.raises(RemoteProtocolError, match="already failed"):
        proto.next_event()
    with pytest.raises(LocalProtocolError):
        proto.send(Interested())


# -- length prefixes: refused from the header alone, before the payload is buffered ---------------


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (b"\x00\x00\x40\x0a\x07", r"piece message with length 16394 \(allowed 10..16393\)"),
        (b"\x00\x00\x00\x09\x07", r"piece message with length 9"),
        (b"\x00\x10\x00\x03\x14", r"extended message with length 1048579 \(allowed 2..1048578\)"),
        (b"\x00\x00\x00\x01\x14", r"extended message with length 1"),
        (b"\x00\x00\x00\x04\x05", r"bitfield message with length 4 \(must be 3\)"),
        (b"\x00\x00\x00\x02\x05", r"bitfield message with length 2 \(must be 3\)"),
        (b"\x00\x00\x00\x02\x00", r"choke message with length 2 \(must be 1\)"),
        (b"\x00\x00\x00\x06\x04", r"have message with length 6 \(must be 5\)"),
        (b"\x00\x00\x00\x0c\x06", r"request message with length 12 \(must be 13\)"),
        (b"\x00\x00\x00\x0e\x08", r"cancel message with length 14"),
        (b"\x00\x00\x00\x04\x09", r"port message with length 4 \(must be 3\)"),
        (b"\x00\x00\x00\x02\x0e", r"have all message with length 2"),
        (b"\x00\x00\x00\x0e\x10", r"reject request message with length 14"),
        (b"\x00\x00\x00\x06\x11", r"allowed fast message with length 6"),
        (b"\x7f\xff\xff\xff\x42", r"unknown \(id 66\) message with length 2147483647"),
    ],
)
def test_length_prefix_limits(header: bytes, match: str) -> None:
    raises(ready(), header, match)
    raises(ready(), header, match)  # whole header at once and ...
    proto = ready()
    for byte in header[:-1]:
        proto.receive_data(bytes([byte]))
        assert proto.next_event() is NEED_DATA
    raises(proto, header[-1:], match)  # ... a byte at a time


def test_extended_message_of_exactly_one_mib_is_accepted() -> None:
    proto = ready(extensions={"ut_metadata": 1})
    payload = b"x" * (1 << 20)
    events = feed(proto, (2 + len(payload)).to_bytes(4, "big") + b"\x14\x01" + payload, chunk=65536)
    assert len(events) == 1
    assert len(events[0].payload) == 1 << 20  # type: ignore[union-attr]


# -- contents ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (req(6, 10, 0, 16384), r"request: piece index 10 out of range \(torrent has 10 pieces\)"),
        (req(6, 0, 0, 16385), r"request: block length 16385 \(must be 1..16384\)"),
        (req(6, 0, 0, 0), r"request: block length 0"),
        (req(6, 0, 16385, 16384), r"request: block 16385\+16384 runs past the end of piece 0"),
        (req(6, 9, 0, 10001), r"request: block 0\+10001 runs past the end of piece 9 \(10000 bytes\)"),
        (req(8, 11, 0, 1), r"cancel: piece index 11 out of range"),
        (b"\x00\x00\x00\x05\x04\x00\x00\x00\x0a", r"have for piece 10 out of range"),
        (b"\x00\x00\x00\x05\x0d\xff\xff\xff\xff", r"suggest piece for piece 4294967295 out of range"),
        (b"\x00\x00\x00\x05\x11\x00\x00\x00\x0a", r"allowed fast for piece 10 out of range"),
        (b"\x00\x00\x00\x0d\x07\x00\x00\x00\x0a\x00\x00\x00\x00abcd", r"piece message: piece index 10"),
        (b"\x00\x00\x00\x0d\x07\x00\x00\x00\x09\x00\x00\x27\x0dabcd", r"runs past the end of piece 9"),
        (req(0x10, 1, 0, 16384), r"reject for a request we never sent"),
        (b"\x00\x00\x00\x03\x14\x00x", r"extension handshake is not bencoded"),
        (b"\x00\x00\x00\x05\x14\x00i1e", r"extension handshake is not a dictionary"),
        (b"\x00\x00\x00\x0a\x14\x00d1:mi1ee", r"'m' is not a dictionary"),
    ],
)
def test_content_limits(data: bytes, match: str) -> None:
    raises(ready(), data, match)


def test_the_last_block_of_the_torrent_may_be_short_and_exact() -> None:
    proto = ready()
    events = feed(proto, req(6, 9, 0, 10000))
    assert events == [Request(9, 0, 10000)]


def test_bitfield_spare_bits_set() -> None:
    # Ten pieces: the last 6 bits of the second byte are spare.
    raises(connected(), b"\x00\x00\x00\x03\x05\xff\xc1", "spare bits set")
    assert feed(connected(), b"\x00\x00\x00\x03\x05\xff\xc0") != []


# -- ordering -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "then", "full"),
    [
        (b"\x00\x00\x00\x05\x04\x00\x00\x00\x01", b"\x00\x00\x00\x03\x05\xff\xc0", True),
        (b"\x00\x00\x00\x01\x02", b"\x00\x00\x00\x01\x0e", True),
        (b"\x00\x00\x00\x03\x05\xff\xc0", b"\x00\x00\x00\x01\x0f", False),
        (b"\x00\x00\x00\x01\x0e", b"\x00\x00\x00\x03\x05\x00\x00", False),
        (b"\x00\x00\x00\x01\x0f", b"\x00\x00\x00\x03\x05\xff\xc0", True),
    ],
)
def test_a_late_piece_set_replaces_the_peers_pieces(first: bytes, then: bytes, full: bool) -> None:
    # BEP 3 wants the bitfield first, but aria2 1.36 sends another bitfield (or have all)
    # later; libtorrent takes it as the new piece set, and so do we.
    proto = connected()
    feed(proto, first)
    assert len(feed(proto, then)) == 1
    assert proto.peer_pieces.is_full() is full
    assert proto.late_piece_sets == 1


def test_extension_handshake_keepalive_and_port_may_precede_the_bitfield() -> None:
    # libtorrent and Transmission send their BEP 10 handshake before the bitfield.
    proto = connected()
    events = feed(
        proto,
        b"\x00\x00\x00\x04\x14\x00de"
        + b"\x00\x00\x00\x00"
        + b"\x00\x00\x00\x03\x09\x1a\xe1"
        + b"\x00\x00\x00\x03\x05\xff\xc0",
    )
    assert len(events) == 4
    assert proto.peer_pieces.is_full()


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x00\x01\x0e",
        b"\x00\x00\x00\x01\x0f",
        b"\x00\x00\x00\x05\x0d\x00\x00\x00\x01",
        req(0x10, 1, 0, 16384),
        b"\x00\x00\x00\x05\x11\x00\x00\x00\x01",
    ],
    ids=["have all", "have none", "suggest piece", "reject request", "allowed fast"],
)
def test_fast_messages_need_the_fast_extension(data: bytes) -> None:
    # The peer did not set the BEP 6 bit.
    raises(connected(peer_reserved=NO_EXTENSIONS), data, r"fast extension \(BEP 6\) was not negotiated")
    # Nor is it enough that only the peer set it.
    raises(connected({"fast_extension": False}, peer_reserved=ONLY_FAST), data, "not negotiated")


def test_extended_messages_need_bep10() -> None:
    raises(connected(peer_reserved=ONLY_FAST), b"\x00\x00\x00\x04\x14\x00de", "BEP 10 was not negotiated")


# -- handshake ------------------------------------------------------------------------------------


def test_handshake_for_another_torrent() -> None:
    proto = make()
    raises(
        proto, b"\x13BitTorrent protocol" + bytes(8) + b"\xee" * 20 + PEER_B, "handshake for another torrent"
    )


@pytest.mark.parametrize(
    "data", [b"\x16\x03\x01\x02\x00", b"\x13BitTorrent protocoX", b"GET /announce HTTP/1.1\r\n"]
)
def test_not_a_bittorrent_handshake_fails_early(data: bytes) -> None:
    # Refused as soon as the bytes cannot be the protocol string: no waiting for 68 bytes.
    raises(make(), data, "not a BitTorrent handshake")


def test_eof_in_the_middle() -> None:
    proto = make()
    proto.receive_data(b"\x13BitTorrent protocol")
    proto.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed during the handshake"):
        proto.next_event()
    proto = ready()
    proto.receive_data(b"\x00\x00\x00\x05\x04\x00")
    proto.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match=r"closed in the middle of a message \(6 bytes buffered\)"):
        proto.next_event()


def test_eof_before_any_byte_is_a_clean_close() -> None:
    proto = make()
    proto.send(Handshake())
    proto.receive_data(b"")
    assert proto.next_event() == ConnectionClosed()
    assert proto.their_phase is Phase.CLOSED
    assert proto.next_event() == ConnectionClosed()


def test_data_after_eof_is_our_bug() -> None:
    proto = ready()
    proto.receive_data(b"")
    with pytest.raises(LocalProtocolError, match="after the end of the stream"):
        proto.receive_data(b"\x00")


# -- not errors -----------------------------------------------------------------------------------


def test_unrequested_block_is_reported_not_fatal() -> None:
    proto = ready()
    events = feed(proto, encode(Block(2, 0, b"z" * 100)))
    assert events == [UnrequestedBlock(2, 0, b"z" * 100)]
    assert proto.unrequested_bytes == 100
    assert proto.statistics(0.0).downloaded == 0
    # A block must still be inside the torrent even when unrequested.
    raises(proto, encode(Block(9, 9999, b"zz")), "runs past the end of piece 9")


def test_second_handshake_is_a_violation() -> None:
    proto = connected()
    raises(proto, b"\x00\x00\x00\x01\x02" + b"\x13BitTorrent protocol" + bytes(48), "message with length")
    # (a second handshake parses as a frame: its first bytes are a huge length prefix)
    proto = make()
    proto.send(Handshake())
    with pytest.raises(LocalProtocolError, match="a second handshake"):
        proto.send(Handshake())


def test_info_hash_must_be_20_bytes() -> None:
    with pytest.raises(ValueError, match="info_hash and our_peer_id must be 20 bytes"):
        PeerProtocol(info_hash=INFO_HASH[:19], our_peer_id=PEER_B, piece_length=1, total_length=1)
