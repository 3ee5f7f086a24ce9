"""Every peer-wire message against hand-written bytes from BEP 3, 5, 6 and 10, both ways."""

from __future__ import annotations

import pytest

from tests.wire_helpers import INFO_HASH, NUM_PIECES, PEER_A, PEER_B, connected, drain, feed, make
from torrent.errors import RemoteProtocolError
from torrent.proto.pieceset import PieceSet
from torrent.proto.wire import (
    HANDSHAKE_LENGTH,
    NEED_DATA,
    AllowedFast,
    Bitfield,
    Block,
    Cancel,
    Choke,
    ConnectionClosed,
    Event,
    ExtendedMessage,
    ExtensionHandshake,
    Handshake,
    Have,
    HaveAll,
    HaveNone,
    InPlaceFrameBuffer,
    Interested,
    KeepAlive,
    NotInterested,
    PeerProtocol,
    Port,
    RejectRequest,
    Request,
    SuggestPiece,
    Unchoke,
    encode,
    encode_handshake,
    parse_handshake,
    peek_info_hash,
)

# BEP 3: <pstrlen=19><pstr><reserved 8><info_hash 20><peer_id 20>. Reserved bits: BEP 10 sets
# reserved[5] 0x10, BEP 6 sets reserved[7] 0x04, BEP 5 sets reserved[7] 0x01.
HANDSHAKE_BYTES = b"\x13BitTorrent protocol" + b"\x00\x00\x00\x00\x00\x10\x00\x05" + INFO_HASH + PEER_B


def ready(**kwargs: object) -> PeerProtocol:
    """Both handshakes done, piece sets exchanged (we and the peer are seeds), both unchoked."""
    proto = connected(dict(kwargs))
    proto.send(HaveAll())
    proto.send(Unchoke())
    events = feed(proto, b"\x00\x00\x00\x01\x0e" + b"\x00\x00\x00\x01\x01")
    assert events == [HaveAll(), Unchoke()]
    return proto


# -- handshake ----------------------------------------------------------------------------------


def test_handshake_bytes_are_bep3_with_our_reserved_bits() -> None:
    proto = make(dht=True)
    assert proto.send(Handshake()) == HANDSHAKE_BYTES[:28] + INFO_HASH + PEER_A
    assert len(HANDSHAKE_BYTES) == HANDSHAKE_LENGTH == 68


def test_handshake_reserved_bits_follow_the_options() -> None:
    plain = make(extension_protocol=False, fast_extension=False).send(Handshake())
    assert plain[20:28] == bytes(8)
    assert make().send(Handshake())[20:28] == b"\x00\x00\x00\x00\x00\x10\x00\x04"  # DHT only when asked


def test_parse_handshake_reads_every_field_and_bit() -> None:
    hs = parse_handshake(HANDSHAKE_BYTES)
    assert hs.info_hash == INFO_HASH
    assert hs.peer_id == PEER_B
    assert hs.extension_protocol
    assert hs.fast_extension
    assert hs.dht
    none = parse_handshake(HANDSHAKE_BYTES[:20] + bytes(8) + HANDSHAKE_BYTES[28:])
    assert not (none.extension_protocol)
    assert not (none.fast_extension)
    assert not (none.dht)


def test_received_handshake_negotiates_extensions() -> None:
    proto = connected()
    assert proto.peer_id == PEER_B
    assert proto.fast_extension
    assert proto.extension_protocol
    assert proto.peer_dht
    only_fast = connected(peer_reserved=b"\x00" * 7 + b"\x04")
    assert only_fast.fast_extension
    assert not only_fast.extension_protocol
    assert not only_fast.peer_dht
    # Each extension needs both bits: we advertise no fast extension, so it is off.
    ours_off = connected({"fast_extension": False})
    assert not ours_off.fast_extension
    assert ours_off.extension_protocol


def test_encode_handshake_matches_the_protocol_object() -> None:
    assert encode_handshake(INFO_HASH, PEER_A, b"\x00\x00\x00\x00\x00\x10\x00\x05") == make(dht=True).send(
        Handshake()
    )


def test_peek_info_hash_for_a_listener() -> None:
    # A listener sees the initiator's handshake first and routes it by info hash.
    for n in range(48):
        assert peek_info_hash(HANDSHAKE_BYTES[:n]) is None
    assert peek_info_hash(HANDSHAKE_BYTES[:48]) == INFO_HASH
    assert peek_info_hash(HANDSHAKE_BYTES + b"\x00\x00\x00\x01\x02") == INFO_HASH
    from torrent.errors import RemoteProtocolError

    with pytest.raises(RemoteProtocolError, match="not a BitTorrent handshake"):
        peek_info_hash(b"GET / HTTP/1.1\r\n")
    with pytest.raises(RemoteProtocolError):
        peek_info_hash(b"\x13BitTorrent protocoX")


def test_listener_flow_peek_then_feed_everything() -> None:
    initiator = make(PEER_B)
    first_bytes = initiator.send(Handshake())
    assert peek_info_hash(first_bytes[:30]) is None
    ih = peek_info_hash(first_bytes)
    assert ih == INFO_HASH
    listener = make(PEER_A)  # the session looked the torrent up by ih
    events = feed(listener, first_bytes)
    assert [type(e) for e in events] == [Handshake]
    reply = listener.send(Handshake())
    assert [type(e) for e in feed(initiator, reply)] == [Handshake]


# -- one table for every message after the handshake ---------------------------------------------


def piece_set(indexes: list[int]) -> PieceSet:
    return PieceSet.from_indexes(indexes, NUM_PIECES)


# (name, hand-written bytes, event). Ten pieces: a bitfield is 2 bytes, pieces 0, 2 and 9 set
# are 0b1010_0000 0b0100_0000.
MESSAGES: list[tuple[str, bytes, Event]] = [
    ("keep-alive", b"\x00\x00\x00\x00", KeepAlive()),
    ("choke", b"\x00\x00\x00\x01\x00", Choke()),
    ("unchoke", b"\x00\x00\x00\x01\x01", Unchoke()),
    ("interested", b"\x00\x00\x00\x01\x02", Interested()),
    ("not interested", b"\x00\x00\x00\x01\x03", NotInterested()),
    ("have", b"\x00\x00\x00\x05\x04\x00\x00\x00\x07", Have(7)),
    ("bitfield", b"\x00\x00\x00\x03\x05\xa0\x40", Bitfield(piece_set([0, 2, 9]))),
    (
        "request",
        b"\x00\x00\x00\x0d\x06\x00\x00\x00\x01\x00\x00\x40\x00\x00\x00\x40\x00",
        Request(1, 16384, 16384),
    ),
    ("piece", b"\x00\x00\x00\x0d\x07\x00\x00\x00\x09\x00\x00\x00\x00abcd", Block(9, 0, b"abcd")),
    (
        "cancel",
        b"\x00\x00\x00\x0d\x08\x00\x00\x00\x01\x00\x00\x40\x00\x00\x00\x40\x00",
        Cancel(1, 16384, 16384),
    ),
    ("port", b"\x00\x00\x00\x03\x09\x1a\xe1", Port(6881)),
    ("suggest piece", b"\x00\x00\x00\x05\x0d\x00\x00\x00\x03", SuggestPiece(3)),
    ("have all", b"\x00\x00\x00\x01\x0e", HaveAll()),
    ("have none", b"\x00\x00\x00\x01\x0f", HaveNone()),
    (
        "reject request",
        b"\x00\x00\x00\x0d\x10\x00\x00\x00\x09\x00\x00\x00\x00\x00\x00\x00\x04",
        RejectRequest(9, 0, 4),
    ),
    ("allowed fast", b"\x00\x00\x00\x05\x11\x00\x00\x00\x05", AllowedFast(5)),
    (
        "extension handshake",
        b"\x00\x00\x00\x2c\x14\x00d1:md11:ut_metadatai3ee1:pi6881e1:v4:teste",
        ExtensionHandshake({b"m": {b"ut_metadata": 3}, b"v": b"test", b"p": 6881}),
    ),
]


def receiver_for(name: str) -> PeerProtocol:
    """A protocol in a state where the named message is legal and yields its event."""
    if name in ("bitfield", "have all", "have none"):
        return connected()  # must be the peer's first message
    proto = ready(extensions={"ut_metadata": 2})
    if name == "cancel":
        feed(proto, MESSAGES[7][1])  # the peer's request, which it then cancels
    if name in ("piece", "reject request"):
        proto.send(Request(9, 0, 4))
    return proto


@pytest.mark.parametrize(("name", "data", "event"), MESSAGES, ids=[m[0] for m in MESSAGES])
def test_decode_each_message(name: str, data: bytes, event: Event) -> None:
    proto = receiver_for(name)
    assert feed(proto, data) == [event]


@pytest.mark.parametrize(("name", "data", "event"), MESSAGES, ids=[m[0] for m in MESSAGES])
def test_decode_each_message_one_byte_at_a_time(name: str, data: bytes, event: Event) -> None:
    proto = receiver_for(name)
    assert feed(proto, data, chunk=1) == [event]


@pytest.mark.parametrize(("name", "data", "event"), MESSAGES, ids=[m[0] for m in MESSAGES])
def test_encode_each_message(name: str, data: bytes, event: Event) -> None:
    assert encode(event) == data


def sender_for(name: str) -> PeerProtocol:
    """A protocol in a state where sending the named message is legal."""
    if name in ("bitfield", "have all", "have none"):
        return connected()
    proto = ready(extensions={"ut_metadata": 3})
    if name in ("piece", "cancel", "reject request"):
        # The peer asks for what we then serve, reject, or (as the requester) cancel.
        feed(proto, b"\x00\x00\x00\x0d\x06\x00\x00\x00\x09\x00\x00\x00\x00\x00\x00\x00\x04")
        feed(proto, MESSAGES[7][1])
        proto.send(Request(1, 16384, 16384))
    return proto


@pytest.mark.parametrize(("name", "data", "event"), MESSAGES, ids=[m[0] for m in MESSAGES])
def test_send_each_message(name: str, data: bytes, event: Event) -> None:
    proto = sender_for(name)
    if isinstance(event, ExtensionHandshake):
        event = ExtensionHandshake({b"v": b"test", b"p": 6881})  # m comes from extensions=
    assert proto.send(event) == data


def test_piece_event_data_is_a_readonly_memoryview() -> None:
    proto = receiver_for("piece")
    (block,) = feed(proto, MESSAGES[8][1])
    assert isinstance(block, Block)
    assert isinstance(block.data, memoryview)
    assert block.data.readonly
    assert bytes(block.data) == b"abcd"
    assert block.length == 4
    assert block.request() == Request(9, 0, 4)


def test_extended_messages_route_by_name_both_ways() -> None:
    proto = ready(extensions={"ut_metadata": 2, "ut_pex": 1})
    (hs,) = feed(proto, MESSAGES[-1][1])
    assert isinstance(hs, ExtensionHandshake)
    assert hs.extensions == {"ut_metadata": 3}
    assert hs.client == "test"
    assert hs.listen_port == 6881
    assert proto.peer_extensions == {"ut_metadata": 3}
    # Sending uses the peer's id (3); receiving maps our id (2) back to the name.
    assert proto.send(ExtendedMessage("ut_metadata", b"d8:msg_typei0e5:piecei0ee")) == (
        b"\x00\x00\x00\x1b\x14\x03d8:msg_typei0e5:piecei0ee"
    )
    got = feed(proto, b"\x00\x00\x00\x07\x14\x02hello")
    assert got == [ExtendedMessage("ut_metadata", b"hello")]
    # An id we never assigned is ignored, not fatal.
    assert feed(proto, b"\x00\x00\x00\x03\x14\x09x") == []
    assert proto.ignored_messages == 1
    # A later handshake may disable an extension with id 0 (BEP 10).
    feed(proto, b"\x00\x00\x00\x1a\x14\x00d1:md11:ut_metadatai0eee")
    assert proto.peer_extensions == {}


def test_our_extension_handshake_carries_m_from_the_registered_extensions() -> None:
    proto = ready(extensions={"ut_metadata": 2, "ut_pex": 1})
    out = proto.send(ExtensionHandshake({"v": "pytorrent"}))
    assert out == b"\x00\x00\x00\x33\x14\x00d1:md11:ut_metadatai2e6:ut_pexi1ee1:v9:pytorrente"


def test_unknown_message_ids_are_ignored_not_fatal() -> None:
    proto = ready()
    events = feed(proto, b"\x00\x00\x00\x03\x42ab" + b"\x00\x00\x00\x01\x02" + b"\x00\x00\x00\x01\xff")
    assert events == [Interested()]
    assert proto.ignored_messages == 2


def test_eof_gives_connection_closed_repeatedly() -> None:
    proto = ready()
    proto.receive_data(b"\x00\x00\x00\x01\x02")
    proto.receive_data(b"")
    assert proto.next_event() == Interested()
    assert proto.next_event() == ConnectionClosed()
    assert proto.next_event() == ConnectionClosed()
    assert proto.next_event() is not NEED_DATA


def test_need_data_until_a_whole_message() -> None:
    proto = ready()
    proto.receive_data(b"\x00\x00")
    assert proto.next_event() is NEED_DATA
    proto.receive_data(b"\x00\x05\x04\x00")
    assert proto.next_event() is NEED_DATA
    proto.receive_data(b"\x00\x00\x07\x00")
    assert proto.next_event() == Have(7)
    assert proto.next_event() is NEED_DATA


def test_stream_of_mixed_messages_in_every_chunk_size() -> None:
    stream = b"".join(
        [
            HANDSHAKE_BYTES,
            b"\x00\x00\x00\x2c\x14\x00d1:md11:ut_metadatai3ee1:pi6881e1:v4:teste",
            b"\x00\x00\x00\x03\x05\xa0\x40",
            b"\x00\x00\x00\x00",
            b"\x00\x00\x00\x01\x01",
            b"\x00\x00\x00\x05\x04\x00\x00\x00\x07",
            b"\x00\x00\x00\x03\x09\x1a\xe1",
        ]
    )
    expected = [Handshake, ExtensionHandshake, Bitfield, KeepAlive, Unchoke, Have, Port]
    for chunk in (1, 2, 3, 5, 7, 13, 64, len(stream)):
        proto = make()
        proto.send(Handshake())
        events = feed(proto, stream, chunk=chunk)
        assert [type(e) for e in events] == expected, chunk
        assert proto.peer_pieces == piece_set([0, 2, 7, 9])


def test_blocks_split_across_reads_arrive_whole() -> None:
    proto = ready()
    blocks = [(i, b) for i in range(9) for b in (0, 16384)]
    for index, begin in blocks:
        proto.send(Request(index, begin, 16384))
    stream = b"".join(encode(Block(i, b, bytes([i]) * 16384)) for i, b in blocks)
    for chunk in (1000, 16393, 65536, 100_000):
        proto2 = ready()
        for index, begin in blocks:
            proto2.send(Request(index, begin, 16384))
        events = feed(proto2, stream, chunk=chunk)
        assert [(e.index, e.begin, bytes(e.data)) for e in events if isinstance(e, Block)] == [
            (i, b, bytes([i]) * 16384) for i, b in blocks
        ]


@pytest.mark.parametrize("chunk", [1, 7, 100, 5000, 16393, 70000])
def test_block_views_are_readonly_and_stay_valid_as_more_data_arrives(chunk: int) -> None:
    proto = ready()
    blocks = [(i, b) for i in range(4) for b in (0, 16384)]
    for index, begin in blocks:
        proto.send(Request(index, begin, 16384))
    stream = b"".join(encode(Block(i, b, bytes([i * 2 + b // 16384]) * 16384)) for i, b in blocks)
    events = feed(proto, stream, chunk=chunk)
    # Every view is still intact after all later reads went through the same buffers.
    assert [bytes(e.data) for e in events] == [  # type: ignore[union-attr]
        bytes([i * 2 + b // 16384]) * 16384 for i, b in blocks
    ]
    for event in events:
        assert isinstance(event, Block)
        assert isinstance(event.data, memoryview)
        assert event.data.readonly


# -- reading straight into the protocol's buffer ---------------------------------------------------


def read_into(proto: PeerProtocol, data: bytes) -> int:
    """One read of up to the offered room from ``data``; returns how many bytes it took."""
    view = proto.get_buffer()
    n = min(len(view), len(data))
    view[:n] = data[:n]
    proto.buffer_updated(n)
    return n


def test_in_place_reads_frame_messages_and_blocks_are_views_of_the_buffer() -> None:
    proto = ready()
    proto.send(Request(1, 0, 16384))
    proto.send(Request(1, 16384, 16384))
    stream = encode(Block(1, 0, b"a" * 16384)) + encode(Have(3)) + encode(Block(1, 16384, b"b" * 16384))
    taken = read_into(proto, stream[:20000])  # the first block, the have, part of the second block
    first, have = drain(proto)
    assert have == Have(3)
    assert isinstance(first, Block)
    assert isinstance(first.data, memoryview)
    assert first.data.readonly
    assert bytes(first.data) == b"a" * 16384
    read_into(proto, stream[taken:])
    (second,) = drain(proto)
    assert second == Block(1, 16384, b"b" * 16384)
    assert proto.outstanding_requests == {}


def test_in_place_takes_over_what_receive_data_buffered() -> None:
    proto = ready()
    proto.send(Request(2, 0, 16384))
    message = encode(Block(2, 0, b"c" * 16384))
    proto.receive_data(message[:100])
    assert drain(proto) == []
    read_into(proto, message[100:])
    assert drain(proto) == [Block(2, 0, b"c" * 16384)]
    proto.receive_data(encode(Have(4)))  # bytes from elsewhere still work after the switch
    assert drain(proto) == [Have(4)]


def test_in_place_buffer_grows_while_reads_fill_it_and_shrinks_when_they_do_not() -> None:
    proto = ready()
    haves = b"".join(encode(Have(i % NUM_PIECES)) for i in range(300_000))  # 2.7 MB of messages
    offered = []
    pos = 0
    while pos < len(haves):
        view = proto.get_buffer()
        offered.append(len(view))
        n = min(len(view), len(haves) - pos)
        view[:n] = haves[pos : pos + n]
        proto.buffer_updated(n)
        pos += n
        while proto.next_event() is not NEED_DATA:
            pass
    assert offered[0] < 128 * 1024
    assert max(offered) > 512 * 1024  # grew while every read filled the room
    assert max(offered) <= InPlaceFrameBuffer.MAX_CAPACITY
    for _ in range(InPlaceFrameBuffer.SHRINK_AFTER_READS):  # a slow peer's small reads: memory is given back
        read_into(proto, encode(Have(1)))
        drain(proto)
    assert len(proto.get_buffer()) <= InPlaceFrameBuffer.MIN_CAPACITY


def test_in_place_buffer_keeps_its_size_through_a_few_small_reads() -> None:
    """A fast connection's reads come small now and then (the reader caught up): the buffer
    stays as it is until small reads are all there is for a while."""
    proto = ready()
    haves = b"".join(encode(Have(i % NUM_PIECES)) for i in range(300_000))
    pos = 0
    while pos < len(haves):  # every read fills the room: the buffer grows to its largest
        pos += read_into(proto, haves[pos:])
        while proto.next_event() is not NEED_DATA:
            pass
    big = len(proto.get_buffer())
    assert big > InPlaceFrameBuffer.MAX_CAPACITY // 2
    for _ in range(InPlaceFrameBuffer.SHRINK_AFTER_READS - 1):
        read_into(proto, encode(Have(1)))  # ends at a message boundary, the buffer empty
        drain(proto)
        assert len(proto.get_buffer()) == big  # the same memory, not a new buffer
    read_into(proto, encode(Have(1)))
    drain(proto)
    assert len(proto.get_buffer()) <= InPlaceFrameBuffer.MIN_CAPACITY


def test_in_place_buffer_grows_to_fit_a_long_message() -> None:
    proto = ready(extensions={"ut_metadata": 2})
    payload = bytes(range(256)) * 1200  # 300 KiB, more than the buffer holds at first
    message = encode(ExtendedMessage("ut_metadata", payload), extended_id=2)
    pos = 0
    events: list[Event] = []
    while pos < len(message):
        pos += read_into(proto, message[pos : pos + 10_000])  # slow reads: no growth for speed
        events += drain(proto)
    assert events == [ExtendedMessage("ut_metadata", payload)]


def test_in_place_misuse_and_limits() -> None:
    proto = ready()
    with pytest.raises(ValueError, match="without get_buffer"):
        proto.buffer_updated(1)
    view = proto.get_buffer()
    with pytest.raises(ValueError, match="do not fit"):
        proto.buffer_updated(len(view) + 1)
    oversized = b"\x00\x10\x00\x00\x07"  # a piece message of 1 MiB: refused before buffering
    read_into(proto, oversized)
    with pytest.raises(RemoteProtocolError, match="piece message with length"):
        drain(proto)
