"""Metadata exchange (BEP 9, ``ut_metadata`` over the BEP 10 extension protocol), sans-IO.

A peer that joined from a magnet link knows only the info hash. It learns the size of the
``info`` dict from the ``metadata_size`` key of a peer's extension handshake, asks for it in
16 KiB pieces, and checks the SHA-1 of the whole against the info hash.

Three parts, none of which does I/O or reads a clock (the caller passes ``now``):

* the codec: :func:`encode` / :func:`decode` of the three messages, :class:`MetadataRequest`,
  :class:`MetadataData` (a bencoded dict followed by the raw piece) and :class:`MetadataReject`;
* :class:`MetadataAssembler`, the fetching side: which piece to ask which peer for, timeouts and
  rejects handed back to the pool, verification, and catching the peer that sent bad pieces;
* :class:`MetadataServer`, the serving side: answers requests from our raw ``info`` bytes.

And :func:`metainfo_from_info`, which turns verified ``info`` bytes plus a magnet's trackers into
a :class:`~torrent.proto.metainfo.Metainfo`.

Rules of the assembler:

1. The metadata size is the one most non-banned peers advertised (first seen wins ties; a copy
   under way keeps its size while a peer can serve it); peers advertising another size are not
   asked. Sizes over ``max_size`` (16 MiB) are refused.
2. A piece is asked of one peer at a time; a reject or a timeout gives it back to the pool and
   counts a strike against that peer; after ``max_strikes`` strikes the peer is not asked again.
   After a reject the peer is left alone for ``reject_backoff_s``.
3. When every piece is in, the SHA-1 of the whole must equal the info hash. If it does not and
   one peer sent everything, that peer is banned. If several did, nobody can tell who lied: the
   pieces are remembered (peer, digest) and the next copy is fetched from a single peer; once a
   copy verifies, every peer whose remembered piece differs from it is banned (as the swarm does
   for piece data).

Left out: the ``total_size`` of BEP 9 data messages is checked against the size we chose, so a
peer that disagrees is dropped rather than trusted.
"""

from __future__ import annotations

import collections
import enum
import hashlib
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Union

from torrent.errors import BencodeError, MetainfoError, RemoteProtocolError
from torrent.proto import bencoding
from torrent.proto.metainfo import Metainfo
from torrent.types import InfoHash

__all__ = [
    "EXTENSION_NAME",
    "MAX_METADATA_SIZE",
    "METADATA_PIECE_SIZE",
    "MetadataAssembler",
    "MetadataData",
    "MetadataMessage",
    "MetadataReject",
    "MetadataRequest",
    "MetadataServer",
    "MsgType",
    "decode",
    "encode",
    "metainfo_from_info",
]

#: The BEP 10 extension name (the key in the handshake's ``m`` dict).
EXTENSION_NAME = "ut_metadata"
#: BEP 9: "The metadata is handled in blocks of 16KiB (16384 Bytes)."
METADATA_PIECE_SIZE = 16 * 1024
#: Largest metadata we accept; real info dicts are well under 10 MiB (libtorrent caps at 4 MiB
#: by default), and the bound keeps a lying peer from making us allocate without limit.
MAX_METADATA_SIZE = 16 * 1024 * 1024
#: Largest ut_metadata dict we parse (the part before a data message's piece).
_MAX_DICT = 4096


class MsgType(enum.IntEnum):
    """``msg_type`` values (BEP 9)."""

    REQUEST = 0
    DATA = 1
    REJECT = 2


@dataclass(frozen=True, slots=True)
class MetadataRequest:
    """``{'msg_type': 0, 'piece': N}``: send me piece N of the metadata."""

    piece: int


@dataclass(frozen=True, slots=True)
class MetadataData:
    """``{'msg_type': 1, 'piece': N, 'total_size': S}`` followed by the piece's bytes."""

    piece: int
    total_size: int
    data: bytes


@dataclass(frozen=True, slots=True)
class MetadataReject:
    """``{'msg_type': 2, 'piece': N}``: I will not send piece N."""

    piece: int


MetadataMessage = Union[MetadataRequest, MetadataData, MetadataReject]


def num_pieces(size: int) -> int:
    """How many 16 KiB metadata pieces ``size`` bytes make."""
    return -(-size // METADATA_PIECE_SIZE)


def piece_size(size: int, piece: int) -> int:
    """Bytes in metadata piece ``piece`` of a ``size``-byte info dict (the last may be short)."""
    return min(METADATA_PIECE_SIZE, size - piece * METADATA_PIECE_SIZE)


# -- codec ----------------------------------------------------------------------------------------


def encode(msg: MetadataMessage) -> bytes:
    """The extended-message payload for ``msg`` (what follows the extended id byte).

    Raises:
        ValueError: a negative piece, or a data piece over 16 KiB.
    """
    if msg.piece < 0:
        raise ValueError("metadata piece index must not be negative")
    if isinstance(msg, MetadataRequest):
        return bencoding.encode({b"msg_type": MsgType.REQUEST.value, b"piece": msg.piece})
    if isinstance(msg, MetadataReject):
        return bencoding.encode({b"msg_type": MsgType.REJECT.value, b"piece": msg.piece})
    if len(msg.data) > METADATA_PIECE_SIZE:
        raise ValueError(f"metadata piece of {len(msg.data)} bytes (at most {METADATA_PIECE_SIZE})")
    head = bencoding.encode(
        {b"msg_type": MsgType.DATA.value, b"piece": msg.piece, b"total_size": msg.total_size}
    )
    return head + bytes(msg.data)


def decode(payload: bytes) -> MetadataMessage:
    """Parse a ut_metadata payload (after the extended id byte).

    Raises:
        RemoteProtocolError: not a bencoded dict, a missing or mistyped key, an unknown
            ``msg_type``, trailing bytes after a request or reject, or a data piece over 16 KiB.
    """
    payload = bytes(payload)
    end = _dict_end(payload)
    try:
        fields = bencoding.decode(payload[:end])
    except BencodeError as exc:
        raise RemoteProtocolError(f"ut_metadata: not bencoded ({exc})") from None
    if not isinstance(fields, dict):
        raise RemoteProtocolError("ut_metadata: not a dictionary")
    msg_type = fields.get(b"msg_type")
    piece = fields.get(b"piece")
    if not isinstance(msg_type, int) or isinstance(msg_type, bool):
        raise RemoteProtocolError("ut_metadata: 'msg_type' missing or not an integer")
    if not isinstance(piece, int) or piece < 0:
        raise RemoteProtocolError("ut_metadata: 'piece' missing or not a non-negative integer")
    trailer = payload[end:]
    if msg_type == MsgType.DATA:
        total = fields.get(b"total_size")
        if not isinstance(total, int) or total <= 0:
            raise RemoteProtocolError("ut_metadata: data without a positive 'total_size'")
        if len(trailer) > METADATA_PIECE_SIZE:
            raise RemoteProtocolError(f"ut_metadata: data piece of {len(trailer)} bytes (at most 16 KiB)")
        return MetadataData(piece, total, trailer)
    if trailer:
        raise RemoteProtocolError(f"ut_metadata: {len(trailer)} bytes after a msg_type {msg_type} dict")
    if msg_type == MsgType.REQUEST:
        return MetadataRequest(piece)
    if msg_type == MsgType.REJECT:
        return MetadataReject(piece)
    raise RemoteProtocolError(f"ut_metadata: unknown msg_type {msg_type}")


def _dict_end(data: bytes) -> int:
    """Offset just past the bencoded dict at the start of ``data`` (the data message's piece
    follows it, so the whole payload is not one bencoded value)."""
    if not data.startswith(b"d"):
        raise RemoteProtocolError("ut_metadata: payload does not start with a dictionary")
    stack = 0
    pos = 0
    limit = min(len(data), _MAX_DICT)
    while pos < limit:
        lead = data[pos]
        if lead in (0x64, 0x6C):  # d, l
            stack += 1
            if stack > 16:
                raise RemoteProtocolError("ut_metadata: dictionary nested too deeply")
            pos += 1
        elif lead == 0x65:  # e
            stack -= 1
            pos += 1
            if stack == 0:
                return pos
        elif lead == 0x69:  # i
            end = data.find(b"e", pos + 1, limit)
            if end < 0:
                break
            pos = end + 1
        elif 0x30 <= lead <= 0x39:
            colon = data.find(b":", pos, min(limit, pos + 12))
            digits = data[pos:colon]
            if colon < 0 or not digits.isdigit():
                raise RemoteProtocolError("ut_metadata: bad string length in dictionary")
            pos = colon + 1 + int(digits)
        else:
            raise RemoteProtocolError(f"ut_metadata: unexpected byte {lead:#04x} in dictionary")
    raise RemoteProtocolError("ut_metadata: dictionary truncated or longer than 4 KiB")


# -- serving --------------------------------------------------------------------------------------


class MetadataServer:
    """Answers ut_metadata requests from our raw ``info`` bytes (the serving side of BEP 9).

    Args:
        info_bytes: the bencoded info dict exactly as its SHA-1 is the info hash.
    """

    def __init__(self, info_bytes: bytes) -> None:
        if not info_bytes:
            raise ValueError("info_bytes must not be empty")
        self.info_bytes = bytes(info_bytes)
        self.metadata_size = len(self.info_bytes)
        self.num_pieces = num_pieces(self.metadata_size)

    def handshake_fields(self) -> dict[str, int]:
        """What our BEP 10 handshake adds for BEP 9: ``metadata_size``."""
        return {"metadata_size": self.metadata_size}

    def answer(self, msg: MetadataMessage) -> MetadataData | MetadataReject | None:
        """The reply to a received message: data or a reject for a request, None otherwise.

        A request for a piece past the end is rejected (BEP 9 leaves the choice open; a
        reject keeps a confused peer from waiting on a timeout).
        """
        if not isinstance(msg, MetadataRequest):
            return None
        if msg.piece >= self.num_pieces:
            return MetadataReject(msg.piece)
        start = msg.piece * METADATA_PIECE_SIZE
        return MetadataData(
            msg.piece, self.metadata_size, self.info_bytes[start : start + METADATA_PIECE_SIZE]
        )


# -- fetching -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Source:
    size: int | None
    strikes: int = 0
    blocked_until: float = 0.0
    outstanding: int = 0


@dataclass(slots=True)
class _Copy:
    """One attempt at the whole metadata."""

    size: int
    pieces: list[bytes | None]
    senders: list[Hashable | None]
    requested: dict[int, tuple[Hashable, float]] = field(default_factory=dict)


class MetadataAssembler:
    """Fetches and verifies the metadata for ``info_hash`` from whichever peers have it.

    Drive it with the peers' events and ask it what to send::

        asm.add_peer(key, handshake.metadata_size)        # their BEP 10 handshake said ut_metadata
        while (piece := asm.next_request(key, now)) is not None:
            send(MetadataRequest(piece))
        asm.on_message(key, decode(payload), now)         # data or reject from that peer
        asm.tick(now)                                     # timeouts
        for bad in asm.take_banned(): drop(bad)
        if asm.done: info_bytes = asm.result

    Args:
        info_hash: the SHA-1 the metadata must hash to (for a v2-only link: the
            truncated v2 hash, which names the torrent on the wire).
        info_hash_v2: BEP 52: the SHA-256 the metadata must hash to as well.
        max_size: the largest metadata accepted.
        request_timeout_s: a request unanswered this long goes back to the pool.
        reject_backoff_s: after a reject, do not ask that peer again for this long.
        max_strikes: rejects and timeouts after which a peer is not asked again.
        max_outstanding: requests in flight per peer.

    Attributes:
        size: the metadata size being fetched (None until a peer advertised one).
        done: True once :attr:`result` holds verified bytes.
        hash_failures: copies that did not hash to the info hash.
        conflict: for a link with both hashes (a hybrid's ``btih`` and ``btmh``), why
            the fetch cannot succeed when a copy matched one hash and not the other;
            None otherwise. Its sender is not banned.
    """

    def __init__(
        self,
        info_hash: bytes,
        *,
        info_hash_v2: bytes | None = None,
        max_size: int = MAX_METADATA_SIZE,
        request_timeout_s: float = 10.0,
        reject_backoff_s: float = 5.0,
        max_strikes: int = 3,
        max_outstanding: int = 8,
    ) -> None:
        if len(info_hash) != 20:
            raise ValueError("info_hash must be 20 bytes")
        self.info_hash = InfoHash(bytes(info_hash))
        # BEP 52: a v2 (btmh) link is checked with SHA-256 over the same bytes; a hybrid
        # link with both hashes must match both.
        self.info_hash_v2 = info_hash_v2
        self._check_v1 = info_hash_v2 is None or info_hash_v2[:20] != self.info_hash
        self.max_size = max_size
        self.request_timeout_s = request_timeout_s
        self.reject_backoff_s = reject_backoff_s
        self.max_strikes = max_strikes
        self.max_outstanding = max_outstanding
        self._sources: dict[Hashable, _Source] = {}
        self._banned: set[Hashable] = set()
        self._to_drop: list[Hashable] = []
        self._copy: _Copy | None = None
        #: After a multi-source copy failed: fetch the next copy from this one peer.
        self._single_source = False
        self._single: Hashable | None = None
        #: (piece, peer) -> SHA-1 of what it sent, for copies that failed verification.
        self._suspects: dict[tuple[int, Hashable], bytes] = {}
        self.hash_failures = 0
        self.result: bytes | None = None
        #: Set when a hybrid link's btih and btmh name different torrents (nothing can pass).
        self.conflict: str | None = None

    # -- queries ----------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.result is not None

    @property
    def size(self) -> int | None:
        return self._copy.size if self._copy is not None else None

    def progress(self) -> tuple[int, int]:
        """(pieces received, pieces in the current copy); (0, 0) before the size is known."""
        if self._copy is None:
            return (0, 0)
        return (sum(1 for p in self._copy.pieces if p is not None), len(self._copy.pieces))

    def is_banned(self, peer: Hashable) -> bool:
        return peer in self._banned

    @property
    def banned_count(self) -> int:
        """Peers banned for sending metadata that failed the hash check."""
        return len(self._banned)

    def usable_peers(self) -> int:
        """Peers that may still be asked (not banned, not struck out)."""
        return sum(1 for k, s in self._sources.items() if self._usable(k, s))

    def take_banned(self) -> list[Hashable]:
        """Peers found to have sent bad metadata since the last call: drop them."""
        out, self._to_drop = self._to_drop, []
        return out

    # -- peers ------------------------------------------------------------------------------------

    def add_peer(self, peer: Hashable, metadata_size: int | None) -> bool:
        """A peer's extension handshake offered ut_metadata with ``metadata_size``.

        Returns:
            True when the peer may be asked; False when it is banned, or its size is missing,
            not positive or over ``max_size`` (such a peer is useless for fetching).
        """
        if peer in self._banned or self.done:
            return False
        if metadata_size is None or not 0 < metadata_size <= self.max_size:
            self._sources.pop(peer, None)
            return False
        old = self._sources.get(peer)
        self._sources[peer] = _Source(metadata_size, strikes=old.strikes if old else 0)
        self._choose_size()
        return True

    def remove_peer(self, peer: Hashable) -> None:
        """The peer disconnected: its outstanding requests go back to the pool."""
        self._sources.pop(peer, None)
        copy = self._copy
        if copy is not None:
            for piece in [p for p, (k, _) in copy.requested.items() if k == peer]:
                del copy.requested[piece]
        if self._single == peer:
            self._restart_single()

    def _usable(self, peer: Hashable, src: _Source) -> bool:
        return peer not in self._banned and src.strikes < self.max_strikes

    def _choose_size(self) -> None:
        copy = self._copy
        started = copy is not None and (copy.requested or any(p is not None for p in copy.pieces))
        if (
            started
            and copy is not None
            and any(s.size == copy.size and self._usable(k, s) for k, s in self._sources.items())
        ):
            return  # a copy under way keeps its size while someone can still serve it
        counts = collections.Counter(s.size for k, s in self._sources.items() if self._usable(k, s))
        if not counts:
            return
        size = counts.most_common(1)[0][0]
        assert size is not None
        if self._copy is None or self._copy.size != size:
            n = num_pieces(size)
            self._copy = _Copy(size, [None] * n, [None] * n)

    # -- requests ---------------------------------------------------------------------------------

    def next_request(self, peer: Hashable, now: float) -> int | None:
        """The next piece to ask ``peer`` for, marked as requested; None when there is none now."""
        src = self._sources.get(peer)
        copy = self._copy
        if (
            src is None
            or copy is None
            or self.done
            or self.conflict is not None
            or not self._usable(peer, src)
        ):
            return None
        if src.size != copy.size or now < src.blocked_until or src.outstanding >= self.max_outstanding:
            return None
        if self._single_source:
            if self._single is None:
                self._single = peer
            elif self._single != peer:
                return None
        for piece, data in enumerate(copy.pieces):
            if data is None and piece not in copy.requested:
                copy.requested[piece] = (peer, now)
                src.outstanding += 1
                return piece
        return None

    def on_message(self, peer: Hashable, msg: MetadataMessage, now: float) -> None:
        """A data or reject message from ``peer`` (requests are for :class:`MetadataServer`).

        Raises:
            RemoteProtocolError: a data message whose ``total_size`` or length does not fit the
                metadata we asked for. Drop the peer (and call :meth:`remove_peer`).
        """
        copy = self._copy
        if isinstance(msg, MetadataRequest) or copy is None or self.done:
            return
        asked = copy.requested.get(msg.piece)
        if asked is None or asked[0] != peer:
            return  # unsolicited, or answered after a timeout handed it to another peer
        del copy.requested[msg.piece]
        src = self._sources.get(peer)
        if src is not None:
            src.outstanding = max(0, src.outstanding - 1)
        if isinstance(msg, MetadataReject):
            self._strike(peer, now, backoff=True)
            return
        if msg.total_size != copy.size:
            raise RemoteProtocolError(
                f"ut_metadata: total_size {msg.total_size} differs from the advertised {copy.size}"
            )
        expected = piece_size(copy.size, msg.piece)
        if len(msg.data) != expected:
            raise RemoteProtocolError(
                f"ut_metadata: piece {msg.piece} has {len(msg.data)} bytes, expected {expected}"
            )
        copy.pieces[msg.piece] = msg.data
        copy.senders[msg.piece] = peer
        if all(p is not None for p in copy.pieces):
            self._verify(copy)

    def tick(self, now: float) -> None:
        """Time out requests older than ``request_timeout_s`` (a strike each)."""
        copy = self._copy
        if copy is None or self.done:
            return
        expired = [(p, k) for p, (k, sent) in copy.requested.items() if now - sent >= self.request_timeout_s]
        for piece, peer in expired:
            del copy.requested[piece]
            src = self._sources.get(peer)
            if src is not None:
                src.outstanding = max(0, src.outstanding - 1)
            self._strike(peer, now, backoff=False)

    def _strike(self, peer: Hashable, now: float, *, backoff: bool) -> None:
        src = self._sources.get(peer)
        if src is None:
            return
        src.strikes += 1
        if backoff:
            src.blocked_until = now + self.reject_backoff_s
        if not self._usable(peer, src):
            if self._single == peer:
                self._restart_single()
            self._choose_size()

    # -- verification -----------------------------------------------------------------------------

    def _verify(self, copy: _Copy) -> None:
        whole = b"".join(p for p in copy.pieces if p is not None)
        v1_ok = not self._check_v1 or hashlib.sha1(whole).digest() == self.info_hash
        v2_ok = self.info_hash_v2 is None or hashlib.sha256(whole).digest() == self.info_hash_v2
        if self._check_v1 and self.info_hash_v2 is not None and v1_ok != v2_ok:
            # The bytes are the torrent one of the link's hashes names and not the other's:
            # the link names two torrents, no copy can ever match both, and the peer that
            # sent this one is honest.
            self.hash_failures += 1
            self.conflict = (
                f"the metadata peers send matches the link's {'btih' if v1_ok else 'btmh'} hash but not "
                f"its {'btmh' if v1_ok else 'btih'} hash: the link names two different torrents"
            )
            self._copy = None
            return
        if v1_ok and v2_ok:
            self.result = whole
            for (piece, peer), digest in self._suspects.items():
                start = piece * METADATA_PIECE_SIZE
                good = whole[start : start + METADATA_PIECE_SIZE]
                if hashlib.sha1(good).digest() != digest:
                    self._ban(peer)
            self._suspects.clear()
            return
        self.hash_failures += 1
        senders = {s for s in copy.senders if s is not None}
        if len(senders) == 1:
            self._ban(next(iter(senders)))
        else:
            for piece, (data, sender) in enumerate(zip(copy.pieces, copy.senders, strict=True)):
                if data is not None and sender is not None:
                    self._suspects[(piece, sender)] = hashlib.sha1(data).digest()
            self._single_source = True
        self._single = None
        self._copy = None
        self._choose_size()

    def _restart_single(self) -> None:
        """The single source went away: start the copy over from another peer."""
        self._single = None
        if self._copy is not None:
            size = self._copy.size
            n = num_pieces(size)
            self._copy = _Copy(size, [None] * n, [None] * n)

    def _ban(self, peer: Hashable) -> None:
        if peer in self._banned:
            return
        self._banned.add(peer)
        self._to_drop.append(peer)
        self._sources.pop(peer, None)
        copy = self._copy
        if copy is not None:
            for piece in [p for p, (k, _) in copy.requested.items() if k == peer]:
                del copy.requested[piece]

    def ban_all(self, peers: Iterable[Hashable]) -> None:
        """Ban these peers (e.g. the caller caught them lying some other way)."""
        for peer in peers:
            self._ban(peer)
        self._choose_size()


# -- building the torrent -------------------------------------------------------------------------


def metainfo_from_info(info_bytes: bytes, trackers: Iterable[str] = ()) -> Metainfo:
    """A :class:`Metainfo` for verified ``info`` bytes, with ``trackers`` as the announce-list
    (one tier each, tried in order, as libtorrent does for a magnet's ``tr``).

    Raises:
        MetainfoError: the info dict does not validate (a peer sent well-hashed nonsense, or a
            magnet pointed at a torrent we cannot handle).
    """
    urls = list(dict.fromkeys(trackers))
    top: dict[bytes, object] = {b"info": bencoding.Raw(info_bytes)}
    if urls:
        top[b"announce"] = urls[0].encode()
        top[b"announce-list"] = [[u.encode()] for u in urls]
    try:
        data = bencoding.encode(top)
    except BencodeError as exc:
        raise MetainfoError(f"cannot build the torrent: {exc}") from None
    return Metainfo.from_bytes(data)
