"""uTP, the Micro Transport Protocol (BEP 29), sans-IO.

* :mod:`.packet`: the header, the extension chain and the selective ACK bitmask.
* :mod:`.congestion`: RTT and retransmission timeout, one-way delay history, LEDBAT.
* :mod:`.connection`: one connection's state machine (:class:`UtpConnection`).
* :mod:`.counters`: what was dropped and why (:class:`UtpCounters`).

The socket, the connection table and the stream the peer runs over live in
:mod:`torrent.engine.utp_socket` and :mod:`torrent.engine.utp_stream` (see docs/ARCHITECTURE.md).
"""

from torrent.proto.utp.connection import (
    INITIAL_PACKET,
    MAX_PACKET_V4,
    MAX_PACKET_V6,
    MIN_PACKET,
    State,
    UtpConnection,
)
from torrent.proto.utp.counters import UtpCounters, UtpStats
from torrent.proto.utp.packet import (
    HEADER,
    HEADER_SIZE,
    VERSION,
    MalformedPacket,
    Packet,
    PacketType,
    decode,
    encode,
    sack_bitmask,
    sacked,
)

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "INITIAL_PACKET",
    "MAX_PACKET_V4",
    "MAX_PACKET_V6",
    "MIN_PACKET",
    "VERSION",
    "MalformedPacket",
    "Packet",
    "PacketType",
    "State",
    "UtpConnection",
    "UtpCounters",
    "UtpStats",
    "decode",
    "encode",
    "sack_bitmask",
    "sacked",
]
