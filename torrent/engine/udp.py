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

Reads are batched: when the loop reports one datagram, the socket is read on until it is
empty (at most ``READ_BATCH``), then every ``on_drained`` hook runs once — uTP sends one ACK
per connection per batch there instead of one per datagram (recvmmsg done in Python).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

__all__ = ["DatagramHandler", "UdpSocket"]

log = logging.getLogger(__name__)

#: A receiver of datagrams: ``handler(data, addr)``.
DatagramHandler = Callable[[bytes, Any], None]

#: Socket receive buffer asked for (the kernel may cap it): bursts of DHT queries wait there.
RECEIVE_BUFFER = 1 << 20
#: Datagrams read in one go after the loop reported the socket readable.
READ_BATCH = 64
#: The largest datagram the batched reads take whole (a longer one is cut). KRPC, uTP (at
#: most a 1,500-byte MTU) and UDP tracker answers stay far below it; asking for 64 KiB
#: instead costs about 2 µs more per datagram here (CPython allocates the full size, then
#: shrinks it), a third of what a uTP data packet costs in all.
RECV_SIZE = 16 * 1024


class UdpSocket(asyncio.DatagramProtocol):
    """One bound UDP socket whose datagrams go to handlers by first byte.

    Use :meth:`open`; :attr:`transport` is what handlers send through.
    """

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self._routes: dict[int, DatagramHandler] = {}
        self._drained: list[Callable[[], None]] = []
        self._sock: socket.socket | None = None
        #: Datagrams no handler claimed (empty, or a first byte nobody registered).
        self.unclaimed = 0
        #: ICMP errors reported for what we sent (a node that went away).
        self.send_errors = 0

    @classmethod
    async def open(cls, host: str, port: int) -> UdpSocket:
        """Bind ``(host, port)``; raises ``OSError`` when it cannot."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # Our own socket object (the transport's is a restricted wrapper): batched reads use it.
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if family == socket.AF_INET6:
                # IPv6 only: an IPv4 socket may hold the same port number (as TCP listeners do).
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            transport, proto = await loop.create_datagram_endpoint(cls, sock=sock)
        except BaseException:
            sock.close()
            raise
        proto.transport = transport
        proto._sock = sock
        return proto

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
        if self._sock is not None:
            self._sock.close()  # the transport's own close comes a loop iteration later
        self._routes.clear()
        self._drained.clear()
        self._sock = None

    # asyncio.DatagramProtocol

    def datagram_received(self, data: bytes, addr: Any) -> None:
        routes = self._routes
        handler = routes.get(data[0]) if data else None
        if handler is None:
            self.unclaimed += 1
        else:
            handler(data, addr)
        sock = self._sock
        if sock is not None:
            recvfrom = sock.recvfrom
            for _ in range(READ_BATCH - 1):
                try:
                    data, addr = recvfrom(RECV_SIZE)
                except OSError:  # BlockingIOError: empty; others reach error_received later
                    break
                handler = routes.get(data[0]) if data else None
                if handler is None:
                    self.unclaimed += 1
                else:
                    handler(data, addr)
        for hook in self._drained:
            hook()

    def error_received(self, exc: Exception) -> None:
        self.send_errors += 1
        log.debug("UDP socket error: %s", exc)
