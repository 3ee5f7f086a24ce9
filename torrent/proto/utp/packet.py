"""uTP packets (BEP 29): the 20-byte header, the extension chain, the selective ACK bitmask.

Layout of every packet (all integers big-endian)::

    0       4       8               16              24              32
    +-------+-------+---------------+---------------+---------------+
    | type  | ver   | extension     | connection_id                 |
    +-------+-------+---------------+---------------+---------------+
    | timestamp_microseconds                                        |
    +---------------+---------------+---------------+---------------+
    | timestamp_difference_microseconds                             |
    +---------------+---------------+---------------+---------------+
    | wnd_size                                                      |
    +---------------+---------------+---------------+---------------+
    | seq_nr                        | ack_nr                        |
    +---------------+---------------+---------------+---------------+

``extension`` names the first extension; each one is ``next type (1 byte), length (1 byte),
payload``, a chain that ends with type 0. Type 1 is the selective ACK: a bitmask (a multiple of
4 bytes; libtorrent sends any length) whose bit ``i`` (least significant bit of byte ``i // 8`` first) says that packet
``ack_nr + 2 + i`` arrived. Other extension types are skipped by their length.

Two ways in: :func:`decode` gives a :class:`Packet` (tests, the manager's first look at a SYN)
and raises :class:`MalformedPacket`; the connection's hot path unpacks :data:`HEADER` itself and
walks the chain with :func:`parse_extensions`, which returns None on a bad chain instead of
raising. :func:`encode` and :func:`sack_bitmask` build what goes out.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ACK_MASK",
    "EXT_SACK",
    "HEADER",
    "HEADER_SIZE",
    "VERSION",
    "MalformedPacket",
    "Packet",
    "PacketType",
    "decode",
    "encode",
    "parse_extensions",
    "sack_bitmask",
    "sacked",
    "seq_less",
]

#: The protocol version in the low nibble of the first byte (BEP 29).
VERSION = 1
#: type/ver, extension, connection_id, timestamp_us, timestamp_difference_us, wnd_size, seq_nr, ack_nr.
HEADER = struct.Struct(">BBHIIIHH")
HEADER_SIZE = HEADER.size  # 20
#: Sequence and ack numbers are 16 bits and wrap around.
ACK_MASK = 0xFFFF
#: Extension type of the selective ACK (BEP 29).
EXT_SACK = 1


class PacketType(enum.IntEnum):
    """The high nibble of the first byte (BEP 29 ``type``)."""

    DATA = 0  # ST_DATA: payload, consumes a sequence number
    FIN = 1  # ST_FIN: the sender's last sequence number
    STATE = 2  # ST_STATE: an ACK, no payload, no sequence number of its own
    RESET = 3  # ST_RESET: the connection is gone
    SYN = 4  # ST_SYN: opens a connection


class MalformedPacket(ValueError):
    """A datagram that is not a well-formed uTP packet (raised by :func:`decode` only)."""


@dataclass(frozen=True, slots=True)
class Packet:
    """One decoded packet (not used on the per-packet hot path of a connection)."""

    type: PacketType
    connection_id: int
    timestamp_us: int = 0
    timestamp_difference_us: int = 0
    wnd_size: int = 0
    seq_nr: int = 0
    ack_nr: int = 0
    sack: bytes | None = None
    payload: bytes = b""


def seq_less(a: int, b: int) -> bool:
    """``a`` comes before ``b`` in 16-bit sequence space (the shorter way round)."""
    return a != b and ((b - a) & ACK_MASK) < 0x8000


def parse_extensions(data: bytes | memoryview, first: int) -> tuple[int, bytes | None] | None:
    """Walk the extension chain that starts after the header.

    Args:
        data: the whole datagram.
        first: the header's ``extension`` byte.

    Returns:
        (offset of the payload, the SACK bitmask or None), or None when the chain runs past
        the datagram. BEP 29 makes a bitmask a multiple of 4 bytes, but libtorrent sends
        ``ceil(bits / 8)`` bytes: any length is taken (an empty one says nothing).
    """
    off = HEADER_SIZE
    n = len(data)
    ext = first
    sack: bytes | None = None
    while ext:
        if off + 2 > n:
            return None
        nxt = data[off]
        length = data[off + 1]
        off += 2
        if off + length > n:
            return None
        if ext == EXT_SACK and length:
            sack = bytes(data[off : off + length])
        off += length
        ext = nxt
    return off, sack


def decode(data: bytes | memoryview) -> Packet:
    """Parse one datagram.

    Raises:
        MalformedPacket: shorter than a header, another version, an unknown type, a bad
            extension chain.
    """
    if len(data) < HEADER_SIZE:
        raise MalformedPacket(f"{len(data)} bytes is shorter than a uTP header")
    tv, ext, cid, ts, tsd, wnd, seq, ack = HEADER.unpack_from(data)
    if tv & 0x0F != VERSION:
        raise MalformedPacket(f"version {tv & 0x0F}")
    if tv >> 4 > PacketType.SYN:
        raise MalformedPacket(f"unknown type {tv >> 4}")
    parsed = parse_extensions(data, ext)
    if parsed is None:
        raise MalformedPacket("bad extension chain")
    off, sack = parsed
    return Packet(PacketType(tv >> 4), cid, ts, tsd, wnd, seq, ack, sack, bytes(data[off:]))


def encode(p: Packet) -> bytes:
    """The datagram of ``p`` (with its SACK extension when ``p.sack`` is set)."""
    if p.sack is not None:
        if not p.sack or len(p.sack) % 4 or len(p.sack) > 255:
            raise ValueError("a SACK bitmask is 4 to 252 bytes, a multiple of 4")
        head = HEADER.pack(
            (p.type << 4) | VERSION, EXT_SACK, p.connection_id, p.timestamp_us,
            p.timestamp_difference_us, p.wnd_size, p.seq_nr, p.ack_nr,
        )  # fmt: skip
        return head + bytes((0, len(p.sack))) + p.sack + p.payload
    head = HEADER.pack(
        (p.type << 4) | VERSION, 0, p.connection_id, p.timestamp_us,
        p.timestamp_difference_us, p.wnd_size, p.seq_nr, p.ack_nr,
    )  # fmt: skip
    return head + p.payload


def sack_bitmask(ack_nr: int, received: Iterable[int], max_bytes: int = 32) -> bytes | None:
    """The SACK bitmask for packets ``received`` beyond ``ack_nr + 1`` (None when none fit).

    Bit ``i`` stands for ``ack_nr + 2 + i``; the mask is as short as the highest bit allows
    (rounded up to 4 bytes) and at most ``max_bytes``.
    """
    bits = 0
    top = -1
    limit = max_bytes * 8
    for seq in received:
        i = (seq - ack_nr - 2) & ACK_MASK
        if i < limit:
            bits |= 1 << i
            top = max(top, i)
    if top < 0:
        return None
    nbytes = (top // 32 + 1) * 4
    return bits.to_bytes(nbytes, "little")


def sacked(ack_nr: int, mask: bytes) -> list[int]:
    """The sequence numbers a SACK bitmask says arrived, in order."""
    bits = int.from_bytes(mask, "little")
    out = []
    i = 0
    while bits:
        if bits & 1:
            out.append((ack_nr + 2 + i) & ACK_MASK)
        bits >>= 1
        i += 1
    return out
