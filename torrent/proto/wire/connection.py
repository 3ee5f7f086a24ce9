"""One peer-wire connection, sans-IO: :class:`PeerProtocol` (bytes in, events out; events in, bytes out).

It owns every piece of per-connection protocol state: both sides' choke and interest flags, both
sides' piece sets, our outstanding requests and the peer's pending ones, the BEP 6 allowed-fast
sets, the negotiated extensions, the byte rates and the snub timer. The engine's ``Peer`` reads
them from here and keeps no copies. Framing is :class:`~.codec.FrameBuffer` (or, once the
reader reads straight into :meth:`PeerProtocol.get_buffer`, :class:`~.codec.InPlaceFrameBuffer`), the legal
transitions are :mod:`.state`'s table, the frame-size limits :mod:`.limits`' table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any, Final, cast

from torrent.errors import BencodeError, LocalProtocolError, RemoteProtocolError
from torrent.proto import bencoding
from torrent.proto.pieceset import PieceSet
from torrent.proto.wire.codec import (
    EXT_HDR_STRUCT,
    HANDSHAKE_LENGTH,
    HASH_FIELDS_STRUCT,
    INDEX_MSG_STRUCT,
    MESSAGE_NAMES,
    PIECE_HDR_STRUCT,
    PORT_MSG_STRUCT,
    PSTR_PREFIX,
    TRIPLE_MSG_STRUCT,
    U32_STRUCT,
    U32X2_STRUCT,
    U32X3_STRUCT,
    FrameBuffer,
    InPlaceFrameBuffer,
    check_prefix,
    encode,
    encode_handshake,
    encode_hash_message,
    encode_triple,
    parse_handshake,
)
from torrent.proto.wire.events import (
    DHT_BIT,
    EXTENDED_HANDSHAKE_ID,
    EXTENSION_PROTOCOL_BIT,
    FAST_EXTENSION_BIT,
    NEED_DATA,
    V2_UPGRADE_BIT,
    AllowedFast,
    Bitfield,
    Block,
    Cancel,
    Choke,
    ConnectionClosed,
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
    NeedData,
    NotInterested,
    Port,
    RejectRequest,
    Request,
    SuggestPiece,
    Unchoke,
    UnrequestedBlock,
)
from torrent.proto.wire.limits import (
    DEFAULT_MAX_PEER_REQUESTS,
    MAX_EXTENDED_PAYLOAD,
    MAX_HASH_REQUEST_LENGTH,
    MAX_HASHES_PER_MESSAGE,
    MAX_MERKLE_LAYER,
    MAX_UNKNOWN_BITFIELD,
    MAX_UNKNOWN_HAVES,
    bitfield_limit,
    frame_limits,
)
from torrent.proto.wire.rate import RateMeter
from torrent.proto.wire.state import TRANSITIONS, VIOLATIONS, Kind, Phase
from torrent.types import BLOCK_SIZE, InfoHash, PeerId

__all__ = ["ConnectionStats", "PeerProtocol"]

_KEEPALIVE: Final = KeepAlive()
_UNCHOKE: Final = Unchoke()
_INTERESTED: Final = Interested()
_NOT_INTERESTED: Final = NotInterested()
_HAVE_ALL: Final = HaveAll()
_HAVE_NONE: Final = HaveNone()
_CLOSED: Final = ConnectionClosed()


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
#: A received block as :meth:`PeerProtocol.next_event_raw` gives it: (index, begin, data).
RawBlock = tuple[int, int, "bytes | memoryview"]
_HashKey = tuple[bytes, int, int, int, int]  # BEP 52: (pieces root, base layer, index, length, proof layers)
#: Our own hash requests in flight on one connection (each asks for up to 512 nodes).
MAX_OUR_HASH_REQUESTS: Final = 64


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
        hybrid: a hybrid torrent's ``(v1 hash, truncated v2 hash)`` (BEP 52), the two names
            the connection may go by. Speaking the v1 hash, we set the upgrade bit, and a peer
            that answers our handshake with the v2 hash upgrades the connection to it.
            Speaking the v2 hash (the engine upgraded a peer whose handshake named the v1
            hash with the upgrade bit: see :func:`peek_v2_upgrade`), that peer's handshake
            is taken. ``upgraded`` tells whether either happened.
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
        ``peer_extension_handshake``; ``upgraded`` (BEP 52, see ``hybrid``); ``allowed_fast`` (pieces we may request while choked) and
        ``granted_fast`` (pieces we let the peer request while we choke it);
        ``outstanding_requests`` (ours, with the time sent), ``peer_requests`` (theirs);
        ``last_received_at``, ``last_sent_at``; ``waiting_since`` and ``strikes`` (request
        timeouts since the last block: the snub state); ``their_phase``, ``our_phase``;
        counters ``ignored_messages``, ``dropped_requests``, ``unrequested_bytes``,
        ``late_piece_sets``.

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
        hybrid: tuple[bytes, bytes] | None = None,
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
        if hybrid is not None:
            if len(hybrid[0]) != 20 or len(hybrid[1]) != 20 or bytes(info_hash) not in hybrid:
                raise ValueError("hybrid is the (v1, truncated v2) hashes, one of them info_hash")
            if bytes(info_hash) == hybrid[0]:
                reserved[V2_UPGRADE_BIT[0]] |= V2_UPGRADE_BIT[1]
        self._hybrid = hybrid
        self.upgraded = False
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
        #: Our BEP 52 hash requests awaiting their hashes or hash reject.
        self._our_hash_requests: set[_HashKey] = set()
        self._peer_requests: dict[_Key, float] = {}
        # Time: starts at ``now``, or at the first ``now`` passed to receive_data/send.
        self._clock_started = now is not None
        self._now = 0.0 if now is None else now
        self.last_received_at = self._now
        self.last_sent_at = self._now
        self._waiting_since = self._now
        #: Request timeouts (:meth:`expire_requests`) since the peer's last block.
        self.strikes = 0
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
        self._limits = frame_limits(self.num_pieces if self.geometry_known else None)
        self._frames: FrameBuffer | InPlaceFrameBuffer = FrameBuffer(self._limits, MESSAGE_NAMES)
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
            MessageId.HASH_REQUEST: self._on_hash_request,
            MessageId.HASHES: self._on_hashes,
            MessageId.HASH_REJECT: self._on_hash_reject,
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
        self._limits[MessageId.BITFIELD] = bitfield_limit(n)
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

    def get_buffer(self) -> memoryview:
        """Where to read the next bytes from the peer into (asyncio's ``BufferedProtocol``);
        report how many with :meth:`buffer_updated`.

        From the first call on, messages are framed inside this one reused buffer
        (:class:`InPlaceFrameBuffer`; bytes already given to :meth:`receive_data` move into
        it): a :class:`Block`'s or :class:`UnrequestedBlock`'s ``data`` is then a view that
        stays valid only until the next ``get_buffer`` or ``receive_data``. Every other
        event owns its fields. Take the events of one read before reading again.
        """
        frames = self._frames
        if type(frames) is not InPlaceFrameBuffer:
            moved = frames.take(len(frames)) if len(frames) else None
            self._frames = frames = InPlaceFrameBuffer(self._limits, MESSAGE_NAMES)
            if moved is not None:
                frames.feed(moved)
        return frames.get_buffer()

    def buffer_updated(self, nbytes: int, now: float | None = None) -> None:
        """``nbytes`` (> 0) were read into the view :meth:`get_buffer` returned.

        Raises:
            ValueError: more bytes than that view holds, or no :meth:`get_buffer` before.
            LocalProtocolError: data after EOF.
        """
        if now is not None:
            self._set_clock(now)
        frames = self._frames
        if type(frames) is not InPlaceFrameBuffer:
            raise ValueError("buffer_updated without get_buffer")
        if frames.eof:
            raise LocalProtocolError("received data after the end of the stream")
        self.last_received_at = self._now
        frames.buffer_updated(nbytes)

    def next_event(self) -> Event | NeedData:
        """Parse the next event from the received bytes.

        Returns:
            An event, :data:`NEED_DATA` when no whole message is buffered, or
            :class:`ConnectionClosed` once the stream ended cleanly (returned again on every call).

        Raises:
            RemoteProtocolError: the peer broke the protocol; the connection is now in its error
                state and every later call raises again.
        """
        return cast("Event | NeedData", self._next(False))

    def next_event_raw(self) -> Event | NeedData | RawBlock | int:
        """:meth:`next_event` for a client's hot path, with the same checks and state changes:
        a :class:`Block` comes as a plain ``(index, begin, data)`` tuple and a :class:`Request`
        (one the peer may make, queued for :meth:`next_peer_request`) as its piece index.
        Every other event is the same object :meth:`next_event` returns. (Making a frozen
        event costs about a microsecond; a tuple or an int almost nothing, once per block.)
        """
        return self._next(True)

    def next_blocks(self, blocks: list[RawBlock]) -> Event | NeedData | int:
        """:meth:`next_event_raw` for a run of blocks: each requested :class:`Block` is
        appended to ``blocks`` as ``(index, begin, data)``, and the first other event (an
        accepted request as its piece index, or :data:`NEED_DATA`) is returned. The blocks
        in ``blocks`` came before that event. The checks and state changes are those of
        :meth:`next_event`, message by message; only the download meter and the snub state
        are updated once per run (with the same ``now``, so they end the same).

        A read of half a megabyte holds about 30 blocks: taken here in one loop, a block
        costs no call into the protocol and no meter update of its own.

        Raises:
            RemoteProtocolError: as :meth:`next_event`. The blocks appended before the
                offending message stay in ``blocks`` (they were received and checked).
        """
        if self._error is not None:
            raise RemoteProtocolError(f"connection already failed: {self._error}")
        while self.their_phase is not Phase.ACTIVE:
            # The opening (or the end): one message at a time, as next_event_raw.
            ev = self._next(True)
            if type(ev) is not tuple:
                return cast("Event | NeedData | int", ev)
            blocks.append(ev)
        next_frame = self._frames.next_frame
        ours = self._our_requests
        num_pieces = self.num_pieces
        piece_length = self.piece_length
        last_size = self._last_piece_size
        unpack = U32X2_STRUCT.unpack_from
        append = blocks.append
        received = 0
        try:
            while True:
                frame = next_frame()
                if frame is None:
                    return self._out_of_frames()
                view, start, length = frame
                if length and view[start] == 7:  # MessageId.PIECE
                    index, begin = unpack(view, start + 1)
                    n = length - 9
                    if index >= num_pieces or begin + n > (
                        last_size if index == num_pieces - 1 else piece_length
                    ):
                        raise RemoteProtocolError(f"piece message: {self._block_problem(index, begin, n)}")
                    if ours.pop((index, begin, n), None) is None:
                        return self._unrequested(index, begin, view[start + 9 : start + length])
                    append((index, begin, view[start + 9 : start + length]))
                    received += n
                    continue
                event = self._frame_event(view, start, length, True)
                if event is not None:  # not a block: those were taken above
                    return cast("Event | int", event)
        except RemoteProtocolError as exc:
            self._error = str(exc)
            self.their_phase = Phase.ERROR
            raise
        finally:
            if received:
                now = self._now
                self._down.add(received, now)
                self._waiting_since = now
                self.strikes = 0

    def _next(self, raw: bool) -> Event | NeedData | RawBlock | int:
        if self._error is not None:
            raise RemoteProtocolError(f"connection already failed: {self._error}")
        frames = self._frames
        try:
            if self.their_phase is Phase.HANDSHAKE:
                return self._next_handshake()
            while True:
                frame = frames.next_frame()
                if frame is None:
                    return self._out_of_frames()
                event = self._frame_event(*frame, raw)
                if event is not None:
                    return event
        except RemoteProtocolError as exc:
            self._error = str(exc)
            self.their_phase = Phase.ERROR
            raise

    def _frame_event(
        self, view: memoryview, start: int, length: int, raw: bool
    ) -> Event | RawBlock | int | None:
        """The event of one whole message (``view[start:start + length]``, its id first),
        or None when it makes none (an unknown id, a request refused or already queued)."""
        if length == 0:
            return _KEEPALIVE
        msg_id = view[start]
        if msg_id == 7:  # MessageId.PIECE, the hot path
            if self.their_phase is Phase.OPENING:
                self._their_transition(Kind.OTHER, "piece")
            index, begin = U32X2_STRUCT.unpack_from(view, start + 1)
            n = length - 9
            if index >= self.num_pieces or begin + n > (
                self._last_piece_size if index == self.num_pieces - 1 else self.piece_length
            ):
                raise RemoteProtocolError(f"piece message: {self._block_problem(index, begin, n)}")
            data = view[start + 9 : start + length]
            if self._our_requests.pop((index, begin, n), None) is None:
                return self._unrequested(index, begin, data)
            self._down.add(n, self._now)
            self._waiting_since = self._now
            self.strikes = 0
            return (index, begin, data) if raw else Block(index, begin, data)
        if msg_id == 6 and raw:  # MessageId.REQUEST, the hot path of an upload
            taken = self._take_request(view, start)
            return None if taken is None else taken[0]
        handler = self._handlers.get(msg_id)
        if handler is None:
            # Unknown ids are skipped, as BEP 3 implementations do: new extensions must
            # not break old peers. Their length was still bounded by the frame limits.
            self.ignored_messages += 1
            return None
        return handler(view, start, length)

    def _unrequested(self, index: int, begin: int, data: memoryview) -> UnrequestedBlock:
        """A block we did not ask for, or no longer (cancelled, or a copy after a timeout)."""
        n = len(data)
        self._cancelled.discard((index, begin, n))
        self.unrequested_bytes += n
        return UnrequestedBlock(index, begin, data)

    def _out_of_frames(self) -> Event | NeedData:
        """No whole message is buffered: wait for more, or the stream ended."""
        frames = self._frames
        if not frames.eof:
            return NEED_DATA
        if len(frames):
            raise RemoteProtocolError(
                f"connection closed in the middle of a message ({len(frames)} bytes buffered)"
            )
        self.their_phase = Phase.CLOSED
        return _CLOSED

    def _next_handshake(self) -> Event | NeedData:
        frames = self._frames
        check_prefix(frames.peek(len(PSTR_PREFIX)))
        raw = frames.take(HANDSHAKE_LENGTH)
        if raw is None:
            if frames.eof:
                if not len(frames):  # closed before saying anything: a clean close, not garbage
                    self.their_phase = Phase.CLOSED
                    return _CLOSED
                raise RemoteProtocolError(f"connection closed during the handshake ({len(frames)} bytes)")
            return NEED_DATA
        hs = parse_handshake(raw)
        if hs.info_hash != self.info_hash and not self._upgrade(hs):
            raise RemoteProtocolError(f"handshake for another torrent (info hash {hs.info_hash.hex()})")  # type: ignore[union-attr]
        self._their_transition(Kind.HANDSHAKE, "handshake")
        self.peer_handshake = hs
        self.peer_id = PeerId(hs.peer_id)  # type: ignore[arg-type]
        self.fast_extension = self._want_fast and hs.fast_extension
        self.extension_protocol = self._want_ext and hs.extension_protocol
        self.peer_dht = hs.dht
        return hs

    def _upgrade(self, hs: Handshake) -> bool:
        """BEP 52: whether a handshake naming the hybrid's other hash is an upgrade to v2."""
        if self._hybrid is None:
            return False
        v1, v2 = self._hybrid
        if self.info_hash == v1 and hs.info_hash == v2 and self.our_phase is not Phase.HANDSHAKE:
            # Our handshake (v1, upgrade bit set) went first; the peer answered with v2.
            self.info_hash = InfoHash(v2)
        elif not (self.info_hash == v2 and hs.info_hash == v1 and hs.v2_upgrade):
            return False
        self.upgraded = True
        return True

    def _their_transition(self, kind: Kind, name: str) -> None:
        if kind is Kind.PIECE_SET and self.their_phase is Phase.ACTIVE and self.geometry_known:
            # BEP 3 allows a bitfield (BEP 6: have all / have none) only first, but aria2 1.36
            # sends another one later (a bitfield after have none or haves, have all once it
            # completes). libtorrent takes a late one as the peer's new piece set; so do we,
            # rather than drop a working peer. Our own sends still follow the table.
            self.late_piece_sets += 1
            return
        if self.their_phase is Phase.ACTIVE and (kind is Kind.OTHER or kind is Kind.NEUTRAL):
            return  # the table's usual answer, without hashing two enums per message
        new = TRANSITIONS.get((self.their_phase, kind))
        if new is None:
            what = VIOLATIONS.get((self.their_phase, kind), "{name} in phase " + self.their_phase.value)
            raise RemoteProtocolError("peer sent " + what.format(name=name))
        self.their_phase = new

    def _need_fast(self, name: str) -> None:
        if not self.fast_extension:
            raise RemoteProtocolError(f"peer sent {name} but the fast extension (BEP 6) was not negotiated")

    def _index(self, view: memoryview, start: int, name: str) -> int:
        index: int = U32_STRUCT.unpack_from(view, start + 1)[0]
        if index >= self.num_pieces and self.geometry_known:
            raise RemoteProtocolError(
                f"{name} for piece {index} out of range (torrent has {self.num_pieces} pieces)"
            )
        return index

    def _on_choke(self, view: memoryview, start: int, length: int) -> Event:
        self._their_transition(Kind.OTHER, "choke")
        self.peer_choking = True
        if self.fast_extension or not self._our_requests:
            return Choke()
        # BEP 3: "When a peer chokes the client, it is a notification that no requests will be
        # answered until the client is unchoked." Without BEP 6 the requests are simply gone.
        voided = tuple(Request(*key) for key in self._our_requests)
        self._our_requests.clear()
        return Choke(voided=voided)

    def _on_unchoke(self, view: memoryview, start: int, length: int) -> Event:
        self._their_transition(Kind.OTHER, "unchoke")
        self.peer_choking = False
        return _UNCHOKE

    def _on_interested(self, view: memoryview, start: int, length: int) -> Event:
        self._their_transition(Kind.OTHER, "interested")
        self.peer_interested = True
        return _INTERESTED

    def _on_not_interested(self, view: memoryview, start: int, length: int) -> Event:
        self._their_transition(Kind.OTHER, "not interested")
        self.peer_interested = False
        return _NOT_INTERESTED

    def _on_have(self, view: memoryview, start: int, length: int) -> Event:
        self._their_transition(Kind.OTHER, "have")
        index = self._index(view, start, "have")
        if not self.geometry_known:
            if index >= MAX_UNKNOWN_BITFIELD * 8 or len(self._early_haves) >= MAX_UNKNOWN_HAVES:
                raise RemoteProtocolError(
                    f"have for piece {index} before the metadata: too many or too large"
                )
            self._early_haves.add(index)
            return Have(index)
        self.peer_pieces.add(index)
        return Have(index)

    def _on_bitfield(self, view: memoryview, start: int, length: int) -> Event:
        self._their_transition(Kind.PIECE_SET, "bitfield")
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
        self._their_transition(Kind.PIECE_SET, "have all")
        self._early_all = not self.geometry_known
        self.peer_pieces = PieceSet.full(self.num_pieces)
        return _HAVE_ALL

    def _on_have_none(self, view: memoryview, start: int, length: int) -> Event:
        self._need_fast("have none")
        self._their_transition(Kind.PIECE_SET, "have none")
        self.peer_pieces = PieceSet(self.num_pieces)
        return _HAVE_NONE

    def _on_request(self, view: memoryview, start: int, length: int) -> Event | None:
        key = self._take_request(view, start)
        return None if key is None else Request(*key)

    def _take_request(self, view: memoryview, start: int) -> _Key | None:
        """Check and queue the peer's request; its key, or None when it was refused or a duplicate."""
        if self.their_phase is not Phase.ACTIVE:
            self._their_transition(Kind.OTHER, "request")
        index, begin, n = U32X3_STRUCT.unpack_from(view, start + 1)
        if not self.geometry_known:
            # We announced nothing (HaveNone at most): refuse it as a request for a piece we lack.
            self.dropped_requests += 1
            if self.fast_extension:
                self._outbox.append(encode_triple(MessageId.REJECT_REQUEST, index, begin, n))
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
                self._outbox.append(encode_triple(MessageId.REJECT_REQUEST, index, begin, n))
            return None
        self._peer_requests[key] = self._now
        return key

    def _on_cancel(self, view: memoryview, start: int, length: int) -> Event | None:
        self._their_transition(Kind.OTHER, "cancel")
        index, begin, n = U32X3_STRUCT.unpack_from(view, start + 1)
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
            self._outbox.append(encode_triple(MessageId.REJECT_REQUEST, index, begin, n))
        return Cancel(index, begin, n)

    def _on_port(self, view: memoryview, start: int, length: int) -> Event:
        self._their_transition(Kind.NEUTRAL, "port")
        return Port(int.from_bytes(view[start + 1 : start + 3], "big"))

    def _on_suggest(self, view: memoryview, start: int, length: int) -> Event:
        self._need_fast("suggest piece")
        self._their_transition(Kind.OTHER, "suggest piece")
        index = self._index(view, start, "suggest piece")
        if self.geometry_known:
            self.suggested.add(index)
        return SuggestPiece(index)

    def _on_reject(self, view: memoryview, start: int, length: int) -> Event:
        self._need_fast("reject request")
        self._their_transition(Kind.OTHER, "reject request")
        index, begin, n = U32X3_STRUCT.unpack_from(view, start + 1)
        key = (index, begin, n)
        if self._our_requests.pop(key, None) is None:
            if key not in self._cancelled:
                # BEP 6: "If a peer receives a reject for a request that was never sent, the
                # peer should close the connection."
                raise RemoteProtocolError(f"reject for a request we never sent ({index}, {begin}, {n})")
            self._cancelled.discard(key)
            return RejectRequest(index, begin, n, withdrawn=True)
        return RejectRequest(index, begin, n)

    def _on_allowed_fast(self, view: memoryview, start: int, length: int) -> Event:
        self._need_fast("allowed fast")
        self._their_transition(Kind.OTHER, "allowed fast")
        index = self._index(view, start, "allowed fast")
        if self.geometry_known:
            self.allowed_fast.add(index)
        return AllowedFast(index)

    # -- BEP 52 hash messages ---------------------------------------------------------------------

    def _hash_fields(self, view: memoryview, start: int, name: str) -> _HashKey:
        root, base, index, n, proof = HASH_FIELDS_STRUCT.unpack_from(view, start + 1)
        if base > MAX_MERKLE_LAYER or proof > MAX_MERKLE_LAYER:
            raise RemoteProtocolError(f"{name}: base layer {base} or {proof} proof layers out of range")
        if n == 0 or n & (n - 1) or index % n:
            raise RemoteProtocolError(f"{name}: index {index} and length {n} break BEP 52's rules")
        return (bytes(root), base, index, n, proof)

    def _on_hash_request(self, view: memoryview, start: int, length: int) -> Event | None:
        self._their_transition(Kind.NEUTRAL, "hash request")
        key = self._hash_fields(view, start, "hash request")
        if key[3] > MAX_HASH_REQUEST_LENGTH:
            # BEP 52: "SHOULD NOT be greater than 512": refused, the peer stays.
            self._outbox.append(encode_hash_message(MessageId.HASH_REJECT, *key))
            return None
        return HashRequest(*key)

    def _on_hashes(self, view: memoryview, start: int, length: int) -> Event:
        self._their_transition(Kind.NEUTRAL, "hashes")
        key = self._hash_fields(view, start, "hashes")
        if key not in self._our_hash_requests:
            raise RemoteProtocolError("hashes for a hash request we never sent")  # BEP 52: MUST correlate
        body = view[start + 49 : start + length]
        if len(body) % 32 or not body or len(body) // 32 > min(MAX_HASHES_PER_MESSAGE, key[3] + key[4]):
            raise RemoteProtocolError(f"hashes: {len(body)} bytes do not fit the request")
        self._our_hash_requests.discard(key)
        return Hashes(*key, tuple(bytes(body[i : i + 32]) for i in range(0, len(body), 32)))

    def _on_hash_reject(self, view: memoryview, start: int, length: int) -> Event:
        self._their_transition(Kind.NEUTRAL, "hash reject")
        key = self._hash_fields(view, start, "hash reject")
        if key not in self._our_hash_requests:
            raise RemoteProtocolError("hash reject for a hash request we never sent")
        self._our_hash_requests.discard(key)
        return HashReject(*key)

    def _our_hash_key(self, event: HashRequest | Hashes | HashReject, name: str) -> _HashKey:
        key = (event.pieces_root, event.base_layer, event.index, event.length, event.proof_layers)
        n = event.length
        if (
            len(event.pieces_root) != 32
            or not 0 < n <= MAX_HASH_REQUEST_LENGTH
            or n & (n - 1)
            or event.index % n
        ):
            raise LocalProtocolError(f"{name}: {key[1:]} breaks BEP 52's rules")
        if not 0 <= event.base_layer <= MAX_MERKLE_LAYER or not 0 <= event.proof_layers <= MAX_MERKLE_LAYER:
            raise LocalProtocolError(f"{name}: layers out of range")
        return key

    def _send_hash_request(self, event: HashRequest) -> bytes:
        key = self._our_hash_key(event, "hash request")
        if len(self._our_hash_requests) >= MAX_OUR_HASH_REQUESTS:
            raise LocalProtocolError(f"more than {MAX_OUR_HASH_REQUESTS} hash requests outstanding")
        self._our_transition(Kind.NEUTRAL, "hash request")
        self._our_hash_requests.add(key)
        return encode_hash_message(MessageId.HASH_REQUEST, *key)

    def _send_hashes(self, event: Hashes) -> bytes:
        key = self._our_hash_key(event, "hashes")
        if not 0 < len(event.hashes) <= MAX_HASHES_PER_MESSAGE or any(len(h) != 32 for h in event.hashes):
            raise LocalProtocolError("hashes: 1 to 576 hashes of 32 bytes each")
        self._our_transition(Kind.NEUTRAL, "hashes")
        return encode_hash_message(MessageId.HASHES, *key, event.hashes)

    def _send_hash_reject(self, event: HashReject) -> bytes:
        key = self._our_hash_key(event, "hash reject")
        self._our_transition(Kind.NEUTRAL, "hash reject")
        return encode_hash_message(MessageId.HASH_REJECT, *key)

    @property
    def hash_requests_outstanding(self) -> int:
        """Our hash requests not answered yet."""
        return len(self._our_hash_requests)

    def _on_extended(self, view: memoryview, start: int, length: int) -> Event | None:
        if not self.extension_protocol:
            raise RemoteProtocolError("peer sent an extended message but BEP 10 was not negotiated")
        self._their_transition(Kind.NEUTRAL, "extended")
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

    def send_block(
        self, index: int, begin: int, data: bytes | memoryview, now: float
    ) -> tuple[bytes, bytes | memoryview]:
        """``send(Block(index, begin, data), now)`` for the hot path of an upload.

        Returns:
            The 13-byte message header and ``data`` itself, to be written together (one
            ``writelines``) so the block is never copied into a joined message.

        Raises:
            LocalProtocolError: as :meth:`send`.
        """
        if self.our_phase is Phase.ACTIVE and self._error is None and self._clock_started:
            # The usual case, once per block uploaded: _block_parts inlined.
            self._now = now
            n = len(data)
            if self._peer_requests.pop((index, begin, n), None) is None:
                raise LocalProtocolError(
                    f"block ({index}, {begin}, {n}) answers no pending request of the peer"
                )
            self._up.add(n, now)
            self.last_sent_at = now
            return PIECE_HDR_STRUCT.pack(9 + n, 7, index, begin), data
        self._set_clock(now)
        if self.our_phase is not Phase.ACTIVE or self._error is not None:
            out = self.send(Block(index, begin, data))  # the checks and their messages
            return out[:13], out[13:]
        parts = self._block_parts(index, begin, data)
        self.last_sent_at = self._now
        return parts

    def _block_parts(
        self, index: int, begin: int, data: bytes | memoryview
    ) -> tuple[bytes, bytes | memoryview]:
        n = len(data)
        key = (index, begin, n)
        if key not in self._peer_requests:
            raise LocalProtocolError(f"block ({index}, {begin}, {n}) answers no pending request of the peer")
        self._our_transition(Kind.OTHER, "piece")
        del self._peer_requests[key]
        self._up.add(n, self._now)
        return PIECE_HDR_STRUCT.pack(9 + n, MessageId.PIECE, index, begin), data

    def _our_transition(self, kind: Kind, name: str) -> None:
        if self.our_phase is Phase.ACTIVE and (kind is Kind.OTHER or kind is Kind.NEUTRAL):
            return  # the table's usual answer, without hashing two enums per message
        new = TRANSITIONS.get((self.our_phase, kind))
        if new is None:
            what = VIOLATIONS.get((self.our_phase, kind), "{name} in phase " + self.our_phase.value)
            raise LocalProtocolError("cannot send " + what.format(name=name))
        if self.fast_extension and self.our_phase is Phase.OPENING and kind is Kind.OTHER:
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
        self._our_transition(Kind.HANDSHAKE, "handshake")
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
        self._our_transition(Kind.NEUTRAL, "keep-alive")
        return b"\x00\x00\x00\x00"

    def _send_choke(self, event: Choke) -> bytes:
        self._our_transition(Kind.OTHER, "choke")
        self.am_choking = True
        out = [b"\x00\x00\x00\x01\x00"]
        if self.fast_extension:
            for key in [k for k in self._peer_requests if k[0] not in self.granted_fast]:
                del self._peer_requests[key]
                out.append(encode_triple(MessageId.REJECT_REQUEST, *key))
        else:
            self._peer_requests.clear()
        return b"".join(out)

    def _send_unchoke(self, event: Unchoke) -> bytes:
        self._our_transition(Kind.OTHER, "unchoke")
        self.am_choking = False
        return b"\x00\x00\x00\x01\x01"

    def _send_interested(self, event: Interested) -> bytes:
        self._our_transition(Kind.OTHER, "interested")
        self.am_interested = True
        return b"\x00\x00\x00\x01\x02"

    def _send_not_interested(self, event: NotInterested) -> bytes:
        self._our_transition(Kind.OTHER, "not interested")
        self.am_interested = False
        return b"\x00\x00\x00\x01\x03"

    def _send_have(self, event: Have) -> bytes:
        self._our_index(event.index, "have")
        self._our_transition(Kind.OTHER, "have")
        self.our_pieces.add(event.index)
        return INDEX_MSG_STRUCT.pack(5, MessageId.HAVE, event.index)

    def _send_bitfield(self, event: Bitfield) -> bytes:
        if not self.geometry_known:
            raise LocalProtocolError("bitfield: the torrent's geometry is not known yet (metadata pending)")
        if event.pieces.size != self.num_pieces:
            raise LocalProtocolError(
                f"bitfield for {event.pieces.size} pieces, torrent has {self.num_pieces}"
            )
        self._our_transition(Kind.PIECE_SET, "bitfield")
        self.our_pieces = event.pieces.copy()
        return encode(event)

    def _send_have_all(self, event: HaveAll) -> bytes:
        self._our_fast("have all")
        if not self.geometry_known:
            raise LocalProtocolError("have all: the torrent's geometry is not known yet (metadata pending)")
        self._our_transition(Kind.PIECE_SET, "have all")
        self.our_pieces = PieceSet.full(self.num_pieces)
        return b"\x00\x00\x00\x01\x0e"

    def _send_have_none(self, event: HaveNone) -> bytes:
        self._our_fast("have none")
        self._our_transition(Kind.PIECE_SET, "have none")
        self.our_pieces = PieceSet(self.num_pieces)
        return b"\x00\x00\x00\x01\x0f"

    def send_requests(
        self, requests: Iterable[tuple[int, int, int]], now: float
    ) -> tuple[bytes, list[tuple[int, int, int]]]:
        """``send(Request(index, begin, length), now)`` for many requests at once (a pipeline refill).

        Each request is checked and recorded exactly as :meth:`send` would; the ones it
        would refuse are not sent and leave the state unchanged.

        Returns:
            The bytes of the requests sent, joined for one write, and the refused
            ``(index, begin, length)``: each one :meth:`send` would have raised
            :class:`LocalProtocolError` for (e.g. still awaiting the answer to a cancelled copy).
        """
        self._set_clock(now)
        if self.our_phase is not Phase.ACTIVE or self._error is not None:
            # The first request of a connection (or a failed one): the checks of send().
            chunks = []
            refused = []
            for index, begin, length in requests:
                try:
                    chunks.append(self.send(Request(index, begin, length)))
                except LocalProtocolError:
                    refused.append((index, begin, length))
            return b"".join(chunks), refused
        return self._send_requests_active(requests)

    def _send_requests_active(
        self, requests: Iterable[tuple[int, int, int]]
    ) -> tuple[bytes, list[tuple[int, int, int]]]:
        """:meth:`send_requests` once both sides are past the opening: ``_request_bytes``'s
        checks, with those of a piece (its index, the peer has it, choking) made once per
        run of requests for it (a refill asks for dozens of blocks of a few pieces)."""
        chunks = []
        refused = []
        now = self._now
        ours = self._our_requests
        cancelled = self._cancelled
        was_idle = not ours and not self.strikes
        num_pieces = self.num_pieces
        piece_length = self.piece_length
        last_size = self._last_piece_size
        allowed = self.allowed_fast if self.fast_extension else set()
        pack = TRIPLE_MSG_STRUCT.pack
        piece = -1
        size = 0  # 0 while ``piece`` may not be requested
        for index, begin, n in requests:
            if index != piece:
                piece = index
                requestable = (
                    0 <= index < num_pieces
                    and index in self.peer_pieces
                    and (not self.peer_choking or index in allowed)
                )
                size = (last_size if index == num_pieces - 1 else piece_length) if requestable else 0
            key = (index, begin, n)
            if (
                0 < n <= BLOCK_SIZE
                and begin >= 0
                and begin + n <= size
                and key not in ours
                and key not in cancelled
            ):
                ours[key] = now
                chunks.append(pack(13, 6, index, begin, n))
            else:
                refused.append(key)
        if chunks:
            self.last_sent_at = now
            if was_idle:
                self._waiting_since = now  # we start waiting on this peer now
        return b"".join(chunks), refused

    def _send_request(self, event: Request) -> bytes:
        return self._request_bytes(event.index, event.begin, event.length)

    def _request_bytes(self, index: int, begin: int, n: int) -> bytes:
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
            self._our_transition(Kind.OTHER, "request")
        if not requests and not self.strikes:
            self._waiting_since = self._now  # we start waiting on this peer now
        requests[key] = self._now
        return TRIPLE_MSG_STRUCT.pack(13, 6, index, begin, n)

    def _send_cancel(self, event: Cancel) -> bytes:
        key = (event.index, event.begin, event.length)
        if key not in self._our_requests:
            raise LocalProtocolError(
                f"cancel for ({event.index}, {event.begin}, {event.length}), not outstanding"
            )
        self._our_transition(Kind.OTHER, "cancel")
        del self._our_requests[key]
        if self.fast_extension:
            self._cancelled.add(key)  # BEP 6: its block or reject is still coming
        return encode_triple(MessageId.CANCEL, *key)

    def _send_block(self, event: Block) -> bytes:
        header, data = self._block_parts(event.index, event.begin, event.data)
        return header + data

    def _send_port(self, event: Port) -> bytes:
        if not 0 < event.port < 65536:
            raise LocalProtocolError(f"port {event.port} out of range")
        self._our_transition(Kind.NEUTRAL, "port")
        return PORT_MSG_STRUCT.pack(3, MessageId.PORT, event.port)

    def _send_suggest(self, event: SuggestPiece) -> bytes:
        self._our_fast("suggest piece")
        self._our_index(event.index, "suggest piece")
        self._our_transition(Kind.OTHER, "suggest piece")
        return INDEX_MSG_STRUCT.pack(5, MessageId.SUGGEST_PIECE, event.index)

    def _send_reject(self, event: RejectRequest) -> bytes:
        self._our_fast("reject request")
        key = (event.index, event.begin, event.length)
        if key not in self._peer_requests:
            raise LocalProtocolError(
                f"reject for ({event.index}, {event.begin}, {event.length}), not pending"
            )
        self._our_transition(Kind.OTHER, "reject request")
        del self._peer_requests[key]
        return encode_triple(MessageId.REJECT_REQUEST, *key)

    def _send_allowed_fast(self, event: AllowedFast) -> bytes:
        self._our_fast("allowed fast")
        self._our_index(event.index, "allowed fast")
        self._our_transition(Kind.OTHER, "allowed fast")
        self.granted_fast.add(event.index)
        return INDEX_MSG_STRUCT.pack(5, MessageId.ALLOWED_FAST, event.index)

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
        self._our_transition(Kind.NEUTRAL, "extension handshake")
        return EXT_HDR_STRUCT.pack(2 + len(payload), MessageId.EXTENDED, EXTENDED_HANDSHAKE_ID) + payload

    def _send_extended(self, event: ExtendedMessage) -> bytes:
        if not self.extension_protocol:
            raise LocalProtocolError(f"cannot send {event.name!r}: BEP 10 was not negotiated")
        their_id = self.peer_extensions.get(event.name)
        if their_id is None:
            raise LocalProtocolError(f"peer did not announce extension {event.name!r}")
        if len(event.payload) > MAX_EXTENDED_PAYLOAD:
            raise LocalProtocolError(f"extended message {event.name!r} over 1 MiB")
        self._our_transition(Kind.NEUTRAL, "extended")
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
        HashRequest: _send_hash_request,
        Hashes: _send_hashes,
        HashReject: _send_hash_reject,
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

    def next_peer_request(self) -> Request | None:
        """The peer's oldest request still waiting for us (the next one to serve), if any."""
        key = next(iter(self._peer_requests), None)
        return None if key is None else Request(*key)

    def pending_peer_requests(self, limit: int) -> list[_Key]:
        """The peer's ``limit`` oldest requests still waiting for us, as ``(index, begin,
        length)``, oldest first: :meth:`next_peer_request` for a run of them (no event made
        per request). Serving one with :meth:`send_block` does not change the others."""
        return list(islice(self._peer_requests, limit))

    def refuse_peer_request(self, request: Request) -> bytes:
        """Give up on serving one of the peer's pending requests.

        Returns:
            The bytes to write: with the fast extension the ``RejectRequest`` BEP 6 requires,
            without it nothing (the request is just forgotten, as a choke would).

        Raises:
            LocalProtocolError: ``request`` is not pending.
        """
        key = (request.index, request.begin, request.length)
        if self._peer_requests.pop(key, None) is None:
            raise LocalProtocolError(
                f"refusing ({request.index}, {request.begin}, {request.length}), not pending"
            )
        self.dropped_requests += 1
        return encode_triple(MessageId.REJECT_REQUEST, *key) if self.fast_extension else b""

    def expire_requests(self, now: float, timeout_s: float) -> list[Request]:
        """Our requests sent more than ``timeout_s`` before ``now``, oldest first.

        Finding any counts a strike: the peer is snubbed until its next block. The requests
        stay outstanding; the caller cancels them (``send(Cancel)``) and asks other peers.
        """
        expired = [Request(*key) for key, sent in self._our_requests.items() if now - sent > timeout_s]
        if expired:
            self.strikes += 1
        return expired

    @property
    def waiting_since(self) -> float | None:
        """Since when we wait on the peer for a block (None when nothing is outstanding and no
        request timed out since its last block): its last block, or the first request after."""
        if not self._our_requests and not self.strikes:
            return None
        return self._waiting_since

    def is_snubbed(self, now: float) -> bool:
        """True after a request timeout (until the next block), or when we have waited
        ``snub_timeout_s`` for a block (libtorrent's *snubbed*)."""
        if self.strikes:
            return True
        return bool(self._our_requests) and now - self._waiting_since >= self.snub_timeout_s

    @property
    def download_meter(self) -> RateMeter:
        """The meter of payload received in requested blocks (read it; the protocol adds to it)."""
        return self._down

    @property
    def upload_meter(self) -> RateMeter:
        """The meter of payload sent in blocks (read it; the protocol adds to it)."""
        return self._up

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
