"""Answering BEP 52 hash requests for one v2 or hybrid torrent (messages 21-23).

A peer's ``hash request`` for a run of a file's piece layer (or any layer above it) is
answered from the tree built on the torrent's piece layers, with the uncles it asked
for (:func:`torrent.proto.merkle.proof`). A run of a layer below it (down to the 16 KiB
leaves, as a peer blaming a failed piece or proving a piece whose layer it lacks asks)
is answered for pieces we have: their data is read from disk and hashed off the event
loop, each piece's tree checked against its node before it is used
(:func:`torrent.proto.merkle.proof_below`), and kept in a small cache. Those answers are
bounded: at most :data:`MAX_LEAF_READ` bytes per request, :data:`LEAF_JOBS_PER_PEER`
requests being computed per peer and :data:`LEAF_JOBS` in all. Hash requests are
answered at most :data:`MAX_ANSWERS_PER_TICK` times a second per peer. A request we
cannot answer (an unknown root, a layer we have not learned, a piece we lack, over a
bound) gets a ``hash reject``, as BEP 52 requires an answer either way.

The asking side (fetching layers, proofs, blame) is
:class:`torrent.engine.hash_exchange.HashExchange`, which hands requests here.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from torrent.errors import StorageError
from torrent.proto import merkle, wire
from torrent.proto.metainfo import Info
from torrent.types import BLOCK_SIZE

if TYPE_CHECKING:
    from torrent.engine.peer import Peer

__all__ = ["HashServer"]

log = logging.getLogger(__name__)

#: Hash requests answered per peer per second (the session's tick); more get a hash
#: reject. One request of 49 bytes can ask for 18 KiB of hashes: without a bound a peer
#: could make us send 370 times what it sends.
MAX_ANSWERS_PER_TICK = 64
#: File data one request below the piece layer may make us read and hash (a run of 512
#: leaves covers 8 MiB); a larger one gets a hash reject.
MAX_LEAF_READ = 4 * 1024 * 1024
#: Requests below the piece layer being computed at once: per peer, and in all.
LEAF_JOBS_PER_PEER = 2
LEAF_JOBS = 8
#: Pieces whose block trees are kept for the next request (a blaming peer asks several
#: times for one piece).
LEAF_CACHE_PIECES = 64

#: Reads ``length`` bytes from the start of piece ``index`` on disk.
ReadPiece = Callable[[int, int], Awaitable["bytes | memoryview"]]
#: Runs a coroutine in the owner's task group; False when refused (stopping).
Spawn = Callable[[Coroutine[Any, Any, None]], bool]


class HashServer:
    """Answers one torrent's hash requests; see the module docstring.

    Args:
        info: the torrent (its piece layers, which may grow while it runs).
        have: ``have(piece)``, whether a piece is verified;
        read: ``read(piece, length)``, its first bytes from disk;
        spawn: runs a coroutine in the owner's task group. Without all three, requests
            below the piece layer get a hash reject.
    """

    def __init__(
        self,
        info: Info,
        *,
        have: Callable[[int], bool] | None = None,
        read: ReadPiece | None = None,
        spawn: Spawn | None = None,
    ) -> None:
        self.info = info
        self._have = have
        self._read = read
        self._spawn = spawn
        self._files: dict[bytes, int] = {}  # root -> the file's first piece
        self._trees: dict[bytes, merkle.MerkleTree] = {}
        self._piece_trees: OrderedDict[tuple[bytes, int], merkle.MerkleTree] = OrderedDict()
        self._leaf_jobs: dict[object, int] = {}  # peer address -> requests being computed
        self._answered: dict[object, int] = {}
        #: Requests below the piece layer answered (with ``hashes``) so far.
        self.leaf_answers = 0

    def tick(self) -> None:
        """Once a second: the per-peer answer budget starts over."""
        self._answered.clear()

    def _tree(self, root: bytes) -> merkle.MerkleTree | None:
        tree = self._trees.get(root)
        if tree is not None:
            return tree
        info = self.info
        f = next((f for f in info.files if f.pieces_root == root and not f.padding), None)
        if f is None:
            return None
        blocks = -(-f.length // BLOCK_SIZE)
        self._files[root] = f.offset // info.piece_length
        if f.length <= info.piece_length:
            # One piece: only the root is known (its blocks' hashes are not kept).
            num_leaves = merkle.next_pow2(blocks)
            tree = merkle.MerkleTree([root], num_leaves, merkle.log2(num_leaves))
        else:
            layer = info.piece_layers.get(root)
            if layer is None:
                return None
            per_piece = info.piece_length // BLOCK_SIZE
            nodes = [layer[i : i + merkle.HASH_SIZE] for i in range(0, len(layer), merkle.HASH_SIZE)]
            tree = merkle.MerkleTree(nodes, merkle.next_pow2(len(nodes)) * per_piece, merkle.log2(per_piece))
        self._trees[root] = tree
        return tree

    def on_request(self, peer: Peer, ev: wire.HashRequest) -> None:
        """Answer ``peer``'s request with ``hashes`` (now, or once the pieces below the
        piece layer are hashed) or a ``hash reject``."""
        tree = self._tree(ev.pieces_root)
        answered = self._answered.get(peer.addr, 0)
        self._answered[peer.addr] = answered + 1
        try:
            if tree is None or answered >= MAX_ANSWERS_PER_TICK:
                raise LookupError("unknown root, or over the answer budget")
            if ev.base_layer < tree.base:
                self._serve_below(peer, ev, tree)
                return
            hashes = merkle.proof(tree, ev.base_layer, ev.index, ev.length, ev.proof_layers)
        except (LookupError, ValueError):
            _reject(peer, ev)
            return
        _answer(peer, ev, hashes)

    def _serve_below(self, peer: Peer, ev: wire.HashRequest, tree: merkle.MerkleTree) -> None:
        """A run below the piece layer: answered now from cached piece trees, or once the
        missing ones are read and hashed.

        Raises:
            LookupError: we cannot serve it (no disk, a piece we lack, over a bound).
            ValueError: the run breaks BEP 52's rules.
        """
        have, spawn = self._have, self._spawn
        if have is None or spawn is None:
            raise LookupError("no piece data to hash")
        under = merkle.pieces_under(tree, ev.base_layer, ev.index, ev.length)
        first = self._files[ev.pieces_root]
        if not under or len(under) * self.info.piece_length > MAX_LEAF_READ:
            raise LookupError("over the read bound")
        if not all(have(first + k) for k in under):
            raise LookupError("a piece we do not have")
        cached = {k: t for k in under if (t := self._cached_piece_tree(ev.pieces_root, k)) is not None}
        if len(cached) == len(under):
            _answer(
                peer,
                ev,
                merkle.proof_below(tree, cached, ev.base_layer, ev.index, ev.length, ev.proof_layers),
            )
            self.leaf_answers += 1
            return
        jobs = self._leaf_jobs.get(peer.addr, 0)
        if jobs >= LEAF_JOBS_PER_PEER or sum(self._leaf_jobs.values()) >= LEAF_JOBS:
            raise LookupError("too many requests being computed")
        self._leaf_jobs[peer.addr] = jobs + 1
        if not spawn(self._serve_later(peer, ev, tree, under, cached)):
            self._leaf_done(peer.addr)
            raise LookupError("stopping")

    def _cached_piece_tree(self, root: bytes, k: int) -> merkle.MerkleTree | None:
        tree = self._piece_trees.get((root, k))
        if tree is not None:
            self._piece_trees.move_to_end((root, k))
        return tree

    def _leaf_done(self, addr: object) -> None:
        left = self._leaf_jobs.pop(addr, 1) - 1
        if left > 0:
            self._leaf_jobs[addr] = left

    async def _serve_later(
        self,
        peer: Peer,
        ev: wire.HashRequest,
        tree: merkle.MerkleTree,
        under: range,
        trees: dict[int, merkle.MerkleTree],
    ) -> None:
        try:
            for k in under:
                if k not in trees:
                    piece_tree = await self._piece_tree(ev.pieces_root, tree, k)
                    if piece_tree is None:
                        _reject(peer, ev)
                        return
                    trees[k] = piece_tree
            hashes = merkle.proof_below(tree, trees, ev.base_layer, ev.index, ev.length, ev.proof_layers)
        except (StorageError, LookupError, ValueError) as exc:
            log.debug("hash request %s below the piece layer: %s", ev, exc)
            _reject(peer, ev)
        else:
            _answer(peer, ev, hashes)
            self.leaf_answers += 1
        finally:
            self._leaf_done(peer.addr)

    async def _piece_tree(self, root: bytes, tree: merkle.MerkleTree, k: int) -> merkle.MerkleTree | None:
        """The tree of blocks under piece ``k`` of the file, from its data on disk; None
        when that data does not hash to the piece's node (changed on disk since)."""
        assert self._read is not None
        index = self._files[root] + k
        data = await self._read(index, self.info.v2_piece_data_length(index))
        leaves = 1 << tree.base
        piece_tree = await asyncio.to_thread(lambda: merkle.MerkleTree(merkle.block_hashes(data), leaves))
        if piece_tree.root != tree.node(tree.base, k):
            log.warning("piece %d does not match its hash on disk: no leaf hashes served for it", index)
            return None
        self._piece_trees[(root, k)] = piece_tree
        while len(self._piece_trees) > LEAF_CACHE_PIECES:
            self._piece_trees.popitem(last=False)
        return piece_tree


def _answer(peer: Peer, ev: wire.HashRequest, hashes: list[bytes]) -> None:
    if not peer.closed:
        peer.send(
            wire.Hashes(ev.pieces_root, ev.base_layer, ev.index, ev.length, ev.proof_layers, tuple(hashes))
        )


def _reject(peer: Peer, ev: wire.HashRequest) -> None:
    if not peer.closed:
        peer.send(wire.HashReject(ev.pieces_root, ev.base_layer, ev.index, ev.length, ev.proof_layers))
