"""Size limits of the peer wire: the frame-length table and the caps on what a peer may make us keep.

Every message's length (the bytes after its 4-byte prefix: id + payload) is checked against
``frame_limits(...)[message_id]``, an inclusive ``(min, max)``, as soon as its first five bytes
are known, so an oversized message is refused before it is buffered (h11's
``max_incomplete_event_size`` idea, per message id). Fixed-size messages have ``min == max``;
the bitfield's size follows from the piece count; unknown ids get the largest legal frame so
they can be skipped.
"""

from __future__ import annotations

from typing import Final

from torrent.proto.wire.events import MessageId
from torrent.types import BLOCK_SIZE

__all__ = [
    "DEFAULT_MAX_PEER_REQUESTS",
    "HASH_REQUEST_SIZE",
    "MAX_EXTENDED_PAYLOAD",
    "MAX_HASHES_PER_MESSAGE",
    "MAX_HASH_REQUEST_LENGTH",
    "MAX_MERKLE_LAYER",
    "MAX_UNKNOWN_BITFIELD",
    "MAX_UNKNOWN_HAVES",
    "bitfield_limit",
    "frame_limits",
]

#: Largest extended-message payload we accept or send (after the one-byte extended id).
MAX_EXTENDED_PAYLOAD: Final = 1 << 20
#: Largest bitfield accepted before the geometry is known (about a million pieces: more than the
#: piece hashes a 16 MiB info dict can hold).
MAX_UNKNOWN_BITFIELD: Final = 1 << 17
#: Haves remembered before the geometry is known; a peer sending more is dropped.
MAX_UNKNOWN_HAVES: Final = 1 << 16
#: Default cap on requests a peer may have pending with us (libtorrent's default request queue).
DEFAULT_MAX_PEER_REQUESTS: Final = 500
#: BEP 52 hash request / hash reject: id, a 32-byte root, four 32-bit fields.
HASH_REQUEST_SIZE: Final = 1 + 32 + 16
#: Most nodes one hash request may ask for (BEP 52: "SHOULD NOT be greater than 512"); we
#: answer larger ones with a hash reject.
MAX_HASH_REQUEST_LENGTH: Final = 512
#: Highest layer (and most proof layers) that can exist: a file of 2**30 - 1 blocks (the
#: largest libtorrent loads) has a tree 30 layers tall; 64 is a generous bound.
MAX_MERKLE_LAYER: Final = 64
#: Most hashes a ``hashes`` message may carry: a full run plus one uncle per layer.
MAX_HASHES_PER_MESSAGE: Final = MAX_HASH_REQUEST_LENGTH + MAX_MERKLE_LAYER

_ONE_BYTE: Final = (
    MessageId.CHOKE,
    MessageId.UNCHOKE,
    MessageId.INTERESTED,
    MessageId.NOT_INTERESTED,
    MessageId.HAVE_ALL,
    MessageId.HAVE_NONE,
)
_INDEX: Final = (MessageId.HAVE, MessageId.SUGGEST_PIECE, MessageId.ALLOWED_FAST)  # id + u32
_TRIPLE: Final = (MessageId.REQUEST, MessageId.CANCEL, MessageId.REJECT_REQUEST)  # id + 3 x u32


def bitfield_limit(num_pieces: int | None) -> tuple[int, int]:
    """Allowed length of a bitfield message: exact for a known piece count, bounded before it.

    Args:
        num_pieces: the torrent's piece count, or None while it is unknown (a magnet link).
    """
    if num_pieces is None:
        return (1, 1 + MAX_UNKNOWN_BITFIELD)
    n = 1 + (num_pieces + 7) // 8
    return (n, n)


def frame_limits(num_pieces: int | None) -> list[tuple[int, int]]:
    """The ``(min, max)`` length of each of the 256 message ids, for one connection.

    Args:
        num_pieces: the torrent's piece count, or None while it is unknown (a magnet link).

    Returns:
        A fresh, mutable list indexed by message id (the connection updates the bitfield entry
        with :func:`bitfield_limit` once the piece count is known).
    """
    bitfield = bitfield_limit(num_pieces)
    max_frame = max(9 + BLOCK_SIZE, bitfield[1], 2 + MAX_EXTENDED_PAYLOAD)
    limits = [(1, max_frame)] * 256
    for msg_id in _ONE_BYTE:
        limits[msg_id] = (1, 1)
    for msg_id in _INDEX:
        limits[msg_id] = (5, 5)
    for msg_id in _TRIPLE:
        limits[msg_id] = (13, 13)
    limits[MessageId.BITFIELD] = bitfield
    limits[MessageId.PIECE] = (10, 9 + BLOCK_SIZE)  # a block of 1..16 KiB (BEP 3)
    limits[MessageId.PORT] = (3, 3)  # BEP 5: a 16-bit port
    limits[MessageId.EXTENDED] = (2, 2 + MAX_EXTENDED_PAYLOAD)  # BEP 10: extended id + payload
    limits[MessageId.HASH_REQUEST] = (HASH_REQUEST_SIZE, HASH_REQUEST_SIZE)  # BEP 52
    limits[MessageId.HASH_REJECT] = (HASH_REQUEST_SIZE, HASH_REQUEST_SIZE)
    limits[MessageId.HASHES] = (HASH_REQUEST_SIZE, HASH_REQUEST_SIZE + 32 * MAX_HASHES_PER_MESSAGE)
    return limits
