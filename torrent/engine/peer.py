"""One peer connection on asyncio: a byte stream ⇄ ``wire.PeerProtocol``, timers, the pipeline.

This layer moves bytes and runs timers; the sans-IO ``PeerProtocol`` does the protocol and
holds every piece of the connection's protocol state (choke and interest flags, both piece
sets, requests both ways, rates, the snub timer), and the owning swarm (a :class:`PeerHost`)
decides what to request and what to serve. ``Peer``'s state attributes (``am_choking``,
``has``, ``outstanding``, ``down``...) are read-through views of the protocol object: there is
one copy of each fact, and ``_on_event`` only tells the host what happened.

* The byte stream is any :class:`~torrent.engine.transport.Transport` (TCP today; an MSE
  stream or a uTP socket plug in there, see :mod:`torrent.engine.transport`). Outgoing
  connections are opened by the ``connect=`` :data:`~torrent.engine.transport.Connector`.
* Reading: a TCP transport reads straight into the codec's buffer (``BufferedProtocol``:
  ``get_buffer``/``buffer_updated``), where messages are framed in place; other streams (MSE,
  uTP) hand bytes to ``data_received``. Either way every event is dispatched synchronously,
  so a block goes stream → codec → swarm without a queue (and is copied once, into its
  piece), and the codec never holds more than one incomplete message. When the download limit is exceeded, reading is
  paused until the budget refills.
* Writing: ``transport.write``; ``pause_writing``/``resume_writing`` gate the upload task,
  which only reads the next block from disk once the transport's buffer has drained below its
  high-water mark: a slow peer cannot grow our memory (write back-pressure).
* The request pipeline keeps ``clamp(rate * request_queue_time / BLOCK_SIZE, min, max)``
  blocks outstanding, one when the peer is snubbed (libtorrent ``update_desired_queue_size``).
* ``tick(now)`` (once a second, driven by the host) times out the handshake and requests (their
  blocks go back to the picker for other peers), sends keep-alives after two minutes of silence
  (BEP 3) and drops idle peers. Every timer reads the injected :class:`~torrent.engine.clock.Clock`.

Failures stay here: ``run_*()`` catch ``OSError``, ``TimeoutError`` and ``ProtocolError``,
record ``close_reason`` and return. Only bugs propagate.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Protocol, assert_never, cast, overload

from torrent.config import Settings
from torrent.engine.bandwidth import RateLimiter, RateSnapshot
from torrent.engine.clock import SYSTEM_CLOCK, Clock
from torrent.engine.transport import Connector, Transport, tcp_connect
from torrent.errors import LocalProtocolError, ProtocolError, RemoteProtocolError, StorageError
from torrent.proto import pex, wire
from torrent.proto.pieceset import PieceSet
from torrent.types import BLOCK_SIZE, InfoHash, PeerId
from torrent.version import CLIENT_NAME

__all__ = [
    "RATE_WINDOW_S",
    "UPLOAD_BATCH_BYTES",
    "UT_METADATA",
    "UT_METADATA_ID",
    "UT_PEX_ID",
    "BlockKey",
    "Peer",
    "PeerAddr",
    "PeerHost",
    "PieceFlags",
]

#: Our extended message id for BEP 9 (the ``m`` dict of our BEP 10 handshake).
UT_METADATA_ID = 2
#: BEP 9's extension name (``torrent.proto.ut_metadata.EXTENSION_NAME``): that module, the
#: messages' codec, loads with the first metadata message, which most connections never see.
UT_METADATA = "ut_metadata"
#: ...and for BEP 11 (offered only when the host exchanges peers: never for a private torrent).
UT_PEX_ID = 1

#: Upload blocks collected before one ``writelines`` call.
UPLOAD_BATCH_BYTES = 256 * 1024
#: The peer's requests looked at in one pass of the upload loop.
UPLOAD_RUN = 64
#: A deep request pipeline is topped up once this many of its slots are free (or a quarter
#: of it, when that is fewer): each refill costs a picker call, the encoding and a write,
#: and with reads of a few blocks each, topping up after every read made refills a third
#: of a download's per-read work, and each write of requests wakes the peer too. 64 blocks
#: (1 MiB) are about 2 ms of a fast peer's data, while the pipeline holds up to three
#: seconds of it (at most 500 blocks: a refill then still leaves 436 outstanding).
REFILL_MIN_BLOCKS = 64
#: Longest a queued message waits for a write of requests to go out with (see Peer.queue).
QUEUE_HOLD_S = 0.05
#: Reads before the wire protocol exists (an incoming handshake not yet routed) go here.
SCRATCH_BYTES = 16 * 1024
#: Window of a connection's rate meters: short, so the choker and the pipeline follow changes.
RATE_WINDOW_S = 5.0

#: (piece index, begin offset) of a block.
BlockKey = tuple[int, int]
#: (host, port) of a peer.
PeerAddr = tuple[str, int]


class PeerHost(Protocol):
    """What a peer needs from the torrent it belongs to (the swarm implements it)."""

    info_hash: InfoHash
    num_pieces: int  # 0 while the metadata is not known (a magnet link)
    piece_length: int | None
    total_length: int | None
    #: A hybrid's (v1 hash, truncated v2 hash): its connections may upgrade (BEP 52).
    hybrid_hashes: tuple[InfoHash, InfoHash] | None

    def on_peer_ready(self, peer: Peer) -> None:
        """The handshake is done; send our bitfield, decide interest."""

    def on_peer_has(self, peer: Peer, indices: list[int] | None) -> None:
        """The peer announced pieces (``None``: its whole bitfield, see ``peer.has``)."""

    def on_peer_block(self, peer: Peer, index: int, begin: int, data: Any) -> None:
        """A requested block arrived (``data`` is only valid during the call)."""

    def on_peer_blocks(self, peer: Peer, blocks: list[tuple[int, int, Any]]) -> None:
        """The requested blocks of one read, in order: each ``(index, begin, data)`` as
        :meth:`on_peer_block` takes it (the list and the data are only valid during the call)."""

    def on_peer_unchoked(self, peer: Peer) -> None: ...

    def pick_blocks(self, peer: Peer, n: int) -> list[tuple[int, int, int]]:
        """Up to ``n`` (index, begin, length) to request from ``peer`` now."""

    def on_requests_dropped(self, peer: Peer, blocks: list[tuple[int, int, int]]) -> None:
        """Requests that will not be answered (choke, timeout, close): re-pick them."""

    def may_upload(self, peer: Peer, index: int, begin: int, length: int) -> bool:
        """May we serve this request (we have the piece, the peer is unchoked)?"""

    def on_hash_request(self, peer: Peer, ev: wire.HashRequest) -> None:
        """BEP 52: answer with ``Hashes`` or ``HashReject``."""

    def on_hashes(self, peer: Peer, ev: wire.Hashes) -> None:
        """BEP 52: the answer to one of our hash requests."""

    def on_hash_reject(self, peer: Peer, ev: wire.HashReject) -> None:
        """BEP 52: the peer will not answer one of our hash requests."""

    def read_block(self, index: int, begin: int, length: int) -> Awaitable[bytes | memoryview]: ...

    def cached_block(self, index: int, begin: int, length: int) -> bytes | memoryview | None:
        """``read_block`` when the block can be had without waiting (the read cache), else None
        (the upload's fast path: most blocks of a piece are read ahead with its first)."""

    def prefetch(self, index: int) -> None:
        """Start reading piece ``index`` into the read cache (uploads will want it)."""

    def extension_fields(self) -> dict[str, Any]:
        """Fields for our BEP 10 handshake besides ``m`` (e.g. BEP 9 ``metadata_size``)."""

    def on_extension_handshake(self, peer: Peer, ev: wire.ExtensionHandshake) -> None: ...

    @property
    def pex_enabled(self) -> bool:
        """Offer and accept ``ut_pex`` (BEP 11) on this host's connections."""

    def on_metadata_message(self, peer: Peer, payload: bytes) -> None:
        """A BEP 9 ``ut_metadata`` message (request, data or reject) from ``peer``."""

    def on_pex_message(self, peer: Peer, payload: bytes) -> None:
        """A BEP 11 ``ut_pex`` message from ``peer`` (only when ``pex_enabled``)."""

    def on_peer_interest_changed(self, peer: Peer) -> None: ...

    def on_peer_closed(self, peer: Peer) -> None: ...


class PieceFlags(Sequence[int]):
    """A read-only view of a piece set as one 0/1 entry per piece (what the picker takes)."""

    __slots__ = ("_pieces",)

    def __init__(self, pieces: PieceSet) -> None:
        self._pieces = pieces

    def __len__(self) -> int:
        return self._pieces.size

    @overload
    def __getitem__(self, index: int) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[int]: ...

    def __getitem__(self, index: int | slice) -> int | Sequence[int]:
        if isinstance(index, slice):
            return bytes(self)[index]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return 1 if index % len(self) in self._pieces else 0

    def __iter__(self) -> Iterator[int]:
        return iter(bytes(self))

    def __bytes__(self) -> bytes:
        flags = bytearray(self._pieces.size)
        for i in self._pieces:
            flags[i] = 1
        return bytes(flags)


_NO_PIECES: PieceSet = PieceSet(0)


class Peer(asyncio.BufferedProtocol):
    """One connection. Create it, then ``await run_outgoing()`` or ``run_incoming()``.

    Args:
        host: the torrent this connection serves (None for an incoming one until its
            handshake is routed, see :meth:`accept`).
        addr: the peer's address.
        settings, our_peer_id: the session's.
        down_limit, up_limit: the session's shared rate limiters.
        clock: the time source of every timer (tests pass a ``ManualClock``).
        connect: opens outgoing connections (TCP by default; see :mod:`torrent.engine.transport`).

    Attributes:
        addr: the peer's address.
        proto: the connection's ``wire.PeerProtocol`` once the torrent is known (None before).
        close_reason: why the connection ended ("" while open).

    The protocol state reads through to ``proto``: ``peer_id``, ``has``, ``num_have``,
    ``is_seed``, ``am_choking``, ``am_interested``, ``peer_choking``, ``peer_interested``,
    ``snubbed``, ``strikes``, ``outstanding``, ``down``/``up``, ``last_recv``/``last_send``.
    """

    def __init__(
        self,
        host: PeerHost | None,
        addr: PeerAddr,
        *,
        settings: Settings,
        our_peer_id: PeerId,
        down_limit: RateLimiter,
        up_limit: RateLimiter,
        clock: Clock = SYSTEM_CLOCK,
        connect: Connector = tcp_connect,
    ) -> None:
        self.host = host
        self.addr = addr
        self.settings = settings
        self.our_peer_id = our_peer_id
        self.down_limit = down_limit
        self.up_limit = up_limit
        self.clock = clock
        self._connect = connect
        self.proto: wire.PeerProtocol | None = None
        self.transport: Transport | None = None
        self.outgoing = True
        #: Choker bookkeeping: when we last unchoked the peer and its upload total then.
        self.unchoked_at: float | None = None
        self.uploaded_at_unchoke = 0
        self.close_reason = ""
        #: Our BitTorrent handshake while an outgoing connection is being opened: a
        #: connector that can carry it in its own handshake (MSE's initial payload ``IA``)
        #: takes it and sets this to ``b""``; otherwise it is written once connected.
        self.initial_payload = b""
        #: The protocol violation that ended the connection ("" when none did).
        self.violation = ""
        #: When the stream opened (the handshake timeout counts from here).
        self.connected_at = clock.monotonic()
        self._loop = asyncio.get_running_loop()
        self._closed = self._loop.create_future()
        self._writable = asyncio.Event()
        self._writable.set()
        self._upload_wakeup = asyncio.Event()
        self._pending: bytearray = bytearray()  # bytes before the handshake was routed
        self._scratch: memoryview | None = None  # read into before the protocol exists
        self._into_proto = False  # get_buffer handed out the protocol's buffer
        self._router: Callable[[InfoHash], PeerHost | None] | None = None
        self._paused_reading = False
        self._refill = False
        self._slow_start = settings.pipeline_min
        self._prefetched = -1
        self._batched = 0  # payload bytes in the upload batch not yet written
        self._queued = bytearray()  # encoded messages that wait for the next write (queue())
        self._resume_handle: asyncio.TimerHandle | None = None
        #: Called once the connection is up (the swarm frees a half-open slot).
        self.on_connected: Callable[[], None] | None = None

    # ------------------------------------------------------------------ protocol state (read-through)

    @property
    def peer_id(self) -> PeerId | None:
        """The peer's id, once its handshake arrived."""
        return None if self.proto is None else self.proto.peer_id

    @property
    def _pieces(self) -> PieceSet:
        proto = self.proto
        return _NO_PIECES if proto is None or not proto.geometry_known else proto.peer_pieces

    @property
    def has(self) -> PieceFlags:
        """The peer's pieces, one 0/1 entry per piece (empty while the metadata is unknown)."""
        return PieceFlags(self._pieces)

    @property
    def num_have(self) -> int:
        return len(self._pieces)

    @property
    def is_seed(self) -> bool:
        pieces = self._pieces
        return pieces.size > 0 and pieces.is_full()

    @property
    def am_choking(self) -> bool:
        return True if self.proto is None else self.proto.am_choking

    @property
    def am_interested(self) -> bool:
        return False if self.proto is None else self.proto.am_interested

    @property
    def peer_choking(self) -> bool:
        return True if self.proto is None else self.proto.peer_choking

    @property
    def peer_interested(self) -> bool:
        return False if self.proto is None else self.proto.peer_interested

    @property
    def snubbed(self) -> bool:
        return self.proto is not None and self.proto.is_snubbed(self.clock.monotonic())

    @property
    def strikes(self) -> int:
        """Request timeouts since the peer's last block."""
        return 0 if self.proto is None else self.proto.strikes

    @property
    def outstanding(self) -> dict[wire.Request, float]:
        """Our requests waiting for the peer, with the time each was sent (a copy: for
        the hot path use :meth:`num_outstanding`)."""
        return {} if self.proto is None else self.proto.outstanding_requests

    def num_outstanding(self) -> int:
        """How many of our requests wait for the peer."""
        return 0 if self.proto is None else self.proto.num_outstanding()

    @property
    def down(self) -> RateSnapshot:
        """Payload received in requested blocks: rate and total now."""
        meter = None if self.proto is None else self.proto.download_meter
        return RateSnapshot.of(meter, self.clock.monotonic())

    @property
    def up(self) -> RateSnapshot:
        """Payload sent in blocks: rate and total now."""
        meter = None if self.proto is None else self.proto.upload_meter
        return RateSnapshot.of(meter, self.clock.monotonic())

    @property
    def last_recv(self) -> float:
        return self.connected_at if self.proto is None else self.proto.last_received_at

    @property
    def last_send(self) -> float:
        return self.connected_at if self.proto is None else self.proto.last_sent_at

    @property
    def closed(self) -> bool:
        return self._closed.done()

    def pipeline_depth(self) -> int:
        """clamp(rate × queue_time / BLOCK_SIZE, min, max); 1 when snubbed.

        Until the rate meter has a full window, a slow start (as TCP's and libtorrent's)
        adds one request per block received, so a fast peer is not held to the minimum
        during the seconds it takes to measure it.
        """
        proto = self.proto
        if proto is None:
            return self.settings.pipeline_min
        now = self.clock.monotonic()
        if proto.is_snubbed(now):
            return 1
        s = self.settings
        meter = proto.download_meter
        depth = int(meter.rate_bps(now) * s.request_queue_time_s / BLOCK_SIZE)
        if meter.warming_up(now):
            depth = max(depth, self._slow_start)
        return max(s.pipeline_min, min(s.pipeline_max, depth))

    # ------------------------------------------------------------------ running

    async def run_outgoing(self) -> None:
        """Connect, handshake and serve the connection until it ends. Never raises for
        network or protocol failures: they end up in ``close_reason``."""
        assert self.host is not None
        self.outgoing = True
        try:
            # Our handshake is made before the connect, so a connector can carry it (MSE's
            # IA); the protocol is in place only after it, so what the peer says first
            # waits in _pending until our handshake has gone out.
            proto, self.initial_payload = self._new_protocol(self.host)
            async with asyncio.timeout(self.settings.connect_timeout_s):
                await self._connect(self, self.addr)
            if self.on_connected is not None:
                self.on_connected()
            self.proto = proto
            if self.initial_payload:  # not carried by the connector's own handshake
                self._write(self.initial_payload)
                self.initial_payload = b""
            if self._pending:
                early, self._pending = bytes(self._pending), bytearray()
                self.data_received(early)
            await self._serve()
        except (OSError, TimeoutError, ProtocolError) as exc:
            self._record(exc)
        finally:
            self._finish()

    def accept(
        self, transport: asyncio.BaseTransport | Transport, router: Callable[[InfoHash], PeerHost | None]
    ) -> None:
        """Adopt an incoming connection; ``router(info_hash)`` picks our torrent."""
        self.outgoing = False
        self._router = router
        self.transport = cast(Transport, transport)

    async def run_incoming(self) -> None:
        """Serve an incoming connection whose handshake has been routed to ``host``."""
        try:
            await self._serve()
        except (OSError, TimeoutError, ProtocolError) as exc:
            self._record(exc)
        finally:
            self._finish()

    async def _serve(self) -> None:
        # The handshake timeout is ``tick``'s (on the injected clock), like every other timer.
        async with asyncio.TaskGroup() as tg:
            uploader = tg.create_task(self._upload_loop())
            try:
                await self._closed
            finally:
                uploader.cancel()

    def _record(self, exc: BaseException) -> None:
        if isinstance(exc, RemoteProtocolError) and not self.violation:
            self.violation = str(exc) or type(exc).__name__
        if not self.close_reason:
            name = type(exc).__name__
            self.close_reason = f"{name}: {exc}" if str(exc) else name

    def _finish(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self._resume_handle is not None:
            self._resume_handle.cancel()
        if not self._closed.done():
            self._closed.set_result(None)
        if self.host is not None:
            dropped = [(r.index, r.begin, r.length) for r in self.outstanding]
            if dropped:
                self.host.on_requests_dropped(self, dropped)
            self.host.on_peer_closed(self)

    def close(self, reason: str) -> None:
        """Drop the connection; ``run_*`` returns soon after."""
        if not self.close_reason:
            self.close_reason = reason
        if self.transport is not None:
            self.transport.close()
        if not self._closed.done():
            self._closed.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        """A bug in event handling: end ``run`` with it so it reaches the task group."""
        if self.transport is not None:
            self.transport.abort()
        if not self._closed.done():
            self._closed.set_exception(exc)

    # ------------------------------------------------------------------ stream callbacks

    def _start_protocol(self, host: PeerHost, info_hash: InfoHash | None = None) -> None:
        """Speak to ``host``'s torrent; ``info_hash`` is the one the peer named, when it
        named one (a hybrid answers to its v1 and its truncated v2 hash: BEP 52)."""
        self.proto, handshake = self._new_protocol(host, info_hash)
        self._write(handshake)

    def _new_protocol(
        self, host: PeerHost, info_hash: InfoHash | None = None
    ) -> tuple[wire.PeerProtocol, bytes]:
        """The wire protocol for ``host`` with our handshake sent, and that handshake's bytes."""
        self.host = host
        s = self.settings
        proto = wire.PeerProtocol(
            info_hash=info_hash or host.info_hash,
            hybrid=host.hybrid_hashes,
            our_peer_id=self.our_peer_id,
            piece_length=host.piece_length,
            total_length=host.total_length,
            max_peer_requests=s.max_incoming_requests,
            rate_window_s=RATE_WINDOW_S,
            snub_timeout_s=s.snub_timeout_s,
            extensions={
                UT_METADATA: UT_METADATA_ID,
                **({pex.EXTENSION_NAME: UT_PEX_ID} if host.pex_enabled else {}),
            },
            now=self.clock.monotonic(),
        )
        return proto, proto.send(wire.Handshake(), self.clock.monotonic())

    def connection_made(self, transport: asyncio.BaseTransport | Transport) -> None:
        self.transport = cast(Transport, transport)
        self.transport.set_write_buffer_limits(high=self.settings.send_buffer_high_bytes)
        self.connected_at = self.clock.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.close_reason:
            self.close_reason = f"connection lost: {exc}" if exc else "connection closed by peer"
        if not self._closed.done():
            self._closed.set_result(None)
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def eof_received(self) -> bool | None:
        self.close_reason = self.close_reason or "connection closed by peer"
        return None

    def data_received(self, data: bytes) -> None:
        """Bytes from a stream that hands them over (an MSE or uTP stream, the listener)."""
        try:
            self._data_received(data)
        except (RemoteProtocolError, StorageError) as exc:
            self._record(exc)
            self.close(self.close_reason)
        except Exception as exc:  # a bug: let it reach the owner of run()
            self._fail(exc)

    def get_buffer(self, sizehint: int) -> memoryview:
        """asyncio's ``BufferedProtocol`` (a TCP transport): the stream is read straight into
        the wire protocol's buffer, where messages are framed in place (blocks are views of it,
        copied once, into their piece). Before the protocol exists, into a small scratch
        buffer whose bytes take the ``data_received`` way."""
        proto = self.proto
        if proto is not None:
            self._into_proto = True
            return proto.get_buffer()
        self._into_proto = False
        if self._scratch is None:
            self._scratch = memoryview(bytearray(SCRATCH_BYTES))
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        try:
            if self._into_proto:
                proto = self.proto
                assert proto is not None
                proto.buffer_updated(nbytes, self.clock.monotonic())
                self._after_receive(proto, nbytes)
            else:
                assert self._scratch is not None
                self._data_received(bytes(self._scratch[:nbytes]))
        except (RemoteProtocolError, StorageError) as exc:
            self._record(exc)
            self.close(self.close_reason)
        except Exception as exc:  # a bug: let it reach the owner of run()
            self._fail(exc)

    def _route(self, data: bytes) -> bytes | None:
        """An incoming connection: buffer until the info hash is known, then pick the torrent."""
        self._pending += data
        info_hash = wire.peek_info_hash(bytes(self._pending))
        if info_hash is None:
            return None
        host = self._router(info_hash) if self._router else None
        if host is None:
            raise RemoteProtocolError("unknown info hash")
        hybrid = host.hybrid_hashes
        if hybrid is not None and info_hash == hybrid[0] and wire.peek_v2_upgrade(bytes(self._pending[:28])):
            info_hash = hybrid[1]  # BEP 52: the peer also speaks v2; we answer with its hash
        self._start_protocol(host, info_hash)
        data, self._pending = bytes(self._pending), bytearray()
        return data

    def _data_received(self, data: bytes) -> None:
        if self.proto is None and self._router is None:
            # Outgoing, and the peer spoke first (its handshake can arrive before
            # run_outgoing resumes after the connect): keep it for _start_protocol.
            self._pending += data
            return
        if self.proto is None:
            routed = self._route(data)
            if routed is None:
                return
            data = routed
        proto = self.proto
        assert proto is not None
        proto.receive_data(data, self.clock.monotonic())
        self._after_receive(proto, len(data))

    def _after_receive(self, proto: wire.PeerProtocol, nbytes: int) -> None:
        """``nbytes`` more are in the protocol: rate-limit, handle its events, ask for more."""
        if not self.down_limit.unlimited:
            self._limit_download(nbytes)
        self._drain_events(proto)
        if self._refill and not self.closed:
            # One refill (one picker call, one write of requests) per read of the stream.
            self._refill = False
            self.fill_pipeline()
        if not self.closed:
            out = proto.data_to_send()  # BEP 6 rejects the codec queued by itself
            if out:
                self._write(out)

    def _limit_download(self, nbytes: int) -> None:
        delay = self.down_limit.take_nowait(nbytes)
        if delay > 0 and self.transport is not None and not self._paused_reading:
            self._paused_reading = True
            self.transport.pause_reading()
            self._resume_handle = self._loop.call_later(delay, self._resume_reading)

    def _resume_reading(self) -> None:
        self._resume_handle = None
        self._paused_reading = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _drain_events(self, proto: wire.PeerProtocol) -> None:
        need_data = wire.NEED_DATA
        next_blocks = proto.next_blocks
        closed = self._closed.done
        host = self.host
        assert host is not None
        # Blocks come as plain (index, begin, data), a run of them at once: the hot path of
        # a download, ahead of _on_event's dispatch. The run goes to the host in one call
        # (one loop over them there instead of three calls each), before the event that
        # ended it is handled.
        blocks: list[tuple[int, int, Any]] = []
        while True:
            try:
                ev = next_blocks(blocks)
            except RemoteProtocolError:
                if blocks:  # what arrived before the garbage still counts
                    self._deliver_blocks(host, blocks)
                raise
            if blocks:
                self._deliver_blocks(host, blocks)
                blocks = []
                if closed():
                    return
            if type(ev) is int:
                self._on_request(host, ev)  # a Request's piece: the hot path of an upload
            elif ev is need_data:
                return
            else:
                self._on_event(ev)  # type: ignore[arg-type]  # int, NEED_DATA: above
            if closed():
                return

    def _deliver_blocks(self, host: PeerHost, blocks: list[tuple[int, int, Any]]) -> None:
        self._slow_start += len(blocks)
        host.on_peer_blocks(self, blocks)
        self._refill = True  # once per read, not per block (see _data_received)

    # ------------------------------------------------------------------ events → host

    def _on_event(self, ev: wire.Event) -> None:
        """Tell the host what happened; the protocol has already updated its state."""
        host = self.host
        assert host is not None
        match ev:
            case wire.Block(index=index, begin=begin, data=data):
                self._slow_start += 1
                host.on_peer_block(self, index, begin, data)
                self._refill = True  # once per read, not per block (see _data_received)
            case wire.UnrequestedBlock(index=index, begin=begin, data=data):
                # A late answer (after a cancel or timeout): still useful if we lack it.
                host.on_peer_block(self, index, begin, data)
            case wire.Have() | wire.Bitfield() | wire.HaveAll() | wire.HaveNone():
                self._on_piece_set(host, ev)
            case wire.Request(index=index):
                self._on_request(host, index)
            case wire.Choke() | wire.Unchoke() | wire.RejectRequest():
                self._on_choke_or_reject(host, ev)
            case wire.Interested() | wire.NotInterested():
                host.on_peer_interest_changed(self)
            case wire.Handshake():
                self._on_handshake(host)
            case wire.ExtensionHandshake():
                host.on_extension_handshake(self, ev)
            case wire.ExtendedMessage(name=name, payload=payload) if name == UT_METADATA:
                host.on_metadata_message(self, payload)
            case wire.ExtendedMessage(name=pex.EXTENSION_NAME, payload=payload):
                host.on_pex_message(self, payload)
            case wire.HashRequest() | wire.Hashes() | wire.HashReject():
                self._on_hash_message(host, ev)
            case wire.ConnectionClosed():
                self.close("connection closed by peer")
            case (
                wire.Cancel()
                | wire.KeepAlive()
                | wire.Port()
                | wire.AllowedFast()
                | wire.SuggestPiece()
                | wire.ExtendedMessage()
            ):
                pass  # the codec already withdrew a cancelled request; the rest need nothing here
            case _:
                assert_never(ev)

    def _on_hash_message(self, host: PeerHost, ev: wire.HashRequest | wire.Hashes | wire.HashReject) -> None:
        if isinstance(ev, wire.HashRequest):
            host.on_hash_request(self, ev)
        elif isinstance(ev, wire.Hashes):
            host.on_hashes(self, ev)
        else:
            host.on_hash_reject(self, ev)

    def _on_request(self, host: PeerHost, index: int) -> None:
        # The codec refused requests while we choke or for pieces we never announced, and
        # bounds the queue; the upload loop serves what it keeps, in order.
        self._upload_wakeup.set()
        if index != self._prefetched:
            # The first request for a piece: start reading it now, so it is in the cache by
            # the time the upload loop gets there.
            self._prefetched = index
            host.prefetch(index)

    def _on_choke_or_reject(self, host: PeerHost, ev: wire.Choke | wire.Unchoke | wire.RejectRequest) -> None:
        if isinstance(ev, wire.Unchoke):
            host.on_peer_unchoked(self)
            self.fill_pipeline()
        elif isinstance(ev, wire.Choke):
            if ev.voided:  # without BEP 6 a choke drops our requests: others must fetch them
                host.on_requests_dropped(self, [(r.index, r.begin, r.length) for r in ev.voided])
        elif not ev.withdrawn:  # a reject of a request we had cancelled was handed back already
            host.on_requests_dropped(self, [(ev.index, ev.begin, ev.length)])

    def _on_piece_set(
        self, host: PeerHost, ev: wire.Have | wire.Bitfield | wire.HaveAll | wire.HaveNone
    ) -> None:
        proto = self.proto
        assert proto is not None
        if not proto.geometry_known:
            return  # fetching the metadata: pieces mean nothing yet
        if isinstance(ev, wire.Have):
            host.on_peer_has(self, [ev.index])
        elif isinstance(ev, wire.HaveNone) and not proto.late_piece_sets:
            return  # the usual first message of a peer with nothing: nothing changed
        else:
            host.on_peer_has(self, None)

    def _on_handshake(self, host: PeerHost) -> None:
        # Synchronously: a bitfield may follow in the same read.
        host.on_peer_ready(self)
        if self.closed or self.proto is None or not self.proto.extension_protocol:
            return
        fields: dict[bytes | str, Any] = {"v": CLIENT_NAME, "reqq": self.settings.max_incoming_requests}
        with contextlib.suppress(ValueError):
            # BEP 10: the address we see the peer at (how it learns its external address).
            fields["yourip"] = ipaddress.ip_address(self.addr[0]).packed
        fields.update(host.extension_fields())
        self.send(wire.ExtensionHandshake(fields))

    # ------------------------------------------------------------------ sending

    def _write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self._queued:
            data = self._take_queued() + data
        self.transport.write(data)

    def send(self, ev: wire.Event) -> None:
        """Encode and send one message (no-op once the connection is closing)."""
        if self.proto is None or self.closed:
            return
        self._write(self.proto.send(ev, self.clock.monotonic()))

    def queue(self, ev: wire.Event) -> None:
        """Encode one message now and send it with this connection's next write: a ``Have``
        after a verified piece then goes out in the same system call as the requests that
        follow it, not in one of its own (a write on loopback costs tens of microseconds,
        most of them in the kernel, and wakes the peer). While blocks are still asked of
        this peer, the next refill comes with its next read, so the queue waits for it up
        to :data:`QUEUE_HOLD_S`; otherwise it goes once the event loop has run what it is
        running. The stream's order is the encoding order: every write sends the queue
        first."""
        proto = self.proto
        if proto is None or self.closed:
            return
        if not self._queued:
            if proto.num_outstanding():
                self._loop.call_later(QUEUE_HOLD_S, self._flush_queued)
            else:
                self._loop.call_soon(self._flush_queued)
        self._queued += proto.send(ev, self.clock.monotonic())

    def _take_queued(self) -> bytes:
        data = bytes(self._queued)
        self._queued.clear()
        return data

    def _flush_queued(self) -> None:
        if self._queued:
            self._write(b"")

    def set_choking(self, choking: bool) -> None:
        if self.proto is None or self.closed or choking == self.proto.am_choking:
            return
        if not choking:
            self.unchoked_at = self.clock.monotonic()
            self.uploaded_at_unchoke = self.up.total
        self.send(wire.Choke() if choking else wire.Unchoke())

    def set_interested(self, interested: bool) -> None:
        if self.proto is None or self.closed or interested == self.proto.am_interested:
            return
        self.send(wire.Interested() if interested else wire.NotInterested())

    def fill_pipeline(self) -> None:
        """Request blocks until ``pipeline_depth()`` are outstanding, once enough are
        missing (:data:`REFILL_MIN_BLOCKS`; any one for a pipeline of at most 7)."""
        proto = self.proto
        if proto is None or proto.peer_choking or not proto.am_interested or self.closed or self.host is None:
            return
        depth = self.pipeline_depth()
        want = depth - proto.num_outstanding()
        if want <= 0 or want < min(REFILL_MIN_BLOCKS, depth // 4):
            return
        picks = self.host.pick_blocks(self, want)
        if not picks:
            return
        # One write for the whole refill. A refused request is typically still awaiting the
        # answer to a cancelled copy (BEP 6): someone else should fetch it.
        out, refused = proto.send_requests(picks, self.clock.monotonic())
        if out:
            self._write(out)
        if refused:
            self.host.on_requests_dropped(self, refused)

    def cancel(self, index: int, begin: int, length: int) -> None:
        """Withdraw a request (endgame: another peer delivered the block; a timeout).

        Also on a closing connection: the request then leaves the protocol's bookkeeping, so
        it is not handed back to the host as dropped when the connection ends.
        """
        if self.proto is None:
            return
        try:
            out = self.proto.send(wire.Cancel(index, begin, length), self.clock.monotonic())
        except LocalProtocolError:
            return  # already answered (or the connection failed): nothing to withdraw
        if not self.closed:
            self._write(out)

    async def _upload_loop(self) -> None:
        """Serve the peer's requests, oldest first, behind write back-pressure.

        The queue is the protocol's (``pending_peer_requests``): a cancel or a choke withdraws
        a request there, and nothing here keeps a copy. Blocks read from the cache come back
        without suspending, so a run of them is served in one pass (:meth:`_serve_cached`)
        and handed to the transport in one ``writelines`` (one system call for many blocks);
        the batch is flushed before any wait (disk, rate limit, a full send buffer) and at
        ``UPLOAD_BATCH_BYTES``.
        """
        host = self.host
        proto = self.proto
        assert host is not None
        assert proto is not None
        batch: list[bytes | memoryview] = []
        while not self.closed:
            keys = proto.pending_peer_requests(UPLOAD_RUN)
            if not keys:
                self._write_batch(batch)
                self._upload_wakeup.clear()
                await self._upload_wakeup.wait()
                continue
            if not self._writable.is_set():
                self._write_batch(batch)
                await self._writable.wait()
                continue  # the queue may have changed meanwhile
            served = self._serve_cached(host, proto, keys, batch)
            if served == len(keys) or self.closed or not self._writable.is_set():
                continue
            # The next request needs the disk or the rate limit: wait for it alone.
            request = wire.Request(*keys[served])
            data = await self._read_for(host, proto, request, batch)
            if data is None or self.closed:
                continue
            self._add_block(
                batch, proto.send_block(request.index, request.begin, data, self.clock.monotonic())
            )

    def _serve_cached(
        self,
        host: PeerHost,
        proto: wire.PeerProtocol,
        keys: list[tuple[int, int, int]],
        batch: list[bytes | memoryview],
    ) -> int:
        """Serve the leading run of ``keys`` that can be had without suspending (no limit to
        wait for, the block in the cache); returns how many were served. Stops early when a
        write of the batch fills the transport's buffer."""
        if not self.up_limit.unlimited:
            return 0
        may_upload = host.may_upload
        cached_block = host.cached_block
        send_block = proto.send_block
        writable = self._writable.is_set
        now = self.clock.monotonic()
        served = 0
        for index, begin, length in keys:
            data = cached_block(index, begin, length) if may_upload(self, index, begin, length) else None
            if data is None:
                break
            served += 1
            # Header and data side by side: the transport writes them as one vector.
            if self._add_block(batch, send_block(index, begin, data, now)) and not writable():
                break
        return served

    def _add_block(self, batch: list[bytes | memoryview], parts: tuple[bytes, bytes | memoryview]) -> bool:
        """Add a block's header and data to ``batch``; at ``UPLOAD_BATCH_BYTES`` write the
        batch (returns True when it did)."""
        batch.extend(parts)
        n = len(parts[1])
        batched = self._batched = n if len(batch) == 2 else self._batched + n
        if batched >= UPLOAD_BATCH_BYTES:
            self._write_batch(batch)
            return True
        return False

    async def _read_for(
        self, host: PeerHost, proto: wire.PeerProtocol, request: wire.Request, batch: list[bytes | memoryview]
    ) -> bytes | memoryview | None:
        """The data for ``request``, or None when it is refused or withdrawn meanwhile."""
        index, begin, length = request.index, request.begin, request.length
        if not host.may_upload(self, index, begin, length):
            self._write(proto.refuse_peer_request(request))
            return None
        if not self.up_limit.unlimited:
            delay = self.up_limit.take_nowait(length)
            if delay > 0:
                self._write_batch(batch)
                await asyncio.sleep(delay)
        try:
            data = await host.read_block(index, begin, length)
        except StorageError as exc:
            self.close(f"cannot read piece {index}: {exc}")
            return None
        if self.closed or not proto.is_requested_by_peer(request):
            return None  # cancelled, or dropped by a choke, while we read the disk
        return data

    def _write_batch(self, batch: list[bytes | memoryview]) -> None:
        """Hand the collected blocks to the transport in one call and empty ``batch``."""
        if not batch:
            return
        if self.transport is not None and not self.transport.is_closing():
            if self._queued:
                batch.insert(0, self._take_queued())
            self.transport.writelines(batch)
        batch.clear()

    # ------------------------------------------------------------------ timers

    def tick(self, now: float) -> None:
        """Once a second: handshake and request timeouts, snubbing, keep-alive, idle timeout.

        ``now`` is the host's reading of the same clock. While we wait on this peer (requests
        outstanding, or some timed out since its last block): a request older than
        ``request_timeout_s`` is cancelled and its block handed to other peers, and the peer
        is *snubbed* (pipeline of one); no payload for ``snub_timeout_s`` snubs it too; no
        payload for ``peer_timeout_s`` drops it. This is what gets rid of a peer that unchokes
        us and then trickles or stalls.
        """
        proto = self.proto
        if self.closed or proto is None:
            return
        s = self.settings
        if proto.peer_handshake is None:
            if now - self.connected_at > s.handshake_timeout_s:
                self.close("handshake timeout")
            return
        if now - proto.last_received_at > s.idle_timeout_s:
            self.close("idle timeout")
            return
        waiting_since = proto.waiting_since
        if waiting_since is not None:
            since_payload = now - waiting_since
            if since_payload > s.peer_timeout_s:
                self.close(f"no data for {since_payload:.0f} s although requests were outstanding")
                return
            self._expire_requests(now)
        if now - proto.last_sent_at > s.keepalive_interval_s:
            self.send(wire.KeepAlive())
        self.fill_pipeline()

    def _expire_requests(self, now: float) -> None:
        proto = self.proto
        assert proto is not None
        assert self.host is not None
        expired = proto.expire_requests(now, self.settings.request_timeout_s)
        if not expired:
            return
        for r in expired:
            self.cancel(r.index, r.begin, r.length)
        self.host.on_requests_dropped(self, [(r.index, r.begin, r.length) for r in expired])
