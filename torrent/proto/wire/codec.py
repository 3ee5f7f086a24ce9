"""Stateless peer-wire encoding: the handshake, one message at a time, and the framing of a stream.

* :func:`encode_handshake` / :func:`parse_handshake` / :func:`peek_info_hash`: BEP 3's 68-byte
  handshake (a listener peeks at the info hash before it knows which torrent to build for).
* :func:`encode`: one message, with no connection state and no validation against a torrent
  (the connection's ``send`` checks the state and then encodes with the same structs).
* :class:`FrameBuffer`: reassembles length-prefixed messages from reads of any size, checking
  each length against the table of :mod:`.limits` before buffering the message.
* :class:`InPlaceFrameBuffer`: the same framing inside one reused buffer that reads go
  straight into (asyncio's ``BufferedProtocol``), so nothing is copied on the way to the
  caller.

The struct layouts below are shared with :mod:`.connection`, whose PIECE and REQUEST paths pack
and unpack them inline for speed.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Sequence
from typing import Final

from torrent.errors import BencodeError, LocalProtocolError, RemoteProtocolError
from torrent.proto import bencoding
from torrent.proto.wire.events import (
    EXTENDED_HANDSHAKE_ID,
    V2_UPGRADE_BIT,
    AllowedFast,
    Bitfield,
    Block,
    Cancel,
    Choke,
    Event,
    ExtendedMessage,
    ExtensionHandshake,
    Handshake,
    Hashes,
    HashReject,
    HashRequest,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    KeepAlive,
    MessageId,
    NotInterested,
    Port,
    RejectRequest,
    Request,
    SuggestPiece,
    Unchoke,
)
from torrent.types import InfoHash

__all__ = [
    "EXT_HDR_STRUCT",
    "HANDSHAKE_LENGTH",
    "HASH_FIELDS_STRUCT",
    "HASH_MSG_STRUCT",
    "INDEX_MSG_STRUCT",
    "LEN_ID_STRUCT",
    "MESSAGE_NAMES",
    "PIECE_HDR_STRUCT",
    "PORT_MSG_STRUCT",
    "PROTOCOL_NAME",
    "PSTR_PREFIX",
    "TRIPLE_MSG_STRUCT",
    "U32X2_STRUCT",
    "U32X3_STRUCT",
    "U32_STRUCT",
    "FrameBuffer",
    "InPlaceFrameBuffer",
    "check_prefix",
    "encode",
    "encode_handshake",
    "encode_hash_message",
    "encode_triple",
    "parse_handshake",
    "peek_info_hash",
    "peek_v2_upgrade",
]

PROTOCOL_NAME: Final = b"BitTorrent protocol"  # BEP 3: pstr, preceded by its length byte (19)
PSTR_PREFIX: Final = bytes([len(PROTOCOL_NAME)]) + PROTOCOL_NAME
#: pstrlen + pstr + 8 reserved bytes + info_hash + peer_id (BEP 3).
HANDSHAKE_LENGTH: Final = 1 + 19 + 8 + 20 + 20
#: Bytes of the handshake up to and including the info hash: what a listener needs to route it.
_INFO_HASH_END: Final = 1 + 19 + 8 + 20

LEN_ID_STRUCT = struct.Struct(">IB")
U32_STRUCT = struct.Struct(">I")
U32X2_STRUCT = struct.Struct(">II")
U32X3_STRUCT = struct.Struct(">III")
INDEX_MSG_STRUCT = struct.Struct(">IBI")
TRIPLE_MSG_STRUCT = struct.Struct(">IBIII")
PIECE_HDR_STRUCT = struct.Struct(">IBII")
PORT_MSG_STRUCT = struct.Struct(">IBH")
EXT_HDR_STRUCT = struct.Struct(">IBB")
#: BEP 52 hash request / hashes / hash reject header: length, id, pieces root, base layer,
#: index, length, proof layers.
HASH_MSG_STRUCT = struct.Struct(">IB32sIIII")
#: The same fields without the length prefix and id (as the receive side reads them).
HASH_FIELDS_STRUCT = struct.Struct(">32sIIII")


def encode_hash_message(
    msg_id: int,
    root: bytes,
    base_layer: int,
    index: int,
    length: int,
    proof_layers: int,
    hashes: Sequence[bytes] = (),
) -> bytes:
    """A BEP 52 hash request, hashes or hash reject message."""
    body = b"".join(hashes)
    return HASH_MSG_STRUCT.pack(49 + len(body), msg_id, root, base_layer, index, length, proof_layers) + body


def _names_table() -> list[str]:
    names = [f"unknown (id {i})" for i in range(256)]
    for member in MessageId:
        names[member] = member.name.lower().replace("_", " ")
    return names


#: A readable name for every message id (unknown ones included), for error messages.
MESSAGE_NAMES: Final = _names_table()


def encode_handshake(info_hash: bytes, peer_id: bytes, reserved: bytes = bytes(8)) -> bytes:
    """The 68-byte BEP 3 handshake.

    Raises:
        LocalProtocolError: a field has the wrong length.
    """
    if len(info_hash) != 20 or len(peer_id) != 20 or len(reserved) != 8:
        raise LocalProtocolError(
            "handshake needs a 20-byte info hash, a 20-byte peer id and 8 reserved bytes"
        )
    return PSTR_PREFIX + bytes(reserved) + bytes(info_hash) + bytes(peer_id)


def check_prefix(data: bytes | memoryview) -> None:
    n = min(len(data), len(PSTR_PREFIX))
    if data[:n] != PSTR_PREFIX[:n]:
        raise RemoteProtocolError(
            "not a BitTorrent handshake (expected the 19-byte 'BitTorrent protocol' string;"
            " encrypted or another protocol?)"
        )


def parse_handshake(data: bytes | memoryview) -> Handshake:
    """Parse exactly :data:`HANDSHAKE_LENGTH` bytes into a :class:`Handshake`.

    Raises:
        RemoteProtocolError: wrong length or not the BitTorrent protocol string.
    """
    if len(data) != HANDSHAKE_LENGTH:
        raise RemoteProtocolError(f"handshake is {HANDSHAKE_LENGTH} bytes, got {len(data)}")
    check_prefix(data)
    raw = bytes(data)
    return Handshake(info_hash=raw[28:48], peer_id=raw[48:68], reserved=raw[20:28])


def peek_info_hash(data: bytes | memoryview) -> InfoHash | None:
    """Read the info hash from the first bytes of an incoming connection, consuming nothing.

    Args:
        data: the bytes received so far on the connection (at least its start).

    Returns:
        The 20-byte info hash, or ``None`` while fewer than 48 bytes have arrived.

    Raises:
        RemoteProtocolError: the bytes so far cannot start a BitTorrent handshake.
    """
    check_prefix(data)
    if len(data) < _INFO_HASH_END:
        return None
    return InfoHash(bytes(data[28:48]))


def peek_v2_upgrade(data: bytes | memoryview) -> bool:
    """Whether an incoming handshake's first bytes set BEP 52's upgrade bit (False while
    its reserved bytes have not all arrived)."""
    check_prefix(data)
    return len(data) >= 28 and bool(data[20 + V2_UPGRADE_BIT[0]] & V2_UPGRADE_BIT[1])


def encode_triple(msg_id: int, index: int, begin: int, length: int) -> bytes:
    """A request, cancel or reject request message (an id and three 32-bit fields)."""
    return TRIPLE_MSG_STRUCT.pack(13, msg_id, index, begin, length)


def encode(event: Event, extended_id: int | None = None) -> bytes:
    """Encode one message without any connection state (no validation against a torrent).

    Args:
        event: any sendable event except :class:`Handshake` (use :func:`encode_handshake`).
        extended_id: the peer's id for an :class:`ExtendedMessage`.

    Raises:
        LocalProtocolError: the event cannot be encoded (bad field values, no extended id,
            a receive-only event).
    """
    kind = type(event)
    fixed = _FIXED.get(kind)
    if fixed is not None:
        return fixed
    try:
        if isinstance(event, Block):
            return (
                PIECE_HDR_STRUCT.pack(9 + len(event.data), MessageId.PIECE, event.index, event.begin)
                + event.data
            )
        if isinstance(event, (Request, Cancel, RejectRequest)):
            return encode_triple(_TRIPLE_IDS[kind], event.index, event.begin, event.length)
        if isinstance(event, (Have, SuggestPiece, AllowedFast)):
            return INDEX_MSG_STRUCT.pack(5, _INDEX_IDS[kind], event.index)
        if isinstance(event, Bitfield):
            bits = event.pieces.to_bytes()
            return LEN_ID_STRUCT.pack(1 + len(bits), MessageId.BITFIELD) + bits
        if isinstance(event, Port):
            return PORT_MSG_STRUCT.pack(3, MessageId.PORT, event.port)
        if isinstance(event, (HashRequest, HashReject)):
            msg_id = MessageId.HASH_REQUEST if isinstance(event, HashRequest) else MessageId.HASH_REJECT
            return encode_hash_message(
                msg_id, event.pieces_root, event.base_layer, event.index, event.length, event.proof_layers
            )
        if isinstance(event, Hashes):
            return encode_hash_message(
                MessageId.HASHES,
                event.pieces_root,
                event.base_layer,
                event.index,
                event.length,
                event.proof_layers,
                event.hashes,
            )
        if isinstance(event, ExtensionHandshake):
            payload = bencoding.encode(dict(event.fields))
            return EXT_HDR_STRUCT.pack(2 + len(payload), MessageId.EXTENDED, EXTENDED_HANDSHAKE_ID) + payload
        if isinstance(event, ExtendedMessage):
            if extended_id is None or not 1 <= extended_id <= 255:
                raise LocalProtocolError(
                    f"extended message {event.name!r} needs the peer's extended id (1..255)"
                )
            payload = bytes(event.payload)
            return EXT_HDR_STRUCT.pack(2 + len(payload), MessageId.EXTENDED, extended_id) + payload
    except (struct.error, BencodeError) as exc:
        raise LocalProtocolError(f"cannot encode {type(event).__name__}: {exc}") from None
    raise LocalProtocolError(f"{type(event).__name__} cannot be sent")


#: Messages without a payload: always the same bytes.
_FIXED: Final[dict[type, bytes]] = {
    KeepAlive: b"\x00\x00\x00\x00",
    Choke: b"\x00\x00\x00\x01\x00",
    Unchoke: b"\x00\x00\x00\x01\x01",
    Interested: b"\x00\x00\x00\x01\x02",
    NotInterested: b"\x00\x00\x00\x01\x03",
    HaveAll: b"\x00\x00\x00\x01\x0e",
    HaveNone: b"\x00\x00\x00\x01\x0f",
}
_TRIPLE_IDS: Final[dict[type, int]] = {
    Request: MessageId.REQUEST,
    Cancel: MessageId.CANCEL,
    RejectRequest: MessageId.REJECT_REQUEST,
}
_INDEX_IDS: Final[dict[type, int]] = {
    Have: MessageId.HAVE,
    SuggestPiece: MessageId.SUGGEST_PIECE,
    AllowedFast: MessageId.ALLOWED_FAST,
}


class FrameBuffer:
    """Reassembles length-prefixed messages from arbitrary chunks (h11's ``ReceiveBuffer`` idea).

    Received chunks are kept as they came (immutable ``bytes``). A message lying inside one chunk
    is returned as a read-only view of that chunk without copying; a message straddling chunks is
    copied once, when its last byte has arrived, into a fresh buffer. Chunks under
    :attr:`SMALL_CHUNK` bytes (a peer trickling a byte at a time) are first gathered into a
    bytearray, one extra copy that keeps the work linear in the bytes received.

    Each message's length is checked against ``limits[message_id]`` (an inclusive ``(min, max)``
    for the bytes after the length prefix) as soon as its first five bytes are known, so an
    oversized message is refused before it is buffered.
    """

    __slots__ = ("_buf", "_chunks", "_chunks_len", "_limits", "_names", "_pos", "_small", "_view", "eof")

    #: Chunks smaller than this are gathered into one bytearray instead of queued one by one.
    SMALL_CHUNK = 4096

    def __init__(self, limits: Sequence[tuple[int, int]], names: Sequence[str]) -> None:
        self._limits = limits
        self._names = names
        self._buf: bytes | bytearray = b""
        self._view = memoryview(self._buf)
        self._pos = 0
        self._chunks: deque[bytes | bytearray] = deque()
        self._chunks_len = 0
        self._small = bytearray()
        self.eof = False

    def feed(self, data: bytes) -> None:
        """Append received bytes (``bytes`` only: chunks are kept, not copied)."""
        if len(data) >= self.SMALL_CHUNK:
            if self._small:
                self._flush_small()
            self._chunks.append(data)
            self._chunks_len += len(data)
        elif data:
            self._small += data
            if len(self._small) >= self.SMALL_CHUNK:
                self._flush_small()

    def _flush_small(self) -> None:
        # Hand the gathered bytearray over whole (no copy) and start a fresh one; nothing
        # resizes it again, so views of it stay valid.
        chunk, self._small = self._small, bytearray()
        self._chunks.append(chunk)
        self._chunks_len += len(chunk)

    def __len__(self) -> int:
        """Bytes received and not yet returned."""
        return len(self._buf) - self._pos + self._chunks_len + len(self._small)

    def _advance_chunk(self) -> bool:
        """Make the next stored chunk current; False when nothing is left."""
        if self._chunks:
            self._buf = self._chunks.popleft()
            self._chunks_len -= len(self._buf)
        elif self._small:
            self._buf, self._small = self._small, bytearray()
        else:
            return False
        self._view = memoryview(self._buf).toreadonly()
        self._pos = 0
        return True

    def peek(self, n: int) -> bytes:
        """Up to ``n`` bytes from the front, consuming nothing (a copy; for small ``n``)."""
        out = bytes(self._view[self._pos : self._pos + n])
        if len(out) < n:
            for chunk in self._chunks:
                out += chunk[: n - len(out)]
                if len(out) >= n:
                    return out
            out += self._small[: n - len(out)]
        return out

    def take(self, n: int) -> memoryview | None:
        """Exactly ``n`` bytes from the front (consumed), or None if fewer are buffered."""
        avail = len(self._buf) - self._pos
        if avail >= n:
            start = self._pos
            self._pos = start + n
            return self._view[start : start + n]
        if len(self) < n:
            return None
        parts: list[bytes | memoryview] = []
        if avail:
            parts.append(self._view[self._pos :])
        need = n - avail
        self._buf = b""
        self._view = memoryview(self._buf)
        self._pos = 0
        while need:
            if not self._advance_chunk():  # pragma: no cover - guarded by len() above
                raise AssertionError("frame buffer lost bytes")
            k = min(need, len(self._buf))
            parts.append(self._view[:k])
            self._pos = k
            need -= k
        return memoryview(b"".join(parts))

    def next_frame(self) -> tuple[memoryview, int, int] | None:
        """The next whole message as ``(view, start, length)``, or None until it has arrived.

        ``view[start:start + length]`` is the message after its length prefix (id + payload);
        ``length == 0`` is a keep-alive.

        Raises:
            RemoteProtocolError: the message's length is outside the limits for its id.
        """
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail >= 5:
            length, msg_id = LEN_ID_STRUCT.unpack_from(buf, pos)
            if length == 0:
                self._pos = pos + 4
                return self._view, pos + 4, 0
            lo, hi = self._limits[msg_id]
            if not lo <= length <= hi:
                raise self._length_error(msg_id, length, lo, hi)
            end = pos + 4 + length
            if end <= len(buf):
                self._pos = end
                return self._view, pos + 4, length
            # It straddles reads: copy it out once, when its last byte is here.
            if avail + self._chunks_len + len(self._small) < 4 + length:
                return None
            whole = self.take(4 + length)
            assert whole is not None
            return whole, 4, length
        return self._next_frame_slow()

    def _next_frame_slow(self) -> tuple[memoryview, int, int] | None:
        if len(self._buf) == self._pos:
            # The current chunk is used up: move to the next one (feed never queues empty ones)
            # and try the zero-copy path there.
            if not self._advance_chunk():
                return None
            if len(self._buf) >= 5:
                return self.next_frame()
        total = len(self)
        if total < 4:
            return None
        head = self.peek(5)
        length = U32_STRUCT.unpack_from(head)[0]
        if length == 0:
            self.take(4)
            return self._view, self._pos, 0
        if total < 5:
            return None
        msg_id = head[4]
        lo, hi = self._limits[msg_id]
        if not lo <= length <= hi:
            raise self._length_error(msg_id, length, lo, hi)
        if total < 4 + length:
            return None
        whole = self.take(4 + length)
        assert whole is not None
        return whole, 4, length

    def _length_error(self, msg_id: int, length: int, lo: int, hi: int) -> RemoteProtocolError:
        limit = f"must be {lo}" if lo == hi else f"allowed {lo}..{hi}"
        return RemoteProtocolError(f"{self._names[msg_id]} message with length {length} ({limit})")


class InPlaceFrameBuffer:
    """Frames messages inside one reusable buffer the bytes are read straight into.

    The reader asks :meth:`get_buffer` for a writable view, reads into it (``recv_into``,
    or asyncio's ``BufferedProtocol``), and reports the count with :meth:`buffer_updated`;
    :meth:`feed` copies bytes received some other way. Messages are framed where they lie:
    :meth:`next_frame` returns a read-only view of the buffer itself, so a piece message's
    block is never copied here. The price is a shorter life for that view: it is valid until
    the next :meth:`get_buffer` or :meth:`feed`, which may move an unfinished message to the
    front (at most one message, so a small copy) or reuse the space of consumed ones.

    The buffer starts at :attr:`MIN_CAPACITY` and doubles (up to :attr:`MAX_CAPACITY`) while
    reads fill what they are offered, so a fast connection reads in large steps and a slow
    one holds little: after :attr:`SHRINK_AFTER_READS` small reads in a row, once empty, it
    shrinks to twice the largest of them. One small read does not shrink it: a fast
    connection's reads come small now and then (the reader caught up), and halving on each
    made a new buffer, zeroed and faulted in, about 170 times a GiB. A message longer than
    the buffer (a large extended message) grows it to fit. Lengths are checked against
    ``limits`` as in :class:`FrameBuffer`, before the message is buffered.
    """

    __slots__ = (
        "_buf",
        "_end",
        "_last_read",
        "_limits",
        "_names",
        "_offered",
        "_ro",
        "_small_max",
        "_small_reads",
        "_start",
        "_view",
        "eof",
    )

    #: Smallest and largest buffer in bytes (a read is offered the free room).
    MIN_CAPACITY = 64 * 1024
    MAX_CAPACITY = 1024 * 1024
    #: Free room below which the unfinished message moves to the front before a read.
    MIN_ROOM = 32 * 1024
    #: Reads of under an eighth of the buffer in a row after which it shrinks.
    SHRINK_AFTER_READS = 32

    def __init__(self, limits: Sequence[tuple[int, int]], names: Sequence[str]) -> None:
        self._limits = limits
        self._names = names
        self._start = 0  # first unconsumed byte
        self._end = 0  # one past the last received byte
        self._last_read = 0  # bytes of the last buffer_updated (0 after a feed)
        self._offered = 1  # bytes the last get_buffer offered
        self._small_reads = 0  # reads in a row of under an eighth of the buffer
        self._small_max = 0  # the largest of them
        self._buf = bytearray(self.MIN_CAPACITY)
        self._view = memoryview(self._buf)
        self._ro = self._view.toreadonly()
        self.eof = False

    def __len__(self) -> int:
        """Bytes received and not yet returned."""
        return self._end - self._start

    @property
    def capacity(self) -> int:
        """The buffer's size in bytes."""
        return len(self._buf)

    def get_buffer(self) -> memoryview:
        """The free room at the end of the buffer, to read the next bytes into."""
        start, end = self._start, self._end
        capacity = size = len(self._buf)
        if self._last_read >= self._offered and capacity < self.MAX_CAPACITY:
            size = capacity * 2  # the last read filled what it was offered: read more at once
        elif start == end and self._small_reads >= self.SHRINK_AFTER_READS and capacity > self.MIN_CAPACITY:
            # Small reads only, for a while: give memory back, keeping room for twice theirs.
            size = self.MIN_CAPACITY
            while size < 2 * self._small_max:
                size *= 2
            size = min(size, capacity)
            self._small_reads = self._small_max = 0
        if start == end and size == capacity:
            self._start = self._end = 0
        else:
            frame = self._frame_size()
            need = max(end - start + self.MIN_ROOM, frame)
            while size < need:
                size *= 2
            if size != capacity or capacity - end < self.MIN_ROOM or start + frame > capacity:
                self._move(size)
        view = self._view[self._end :]
        self._offered = len(view)
        return view

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` were written at the start of the view :meth:`get_buffer` returned."""
        if not 0 <= nbytes <= len(self._buf) - self._end:
            raise ValueError(f"{nbytes} bytes do not fit the buffer that was handed out")
        self._end += nbytes
        self._last_read = nbytes
        if nbytes < len(self._buf) // 8 and nbytes < self._offered:  # not held by the room
            self._small_reads += 1
            self._small_max = max(self._small_max, nbytes)
        else:
            self._small_reads = self._small_max = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Copy received bytes in (for bytes that were not read into :meth:`get_buffer`)."""
        n = len(data)
        if len(self._buf) - self._end < n:
            need = max(self._end - self._start + n, self._frame_size())
            size = len(self._buf)
            while size < need:
                size *= 2
            self._move(size)
        end = self._end
        self._view[end : end + n] = data
        self._end = end + n
        self._last_read = 0

    def _frame_size(self) -> int:
        """Bytes of the unfinished message at the front, prefix included, once its length
        is known and within the limits (0 otherwise: :meth:`next_frame` refuses it)."""
        start = self._start
        if self._end - start < 5:
            return 0
        length = U32_STRUCT.unpack_from(self._buf, start)[0]
        lo, hi = self._limits[self._buf[start + 4]]
        return 4 + length if lo <= length <= hi else 0

    def _move(self, size: int) -> None:
        """Put the unconsumed bytes at the front of a buffer of ``size`` bytes: this one when
        it is that size (a move within it), else a new one, never a resize (views handed out
        may still point into the old one)."""
        start, end = self._start, self._end
        kept = end - start
        if size != len(self._buf):
            old = self._view[start:end]
            self._buf = bytearray(size)
            self._view = memoryview(self._buf)
            self._ro = self._view.toreadonly()
            self._view[:kept] = old
        elif start:
            self._view[:kept] = self._view[start:end]  # overlapping: memoryview copies safely
        self._start, self._end = 0, kept

    def peek(self, n: int) -> bytes:
        """Up to ``n`` bytes from the front, consuming nothing (a copy)."""
        return bytes(self._buf[self._start : min(self._end, self._start + n)])

    def take(self, n: int) -> memoryview | None:
        """Exactly ``n`` bytes from the front (consumed), or None if fewer are buffered."""
        start = self._start
        if self._end - start < n:
            return None
        self._start = start + n
        return self._ro[start : start + n]

    def next_frame(self) -> tuple[memoryview, int, int] | None:
        """The next whole message as ``(view, start, length)`` (see :meth:`FrameBuffer.next_frame`).

        Raises:
            RemoteProtocolError: the message's length is outside the limits for its id.
        """
        start = self._start
        avail = self._end - start
        if avail < 4:
            return None
        length = U32_STRUCT.unpack_from(self._buf, start)[0]
        if length == 0:
            self._start = start + 4
            return self._ro, start + 4, 0
        if avail < 5:
            return None
        msg_id = self._buf[start + 4]
        lo, hi = self._limits[msg_id]
        if not lo <= length <= hi:
            limit = f"must be {lo}" if lo == hi else f"allowed {lo}..{hi}"
            raise RemoteProtocolError(f"{self._names[msg_id]} message with length {length} ({limit})")
        if avail < 4 + length:
            return None
        self._start = start + 4 + length
        return self._ro, start + 4, length
