"""BEP 52 hash requests for one v2 or hybrid torrent, the asking side: fetch the piece
layers we lack, prove pieces before their layer is known, blame bad blocks. Answering
the peers' requests is :class:`torrent.engine.hash_serving.HashServer`'s (held here as
:attr:`HashExchange.server`).

Fetching: a torrent from a v2-only magnet link has no piece layers (they live outside
the ``info`` dict; a hybrid's pieces are checked by their SHA-1 meanwhile). Each peer
that completes its handshake is asked for runs of the missing layers
(:class:`torrent.proto.merkle.PieceLayerFetch` checks every answer against the root).
A peer whose proof does not reach the root is dropped.

Per-block proofs: blocks are requested meanwhile. A piece completed before its file's
layer is known is held by the owner (:meth:`HashExchange.prove`), and the leaf hashes
under it are asked of a peer that has it, with every uncle up to the file's root
(:class:`torrent.proto.merkle.PieceProofs`: one peer at a time per piece,
:data:`PROOFS_PER_PEER` runs per peer and :data:`PROOFS_IN_ALL` in all, another peer
after a reject, a departure or :data:`PROOF_TIMEOUT_TICKS` seconds). The proven node
goes into the ``Info`` (``Info.add_piece_hash_v2``; a file whose pieces are all proven
gains its layer that way), and the owner is told (``on_proven``): it checks the piece
as any other. A layer that arrives first releases its held pieces the same way. The
leaves are kept a while: a piece that then fails names its bad blocks from them
without asking again. Pieces larger than one request's leaves (more than
:data:`torrent.proto.merkle.REQUEST_RUN` blocks) wait for their layer instead.

Blame: when a v2 piece fails its hash check, its leaf hashes (base layer 0, the run
under the piece's node) are asked of up to :data:`LEAF_ASKS` peers that have the piece
and speak the v2 hash (those that sent none of its blocks first). The first answer that
proves the node names the bad blocks, and their senders are banned at once
(:class:`torrent.proto.smart_ban.LeafBlame`); an answer that does not prove the node
closes that peer. The owner is told which blocks were bad (``on_blamed``), so it can
keep the good ones and fetch only those again; when every peer asked rejects, leaves,
or :data:`LEAF_WAIT_TICKS` seconds pass, it is told that nobody will say (``None``).
Without an answer, the swarm's v1-style smart ban still finds the liars once a good
copy passes.

Left out: proofs for single blocks (libtorrent leaves them out too); a run of several
pieces' leaves in one request.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from torrent.engine.hash_serving import LEAF_JOBS_PER_PEER, HashServer, ReadPiece, Spawn
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
#: Peers asked at once for a failed piece's leaf hashes.
LEAF_ASKS = 3
#: Our hash requests in flight on one connection, all kinds (the codec's own bound is 64).
MAX_REQUESTS_PER_PEER = 32
#: Ticks (seconds) a failed piece waits for its leaf hashes before we give up on them.
LEAF_WAIT_TICKS = 10
#: Per-block proofs of pieces whose layer is unknown: runs asked of one peer at once,
#: and in all.
PROOFS_PER_PEER = LEAF_JOBS_PER_PEER  # what our seed computes at once per peer
PROOFS_IN_ALL = 16
#: Ticks (seconds) a proof request waits for its answer before another peer is asked.
PROOF_TIMEOUT_TICKS = 10
#: Ticks before a run a peer rejected (or left unanswered) may be asked of it again.
PROOF_RETRY_TICKS = 3
#: Proven leaf hashes kept, by piece (a piece that then fails is blamed with them).
PROVEN_LEAVES_KEPT = 32

#: Stands for "no peer asked" among the askers of a failed piece blamed with leaves
#: already proven.
_PROVEN = object()


class HashExchange:
    """See the module docstring. ``info`` gains the layers fetched (``Info.add_piece_layer``)."""

    def __init__(
        self,
        info: Info,
        *,
        ban: Callable[[Any, str], object] | None = None,
        wire_hash_v2: bytes | None = None,
        have: Callable[[int], bool] | None = None,
        read: ReadPiece | None = None,
        spawn: Spawn | None = None,
        on_blamed: Callable[[int, frozenset[int] | None], object] | None = None,
        on_proven: Callable[[int], object] | None = None,
    ) -> None:
        """Args: ``ban(sender, why)`` bans the sender of a block its leaf hash refutes;
        ``wire_hash_v2``, the truncated v2 info hash: only connections made with it are
        asked for leaf hashes (libtorrent answers none on a hybrid's v1 connection);
        ``have(piece)``, ``read(piece, length)`` and ``spawn(coroutine)`` let us answer
        requests below the piece layer (without them, those get a hash reject);
        ``on_blamed(piece, bad)``: the block offsets of a failed piece that its leaf hashes
        refute, or None when no leaf hashes will come for it; ``on_proven(piece)``: a
        piece held for its proof now has a known hash (without it, nothing is proven
        and blocks wait for the piece layers)."""
        self.info = info
        self._ban = ban
        self._wire_hash_v2 = wire_hash_v2
        self._spawn = spawn
        #: Answers the peers' hash requests.
        self.server = HashServer(info, have=have, read=read, spawn=spawn)
        self._blame: LeafBlame[Hashable] = LeafBlame()
        self._leaf_runs: dict[tuple[bytes, int, int, int, int], int] = {}  # run -> piece
        # piece -> (peers asked and not yet answered, ticks left)
        self._leaf_waits: dict[int, tuple[set[object], int]] = {}
        self._on_blamed = on_blamed
        # A hybrid's pieces all have their SHA-1: it downloads without its piece layers (its
        # peers speak to it by the v1 hash, where libtorrent answers no hash request).
        missing = info.missing_piece_layers if info.has_v2 and not info.has_v1 else ()
        self._fetch: merkle.PieceLayerFetch | None = (
            merkle.PieceLayerFetch([(f.pieces_root, f.length) for f in missing], info.piece_length)
            if missing
            else None
        )
        self._on_proven = on_proven
        self._proofs: merkle.PieceProofs | None = None
        if (
            self._fetch is not None
            and on_proven is not None
            and info.piece_length // BLOCK_SIZE <= merkle.REQUEST_RUN
        ):
            self._proofs = merkle.PieceProofs(
                per_peer=PROOFS_PER_PEER,
                in_all=PROOFS_IN_ALL,
                timeout=PROOF_TIMEOUT_TICKS,
                retry=PROOF_RETRY_TICKS,
            )
        self._ticks = 0
        self._proven_leaves: OrderedDict[int, tuple[bytes, ...]] = OrderedDict()
        #: Pieces whose hash a per-block proof gave (their layer not known yet).
        self.pieces_proven = 0

    @property
    def leaf_answers(self) -> int:
        """Requests below the piece layer we answered (with ``hashes``) so far."""
        return self.server.leaf_answers

    def on_request(self, peer: Peer, ev: wire.HashRequest) -> None:
        """A peer's hash request: answered (or rejected) by :attr:`server`."""
        self.server.on_request(peer, ev)

    @property
    def ready(self) -> bool:
        """Blocks may be requested: every piece's hash is known, or can be proven."""
        return self._fetch is None or self._proofs is not None

    def tick(self, peers: Iterable[Peer] = ()) -> None:
        """Once a second: the per-peer answer budget starts over; failed pieces that waited
        too long for their leaf hashes are given up; proofs unanswered too long, rejected
        or left by their peer are asked of ``peers``."""
        self.server.tick()
        self._ticks += 1
        if self._proofs is not None:
            self._proofs.expire(self._ticks)
            self._ask_proofs(peers)
        for index, (asked, ticks) in list(self._leaf_waits.items()):
            if ticks <= 1:
                self._give_up(index)
            else:
                self._leaf_waits[index] = (asked, ticks - 1)

    # -- fetching ---------------------------------------------------------------------

    def ask(self, peer: Peer) -> None:
        """Ask ``peer`` for missing layer runs (after its handshake)."""
        self._ask_proofs([peer])
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
        if self._proofs is not None and self._proofs.is_run(key):
            return self._on_proof(peer, key, ev.hashes)
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
        if layers:
            self._release_known()
        if fetch.done:
            self._fetch = None
            log.debug("every piece layer is known")
            return True
        self.ask(peer)
        return False

    def on_reject(self, peer: Peer, ev: wire.HashReject) -> None:
        key = (ev.pieces_root, ev.base_layer, ev.index, ev.length, ev.proof_layers)
        index = self._leaf_runs.get(key)
        if index is not None:
            self._not_answering(index, peer.addr)
        if self._fetch is not None:
            self._fetch.give_back(peer.addr, key)
        if self._proofs is not None:
            self._proofs.give_back(peer.addr, self._ticks, key)  # asked again at the next tick

    def on_peer_closed(self, peer: Peer) -> None:
        for index in list(self._leaf_waits):
            self._not_answering(index, peer.addr)
        if self._fetch is not None:
            self._fetch.give_back(peer.addr)
        if self._proofs is not None:
            self._proofs.give_back(peer.addr, self._ticks)

    # -- per-block proofs -------------------------------------------------------------

    def needs_proof(self, index: int) -> bool:
        """Piece ``index`` cannot be checked yet, and a proof can tell: :meth:`prove` it."""
        return self._proofs is not None and self.info.piece_hash_v2(index) is None

    def prove(self, index: int, peers: Iterable[Peer]) -> None:
        """The owner holds piece ``index`` (complete, its hash unknown): ask ``peers`` for
        the leaf hashes under it; ``on_proven(index)`` follows once its hash is known."""
        assert self._proofs is not None
        f, k = self.info.v2_piece(index)
        piece_length = self.info.piece_length
        run = merkle.leaf_proof_run(f.pieces_root, f.length, piece_length, k)
        self._proofs.add(index, run, k, piece_length // BLOCK_SIZE)
        self._ask_proofs(peers)

    def _ask_proofs(self, peers: Iterable[Peer]) -> None:
        proofs = self._proofs
        if proofs is None or not len(proofs):
            return
        for peer in peers:
            proto = peer.proto
            if (
                proto is None
                or peer.peer_id is None
                or peer.closed
                or proto.info_hash != self._wire_hash_v2
                or proto.hash_requests_outstanding >= MAX_REQUESTS_PER_PEER
            ):
                continue
            for run in proofs.next_requests(peer.addr, proto.peer_pieces.__contains__, self._ticks):
                peer.send(wire.HashRequest(*run))

    def _on_proof(self, peer: Peer, run: merkle.HashRun, hashes: tuple[bytes, ...]) -> bool:
        """Leaf hashes for held pieces; True when the last missing layer became known."""
        assert self._proofs is not None
        try:
            proven = self._proofs.on_hashes(peer.addr, run, hashes)
            for piece in proven:
                self.info.add_piece_hash_v2(piece.index, piece.node, piece.uncles)
        except (ValueError, MetainfoError) as exc:
            peer.close(f"bad leaf hashes: {exc}")
            return False
        for piece in proven:  # (none: proven meanwhile, by another answer or its layer)
            self.pieces_proven += 1
            self._proven_leaves[piece.index] = piece.leaves
            while len(self._proven_leaves) > PROVEN_LEAVES_KEPT:
                self._proven_leaves.popitem(last=False)
        root = run[0]
        if self._fetch is not None and root in self.info.piece_layers:
            self._fetch.forget(root)  # every piece of the file is proven: that is its layer
        if self._on_proven is not None:
            for piece in proven:
                self._on_proven(piece.index)
        self._ask_proofs([peer])  # its next run now, not at the next tick
        if self._fetch is not None and self._fetch.done:
            self._fetch = None
            log.debug("every piece layer is known (from per-block proofs)")
            return True
        return False

    def _release_known(self) -> None:
        """Held pieces whose layer just arrived: their hash is known now."""
        if self._proofs is None:
            return
        for index in self._proofs.pieces():
            if self.info.piece_hash_v2(index) is not None:
                self._proofs.remove(index)
                if self._on_proven is not None:
                    self._on_proven(index)

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
        # Leaves proven before the piece was checked need no asking; the answer comes on
        # the next turn of the loop, once the owner holds the piece.
        leaves = self._proven_leaves.pop(index, None)
        if leaves is not None and self._spawn is None:
            leaves = None
        candidates = [] if leaves is not None else self._leaf_candidates(index, peers)
        if leaves is None and not candidates:
            return False
        for dropped in self._blame.on_piece_failed(index, memoryview(data)[:length], senders, node, width):
            self._give_up(dropped)
        if leaves is not None:
            assert self._spawn is not None
            if self._spawn(self._blame_now(index, leaves)):
                self._leaf_waits[index] = ({_PROVEN}, LEAF_WAIT_TICKS)
                return True
            self._blame.forget(index)
            return False
        candidates.sort(key=lambda p: p.addr in senders.values())
        self._leaf_runs[run] = index
        asked: set[object] = set()
        for peer in candidates[:LEAF_ASKS]:
            peer.send(wire.HashRequest(*run))
            asked.add(peer.addr)
        self._leaf_waits[index] = (asked, LEAF_WAIT_TICKS)
        return True

    def _not_answering(self, index: int, addr: object) -> None:
        """A peer asked for ``index``'s leaves will not answer; the last one gives up."""
        wait = self._leaf_waits.get(index)
        if wait is None:
            return
        wait[0].discard(addr)
        if not wait[0]:
            self._give_up(index)

    def _give_up(self, index: int) -> None:
        """No leaf hashes will come for ``index``: forget it, and tell the owner."""
        self._leaf_runs = {key: i for key, i in self._leaf_runs.items() if i != index}
        self._blame.forget(index)
        if self._leaf_waits.pop(index, None) is not None and self._on_blamed is not None:
            self._on_blamed(index, None)

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

    async def _blame_now(self, index: int, leaves: tuple[bytes, ...]) -> None:
        if index in self._leaf_waits and not self._blamed(index, leaves):
            self._give_up(index)  # cannot happen: they proved the node it failed against

    def _on_leaves(
        self, peer: Peer, run: tuple[bytes, int, int, int, int], hashes: tuple[bytes, ...]
    ) -> None:
        index = self._leaf_runs[run]
        if not self._blamed(index, hashes[: run[3]]):
            peer.close(f"leaf hashes that do not prove piece {index}")
            self._not_answering(index, peer.addr)

    def _blamed(self, index: int, leaves: tuple[bytes, ...]) -> bool:
        """Blame the bad blocks of ``index`` by its ``leaves``; False when they do not
        prove its node."""
        bad = self._blame.on_leaves(index, leaves)
        if bad is None:
            return False
        self._leaf_runs = {key: i for key, i in self._leaf_runs.items() if i != index}
        self._leaf_waits.pop(index, None)
        assert self._ban is not None
        for offset, who in bad:
            self._ban(
                who, f"sent block {offset // BLOCK_SIZE} of piece {index}, which its BEP 52 leaf hash refutes"
            )
        if self._on_blamed is not None:
            self._on_blamed(index, frozenset(offset for offset, _ in bad))
        return True
