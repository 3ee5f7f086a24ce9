"""Strong names for the values that travel between layers (BEP 3 vocabulary)."""

from __future__ import annotations

from typing import NewType

#: SHA-1 of the bencoded ``info`` dict: 20 raw bytes.
InfoHash = NewType("InfoHash", bytes)
#: A peer's self-chosen 20-byte id.
PeerId = NewType("PeerId", bytes)
#: Zero-based index of a piece in the torrent.
PieceIndex = NewType("PieceIndex", int)

#: The request unit of the peer wire protocol (BEP 3 says 2^14 is what clients use).
BLOCK_SIZE = 16 * 1024
