"""Strong names for the values that travel between layers (BEP 3 vocabulary).

``InfoHash``, ``PeerId`` and ``PieceIndex`` are ``typing.NewType`` s to the type checker.
At run time each is a function that returns its argument (what a NewType does), so that
importing this module (``pytorrent create`` does, before it starts hashing) does not
import ``typing``.
"""

from __future__ import annotations

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import NewType

    #: SHA-1 of the bencoded ``info`` dict: 20 raw bytes.
    InfoHash = NewType("InfoHash", bytes)
    #: A peer's self-chosen 20-byte id.
    PeerId = NewType("PeerId", bytes)
    #: Zero-based index of a piece in the torrent.
    PieceIndex = NewType("PieceIndex", int)
else:

    def InfoHash(value):
        """SHA-1 of the bencoded ``info`` dict: 20 raw bytes."""
        return value

    def PeerId(value):
        """A peer's self-chosen 20-byte id."""
        return value

    def PieceIndex(value):
        """Zero-based index of a piece in the torrent."""
        return value


#: The request unit of the peer wire protocol (BEP 3 says 2^14 is what clients use).
BLOCK_SIZE = 16 * 1024
