"""The client's UDP socket: one port number for TCP and UDP, datagrams routed by their first byte.

BitTorrent clients answer the DHT (BEP 5), uTP (BEP 29) and UDP-tracker replies (BEP 15)
on the same UDP port as their TCP listener (libtorrent does). The three can be told
apart by the first byte of a datagram:

* ``d``: a bencoded dictionary, i.e. KRPC (the DHT);
* a uTP header starts with its type and version nibbles (``0x01``, ``0x11`` ... ``0x41``);
* a UDP tracker's answer starts with a 32-bit action (0-3, so ``0x00``).

:class:`UdpSocket` owns the socket and hands each datagram to the handler registered for
its first byte (:meth:`UdpSocket.route`); what nobody claims is counted and dropped. The
DHT registers ``b"d"``, uTP its five type/version bytes; UDP trackers will register theirs.

Reads are batched: when the loop reports the socket readable, it is read on until it is
empty (at most ``READ_BATCH`` reads), then every ``on_drained`` hook runs once — uTP sends one
ACK per connection per batch there instead of one per datagram.

On Linux the socket also takes UDP GRO (``UDP_GRO``): a run of datagrams of one size from one
sender that arrives together (on loopback: what the sender handed the kernel as one GSO
send, as our uTP does) is read as one buffer, whose control message gives the segment size,
and is cut back into datagrams here. And the reads themselves are batched: ``recvmmsg``
(through ctypes, :mod:`torrent.engine.udp_mmsg`; Python's socket module has no binding)
reads up to ``VLEN`` datagrams or runs in one system call, with ``recvmsg_into`` one at a
time as the fallback. asyncio's and uvloop's datagram transports read with ``recvfrom`` and
drop control messages (a run would look like one long datagram), so this module reads the
socket itself (``loop.add_reader``) and sends through :class:`DatagramSender`, a small
datagram transport of its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import sys
from collections.abc import Callable
from typing import Any

from torrent.engine.udp_mmsg import VLEN, MultiReader, open_reader

__all__ = ["DatagramHandler", "DatagramSender", "UdpSocket"]

log = logging.getLogger(__name__)

#: A receiver of datagrams: ``handler(data, addr)``.
DatagramHandler = Callable[[bytes, Any], None]

#: Socket receive buffer asked for (the kernel may cap it): bursts of DHT queries wait there.
RECEIVE_BUFFER = 1 << 20
#: Reads in one go after the loop reported the socket readable.
READ_BATCH = 64
#: The read buffer: the largest datagram, and the largest GRO aggregate (64 KiB).
READ_BUFFER = 1 << 16
#: Linux UDP GRO (``include/uapi/linux/udp.h``): the ``SOL_UDP`` option and control message.
UDP_GRO = 104
#: Room for the GRO control message (an ``int``), with its header.
ANCILLARY_SIZE = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 0
_SOL_UDP = getattr(socket, "SOL_UDP", 17)


class DatagramSender(asyncio.DatagramTransport):
    """The sending side of :class:`UdpSocket` as an asyncio datagram transport (what the DHT,
    trackers and uTP send through): a datagram goes to the socket at once, or, while the
    socket's buffer is full, waits in order behind those before it (``get_write_buffer_size``
    counts them) until the loop reports the socket writable. A send error other than a full
    buffer goes to the protocol's ``error_received``, as asyncio's transports do.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, owner: UdpSocket) -> None:
        super().__init__({"socket": sock, "sockname": sock.getsockname()})
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._owner = owner
        self._queue: collections.deque[tuple[bytes, Any]] = collections.deque()
        self._queued_bytes = 0
        self._closing = False

    def sendto(self, data: Any, addr: Any = None) -> None:
        if self._closing or not data:
            return
        if not self._queue:
            try:
                self._sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                self._loop.add_writer(self._fd, self._write_ready)
            except OSError as exc:
                self._owner.error_received(exc)
                return
        self._queue.append((bytes(data), addr))
        self._queued_bytes += len(data)

    def _write_ready(self) -> None:
        queue = self._queue
        sendto = self._sock.sendto
        while queue:
            data, addr = queue[0]
            try:
                sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._owner.error_received(exc)
            queue.popleft()
            self._queued_bytes -= len(data)
        self._loop.remove_writer(self._fd)

    def get_write_buffer_size(self) -> int:
        return self._queued_bytes

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        """Stop reading and sending (what is queued is dropped); the socket stays open."""
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        if self._queue:
            self._loop.remove_writer(self._fd)
            self._queue.clear()
            self._queued_bytes = 0


class UdpSocket:
    """One bound UDP socket whose datagrams go to handlers by first byte.

    Use :meth:`open`; :attr:`transport` is what handlers send through.
    """

    def __init__(self) -> None:
        self.transport: DatagramSender | None = None
        self._routes: dict[int, DatagramHandler] = {}
        self._drained: list[Callable[[], None]] = []
        self._sock: socket.socket | None = None
        self._multi: MultiReader | None = None
        self._buffer = bytearray(READ_BUFFER)
        self._view = memoryview(self._buffer)
        #: Datagrams no handler claimed (empty, or a first byte nobody registered).
        self.unclaimed = 0
        #: ICMP errors reported for what we sent (a node that went away).
        self.send_errors = 0
        #: GRO is on: runs of datagrams may arrive in one read.
        self.gro = False
        #: Reads that brought a run of several datagrams (GRO), and the datagrams in them.
        self.gro_reads = 0
        self.gro_datagrams = 0

    @classmethod
    async def open(cls, host: str, port: int) -> UdpSocket:
        """Bind ``(host, port)``; raises ``OSError`` when it cannot."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        self = cls()
        try:
            sock.setblocking(False)
            if family == socket.AF_INET6:
                # IPv6 only: an IPv4 socket may hold the same port number (as TCP listeners do).
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            if sys.platform == "linux" and ANCILLARY_SIZE:
                with contextlib.suppress(OSError):
                    sock.setsockopt(_SOL_UDP, UDP_GRO, 1)
                    self.gro = True
            self.transport = DatagramSender(loop, sock, self)
            self._sock = sock
            self._multi = open_reader(sock)
            loop.add_reader(sock.fileno(), self._read_ready)
        except BaseException:
            if self.transport is not None:
                self.transport.abort()
            sock.close()
            raise
        return self

    @property
    def port(self) -> int:
        if self.transport is None:
            return 0
        return int(self.transport.get_extra_info("sockname")[1])

    def route(self, first_bytes: bytes, handler: DatagramHandler) -> None:
        """Send every datagram starting with one of ``first_bytes`` to ``handler``."""
        for b in first_bytes:
            self._routes[b] = handler

    def unroute(self, first_bytes: bytes) -> None:
        """Stop handing datagrams starting with ``first_bytes`` to anyone (they are counted
        as unclaimed)."""
        for b in first_bytes:
            self._routes.pop(b, None)

    @property
    def sock(self) -> socket.socket | None:
        """The socket itself (batched sends write to it directly when nothing is queued)."""
        return self._sock

    def on_drained(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` after each batch of datagrams has been handed out."""
        self._drained.append(hook)

    def remove_drained(self, hook: Callable[[], None]) -> None:
        """Undo :meth:`on_drained`."""
        with contextlib.suppress(ValueError):
            self._drained.remove(hook)

    def close(self) -> None:
        """Close the socket. Its port is free again when this returns (a running session
        may bind it again at once); a datagram still queued to send is dropped."""
        if self.transport is not None:
            self.transport.abort()  # nothing stays registered with the loop
            self.transport = None
        if self._multi is not None:
            self._multi.close()
            self._multi = None
        if self._sock is not None:
            self._sock.close()
        self._routes.clear()
        self._drained.clear()
        self._sock = None

    # reading

    def _read_ready(self) -> None:
        if self._sock is None:
            return
        if self._multi is not None:
            self._read_multi(self._multi)
        else:
            self._read_single(self._sock)
        for hook in self._drained:
            hook()

    def _read_multi(self, reader: MultiReader) -> None:
        """Up to ``READ_BATCH`` datagrams, ``VLEN`` to a system call."""
        routes = self._routes
        for _ in range(READ_BATCH // VLEN):
            try:
                got = reader.read()
            except OSError as exc:  # an ICMP error queued for an earlier send
                self.error_received(exc)
                return
            for view, addr, segment in got:
                if segment:
                    self._split(view, len(view), segment, addr)
                    continue
                data = view.tobytes()
                handler = routes.get(data[0]) if data else None
                if handler is None:
                    self.unclaimed += 1
                else:
                    handler(data, addr)
            if len(got) < VLEN:
                return

    def _read_single(self, sock: socket.socket) -> None:
        """Up to ``READ_BATCH`` datagrams, one to a system call."""
        routes = self._routes
        view = self._view
        buffers = [self._buffer]
        recv = sock.recvmsg_into
        for _ in range(READ_BATCH):
            try:
                n, ancillary, _flags, addr = recv(buffers, ANCILLARY_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # an ICMP error queued for an earlier send
                self.error_received(exc)
                break
            if ancillary:
                self._split(view, n, _segment_size(ancillary, n), addr)
                continue
            data = view[:n].tobytes()
            handler = routes.get(data[0]) if data else None
            if handler is None:
                self.unclaimed += 1
            else:
                handler(data, addr)

    def _split(self, view: memoryview, n: int, size: int, addr: Any) -> None:
        """A GRO read: ``n`` bytes of datagrams of ``size`` bytes (the last may be shorter),
        handed out one by one as if read one by one."""
        routes = self._routes
        self.gro_reads += 1
        for start in range(0, n, size):
            data = view[start : min(start + size, n)].tobytes()
            self.gro_datagrams += 1
            handler = routes.get(data[0])
            if handler is None:
                self.unclaimed += 1
            else:
                handler(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.send_errors += 1
        log.debug("UDP socket error: %s", exc)


def _segment_size(ancillary: list[tuple[int, int, bytes]], n: int) -> int:
    """The GRO segment size in a ``recvmsg`` control message (``n``, one datagram, if none)."""
    for level, kind, value in ancillary:
        if level == _SOL_UDP and kind == UDP_GRO and len(value) >= 4:
            return int.from_bytes(value[:4], sys.byteorder) or n
    return n
