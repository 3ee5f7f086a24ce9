"""BEP 52 merkle trees: SHA-256 over 16 KiB blocks, piece layers, proofs.

Each non-empty file of a v2 torrent has its own binary tree. The leaves are the SHA-256
of the file's 16 KiB blocks (the last block may be shorter); the leaf layer is padded to
a power of two with *pad* leaves of 32 zero bytes, and every inner node is the SHA-256
of its two children. The root is the file's ``pieces root``.

The *piece layer* is the layer where one node covers ``piece length`` bytes
(``log2(piece_length / 16 KiB)`` layers above the leaves). A torrent's ``piece layers``
dict holds, for each file larger than one piece, that layer's nodes up to the file's
last piece (the nodes that cover only padding are left out). A file of one piece or less
has no piece layer: its root is the hash of its only piece.

Layers are numbered from the leaves (0) up, as the ``hash request`` message does.
``pad_hash(k)`` is the root of a subtree of ``2**k`` pad leaves.

Proofs (``hash request`` / ``hashes``, BEP 52): a run of ``length`` nodes of a base
layer, starting at an ``index`` that is a multiple of ``length``, is checked against the
root with one *uncle* per layer above the run's own subtree. :func:`proof` builds them
from a full tree, :func:`verify_proof` checks them against a root. A seed that knows only
the piece layer answers for the layers below it with :func:`proof_below`, from the trees
of the pieces it hashes again from disk.

Fetching: :class:`PieceLayerFetch` gets the piece layers a v2 magnet link lacks, run by
run, each proven against its root; :class:`PieceProofs` proves single pieces received
before their layer is known, by the leaf hashes under them (per-block proofs).

Pure: no I/O. Hashing a whole file is the caller's job (it has the bytes).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from torrent.types import BLOCK_SIZE

#: Bytes of one SHA-256 digest: every node of a v2 tree.
HASH_SIZE = 32
#: A leaf that stands for no data (BEP 52: "set to zero").
ZERO_HASH = bytes(HASH_SIZE)
#: Deepest tree we compute pad hashes for: files of up to 2**60 blocks.
_MAX_LEVEL = 64

_sha256 = hashlib.sha256


def _build_pads() -> tuple[bytes, ...]:
    pads = [ZERO_HASH]
    for _ in range(_MAX_LEVEL):
        pads.append(_sha256(pads[-1] + pads[-1]).digest())
    return tuple(pads)


_PADS = _build_pads()


def pad_hash(level: int) -> bytes:
    """Root of a subtree of ``2**level`` pad leaves (``level`` 0: the zero leaf)."""
    return _PADS[level]


def next_pow2(n: int) -> int:
    """Smallest power of two ``>= n`` (1 for ``n <= 1``)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def log2(n: int) -> int:
    """``log2`` of a power of two."""
    return n.bit_length() - 1


def block_hashes(data: bytes | bytearray | memoryview) -> list[bytes]:
    """SHA-256 of each 16 KiB block of ``data`` (the last one may be shorter)."""
    view = memoryview(data)
    return [_sha256(view[i : i + BLOCK_SIZE]).digest() for i in range(0, len(view), BLOCK_SIZE)]


def root(nodes: Sequence[bytes], width: int, level: int = 0) -> bytes:
    """Root of a subtree ``width`` nodes wide whose first nodes are ``nodes``.

    Args:
        nodes: the known nodes of one layer, left to right.
        width: the layer's width, a power of two ``>= len(nodes)``; the missing nodes
            are pads.
        level: the layer's height above the leaves (it picks the pad).
    """
    if len(nodes) > width:
        raise ValueError(f"{len(nodes)} nodes do not fit a layer of {width}")
    layer = list(nodes)
    sha256 = _sha256
    while width > 1:
        if len(layer) % 2:
            layer.append(_PADS[level])
        pairs = iter(layer)
        layer = [sha256(left + right).digest() for left, right in zip(pairs, pairs, strict=True)]
        width //= 2
        level += 1
    return layer[0] if layer else _PADS[level]


def piece_hash(data: bytes | bytearray | memoryview, piece_length: int) -> bytes:
    """The piece-layer node of one piece of a file larger than a piece.

    ``data`` holds the file's bytes in that piece (shorter for its last piece).
    """
    return root(block_hashes(data), piece_length // BLOCK_SIZE)


def small_file_root(data: bytes | bytearray | memoryview) -> bytes:
    """``pieces root`` of a file of at most one piece: its blocks, padded to a power of two."""
    leaves = block_hashes(data)
    return root(leaves, next_pow2(len(leaves)))


def root_from_piece_layer(layer: Sequence[bytes], piece_length: int) -> bytes:
    """``pieces root`` of a file larger than one piece, from its piece layer."""
    return root(layer, next_pow2(len(layer)), log2(piece_length // BLOCK_SIZE))


def file_root(length: int, piece_nodes: Sequence[bytes], piece_length: int) -> bytes:
    """``pieces root`` of a file of ``length`` bytes, given one node per piece.

    For a file of at most one piece, ``piece_nodes`` is its only node and already the
    root (:func:`small_file_root`).
    """
    if length <= piece_length:
        return piece_nodes[0]
    return root_from_piece_layer(piece_nodes, piece_length)


class MerkleTree:
    """Every layer of one file's tree, from the known leaves or a known layer up.

    Built either from the leaf hashes (a seed that hashed the file) or from the piece
    layer (a downloader that has the torrent's ``piece layers``): in the latter case the
    layers below the piece layer are unknown, and :meth:`layer` raises ``LookupError``
    for them.

    Attributes:
        num_leaves: the padded leaf count (a power of two).
        base: the lowest known layer (0 for leaves, or the piece layer).
    """

    __slots__ = ("_layers", "base", "num_leaves")

    def __init__(self, nodes: Sequence[bytes], num_leaves: int, base: int = 0) -> None:
        self.num_leaves = num_leaves
        self.base = base
        width = num_leaves >> base
        layers = [list(nodes)]
        level = base
        while width > 1:
            below = layers[-1]
            if len(below) % 2:
                below = [*below, _PADS[level]]
            layers.append([_sha256(below[i] + below[i + 1]).digest() for i in range(0, len(below), 2)])
            width //= 2
            level += 1
        if not layers[-1]:
            layers[-1] = [_PADS[level]]
        self._layers = layers

    @property
    def root(self) -> bytes:
        return self._layers[-1][0]

    @property
    def height(self) -> int:
        """Layers above the leaves up to the root."""
        return log2(self.num_leaves)

    def layer(self, level: int) -> list[bytes]:
        """The known nodes of layer ``level`` (pads at the end are not stored)."""
        if not self.base <= level <= self.height:
            raise LookupError(f"layer {level} is not known")
        return self._layers[level - self.base]

    def node(self, level: int, index: int) -> bytes:
        """One node; a pad when ``index`` lies past the known nodes."""
        nodes = self.layer(level)
        if not 0 <= index < (self.num_leaves >> level):
            raise IndexError(f"node {index} is outside layer {level}")
        return nodes[index] if index < len(nodes) else _PADS[level]


def uncles_needed(height: int, base: int, index: int, length: int, proof_layers: int) -> int:
    """How many uncle hashes a ``hashes`` message carries (BEP 52, as libtorrent reads it).

    ``proof_layers`` counts the layers above the base layer; the first ``log2(length) - 1``
    fall inside the run's own subtree and are omitted, each later one gives one uncle,
    from the sibling of the run's subtree up to the layer just below the root.
    """
    return max(0, min(proof_layers, height - base - 1) - log2(length) + 1)


def proof(tree: MerkleTree, base: int, index: int, length: int, proof_layers: int) -> list[bytes]:
    """The ``hashes`` payload for a request: the base layer's run, then the uncles.

    Raises:
        LookupError: the base layer is not known in ``tree``.
        ValueError: ``index``/``length`` break BEP 52's rules.
    """
    _check_run(tree.height, base, index, length)
    if base >= tree.height or proof_layers >= tree.height - base:
        # libtorrent's rule: the root is never sent, and no layer above it is asked for.
        raise ValueError(f"base layer {base} with {proof_layers} proof layers reaches past the root")
    hashes = [tree.node(base, i) for i in range(index, index + length)]
    position = index // length
    level = base + log2(length)
    for _ in range(uncles_needed(tree.height, base, index, length, proof_layers)):
        hashes.append(tree.node(level, position ^ 1))
        position //= 2
        level += 1
    return hashes


def pieces_under(tree: MerkleTree, base: int, index: int, length: int) -> range:
    """The nodes of ``tree``'s lowest known layer (its pieces) above a run of a lower layer.

    ``tree`` knows its layers from ``tree.base`` up (the piece layer, or the root of a
    file of one piece); a run of layer ``base < tree.base`` lies under these nodes. Nodes
    past the file's last known one (pads) are left out: nothing lies under them.

    Raises:
        ValueError: the run breaks BEP 52's rules, or ``base`` is not below ``tree.base``.
    """
    _check_run(tree.height, base, index, length)
    if base >= tree.base:
        raise ValueError(f"layer {base} is not below the known layers")
    shift = tree.base - base
    first, last = index >> shift, (index + length - 1) >> shift
    return range(first, min(last + 1, len(tree.layer(tree.base))))


def proof_below(
    tree: MerkleTree,
    pieces: Mapping[int, MerkleTree],
    base: int,
    index: int,
    length: int,
    proof_layers: int,
) -> list[bytes]:
    """:func:`proof` for a run below ``tree``'s known layers, from the trees of its pieces.

    ``pieces`` maps each node of :func:`pieces_under` to the tree of its blocks
    (``2 ** tree.base`` leaves, built from the piece's data, whose root the caller has
    checked against that node). The run's nodes come from them, and the uncles from them
    below ``tree.base`` and from ``tree`` above it.

    Raises:
        LookupError: a piece's tree is missing from ``pieces``.
        ValueError: the run breaks BEP 52's rules or reaches past the root.
    """
    if base >= tree.base:
        return proof(tree, base, index, length, proof_layers)
    pieces_under(tree, base, index, length)  # checks the run
    known = len(tree.layer(tree.base))
    if proof_layers >= tree.height - base:
        raise ValueError(f"base layer {base} with {proof_layers} proof layers reaches past the root")

    def node(level: int, i: int) -> bytes:
        if level >= tree.base:
            return tree.node(level, i)
        shift = tree.base - level
        k = i >> shift
        if k >= known:
            return _PADS[level]
        return pieces[k].node(level, i - (k << shift))

    hashes = [node(base, i) for i in range(index, index + length)]
    position = index // length
    level = base + log2(length)
    for _ in range(uncles_needed(tree.height, base, index, length, proof_layers)):
        hashes.append(node(level, position ^ 1))
        position //= 2
        level += 1
    return hashes


def _check_run(height: int, base: int, index: int, length: int) -> None:
    width = 1 << (height - base) if base <= height else 0
    if length < 1 or length & (length - 1):
        raise ValueError(f"length {length} is not a power of two")
    if index % length or not 0 <= index < width or index + length > width:
        raise ValueError(f"index {index} and length {length} do not fit layer {base}")


def verify_proof(
    expected_root: bytes,
    height: int,
    base: int,
    index: int,
    nodes: Sequence[bytes],
    uncles: Sequence[bytes],
) -> bool:
    """Check a run of ``nodes`` of layer ``base`` (starting at ``index``) against a root.

    ``uncles`` go from the run's subtree upwards; the run plus them must reach the
    root of a tree ``height`` layers tall.
    """
    length = len(nodes)
    try:
        _check_run(height, base, index, length)
    except ValueError:
        return False
    node = root(nodes, length, base)
    position = index // length
    level = base + log2(length)
    for uncle in uncles:
        if level >= height:
            return False
        node = _sha256(uncle + node).digest() if position & 1 else _sha256(node + uncle).digest()
        position //= 2
        level += 1
    return level == height and node == expected_root


#: Nodes asked for per hash request (BEP 52: a request "SHOULD NOT" ask for more than 512).
REQUEST_RUN = 512

#: One BEP 52 hash request: (pieces root, base layer, index, length, proof layers).
HashRun = tuple[bytes, int, int, int, int]


class PieceLayerFetch:
    """Fetch the piece layers a torrent lacks (a v2 magnet link) from peers, checked by proof.

    Each file larger than a piece needs its piece layer: ``n`` nodes of a layer
    ``width = next_pow2(n)`` wide. It is asked for in runs of up to :data:`REQUEST_RUN`
    nodes, each with the proof layers that reach the root, and every answer is checked
    with :func:`verify_proof` before it is kept: a peer cannot make us accept a wrong
    layer. A run goes to one peer at a time; a reject, a bad proof or a peer leaving
    puts it back.

    Args:
        files: ``(pieces root, file length)`` of each file larger than one piece.
        piece_length: the torrent's piece length (a power of two, at least 16 KiB).
    """

    def __init__(self, files: Sequence[tuple[bytes, int]], piece_length: int) -> None:
        self.base = log2(piece_length // BLOCK_SIZE)
        self._count: dict[bytes, int] = {}
        self._height: dict[bytes, int] = {}
        self._nodes: dict[bytes, list[bytes | None]] = {}
        self._todo: dict[HashRun, None] = {}
        self._asked: dict[HashRun, object] = {}
        for root_hash, length in files:
            if root_hash in self._count:
                continue
            n = -(-length // piece_length)
            width = next_pow2(n)
            run = min(REQUEST_RUN, width)
            height = self.base + log2(width)
            self._count[root_hash] = n
            self._height[root_hash] = height
            self._nodes[root_hash] = [None] * n
            proof_layers = height - self.base - 1  # every uncle up to the root's children
            for index in range(0, n, run):
                self._todo[(root_hash, self.base, index, run, proof_layers)] = None

    @property
    def done(self) -> bool:
        return not self._todo and not self._asked

    def next_requests(self, peer: object, limit: int) -> list[HashRun]:
        """Up to ``limit`` runs nobody is asked for, now asked of ``peer``."""
        out: list[HashRun] = []
        for key in list(self._todo):
            if len(out) >= limit:
                break
            del self._todo[key]
            self._asked[key] = peer
            out.append(key)
        return out

    def forget(self, root_hash: bytes) -> None:
        """The layer of ``root_hash`` became known otherwise (per-piece proofs): its runs
        are no longer asked for, and answers to them are no longer taken."""
        for run in [k for k in (*self._todo, *self._asked) if k[0] == root_hash]:
            self._todo.pop(run, None)
            self._asked.pop(run, None)

    def give_back(self, peer: object, key: HashRun | None = None) -> None:
        """``peer`` will not answer ``key`` (a reject), or any run (it left)."""
        for run in [k for k, p in self._asked.items() if p == peer and (key is None or k == key)]:
            del self._asked[run]
            self._todo[run] = None

    def on_hashes(self, peer: object, key: HashRun, hashes: Sequence[bytes]) -> dict[bytes, bytes]:
        """An answer from ``peer``; returns the layers it completed (root -> nodes).

        Raises:
            ValueError: we did not ask ``peer`` for this run, or the proof does not reach
                the root (the run is asked again elsewhere).
        """
        if self._asked.get(key) != peer:
            raise ValueError("hashes for a run this peer was not asked for")
        root_hash, base, index, length, _ = key
        nodes, uncles = list(hashes[:length]), list(hashes[length:])
        if len(nodes) != length or not verify_proof(
            root_hash, self._height[root_hash], base, index, nodes, uncles
        ):
            self.give_back(peer, key)
            raise ValueError("the hashes do not prove the file's pieces root")
        del self._asked[key]
        known = self._nodes[root_hash]
        for i, node in enumerate(nodes):
            if index + i < len(known):
                known[index + i] = node
        if all(node is not None for node in known):
            return {root_hash: b"".join(n for n in known if n is not None)}
        return {}


def leaf_proof_run(root_hash: bytes, file_length: int, piece_length: int, k: int) -> HashRun:
    """The hash request for the leaf hashes under piece ``k`` of a file larger than one
    piece, with every uncle up to the file's root: base layer 0, a run of the piece's
    ``piece_length / 16 KiB`` leaves, and the most proof layers BEP 52 allows.

    A piece of one block asks for the pair of leaves its piece shares a parent with:
    libtorrent answers a run of one node with the uncles above that pair, leaving out
    the one sibling that would prove it.
    """
    per_piece = piece_length // BLOCK_SIZE
    width = next_pow2(-(-file_length // piece_length))
    height = log2(per_piece) + log2(width)
    length = max(per_piece, 2)
    return (root_hash, 0, k * per_piece // length * length, length, height - 1)


@dataclass(frozen=True, slots=True)
class ProvenPiece:
    """The leaf hashes under one piece, proven against its file's root.

    Attributes:
        index: the piece (torrent-wide).
        node: its piece-layer node (the root of ``leaves``).
        leaves: one hash per block of the piece (zero hashes past the file's end).
        uncles: the proof of ``node`` from the piece layer up to the file's root.
    """

    index: int
    node: bytes
    leaves: tuple[bytes, ...]
    uncles: tuple[bytes, ...]


@dataclass(slots=True)
class _ProofWait:
    per_piece: int  # leaves under one piece
    pieces: dict[int, int]  # torrent-wide piece index -> its place among the run's pieces
    asked: object | None = None  # the peer asked now
    asked_at: float = 0.0
    refused: dict[object, float] = field(default_factory=dict)  # peer -> when it rejected, left or timed out


class PieceProofs:
    """Per-block proofs for pieces whose piece layer is not known yet (BEP 52).

    A piece of a file larger than one piece is checked against its node in the file's
    piece layer; a v2 magnet link has no piece layers, and until a file's layer comes
    from peers its pieces have nothing to be checked against. A piece received in that
    time waits here: the leaf hashes under it are asked of a peer (:func:`leaf_proof_run`)
    and checked against the file's root, which the ``info`` dict holds, with
    :func:`verify_proof`. They give the piece's node, proven too (the uncles from the
    piece layer up), and every block's own hash. The owner then checks the piece as if
    its layer were known.

    Rules:

    1. A run is asked of one peer at a time, and of a peer that rejected it, left, or
       let ``timeout`` pass without an answer only ``retry`` later (a reject may mean
       "busy"); a peer chosen must say it has the piece (``may_ask``). Pieces of one
       block share a run by pairs.
    2. At most ``per_peer`` runs are asked of one peer and ``in_all`` in all at once.
    3. An answer that proves the root is taken from any peer asked (one that answers
       after its time-out too); one that does not is refused (``ValueError``: the owner
       drops that peer) and the run is asked elsewhere.

    Pure: the owner passes ``now`` and sends the requests.
    """

    def __init__(self, *, per_peer: int, in_all: int, timeout: float, retry: float) -> None:
        self.per_peer = per_peer
        self.in_all = in_all
        self.timeout = timeout
        self.retry = retry
        self._waits: dict[HashRun, _ProofWait] = {}
        self._run_of: dict[int, HashRun] = {}

    def __len__(self) -> int:
        """Pieces waiting for their proof."""
        return len(self._run_of)

    def __contains__(self, index: object) -> bool:
        return index in self._run_of

    def pieces(self) -> list[int]:
        return list(self._run_of)

    def is_run(self, run: HashRun) -> bool:
        """``run`` is one of ours (an answer to it belongs here)."""
        return run in self._waits

    def in_flight(self, peer: object | None = None) -> int:
        """Runs asked and not answered: of ``peer``, or of anyone."""
        return sum(
            1 for w in self._waits.values() if w.asked is not None and (peer is None or w.asked == peer)
        )

    def add(self, index: int, run: HashRun, k: int, per_piece: int) -> None:
        """Piece ``index``, its file's piece ``k`` of ``per_piece`` leaves, waits for the
        leaf hashes of ``run`` (:func:`leaf_proof_run`)."""
        if index in self._run_of:
            return
        wait = self._waits.get(run)
        if wait is None:
            wait = self._waits[run] = _ProofWait(per_piece, {})
        wait.pieces[index] = (k * per_piece - run[2]) // per_piece
        self._run_of[index] = run

    def remove(self, index: int) -> None:
        """Piece ``index`` no longer waits (its layer came, or the owner dropped it)."""
        run = self._run_of.pop(index, None)
        if run is None:
            return
        wait = self._waits[run]
        del wait.pieces[index]
        if not wait.pieces:
            del self._waits[run]

    def next_requests(self, peer: object, may_ask: Callable[[int], bool], now: float) -> list[HashRun]:
        """Runs to ask of ``peer`` now, within the bounds (rules 1 and 2)."""
        room = min(self.per_peer - self.in_flight(peer), self.in_all - self.in_flight())
        out: list[HashRun] = []
        for run, wait in self._waits.items():
            if len(out) >= room:
                break
            if wait.asked is not None or now < wait.refused.get(peer, now - self.retry) + self.retry:
                continue
            if all(map(may_ask, wait.pieces)):
                wait.asked, wait.asked_at = peer, now
                out.append(run)
        return out

    def give_back(self, peer: object, now: float, run: HashRun | None = None) -> None:
        """``peer`` will not answer ``run`` (a reject), or any run (it left)."""
        for key, wait in self._waits.items():
            if wait.asked == peer and (run is None or key == run):
                wait.asked = None
                wait.refused[peer] = now

    def expire(self, now: float) -> None:
        """Runs unanswered for ``timeout`` go back to be asked of another peer."""
        for wait in self._waits.values():
            if wait.asked is not None and now - wait.asked_at >= self.timeout:
                wait.refused[wait.asked] = now
                wait.asked = None

    def on_hashes(self, peer: object, run: HashRun, hashes: Sequence[bytes]) -> list[ProvenPiece]:
        """An answer to ``run`` (the wire lets only answers to our requests through, so
        ``peer`` was asked, now or before a time-out): the pieces it proves, which no
        longer wait (none when no piece waits for ``run`` any more).

        Raises:
            ValueError: the hashes do not prove the file's root (the run is asked of
                another peer).
        """
        wait = self._waits.get(run)
        if wait is None:
            return []
        root_hash, base, first, length, proof_layers = run
        height = proof_layers + 1
        leaves, uncles = tuple(hashes[:length]), tuple(hashes[length:])
        if len(leaves) != length or not verify_proof(root_hash, height, base, first, leaves, uncles):
            if wait.asked == peer:
                wait.asked = None
            wait.refused[peer] = math.inf  # it lied: never again
            raise ValueError("the leaf hashes do not prove the file's pieces root")
        out = []
        for index, place in list(wait.pieces.items()):
            self.remove(index)
            out.append(_proven_piece(index, place, leaves, uncles, wait.per_piece))
        return out


def _proven_piece(
    index: int, place: int, leaves: tuple[bytes, ...], uncles: tuple[bytes, ...], per_piece: int
) -> ProvenPiece:
    """Piece number ``place`` of a proven run of ``leaves`` (one piece's, or a pair of
    one-block pieces'): its node, its leaves and its proof from the piece layer up."""
    own = leaves[place * per_piece : (place + 1) * per_piece]
    if len(leaves) == per_piece:
        return ProvenPiece(index, root(own, per_piece), own, uncles)
    other = leaves[(1 - place) * per_piece : (2 - place) * per_piece]
    return ProvenPiece(index, root(own, per_piece), own, (root(other, per_piece), *uncles))
