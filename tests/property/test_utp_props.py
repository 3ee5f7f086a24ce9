"""Hypothesis over uTP: transfers across a hostile simulated network, and random datagrams.

* Any mix of loss (0-10 %), duplication, jitter (which reorders), delay and a bandwidth limit:
  several MiB arrive intact and in order, both directions at once, and both sides close.
* Random bytes, and random well-formed headers, fed to a live connection never raise and
  never move it backwards; what is dropped is counted.
"""

from __future__ import annotations

import hashlib
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.utp_helpers import Link, SimNet, connected_pair
from torrent.proto.utp import PacketType, decode, encode, sack_bitmask, sacked
from torrent.proto.utp.packet import MalformedPacket

SLOW = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

LINKS = st.builds(
    Link,
    loss=st.floats(0.0, 0.10),
    duplicate=st.floats(0.0, 0.05),
    delay_s=st.floats(0.001, 0.08),
    jitter_s=st.floats(0.0, 0.03),
    rate_bps=st.one_of(st.none(), st.floats(2e6, 50e6)),
)


def payload(n: int, seed: int) -> bytes:
    out = bytearray()
    block = hashlib.sha256(seed.to_bytes(8, "big")).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 32
    return bytes(out[:n])


@SLOW
@given(ab=LINKS, ba=LINKS, seed=st.integers(0, 2**32), size=st.integers(2 << 20, 4 << 20))
def test_transfer_survives_a_hostile_network(ab: Link, ba: Link, seed: int, size: int) -> None:
    a, b, _ = connected_pair()
    net = SimNet(a, b, ab=ab, ba=ba, seed=seed)
    net.run_until(lambda: a.connected, limit_s=120)
    assert a.connected, a.close_reason
    data = payload(size, seed)
    back = payload(size // 8, seed + 1)
    net.send(b, back)  # the other direction runs at the same time
    net.send(a, data)
    net.run_until(lambda: len(net.got_b) >= len(data) and len(net.got_a) >= len(back), limit_s=100_000)
    assert bytes(net.got_b) == data
    assert bytes(net.got_a) == back
    a.close(net.now)
    net.run_until(lambda: b.eof, limit_s=net.now + 600)
    b.close(net.now)
    net.run_until(lambda: a.closed and b.closed, limit_s=net.now + 600)
    assert a.closed
    assert b.closed


@FAST
@given(st.lists(st.binary(max_size=80), max_size=40))
def test_random_bytes_never_raise(datagrams: list[bytes]) -> None:
    a, b, _c = connected_pair()
    a.receive(b.outgoing.pop(), 0.0)
    for i, d in enumerate(datagrams):
        b.receive(d, 0.01 * i)
        b.flush(0.01 * i)
        b.tick(0.01 * i)
    b.received.clear()


HEADERS = st.tuples(
    st.sampled_from([0, 1, 2, 3, 4, 5, 15]),
    st.sampled_from([1000, 1001, 999, 0]),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=40),
)


@FAST
@given(st.lists(HEADERS, max_size=40))
def test_random_headers_never_raise_nor_deliver_out_of_order(
    packets: list[tuple[int, int, int, int, int, bytes]],
) -> None:
    a, b, _c = connected_pair()
    a.receive(b.outgoing.pop(), 0.0)
    for i, (typ, cid, seq, ack, wnd, body) in enumerate(packets):
        raw = struct.pack(">BBHIIIHH", (typ << 4) | 1, 0, cid, i, 0, wnd, seq, ack) + body
        before = b.ack_nr
        got_before = len(b.received)
        b.receive(raw, 0.01 * i)
        b.flush(0.01 * i)
        b.tick(0.01 * i)
        if len(b.received) > got_before:
            # Delivery only moves ack_nr forward.
            assert ((b.ack_nr - before) & 0xFFFF) < 0x8000


@FAST
@given(
    ack=st.integers(0, 0xFFFF),
    offsets=st.sets(st.integers(0, 255), max_size=60),
)
def test_sack_bitmask_round_trip(ack: int, offsets: set[int]) -> None:
    seqs = sorted((ack + 2 + o) & 0xFFFF for o in offsets)
    mask = sack_bitmask(ack, seqs)
    if not offsets:
        assert mask is None
        return
    assert mask is not None
    assert len(mask) % 4 == 0
    assert sacked(ack, mask) == [(ack + 2 + o) & 0xFFFF for o in sorted(offsets)]


@FAST
@given(st.binary(max_size=60))
def test_decode_raises_only_malformed(raw: bytes) -> None:
    try:
        p = decode(raw)
    except MalformedPacket:
        return
    assert p.type in tuple(PacketType)
    if p.sack is None and raw[1] == 0:
        assert encode(p) == raw
