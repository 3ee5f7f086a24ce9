"""uTP (BEP 29): the packet codec and one connection's state machine, with literal bytes."""

from __future__ import annotations

import struct

import pytest

from tests.utp_helpers import Link, SimNet, connected_pair
from torrent.errors import LocalProtocolError
from torrent.proto.utp import (
    HEADER_SIZE,
    MalformedPacket,
    Packet,
    PacketType,
    State,
    UtpConnection,
    UtpCounters,
    decode,
    encode,
    sack_bitmask,
    sacked,
)
from torrent.proto.utp.congestion import DelayHistory
from torrent.proto.utp.connection import INITIAL_PACKET, MAX_TIMEOUTS, MIN_PACKET, SYN_RESENDS

H = struct.Struct(">BBHIIIHH")


def hdr(
    typ: int, cid: int, seq: int, ack: int, *, wnd: int = 1 << 20, ts: int = 0, tsd: int = 0, ext: int = 0
) -> bytes:
    return H.pack((typ << 4) | 1, ext, cid, ts, tsd, wnd, seq, ack)


# ---------------------------------------------------------------------- codec


def test_encode_syn_exact_bytes() -> None:
    p = Packet(
        PacketType.SYN, 0x1234, timestamp_us=1, timestamp_difference_us=2, wnd_size=3, seq_nr=1, ack_nr=0
    )
    assert encode(p) == bytes.fromhex("41 00 1234 00000001 00000002 00000003 0001 0000")
    assert decode(encode(p)) == p


def test_sack_extension_round_trip_and_bit_order() -> None:
    # ack_nr 10: bit 0 is packet 12, bit 7 packet 19, bit 8 packet 20.
    mask = sack_bitmask(10, [12, 19, 20])
    assert mask == bytes([0b1000_0001, 0b0000_0001, 0, 0])
    assert sacked(10, mask) == [12, 19, 20]
    p = Packet(PacketType.STATE, 7, seq_nr=5, ack_nr=10, sack=mask)
    raw = encode(p)
    assert raw[1] == 1
    assert raw[20:22] == bytes([0, 4])
    assert decode(raw) == p


def test_sack_wraps_around_sequence_space() -> None:
    mask = sack_bitmask(0xFFFE, [0x0000, 0x0003])
    assert mask is not None
    assert sacked(0xFFFE, mask) == [0x0000, 0x0003]


def test_sack_of_any_length_is_read_as_libtorrent_sends_it() -> None:
    raw = hdr(2, 5, 1, 10, ext=1) + bytes([0, 1, 0b101])
    p = decode(raw)
    assert p.sack == bytes([0b101])
    assert sacked(10, p.sack) == [12, 14]


def test_unknown_extension_is_skipped() -> None:
    raw = hdr(0, 5, 1, 0, ext=3) + bytes([0, 2, 0xAA, 0xBB]) + b"payload"
    assert decode(raw).payload == b"payload"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x01" * 19,
        bytes([0x02]) + bytes(19),  # version 2
        bytes([0x51]) + bytes(19),  # type 5
        hdr(2, 1, 1, 1, ext=1) + bytes([0, 8, 1, 2]),  # SACK runs past the end
        hdr(2, 1, 1, 1, ext=9) + bytes([0]),  # chain cut short
    ],
)
def test_decode_rejects_garbage(raw: bytes) -> None:
    with pytest.raises(MalformedPacket):
        decode(raw)


# ---------------------------------------------------------------------- opening


def test_handshake_ids_and_sequence_numbers() -> None:
    c = UtpCounters()
    a = UtpConnection.dial(recv_id=1000, seq_nr=1, now=0.0, counters=c)
    (syn,) = a.outgoing
    typ_ver, _, cid, _, _, _, seq, _ = H.unpack_from(syn)
    assert (typ_ver, cid, seq) == (0x41, 1000, 1)
    assert a.state == State.SYN_SENT
    b = UtpConnection.accept(syn, seq_nr=500, now=0.0, counters=c)
    assert b is not None
    assert b.connected
    assert (b.recv_id, b.send_id, b.ack_nr) == (1001, 1000, 1)
    (state,) = b.outgoing
    typ_ver, _, cid, _, _, _, seq, ack = H.unpack_from(state)
    assert (typ_ver, cid, seq, ack) == (0x21, 1000, 500, 1)
    a.receive(state, 0.01)
    assert a.connected
    assert a.ack_nr == 499
    assert (a.recv_id, a.send_id) == (1000, 1001)


def test_duplicate_syn_is_answered_again_and_counted() -> None:
    _a, b, c = connected_pair()
    syn = hdr(4, 1000, 1, 0)
    b.outgoing.clear()
    b.receive(syn, 0.1)
    b.flush(0.1)
    assert c.duplicate_syn == 1
    assert len(b.outgoing) == 1
    assert b.outgoing[0][0] == 0x21


def test_syn_times_out_after_its_resends() -> None:
    c = UtpCounters()
    a = UtpConnection.dial(recv_id=7, seq_nr=1, now=0.0, counters=c)
    sends = 1
    now = 0.0
    while not a.closed:
        a.outgoing.clear()
        deadline = a.next_deadline()
        assert deadline is not None
        now = deadline
        a.tick(now)
        sends += len(a.outgoing)
    assert a.close_reason == "connect timed out"
    assert sends == 1 + SYN_RESENDS
    assert now == pytest.approx(1.0 + 2.0 + 4.0)


# ---------------------------------------------------------------------- data


def test_transfer_in_order_and_fin_closes_both() -> None:
    a, b, _ = connected_pair()
    net = SimNet(a, b)
    net.run_until(lambda: a.connected)
    data = bytes(range(256)) * 400
    net.send(a, data)
    net.run_until(lambda: len(net.got_b) == len(data))
    assert bytes(net.got_b) == data
    a.close(net.now)
    net.run_until(lambda: b.eof)
    assert b.eof
    b.close(net.now)
    net.run_until(lambda: a.closed and b.closed)
    assert (a.close_reason, b.close_reason) == ("", "")


def test_write_after_close_is_a_local_error() -> None:
    a, _, _ = connected_pair()
    a.close(0.0)
    with pytest.raises(LocalProtocolError):
        a.write(b"x")


def test_out_of_order_data_is_sacked_and_delivered_once_the_hole_fills() -> None:
    a, b, c = connected_pair()
    a.receive(b.outgoing.pop(), 0.0)
    a.ledbat.cwnd = 10 * 1400
    a.write(b"x" * 1400 * 5)
    a.flush(0.0)
    packets = list(a.outgoing)
    a.outgoing.clear()
    assert len(packets) >= 2
    b.receive(packets[1], 0.01)
    b.flush(0.01)
    (ack,) = b.outgoing
    assert ack[1] == 1  # a SACK extension
    p = decode(ack)
    assert p.sack is not None
    assert sacked(p.ack_nr, p.sack) == [2 + 1]
    assert b.received == []
    b.receive(packets[0], 0.02)
    assert b"".join(b.received) == decode(packets[0]).payload + decode(packets[1]).payload
    assert c.dropped == 0


def test_three_duplicate_acks_resend_the_oldest_packet_and_halve_the_window() -> None:
    a, b, c = connected_pair()
    a.receive(b.outgoing.pop(), 0.0)
    a.ledbat.cwnd = 20 * 1400
    a.write(b"y" * 1400 * 10)
    a.flush(0.0)
    packets = list(a.outgoing)
    a.outgoing.clear()
    cwnd = a.ledbat.cwnd
    for p in packets[1:4]:  # the first one is lost
        b.receive(p, 0.01)
        b.flush(0.01)
    for ack in b.outgoing:
        a.receive(ack, 0.02)
    b.outgoing.clear()
    assert c.fast_retransmits >= 1
    assert a.outgoing
    assert decode(a.outgoing[0]).seq_nr == decode(packets[0]).seq_nr
    assert a.ledbat.cwnd <= cwnd / 2


def test_retransmission_timeout_backs_off_and_gives_up() -> None:
    a, b, c = connected_pair()
    a.receive(b.outgoing.pop(), 0.0)
    a.write(b"z" * 3000)
    a.flush(0.0)
    a.outgoing.clear()
    gaps = []
    last = 0.0
    while not a.closed:
        deadline = a.next_deadline()
        assert deadline is not None
        gaps.append(deadline - last)
        last = deadline
        a.tick(deadline)
        a.outgoing.clear()
    assert a.close_reason == "timed out"
    assert c.timeouts == MAX_TIMEOUTS + 1
    # The SYN's RTT sample (0 s) puts the timeout at its 500 ms floor; each timeout doubles it.
    assert gaps == pytest.approx([0.5 * 2**i for i in range(MAX_TIMEOUTS + 1)])


def test_peer_that_vanishes_times_out_in_simulation() -> None:
    a, b, _ = connected_pair()
    net = SimNet(a, b)
    net.run_until(lambda: a.connected)
    net.ab.loss = 1.0
    net.ba.loss = 1.0
    a.write(b"q" * 10_000)
    a.flush(net.now)
    net.run_until(lambda: a.closed, limit_s=10_000)
    assert a.close_reason == "timed out"


# ---------------------------------------------------------------------- hostile input


def test_hostile_packets_are_counted_and_dropped() -> None:
    a, b, c = connected_pair()
    a.receive(b.outgoing.pop(), 0.0)
    before = (b.ack_nr, b.acked_seq, b.state)
    for raw in [
        b"",
        b"\x21" * 10,
        bytes([0x22]) + bytes(19),
        bytes([0x71]) + bytes(19),
        hdr(2, 1001, 1, 1, ext=1) + bytes([0, 40]),
        hdr(2, 4242, 1, 1),  # another connection id
        hdr(2, 1001, 2, 30000 + 50),  # acknowledges data never sent
        hdr(4, 999, 1, 0),  # a SYN that is not the one we accepted
    ]:
        b.receive(raw, 0.1)
    assert (b.ack_nr, b.acked_seq, b.state) == before
    assert c.malformed == 3
    assert c.bad_version == 1
    assert c.bad_type == 1
    assert c.bad_connection == 1
    assert c.ack_unsent == 1
    assert c.unexpected == 1


def test_data_too_far_ahead_or_over_the_window_is_dropped() -> None:
    _, b, c = connected_pair(recv_buffer=4000)
    b.receive(hdr(0, 1001, 2 + 5000, 30000 - 1) + b"a", 0.1)
    assert c.out_of_window == 1
    b.receive(hdr(0, 1001, 2, 30000 - 1) + b"b" * 3000, 0.1)
    b.set_app_buffered(3000, 0.1)  # the application has not read it yet
    b.receive(hdr(0, 1001, 4, 30000 - 1) + b"c" * 1500, 0.1)
    assert c.over_window == 1


def test_reset_closes() -> None:
    a, b, c = connected_pair()
    a.receive(b.outgoing.pop(), 0.0)
    b.reset(0.1)
    a.receive(b.outgoing.pop(), 0.1)
    assert a.closed
    assert a.close_reason == "connection reset by peer"
    assert b.closed
    assert c.resets_sent == 1
    assert c.resets_received == 1


def test_a_window_that_stays_closed_ends_the_connection() -> None:
    a, b, c = connected_pair()
    state = decode(b.outgoing.pop())
    a.receive(
        encode(
            Packet(
                PacketType.STATE, state.connection_id, seq_nr=state.seq_nr, ack_nr=state.ack_nr, wnd_size=0
            )
        ),
        0.0,
    )
    a.write(b"w" * 20_000)
    a.flush(0.0)
    assert a.outgoing == []  # nothing goes into a closed window
    now = 0.0
    while not a.closed:
        deadline = a.next_deadline()
        assert deadline is not None
        now = deadline
        a.tick(now)
        for d in a.outgoing:  # the peer acknowledges each probe, window still 0
            p = decode(d)
            a.receive(
                encode(Packet(PacketType.STATE, 1000, seq_nr=state.seq_nr, ack_nr=p.seq_nr, wnd_size=0)), now
            )
        a.outgoing.clear()
        a.flush(now)
        assert a.outgoing == []
    assert c.zero_window_timeouts == 1


# ---------------------------------------------------------------------- windows


def test_advertised_window_shrinks_while_the_application_is_slow() -> None:
    a, b, _ = connected_pair(recv_buffer=100_000)
    a.receive(b.outgoing.pop(), 0.0)
    b.set_app_buffered(60_000, 0.0)
    b.receive(hdr(0, 1001, 2, 30000 - 1) + b"d" * 100, 0.0)
    b.flush(0.0)
    assert decode(b.outgoing.pop()).wnd_size == 100_000 - 60_000
    b.set_app_buffered(99_999, 0.0)
    b.set_app_buffered(0, 0.0)  # opening the window tells the peer at once
    assert decode(b.outgoing.pop()).wnd_size == 100_000


def test_window_shrinks_when_delay_rises_above_target() -> None:
    a, b, _ = connected_pair()
    a.receive(b.outgoing.pop(), 0.0)
    a.ledbat.slow_start = False
    a.ledbat.cwnd = 50_000.0
    base = 1_000_000
    now = 0.0
    a.write(b"e" * 200_000)
    a.flush(now)
    grown: list[float] = []
    for i, delay_us in enumerate([0] * 20 + [300_000] * 20):
        now += 0.01
        packets = [decode(d) for d in a.outgoing]
        a.outgoing.clear()
        if not packets:
            a.write(b"e" * 50_000)
            a.flush(now)
            packets = [decode(d) for d in a.outgoing]
            a.outgoing.clear()
        ack = packets[0].seq_nr
        a.receive(hdr(2, 1000, 30000, ack, tsd=base + delay_us), now)
        a.flush(now)
        grown.append(a.ledbat.cwnd)
        if i == 19:
            peak = a.ledbat.cwnd
    assert peak > 50_000
    assert grown[-1] < peak


def test_packet_size_probes_up_to_the_ceiling() -> None:
    a, b, _ = connected_pair(mtu_ceiling=1472)
    net = SimNet(a, b)
    net.run_until(lambda: a.connected)
    net.send(a, b"m" * 300_000)
    net.run_until(lambda: len(net.got_b) == 300_000)
    assert 1472 - 16 <= a.packet_size <= 1472
    assert a.packet_size > INITIAL_PACKET


def test_lost_probes_bring_the_ceiling_down() -> None:
    a, b, c = connected_pair(mtu_ceiling=1472)
    net = SimNet(a, b)
    net.run_until(lambda: a.connected)
    real_arrivals = net.ab.arrivals
    seen: set[int] = set()

    def small_path(rng: object, size: int, now: float) -> list[float]:
        # A path MTU below the probe: the first copy (sent with DF) is lost, a resend gets
        # through fragmented (as the kernel does once it learnt the path MTU).
        if size > INITIAL_PACKET and size not in seen:
            seen.add(size)
            return []
        return real_arrivals(net.rng, size, now)

    net.ab.arrivals = small_path  # type: ignore[method-assign]
    net.send(a, b"n" * 200_000)
    net.run_until(lambda: len(net.got_b) == 200_000)
    assert bytes(net.got_b) == b"n" * 200_000
    # Every probe above the path's limit was lost, so the size stays at the start value.
    assert c.mtu_probes_lost >= 1
    assert a.packet_size == INITIAL_PACKET


def test_a_refused_datagram_lowers_the_packet_size_and_probes_climb_back() -> None:
    """The socket refuses (EMSGSIZE) what is over a 1,280-byte link; the refused datagram still
    arrives (the engine sends it fragmented), later ones fit, and probes find the limit."""
    limit = 1280 - 28
    a, b, c = connected_pair(mtu_ceiling=1472)
    net = SimNet(a, b)
    net.run_until(lambda: a.connected)
    refused: list[int] = []

    def collect_refusing() -> None:
        for d in a.outgoing:
            if len(d) > limit:
                refused.append(len(d))
                a.packet_too_big(d)
        plain_collect()

    plain_collect = net._collect
    net._collect = collect_refusing  # type: ignore[method-assign]
    data = bytes((i * 11) & 0xFF for i in range(400_000))
    net.send(a, data)
    net.run_until(lambda: len(net.got_b) >= len(data))
    assert bytes(net.got_b) == data
    assert c.mtu_too_big == len(refused)
    # Once the probes are done, everything new fits under the limit, and is close to it.
    assert limit - 16 <= a.packet_size <= limit
    assert len(refused) <= 8  # probes above the limit, the packets of the first window


def test_packet_too_big_for_the_smallest_path_changes_nothing() -> None:
    a, _, c = connected_pair(mtu_ceiling=1472)
    a.packet_too_big(bytes(MIN_PACKET))
    assert a.packet_size == INITIAL_PACKET
    assert c.mtu_too_big == 0


def test_lossy_link_delivers_intact() -> None:
    a, b, _ = connected_pair()
    net = SimNet(a, b, ab=Link(loss=0.05, jitter_s=0.01), ba=Link(loss=0.05), seed=3)
    net.run_until(lambda: a.connected)
    data = bytes((i * 7) & 0xFF for i in range(500_000))
    net.send(a, data)
    net.run_until(lambda: len(net.got_b) >= len(data))
    assert bytes(net.got_b) == data
    assert HEADER_SIZE == 20


def test_delay_history_base_wraps_around_32_bits_and_ages_out() -> None:
    h = DelayHistory()
    top = 2**32 - 1000
    assert h.add(top, 0.0) == 0
    # 2,000 µs later modulo 2**32: above the base, not below it.
    assert h.add((top + 2000) & 0xFFFFFFFF, 1.0) == 0  # the lowest of the last three
    assert h.add((top + 3000) & 0xFFFFFFFF, 2.0) == 0
    assert h.add((top + 5000) & 0xFFFFFFFF, 3.0) == 2000
    assert h.base_us == top
    # Two minutes on, the old minimum has aged out of the base.
    h.add(top + 500, 61.0)
    h.add(top + 500, 122.0)
    assert h.base_us == top + 500
