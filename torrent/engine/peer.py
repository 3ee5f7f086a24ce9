"""One peer connection on asyncio: socket ⇄ ``wire.PeerProtocol``, timers, the pipeline.

This layer moves bytes and runs timers; the sans-IO ``PeerProtocol`` does the protocol
and the owning swarm (a :class:`PeerHost`) decides what to request and what to serve.

* Reading: ``data_received`` hands bytes to the codec and dispatches every event
  synchronously, so a block goes socket → codec → swarm without a queue. When the
  download limit is exceeded the socket is paused until the budget refills.
* Writing: ``transport.write``; ``pause_writing``/``resume_writing`` gate the upload task,
  which only reads the next block from disk once the transport's buffer has drained
  below its high-water mark: a slow peer cannot grow our memory (write back-pressure).
* The request pipeline keeps ``clamp(rate * request_queue_time / BLOCK_SIZE, min, max)``
  blocks outstanding, one when the peer is snubbed (libtorrent
  ``update_desired_queue_size``).
* ``tick()`` (once a second, driven by the session) updates rates, times out requests
  (their blocks go back to the picker for other peers), sends keep-alives after two
  minutes of silence (BEP 3) and drops idle peers.

Failures stay here: ``run()`` catches ``OSError``, ``TimeoutError`` and
``RemoteProtocolError``, records ``close_reason`` and returns. Only bugs propagate.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from torrent.config import Settings
from torrent.errors import LocalProtocolError, ProtocolError, RemoteProtocolError, StorageError
from torrent.proto import ut_metadata, wire
from torrent.types import BLOCK_SIZE, InfoHash, PeerId

#: Our extended message id for BEP 9 (the ``m`` dict of our BEP 10 handshake).
UT_METADATA_ID = 2
#: ``v`` of our BEP 10 handshake.
CLIENT_NAME = "pytorrent 0.1.0"

#: Upload blocks collected before one ``writelines`` call.
UPLOAD_BATCH_BYTES = 256 * 1024

#: (piece index, begin offset) of a block.
BlockKey = tuple[int, int]
#: (host, port) of a peer.
PeerAddr = tuple[str, int]


class RateLimiter:
    """A token bucket shared by every peer of a session (one for down, one for up).

    ``rate_bps == 0`` means unlimited. Debt is allowed: a caller takes what it needs and
    waits for the bucket to come back above zero, so large blocks never starve.
    """

    def __init__(self, rate_bps: int, burst_s: float = 0.5) -> None:
        self.rate_bps = rate_bps
        self._burst = max(rate_bps * burst_s, BLOCK_SIZE * 2)
        self._tokens = self._burst
        self._stamp = time.monotonic()

    @property
    def unlimited(self) -> bool:
        return self.rate_bps <= 0

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self.rate_bps)
        self._stamp = now

    def take_nowait(self, n: int) -> float:
        """Take ``n`` bytes; returns how long the caller should wait before more (0: none)."""
        if self.unlimited:
            return 0.0
        self._refill()
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate_bps

    async def take(self, n: int) -> None:
        delay = self.take_nowait(n)
        if delay > 0:
            await asyncio.sleep(delay)


class RateMeter:
    """Bytes per second over a sliding window of a few one-second buckets."""

    __slots__ = ("_buckets", "_current", "total")

    def __init__(self, window: int = 5) -> None:
        self._buckets: collections.deque[int] = collections.deque(maxlen=window)
        self._current = 0
        self.total = 0

    def add(self, n: int) -> None:
        self._current += n
        self.total += n

    def tick(self) -> None:
        """Close the current one-second bucket."""
        self._buckets.append(self._current)
        self._current = 0

    @property
    def warming_up(self) -> bool:
        """Fewer than a full window of one-second buckets so far."""
        return len(self._buckets) < (self._buckets.maxlen or 0)

    @property
    def rate_bps(self) -> float:
        if not self._buckets:
            return 0.0
        return sum(self._buckets) / len(self._buckets)


class PeerHost(Protocol):
    """What a peer needs from the torrent it belongs to (the swarm implements it)."""

    info_hash: InfoHash
    num_pieces: int  # 0 while the metadata is not known (a magnet link)
    piece_length: int | None
    total_length: int | None

    def on_peer_ready(self, peer: Peer) -> None:
        """The handshake is done; send our bitfield, decide interest."""

    def on_peer_has(self, peer: Peer, indices: list[int] | None) -> None:
        """The peer announced pieces (``None``: its whole bitfield, see ``peer.has``)."""

    def on_peer_block(self, peer: Peer, index: int, begin: int, data: Any) -> None:
        """A requested block arrived (``data`` is only valid during the call)."""

    def on_peer_unchoked(self, peer: Peer) -> None: ...

    def pick_blocks(self, peer: Peer, n: int) -> list[tuple[int, int, int]]:
        """Up to ``n`` (index, begin, length) to request from ``peer`` now."""

    def on_requests_dropped(self, peer: Peer, blocks: list[tuple[int, int, int]]) -> None:
        """Requests that will not be answered (choke, timeout, close): re-pick them."""

    def may_upload(self, peer: Peer, index: int, begin: int, length: int) -> bool:
        """May we serve this request (we have the piece, the peer is unchoked)?"""

    def read_block(self, index: int, begin: int, length: int) -> Awaitable[bytes]: ...

    def prefetch(self, index: int) -> None:
        """Start reading piece ``index`` into the read cache (uploads will want it)."""

    def extension_fields(self) -> dict[str, Any]:
        """Fields for our BEP 10 handshake besides ``m`` (e.g. BEP 9 ``metadata_size``)."""

    def on_extension_handshake(self, peer: Peer, ev: wire.ExtensionHandshake) -> None: ...

    def on_metadata_message(self, peer: Peer, payload: bytes) -> None:
        """A BEP 9 ``ut_metadata`` message (request, data or reject) from ``peer``."""

    def on_peer_interest_changed(self, peer: Peer) -> None: ...

    def on_peer_closed(self, peer: Peer) -> None: ...


@dataclass(slots=True)
class _Outstanding:
    length: int
    sent_at: float


class Peer(asyncio.Protocol):
    """One connection. Create it, then ``await run_outgoing()`` or ``run_incoming()``.

    Attributes:
        addr: the peer's address.
        peer_id: its id once the handshake arrived.
        has: one bool per piece the peer announced.
        close_reason: why the connection ended ("" while open).
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
    ) -> None:
        self.host = host
        self.addr = addr
        self.settings = settings
        self.our_peer_id = our_peer_id
        self.down_limit = down_limit
        self.up_limit = up_limit
        self.peer_id: PeerId | None = None
        self.proto: wire.PeerProtocol | None = None
        self.transport: asyncio.Transport | None = None
        self.has: bytearray = bytearray()
        self.num_have = 0
        self.am_choking = True
        self.am_interested = False
        self.peer_choking = True
        self.peer_interested = False
        self.snubbed = False
        self.outgoing = True
        self.hash_failures = 0
        #: Request timeouts since this peer's last block.
        self.strikes = 0
        self.unchoked_at: float | None = None
        self.uploaded_at_unchoke = 0
        self.close_reason = ""
        self.down = RateMeter()
        self.up = RateMeter()
        self.outstanding: dict[BlockKey, _Outstanding] = {}
        self.incoming_requests: collections.deque[tuple[int, int, int]] = collections.deque()
        now = time.monotonic()
        self.connected_at = now
        self.last_recv = now
        self.last_send = now
        self.last_payload = now
        self._loop = asyncio.get_running_loop()
        self._ready = self._loop.create_future()
        self._closed = self._loop.create_future()
        self._writable = asyncio.Event()
        self._writable.set()
        self._upload_wakeup = asyncio.Event()
        self._pending: bytearray = bytearray()  # bytes before the handshake was routed
        self._router: Any = None  # incoming: callable(info_hash) -> PeerHost | None
        self._paused_reading = False
        self._refill = False
        self._slow_start = settings.pipeline_min
        self._prefetched = -1
        self._resume_handle: asyncio.TimerHandle | None = None
        #: Called once the TCP connection is up (the swarm frees a half-open slot).
        self.on_connected: Callable[[], None] | None = None

    # ------------------------------------------------------------------ properties

    @property
    def is_seed(self) -> bool:
        return bool(self.has) and self.num_have == len(self.has)

    @property
    def closed(self) -> bool:
        return self._closed.done()

    def pipeline_depth(self) -> int:
        """clamp(rate × queue_time / BLOCK_SIZE, min, max); 1 when snubbed.

        Until the rate meter has a full window, a slow start (as TCP's and libtorrent's)
        adds one request per block received, so a fast peer is not held to the minimum
        during the seconds it takes to measure it.
        """
        if self.snubbed:
            return 1
        s = self.settings
        depth = int(self.down.rate_bps * s.request_queue_time_s / BLOCK_SIZE)
        if self.down.warming_up:
            depth = max(depth, self._slow_start)
        return max(s.pipeline_min, min(s.pipeline_max, depth))

    # ------------------------------------------------------------------ running

    async def run_outgoing(self) -> None:
        """Connect, handshake and serve the connection until it ends. Never raises for
        network or protocol failures: they end up in ``close_reason``."""
        assert self.host is not None
        self.outgoing = True
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                await self._loop.create_connection(lambda: self, self.addr[0], self.addr[1])
            if self.on_connected is not None:
                self.on_connected()
            self._start_protocol(self.host)
            await self._serve()
        except (OSError, TimeoutError, ProtocolError) as exc:
            self._record(exc)
        finally:
            self._finish()

    def accept(self, transport: asyncio.BaseTransport, router: Any) -> None:
        """Adopt an incoming connection; ``router(info_hash)`` picks our torrent."""
        self.outgoing = False
        self._router = router
        self.transport = cast(asyncio.Transport, transport)

    async def run_incoming(self) -> None:
        """Serve an incoming connection whose handshake has been routed to ``host``."""
        try:
            await self._serve()
        except (OSError, TimeoutError, ProtocolError) as exc:
            self._record(exc)
        finally:
            self._finish()

    async def _serve(self) -> None:
        async with asyncio.timeout(self.settings.handshake_timeout_s):
            await self._ready
        async with asyncio.TaskGroup() as tg:
            uploader = tg.create_task(self._upload_loop())
            try:
                await self._closed
            finally:
                uploader.cancel()

    def _record(self, exc: BaseException) -> None:
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
            dropped = [(i, b, o.length) for (i, b), o in self.outstanding.items()]
            self.outstanding.clear()
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

    # ------------------------------------------------------------------ protocol

    def _start_protocol(self, host: PeerHost) -> None:
        self.host = host
        self.has = bytearray(host.num_pieces)
        s = self.settings
        self.proto = wire.PeerProtocol(
            info_hash=host.info_hash,
            our_peer_id=self.our_peer_id,
            piece_length=host.piece_length,
            total_length=host.total_length,
            max_peer_requests=s.max_incoming_requests,
            snub_timeout_s=s.snub_timeout_s,
            extensions={ut_metadata.EXTENSION_NAME: UT_METADATA_ID},
            now=time.monotonic(),
        )
        self._write(self.proto.send(wire.Handshake()))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=self.settings.send_buffer_high_bytes)

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
        try:
            self._data_received(data)
        except RemoteProtocolError as exc:
            self._record(exc)
            self.close(self.close_reason)
        except StorageError as exc:
            self._record(exc)
            self.close(self.close_reason)
        except Exception as exc:  # a bug: let it reach the owner of run()
            self._fail(exc)

    def _data_received(self, data: bytes) -> None:
        self.last_recv = time.monotonic()
        if self.proto is None:
            # An incoming connection: wait for the info hash, then route it.
            self._pending += data
            info_hash = wire.peek_info_hash(bytes(self._pending))
            if info_hash is None:
                return
            host = self._router(info_hash) if self._router else None
            if host is None:
                raise RemoteProtocolError("unknown info hash")
            self._start_protocol(host)
            data, self._pending = bytes(self._pending), bytearray()
        if not self.down_limit.unlimited:
            delay = self.down_limit.take_nowait(len(data))
            if delay > 0 and self.transport is not None and not self._paused_reading:
                self._paused_reading = True
                self.transport.pause_reading()
                self._resume_handle = self._loop.call_later(delay, self._resume_reading)
        assert self.proto is not None
        self.proto.receive_data(data, self.last_recv)
        self._drain_events()
        if self._refill and not self.closed:
            # One refill (one picker call, one write of requests) per read of the socket.
            self._refill = False
            self.fill_pipeline()
        if not self.closed:
            out = self.proto.data_to_send()  # BEP 6 rejects the codec queued by itself
            if out:
                self._write(out)

    def _resume_reading(self) -> None:
        self._resume_handle = None
        self._paused_reading = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _drain_events(self) -> None:
        proto = self.proto
        assert proto is not None
        need_data = wire.NEED_DATA
        while True:
            ev = proto.next_event()
            if ev is need_data:
                return
            self._on_event(ev)
            if self.closed:
                return

    def _on_event(self, ev: Any) -> None:
        host = self.host
        assert host is not None
        match ev:
            case wire.Block(index=index, begin=begin, data=data):
                self.outstanding.pop((index, begin), None)
                n = len(data)
                self.down.add(n)
                self.last_payload = self.last_recv
                self.snubbed = False
                self.strikes = 0
                self._slow_start += 1
                host.on_peer_block(self, index, begin, data)
                self._refill = True  # once per read, not per block (see _data_received)
            case wire.UnrequestedBlock(index=index, begin=begin, data=data):
                # A late answer (after a cancel or timeout): still useful if we lack it.
                self.outstanding.pop((index, begin), None)
                self.down.add(len(data))
                host.on_peer_block(self, index, begin, data)
            case wire.Have(index=index):
                if index < len(self.has) and not self.has[index]:
                    self.has[index] = 1
                    self.num_have += 1
                    host.on_peer_has(self, [index])
            case wire.Bitfield(pieces=pieces):
                if not self.has:
                    return  # fetching the metadata: pieces mean nothing yet
                has = bytearray(len(self.has))
                for i in pieces:
                    has[i] = 1
                self.has = has
                self.num_have = len(pieces)
                host.on_peer_has(self, None)
            case wire.HaveAll():
                if not self.has:
                    return
                self.has = bytearray(b"\x01" * len(self.has))
                self.num_have = len(self.has)
                host.on_peer_has(self, None)
            case wire.HaveNone():
                if self.num_have:  # a late "have none" (aria2): the peer has nothing now
                    self.has = bytearray(len(self.has))
                    self.num_have = 0
                    host.on_peer_has(self, None)
            case wire.Request(index=index, begin=begin, length=length):
                # The codec already refused requests while we choke or for pieces we never
                # announced, and bounds the queue (``max_peer_requests``).
                self.incoming_requests.append((index, begin, length))
                self._upload_wakeup.set()
                if index != self._prefetched:
                    # The first request for a piece: start reading it now, so it is in
                    # the cache by the time the upload loop gets there.
                    self._prefetched = index
                    host.prefetch(index)
            case wire.Cancel(index=index, begin=begin, length=length):
                try:
                    self.incoming_requests.remove((index, begin, length))
                except ValueError:
                    pass
            case wire.Choke(voided=voided):
                self.peer_choking = True
                if voided:
                    dropped = [(r.index, r.begin, r.length) for r in voided]
                    for i, b, _ in dropped:
                        self.outstanding.pop((i, b), None)
                    host.on_requests_dropped(self, dropped)
            case wire.Unchoke():
                self.peer_choking = False
                host.on_peer_unchoked(self)
                self.fill_pipeline()
            case wire.RejectRequest(index=index, begin=begin, length=length):
                if self.outstanding.pop((index, begin), None) is not None:
                    host.on_requests_dropped(self, [(index, begin, length)])
            case wire.Interested():
                self.peer_interested = True
                host.on_peer_interest_changed(self)
            case wire.NotInterested():
                self.peer_interested = False
                host.on_peer_interest_changed(self)
            case wire.Handshake(peer_id=peer_id):
                if self.peer_id is not None:
                    return
                self.peer_id = PeerId(bytes(peer_id or b""))
                # Synchronously: a bitfield may follow in the same read.
                host.on_peer_ready(self)
                if self.closed:
                    return
                if self.proto is not None and self.proto.extension_protocol:
                    fields: dict[bytes | str, Any] = {"v": CLIENT_NAME, "reqq": self.settings.max_incoming_requests}
                    fields.update(host.extension_fields())
                    self.send(wire.ExtensionHandshake(fields))
                if not self._ready.done():
                    self._ready.set_result(None)
            case wire.ExtensionHandshake():
                host.on_extension_handshake(self, ev)
            case wire.ExtendedMessage(name=name, payload=payload):
                if name == ut_metadata.EXTENSION_NAME:
                    host.on_metadata_message(self, payload)
            case wire.ConnectionClosed():
                self.close("connection closed by peer")
            case _:
                pass  # KeepAlive, Port, AllowedFast, SuggestPiece, extended: nothing to do

    # ------------------------------------------------------------------ sending

    def _write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(data)
        self.last_send = time.monotonic()

    def send(self, ev: Any) -> None:
        """Encode and send one message (no-op once the connection is closing)."""
        if self.proto is None or self.closed:
            return
        self._write(self.proto.send(ev))

    def set_choking(self, choking: bool) -> None:
        if choking == self.am_choking:
            return
        self.am_choking = choking
        if choking:
            self.incoming_requests.clear()
            self.send(wire.Choke())
        else:
            self.unchoked_at = time.monotonic()
            self.uploaded_at_unchoke = self.up.total
            self.send(wire.Unchoke())

    def set_interested(self, interested: bool) -> None:
        if interested == self.am_interested:
            return
        self.am_interested = interested
        self.send(wire.Interested() if interested else wire.NotInterested())

    def fill_pipeline(self) -> None:
        """Request blocks until ``pipeline_depth()`` are outstanding."""
        if self.peer_choking or not self.am_interested or self.closed or self.host is None:
            return
        want = self.pipeline_depth() - len(self.outstanding)
        if want <= 0:
            return
        picks = self.host.pick_blocks(self, want)
        if not picks:
            return
        proto = self.proto
        assert proto is not None
        now = time.monotonic()
        if not self.outstanding and not self.strikes:
            self.last_payload = now  # we start waiting on this peer now
        chunks = []
        refused = []
        for index, begin, length in picks:
            try:
                chunks.append(proto.send(wire.Request(index, begin, length), now))
            except LocalProtocolError:
                # Still awaiting the answer to a cancelled copy of this request (BEP 6):
                # someone else should fetch it.
                refused.append((index, begin, length))
                continue
            self.outstanding[(index, begin)] = _Outstanding(length, now)
        if chunks:
            self._write(b"".join(chunks))
        if refused:
            self.host.on_requests_dropped(self, refused)

    def cancel(self, index: int, begin: int, length: int) -> None:
        """Withdraw a request (endgame: another peer delivered the block; a timeout)."""
        self.outstanding.pop((index, begin), None)
        if self.proto is None or self.closed:
            return
        try:
            self._write(self.proto.send(wire.Cancel(index, begin, length)))
        except LocalProtocolError:
            pass  # already answered: nothing to withdraw

    async def _upload_loop(self) -> None:
        """Serve queued requests behind write back-pressure.

        Blocks read from the cache come back without suspending, so a run of them is
        collected and handed to the transport in one ``writelines`` (one system call for
        many blocks); the batch is flushed before any wait (disk, rate limit, a full send
        buffer) and at ``UPLOAD_BATCH_BYTES``.
        """
        host = self.host
        assert host is not None
        batch: list[bytes] = []
        batched = 0
        while True:
            if not self.incoming_requests or not self._writable.is_set():
                if batch:
                    self._write_batch(batch)
                    batch, batched = [], 0
                if not self.incoming_requests:
                    self._upload_wakeup.clear()
                    await self._upload_wakeup.wait()
                    continue
                await self._writable.wait()
            if self.closed or self.proto is None:
                return
            index, begin, length = self.incoming_requests.popleft()
            if not host.may_upload(self, index, begin, length):
                continue
            if not self.up_limit.unlimited:
                delay = self.up_limit.take_nowait(length)
                if delay > 0:
                    if batch:
                        self._write_batch(batch)
                        batch, batched = [], 0
                    await asyncio.sleep(delay)
            try:
                data = await host.read_block(index, begin, length)
            except StorageError as exc:
                self.close(f"cannot read piece {index}: {exc}")
                return
            if self.closed or self.proto is None:
                return
            if not self.proto.is_requested_by_peer(wire.Request(index, begin, length)):
                continue  # cancelled, or dropped by a choke, while we read the disk
            self.up.add(length)
            batch.append(self.proto.send(wire.Block(index, begin, data)))
            batched += length
            if batched >= UPLOAD_BATCH_BYTES:
                self._write_batch(batch)
                batch, batched = [], 0

    def _write_batch(self, batch: list[bytes]) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.writelines(batch)
        self.last_send = time.monotonic()

    # ------------------------------------------------------------------ timers

    def tick(self, now: float) -> None:
        """Once a second: rates, request timeouts, snubbing, keep-alive, idle timeout.

        While we wait on this peer (requests outstanding, or some timed out since its last
        block): a request older than ``request_timeout_s`` is cancelled and its block
        handed to other peers, and the peer is *snubbed* (pipeline of one); no payload for
        ``snub_timeout_s`` snubs it too; no payload for ``peer_timeout_s`` drops it. This
        is what gets rid of a peer that unchokes us and then trickles or stalls.
        """
        self.down.tick()
        self.up.tick()
        if self.closed or self.proto is None:
            return
        s = self.settings
        if now - self.last_recv > s.idle_timeout_s:
            self.close("idle timeout")
            return
        if self.outstanding or self.strikes:
            since_payload = now - self.last_payload
            if since_payload > s.peer_timeout_s:
                self.close(f"no data for {since_payload:.0f} s although requests were outstanding")
                return
            if since_payload > s.snub_timeout_s:
                self.snubbed = True
            expired = [(k, o) for k, o in self.outstanding.items() if now - o.sent_at > s.request_timeout_s]
            if expired and self.host is not None:
                self.strikes += 1
                self.snubbed = True
                for (i, b), o in expired:
                    self.cancel(i, b, o.length)
                self.host.on_requests_dropped(self, [(i, b, o.length) for (i, b), o in expired])
        if now - self.last_send > s.keepalive_interval_s:
            self.send(wire.KeepAlive())
        self.fill_pipeline()
