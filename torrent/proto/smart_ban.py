"""Smart ban: find who sent the bad blocks of a piece that failed its hash check.

When a piece fails, every peer that sent one of its blocks is a suspect; banning them
all would punish the honest ones. Instead (libtorrent's ``smart_ban`` plugin), remember
each block's SHA-1 and sender. When the piece later passes, compare the good copy block
by block: a peer whose block differed from the verified data lied, and only it is banned.

Pure: bytes in, peer keys out. Blocks are ``BLOCK_SIZE`` long except the last of a
piece. Memory: one 20-byte digest per suspected block, dropped when its piece passes.

v2 pieces can do better (:class:`LeafBlame`): the merkle tree under a piece's node has
a hash per block, so once those leaves are known the bad blocks are found at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping, Sequence
from typing import Generic, TypeVar

from torrent.proto import merkle
from torrent.types import BLOCK_SIZE

__all__ = ["LeafBlame", "SmartBan"]

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


class LeafBlame(Generic[K]):
    """BEP 52: who sent the bad blocks of a failed v2 piece, from the piece's leaf hashes.

    A v2 piece's node (from the piece layer, or a small file's root) is the merkle root
    of its blocks' SHA-256 hashes. When a piece fails, the ``width`` leaf hashes under
    that node are asked of a peer (a ``hash request`` for base layer 0); an answer is
    checked against the node we already trust, so any peer can answer it, and then
    every block is checked against its own leaf. The senders of the blocks that differ
    are known at once and exactly, without waiting for a good copy of the piece (what
    :class:`SmartBan` needs for v1).

    Memory: one 32-byte digest per block of each failed piece waiting for its leaves,
    for at most ``max_pending`` pieces (the oldest is forgotten first).
    """

    def __init__(self, max_pending: int = 64) -> None:
        self.max_pending = max_pending
        # piece -> (its node, leaves under it, offset -> (sender, SHA-256 of what it sent))
        self._pending: dict[int, tuple[bytes, int, dict[int, tuple[K, bytes]]]] = {}

    def __len__(self) -> int:
        """Pieces waiting for their leaf hashes."""
        return len(self._pending)

    def __contains__(self, piece: object) -> bool:
        return piece in self._pending

    def on_piece_failed(
        self,
        piece: int,
        data: bytes | bytearray | memoryview,
        senders: Mapping[int, K],
        node: bytes,
        width: int,
    ) -> list[int]:
        """Remember a failed copy of ``piece`` until its leaves arrive.

        Args:
            data: the piece's bytes of its file (without the padding after a file's end).
            senders: block offset -> who sent that block.
            node: the piece's trusted merkle node; ``width``: the leaves under it (a
                power of two; the ones past the file's end are zero hashes).

        Returns:
            The pieces forgotten to stay within ``max_pending``.
        """
        view = memoryview(data)
        sha256 = hashlib.sha256
        blocks = {
            offset: (who, sha256(view[offset : offset + BLOCK_SIZE]).digest())
            for offset, who in senders.items()
            if offset < len(view)
        }
        self._pending.pop(piece, None)
        self._pending[piece] = (node, width, blocks)
        dropped: list[int] = []
        while len(self._pending) > self.max_pending:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            dropped.append(oldest)
        return dropped

    def on_leaves(self, piece: int, leaves: Sequence[bytes]) -> list[tuple[int, K]] | None:
        """The leaf hashes under ``piece``'s node, from some peer.

        Returns:
            ``(offset, sender)`` of each block that does not match its leaf (empty when
            every block matched: the piece failed for another reason, e.g. a hybrid's
            SHA-1), and the piece is forgotten; None when the leaves do not prove the
            node (the answer is worthless; the piece keeps waiting for another).
        """
        entry = self._pending.get(piece)
        if entry is None:
            return []
        node, width, blocks = entry
        if len(leaves) != width or merkle.root(leaves, width) != node:
            return None
        del self._pending[piece]
        return [
            (offset, who)
            for offset, (who, digest) in sorted(blocks.items())
            if leaves[offset // BLOCK_SIZE] != digest
        ]

    def forget(self, piece: int) -> None:
        self._pending.pop(piece, None)
