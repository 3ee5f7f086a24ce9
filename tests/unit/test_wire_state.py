"""Per-connection state: choke/interest flags, request bookkeeping, BEP 6 semantics, time."""

from __future__ import annotations

import itertools

import pytest

from tests.wire_helpers import NUM_PIECES, Pair, connected, feed, make
from torrent.errors import LocalProtocolError, RemoteProtocolError
from torrent.proto.pieceset import PieceSet
from torrent.proto.wire import (
    NEED_DATA,
    AllowedFast,
    Bitfield,
    Block,
    Cancel,
    Choke,
    ExtendedMessage,
    Handshake,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    KeepAlive,
    NotInterested,
    PeerProtocol,
    Phase,
    Port,
    RateMeter,
    RejectRequest,
    Request,
    SuggestPiece,
    Unchoke,
    UnrequestedBlock,
    encode,
)
from torrent.proto.wire.state import TRANSITIONS, Kind

NO_FAST = {"fast_extension": False}
BLOCK = 16384


def pair(fast: bool = True, **kwargs: object) -> Pair:
    opts = dict(kwargs)
    if not fast:
        opts["fast_extension"] = False
    p = Pair(dict(opts), dict(opts))
    p.handshake()
    return p


def seed_and_leecher(fast: bool = True) -> Pair:
    """``a`` is the leecher (has nothing, interested), ``b`` the seed (has all, unchoked a)."""
    p = pair(fast)
    if fast:
        assert p.send(p.b, HaveAll()) == [HaveAll()]
        assert p.send(p.a, HaveNone()) == [HaveNone()]
    else:
        p.send(p.b, Bitfield(PieceSet.full(NUM_PIECES)))
        p.send(p.a, Interested())
    if fast:
        p.send(p.a, Interested())
    assert p.send(p.b, Unchoke()) == [Unchoke()]
    return p


# -- flags ----------------------------------------------------------------------------------------


def test_initial_flags_and_their_changes_on_both_sides() -> None:
    p = pair()
    a, b = p.a, p.b
    assert (a.am_choking, a.am_interested, a.peer_choking, a.peer_interested) == (True, False, True, False)
    p.send(a, HaveNone())
    p.send(b, HaveNone())
    assert p.send(a, Interested()) == [Interested()]
    assert a.am_interested
    assert b.peer_interested
    p.send(b, Unchoke())
    assert not b.am_choking
    assert not a.peer_choking
    p.send(a, NotInterested())
    assert not a.am_interested
    assert not b.peer_interested
    p.send(b, Choke())
    assert b.am_choking
    assert a.peer_choking


def test_have_updates_the_peer_piece_set_and_ours() -> None:
    p = pair()
    p.send(p.a, HaveNone())
    p.send(p.b, Bitfield(PieceSet.from_indexes([1], NUM_PIECES)))
    assert p.send(p.b, Have(4)) == [Have(4)]
    assert sorted(p.a.peer_pieces) == [1, 4]
    assert sorted(p.b.our_pieces) == [1, 4]


# -- transition table -----------------------------------------------------------------------------

KIND_BYTES = {
    Kind.PIECE_SET: b"\x00\x00\x00\x03\x05\x00\x00",
    Kind.NEUTRAL: b"\x00\x00\x00\x03\x09\x1a\xe1",
    Kind.OTHER: b"\x00\x00\x00\x01\x02",
}


def in_phase(phase: Phase) -> PeerProtocol:
    proto = make()
    proto.send(Handshake())
    if phase is Phase.HANDSHAKE:
        return proto
    proto = connected()
    if phase is Phase.ACTIVE:
        feed(proto, KIND_BYTES[Kind.OTHER])
    assert proto.their_phase is phase
    return proto


@pytest.mark.parametrize(
    ("phase", "kind"), list(itertools.product([Phase.OPENING, Phase.ACTIVE], KIND_BYTES)), ids=str
)
def test_transition_table_against_received_messages(phase: Phase, kind: Kind) -> None:
    proto = in_phase(phase)
    proto.receive_data(KIND_BYTES[kind])
    expected = TRANSITIONS.get((phase, kind))
    if (phase, kind) == (Phase.ACTIVE, Kind.PIECE_SET):
        expected = Phase.ACTIVE  # a late piece set is accepted (aria2 sends them; see wire)
    if expected is None:
        with pytest.raises(RemoteProtocolError):
            proto.next_event()
        assert proto.their_phase is Phase.ERROR
    else:
        assert proto.next_event() is not NEED_DATA
        assert proto.their_phase is expected


@pytest.mark.parametrize(
    ("phase", "event"),
    list(
        itertools.product(
            [Phase.OPENING, Phase.ACTIVE], [Bitfield(PieceSet(NUM_PIECES)), Port(1), Interested()]
        )
    ),
    ids=str,
)
def test_transition_table_against_sent_messages(phase: Phase, event: object) -> None:
    proto = connected(NO_FAST)  # without BEP 6, so only the table decides
    if phase is Phase.ACTIVE:
        proto.send(KeepAlive())
        proto.send(NotInterested())
    kind = {Bitfield: Kind.PIECE_SET, Port: Kind.NEUTRAL}.get(type(event), Kind.OTHER)
    expected = TRANSITIONS.get((phase, kind))
    if expected is None:
        with pytest.raises(LocalProtocolError, match="only allowed as the first message"):
            proto.send(event)  # type: ignore[arg-type]
        assert proto.our_phase is phase  # a refused send changes nothing
    else:
        proto.send(event)  # type: ignore[arg-type]
        assert proto.our_phase is expected


def test_with_fast_extension_our_first_message_must_be_a_piece_set() -> None:
    proto = connected()
    with pytest.raises(LocalProtocolError, match="first message must be Bitfield, HaveAll or HaveNone"):
        proto.send(Interested())
    proto.send(Port(6881))  # neutral messages may come first
    proto.send(HaveNone())
    proto.send(Interested())


def test_sending_before_handshakes_is_our_bug() -> None:
    proto = make()
    with pytest.raises(LocalProtocolError, match="before our handshake"):
        proto.send(Interested())
    proto.send(Handshake())
    with pytest.raises(LocalProtocolError, match="before the peer's handshake"):
        proto.send(Interested())
    with pytest.raises(LocalProtocolError, match="info hash differs"):
        make().send(Handshake(info_hash=b"\x01" * 20))


# -- requests: our side ---------------------------------------------------------------------------


def test_request_block_round_trip_bookkeeping() -> None:
    p = seed_and_leecher()
    assert p.send(p.a, Request(3, 0, BLOCK), now=1.0) == [Request(3, 0, BLOCK)]
    assert p.a.outstanding_requests == {Request(3, 0, BLOCK): 1.0}
    assert p.b.peer_requests == {Request(3, 0, BLOCK): 1.0}
    events = p.send(p.b, Block(3, 0, b"q" * BLOCK), now=2.0)
    assert events == [Block(3, 0, b"q" * BLOCK)]
    assert p.a.outstanding_requests == {}
    assert p.b.peer_requests == {}
    assert p.a.statistics(2.0).downloaded == BLOCK
    assert p.b.statistics(2.0).uploaded == BLOCK


def test_our_request_misuse_is_local_error() -> None:
    p = pair()
    p.send(p.a, HaveNone())
    p.send(p.b, Bitfield(PieceSet.from_indexes([0, 1], NUM_PIECES)))
    with pytest.raises(LocalProtocolError, match="while the peer chokes us"):
        p.a.send(Request(0, 0, BLOCK))
    p.send(p.b, Unchoke())
    with pytest.raises(LocalProtocolError, match="which the peer does not have"):
        p.a.send(Request(5, 0, BLOCK))
    with pytest.raises(LocalProtocolError, match="block length 16385"):
        p.a.send(Request(0, 0, BLOCK + 1))
    with pytest.raises(LocalProtocolError, match="runs past the end"):
        p.a.send(Request(0, 2 * BLOCK, 1))
    p.a.send(Request(0, 0, BLOCK))
    with pytest.raises(LocalProtocolError, match="already outstanding"):
        p.a.send(Request(0, 0, BLOCK))
    with pytest.raises(LocalProtocolError, match="not outstanding"):
        p.a.send(Cancel(1, 0, BLOCK))
    with pytest.raises(LocalProtocolError, match="answers no pending request"):
        p.a.send(Block(0, 0, b"x"))


def test_choke_without_fast_voids_our_requests() -> None:
    p = seed_and_leecher(fast=False)
    for begin in (0, BLOCK):
        p.send(p.a, Request(2, begin, BLOCK))
    (choke,) = p.send(p.b, Choke())
    assert isinstance(choke, Choke)
    assert set(choke.voided) == {Request(2, 0, BLOCK), Request(2, BLOCK, BLOCK)}
    assert choke == Choke()  # voided takes no part in equality
    assert p.a.num_outstanding() == 0
    assert p.b.peer_requests == {}  # the chooser dropped them too
    # A block that was already on the wire arrives unrequested.
    assert feed(p.a, encode(Block(2, 0, b"x" * BLOCK))) == [UnrequestedBlock(2, 0, b"x" * BLOCK)]


def test_choke_with_fast_needs_explicit_rejects() -> None:
    p = seed_and_leecher(fast=True)
    for begin in (0, BLOCK):
        p.send(p.a, Request(2, begin, BLOCK))
    data = p.b.send(Choke())
    # BEP 6: the choke comes with one reject per pending request.
    assert data == encode(Choke()) + encode(RejectRequest(2, 0, BLOCK)) + encode(
        RejectRequest(2, BLOCK, BLOCK)
    )
    events = feed(p.a, data)
    assert events == [Choke(), RejectRequest(2, 0, BLOCK), RejectRequest(2, BLOCK, BLOCK)]
    assert events[0].voided == ()  # type: ignore[union-attr]
    assert p.a.num_outstanding() == 0


def test_choke_with_fast_keeps_requests_until_rejected() -> None:
    p = seed_and_leecher(fast=True)
    p.send(p.a, Request(2, 0, BLOCK))
    assert feed(p.a, encode(Choke())) == [Choke()]
    assert p.a.outstanding_requests.keys() == {Request(2, 0, BLOCK)}
    assert feed(p.a, encode(Block(2, 0, b"y" * BLOCK))) == [Block(2, 0, b"y" * BLOCK)]


def test_allowed_fast_lets_us_request_while_choked() -> None:
    p = seed_and_leecher(fast=True)
    p.send(p.b, Choke())
    assert p.send(p.b, AllowedFast(4)) == [AllowedFast(4)]
    assert p.a.allowed_fast == {4}
    assert p.b.granted_fast == {4}
    with pytest.raises(LocalProtocolError):
        p.a.send(Request(5, 0, BLOCK))
    assert p.send(p.a, Request(4, 0, BLOCK)) == [Request(4, 0, BLOCK)]
    # Choking again keeps the request in an allowed-fast piece.
    assert p.b.send(Choke()) == encode(Choke())
    assert p.send(p.b, Block(4, 0, b"f" * BLOCK)) == [Block(4, 0, b"f" * BLOCK)]


def test_cancel_without_fast_forgets_at_once() -> None:
    p = seed_and_leecher(fast=False)
    p.send(p.a, Request(1, 0, BLOCK))
    assert p.send(p.a, Cancel(1, 0, BLOCK)) == [Cancel(1, 0, BLOCK)]
    assert p.a.num_outstanding() == 0
    assert p.b.peer_requests == {}
    assert p.b.data_to_send() == b""
    assert feed(p.a, encode(Block(1, 0, b"l" * BLOCK))) == [UnrequestedBlock(1, 0, b"l" * BLOCK)]


def test_cancel_with_fast_gets_exactly_one_answer() -> None:
    p = seed_and_leecher(fast=True)
    p.send(p.a, Request(1, 0, BLOCK))
    p.send(p.a, Request(1, BLOCK, BLOCK))
    assert p.send(p.a, Cancel(1, 0, BLOCK)) == [Cancel(1, 0, BLOCK)]
    assert p.send(p.a, Cancel(1, BLOCK, BLOCK)) == [Cancel(1, BLOCK, BLOCK)]
    # The seed answers each cancel with a reject (queued by the protocol).
    queued = p.b.data_to_send()
    assert queued == encode(RejectRequest(1, 0, BLOCK)) + encode(RejectRequest(1, BLOCK, BLOCK))
    assert feed(p.a, queued[:17]) == [RejectRequest(1, 0, BLOCK)]
    # Had the block crossed the cancel, it would be the one answer instead.
    assert feed(p.a, encode(Block(1, BLOCK, b"c" * BLOCK))) == [UnrequestedBlock(1, BLOCK, b"c" * BLOCK)]
    # Both answered: a further reject is a violation (BEP 6: reject for a request never sent).
    with pytest.raises(RemoteProtocolError, match="never sent"):
        feed(p.a, queued[17:])


def test_reject_removes_our_request() -> None:
    p = seed_and_leecher(fast=True)
    p.send(p.a, Request(1, 0, BLOCK))
    assert p.send(p.b, RejectRequest(1, 0, BLOCK)) == [RejectRequest(1, 0, BLOCK)]
    assert p.a.num_outstanding() == 0
    with pytest.raises(LocalProtocolError, match="not pending"):
        p.b.send(RejectRequest(1, 0, BLOCK))


# -- requests: the peer's side --------------------------------------------------------------------


def test_peer_request_while_we_choke_without_fast_is_dropped() -> None:
    p = pair(fast=False)
    p.send(p.b, Bitfield(PieceSet.full(NUM_PIECES)))
    p.send(p.a, Bitfield(PieceSet(NUM_PIECES)))
    # The leecher's request crossed the seed's choke: a protocol bypass would raise, we drop it.
    events = feed(p.b, encode(Request(0, 0, BLOCK)))
    assert events == []
    assert p.b.dropped_requests == 1
    assert p.b.data_to_send() == b""


def test_peer_request_we_cannot_serve_with_fast_is_rejected() -> None:
    p = pair()
    p.send(p.b, Bitfield(PieceSet.from_indexes([0], NUM_PIECES)))
    p.send(p.a, HaveNone())
    assert feed(p.b, encode(Request(0, 0, BLOCK))) == []  # choked
    assert p.b.data_to_send() == encode(RejectRequest(0, 0, BLOCK))
    p.b.send(Unchoke())
    assert feed(p.b, encode(Request(1, 0, BLOCK))) == []  # a piece we never announced
    assert p.b.data_to_send() == encode(RejectRequest(1, 0, BLOCK))
    assert feed(p.b, encode(Request(0, 0, BLOCK))) == [Request(0, 0, BLOCK)]
    assert feed(p.b, encode(Request(0, 0, BLOCK))) == []  # a duplicate is ignored
    assert p.b.dropped_requests == 2


def test_peer_request_queue_is_bounded() -> None:
    p = pair(max_peer_requests=2)
    p.send(p.b, HaveAll())
    p.send(p.a, HaveNone())
    p.b.send(Unchoke())
    data = b"".join(encode(Request(i, 0, BLOCK)) for i in range(3))
    assert feed(p.b, data) == [Request(0, 0, BLOCK), Request(1, 0, BLOCK)]
    assert p.b.data_to_send() == encode(RejectRequest(2, 0, BLOCK))


def test_peer_cancel_of_unknown_request_is_ignored() -> None:
    p = seed_and_leecher()
    assert feed(p.b, encode(Cancel(1, 0, BLOCK))) == []
    assert p.b.data_to_send() == b""


def test_is_requested_by_peer_guards_a_late_block() -> None:
    p = seed_and_leecher()
    p.send(p.a, Request(1, 0, BLOCK))
    assert p.b.is_requested_by_peer(Request(1, 0, BLOCK))
    p.send(p.a, Cancel(1, 0, BLOCK))
    assert not p.b.is_requested_by_peer(Request(1, 0, BLOCK))
    with pytest.raises(LocalProtocolError):
        p.b.send(Block(1, 0, b"d" * BLOCK))


def test_send_block_parts_are_the_message_send_would_build() -> None:
    joined, parts = seed_and_leecher(), seed_and_leecher()
    for p in (joined, parts):
        p.send(p.a, Request(1, 0, BLOCK))
    data = b"d" * BLOCK
    header, body = parts.b.send_block(1, 0, data, 5.0)
    assert header + body == joined.b.send(Block(1, 0, data), 5.0)
    assert body is data  # not copied into a joined message
    assert feed(parts.a, header + body) == [Block(1, 0, data)]
    assert parts.b.last_sent_at == 5.0
    assert not parts.b.is_requested_by_peer(Request(1, 0, BLOCK))
    with pytest.raises(LocalProtocolError, match="answers no pending request"):
        parts.b.send_block(1, 0, data, 6.0)  # already answered


def test_send_requests_is_send_for_each_and_lists_the_refused() -> None:
    one_by_one, batched = seed_and_leecher(), seed_and_leecher()
    for p in (one_by_one, batched):  # a cancelled request still awaits its answer (BEP 6)
        p.send(p.a, Request(2, 0, BLOCK))
        p.send(p.a, Cancel(2, 0, BLOCK))
    wanted = [(1, 0, BLOCK), (2, 0, BLOCK), (1, BLOCK, BLOCK), (1, 0, BLOCK)]
    expected = b""
    for index, begin, length in wanted[:1] + wanted[2:3]:
        expected += one_by_one.a.send(Request(index, begin, length), 7.0)
    out, refused = batched.a.send_requests(wanted, 7.0)
    assert out == expected
    assert refused == [(2, 0, BLOCK), (1, 0, BLOCK)]  # awaiting its answer; already outstanding
    assert batched.a.outstanding_requests == one_by_one.a.outstanding_requests
    assert batched.a.last_sent_at == 7.0
    assert feed(batched.b, out) == [Request(1, 0, BLOCK), Request(1, BLOCK, BLOCK)]


def test_send_requests_before_the_handshakes_refuses_them_all() -> None:
    p = Pair({}, {})
    assert p.a.send_requests([(0, 0, BLOCK)], 1.0) == (b"", [(0, 0, BLOCK)])
    assert p.a.outstanding_requests == {}


# -- fast and extension misuse ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "event", [HaveAll(), HaveNone(), SuggestPiece(1), AllowedFast(1), RejectRequest(1, 0, 1)], ids=repr
)
def test_fast_messages_without_fast_are_our_bug(event: object) -> None:
    proto = connected(NO_FAST)
    with pytest.raises(LocalProtocolError, match="fast extension"):
        proto.send(event)  # type: ignore[arg-type]


def test_extended_message_to_an_extension_the_peer_lacks() -> None:
    proto = connected()
    with pytest.raises(LocalProtocolError, match="did not announce extension 'ut_pex'"):
        proto.send(ExtendedMessage("ut_pex", b""))


def test_receive_only_events_cannot_be_sent() -> None:
    proto = connected()
    proto.send(HaveNone())
    with pytest.raises(LocalProtocolError, match="cannot be sent"):
        proto.send(UnrequestedBlock(0, 0, b""))


# -- time: activity, rates, snub -------------------------------------------------------------------


def test_last_activity_times() -> None:
    p = pair()
    p.a.send(HaveNone(), now=5.0)
    assert p.a.last_sent_at == 5.0
    p.a.receive_data(encode(KeepAlive()), now=7.5)
    assert p.a.last_received_at == 7.5
    assert p.a.next_event() == KeepAlive()


def test_rates_over_a_rolling_window_with_a_fake_clock() -> None:
    p = seed_and_leecher()
    t = 100.0
    # 10 blocks a second for 30 s: 163840 B/s both ways.
    for _second in range(30):
        for i in range(10):
            p.send(p.a, Request(i % 9, 0, BLOCK), now=t + i * 0.1)
            p.send(p.b, Block(i % 9, 0, b"r" * BLOCK), now=t + i * 0.1)
        t += 1.0
    assert p.a.download_rate_bps(t) == pytest.approx(163840, rel=0.06)
    assert p.b.upload_rate_bps(t) == pytest.approx(163840, rel=0.06)
    assert p.a.upload_rate_bps(t) == 0.0
    # Nothing for 10 s: half the window is empty.
    assert p.a.download_rate_bps(t + 10) == pytest.approx(163840 / 2, rel=0.1)
    assert p.a.download_rate_bps(t + 25) == 0.0


def test_rate_meter_young_and_backwards_clock() -> None:
    meter = RateMeter(window_s=20.0, now=50.0)
    meter.add(1000, 50.5)
    assert meter.rate_bps(51.0) == pytest.approx(1000.0)  # one second of history, not twenty
    meter.add(1000, 40.0)  # clock went backwards: counted, not lost
    assert meter.total == 2000
    assert meter.rate_bps(51.0) == pytest.approx(2000.0)


def test_snubbed_after_60_seconds_without_a_block() -> None:
    p = seed_and_leecher()
    assert not p.a.is_snubbed(1000.0)  # nothing outstanding: never snubbed
    p.send(p.a, Request(0, 0, BLOCK), now=10.0)
    assert not p.a.is_snubbed(69.9)
    assert p.a.is_snubbed(70.0)
    assert p.a.statistics(70.0).snubbed
    p.send(p.a, Request(0, BLOCK, BLOCK), now=71.0)  # more requests do not reset the clock
    assert p.a.is_snubbed(72.0)
    p.send(p.b, Block(0, 0, b"s" * BLOCK), now=80.0)  # a block does
    assert not p.a.is_snubbed(139.0)
    assert p.a.is_snubbed(140.0)
    p.send(p.b, Block(0, BLOCK, b"s" * BLOCK), now=141.0)
    assert not p.a.is_snubbed(1000.0)


def test_statistics_snapshot() -> None:
    p = seed_and_leecher()
    p.send(p.a, Request(0, 0, BLOCK), now=1.0)
    stats = p.a.statistics(1.0)
    assert stats.am_interested
    assert not stats.peer_choking
    assert stats.outstanding_requests == 1
    assert stats.peer_pieces == NUM_PIECES
    assert p.b.statistics(1.0).peer_requests == 1


def test_clock_starts_at_the_first_now_when_not_given() -> None:
    # A monotonic clock far from zero must not dilute the rates over the time before it.
    p = Pair()  # created without now=
    p.send(p.a, Handshake(), now=5000.0)
    p.send(p.b, Handshake(), now=5000.0)
    p.send(p.b, HaveAll(), now=5000.0)
    p.send(p.a, HaveNone(), now=5000.0)
    p.send(p.b, Unchoke(), now=5000.0)
    p.send(p.a, Request(0, 0, BLOCK), now=5000.0)
    p.send(p.b, Block(0, 0, b"m" * BLOCK), now=5000.5)
    assert p.a.download_rate_bps(5001.0) == pytest.approx(BLOCK / 1.0)
    assert p.b.upload_rate_bps(5001.0) == pytest.approx(BLOCK / 1.0)
    assert p.a.last_received_at == 5000.5
    assert p.a.last_sent_at == 5000.0
    assert not p.a.is_snubbed(5059.0)


# -- request timeouts, the upload queue --------------------------------------------------------


def test_expired_requests_count_a_strike_until_the_next_block() -> None:
    p = seed_and_leecher()
    assert p.a.waiting_since is None
    p.send(p.a, Request(0, 0, BLOCK), now=10.0)
    p.send(p.a, Request(0, BLOCK, BLOCK), now=12.0)
    assert p.a.waiting_since == 10.0
    assert p.a.expire_requests(30.0, timeout_s=20.0) == []
    assert p.a.strikes == 0
    assert p.a.expire_requests(31.0, timeout_s=20.0) == [Request(0, 0, BLOCK)]
    assert p.a.strikes == 1
    assert p.a.is_snubbed(31.0)
    p.send(p.a, Cancel(0, 0, BLOCK), now=31.0)
    assert p.a.waiting_since == 10.0  # a strike keeps us waiting: the clock is not reset
    p.send(p.b, Block(0, BLOCK, b"x" * BLOCK), now=32.0)
    assert p.a.strikes == 0
    assert not p.a.is_snubbed(32.0)


def test_a_reject_of_a_cancelled_request_is_marked_withdrawn() -> None:
    p = seed_and_leecher()
    p.send(p.a, Request(0, 0, BLOCK))
    p.send(p.a, Request(1, 0, BLOCK))
    p.send(p.a, Cancel(0, 0, BLOCK))
    events = p.flush(p.b)  # BEP 6: the seed answers the cancel with a reject
    assert events == [RejectRequest(0, 0, BLOCK)]
    assert isinstance(events[0], RejectRequest)
    assert events[0].withdrawn
    assert p.send(p.b, RejectRequest(1, 0, BLOCK)) == [RejectRequest(1, 0, BLOCK)]
    assert not p.a.num_outstanding()


@pytest.mark.parametrize("fast", [True, False])
def test_the_upload_queue_serves_oldest_first_and_refuses(fast: bool) -> None:
    p = seed_and_leecher(fast)
    assert p.b.next_peer_request() is None
    p.send(p.a, Request(2, 0, BLOCK))
    p.send(p.a, Request(1, 0, BLOCK))
    assert p.b.next_peer_request() == Request(2, 0, BLOCK)
    out = p.b.refuse_peer_request(Request(2, 0, BLOCK))
    assert out == (encode(RejectRequest(2, 0, BLOCK)) if fast else b"")
    assert p.b.next_peer_request() == Request(1, 0, BLOCK)
    assert p.b.dropped_requests == 1
    with pytest.raises(LocalProtocolError, match="not pending"):
        p.b.refuse_peer_request(Request(2, 0, BLOCK))


@pytest.mark.parametrize("fast", [True, False])
def test_raw_events_are_the_same_events_as_tuples_and_piece_indexes(fast: bool) -> None:
    """next_event_raw: a Block as (index, begin, data), an accepted Request as its piece; the
    state changes as next_event's; everything else (a refused or duplicate request too) as
    next_event gives it."""
    p = seed_and_leecher(fast)
    leecher, seed = p.a, p.b
    seed.receive_data(leecher.send(Request(2, 0, BLOCK)) + encode(Request(2, 0, BLOCK)), now=1.0)
    seed.receive_data(encode(Request(0, 0, BLOCK)), now=1.0)
    seed.receive_data(encode(Have(1)), now=1.0)
    assert seed.next_event_raw() == 2
    assert seed.next_event_raw() == 0  # the duplicate of the first was dropped in between
    assert seed.next_event_raw() == Have(1)
    assert seed.next_event_raw() is NEED_DATA
    assert seed.pending_peer_requests(8) == [(2, 0, BLOCK), (0, 0, BLOCK)]
    assert seed.pending_peer_requests(1) == [(2, 0, BLOCK)]
    header, data = seed.send_block(2, 0, b"x" * BLOCK, now=2.0)
    assert seed.pending_peer_requests(8) == [(0, 0, BLOCK)]
    leecher.receive_data(header + data, now=2.0)
    raw = leecher.next_event_raw()
    assert isinstance(raw, tuple)
    index, begin, view = raw
    assert (index, begin, bytes(view)) == (2, 0, b"x" * BLOCK)
    assert leecher.num_outstanding() == 0
    assert leecher.download_meter.total == BLOCK
    assert leecher.next_event_raw() is NEED_DATA


def test_next_blocks_takes_a_run_of_requested_blocks_and_stops_at_anything_else() -> None:
    """next_blocks: the requested blocks before the next other event go into the list, in
    order; that event (here a Have, then an unrequested block) is returned after them, and
    the meter counts the run's bytes once."""
    p = seed_and_leecher(True)
    leecher = p.a
    out, refused = leecher.send_requests([(0, 0, BLOCK), (0, BLOCK, BLOCK), (1, 0, BLOCK)], 1.0)
    assert len(out) == 3 * 17
    assert not refused
    stream = b"".join(
        encode(ev)
        for ev in (
            Block(0, BLOCK, b"b" * BLOCK),
            Block(0, 0, b"a" * BLOCK),
            Have(3),
            Block(1, 0, b"c" * BLOCK),
            Block(2, 0, b"u" * BLOCK),  # never requested
        )
    )
    leecher.receive_data(stream, now=2.0)
    run: list[tuple[int, int, bytes | memoryview]] = []
    assert leecher.next_blocks(run) == Have(3)
    assert [(i, b, bytes(d)) for i, b, d in run] == [(0, BLOCK, b"b" * BLOCK), (0, 0, b"a" * BLOCK)]
    assert leecher.download_meter.total == 2 * BLOCK
    run = []
    unrequested = leecher.next_blocks(run)
    assert [(i, b, bytes(d)) for i, b, d in run] == [(1, 0, b"c" * BLOCK)]
    assert isinstance(unrequested, UnrequestedBlock)
    assert (unrequested.index, unrequested.begin) == (2, 0)
    assert leecher.unrequested_bytes == BLOCK
    run = []
    assert leecher.next_blocks(run) is NEED_DATA
    assert run == []
    assert leecher.download_meter.total == 3 * BLOCK
    assert leecher.num_outstanding() == 0


def test_next_blocks_keeps_the_blocks_before_a_violation() -> None:
    p = seed_and_leecher(True)
    leecher = p.a
    leecher.send_requests([(0, 0, BLOCK)], 1.0)
    leecher.receive_data(encode(Block(0, 0, b"a" * BLOCK)) + encode(Block(NUM_PIECES, 0, b"x")), now=2.0)
    run: list[tuple[int, int, bytes | memoryview]] = []
    with pytest.raises(RemoteProtocolError, match="out of range"):
        leecher.next_blocks(run)
    assert [(i, b, len(d)) for i, b, d in run] == [(0, 0, BLOCK)]
    assert leecher.download_meter.total == BLOCK
    assert leecher.their_phase.value == "error"
    with pytest.raises(RemoteProtocolError, match="already failed"):
        leecher.next_blocks(run)


def test_a_raw_request_refused_while_choking_comes_as_nothing() -> None:
    p = pair()
    p.send(p.a, HaveNone())
    p.send(p.b, HaveAll())
    p.b.receive_data(encode(Request(0, 0, BLOCK)))  # b chokes a
    assert p.b.next_event_raw() is NEED_DATA
    assert p.b.pending_peer_requests(8) == []
    assert p.b.dropped_requests == 1
