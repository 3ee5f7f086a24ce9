"""Local Service Discovery (BEP 14) on a multicast UDP socket: asyncio around :mod:`torrent.proto.lsd`.

The session owns one :class:`LsdService` when ``settings.lsd_enabled``. It joins the
IPv4 group 239.192.152.143 on port 6771 (the socket shares the port with other clients
on the machine: ``SO_REUSEADDR``/``SO_REUSEPORT``), multicasts a ``BT-SEARCH`` for every
torrent the session names (``torrents()``: never a private one) at most once per
``lsd_interval_s`` per torrent, and hands each announce it receives, other than its own
(the ``cookie``), to ``on_peer(info_hash, (sender address, its port))``. Announces from
one address beyond ``max_per_source`` per interval are dropped.

With ``family=6`` the service joins the IPv6 group ff15::efc0:988f instead (BEP 14's
site-local scope, hop limit 1); the session runs one service per family it listens on.

A machine or namespace without a multicast route cannot join the group: the service then
logs it and stays idle; the session goes on without LSD.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import struct
from collections.abc import Callable
from typing import Any

from torrent.proto import lsd

__all__ = ["LsdService"]

log = logging.getLogger(__name__)

#: Multicast hops: BEP 14 is for the local network.
MULTICAST_TTL = 1


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, service: LsdService) -> None:
        self.service = service

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.service.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("LSD socket error: %s", exc)


class LsdService:
    """One LSD member; see the module docstring.

    Args:
        host: the address of the interface to use ("0.0.0.0": the default one).
        port: our TCP listening port (what the announces carry).
        torrents: the info hashes that may be announced now.
        on_peer: receives ``(info_hash, (host, port))`` for each announce of another client.
        interval_s: the least time between two announces of one torrent.
        group_port: the LSD port (6771; tests may use another).
        family: 4 (239.192.152.143) or 6 (ff15::efc0:988f).
    """

    def __init__(
        self,
        host: str,
        *,
        port: Callable[[], int],
        torrents: Callable[[], list[bytes]],
        on_peer: Callable[[bytes, tuple[str, int]], None],
        interval_s: float = lsd.DEFAULT_INTERVAL_S,
        group_port: int = lsd.LSD_PORT,
        family: int = 4,
    ) -> None:
        self.host = host
        self.family = family
        self.group = lsd.GROUP6 if family == 6 else lsd.GROUP4
        self._port = port
        self._torrents = torrents
        self._on_peer = on_peer
        self._group_port = group_port
        self.limiter = lsd.AnnounceLimiter(interval_s)
        self.cookie = secrets.token_hex(4)
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Announces sent and received (ours looped back are not counted), datagrams refused.
        self.sent = 0
        self.received = 0
        self.malformed = 0

    @property
    def active(self) -> bool:
        """The group was joined (False on a machine without a multicast route)."""
        return self._transport is not None

    async def __aenter__(self) -> LsdService:
        self._loop = asyncio.get_running_loop()
        try:
            sock = self._socket()
        except OSError as exc:
            log.warning("local service discovery is off: cannot join %s (%s)", self.group, exc)
            return self
        self._transport, _ = await self._loop.create_datagram_endpoint(lambda: _Endpoint(self), sock=sock)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _socket(self) -> socket.socket:
        if self.family == 6:
            return self._socket6()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            _reuse(sock)
            sock.bind(("", self._group_port))
            iface = socket.inet_aton("0.0.0.0" if self.host in ("", "0.0.0.0") else self.host)
            mreq = struct.pack("4s4s", socket.inet_aton(lsd.GROUP4), iface)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, iface)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, MULTICAST_TTL)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)  # other clients here
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def _socket6(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            _reuse(sock)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(("::", self._group_port))
            # Interface 0: the one the routing table picks for the group.
            mreq = socket.inet_pton(socket.AF_INET6, lsd.GROUP6) + struct.pack("@I", 0)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, MULTICAST_TTL)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def tick(self, now: float) -> None:
        """Announce the torrents that are due (the session calls it once a second)."""
        if self._transport is None:
            return
        due = self.limiter.due(self._torrents(), now)
        for at in range(0, len(due), lsd.MAX_INFO_HASHES):
            data = lsd.encode(self._port(), due[at : at + lsd.MAX_INFO_HASHES], self.cookie, host=self.group)
            self._transport.sendto(data, (self.group, self._group_port))
            self.sent += 1

    def forget(self, info_hash: bytes) -> None:
        self.limiter.forget(info_hash)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            msg = lsd.decode(data)
        except ValueError:
            self.malformed += 1
            return
        if msg.cookie == self.cookie or self._loop is None:
            return  # our own, looped back
        source = str(addr[0])
        if not self.limiter.accept(source, self._loop.time()):
            return
        self.received += 1
        for ih in msg.info_hashes:
            self._on_peer(ih, (source, msg.port))


def _reuse(sock: socket.socket) -> None:
    """Share the LSD port with the other clients of this machine."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
