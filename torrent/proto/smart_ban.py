"""Smart ban: find who sent the bad blocks of a piece that failed its hash check.

When a piece fails, every peer that sent one of its blocks is a suspect; banning them
all would punish the honest ones. Instead (libtorrent's ``smart_ban`` plugin), remember
each block's SHA-1 and sender. When the piece later passes, compare the good copy block
by block: a peer whose block differed from the verified data lied, and only it is banned.

Pure: bytes in, peer keys out. Blocks are ``BLOCK_SIZE`` long except the last of a
piece. Memory: one 20-byte digest per suspected block, dropped when its piece passes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping
from typing import Generic, TypeVar

from torrent.types import BLOCK_SIZE

__all__ = ["SmartBan"]

K = TypeVar("K", bound=Hashable)


class SmartBan(Generic[K]):
    """Suspects of failed pieces, and the verdict once a good copy arrives.

    Rules:

    1. :meth:`on_piece_failed` records, per block of the failed copy, who sent it and
       the digest of what they sent. A block sent again by another peer in a later
       failed copy adds a second suspect; the same peer's later copy replaces its first.
    2. :meth:`on_piece_passed` returns the suspects whose digest differs from the good
       copy's block at the same offset, and forgets the piece's suspects.
    """

    def __init__(self) -> None:
        # piece -> offset -> sender -> SHA-1 of what it sent
        self._suspects: dict[int, dict[int, dict[K, bytes]]] = {}

    def __len__(self) -> int:
        """Pieces with suspects."""
        return len(self._suspects)

    def on_piece_failed(
        self, piece: int, data: bytes | bytearray | memoryview, senders: Mapping[int, K]
    ) -> None:
        """Remember the blocks of a copy of ``piece`` that failed its hash check.

        Args:
            data: the whole failed copy.
            senders: block offset -> who sent that block.
        """
        blocks = self._suspects.setdefault(piece, {})
        view = memoryview(data)
        for offset, who in senders.items():
            digest = hashlib.sha1(view[offset : offset + BLOCK_SIZE]).digest()
            blocks.setdefault(offset, {})[who] = digest

    def on_piece_passed(self, piece: int, data: bytes | bytearray | memoryview) -> list[K]:
        """The verified copy of ``piece``: returns who sent blocks that differ from it.

        Returns:
            Each liar once, in the order their blocks were first recorded.
        """
        blocks = self._suspects.pop(piece, None)
        if not blocks:
            return []
        view = memoryview(data)
        liars: dict[K, None] = {}
        for offset, sent in blocks.items():
            good = hashlib.sha1(view[offset : offset + BLOCK_SIZE]).digest()
            for who, digest in sent.items():
                if digest != good:
                    liars[who] = None
        return list(liars)

    def forget(self, piece: int) -> None:
        """Drop the suspects of ``piece`` (e.g. it is no longer wanted)."""
        self._suspects.pop(piece, None)
