"""One uTP connection as a byte stream on the transport seam (see docs/ARCHITECTURE.md).

:class:`UtpStream` is a :class:`~torrent.engine.transport.Transport` to the connection it
carries (a ``Peer``, or an ``MseStream`` under it), driven by the socket manager
(:mod:`torrent.engine.utp_socket`) that owns the UDP socket and the sans-IO
:class:`~torrent.proto.utp.UtpConnection`:

* ``write``/``writelines`` queue bytes in the connection and send what its window allows.
  Write back-pressure: once the bytes written and not yet acknowledged pass the high-water
  mark, the protocol's ``pause_writing`` is called; ``resume_writing`` follows when ACKs bring
  them under the low-water mark.
* Read flow control: while ``pause_reading`` is in force, received bytes are held here and
  counted against the receive window the connection advertises, so a slow reader shrinks the
  peer's send window instead of growing our memory.
* ``close`` sends a FIN once the queue drains; ``connection_lost(None)`` follows when it is
  acknowledged. ``abort`` sends a RESET and reports the loss at once. A connection that times
  out or is reset reports ``connection_lost`` with a ``TimeoutError`` or
  ``ConnectionResetError``.

``set_protocol``/``get_protocol`` let the listener hand an accepted stream from its
classifier to the peer, as asyncio's own transports allow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from torrent.engine.transport import Buffer, StreamProtocol
from torrent.proto.utp import UtpConnection

__all__ = ["UtpStream"]

#: Bytes written and not yet acknowledged above which ``pause_writing`` is called, by default.
DEFAULT_HIGH_WATER = 1 << 20


class UtpStream:
    """See the module docstring. Built by :class:`~torrent.engine.utp_socket.UtpSocketManager`.

    Args:
        conn: the connection's state machine.
        addr: the peer's ``(host, port)``.
        send: sends the connection's queued datagrams (the manager's).
        now: the clock.
        forget: called once when the connection is over (the manager drops it from its table).
    """

    def __init__(
        self,
        conn: UtpConnection,
        addr: tuple[str, int],
        *,
        send: Callable[[UtpConnection, tuple[str, int]], None],
        now: Callable[[], float],
        forget: Callable[[UtpStream], None],
        sockname: Any = None,
    ) -> None:
        self.conn = conn
        self.addr = addr
        #: Sends the connection's queued datagrams (the manager calls it too).
        self.transmit = send
        self._now = now
        self._forget = forget
        self._sockname = sockname
        self._protocol: StreamProtocol | None = None
        self._high = DEFAULT_HIGH_WATER
        self._low = DEFAULT_HIGH_WATER // 4
        self._write_paused = False
        self._read_paused = False
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._closing = False
        self._lost = False
        self._eof_seen = False
        #: Accepted and no data received yet: closing it sends a RESET, not a FIN that would
        #: be retransmitted for a minute to a peer that may never have existed (a SYN flood).
        self.half_open = False
        #: Set once the dialled connection's SYN is acknowledged (or it failed).
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: ``connected`` is not done yet (a plain flag: the manager reads it per datagram).
        self.dialling = True

    # ------------------------------------------------------------------ Transport

    def write(self, data: Buffer, /) -> None:
        conn = self.conn
        if self._closing or self._lost or conn.closed:
            return  # as asyncio's transports: writes after the end are dropped, not raised
        conn.write(data)
        conn.flush(self._now())
        self.transmit(conn, self.addr)
        self._check_write_pause()

    def writelines(self, list_of_data: Iterable[Buffer], /) -> None:
        conn = self.conn
        if self._closing or self._lost or conn.closed:
            return
        for data in list_of_data:
            conn.write(data)
        conn.flush(self._now())
        self.transmit(conn, self.addr)
        self._check_write_pause()

    def pause_reading(self) -> None:
        self._read_paused = True

    def resume_reading(self) -> None:
        if not self._read_paused:
            return
        self._read_paused = False
        asyncio.get_running_loop().call_soon(self._deliver_held)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = DEFAULT_HIGH_WATER if high is None else high
        self._low = self._high // 4 if low is None else low

    def get_write_buffer_size(self) -> int:
        return self.conn.send_buffer_bytes

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def close(self) -> None:
        if self._closing or self._lost:
            return
        if self.half_open:
            self.abort()
            return
        self._closing = True
        conn = self.conn
        conn.close(self._now())
        self.transmit(conn, self.addr)
        if conn.closed:
            self._connection_lost()

    def abort(self) -> None:
        if self._lost:
            return
        self._closing = True
        conn = self.conn
        conn.reset(self._now())
        self.transmit(conn, self.addr)
        self._connection_lost()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.addr
        if name == "sockname":
            return self._sockname
        if name == "utp":
            return True
        return default

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol

    def get_protocol(self) -> Any:
        return self._protocol

    # ------------------------------------------------------------------ from the manager

    @property
    def write_paused(self) -> bool:
        """The protocol was told to stop writing (ACKs may let it resume)."""
        return self._write_paused

    def on_connected(self) -> None:
        self.dialling = False
        if not self.connected.done():
            self.connected.set_result(None)

    def after_receive(self) -> None:
        """The manager fed the connection a batch of datagrams: deliver, resume, EOF, loss."""
        conn = self.conn
        if conn.received:
            self._deliver(conn)
        if self._write_paused and conn.send_buffer_bytes <= self._low:
            self._write_paused = False
            if self._protocol is not None:
                self._protocol.resume_writing()
        if conn.eof and not self._eof_seen and not self._held:
            self._eof()
        if conn.closed and not self._lost:
            self._connection_lost()

    def _deliver(self, conn: UtpConnection) -> None:
        chunks = conn.received
        protocol = self._protocol
        if self._read_paused or protocol is None or self._held:
            for chunk in chunks:
                self._held.append(chunk)
                self._held_bytes += len(chunk)
            chunks.clear()
            conn.set_app_buffered(self._held_bytes, self._now())
            return
        conn.received = []
        # One call for the whole batch: the peer's codec then frames blocks out of ~90 KB
        # instead of running once per 1.4 KB packet.
        protocol.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def _deliver_held(self) -> None:
        protocol = self._protocol
        conn = self.conn
        while self._held and not self._read_paused and protocol is not None and not self._lost:
            chunk = self._held.pop(0)
            self._held_bytes -= len(chunk)
            protocol.data_received(chunk)
        if not self._lost:
            conn.set_app_buffered(self._held_bytes, self._now())
            self.transmit(conn, self.addr)
            if conn.eof and not self._eof_seen and not self._held:
                self._eof()

    def _eof(self) -> None:
        self._eof_seen = True
        protocol = self._protocol
        keep_open = protocol.eof_received() if protocol is not None else None
        if not keep_open:
            self.close()

    def _check_write_pause(self) -> None:
        if not self._write_paused and self.conn.send_buffer_bytes > self._high:
            self._write_paused = True
            if self._protocol is not None:
                self._protocol.pause_writing()

    def _connection_lost(self) -> None:
        if self._lost:
            return
        self._lost = True
        self._forget(self)
        reason = self.conn.close_reason
        self.dialling = False
        if not self.connected.done():
            self.connected.set_exception(_error(reason or "closed"))
            self.connected.exception()  # retrieved: a failed dial nobody awaits is not an error
        protocol = self._protocol
        if protocol is not None:
            protocol.connection_lost(None if reason in ("", "aborted") or self._closing else _error(reason))


def _error(reason: str) -> OSError:
    if "timed out" in reason:
        return TimeoutError(reason)
    if "reset" in reason:
        return ConnectionResetError(reason)
    return ConnectionError(reason)
