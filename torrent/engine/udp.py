"""The client's UDP socket: one port number for TCP and UDP, datagrams routed by their first byte.

BitTorrent clients answer the DHT (BEP 5), uTP (BEP 29) and UDP-tracker replies (BEP 15)
on the same UDP port as their TCP listener (libtorrent does). The three can be told
apart by the first byte of a datagram:

* ``d``: a bencoded dictionary, i.e. KRPC (the DHT);
* a uTP header starts with its type and version nibbles (``0x01``, ``0x11`` ... ``0x41``);
* a UDP tracker's answer starts with a 32-bit action (0-3, so ``0x00``).

:class:`UdpSocket` owns the socket and hands each datagram to the handler registered for
its first byte (:meth:`UdpSocket.route`); what nobody claims is counted and dropped. The
DHT registers ``b"d"``; uTP and UDP trackers will register their own bytes here.
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


class UdpSocket(asyncio.DatagramProtocol):
    """One bound UDP socket whose datagrams go to handlers by first byte.

    Use :meth:`open`; :attr:`transport` is what handlers send through.
    """

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self._routes: dict[int, DatagramHandler] = {}
        #: Datagrams no handler claimed (empty, or a first byte nobody registered).
        self.unclaimed = 0
        #: ICMP errors reported for what we sent (a node that went away).
        self.send_errors = 0

    @classmethod
    async def open(cls, host: str, port: int) -> UdpSocket:
        """Bind ``(host, port)``; raises ``OSError`` when it cannot."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        transport, proto = await loop.create_datagram_endpoint(cls, local_addr=(host, port), family=family)
        proto.transport = transport
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
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

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self._routes.clear()

    # asyncio.DatagramProtocol

    def datagram_received(self, data: bytes, addr: Any) -> None:
        handler = self._routes.get(data[0]) if data else None
        if handler is None:
            self.unclaimed += 1
            return
        handler(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.send_errors += 1
        log.debug("UDP socket error: %s", exc)
