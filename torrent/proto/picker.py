"""The piece picker: which block to request from which peer next (BEP 3 "Piece downloading strategy").

A pure state machine, no I/O and no clock of its own (times are passed in). The model is
libtorrent's ``piece_picker.hpp``. The picker tracks:

1. our pieces: *have* (hash-checked), *downloading* (some blocks requested or received) or
   *missing*;
2. per piece, its priority (0 = skipped, never requested; 1..7, higher first; default 4) and its
   availability: how many connected peers have it (``seeds`` + a per-piece count, so a
   have-all peer costs O(1));
3. per connected peer, the pieces it has (a ``bytearray`` of 0/1, ``None`` for a seed) and the
   blocks we requested from it with the request time;
4. per downloading piece, the state of every 16 KiB block (free, requested by one or more
   peers, received) and which peer delivered each block, so a hash failure can be blamed;
5. per peer, how many failed pieces it contributed to (kept after it disconnects).

Invariants:

* A missing, wanted piece that no block has been requested of sits in exactly one ordered
  array (one per priority level), sorted by availability into contiguous *buckets*. A change
  of availability by one swaps the piece with the edge of its bucket and moves the boundary:
  O(1), as libtorrent's ``update()`` does. Picking walks buckets from the rarest and starts at
  a random position inside a bucket, so ties are broken at random.
* ``_free_blocks`` counts the blocks of wanted missing pieces that nobody has been asked for.
  When it reaches zero the picker is in *endgame*: blocks already requested may be requested
  again from other peers, and a received block tells the caller which duplicates to cancel.
* A piece whose every block is received is *complete*: the caller hashes it (after every write
  of it finished) and reports ``on_piece_verified`` or ``on_piece_failed``.

Pick order for one peer, among the pieces it has:

1. free blocks of pieces already downloading ("partial"), the rarest first, then the one
   closest to done, so pieces get finished and we soon have something to trade;
2. a new piece: at random until we have ``random_first_pieces`` pieces, then rarest first with
   random ties, higher priority levels first, or in index order in sequential mode;
3. in endgame, blocks requested from others, least-requested first.

(1) and (2) are merged, as libtorrent does by giving downloading pieces a slightly better sort
key: a partial piece goes before any new piece that is not rarer. Strictly partials-first would
make a seed send blocks of pieces the swarm already has plenty of whenever choking left them
half done: in ``tests/unit/test_sim_swarm.py`` the seed then sends 3.5 copies, not 1.5, before
the leechers hold a full copy between them. Partials do go strictly first while picking at
random and once ``max_partials`` pieces are downloading.

Padding (BEP 47, and the gaps of a v2 torrent's piece space): the caller names the byte
ranges that are padding. A block that lies wholly inside padding is never requested: it
counts as received from the start (the caller's piece buffer holds zeros there), and the
padding's bytes are left out of ``bytes_wanted``, ``bytes_done`` and ``left``, so progress
and the tracker's ``left`` count real data only. A block that is partly padding is
requested as usual (peers send the zeros).

Left out: piece affinity by peer speed, suggested pieces (BEP 6 ``suggest``), and the
``allowed fast`` set is only supported through ``pick(..., restrict_to=...)``.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Collection, Hashable, Iterable, Sequence, Sized
from dataclasses import dataclass
from itertools import chain
from typing import NamedTuple

from torrent.types import BLOCK_SIZE

#: An opaque, hashable key that identifies one peer connection to the caller.
PeerKey = Hashable

#: Priority levels, as in libtorrent: 0 = do not download, 7 = most urgent.
SKIP = 0
DEFAULT_PRIORITY = 4
MAX_PRIORITY = 7

_FREE = 0
_REQUESTED = 1
_RECEIVED = 2
_REQUESTED_BYTE = bytes([_REQUESTED])

#: The default source of randomness, shared: a ``random.Random`` holds 2.5 KiB of state,
#: and a session may hold thousands of pickers.
_SHARED_RNG = random.Random()


class Block(NamedTuple):
    """One request unit: ``length`` bytes at ``offset`` inside piece ``piece``.

    A named tuple rather than a dataclass because it is created and hashed for every block
    on the hot path, and unpacks as the ``(index, begin, length)`` of a BEP 3 request.
    """

    piece: int
    offset: int
    length: int


_new_block = tuple.__new__


class BlockStatus(enum.Enum):
    #: The first copy of a block we still needed: write it.
    NEW = "new"
    #: We already had this block (endgame duplicate or a late answer): drop the payload.
    DUPLICATE = "duplicate"
    #: Not a block of our grid, or of a piece we do not want: drop it.
    UNEXPECTED = "unexpected"


@dataclass(frozen=True, slots=True)
class BlockResult:
    """What ``on_block`` decided.

    Attributes:
        status: see :class:`BlockStatus`.
        piece_complete: every block of the piece is now received: hash it.
        cancels: ``(peer, block)`` requests to cancel because this copy arrived first.
    """

    status: BlockStatus
    piece_complete: bool = False
    cancels: tuple[tuple[PeerKey, Block], ...] = ()


#: The usual answers of ``Picker.on_block`` (immutable, so shared).
_NEW = BlockResult(BlockStatus.NEW)
#: What ``Picker.on_block`` returns for the commonest block: new, its piece not complete
#: yet, nothing to cancel. Always this one object, so a caller's hot path may test it with
#: ``is`` and leave every other answer to its general path.
NEW_BLOCK = _NEW
_DUPLICATE = BlockResult(BlockStatus.DUPLICATE)
_UNEXPECTED = BlockResult(BlockStatus.UNEXPECTED)


@dataclass(frozen=True, slots=True)
class HashFailure:
    """What ``on_piece_failed`` decided.

    Attributes:
        piece: the piece that failed; it is missing again.
        contributors: the peers that delivered blocks of it.
        ban: peers to disconnect and refuse: the only contributor of a bad piece, or a
            contributor to ``ban_after_failures`` bad pieces.
    """

    piece: int
    contributors: frozenset[PeerKey]
    ban: frozenset[PeerKey]


@dataclass(frozen=True, slots=True)
class PickerStats:
    """A snapshot of download progress."""

    num_pieces: int
    pieces_have: int
    pieces_wanted: int
    pieces_downloading: int
    bytes_done: int
    bytes_wanted: int
    #: Wanted bytes we do not have yet: the tracker's ``left``.
    left: int
    blocks_requested: int
    peers: int
    seeds: int
    in_endgame: bool
    is_complete: bool


class _Download:
    """Block states of one piece that is being downloaded."""

    __slots__ = ("contrib", "free", "hint", "num_blocks", "piece", "received", "req", "state")

    def __init__(self, piece: int, num_blocks: int, padding: tuple[int, ...] = ()) -> None:
        self.piece = piece
        self.num_blocks = num_blocks
        self.state = bytearray(num_blocks)
        self.req: list[dict[PeerKey, float] | None] = [None] * num_blocks
        self.contrib: list[PeerKey | None] = [None] * num_blocks
        for b in padding:  # wholly padding: never requested, present from the start
            self.state[b] = _RECEIVED
        self.free = num_blocks - len(padding)
        self.received = len(padding)
        #: No free block below this index.
        self.hint = 0


class _PeerState:
    __slots__ = ("count", "has", "requests")

    def __init__(self, num_pieces: int) -> None:
        #: 0/1 per piece; ``None`` once the peer has every piece (counted in ``seeds``).
        self.has: bytearray | None = bytearray(num_pieces)
        self.count = 0
        #: Outstanding requests in the order they were sent, with the time sent.
        self.requests: dict[Block, float] = {}


class _Buckets:
    """The startable pieces of one priority level, ordered by availability.

    ``order[start[k]:start[k + 1]]`` holds the pieces of availability ``k``; the last entry of
    ``start`` is ``len(order)``. ``pos`` (shared by all levels) maps a piece to its index.
    """

    __slots__ = ("order", "pos", "start")

    def __init__(self, pos: list[int]) -> None:
        self.order: list[int] = []
        self.start: list[int] = [0]
        self.pos = pos

    def _swap(self, i: int, j: int) -> None:
        order, pos = self.order, self.pos
        a, b = order[i], order[j]
        order[i], order[j] = b, a
        pos[b], pos[a] = i, j

    def inc(self, p: int, a: int) -> None:
        """Availability of ``p`` goes from ``a`` to ``a + 1``."""
        start = self.start
        if a + 2 >= len(start):
            start.append(start[-1])
        last = start[a + 1] - 1
        self._swap(self.pos[p], last)
        start[a + 1] = last

    def dec(self, p: int, a: int) -> None:
        """Availability of ``p`` goes from ``a`` to ``a - 1``."""
        start = self.start
        first = start[a]
        self._swap(self.pos[p], first)
        start[a] = first + 1

    def add(self, p: int, a: int) -> None:
        start, order = self.start, self.order
        while len(start) - 1 <= a:
            start.append(start[-1])
        order.append(p)
        self.pos[p] = len(order) - 1
        start[-1] += 1
        k = len(start) - 2
        while k > a:
            first = start[k]
            self._swap(self.pos[p], first)
            start[k] = first + 1
            k -= 1

    def remove(self, p: int, a: int) -> None:
        start, order = self.start, self.order
        k = a
        top = len(start) - 2
        while k < top:
            last = start[k + 1] - 1
            self._swap(self.pos[p], last)
            start[k + 1] = last
            k += 1
        self._swap(self.pos[p], len(order) - 1)
        order.pop()
        start[-1] -= 1
        self.pos[p] = -1


class Picker:
    """Decides which blocks to request; see the module docstring for the rules.

    Args:
        num_pieces: pieces in the torrent.
        piece_length: bytes per piece (the last piece may be shorter).
        total_length: bytes in the torrent.
        have: pieces we already have (resume data or a check of the files).
        priorities: one priority per piece (0..7); default 4 for all.
        sequential: request pieces in index order (streaming) instead of rarest first.
        rng: the source of randomness (seed it in tests).
        random_first_pieces: pick at random until we have this many pieces.
        ban_after_failures: a peer that contributed to this many failed pieces is banned.
        endgame_max_requesters: in endgame, how many peers may be asked for one block.
        max_partials: with this many pieces downloading, partial pieces are always picked
            before new ones, to bound the half-done pieces; default twice the peers, at least 32.
        padding: ``(offset, length)`` byte ranges of the payload that are padding (see the
            module docstring).

    Raises:
        ValueError: the geometry is inconsistent or a priority is out of range.
    """

    def __init__(
        self,
        num_pieces: int,
        piece_length: int,
        total_length: int,
        *,
        have: Iterable[int] = (),
        priorities: Sequence[int] | None = None,
        sequential: bool = False,
        rng: random.Random | None = None,
        random_first_pieces: int = 4,
        ban_after_failures: int = 2,
        endgame_max_requesters: int = 3,
        max_partials: int | None = None,
        padding: Iterable[tuple[int, int]] = (),
    ) -> None:
        if piece_length <= 0 or total_length <= 0 or num_pieces <= 0:
            raise ValueError("piece_length, total_length and num_pieces must be positive")
        if num_pieces != -(-total_length // piece_length):
            raise ValueError(f"{num_pieces} pieces of {piece_length} bytes cannot hold {total_length} bytes")
        self.num_pieces = num_pieces
        self.piece_length = piece_length
        self.total_length = total_length
        self.sequential = sequential
        self.random_first_pieces = random_first_pieces
        self.ban_after_failures = ban_after_failures
        self.endgame_max_requesters = endgame_max_requesters
        self.max_partials = max_partials
        self._rng = rng if rng is not None else _SHARED_RNG
        self._last_piece_length = total_length - (num_pieces - 1) * piece_length
        self._blocks_per_piece = -(-piece_length // BLOCK_SIZE)
        #: Per piece with padding: its blocks that are wholly padding, and its padding bytes.
        self._pad_blocks: dict[int, tuple[int, ...]] = {}
        self._pad_bytes: dict[int, int] = {}
        self._map_padding(padding)

        self._have = bytearray(num_pieces)
        self._num_have = 0
        self._bytes_have = 0
        for i in have:
            if not 0 <= i < num_pieces:
                raise ValueError(f"have: piece {i} out of range")
            if not self._have[i]:
                self._have[i] = 1
                self._num_have += 1
                self._bytes_have += self.data_size(i)
        self._prio = bytearray([DEFAULT_PRIORITY] * num_pieces)
        self._avail = [0] * num_pieces
        self._seeds = 0
        self._pos = [-1] * num_pieces
        self._levels: dict[int, _Buckets] = {}
        self._downloads: dict[int, _Download] = {}
        #: Downloads that still have free blocks.
        self._open: dict[int, _Download] = {}
        self._peers: dict[PeerKey, _PeerState] = {}
        self._failures: dict[PeerKey, int] = {}
        self._seq_next = 0
        self._bound: tuple[int, int] | None = None
        self._free_blocks = 0
        self._requested = 0
        self._bytes_wanted = 0
        self._wanted_done = 0
        self._pieces_wanted = 0
        if priorities is not None:
            self._set_priorities(priorities)
        self._rebuild()

    # ------------------------------------------------------------------ geometry

    def piece_size(self, piece: int) -> int:
        """Bytes in ``piece`` (the last one may be shorter)."""
        return self._last_piece_length if piece == self.num_pieces - 1 else self.piece_length

    def num_blocks(self, piece: int) -> int:
        return -(-self.piece_size(piece) // BLOCK_SIZE)

    def data_size(self, piece: int) -> int:
        """Bytes of ``piece`` that are not padding."""
        return self.piece_size(piece) - self._pad_bytes.get(piece, 0)

    def padding_blocks(self, piece: int) -> tuple[int, ...]:
        """Indices of the blocks of ``piece`` that are wholly padding (never requested)."""
        return self._pad_blocks.get(piece, ())

    def _wanted_blocks(self, piece: int) -> int:
        return self.num_blocks(piece) - len(self._pad_blocks.get(piece, ()))

    def _map_padding(self, padding: Iterable[tuple[int, int]]) -> None:
        pad_bytes = self._pad_bytes
        whole: dict[int, list[int]] = {}
        for offset, length in padding:
            end = offset + length
            if length <= 0:
                continue
            if offset < 0 or end > self.total_length:
                raise ValueError(f"padding {offset}+{length} lies outside the torrent")
            for p in range(offset // self.piece_length, (end - 1) // self.piece_length + 1):
                base = p * self.piece_length
                lo, hi = max(offset, base) - base, min(end, base + self.piece_size(p)) - base
                pad_bytes[p] = pad_bytes.get(p, 0) + hi - lo
                first = -(-lo // BLOCK_SIZE)
                for b in range(first, self.num_blocks(p)):
                    if min((b + 1) * BLOCK_SIZE, self.piece_size(p)) > hi:
                        break
                    whole.setdefault(p, []).append(b)
        self._pad_blocks = {p: tuple(sorted(set(bs))) for p, bs in whole.items()}

    def block(self, piece: int, index: int) -> Block:
        """The ``index``-th block of ``piece`` (the last block of a piece may be shorter)."""
        offset = index * BLOCK_SIZE
        return Block(piece, offset, min(BLOCK_SIZE, self.piece_size(piece) - offset))

    def blocks(self, piece: int) -> list[Block]:
        return [self.block(piece, b) for b in range(self.num_blocks(piece))]

    # ------------------------------------------------------------------ priorities

    def _set_priorities(self, priorities: Sequence[int]) -> None:
        if len(priorities) != self.num_pieces:
            raise ValueError(f"{len(priorities)} priorities for {self.num_pieces} pieces")
        for p in priorities:
            if not SKIP <= p <= MAX_PRIORITY:
                raise ValueError(f"priority {p} is not within {SKIP}..{MAX_PRIORITY}")
        self._prio = bytearray(priorities)

    def set_piece_priorities(self, priorities: Sequence[int]) -> None:
        """Set every piece's priority (0 = skip, 1..7, higher first). O(pieces).

        A downloading piece that becomes skipped keeps its received blocks; no new block of it
        is requested. Requests already sent stay outstanding.

        Raises:
            ValueError: wrong length or a priority out of range.
        """
        self._set_priorities(priorities)
        self._rebuild()

    def set_file_priorities(self, file_lengths: Sequence[int], priorities: Sequence[int]) -> None:
        """Derive piece priorities from file priorities (files in torrent order).

        A piece gets the highest priority of the files it overlaps, so a piece shared by a
        skipped file and a wanted one is still downloaded. Empty files overlap nothing.

        Raises:
            ValueError: lengths do not add up to the torrent, or a priority is out of range.
        """
        if len(file_lengths) != len(priorities):
            raise ValueError(f"{len(priorities)} priorities for {len(file_lengths)} files")
        if sum(file_lengths) != self.total_length or any(n < 0 for n in file_lengths):
            raise ValueError("file lengths do not add up to the torrent's length")
        piece_prio = [SKIP] * self.num_pieces
        offset = 0
        for length, prio in zip(file_lengths, priorities, strict=True):
            if not SKIP <= prio <= MAX_PRIORITY:
                raise ValueError(f"priority {prio} is not within {SKIP}..{MAX_PRIORITY}")
            if length:
                first = offset // self.piece_length
                last = (offset + length - 1) // self.piece_length
                for i in range(first, last + 1):
                    piece_prio[i] = max(piece_prio[i], prio)
            offset += length
        self.set_piece_priorities(piece_prio)

    def piece_priority(self, piece: int) -> int:
        return self._prio[piece]

    def _rebuild(self) -> None:
        """Recompute the ordered arrays and the counters from scratch (rare operations)."""
        self._bound = None
        pos = self._pos
        for i in range(self.num_pieces):
            pos[i] = -1
        by_level: dict[int, list[int]] = {}
        for i in range(self.num_pieces):
            if self._prio[i] and not self._have[i] and i not in self._downloads:
                by_level.setdefault(self._prio[i], []).append(i)
        self._levels = {}
        avail = self._avail
        for level in sorted(by_level, reverse=True):
            pieces = by_level[level]
            self._rng.shuffle(pieces)
            pieces.sort(key=avail.__getitem__)  # stable: ties stay shuffled
            b = _Buckets(pos)
            b.order = pieces
            top = max(avail[p] for p in pieces)
            b.start = [0] * (top + 2)
            for k in range(top + 2):
                b.start[k] = len(pieces)
            for idx in range(len(pieces) - 1, -1, -1):
                pos[pieces[idx]] = idx
                b.start[avail[pieces[idx]]] = idx
            for k in range(top, -1, -1):  # empty buckets start where the next one starts
                b.start[k] = min(b.start[k], b.start[k + 1])
            self._levels[level] = b
        free = 0
        wanted = 0
        wanted_done = 0
        pieces_wanted = 0
        for i in range(self.num_pieces):
            if not self._prio[i]:
                continue
            size = self.data_size(i)
            wanted += size
            pieces_wanted += 1
            if self._have[i]:
                wanted_done += size
            else:
                d = self._downloads.get(i)
                free += d.free if d is not None else self._wanted_blocks(i)
        self._free_blocks = free
        self._bytes_wanted = wanted
        self._wanted_done = wanted_done
        self._pieces_wanted = pieces_wanted
        self._seq_next = 0

    # ------------------------------------------------------------------ availability

    def _peer(self, peer: PeerKey) -> _PeerState:
        st = self._peers.get(peer)
        if st is None:
            st = self._peers[peer] = _PeerState(self.num_pieces)
        return st

    def _inc(self, i: int) -> None:
        a = self._avail[i]
        self._bound = None
        if self._pos[i] >= 0:
            self._levels[self._prio[i]].inc(i, a)
        self._avail[i] = a + 1

    def _dec(self, i: int) -> None:
        a = self._avail[i]
        self._bound = None
        if self._pos[i] >= 0:
            self._levels[self._prio[i]].dec(i, a)
        self._avail[i] = a - 1

    def _forget_pieces(self, st: _PeerState) -> None:
        if st.has is None:
            self._seeds -= 1
        else:
            has = st.has
            for i in range(self.num_pieces):
                if has[i]:
                    self._dec(i)
        st.has = bytearray(self.num_pieces)
        st.count = 0

    def on_peer_have(self, peer: PeerKey, piece: int) -> bool:
        """The peer announced one piece (BEP 3 ``have``).

        Returns:
            True when we want that piece and do not have it (a reason to be interested).

        Raises:
            ValueError: ``piece`` is out of range (the codec should have refused it).
        """
        if not 0 <= piece < self.num_pieces:
            raise ValueError(f"have: piece {piece} out of range")
        st = self._peer(peer)
        has = st.has
        if has is not None and not has[piece]:
            has[piece] = 1
            st.count += 1
            self._inc(piece)
            if st.count == self.num_pieces:  # now a seed: keep it in O(1) form
                for i in range(self.num_pieces):
                    self._dec(i)
                st.has = None
                self._seeds += 1
        return self.wants(piece)

    def on_peer_bitfield(self, peer: PeerKey, has: Sequence[int]) -> bool:
        """The peer's whole piece set: one truthy/falsy entry per piece (e.g. a ``bytearray``).

        Replaces whatever the peer announced before.

        Returns:
            True when the peer has a piece we want and lack.

        Raises:
            ValueError: ``has`` does not have one entry per piece.
        """
        if len(has) != self.num_pieces:
            raise ValueError(f"bitfield of {len(has)} entries for {self.num_pieces} pieces")
        st = self._peer(peer)
        self._forget_pieces(st)
        mine = bytearray(1 if x else 0 for x in has)
        count = sum(mine)
        if count == self.num_pieces:
            st.has = None
            self._seeds += 1
            return self._num_wanted_missing() > 0
        st.has = mine
        st.count = count
        for i in range(self.num_pieces):
            if mine[i]:
                self._inc(i)
        return self.is_interesting(peer)

    def on_peer_have_all(self, peer: PeerKey) -> bool:
        """BEP 6 ``have all``. Returns True when we want anything."""
        st = self._peer(peer)
        self._forget_pieces(st)
        st.has = None
        self._seeds += 1
        return self._num_wanted_missing() > 0

    def on_peer_have_none(self, peer: PeerKey) -> None:
        """BEP 6 ``have none`` (also registers a peer that sent no bitfield)."""
        self._forget_pieces(self._peer(peer))

    def on_peer_disconnect(self, peer: PeerKey) -> list[Block]:
        """The peer is gone: its pieces no longer count and its requests are freed.

        Returns:
            The blocks that were outstanding with it (now free for other peers).
        """
        st = self._peers.get(peer)
        if st is None:
            return []
        freed = self.abort_requests(peer)
        self._forget_pieces(st)
        del self._peers[peer]
        return freed

    def availability(self, piece: int) -> int:
        """How many connected peers have ``piece``."""
        return self._seeds + self._avail[piece]

    def peer_has(self, peer: PeerKey, piece: int) -> bool:
        st = self._peers.get(peer)
        return st is not None and (st.has is None or bool(st.has[piece]))

    def wants(self, piece: int) -> bool:
        """True when ``piece`` is wanted (priority > 0) and we do not have it."""
        return bool(self._prio[piece]) and not self._have[piece]

    def is_interesting(self, peer: PeerKey) -> bool:
        """Does ``peer`` have a piece we want and lack? O(pieces) for a partial peer."""
        st = self._peers.get(peer)
        if st is None:
            return False
        if st.has is None:
            return self._num_wanted_missing() > 0
        has, prio, mine = st.has, self._prio, self._have
        return any(has[i] and prio[i] and not mine[i] for i in range(self.num_pieces))

    def _num_wanted_missing(self) -> int:
        return self._bytes_wanted - self._wanted_done

    # ------------------------------------------------------------------ picking

    def pick(
        self,
        peer: PeerKey,
        count: int,
        *,
        now: float = 0.0,
        restrict_to: Collection[int] | None = None,
        start_new: bool = True,
    ) -> list[Block]:
        """Choose up to ``count`` blocks to request from ``peer`` and record them as requested.

        Args:
            peer: a peer whose pieces we were told about (``on_peer_bitfield`` etc.).
            count: free slots in that peer's request pipeline.
            now: the caller's clock, stored as the request time.
            restrict_to: only these pieces (e.g. the BEP 6 allowed-fast set while choked).
            start_new: False to only continue pieces already downloading (e.g. when the
                caller holds too many unfinished pieces in memory).

        Returns:
            The blocks, in the order to request them; fewer (or none) when the peer has
            nothing more we want.
        """
        st = self._peers.get(peer)
        if st is None or count <= 0:
            return []
        has = st.has
        out: list[Block] = []
        prio = self._prio

        # 1 and 2. Pieces already downloading ("partial") and new pieces, merged: a partial
        # piece comes first unless a new one is rarer (or more urgent). libtorrent does the
        # same by giving downloading pieces a slightly better sort key. Taking partials
        # strictly first would make a seed send blocks of pieces the swarm already has
        # plenty of, whenever choking left them half-done. Partials go first regardless
        # while we pick at random, and once there are too many of them.
        avail = self._avail
        cands: list[_Download] = []
        if self._open:
            cands = [
                d
                for p, d in self._open.items()
                if prio[p] and (has is None or has[p]) and (restrict_to is None or p in restrict_to)
            ]
            if len(cands) > 1:
                if self.sequential:
                    cands.sort(key=lambda d: d.piece)
                else:
                    cands.sort(key=lambda d: (-prio[d.piece], avail[d.piece], d.free))
        max_partials = self.max_partials if self.max_partials is not None else max(32, 2 * len(self._peers))
        random_phase = self._num_have < self.random_first_pieces and not self.sequential
        partials_first = random_phase or len(self._downloads) >= max_partials
        ci = 0
        new_p = -2  # not looked up yet
        if self.sequential:
            bound = (MAX_PRIORITY + 1, 0)  # index order decides: always compare
        elif partials_first:
            bound = (0, 0)
        else:
            bound = self._new_piece_bound()
        while len(out) < count:
            d = cands[ci] if ci < len(cands) else None
            if d is not None and (partials_first or (prio[d.piece], -avail[d.piece]) >= bound):
                # No new piece can beat it: skip the look-up (the common case).
                self._take_free(d, peer, st, count, out, now)
                ci += 1
                continue
            if new_p == -2:
                new_p = self._next_new_piece(has, restrict_to) if start_new else -1
            if d is None and new_p < 0:
                break
            if d is not None and (new_p < 0 or self._before(d.piece, new_p)):
                self._take_free(d, peer, st, count, out, now)
                ci += 1
            else:
                self._take_free(self._start(new_p), peer, st, count, out, now)
                new_p = -2

        # 3. Endgame: ask for blocks others were asked for.
        if len(out) < count and self._free_blocks == 0 and self._downloads:
            self._pick_endgame(peer, st, count, out, now, restrict_to)
        return out

    def _new_piece_bound(self) -> tuple[int, int]:
        """``(priority, -availability)`` of the best startable piece of any peer.

        A partial piece at least this good is picked without looking for a new piece. Cached
        until availability or the set of startable pieces changes.
        """
        bound = self._bound
        if bound is None:
            bound = (0, 0)
            for level in sorted(self._levels, reverse=True):
                start = self._levels[level].start
                k = next((k for k in range(len(start) - 1) if start[k] < start[k + 1]), -1)
                if k >= 0:
                    bound = (level, -k)
                    break
            self._bound = bound
        return bound

    def _before(self, a: int, b: int) -> bool:
        """Should partial piece ``a`` be picked before new piece ``b``?"""
        if self.sequential:
            return a < b
        pa, pb = self._prio[a], self._prio[b]
        return pa > pb or (pa == pb and self._avail[a] <= self._avail[b])

    def _take_free(
        self, d: _Download, peer: PeerKey, st: _PeerState, count: int, out: list[Block], now: float
    ) -> None:
        state, req = d.state, d.req
        b = d.hint
        n = d.num_blocks
        p = d.piece
        size = self.piece_size(p)
        requests = st.requests
        taken = 0
        k = min(count - len(out), n - b)
        if k > 0 and state.count(_FREE, b, b + k) == k:
            # A run of free blocks from the hint (a new piece, or the rest of one), the
            # usual case: taken at once, as the loop below would, block by block.
            end = b + k
            state[b:end] = _REQUESTED_BYTE * k
            req[b:end] = [{peer: now} for _ in range(k)]
            blks = [
                _new_block(Block, (p, o, BLOCK_SIZE))
                for o in range(b * BLOCK_SIZE, end * BLOCK_SIZE, BLOCK_SIZE)
            ]
            if end * BLOCK_SIZE > size:  # the piece's short last block
                blks[-1] = Block(p, (end - 1) * BLOCK_SIZE, size - (end - 1) * BLOCK_SIZE)
            requests.update(dict.fromkeys(blks, now))
            out += blks
            taken = k
            b = end
        while b < n and len(out) < count and taken < d.free:
            if state[b] == _FREE:
                state[b] = _REQUESTED
                req[b] = {peer: now}
                offset = b * BLOCK_SIZE
                left = size - offset
                # Block(...) without the named tuple's Python-level __new__ (once per block).
                blk = _new_block(Block, (p, offset, BLOCK_SIZE if left > BLOCK_SIZE else left))
                requests[blk] = now
                out.append(blk)
                taken += 1
                if taken == d.free:
                    b += 1
                    break
            b += 1
        d.hint = b
        d.free -= taken
        self._requested += taken
        if self._prio[p]:
            self._free_blocks -= taken
        if d.free == 0:
            self._open.pop(p, None)

    def _start(self, p: int) -> _Download:
        self._bound = None
        level = self._levels[self._prio[p]]
        level.remove(p, self._avail[p])
        d = _Download(p, self.num_blocks(p), self._pad_blocks.get(p, ()))
        self._downloads[p] = d
        self._open[p] = d
        return d

    def _next_new_piece(self, has: bytearray | None, restrict_to: Collection[int] | None) -> int:
        """A piece to start for a peer with piece set ``has``, or -1."""
        if self.sequential:
            return self._next_sequential(has, restrict_to)
        rng = self._rng
        random_first = self._num_have < self.random_first_pieces
        for level in sorted(self._levels, reverse=True):
            b = self._levels[level]
            order = b.order
            if not order:
                continue
            if random_first:
                spans = [(0, len(order))]
            else:
                start = b.start
                spans = [(start[k], start[k + 1]) for k in range(len(start) - 1) if start[k] < start[k + 1]]
            for s, e in spans:
                r = rng.randrange(s, e) if e - s > 1 else s
                if has is None and restrict_to is None:
                    return order[r]
                # Start at a random place in the bucket and wrap around: random ties
                # without scanning the whole bucket when the first candidate fits.
                for idx in chain(range(r, e), range(s, r)):
                    p = order[idx]
                    if (has is None or has[p]) and (restrict_to is None or p in restrict_to):
                        return p
        return -1

    def _next_sequential(self, has: bytearray | None, restrict_to: Collection[int] | None) -> int:
        prio, mine, pos = self._prio, self._have, self._pos
        i = self._seq_next
        n = self.num_pieces
        # Skip the prefix of pieces nobody needs to start again.
        while i < n and pos[i] < 0:
            i += 1
        self._seq_next = i
        while i < n:
            if (
                pos[i] >= 0
                and prio[i]
                and not mine[i]
                and (has is None or has[i])
                and (restrict_to is None or i in restrict_to)
            ):
                return i
            i += 1
        return -1

    def _pick_endgame(
        self,
        peer: PeerKey,
        st: _PeerState,
        count: int,
        out: list[Block],
        now: float,
        restrict_to: Collection[int] | None,
    ) -> None:
        has = st.has
        prio = self._prio
        cap = self.endgame_max_requesters
        cands: list[tuple[int, int, int]] = []
        for p, d in self._downloads.items():
            if not prio[p] or d.received == d.num_blocks:
                continue
            if (has is not None and not has[p]) or (restrict_to is not None and p not in restrict_to):
                continue
            state, req = d.state, d.req
            for b in range(d.num_blocks):
                if state[b] == _REQUESTED:
                    r = req[b]
                    assert r is not None
                    if peer not in r and len(r) < cap:
                        cands.append((len(r), p, b))
        cands.sort()
        for _, p, b in cands[: count - len(out)]:
            d = self._downloads[p]
            r = d.req[b]
            assert r is not None
            r[peer] = now
            blk = self.block(p, b)
            st.requests[blk] = now
            out.append(blk)

    # ------------------------------------------------------------------ block events

    def on_block(self, peer: PeerKey, block: Block | tuple[int, int, int]) -> BlockResult:
        """A block's payload arrived from ``peer``.

        An unrequested or late block (its request timed out) is still accepted if we need it.
        Called once per block received: plain tuples serve as keys (a ``Block`` is a tuple
        with the same hash), and the usual results are shared constants.

        Returns:
            ``NEW`` (write it; ``piece_complete`` says to hash the piece once written, and
            ``cancels`` lists endgame duplicates to cancel), ``DUPLICATE`` or ``UNEXPECTED``
            (drop the payload).
        """
        p, offset, length = block
        st = self._peers.get(peer)
        if st is not None:
            # A tuple of the same values is the same key (no cast(): a call per block).
            st.requests.pop(block, None)  # type: ignore[arg-type]
        if not 0 <= p < self.num_pieces or offset % BLOCK_SIZE or offset < 0:
            return _UNEXPECTED
        size = self._last_piece_length if p == self.num_pieces - 1 else self.piece_length
        if offset >= size or length != min(BLOCK_SIZE, size - offset):
            return _UNEXPECTED
        if self._have[p]:
            return _DUPLICATE
        d = self._downloads.get(p)
        if d is None:
            if not self._prio[p]:
                return _UNEXPECTED
            d = self._start(p)
        b = offset // BLOCK_SIZE
        s = d.state[b]
        if s == _RECEIVED:
            return _DUPLICATE
        cancels: tuple[tuple[PeerKey, Block], ...] = ()
        if s == _FREE:
            d.free -= 1
            if self._prio[p]:
                self._free_blocks -= 1
            if d.free == 0:
                self._open.pop(p, None)
        else:
            self._requested -= 1
            r = d.req[b]
            assert r is not None
            if len(r) > 1 or peer not in r:
                blk = Block(p, offset, length)
                others = [q for q in r if q != peer]
                for q in others:
                    self._peers[q].requests.pop(blk, None)
                cancels = tuple((q, blk) for q in others)
        d.req[b] = None
        d.state[b] = _RECEIVED
        d.contrib[b] = peer
        d.received += 1
        if d.received == d.num_blocks:
            return BlockResult(BlockStatus.NEW, True, cancels)
        return BlockResult(BlockStatus.NEW, False, cancels) if cancels else _NEW

    def on_blocks(self, peer: PeerKey, blocks: Iterable[tuple[int, int, Sized]]) -> list[BlockResult]:
        """:meth:`on_block` for each ``(piece, offset, payload)`` of a run from ``peer``, in
        order (a block's length is its payload's); the same results, the same state after.

        The common case (a whole block of a piece that is not the last one, asked of this
        peer alone) is done here without a call per block; any other goes to ``on_block``.
        """
        out: list[BlockResult] = []
        append = out.append
        st = self._peers.get(peer)
        if st is None:
            for p, offset, data in blocks:
                append(self.on_block(peer, (p, offset, len(data))))
            return out
        requests_pop = st.requests.pop
        downloads_get = self._downloads.get
        last = self.num_pieces - 1
        end = self.piece_length - BLOCK_SIZE  # the last offset of a whole block in a piece
        new = _NEW
        for p, offset, data in blocks:
            length = len(data)
            d = downloads_get(p)
            if (
                d is None
                or p == last
                or length != BLOCK_SIZE
                or offset % BLOCK_SIZE
                or not 0 <= offset <= end
                or self._have[p]
            ):
                append(self.on_block(peer, (p, offset, length)))
                continue
            b = offset // BLOCK_SIZE
            r = d.req[b]
            if d.state[b] != _REQUESTED or r is None or len(r) != 1 or peer not in r:
                append(self.on_block(peer, (p, offset, length)))
                continue
            requests_pop((p, offset, length), None)  # type: ignore[call-overload]  # a Block's key
            self._requested -= 1
            d.req[b] = None
            d.state[b] = _RECEIVED
            d.contrib[b] = peer
            d.received += 1
            append(BlockResult(BlockStatus.NEW, True) if d.received == d.num_blocks else new)
        return out

    def _free_request(self, peer: PeerKey, blk: Block) -> bool:
        """Withdraw ``peer``'s request for ``blk``; True when the block became free."""
        d = self._downloads.get(blk.piece)
        if d is None:
            return False
        b = blk.offset // BLOCK_SIZE
        if d.state[b] != _REQUESTED:
            return False
        r = d.req[b]
        assert r is not None
        if r.pop(peer, None) is None or r:
            return False
        d.req[b] = None
        d.state[b] = _FREE
        d.free += 1
        self._requested -= 1
        if b < d.hint:
            d.hint = b
        if self._prio[blk.piece]:
            self._free_blocks += 1
        self._open[blk.piece] = d
        return True

    def abort_requests(
        self, peer: PeerKey, blocks: Iterable[Block | tuple[int, int, int]] | None = None
    ) -> list[Block]:
        """Requests to ``peer`` that will not be answered (choke, reject, disconnect).

        Args:
            blocks: the requests to withdraw; all of the peer's when ``None``.

        Returns:
            The withdrawn blocks that are now free for any peer (endgame duplicates that are
            still requested elsewhere are not listed).
        """
        st = self._peers.get(peer)
        if st is None:
            return []
        if blocks is None:
            todo = list(st.requests)
            st.requests.clear()
        else:
            todo = []
            for blk in blocks:
                blk = Block(*blk)
                if st.requests.pop(blk, None) is not None:
                    todo.append(blk)
        return [blk for blk in todo if self._free_request(peer, blk)]

    def on_request_timeout(self, peer: PeerKey, block: Block | tuple[int, int, int]) -> bool:
        """The request took too long: another peer may take the block.

        If the slow peer delivers it after all, ``on_block`` still accepts it.

        Returns:
            True when the block is now free.
        """
        return bool(self.abort_requests(peer, [block]))

    def expired_requests(self, peer: PeerKey, now: float, timeout_s: float) -> list[Block]:
        """Requests to ``peer`` older than ``timeout_s`` (oldest first; not withdrawn)."""
        st = self._peers.get(peer)
        if st is None:
            return []
        out = []
        for blk, t in st.requests.items():
            if now - t < timeout_s:
                break  # requests are kept in the order they were made
            out.append(blk)
        return out

    def outstanding(self, peer: PeerKey) -> list[Block]:
        """The blocks requested from ``peer`` and not yet answered, oldest first."""
        st = self._peers.get(peer)
        return list(st.requests) if st is not None else []

    # ------------------------------------------------------------------ hash results

    def on_piece_verified(self, piece: int) -> bool:
        """The piece's hash matched (or a check of the files found it good).

        Returns:
            True when this is news: the caller sends ``have`` to its peers.
        """
        if self._have[piece]:
            return False
        self._have[piece] = 1
        self._num_have += 1
        self._bytes_have += self.data_size(piece)
        if self._prio[piece]:
            self._wanted_done += self.data_size(piece)
        d = self._downloads.pop(piece, None)
        if d is not None:
            self._forget_requests(piece, d)
            if self._prio[piece]:
                self._free_blocks -= d.free
        else:
            self._bound = None
            if self._pos[piece] >= 0:
                self._levels[self._prio[piece]].remove(piece, self._avail[piece])
            if self._prio[piece]:
                self._free_blocks -= self._wanted_blocks(piece)
        return True

    def _forget_requests(self, piece: int, d: _Download) -> None:
        """Drop every outstanding request for ``piece``, whose download just ended."""
        self._open.pop(piece, None)
        for b in range(d.num_blocks):
            r = d.req[b]
            if r:
                blk = self.block(piece, b)
                for q in r:
                    self._peers[q].requests.pop(blk, None)
                self._requested -= 1

    def on_piece_failed(self, piece: int) -> HashFailure:
        """The piece's hash did not match: it is missing again; blame its contributors.

        Returns:
            Who contributed and whom to ban (see :class:`HashFailure`).

        Raises:
            ValueError: we already have the piece (it was verified before).
        """
        if self._have[piece]:
            raise ValueError(f"piece {piece} is verified; it cannot fail")
        d = self._downloads.pop(piece, None)
        if d is None:
            return HashFailure(piece, frozenset(), frozenset())
        self._forget_requests(piece, d)
        contributors = frozenset(q for q in d.contrib if q is not None)
        ban = set()
        for q in contributors:
            n = self._failures.get(q, 0) + 1
            self._failures[q] = n
            if n >= self.ban_after_failures or len(contributors) == 1:
                ban.add(q)
        self._bound = None
        if self._prio[piece]:
            self._free_blocks += self._wanted_blocks(piece) - d.free
            self._levels.setdefault(self._prio[piece], _Buckets(self._pos)).add(piece, self._avail[piece])
        if piece < self._seq_next:
            self._seq_next = piece
        return HashFailure(piece, contributors, frozenset(ban))

    def failures(self, peer: PeerKey) -> int:
        """How many failed pieces ``peer`` contributed to."""
        return self._failures.get(peer, 0)

    # ------------------------------------------------------------------ progress

    def have(self, piece: int) -> bool:
        return bool(self._have[piece])

    def have_pieces(self) -> list[int]:
        return [i for i in range(self.num_pieces) if self._have[i]]

    @property
    def num_have(self) -> int:
        return self._num_have

    @property
    def bytes_done(self) -> int:
        """Bytes of the verified pieces, padding left out."""
        return self._bytes_have

    @property
    def bytes_wanted(self) -> int:
        """Bytes of the wanted pieces (priority > 0), verified or not."""
        return self._bytes_wanted

    @property
    def pieces_wanted(self) -> int:
        """How many pieces are wanted (priority > 0)."""
        return self._pieces_wanted

    @property
    def left(self) -> int:
        """Wanted bytes we do not have yet (the tracker's ``left``)."""
        return self._bytes_wanted - self._wanted_done

    @property
    def is_complete(self) -> bool:
        """Every wanted piece is verified."""
        return self._wanted_done == self._bytes_wanted

    @property
    def in_endgame(self) -> bool:
        """Every missing wanted block has been requested at least once."""
        return self._free_blocks == 0 and not self.is_complete

    def statistics(self) -> PickerStats:
        return PickerStats(
            num_pieces=self.num_pieces,
            pieces_have=self._num_have,
            pieces_wanted=self._pieces_wanted,
            pieces_downloading=len(self._downloads),
            bytes_done=self.bytes_done,
            bytes_wanted=self._bytes_wanted,
            left=self.left,
            blocks_requested=self._requested,
            peers=len(self._peers),
            seeds=self._seeds,
            in_endgame=self.in_endgame,
            is_complete=self.is_complete,
        )
