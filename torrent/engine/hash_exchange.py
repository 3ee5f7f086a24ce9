"""BEP 52 hash requests for one v2 or hybrid torrent: serve ours, fetch what we lack.

Serving: a peer's ``hash request`` for a run of a file's piece layer (or any layer above
it) is answered from the tree built on the torrent's piece layers, with the uncles it
asked for (:func:`torrent.proto.merkle.proof`); a request we cannot answer (the leaf
layer, an unknown root, a layer we have not learned) gets a ``hash reject``, as BEP 52
requires an answer either way.

Fetching: a torrent from a v2-only magnet link has no piece layers (they live outside
the ``info`` dict; a hybrid's pieces are checked by their SHA-1 meanwhile). Until every one is known, no block is requested; each peer that
completes its handshake is asked for runs of the missing layers
(:class:`torrent.proto.merkle.PieceLayerFetch` checks every answer against the root).
A peer whose proof does not reach the root is dropped.

Hash requests are answered at most :data:`MAX_ANSWERS_PER_TICK` times a second per
peer, the rest rejected.

Blame: when a v2 piece fails its hash check, its leaf hashes (base layer 0, the run
under the piece's node) are asked of up to :data:`LEAF_ASKS` peers that have the piece
and speak the v2 hash (those that sent none of its blocks first). The first answer that
proves the node names the bad blocks, and their senders are banned at once
(:class:`torrent.proto.smart_ban.LeafBlame`); an answer that does not prove the node
closes that peer. Without an answer, the swarm's v1-style smart ban still finds them
once a good copy passes.

Left out: serving leaf-layer requests (we keep no block hashes; such a request gets a
hash reject), and per-block proofs for pieces whose layer is unknown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from torrent.errors import MetainfoError
from torrent.proto import merkle, wire
from torrent.proto.metainfo import Info
from torrent.proto.smart_ban import LeafBlame
from torrent.types import BLOCK_SIZE

if TYPE_CHECKING:
    from torrent.engine.peer import Peer

log = logging.getLogger(__name__)

#: Runs asked of one peer at a time.
RUNS_PER_PEER = 8
#: Hash requests answered per peer per second (the session's tick); more get a hash
#: reject. One request of 49 bytes can ask for 18 KiB of hashes: without a bound a peer
#: could make us send 370 times what it sends.
MAX_ANSWERS_PER_TICK = 64
#: Peers asked at once for a failed piece's leaf hashes.
LEAF_ASKS = 3
#: Our hash requests in flight on one connection, all kinds (the codec's own bound is 64).
MAX_REQUESTS_PER_PEER = 32


class HashExchange:
    """See the module docstring. ``info`` gains the layers fetched (``Info.add_piece_layer``)."""

    def __init__(
        self,
        info: Info,
        *,
        ban: Callable[[Any, str], object] | None = None,
        wire_hash_v2: bytes | None = None,
    ) -> None:
        """Args: ``ban(sender, why)`` bans the sender of a block its leaf hash refutes;
        ``wire_hash_v2``, the truncated v2 info hash: only connections made with it are
        asked for leaf hashes (libtorrent answers none on a hybrid's v1 connection)."""
        self.info = info
        self._ban = ban
        self._wire_hash_v2 = wire_hash_v2
        self._blame: LeafBlame[Hashable] = LeafBlame()
        self._leaf_runs: dict[tuple[bytes, int, int, int, int], int] = {}  # run -> piece
        self._trees: dict[bytes, merkle.MerkleTree] = {}
        self._answered: dict[object, int] = {}
        # A hybrid's pieces all have their SHA-1: it downloads without its piece layers (its
        # peers speak to it by the v1 hash, where libtorrent answers no hash request).
        missing = info.missing_piece_layers if info.has_v2 and not info.has_v1 else ()
        self._fetch: merkle.PieceLayerFetch | None = (
            merkle.PieceLayerFetch([(f.pieces_root, f.length) for f in missing], info.piece_length)
            if missing
            else None
        )

    @property
    def ready(self) -> bool:
        """Every piece's hash is known: blocks may be requested."""
        return self._fetch is None

    # -- serving ----------------------------------------------------------------------

    def _tree(self, root: bytes) -> merkle.MerkleTree | None:
        tree = self._trees.get(root)
        if tree is not None:
            return tree
        info = self.info
        f = next((f for f in info.files if f.pieces_root == root and not f.padding), None)
        if f is None:
            return None
        blocks = -(-f.length // BLOCK_SIZE)
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

    def tick(self) -> None:
        """Once a second: the per-peer answer budget starts over."""
        self._answered.clear()

    def on_request(self, peer: Peer, ev: wire.HashRequest) -> None:
        tree = self._tree(ev.pieces_root)
        answered = self._answered.get(peer.addr, 0)
        self._answered[peer.addr] = answered + 1
        try:
            if tree is None or answered >= MAX_ANSWERS_PER_TICK:
                raise LookupError("unknown root, or over the answer budget")
            hashes = merkle.proof(tree, ev.base_layer, ev.index, ev.length, ev.proof_layers)
        except (LookupError, ValueError):
            peer.send(wire.HashReject(ev.pieces_root, ev.base_layer, ev.index, ev.length, ev.proof_layers))
            return
        peer.send(
            wire.Hashes(ev.pieces_root, ev.base_layer, ev.index, ev.length, ev.proof_layers, tuple(hashes))
        )

    # -- fetching ---------------------------------------------------------------------

    def ask(self, peer: Peer) -> None:
        """Ask ``peer`` for missing layer runs (after its handshake)."""
        fetch = self._fetch
        if fetch is None or peer.proto is None:
            return
        room = RUNS_PER_PEER - peer.proto.hash_requests_outstanding
        for key in fetch.next_requests(peer.addr, max(0, room)):
            peer.send(wire.HashRequest(*key))

    def on_hashes(self, peer: Peer, ev: wire.Hashes) -> bool:
        """An answer; True when the last missing layer just became known.

        A proof that does not reach the root closes the peer.
        """
        key = (ev.pieces_root, ev.base_layer, ev.index, ev.length, ev.proof_layers)
        if key in self._leaf_runs:
            self._on_leaves(peer, key, ev.hashes)
            return False
        fetch = self._fetch
        if fetch is None:
            return False
        try:
            layers = fetch.on_hashes(peer.addr, key, ev.hashes)
        except ValueError as exc:
            peer.close(f"bad hashes: {exc}")
            return False
        for root, layer in layers.items():
            try:
                self.info.add_piece_layer(root, layer)
            except MetainfoError as exc:  # cannot happen once the proof held; keep the peer out
                peer.close(f"bad piece layer: {exc}")
                return False
        if fetch.done:
            self._fetch = None
            log.debug("every piece layer is known")
            return True
        self.ask(peer)
        return False

    def on_reject(self, peer: Peer, ev: wire.HashReject) -> None:
        if self._fetch is not None:
            self._fetch.give_back(
                peer.addr, (ev.pieces_root, ev.base_layer, ev.index, ev.length, ev.proof_layers)
            )

    def on_peer_closed(self, peer: Peer) -> None:
        if self._fetch is not None:
            self._fetch.give_back(peer.addr)

    # -- blame ------------------------------------------------------------------------

    def on_piece_failed(
        self,
        index: int,
        data: bytes | bytearray | memoryview,
        senders: Mapping[int, Hashable],
        peers: Iterable[Peer],
    ) -> bool:
        """A v2 piece failed: ask peers for its leaf hashes; True when asked."""
        info = self.info
        if self._ban is None or not info.has_v2:
            return False
        node = info.piece_hash_v2(index)
        if node is None or not senders:
            return False
        f, k = info.v2_piece(index)
        width = (
            info.piece_length // BLOCK_SIZE
            if f.length > info.piece_length
            else merkle.next_pow2(-(-f.length // BLOCK_SIZE))
        )
        if width > merkle.REQUEST_RUN:
            return False  # more than one request's worth: the good copy will tell
        run = (f.pieces_root, 0, k * width, width, 0)
        length = info.v2_piece_data_length(index)
        for dropped in self._blame.on_piece_failed(index, memoryview(data)[:length], senders, node, width):
            self._leaf_runs = {key: i for key, i in self._leaf_runs.items() if i != dropped}
        self._leaf_runs[run] = index
        asked = 0
        for peer in sorted(self._leaf_candidates(index, peers), key=lambda p: p.addr in senders.values()):
            peer.send(wire.HashRequest(*run))
            asked += 1
            if asked == LEAF_ASKS:
                break
        return asked > 0

    def _leaf_candidates(self, index: int, peers: Iterable[Peer]) -> list[Peer]:
        out = []
        for peer in peers:
            proto = peer.proto
            if (
                proto is not None
                and peer.peer_id is not None
                and proto.info_hash == self._wire_hash_v2
                and proto.hash_requests_outstanding < MAX_REQUESTS_PER_PEER
                and index in proto.peer_pieces
            ):
                out.append(peer)
        return out

    def _on_leaves(
        self, peer: Peer, run: tuple[bytes, int, int, int, int], hashes: tuple[bytes, ...]
    ) -> None:
        index = self._leaf_runs[run]
        bad = self._blame.on_leaves(index, hashes[: run[3]])
        if bad is None:
            peer.close(f"leaf hashes that do not prove piece {index}")
            return
        del self._leaf_runs[run]
        assert self._ban is not None
        for offset, who in bad:
            self._ban(
                who, f"sent block {offset // BLOCK_SIZE} of piece {index}, which its BEP 52 leaf hash refutes"
            )
