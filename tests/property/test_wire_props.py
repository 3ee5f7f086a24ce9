"""Hypothesis over the peer-wire codec: arbitrary bytes, valid streams, re-encoding, PieceSet."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import event as target_event
from hypothesis import strategies as st

from tests.wire_helpers import NUM_PIECES, PIECE_LENGTH, TOTAL_LENGTH, connected, make
from torrent.errors import LocalProtocolError, RemoteProtocolError
from torrent.proto.pieceset import PieceSet
from torrent.proto.wire import (
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
    Interested,
    KeepAlive,
    NotInterested,
    PeerProtocol,
    Port,
    RejectRequest,
    Request,
    SuggestPiece,
    Unchoke,
    UnrequestedBlock,
    encode,
)

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def drain_all(proto: PeerProtocol, data: bytes, cuts: list[int]) -> list[Event]:
    """Feed ``data`` split at ``cuts`` then EOF; collect events until NEED_DATA or close."""
    events: list[Event] = []
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    for start, end in itertools.pairwise(bounds):
        proto.receive_data(data[start:end])
        while (event := proto.next_event()) is not NEED_DATA:
            events.append(event)  # type: ignore[arg-type]
    proto.receive_data(b"")
    events.append(proto.next_event())  # type: ignore[arg-type]
    return events


@SETTINGS
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=8))
def test_arbitrary_bytes_after_the_handshake_raise_only_remote_errors(data: bytes, cuts: list[int]) -> None:
    proto = connected()
    try:
        events = drain_all(proto, data, cuts)
    except RemoteProtocolError:
        return
    assert events[-1] == ConnectionClosed()


@SETTINGS
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_as_a_handshake_raise_only_remote_errors(data: bytes) -> None:
    proto = make()
    try:
        drain_all(proto, data, [])
    except RemoteProtocolError:
        pass


# A valid message stream: strategies for each message after the handshake, in a legal state.
indexes = st.integers(min_value=0, max_value=NUM_PIECES - 1)
simple = st.one_of(
    st.just(KeepAlive()),
    st.just(Choke()),
    st.just(Unchoke()),
    st.just(Interested()),
    st.just(NotInterested()),
    indexes.map(Have),
    indexes.map(SuggestPiece),
    indexes.map(AllowedFast),
    st.integers(min_value=1, max_value=65535).map(Port),
    st.dictionaries(
        st.sampled_from([b"v", b"p", b"reqq", b"x"]), st.integers(0, 10**6) | st.binary(max_size=8)
    ).map(lambda fields: ExtensionHandshake(dict(fields.items()))),
)


@st.composite
def blocks(draw: st.DrawFn) -> Event:
    index = draw(indexes)
    size = TOTAL_LENGTH - (NUM_PIECES - 1) * PIECE_LENGTH if index == NUM_PIECES - 1 else PIECE_LENGTH
    begin = draw(st.integers(min_value=0, max_value=size - 1))
    length = draw(st.integers(min_value=1, max_value=min(16384, size - begin)))
    kind = draw(st.sampled_from([Request, Cancel, UnrequestedBlock]))
    if kind is UnrequestedBlock:
        return UnrequestedBlock(index, begin, bytes([index]) * length)
    return kind(index, begin, length)  # type: ignore[no-any-return]


first_messages = st.one_of(
    st.just(HaveAll()),
    st.just(HaveNone()),
    st.sets(indexes).map(lambda s: Bitfield(PieceSet.from_indexes(s, NUM_PIECES))),
)


def wire_bytes(event: Event) -> bytes:
    if isinstance(event, UnrequestedBlock):
        return encode(Block(event.index, event.begin, event.data))
    return encode(event)


@SETTINGS
@given(
    first=first_messages,
    rest=st.lists(st.one_of(simple, blocks()), max_size=25),
    cuts=st.lists(st.integers(min_value=0, max_value=10**6), max_size=10),
)
def test_valid_streams_decode_and_reencode_to_the_same_bytes(
    first: Event, rest: list[Event], cuts: list[int]
) -> None:
    # We are a seed that unchoked the peer, so its requests are accepted; we requested nothing, so
    # its blocks are unrequested. Every message is legal here and each must come back unchanged.
    proto = connected()
    proto.send(HaveAll())
    proto.send(Unchoke())
    messages = [first, *rest]
    stream = b"".join(wire_bytes(m) for m in messages)
    events = drain_all(proto, stream, cuts)
    assert events[-1] == ConnectionClosed()
    events = events[:-1]
    # Cancels for requests not pending and duplicate requests produce no event; check the rest.
    pending: set[tuple[int, int, int]] = set()
    expected: list[Event] = []
    for m in messages:
        if isinstance(m, Request):
            key = (m.index, m.begin, m.length)
            if key in pending:
                continue
            pending.add(key)
        elif isinstance(m, Cancel):
            key = (m.index, m.begin, m.length)
            if key not in pending:
                continue
            pending.discard(key)
        expected.append(m)
    assert events == expected
    reencoded = b"".join(wire_bytes(e) for e in events)
    assert reencoded == b"".join(wire_bytes(m) for m in expected)
    assert proto.data_to_send() == b"".join(
        encode(RejectRequest(e.index, e.begin, e.length)) for e in events if isinstance(e, Cancel)
    )


def drain_in_place(proto: PeerProtocol, data: bytes, fed_first: int, sizes: list[int]) -> list[Event]:
    """Like :func:`drain_all`, but the stream is read into ``get_buffer`` (after the first
    ``fed_first`` bytes through ``receive_data``), each read as long as the next of ``sizes``
    or as the view offered, whichever is shorter. Block data is copied before the next read:
    the in-place views live only until then."""
    events: list[Event] = []

    def take() -> None:
        while (event := proto.next_event()) is not NEED_DATA:
            if isinstance(event, (Block, UnrequestedBlock)):
                event = type(event)(event.index, event.begin, bytes(event.data))
            events.append(event)  # type: ignore[arg-type]

    if fed_first:  # (receive_data(b"") would be the end of the stream)
        proto.receive_data(data[:fed_first])
        take()
    pos = fed_first
    for i in itertools.count():
        if pos >= len(data):
            break
        view = proto.get_buffer()
        n = max(1, min(len(view), len(data) - pos, sizes[i % len(sizes)] if sizes else len(view)))
        view[:n] = data[pos : pos + n]
        proto.buffer_updated(n)
        pos += n
        take()
    proto.receive_data(b"")
    events.append(proto.next_event())  # type: ignore[arg-type]
    return events


@SETTINGS
@given(
    first=first_messages,
    rest=st.lists(st.one_of(simple, blocks()), max_size=25),
    fed_first=st.integers(min_value=0, max_value=10**5),
    sizes=st.lists(st.integers(min_value=1, max_value=200_000), max_size=6),
)
def test_reading_into_the_protocol_buffer_gives_the_events_of_receive_data(
    first: Event, rest: list[Event], fed_first: int, sizes: list[int]
) -> None:
    stream = b"".join(wire_bytes(m) for m in [first, *rest])
    protos = []
    for _ in range(2):
        proto = connected()
        proto.send(HaveAll())
        proto.send(Unchoke())
        protos.append(proto)
    expected = drain_all(protos[0], stream, [])
    assert drain_in_place(protos[1], stream, fed_first % (len(stream) + 1), sizes) == expected
    assert protos[1].data_to_send() == protos[0].data_to_send()


@SETTINGS
@given(hs_reserved=st.binary(min_size=8, max_size=8), peer_id=st.binary(min_size=20, max_size=20))
def test_handshake_round_trip(hs_reserved: bytes, peer_id: bytes) -> None:
    sender = make(peer_id)
    data = sender.send(Handshake(reserved=hs_reserved))
    receiver = make()
    receiver.receive_data(data)
    event = receiver.next_event()
    assert event == Handshake(info_hash=sender.info_hash, peer_id=peer_id, reserved=hs_reserved)


@SETTINGS
@given(size=st.integers(min_value=0, max_value=200), data=st.data())
def test_pieceset_matches_a_python_set(size: int, data: st.DataObject) -> None:
    members = data.draw(
        st.sets(st.integers(min_value=0, max_value=max(0, size - 1))) if size else st.just(set())
    )
    pieces = PieceSet.from_indexes(members, size)
    assert list(pieces) == sorted(members)
    assert len(pieces) == len(members)
    assert list(pieces.missing()) == sorted(set(range(size)) - members)
    again = PieceSet.from_bytes(pieces.to_bytes(), size)
    assert again == pieces
    other = data.draw(
        st.sets(st.integers(min_value=0, max_value=max(0, size - 1))) if size else st.just(set())
    )
    o = PieceSet.from_indexes(other, size)
    assert set(pieces & o) == members & other
    assert set(pieces | o) == members | other
    assert set(pieces - o) == members - other


@SETTINGS
@given(
    first=first_messages,
    rest=st.lists(st.one_of(simple, blocks()), max_size=15),
    edits=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=255), st.booleans()
        ),
        min_size=1,
        max_size=4,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=10**6), max_size=6),
)
def test_corrupted_valid_streams_raise_only_remote_errors(
    first: Event, rest: list[Event], edits: list[tuple[int, int, bool]], cuts: list[int]
) -> None:
    # Valid streams reach the deeper states (requests pending, blocks, extension handshakes);
    # a few overwritten or inserted bytes then probe every check from there.
    stream = bytearray(b"".join(wire_bytes(m) for m in [first, *rest]))
    for position, value, insert in edits:
        at = position % (len(stream) + 1)
        if insert or at == len(stream):
            stream[at:at] = bytes([value])
        else:
            stream[at] = value
    proto = connected()
    proto.send(HaveAll())
    proto.send(Unchoke())
    try:
        events = drain_all(proto, bytes(stream), cuts)
    except RemoteProtocolError:
        assert proto.their_phase.value == "error"
        return
    assert events[-1] == ConnectionClosed()


# -- two connected protocols in lockstep: what our send() accepts, the peer's decoder accepts ------


def snapshot(proto: PeerProtocol) -> tuple[object, ...]:
    return (
        proto.am_choking,
        proto.am_interested,
        proto.peer_choking,
        proto.peer_interested,
        proto.our_phase,
        proto.their_phase,
        proto.our_pieces.to_bytes(),
        proto.peer_pieces.to_bytes(),
        dict(proto.outstanding_requests),
        dict(proto.peer_requests),
        frozenset(proto.granted_fast),
        frozenset(proto.allowed_fast),
        dict(proto.peer_extensions),
    )


def draw_event(data: st.DataObject, me: PeerProtocol) -> Event:
    """A message for ``me`` to send: usually plausible for the state, sometimes not at all."""
    index = data.draw(indexes)
    pending = sorted((r.index, r.begin, r.length) for r in me.peer_requests)
    outstanding = sorted((r.index, r.begin, r.length) for r in me.outstanding_requests)

    def block_of(i: int) -> tuple[int, int, int]:
        size = me.piece_size(i)
        begin = data.draw(st.sampled_from(range(0, size, 16384)))
        return i, begin, min(16384, size - begin)

    kind = data.draw(
        st.sampled_from(
            [
                "choke",
                "unchoke",
                "interested",
                "not interested",
                "have",
                "bitfield",
                "have all",
                "have none",
                "request",
                "cancel",
                "block",
                "reject",
                "allowed fast",
                "suggest",
                "keep-alive",
                "port",
                "ext handshake",
                "ext message",
            ]
            + ["request"] * 6
            + ["block"] * 4
            + ["cancel", "reject"] * 2
        )
    )
    if kind == "request":
        if len(me.peer_pieces) and data.draw(st.booleans()):
            index = data.draw(st.sampled_from(sorted(me.peer_pieces)))
        return Request(*block_of(index))
    if kind in ("cancel", "block", "reject"):
        pool = outstanding if kind == "cancel" else pending
        use_pool = bool(pool) and data.draw(st.booleans())
        key = data.draw(st.sampled_from(pool)) if use_pool else block_of(index)
        if kind == "cancel":
            return Cancel(*key)
        if kind == "reject":
            return RejectRequest(*key)
        return Block(key[0], key[1], bytes([key[0] & 0xFF]) * key[2])
    simple_events: dict[str, Event] = {
        "choke": Choke(),
        "unchoke": Unchoke(),
        "interested": Interested(),
        "not interested": NotInterested(),
        "have": Have(index),
        "bitfield": Bitfield(PieceSet.from_indexes(data.draw(st.sets(indexes)), NUM_PIECES)),
        "have all": HaveAll(),
        "have none": HaveNone(),
        "allowed fast": AllowedFast(index),
        "suggest": SuggestPiece(index),
        "keep-alive": KeepAlive(),
        "port": Port(6881),
        "ext handshake": ExtensionHandshake({b"v": b"x"}),
        "ext message": ExtendedMessage("ut_metadata", b"d8:msg_typei0ee"),
    }
    return simple_events[kind]


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fast=st.booleans(), data=st.data())
def test_lockstep_pair_accepts_what_we_send_and_mirrors_state(fast: bool, data: st.DataObject) -> None:
    kwargs = {"fast_extension": fast, "extensions": {"ut_metadata": 1}}
    a = make(b"A" * 20, **kwargs)
    b = make(b"B" * 20, **kwargs)

    def deliver(sender: PeerProtocol, receiver: PeerProtocol, payload: bytes) -> None:
        receiver.receive_data(payload)
        while receiver.next_event() is not NEED_DATA:  # must never raise
            pass

    deliver(a, b, a.send(Handshake()))
    deliver(b, a, b.send(Handshake()))
    if data.draw(st.booleans()):
        # Warm start: piece sets exchanged and both unchoked, so requests and blocks flow.
        for me, peer in ((a, b), (b, a)):
            have = data.draw(st.sets(indexes, min_size=1))
            deliver(me, peer, me.send(Bitfield(PieceSet.from_indexes(have, NUM_PIECES))))
            deliver(me, peer, me.send(Unchoke()) + me.send(Interested()))
    for _ in range(data.draw(st.integers(min_value=1, max_value=40))):
        me, peer = (a, b) if data.draw(st.booleans()) else (b, a)
        event = draw_event(data, me)
        before = snapshot(me)
        try:
            out = me.send(event)
        except LocalProtocolError:
            assert snapshot(me) == before  # a refused send changes nothing
            continue
        target_event(type(event).__name__)
        deliver(me, peer, out)
        # Let both flush what the protocol queued by itself (BEP 6 rejects).
        while (q := a.data_to_send()) or (r := b.data_to_send()):
            if q:
                deliver(a, b, q)
            else:
                deliver(b, a, r)
        # The two views of the connection agree.
        for x, y in ((a, b), (b, a)):
            assert x.am_choking == y.peer_choking
            assert x.am_interested == y.peer_interested
            assert x.our_pieces == y.peer_pieces
            assert x.outstanding_requests.keys() == y.peer_requests.keys()
            assert x.granted_fast == y.allowed_fast
            assert not x._cancelled  # every cancelled request got its one answer (BEP 6)


# A connection made from a magnet link (geometry unknown until set_geometry).
_EARLY = st.lists(
    st.one_of(
        st.builds(lambda i: b"\x00\x00\x00\x05\x04" + i.to_bytes(4, "big"), st.integers(0, 40)),  # have
        st.builds(lambda b: (1 + len(b)).to_bytes(4, "big") + b"\x05" + b, st.binary(max_size=4)),  # bitfield
        st.just(b"\x00\x00\x00\x01\x0e"),  # have all
        st.just(b"\x00\x00\x00\x01\x0f"),  # have none
        st.just(b"\x00\x00\x00\x0d\x06" + bytes(8) + (16384).to_bytes(4, "big")),  # request
        st.binary(min_size=1, max_size=12),  # b"" would mean EOF
    ),
    max_size=6,
)


@SETTINGS
@given(chunks=_EARLY)
def test_unknown_geometry_raises_only_remote_errors_then_geometry_applies(chunks: list[bytes]) -> None:
    proto = connected({"piece_length": None, "total_length": None})
    try:
        for chunk in chunks:
            proto.receive_data(chunk)
            while proto.next_event() is not NEED_DATA:
                pass
    except RemoteProtocolError:
        return
    try:
        proto.set_geometry(PIECE_LENGTH, TOTAL_LENGTH)
    except RemoteProtocolError:
        return
    assert proto.peer_pieces.size == NUM_PIECES
    assert all(0 <= i < NUM_PIECES for i in proto.peer_pieces)


# -- the batched block path: the same events and state as one event at a time ------------------------


def as_block(item: object) -> object:
    """``next_blocks``'s ``(index, begin, data)`` as the ``Block`` event ``next_event`` gives."""
    if type(item) is tuple:
        index, begin, data = item
        return Block(index, begin, bytes(data))
    if isinstance(item, (Block, UnrequestedBlock)):
        return type(item)(item.index, item.begin, bytes(item.data))
    return item


def leecher_run(
    stream: bytes, requested: list[tuple[int, int, int]], sizes: list[int], strike: bool, batched: bool
) -> tuple[list[object], tuple[object, ...]]:
    """A leecher that requested ``requested`` (and saw them time out, with ``strike``) reads
    ``stream`` into its buffer in reads of ``sizes``; the events (blocks as ``Block``, a
    violation as the string ``"error"``) and its state afterwards, taken one event at a time
    or with ``next_blocks``."""
    proto = connected()
    proto.send(HaveNone(), now=1.0)
    proto.send(Interested(), now=1.0)
    proto.receive_data(encode(HaveAll()) + encode(Unchoke()), now=1.0)
    assert [type(e) for e in (proto.next_event(), proto.next_event())] == [HaveAll, Unchoke]
    out, refused = proto.send_requests(requested, 2.0)
    assert out
    assert not refused
    if strike:
        assert proto.expire_requests(2.5, 0.1)
        assert proto.strikes == 1
    events: list[object] = []
    pos = 0
    now = 3.0
    try:
        for i in itertools.count():
            if pos >= len(stream):
                proto.receive_data(b"", now)
            else:
                view = proto.get_buffer()
                n = max(1, min(len(view), len(stream) - pos, sizes[i % len(sizes)] if sizes else len(view)))
                view[:n] = stream[pos : pos + n]
                proto.buffer_updated(n, now)
                pos += n
            while True:
                if batched:
                    run: list[tuple[int, int, bytes | memoryview]] = []
                    try:
                        ev = proto.next_blocks(run)
                    finally:
                        events.extend(as_block(b) for b in run)
                else:
                    ev = proto.next_event()
                if ev is NEED_DATA:
                    break
                events.append(as_block(ev))
                if isinstance(ev, ConnectionClosed):
                    raise StopIteration
            now += 0.25
    except RemoteProtocolError:
        events.append("error")
    except StopIteration:
        pass
    state = (
        snapshot(proto),
        proto.download_meter.total,
        proto.download_rate_bps(now),
        proto.waiting_since,
        proto.strikes,
        proto.unrequested_bytes,
        proto.ignored_messages,
        proto.data_to_send(),
    )
    return events, state


@st.composite
def leecher_streams(draw: st.DrawFn) -> tuple[list[tuple[int, int, int]], bytes]:
    """Requests a leecher sends, and a stream answering some of them (in any order, some
    twice), with other messages and blocks nobody asked for between them."""
    all_blocks = [
        (index, begin, min(16384, size - begin))
        for index in range(NUM_PIECES)
        for size in [
            TOTAL_LENGTH - (NUM_PIECES - 1) * PIECE_LENGTH if index == NUM_PIECES - 1 else PIECE_LENGTH
        ]
        for begin in range(0, size, 16384)
    ]
    requested = draw(st.lists(st.sampled_from(all_blocks), min_size=1, max_size=12, unique=True))
    answers = draw(st.lists(st.sampled_from(requested), max_size=16))
    others = draw(st.lists(st.one_of(simple, blocks()), max_size=8))
    messages: list[Event] = [Block(i, b, bytes([i + b // 16384]) * n) for i, b, n in answers]
    for other in others:
        messages.insert(draw(st.integers(0, len(messages))), other)
    stream = bytearray(b"".join(wire_bytes(m) for m in messages))
    for position, value in draw(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=2)):
        if stream:
            stream[position % len(stream)] = value  # sometimes garbage: the same error either way
    return requested, bytes(stream)


@SETTINGS
@given(
    case=leecher_streams(),
    sizes=st.lists(st.integers(min_value=1, max_value=70_000), max_size=5),
    strike=st.booleans(),
)
def test_next_blocks_gives_the_events_and_state_of_next_event(
    case: tuple[list[tuple[int, int, int]], bytes], sizes: list[int], strike: bool
) -> None:
    requested, stream = case
    one_by_one = leecher_run(stream, requested, sizes, strike, batched=False)
    assert leecher_run(stream, requested, sizes, strike, batched=True) == one_by_one
