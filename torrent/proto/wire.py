"""Sans-IO peer wire protocol: bytes in → events out, events in → bytes out, one object per connection.

Covers BEP 3 (handshake and every message), BEP 6 (fast extension: have all, have none, suggest
piece, reject request, allowed fast, and the changed choke/cancel semantics), BEP 10 (extension
protocol: the extension handshake and routing of extended message ids to names) and the BEP 5
``port`` message and reserved bit. It does no I/O and reads no clock: the caller passes ``now``
(seconds, any monotonic origin) where time matters. Left out: message stream encryption (MSE/PE),
the contents of ``ut_*`` extension messages (passed through as bytes; :mod:`torrent.proto.ut_metadata` parses BEP 9's).

A connection opened from a magnet link starts before the torrent's geometry is known: create it
with ``piece_length=None, total_length=None``. Until :meth:`PeerProtocol.set_geometry` is called,
the peer's bitfield / have / have all / have none are accepted and remembered (bounded by
:data:`MAX_UNKNOWN_BITFIELD`), its requests are refused, and we may send no request, have or
bitfield (only the extension messages, keep-alives and :class:`HaveNone`).

Usage (one :class:`PeerProtocol` per TCP connection)::

    proto = PeerProtocol(info_hash=ih, our_peer_id=pid, piece_length=plen, total_length=size)
    out = proto.send(Handshake(), now=clock())          # info hash, peer id, reserved bits filled in
    proto.receive_data(chunk, now=clock())              # b"" means EOF
    while (ev := proto.next_event()) is not NEED_DATA:
        match ev:
            case Handshake():         out += proto.send(Bitfield(our_pieces))   # or HaveAll/HaveNone
            case Block(index=i, begin=b, data=d): ...   # d is a memoryview: hand it to the disk writer
            case Choke(voided=lost): ...                # requests the choke voided (without BEP 6)
            case ConnectionClosed(): ...
    out += proto.data_to_send()                         # automatic BEP 6 rejects, usually empty
    writer.write(out)

Incoming connections (how a listener learns the info hash): the initiator's handshake arrives
first, and the session needs its info hash to pick the torrent before it can build the
:class:`PeerProtocol` (which needs that torrent's geometry). Buffer the first bytes of the
connection and call :func:`peek_info_hash` on them: it returns ``None`` until 48 bytes are there,
raises :class:`RemoteProtocolError` as soon as the bytes cannot be a BitTorrent handshake, and
otherwise returns the info hash without consuming anything. Then create the ``PeerProtocol`` for
that torrent, feed it *all* the bytes buffered so far (the handshake included) with
``receive_data``, and answer with ``send(Handshake())``. Both directions therefore drive the same
object the same way; only who sends the handshake first differs.

Policies worth knowing (details on :class:`PeerProtocol`):

* Bitfield / HaveAll / HaveNone only as the first message after the handshake; keep-alives,
  ``port`` and extended messages may come before it (libtorrent sends its BEP 10 handshake
  first). With BEP 6 negotiated, *our* first such message is required before anything else.
* A block answering no outstanding request is an :class:`UnrequestedBlock` event, not an error.
  Unknown message ids, and extended ids we never assigned, are skipped (``ignored_messages``).
* Peer requests we may not serve (we choke it, a piece we never announced, queue full) never
  become events: without BEP 6 they are dropped, with it rejected through :meth:`data_to_send`.
  After a slow disk read, check :meth:`PeerProtocol.is_requested_by_peer` before ``send(Block)``:
  a cancel or a choke may have withdrawn the request meanwhile.
* The clock: pass the same monotonic ``now`` to ``receive_data``/``send``/the queries; rates,
  activity times and the snub timer start at the first one seen.
* Piece sets are :class:`torrent.proto.pieceset.PieceSet` (a bitfield with set semantics).

Public API:

* :class:`PeerProtocol` -- ``receive_data(data, now=)``, ``next_event()`` (an event or
  :data:`NEED_DATA`), ``send(event, now=) -> bytes``, ``data_to_send() -> bytes``, the state
  attributes listed on the class, ``statistics(now)``, ``is_snubbed(now)``,
  ``download_rate_bps(now)``/``upload_rate_bps(now)``, ``num_outstanding()``,
  ``outstanding_requests``/``peer_requests``, ``is_requested_by_peer(request)``, ``piece_size(i)``.
* Events (frozen, slotted): :class:`Handshake`, :class:`KeepAlive`, :class:`Choke`,
  :class:`Unchoke`, :class:`Interested`, :class:`NotInterested`, :class:`Have`,
  :class:`Bitfield`, :class:`Request`, :class:`Block`, :class:`Cancel`, :class:`Port`,
  :class:`HaveAll`, :class:`HaveNone`, :class:`SuggestPiece`, :class:`RejectRequest`,
  :class:`AllowedFast`, :class:`ExtensionHandshake`, :class:`ExtendedMessage`; receive-only:
  :class:`UnrequestedBlock`, :class:`ConnectionClosed`.
* :func:`peek_info_hash`, :func:`encode_handshake`, :func:`parse_handshake`, :func:`encode`
  (stateless encoding of one message), :class:`MessageId`, :class:`FrameBuffer`,
  :class:`RateMeter`, :class:`ConnectionStats`.

Errors: a peer that breaks the protocol makes ``next_event`` raise :class:`RemoteProtocolError`
(naming the violation) after the connection has moved to its error state; drop that peer. Calling
``send`` with something the protocol forbids raises :class:`LocalProtocolError`: a bug on our side.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Union

from torrent.errors import BencodeError, LocalProtocolError, RemoteProtocolError
from torrent.proto import bencoding
from torrent.proto.pieceset import PieceSet
from torrent.types import BLOCK_SIZE, InfoHash, PeerId

__all__ = [
    "HANDSHAKE_LENGTH",
    "MAX_EXTENDED_PAYLOAD",
    "MAX_UNKNOWN_BITFIELD",
    "NEED_DATA",
    "PROTOCOL_NAME",
    "AllowedFast",
    "Bitfield",
    "Block",
    "Cancel",
    "Choke",
    "ConnectionClosed",
    "ConnectionStats",
    "Event",
    "ExtendedMessage",
    "ExtensionHandshake",
    "FrameBuffer",
    "Handshake",
    "Have",
    "HaveAll",
    "HaveNone",
    "Interested",
    "KeepAlive",
    "MessageId",
    "NotInterested",
    "PeerProtocol",
    "Phase",
    "Port",
    "RateMeter",
    "RejectRequest",
    "Request",
    "SuggestPiece",
    "Unchoke",
    "UnrequestedBlock",
    "encode",
    "encode_handshake",
    "parse_handshake",
    "peek_info_hash",
]

# -- constants ------------------------------------------------------------------------------------

PROTOCOL_NAME: Final = b"BitTorrent protocol"  # BEP 3: pstr, preceded by its length byte (19)
_PSTR_PREFIX: Final = bytes([len(PROTOCOL_NAME)]) + PROTOCOL_NAME
#: pstrlen + pstr + 8 reserved bytes + info_hash + peer_id (BEP 3).
HANDSHAKE_LENGTH: Final = 1 + 19 + 8 + 20 + 20
#: Bytes of the handshake up to and including the info hash: what a listener needs to route it.
_INFO_HASH_END: Final = 1 + 19 + 8 + 20

# Reserved bits as (byte index, mask) into the 8 reserved bytes.
EXTENSION_PROTOCOL_BIT: Final = (5, 0x10)  # BEP 10: reserved[5] & 0x10
FAST_EXTENSION_BIT: Final = (7, 0x04)  # BEP 6: reserved[7] & 0x04
DHT_BIT: Final = (7, 0x01)  # BEP 5: reserved[7] & 0x01

#: Largest extended-message payload we accept or send (after the one-byte extended id).
MAX_EXTENDED_PAYLOAD: Final = 1 << 20
#: Largest bitfield accepted before the geometry is known (about a million pieces: more than the
#: piece hashes a 16 MiB info dict can hold).
MAX_UNKNOWN_BITFIELD: Final = 1 << 17
#: Haves remembered before the geometry is known; a peer sending more is dropped.
MAX_UNKNOWN_HAVES: Final = 1 << 16
#: Default cap on requests a peer may have pending with us (libtorrent's default request queue).
DEFAULT_MAX_PEER_REQUESTS: Final = 500


class MessageId(enum.IntEnum):
    """The id byte after the length prefix of every message except keep-alive."""

    # BEP 3
    CHOKE = 0
    UNCHOKE = 1
    INTERESTED = 2
    NOT_INTERESTED = 3
    HAVE = 4
    BITFIELD = 5
    REQUEST = 6
    PIECE = 7
    CANCEL = 8
    # BEP 5
    PORT = 9
    # BEP 6
    SUGGEST_PIECE = 0x0D
    HAVE_ALL = 0x0E
    HAVE_NONE = 0x0F
    REJECT_REQUEST = 0x10
    ALLOWED_FAST = 0x11
    # BEP 10
    EXTENDED = 20


#: Extended message id 0 is the extension handshake (BEP 10).
EXTENDED_HANDSHAKE_ID: Final = 0

_FAST_IDS: Final = frozenset(
    {
        MessageId.SUGGEST_PIECE,
        MessageId.HAVE_ALL,
        MessageId.HAVE_NONE,
        MessageId.REJECT_REQUEST,
        MessageId.ALLOWED_FAST,
    }
)

_LEN_ID = struct.Struct(">IB")
_U32 = struct.Struct(">I")
_U32X2 = struct.Struct(">II")
_U32X3 = struct.Struct(">III")
_HAVE = struct.Struct(">IBI")
_REQ = struct.Struct(">IBIII")
_PIECE_HDR = struct.Struct(">IBII")
_PORT = struct.Struct(">IBH")
_EXT_HDR = struct.Struct(">IBB")

# -- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handshake:
    """The BEP 3 handshake.

    Received handshakes have every field set. To send ours, pass ``Handshake()``: ``None`` fields
    are filled from the connection (our info hash, our peer id, our reserved bits); a field given
    explicitly must agree with the connection (reserved bytes may differ, e.g. to set bits we do
    not interpret).
    """

    info_hash: bytes | None = None
    peer_id: bytes | None = None
    reserved: bytes | None = None

    def _bit(self, bit: tuple[int, int]) -> bool:
        return self.reserved is not None and bool(self.reserved[bit[0]] & bit[1])

    @property
    def extension_protocol(self) -> bool:
        """The sender supports the BEP 10 extension protocol."""
        return self._bit(EXTENSION_PROTOCOL_BIT)

    @property
    def fast_extension(self) -> bool:
        """The sender supports the BEP 6 fast extension."""
        return self._bit(FAST_EXTENSION_BIT)

    @property
    def dht(self) -> bool:
        """The sender runs a BEP 5 DHT node (it may send a ``port`` message)."""
        return self._bit(DHT_BIT)


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A zero-length message (BEP 3): the peer is still there."""


@dataclass(frozen=True, slots=True)
class Request:
    """Ask for ``length`` bytes of piece ``index`` at offset ``begin`` (BEP 3).

    Also the value type of the request bookkeeping (``Choke.voided``, ``outstanding_requests``).
    """

    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class Choke:
    """The sender will not answer requests (BEP 3).

    ``voided`` is filled on a received choke without the fast extension: our requests that the
    choke cancelled implicitly, so the caller can hand those blocks back to the picker. With the
    fast extension it stays empty: every request gets its own :class:`RejectRequest` (BEP 6).
    It takes no part in equality.
    """

    voided: tuple[Request, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class Unchoke:
    """The sender will answer requests again (BEP 3)."""


@dataclass(frozen=True, slots=True)
class Interested:
    """The sender wants pieces we have (BEP 3)."""


@dataclass(frozen=True, slots=True)
class NotInterested:
    """The sender no longer wants anything from us (BEP 3)."""


@dataclass(frozen=True, slots=True)
class Have:
    """The sender has completed and verified piece ``index`` (BEP 3)."""

    index: int


@dataclass(frozen=True, slots=True)
class Bitfield:
    """The sender's pieces, only as the first message after the handshake (BEP 3).

    On a received bitfield ``pieces`` is a copy the caller may keep and change.
    """

    pieces: PieceSet


@dataclass(frozen=True, slots=True)
class Block:
    """BEP 3's ``piece`` message: ``data`` for piece ``index`` at offset ``begin``.

    A received ``Block`` always answers one of our outstanding requests. ``data`` is a read-only
    memoryview into the received bytes: not copied when the message lies inside one read, copied
    once when it straddles reads (plus one gathering copy for reads under 4 KiB). Keep it as long
    as needed; it pins only the read it points into.
    """

    index: int
    begin: int
    data: bytes | memoryview

    @property
    def length(self) -> int:
        return len(self.data)

    def request(self) -> Request:
        """The request this block answers."""
        return Request(self.index, self.begin, len(self.data))


@dataclass(frozen=True, slots=True)
class UnrequestedBlock:
    """A well-formed ``piece`` message that answers no outstanding request of ours.

    It happens legitimately after we cancel (the block was already on the wire) and after a
    choke voided our requests; it also comes from broken or hostile peers. It is not an error: the
    caller may count it (libtorrent calls such bytes *redundant*) and may still use the data if
    the block is still missing. Index, offset and length were checked against the torrent.
    """

    index: int
    begin: int
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class Cancel:
    """Withdraw an earlier request (BEP 3).

    Received only for requests still pending with us (a cancel for anything else is dropped).
    With the fast extension the protocol also queues the :class:`RejectRequest` that BEP 6
    requires in answer (see :meth:`PeerProtocol.data_to_send`).
    """

    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class Port:
    """The sender's DHT node listens on UDP ``port`` (BEP 5)."""

    port: int


@dataclass(frozen=True, slots=True)
class HaveAll:
    """The sender is a seed: every piece (BEP 6; replaces the bitfield)."""


@dataclass(frozen=True, slots=True)
class HaveNone:
    """The sender has no pieces (BEP 6; replaces the bitfield)."""


@dataclass(frozen=True, slots=True)
class SuggestPiece:
    """The sender suggests we download piece ``index`` (BEP 6; advisory)."""

    index: int


@dataclass(frozen=True, slots=True)
class RejectRequest:
    """The sender will not serve this request (BEP 6). Received ones remove it from our queue."""

    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class AllowedFast:
    """We may request piece ``index`` even while choked (BEP 6)."""

    index: int


@dataclass(frozen=True, slots=True)
class ExtensionHandshake:
    """The BEP 10 extension handshake: extended message id 0, a bencoded dict.

    ``fields`` has bytes keys when received. To send ours, leave out ``m``: the protocol fills it
    in from the extensions the connection registered.
    """

    fields: Mapping[bytes | str, Any] = field(default_factory=dict)

    def _get(self, key: str) -> Any:
        if key in self.fields:
            return self.fields[key]
        return self.fields.get(key.encode())

    @property
    def extensions(self) -> dict[str, int]:
        """The ``m`` dict as ``name -> extended id`` (entries that are not ``str -> int`` dropped)."""
        m = self._get("m")
        out: dict[str, int] = {}
        if isinstance(m, dict):
            for name, ext_id in m.items():
                if isinstance(name, bytes):
                    try:
                        name = name.decode("utf-8")
                    except UnicodeDecodeError:
                        continue
                if isinstance(name, str) and isinstance(ext_id, int) and 0 <= ext_id <= 255:
                    out[name] = ext_id
        return out

    @property
    def client(self) -> str | None:
        """The ``v`` string: client name and version."""
        v = self._get("v")
        if isinstance(v, bytes):
            return v.decode("utf-8", "replace")
        return v if isinstance(v, str) else None

    @property
    def listen_port(self) -> int | None:
        """``p``: the TCP port the sender listens on."""
        p = self._get("p")
        return p if isinstance(p, int) and 0 < p < 65536 else None

    @property
    def reqq(self) -> int | None:
        """``reqq``: how many outstanding requests the sender accepts."""
        q = self._get("reqq")
        return q if isinstance(q, int) and q > 0 else None

    @property
    def metadata_size(self) -> int | None:
        """``metadata_size`` (BEP 9): bytes of the info dict."""
        size = self._get("metadata_size")
        return size if isinstance(size, int) and size > 0 else None


@dataclass(frozen=True, slots=True)
class ExtendedMessage:
    """A BEP 10 extended message other than the handshake, routed by extension name.

    Received: ``name`` is the name *we* registered for the id the peer used; ``payload`` is the
    raw bytes after the extended id (e.g. a ``ut_metadata`` dict plus trailing data).
    Sent: the protocol looks up the id the *peer* assigned to ``name``.
    """

    name: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its side of the connection (``receive_data(b"")``) after whole messages."""


Event = Union[
    Handshake,
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have,
    Bitfield,
    Request,
    Block,
    UnrequestedBlock,
    Cancel,
    Port,
    HaveAll,
    HaveNone,
    SuggestPiece,
    RejectRequest,
    AllowedFast,
    ExtensionHandshake,
    ExtendedMessage,
    ConnectionClosed,
]


class _NeedData:
    """Type of :data:`NEED_DATA`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by :meth:`PeerProtocol.next_event` when no whole event is buffered.
NEED_DATA: Final = _NeedData()

_KEEPALIVE: Final = KeepAlive()
_UNCHOKE: Final = Unchoke()
_INTERESTED: Final = Interested()
_NOT_INTERESTED: Final = NotInterested()
_HAVE_ALL: Final = HaveAll()
_HAVE_NONE: Final = HaveNone()
_CLOSED: Final = ConnectionClosed()

# -- stateless encoding ---------------------------------------------------------------------------


def encode_handshake(info_hash: bytes, peer_id: bytes, reserved: bytes = bytes(8)) -> bytes:
    """The 68-byte BEP 3 handshake.

    Raises:
        LocalProtocolError: a field has the wrong length.
    """
    if len(info_hash) != 20 or len(peer_id) != 20 or len(reserved) != 8:
        raise LocalProtocolError("handshake needs a 20-byte info hash, a 20-byte peer id and 8 reserved bytes")
    return _PSTR_PREFIX + bytes(reserved) + bytes(info_hash) + bytes(peer_id)


def _check_prefix(data: bytes | memoryview) -> None:
    n = min(len(data), len(_PSTR_PREFIX))
    if data[:n] != _PSTR_PREFIX[:n]:
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
    _check_prefix(data)
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
    _check_prefix(data)
    if len(data) < _INFO_HASH_END:
        return None
    return InfoHash(bytes(data[28:48]))


def _triple(msg_id: int, index: int, begin: int, length: int) -> bytes:
    return _REQ.pack(13, msg_id, index, begin, length)


def encode(event: Event, extended_id: int | None = None) -> bytes:
    """Encode one message without any connection state (no validation against a torrent).

    Args:
        event: any sendable event except :class:`Handshake` (use :func:`encode_handshake`).
        extended_id: the peer's id for an :class:`ExtendedMessage`.

    Raises:
        LocalProtocolError: the event cannot be encoded (bad field values, no extended id,
            a receive-only event).
    """
    try:
        if isinstance(event, Block):
            return _PIECE_HDR.pack(9 + len(event.data), MessageId.PIECE, event.index, event.begin) + event.data
        if isinstance(event, Request):
            return _triple(MessageId.REQUEST, event.index, event.begin, event.length)
        if isinstance(event, KeepAlive):
            return b"\x00\x00\x00\x00"
        if isinstance(event, Choke):
            return b"\x00\x00\x00\x01\x00"
        if isinstance(event, Unchoke):
            return b"\x00\x00\x00\x01\x01"
        if isinstance(event, Interested):
            return b"\x00\x00\x00\x01\x02"
        if isinstance(event, NotInterested):
            return b"\x00\x00\x00\x01\x03"
        if isinstance(event, Have):
            return _HAVE.pack(5, MessageId.HAVE, event.index)
        if isinstance(event, Bitfield):
            bits = event.pieces.to_bytes()
            return _LEN_ID.pack(1 + len(bits), MessageId.BITFIELD) + bits
        if isinstance(event, Cancel):
            return _triple(MessageId.CANCEL, event.index, event.begin, event.length)
        if isinstance(event, Port):
            return _PORT.pack(3, MessageId.PORT, event.port)
        if isinstance(event, HaveAll):
            return b"\x00\x00\x00\x01\x0e"
        if isinstance(event, HaveNone):
            return b"\x00\x00\x00\x01\x0f"
        if isinstance(event, SuggestPiece):
            return _HAVE.pack(5, MessageId.SUGGEST_PIECE, event.index)
        if isinstance(event, RejectRequest):
            return _triple(MessageId.REJECT_REQUEST, event.index, event.begin, event.length)
        if isinstance(event, AllowedFast):
            return _HAVE.pack(5, MessageId.ALLOWED_FAST, event.index)
        if isinstance(event, ExtensionHandshake):
            payload = bencoding.encode(dict(event.fields))
            return _EXT_HDR.pack(2 + len(payload), MessageId.EXTENDED, EXTENDED_HANDSHAKE_ID) + payload
        if isinstance(event, ExtendedMessage):
            if extended_id is None or not 1 <= extended_id <= 255:
                raise LocalProtocolError(f"extended message {event.name!r} needs the peer's extended id (1..255)")
            payload = bytes(event.payload)
            return _EXT_HDR.pack(2 + len(payload), MessageId.EXTENDED, extended_id) + payload
    except (struct.error, BencodeError) as exc:
        raise LocalProtocolError(f"cannot encode {type(event).__name__}: {exc}") from None
    raise LocalProtocolError(f"{type(event).__name__} cannot be sent")


# -- framing --------------------------------------------------------------------------------------


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
            length, msg_id = _LEN_ID.unpack_from(buf, pos)
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
        length = _U32.unpack_from(head)[0]
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


# -- rates ----------------------------------------------------------------------------------------


class RateMeter:
    """Bytes per second over a rolling window, from a clock passed in.

    The window is split into ``bucket_s`` buckets; the rate is the bytes in the buckets that
    cover ``(now - window_s, now]`` divided by the time they cover (less while the meter is
    younger than the window). The meter starts at ``now`` if given, else at the first time it
    sees. A clock that goes backwards counts as standing still.
    """

    __slots__ = ("_bucket_s", "_buckets", "_slot", "_start", "total")

    def __init__(self, window_s: float = 20.0, bucket_s: float = 1.0, now: float | None = None) -> None:
        if window_s <= 0 or bucket_s <= 0 or bucket_s > window_s:
            raise ValueError("need 0 < bucket_s <= window_s")
        self._bucket_s = bucket_s
        self._buckets = [0] * max(1, round(window_s / bucket_s))
        self._start = now
        self._slot = 0 if now is None else int(now // bucket_s)
        #: All bytes ever added.
        self.total = 0

    def _advance(self, now: float) -> None:
        slot = int(now // self._bucket_s)
        if self._start is None:
            self._start = now
            self._slot = slot
            return
        if slot <= self._slot:
            return
        buckets = self._buckets
        n = len(buckets)
        if slot - self._slot >= n:
            for i in range(n):
                buckets[i] = 0
        else:
            for s in range(self._slot + 1, slot + 1):
                buckets[s % n] = 0
        self._slot = slot

    def add(self, nbytes: int, now: float) -> None:
        if self._start is None or now >= (self._slot + 1) * self._bucket_s:
            self._advance(now)
        self._buckets[self._slot % len(self._buckets)] += nbytes
        self.total += nbytes

    def rate_bps(self, now: float) -> float:
        """Bytes per second over the window ending at ``now``."""
        self._advance(now)
        assert self._start is not None
        covered = (len(self._buckets) - 1) * self._bucket_s + (now - self._slot * self._bucket_s)
        covered = min(covered, now - self._start)
        if covered <= 0:
            return 0.0
        return sum(self._buckets) / covered


# -- connection state -----------------------------------------------------------------------------


class Phase(enum.Enum):
    """Where one direction of the connection is (ours and the peer's are tracked apart)."""

    HANDSHAKE = "handshake"  # nothing yet: the handshake must come first
    OPENING = "opening"  # handshake done; the piece-set message (bitfield/have all/have none) may come
    ACTIVE = "active"  # past the first message: a piece-set message is now a violation
    CLOSED = "closed"  # end of stream
    ERROR = "error"  # a violation happened; nothing more is parsed


class _Kind(enum.Enum):
    HANDSHAKE = "handshake"
    PIECE_SET = "piece set"  # Bitfield, HaveAll, HaveNone
    NEUTRAL = "neutral"  # KeepAlive, Port, extended: may precede the piece-set message
    OTHER = "other"  # everything else: ends the window for a piece-set message
    CLOSE = "close"


# The legal transitions, for both directions. Rules:
#   1. The handshake comes first and only once.
#   2. Bitfield / HaveAll / HaveNone only as the first message after the handshake (BEP 3, BEP 6).
#      Keep-alives, extended messages (the BEP 10 handshake is usually sent before the bitfield)
#      and port do not count as "the first message": clients send them before their bitfield.
#   3. Anything missing from the table is a violation; its wording is in _VIOLATIONS.
_TRANSITIONS: Final[dict[tuple[Phase, _Kind], Phase]] = {
    (Phase.HANDSHAKE, _Kind.HANDSHAKE): Phase.OPENING,
    (Phase.HANDSHAKE, _Kind.CLOSE): Phase.CLOSED,
    (Phase.OPENING, _Kind.PIECE_SET): Phase.ACTIVE,
    (Phase.OPENING, _Kind.NEUTRAL): Phase.OPENING,
    (Phase.OPENING, _Kind.OTHER): Phase.ACTIVE,
    (Phase.OPENING, _Kind.CLOSE): Phase.CLOSED,
    (Phase.ACTIVE, _Kind.NEUTRAL): Phase.ACTIVE,
    (Phase.ACTIVE, _Kind.OTHER): Phase.ACTIVE,
    (Phase.ACTIVE, _Kind.CLOSE): Phase.CLOSED,
}
_VIOLATIONS: Final[dict[tuple[Phase, _Kind], str]] = {
    (Phase.HANDSHAKE, _Kind.PIECE_SET): "{name} before the handshake",
    (Phase.HANDSHAKE, _Kind.NEUTRAL): "{name} before the handshake",
    (Phase.HANDSHAKE, _Kind.OTHER): "{name} before the handshake",
    (Phase.OPENING, _Kind.HANDSHAKE): "a second handshake",
    (Phase.ACTIVE, _Kind.HANDSHAKE): "a second handshake",
    (Phase.ACTIVE, _Kind.PIECE_SET): "{name} is only allowed as the first message after the handshake",
}


@dataclass(frozen=True, slots=True)
class ConnectionStats:
    """A snapshot of one connection for the choker and the progress display."""

    am_choking: bool
    am_interested: bool
    peer_choking: bool
    peer_interested: bool
    snubbed: bool
    download_rate_bps: float
    upload_rate_bps: float
    downloaded: int  # payload bytes received in requested blocks
    uploaded: int  # payload bytes sent in blocks
    outstanding_requests: int  # ours, waiting for the peer
    peer_requests: int  # the peer's, waiting for us
    peer_pieces: int  # how many pieces the peer has
    unrequested_bytes: int  # payload bytes of UnrequestedBlock
    last_received_at: float
    last_sent_at: float


_Key = tuple[int, int, int]  # (index, begin, length)


def _names_table() -> list[str]:
    names = [f"unknown (id {i})" for i in range(256)]
    for member in MessageId:
        names[member] = member.name.lower().replace("_", " ")
    return names


_NAMES: Final = _names_table()


class PeerProtocol:
    """One peer-wire connection: parses what the peer sends, checks what we send, keeps the state.

    Args:
        info_hash: the torrent's info hash (for a listener, learn it with :func:`peek_info_hash`).
        our_peer_id: our 20-byte peer id.
        piece_length: bytes per piece; ``total_length``: bytes in the torrent. Together they
            bound piece indexes, request offsets and lengths, and the bitfield size. Both None:
            not known yet (a magnet link); see :meth:`set_geometry`.
        extension_protocol, fast_extension, dht: the reserved bits we advertise. Each of BEP 10
            and BEP 6 is used only when both sides advertise it (BEP 5's bit is only remembered).
        extensions: BEP 10 extensions we understand, ``name -> our extended id`` (1..255); they
            become the ``m`` dict of the extension handshake we send.
        max_peer_requests: how many of the peer's requests may wait for us; more are rejected
            (fast extension) or dropped.
        rate_window_s: window of the upload/download rates. ``snub_timeout_s``: no block for this
            long while we have requests outstanding makes the peer *snubbed*.
        now: the clock at creation; if left out, the first ``now`` given to ``receive_data``
            or ``send`` starts the clock (rates, activity times and the snub timer use it).

    State, readable at any time:
        ``am_choking``, ``am_interested``, ``peer_choking``, ``peer_interested`` (BEP 3, start
        True/False/True/False); ``peer_pieces`` (PieceSet) and ``our_pieces`` (what we announced);
        ``fast_extension``, ``extension_protocol`` (negotiated), ``peer_dht``; ``peer_id``,
        ``peer_handshake``, ``peer_extensions`` (their ``m``: name -> their id),
        ``peer_extension_handshake``; ``allowed_fast`` (pieces we may request while choked) and
        ``granted_fast`` (pieces we let the peer request while we choke it);
        ``outstanding_requests`` (ours, with the time sent), ``peer_requests`` (theirs);
        ``last_received_at``, ``last_sent_at``; ``their_phase``, ``our_phase``;
        counters ``ignored_messages``, ``dropped_requests``, ``unrequested_bytes``.

    Requests, the rules (our side; the peer's side mirrors them):
        * ``send(Request)`` adds to ``outstanding_requests``. A :class:`Block` answering it
          removes it; so does a :class:`RejectRequest` (fast extension only).
        * ``send(Cancel)`` without the fast extension removes it at once (a late block becomes an
          :class:`UnrequestedBlock`); with it, BEP 6 promises exactly one answer, so the request
          waits, marked cancelled, for its block (reported as ``UnrequestedBlock``) or reject.
        * A received ``Choke`` without the fast extension voids every outstanding request and
          lists them in ``Choke.voided``; with it, requests stay until rejected one by one.
        * ``send(Choke)`` drops the peer's pending requests without the fast extension; with it,
          the returned bytes include a ``RejectRequest`` for each (except in ``granted_fast``
          pieces). A peer request we cannot serve (choked, a piece we never announced, queue
          full) is dropped, or with the fast extension rejected through :meth:`data_to_send`.
    """

    def __init__(
        self,
        *,
        info_hash: bytes,
        our_peer_id: bytes,
        piece_length: int | None,
        total_length: int | None,
        extension_protocol: bool = True,
        fast_extension: bool = True,
        dht: bool = False,
        extensions: Mapping[str, int] | None = None,
        max_peer_requests: int = DEFAULT_MAX_PEER_REQUESTS,
        rate_window_s: float = 20.0,
        snub_timeout_s: float = 60.0,
        now: float | None = None,
    ) -> None:
        if len(info_hash) != 20 or len(our_peer_id) != 20:
            raise ValueError("info_hash and our_peer_id must be 20 bytes")
        if (piece_length is None) != (total_length is None):
            raise ValueError("piece_length and total_length are both known or both None")
        if piece_length is not None and total_length is not None and (piece_length <= 0 or total_length <= 0):
            raise ValueError("piece_length and total_length must be positive")
        self.info_hash = InfoHash(bytes(info_hash))
        self.our_peer_id = PeerId(bytes(our_peer_id))
        #: False until the torrent's geometry is known (a connection made from a magnet link).
        self.geometry_known = piece_length is not None
        self.piece_length = piece_length or 0
        self.total_length = total_length or 0
        self.num_pieces = -(-self.total_length // self.piece_length) if self.piece_length else 0
        self._last_piece_size = self.total_length - (self.num_pieces - 1) * self.piece_length
        # What the peer announced before the geometry was known (see set_geometry).
        self._early_bitfield: bytes | None = None
        self._early_haves: set[int] = set()
        self._early_all = False
        self._extensions: dict[str, int] = dict(extensions or {})
        for name, ext_id in self._extensions.items():
            if not 1 <= ext_id <= 255:
                raise ValueError(f"extension {name!r}: extended ids are 1..255")
        if len(set(self._extensions.values())) != len(self._extensions):
            raise ValueError("two extensions share an extended id")
        self._ext_names = {ext_id: name for name, ext_id in self._extensions.items()}
        reserved = bytearray(8)
        if extension_protocol:
            reserved[EXTENSION_PROTOCOL_BIT[0]] |= EXTENSION_PROTOCOL_BIT[1]
        if fast_extension:
            reserved[FAST_EXTENSION_BIT[0]] |= FAST_EXTENSION_BIT[1]
        if dht:
            reserved[DHT_BIT[0]] |= DHT_BIT[1]
        self.our_reserved = bytes(reserved)
        self._want_ext = extension_protocol
        self._want_fast = fast_extension
        self.max_peer_requests = max_peer_requests
        self.snub_timeout_s = snub_timeout_s

        # BEP 3 state: both sides start choked and not interested.
        self.am_choking = True
        self.am_interested = False
        self.peer_choking = True
        self.peer_interested = False
        # Negotiated after the peer's handshake.
        self.peer_handshake: Handshake | None = None
        self.peer_id: PeerId | None = None
        self.fast_extension = False
        self.extension_protocol = False
        self.peer_dht = False
        self.peer_extensions: dict[str, int] = {}
        self.peer_extension_handshake: ExtensionHandshake | None = None
        # Pieces.
        self.peer_pieces = PieceSet(self.num_pieces)
        self.our_pieces = PieceSet(self.num_pieces)
        self.allowed_fast: set[int] = set()
        self.granted_fast: set[int] = set()
        self.suggested: set[int] = set()
        # Requests: (index, begin, length) -> time sent, ours; theirs -> time received.
        self._our_requests: dict[_Key, float] = {}
        self._cancelled: set[_Key] = set()
        self._peer_requests: dict[_Key, float] = {}
        # Time: starts at ``now``, or at the first ``now`` passed to receive_data/send.
        self._clock_started = now is not None
        self._now = 0.0 if now is None else now
        self.last_received_at = self._now
        self.last_sent_at = self._now
        self._waiting_since = self._now
        self._down = RateMeter(rate_window_s, now=now)
        self._up = RateMeter(rate_window_s, now=now)
        # Counters.
        self.ignored_messages = 0
        self.late_piece_sets = 0
        self.dropped_requests = 0
        self.unrequested_bytes = 0
        # Parsing.
        self.our_phase = Phase.HANDSHAKE
        self.their_phase = Phase.HANDSHAKE
        self._error: str | None = None
        self._outbox: list[bytes] = []
        bitfield_len = 1 + (self.num_pieces + 7) // 8
        max_frame = max(9 + BLOCK_SIZE, bitfield_len, 2 + MAX_EXTENDED_PAYLOAD)
        if not self.geometry_known:
            max_frame = max(max_frame, 1 + MAX_UNKNOWN_BITFIELD)
        limits = [(1, max_frame)] * 256
        for msg_id in (MessageId.CHOKE, MessageId.UNCHOKE, MessageId.INTERESTED, MessageId.NOT_INTERESTED,
                       MessageId.HAVE_ALL, MessageId.HAVE_NONE):
            limits[msg_id] = (1, 1)
        for msg_id in (MessageId.HAVE, MessageId.SUGGEST_PIECE, MessageId.ALLOWED_FAST):
            limits[msg_id] = (5, 5)
        for msg_id in (MessageId.REQUEST, MessageId.CANCEL, MessageId.REJECT_REQUEST):
            limits[msg_id] = (13, 13)
        limits[MessageId.BITFIELD] = (
            (bitfield_len, bitfield_len) if self.geometry_known else (1, 1 + MAX_UNKNOWN_BITFIELD)
        )
        self._limits = limits
        limits[MessageId.PIECE] = (10, 9 + BLOCK_SIZE)  # a block of 1..16 KiB
        limits[MessageId.PORT] = (3, 3)
        limits[MessageId.EXTENDED] = (2, 2 + MAX_EXTENDED_PAYLOAD)
        self._frames = FrameBuffer(limits, _NAMES)
        self._handlers: dict[int, Callable[[memoryview, int, int], Event | None]] = {
            MessageId.CHOKE: self._on_choke,
            MessageId.UNCHOKE: self._on_unchoke,
            MessageId.INTERESTED: self._on_interested,
            MessageId.NOT_INTERESTED: self._on_not_interested,
            MessageId.HAVE: self._on_have,
            MessageId.BITFIELD: self._on_bitfield,
            MessageId.REQUEST: self._on_request,
            MessageId.CANCEL: self._on_cancel,
            MessageId.PORT: self._on_port,
            MessageId.SUGGEST_PIECE: self._on_suggest,
            MessageId.HAVE_ALL: self._on_have_all,
            MessageId.HAVE_NONE: self._on_have_none,
            MessageId.REJECT_REQUEST: self._on_reject,
            MessageId.ALLOWED_FAST: self._on_allowed_fast,
            MessageId.EXTENDED: self._on_extended,
        }

    # -- geometry ---------------------------------------------------------------------------------

    def set_geometry(self, piece_length: int, total_length: int) -> None:
        """Learn the torrent's geometry (the metadata arrived); only once, and only when the
        connection was created without it.

        What the peer announced meanwhile becomes ``peer_pieces``.

        Raises:
            LocalProtocolError: the geometry is already known, or not positive.
            RemoteProtocolError: what the peer announced does not fit the torrent (a bitfield of
                the wrong length or with spare bits set, a have past the last piece); the
                connection is in its error state.
        """
        if self.geometry_known:
            raise LocalProtocolError("the torrent's geometry is already known")
        if piece_length <= 0 or total_length <= 0:
            raise LocalProtocolError("piece_length and total_length must be positive")
        n = -(-total_length // piece_length)
        self.geometry_known = True
        self.piece_length = piece_length
        self.total_length = total_length
        self.num_pieces = n
        self._last_piece_size = total_length - (n - 1) * piece_length
        self._limits[MessageId.BITFIELD] = (1 + (n + 7) // 8, 1 + (n + 7) // 8)
        self.our_pieces = PieceSet(n)  # nothing could be announced before
        try:
            if self._early_all:
                pieces = PieceSet.full(n)
            elif self._early_bitfield is not None:
                try:
                    pieces = PieceSet.from_bytes(self._early_bitfield, n)
                except ValueError as exc:
                    raise RemoteProtocolError(f"bad bitfield: {exc}") from None
            else:
                pieces = PieceSet(n)
            for index in self._early_haves:
                if index >= n:
                    raise RemoteProtocolError(f"have for piece {index} out of range (torrent has {n} pieces)")
                pieces.add(index)
        except RemoteProtocolError as exc:
            self._error = str(exc)
            self.their_phase = Phase.ERROR
            raise
        self.peer_pieces = pieces
        self._early_bitfield = None
        self._early_haves = set()

    def piece_size(self, index: int) -> int:
        """Bytes in piece ``index`` (the last piece may be shorter)."""
        return self._last_piece_size if index == self.num_pieces - 1 else self.piece_length

    def _block_problem(self, index: int, begin: int, length: int) -> str | None:
        if not self.geometry_known:
            return "the torrent's geometry is not known yet (metadata pending)"
        if not 0 <= index < self.num_pieces:
            return f"piece index {index} out of range (torrent has {self.num_pieces} pieces)"
        if not 0 < length <= BLOCK_SIZE:
            return f"block length {length} (must be 1..{BLOCK_SIZE})"
        if begin < 0:
            return f"negative block offset {begin}"
        size = self.piece_size(index)
        if begin + length > size:
            return f"block {begin}+{length} runs past the end of piece {index} ({size} bytes)"
        return None

    def _set_clock(self, now: float) -> None:
        if not self._clock_started:
            self._clock_started = True
            self.last_received_at = self.last_sent_at = self._waiting_since = now
            self._down.rate_bps(now)  # starts both meters now, not at their first bytes
            self._up.rate_bps(now)
        self._now = now

    # -- receiving --------------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float | None = None) -> None:
        """Add bytes received from the peer; ``b""`` means the peer closed the connection.

        Args:
            data: the bytes as read (``bytes`` are kept without copying; other buffers are copied).
            now: the clock when they arrived (updates ``last_received_at`` and the rates).

        Raises:
            LocalProtocolError: data after EOF.
        """
        if now is not None:
            self._set_clock(now)
        if self._frames.eof:
            if data:
                raise LocalProtocolError("received data after the end of the stream")
            return
        if not data:
            self._frames.eof = True
            return
        if type(data) is not bytes:
            data = bytes(data)
        self.last_received_at = self._now
        self._frames.feed(data)

    def next_event(self) -> Event | _NeedData:
        """Parse the next event from the received bytes.

        Returns:
            An event, :data:`NEED_DATA` when no whole message is buffered, or
            :class:`ConnectionClosed` once the stream ended cleanly (returned again on every call).

        Raises:
            RemoteProtocolError: the peer broke the protocol; the connection is now in its error
                state and every later call raises again.
        """
        if self._error is not None:
            raise RemoteProtocolError(f"connection already failed: {self._error}")
        frames = self._frames
        try:
            if self.their_phase is Phase.HANDSHAKE:
                return self._next_handshake()
            while True:
                frame = frames.next_frame()
                if frame is None:
                    if frames.eof:
                        if len(frames):
                            raise RemoteProtocolError(
                                f"connection closed in the middle of a message ({len(frames)} bytes buffered)"
                            )
                        self.their_phase = Phase.CLOSED
                        return _CLOSED
                    return NEED_DATA
                view, start, length = frame
                if length == 0:
                    return _KEEPALIVE
                msg_id = view[start]
                if msg_id == 7:  # MessageId.PIECE, the hot path
                    if self.their_phase is Phase.OPENING:
                        self._their_transition(_Kind.OTHER, "piece")
                    index, begin = _U32X2.unpack_from(view, start + 1)
                    n = length - 9
                    if index >= self.num_pieces or begin + n > (
                        self._last_piece_size if index == self.num_pieces - 1 else self.piece_length
                    ):
                        raise RemoteProtocolError(
                            f"piece message: {self._block_problem(index, begin, n)}"
                        )
                    data = view[start + 9 : start + length]
                    key = (index, begin, n)
                    if self._our_requests.pop(key, None) is None:
                        self._cancelled.discard(key)
                        self.unrequested_bytes += n
                        return UnrequestedBlock(index, begin, data)
                    self._down.add(n, self._now)
                    self._waiting_since = self._now
                    return Block(index, begin, data)
                handler = self._handlers.get(msg_id)
                if handler is None:
                    # Unknown ids are skipped, as BEP 3 implementations do: new extensions must
                    # not break old peers. Their length was still bounded by the frame limits.
                    self.ignored_messages += 1
                    continue
                event = handler(view, start, length)
                if event is not None:
                    return event
        except RemoteProtocolError as exc:
            self._error = str(exc)
            self.their_phase = Phase.ERROR
            raise

    def _next_handshake(self) -> Event | _NeedData:
        frames = self._frames
        _check_prefix(frames.peek(len(_PSTR_PREFIX)))
        raw = frames.take(HANDSHAKE_LENGTH)
        if raw is None:
            if frames.eof:
                if not len(frames):  # closed before saying anything: a clean close, not garbage
                    self.their_phase = Phase.CLOSED
                    return _CLOSED
                raise RemoteProtocolError(f"connection closed during the handshake ({len(frames)} bytes)")
            return NEED_DATA
        hs = parse_handshake(raw)
        if hs.info_hash != self.info_hash:
            raise RemoteProtocolError(f"handshake for another torrent (info hash {hs.info_hash.hex()})")  # type: ignore[union-attr]
        self._their_transition(_Kind.HANDSHAKE, "handshake")
        self.peer_handshake = hs
        self.peer_id = PeerId(hs.peer_id)  # type: ignore[arg-type]
        self.fast_extension = self._want_fast and hs.fast_extension
        self.extension_protocol = self._want_ext and hs.extension_protocol
        self.peer_dht = hs.dht
        return hs

    def _their_transition(self, kind: _Kind, name: str) -> None:
        if kind is _Kind.PIECE_SET and self.their_phase is Phase.ACTIVE and self.geometry_known:
            # BEP 3 allows a bitfield (BEP 6: have all / have none) only first, but aria2 1.36
            # sends another one later (a bitfield after have none or haves, have all once it
            # completes). libtorrent takes a late one as the peer's new piece set; so do we,
            # rather than drop a working peer. Our own sends still follow the table.
            self.late_piece_sets += 1
            return
        new = _TRANSITIONS.get((self.their_phase, kind))
        if new is None:
            what = _VIOLATIONS.get((self.their_phase, kind), "{name} in phase " + self.their_phase.value)
            raise RemoteProtocolError("peer sent " + what.format(name=name))
        self.their_phase = new

    def _need_fast(self, name: str) -> None:
        if not self.fast_extension:
            raise RemoteProtocolError(f"peer sent {name} but the fast extension (BEP 6) was not negotiated")

    def _index(self, view: memoryview, start: int, name: str) -> int:
        index: int = _U32.unpack_from(view, start + 1)[0]
        if index >= self.num_pieces and self.geometry_known:
            raise RemoteProtocolError(f"{name} for piece {index} out of range (torrent has {self.num_pieces} pieces)")
        return index

    def _on_choke(self, view: memoryview, start: int, length: int) -> Event:
        self._their_transition(_Kind.OTHER, "choke")
        self.peer_choking = True
        if self.fast_extension or not self._our_requests:
            return Choke()
        # BEP 3: "When a peer chokes the client, it is a notification that no requests will be
        # answered until the client is unchoked." Without BEP 6 the requests are simply gone.
        voided = tuple(Request(*key) for key in self._our_requests)
        self._our_requests.clear()
        return Choke(voided=voided)

    def _on_unchoke(self, view: memoryview, start: int, length: int) -> Event:
        self._their_transition(_Kind.OTHER, "unchoke")
        self.peer_choking = False
        return _UNCHOKE

    def _on_interested(self, view: memoryview, start: int, length: int) -> Event:
        self._their_transition(_Kind.OTHER, "interested")
        self.peer_interested = True
        return _INTERESTED

    def _on_not_interested(self, view: memoryview, start: int, length: int) -> Event:
        self._their_transition(_Kind.OTHER, "not interested")
        self.peer_interested = False
        return _NOT_INTERESTED

    def _on_have(self, view: memoryview, start: int, length: int) -> Event:
        self._their_transition(_Kind.OTHER, "have")
        index = self._index(view, start, "have")
        if not self.geometry_known:
            if index >= MAX_UNKNOWN_BITFIELD * 8 or len(self._early_haves) >= MAX_UNKNOWN_HAVES:
                raise RemoteProtocolError(f"have for piece {index} before the metadata: too many or too large")
            self._early_haves.add(index)
            return Have(index)
        self.peer_pieces.add(index)
        return Have(index)

    def _on_bitfield(self, view: memoryview, start: int, length: int) -> Event:
        self._their_transition(_Kind.PIECE_SET, "bitfield")
        if not self.geometry_known:
            raw = bytes(view[start + 1 : start + length])
            self._early_bitfield = raw
            return Bitfield(PieceSet.from_bytes(raw, len(raw) * 8))
        try:
            pieces = PieceSet.from_bytes(view[start + 1 : start + length], self.num_pieces)
        except ValueError as exc:
            raise RemoteProtocolError(f"bad bitfield: {exc}") from None
        self.peer_pieces = pieces
        return Bitfield(pieces.copy())

    def _on_have_all(self, view: memoryview, start: int, length: int) -> Event:
        self._need_fast("have all")
        self._their_transition(_Kind.PIECE_SET, "have all")
        self._early_all = not self.geometry_known
        self.peer_pieces = PieceSet.full(self.num_pieces)
        return _HAVE_ALL

    def _on_have_none(self, view: memoryview, start: int, length: int) -> Event:
        self._need_fast("have none")
        self._their_transition(_Kind.PIECE_SET, "have none")
        self.peer_pieces = PieceSet(self.num_pieces)
        return _HAVE_NONE

    def _on_request(self, view: memoryview, start: int, length: int) -> Event | None:
        self._their_transition(_Kind.OTHER, "request")
        index, begin, n = _U32X3.unpack_from(view, start + 1)
        if not self.geometry_known:
            # We announced nothing (HaveNone at most): refuse it as a request for a piece we lack.
            self.dropped_requests += 1
            if self.fast_extension:
                self._outbox.append(_triple(MessageId.REJECT_REQUEST, index, begin, n))
            return None
        problem = self._block_problem(index, begin, n)
        if problem:
            raise RemoteProtocolError(f"request: {problem}")
        key = (index, begin, n)
        if key in self._peer_requests:
            return None  # a duplicate: the first one is already queued
        if (
            index not in self.our_pieces
            or (self.am_choking and index not in self.granted_fast)
            or len(self._peer_requests) >= self.max_peer_requests
        ):
            # BEP 6: reject a request for a piece we lack, or while choking (outside the allowed
            # fast set). Without BEP 6 a request that crossed our choke is simply discarded.
            self.dropped_requests += 1
            if self.fast_extension:
                self._outbox.append(_triple(MessageId.REJECT_REQUEST, index, begin, n))
            return None
        self._peer_requests[key] = self._now
        return Request(index, begin, n)

    def _on_cancel(self, view: memoryview, start: int, length: int) -> Event | None:
        self._their_transition(_Kind.OTHER, "cancel")
        index, begin, n = _U32X3.unpack_from(view, start + 1)
        if not self.geometry_known:
            return None  # it cancels a request we already refused
        problem = self._block_problem(index, begin, n)
        if problem:
            raise RemoteProtocolError(f"cancel: {problem}")
        key = (index, begin, n)
        if self._peer_requests.pop(key, None) is None:
            return None  # already served or rejected
        if self.fast_extension:
            # BEP 6: "every request is guaranteed to result in EXACTLY ONE response ... Even when
            # a request is cancelled".
            self._outbox.append(_triple(MessageId.REJECT_REQUEST, index, begin, n))
        return Cancel(index, begin, n)

    def _on_port(self, view: memoryview, start: int, length: int) -> Event:
        self._their_transition(_Kind.NEUTRAL, "port")
        return Port(int.from_bytes(view[start + 1 : start + 3], "big"))

    def _on_suggest(self, view: memoryview, start: int, length: int) -> Event:
        self._need_fast("suggest piece")
        self._their_transition(_Kind.OTHER, "suggest piece")
        index = self._index(view, start, "suggest piece")
        if self.geometry_known:
            self.suggested.add(index)
        return SuggestPiece(index)

    def _on_reject(self, view: memoryview, start: int, length: int) -> Event:
        self._need_fast("reject request")
        self._their_transition(_Kind.OTHER, "reject request")
        index, begin, n = _U32X3.unpack_from(view, start + 1)
        key = (index, begin, n)
        if self._our_requests.pop(key, None) is None:
            if key not in self._cancelled:
                # BEP 6: "If a peer receives a reject for a request that was never sent, the
                # peer should close the connection."
                raise RemoteProtocolError(f"reject for a request we never sent ({index}, {begin}, {n})")
            self._cancelled.discard(key)
        return RejectRequest(index, begin, n)

    def _on_allowed_fast(self, view: memoryview, start: int, length: int) -> Event:
        self._need_fast("allowed fast")
        self._their_transition(_Kind.OTHER, "allowed fast")
        index = self._index(view, start, "allowed fast")
        if self.geometry_known:
            self.allowed_fast.add(index)
        return AllowedFast(index)

    def _on_extended(self, view: memoryview, start: int, length: int) -> Event | None:
        if not self.extension_protocol:
            raise RemoteProtocolError("peer sent an extended message but BEP 10 was not negotiated")
        self._their_transition(_Kind.NEUTRAL, "extended")
        ext_id = view[start + 1]
        payload = bytes(view[start + 2 : start + length])
        if ext_id == EXTENDED_HANDSHAKE_ID:
            try:
                fields = bencoding.decode(payload)
            except BencodeError as exc:
                raise RemoteProtocolError(f"extension handshake is not bencoded: {exc}") from None
            if not isinstance(fields, dict):
                raise RemoteProtocolError("extension handshake is not a dictionary")
            hs = ExtensionHandshake(fields)
            m = fields.get(b"m")
            if m is not None and not isinstance(m, dict):
                raise RemoteProtocolError("extension handshake 'm' is not a dictionary")
            # BEP 10: later handshakes update the mapping; id 0 disables an extension.
            for name, their_id in hs.extensions.items():
                if their_id == 0:
                    self.peer_extensions.pop(name, None)
                else:
                    self.peer_extensions[name] = their_id
            self.peer_extension_handshake = hs
            return hs
        ext_name = self._ext_names.get(ext_id)
        if ext_name is None:
            self.ignored_messages += 1  # an id we never assigned: ignore, like an unknown message
            return None
        return ExtendedMessage(ext_name, payload)

    def data_to_send(self) -> bytes:
        """Messages the protocol queued by itself, to be written to the peer (then forgotten).

        Only BEP 6 rejects end up here: for requests that crossed our choke, asked for pieces we
        never announced, overflowed the queue, or were cancelled. Call it after draining events.
        """
        if not self._outbox:
            return b""
        out = b"".join(self._outbox)
        self._outbox.clear()
        return out

    # -- sending ----------------------------------------------------------------------------------

    def send(self, event: Event, now: float | None = None) -> bytes:
        """Check ``event`` against the protocol and the state, apply it, and return its bytes.

        Args:
            event: the message to send; ``Handshake()`` with no fields sends ours.
            now: the clock (updates ``last_sent_at``, the upload rate and request times).

        Returns:
            The bytes to write (for ``Choke`` with BEP 6, also the rejects it implies).

        Raises:
            LocalProtocolError: the protocol or the connection's state forbids sending it; the
                state is left unchanged.
        """
        if now is not None:
            self._set_clock(now)
        if type(event) is Request and self.our_phase is Phase.ACTIVE and self._error is None:
            out = self._send_request(event)  # the hot path of a download: skip the dispatch
            self.last_sent_at = self._now
            return out
        if self.our_phase is Phase.ERROR or self.their_phase is Phase.ERROR:
            raise LocalProtocolError(f"cannot send on a failed connection ({self._error})")
        if isinstance(event, Handshake):
            return self._send_handshake(event)
        if self.our_phase is Phase.HANDSHAKE:
            raise LocalProtocolError(f"cannot send {type(event).__name__} before our handshake")
        if self.peer_handshake is None:
            raise LocalProtocolError(f"cannot send {type(event).__name__} before the peer's handshake")
        sender = self._senders.get(type(event))
        if sender is None:
            raise LocalProtocolError(f"{type(event).__name__} cannot be sent")
        out = sender(self, event)
        self.last_sent_at = self._now
        return out

    def _our_transition(self, kind: _Kind, name: str) -> None:
        new = _TRANSITIONS.get((self.our_phase, kind))
        if new is None:
            what = _VIOLATIONS.get((self.our_phase, kind), "{name} in phase " + self.our_phase.value)
            raise LocalProtocolError("cannot send " + what.format(name=name))
        if self.fast_extension and self.our_phase is Phase.OPENING and kind is _Kind.OTHER:
            # BEP 6: "Exactly one of Have All, Have None, or Have Bitfield MUST appear".
            raise LocalProtocolError(
                f"cannot send {name} first: with the fast extension the first message must be"
                " Bitfield, HaveAll or HaveNone"
            )
        self.our_phase = new

    def _send_handshake(self, event: Handshake) -> bytes:
        if event.info_hash is not None and event.info_hash != self.info_hash:
            raise LocalProtocolError("handshake info hash differs from the connection's")
        if event.peer_id is not None and event.peer_id != self.our_peer_id:
            raise LocalProtocolError("handshake peer id differs from the connection's")
        reserved = self.our_reserved if event.reserved is None else event.reserved
        out = encode_handshake(self.info_hash, self.our_peer_id, reserved)
        self._our_transition(_Kind.HANDSHAKE, "handshake")
        self.last_sent_at = self._now
        return out

    def _our_check(self, problem: str | None, name: str) -> None:
        if problem:
            raise LocalProtocolError(f"{name}: {problem}")

    def _our_fast(self, name: str) -> None:
        if not self.fast_extension:
            raise LocalProtocolError(f"cannot send {name}: the fast extension (BEP 6) was not negotiated")

    def _our_index(self, index: int, name: str) -> None:
        if not self.geometry_known:
            raise LocalProtocolError(f"{name}: the torrent's geometry is not known yet (metadata pending)")
        if not 0 <= index < self.num_pieces:
            raise LocalProtocolError(f"{name}: piece index {index} out of range ({self.num_pieces} pieces)")

    def _send_keepalive(self, event: KeepAlive) -> bytes:
        self._our_transition(_Kind.NEUTRAL, "keep-alive")
        return b"\x00\x00\x00\x00"

    def _send_choke(self, event: Choke) -> bytes:
        self._our_transition(_Kind.OTHER, "choke")
        self.am_choking = True
        out = [b"\x00\x00\x00\x01\x00"]
        if self.fast_extension:
            for key in [k for k in self._peer_requests if k[0] not in self.granted_fast]:
                del self._peer_requests[key]
                out.append(_triple(MessageId.REJECT_REQUEST, *key))
        else:
            self._peer_requests.clear()
        return b"".join(out)

    def _send_unchoke(self, event: Unchoke) -> bytes:
        self._our_transition(_Kind.OTHER, "unchoke")
        self.am_choking = False
        return b"\x00\x00\x00\x01\x01"

    def _send_interested(self, event: Interested) -> bytes:
        self._our_transition(_Kind.OTHER, "interested")
        self.am_interested = True
        return b"\x00\x00\x00\x01\x02"

    def _send_not_interested(self, event: NotInterested) -> bytes:
        self._our_transition(_Kind.OTHER, "not interested")
        self.am_interested = False
        return b"\x00\x00\x00\x01\x03"

    def _send_have(self, event: Have) -> bytes:
        self._our_index(event.index, "have")
        self._our_transition(_Kind.OTHER, "have")
        self.our_pieces.add(event.index)
        return _HAVE.pack(5, MessageId.HAVE, event.index)

    def _send_bitfield(self, event: Bitfield) -> bytes:
        if not self.geometry_known:
            raise LocalProtocolError("bitfield: the torrent's geometry is not known yet (metadata pending)")
        if event.pieces.size != self.num_pieces:
            raise LocalProtocolError(f"bitfield for {event.pieces.size} pieces, torrent has {self.num_pieces}")
        self._our_transition(_Kind.PIECE_SET, "bitfield")
        self.our_pieces = event.pieces.copy()
        return encode(event)

    def _send_have_all(self, event: HaveAll) -> bytes:
        self._our_fast("have all")
        if not self.geometry_known:
            raise LocalProtocolError("have all: the torrent's geometry is not known yet (metadata pending)")
        self._our_transition(_Kind.PIECE_SET, "have all")
        self.our_pieces = PieceSet.full(self.num_pieces)
        return b"\x00\x00\x00\x01\x0e"

    def _send_have_none(self, event: HaveNone) -> bytes:
        self._our_fast("have none")
        self._our_transition(_Kind.PIECE_SET, "have none")
        self.our_pieces = PieceSet(self.num_pieces)
        return b"\x00\x00\x00\x01\x0f"

    def _send_request(self, event: Request) -> bytes:
        index, begin, n = event.index, event.begin, event.length
        if not (
            0 <= index < self.num_pieces
            and 0 < n <= BLOCK_SIZE
            and begin >= 0
            and begin + n <= (self._last_piece_size if index == self.num_pieces - 1 else self.piece_length)
        ):
            self._our_check(self._block_problem(index, begin, n), "request")
        if index not in self.peer_pieces:
            raise LocalProtocolError(f"request for piece {index}, which the peer does not have")
        if self.peer_choking and not (self.fast_extension and index in self.allowed_fast):
            raise LocalProtocolError(f"request for piece {index} while the peer chokes us")
        key = (index, begin, n)
        requests = self._our_requests
        if key in requests or key in self._cancelled:
            raise LocalProtocolError(f"request ({index}, {begin}, {n}) is already outstanding")
        if self.our_phase is not Phase.ACTIVE:
            self._our_transition(_Kind.OTHER, "request")
        if not requests:
            self._waiting_since = self._now
        requests[key] = self._now
        return _REQ.pack(13, 6, index, begin, n)

    def _send_cancel(self, event: Cancel) -> bytes:
        key = (event.index, event.begin, event.length)
        if key not in self._our_requests:
            raise LocalProtocolError(f"cancel for ({event.index}, {event.begin}, {event.length}), not outstanding")
        self._our_transition(_Kind.OTHER, "cancel")
        del self._our_requests[key]
        if self.fast_extension:
            self._cancelled.add(key)  # BEP 6: its block or reject is still coming
        return _triple(MessageId.CANCEL, *key)

    def _send_block(self, event: Block) -> bytes:
        n = len(event.data)
        key = (event.index, event.begin, n)
        if key not in self._peer_requests:
            raise LocalProtocolError(
                f"block ({event.index}, {event.begin}, {n}) answers no pending request of the peer"
            )
        self._our_transition(_Kind.OTHER, "piece")
        del self._peer_requests[key]
        self._up.add(n, self._now)
        return _PIECE_HDR.pack(9 + n, MessageId.PIECE, event.index, event.begin) + event.data

    def _send_port(self, event: Port) -> bytes:
        if not 0 < event.port < 65536:
            raise LocalProtocolError(f"port {event.port} out of range")
        self._our_transition(_Kind.NEUTRAL, "port")
        return _PORT.pack(3, MessageId.PORT, event.port)

    def _send_suggest(self, event: SuggestPiece) -> bytes:
        self._our_fast("suggest piece")
        self._our_index(event.index, "suggest piece")
        self._our_transition(_Kind.OTHER, "suggest piece")
        return _HAVE.pack(5, MessageId.SUGGEST_PIECE, event.index)

    def _send_reject(self, event: RejectRequest) -> bytes:
        self._our_fast("reject request")
        key = (event.index, event.begin, event.length)
        if key not in self._peer_requests:
            raise LocalProtocolError(f"reject for ({event.index}, {event.begin}, {event.length}), not pending")
        self._our_transition(_Kind.OTHER, "reject request")
        del self._peer_requests[key]
        return _triple(MessageId.REJECT_REQUEST, *key)

    def _send_allowed_fast(self, event: AllowedFast) -> bytes:
        self._our_fast("allowed fast")
        self._our_index(event.index, "allowed fast")
        self._our_transition(_Kind.OTHER, "allowed fast")
        self.granted_fast.add(event.index)
        return _HAVE.pack(5, MessageId.ALLOWED_FAST, event.index)

    def _send_extension_handshake(self, event: ExtensionHandshake) -> bytes:
        if not self.extension_protocol:
            raise LocalProtocolError("cannot send an extension handshake: BEP 10 was not negotiated")
        fields = dict(event.fields)
        if "m" in fields or b"m" in fields:
            raise LocalProtocolError("extension handshake 'm' comes from the connection's extensions=")
        fields["m"] = dict(self._extensions)
        try:
            payload = bencoding.encode(fields)
        except BencodeError as exc:
            raise LocalProtocolError(f"extension handshake cannot be bencoded: {exc}") from None
        if len(payload) > MAX_EXTENDED_PAYLOAD:
            raise LocalProtocolError("extension handshake over 1 MiB")
        self._our_transition(_Kind.NEUTRAL, "extension handshake")
        return _EXT_HDR.pack(2 + len(payload), MessageId.EXTENDED, EXTENDED_HANDSHAKE_ID) + payload

    def _send_extended(self, event: ExtendedMessage) -> bytes:
        if not self.extension_protocol:
            raise LocalProtocolError(f"cannot send {event.name!r}: BEP 10 was not negotiated")
        their_id = self.peer_extensions.get(event.name)
        if their_id is None:
            raise LocalProtocolError(f"peer did not announce extension {event.name!r}")
        if len(event.payload) > MAX_EXTENDED_PAYLOAD:
            raise LocalProtocolError(f"extended message {event.name!r} over 1 MiB")
        self._our_transition(_Kind.NEUTRAL, "extended")
        return encode(event, their_id)

    _senders: Final[dict[type, Callable[[PeerProtocol, Any], bytes]]] = {
        KeepAlive: _send_keepalive,
        Choke: _send_choke,
        Unchoke: _send_unchoke,
        Interested: _send_interested,
        NotInterested: _send_not_interested,
        Have: _send_have,
        Bitfield: _send_bitfield,
        HaveAll: _send_have_all,
        HaveNone: _send_have_none,
        Request: _send_request,
        Cancel: _send_cancel,
        Block: _send_block,
        Port: _send_port,
        SuggestPiece: _send_suggest,
        RejectRequest: _send_reject,
        AllowedFast: _send_allowed_fast,
        ExtensionHandshake: _send_extension_handshake,
        ExtendedMessage: _send_extended,
    }

    # -- bookkeeping queries ----------------------------------------------------------------------

    @property
    def outstanding_requests(self) -> dict[Request, float]:
        """Our requests the peer has not answered yet, with the time each was sent.

        Requests we cancelled under BEP 6 (still awaiting an answer) are not included.
        """
        return {Request(*key): t for key, t in self._our_requests.items()}

    @property
    def peer_requests(self) -> dict[Request, float]:
        """The peer's requests we have not served, rejected or dropped, with arrival times."""
        return {Request(*key): t for key, t in self._peer_requests.items()}

    def num_outstanding(self) -> int:
        """How many of our requests wait for the peer (cheap; for pipeline sizing)."""
        return len(self._our_requests)

    def is_requested_by_peer(self, request: Request) -> bool:
        """Whether ``send(Block)`` for ``request`` is allowed (check after a slow disk read)."""
        return (request.index, request.begin, request.length) in self._peer_requests

    def is_snubbed(self, now: float) -> bool:
        """True when requests are outstanding and no block came for ``snub_timeout_s``."""
        return bool(self._our_requests) and now - self._waiting_since >= self.snub_timeout_s

    def download_rate_bps(self, now: float) -> float:
        """Payload bytes/s received in requested blocks over the rate window."""
        return self._down.rate_bps(now)

    def upload_rate_bps(self, now: float) -> float:
        """Payload bytes/s sent in blocks over the rate window."""
        return self._up.rate_bps(now)

    def statistics(self, now: float) -> ConnectionStats:
        """A frozen snapshot of the connection at ``now``."""
        return ConnectionStats(
            am_choking=self.am_choking,
            am_interested=self.am_interested,
            peer_choking=self.peer_choking,
            peer_interested=self.peer_interested,
            snubbed=self.is_snubbed(now),
            download_rate_bps=self._down.rate_bps(now),
            upload_rate_bps=self._up.rate_bps(now),
            downloaded=self._down.total,
            uploaded=self._up.total,
            outstanding_requests=len(self._our_requests),
            peer_requests=len(self._peer_requests),
            peer_pieces=len(self.peer_pieces),
            unrequested_bytes=self.unrequested_bytes,
            last_received_at=self.last_received_at,
            last_sent_at=self.last_sent_at,
        )
