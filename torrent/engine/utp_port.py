"""One UDP socket uTP runs on (one per address family) and how datagrams go out on it.

:class:`UtpPort` is what the socket manager (:mod:`torrent.engine.utp_socket`) sends a
connection's datagrams through:

* Socket buffers: it asks the kernel for large UDP buffers (``SOCKET_BUFFER``, as libtorrent
  tuned for speed does), as bursts of a fast sender otherwise overflow the receive queue
  before the loop reads them; what the kernel granted is read back (``rcvbuf``/``sndbuf``).
* GSO: a connection's run of equal-sized datagrams (a window's worth of full data packets)
  goes to the kernel in one ``sendmsg`` with Linux's ``UDP_SEGMENT``: the kernel cuts the
  buffer into datagrams of that size, so the peer receives ordinary packets and we pay one
  system call instead of dozens. It is used only when the transport has nothing queued
  (order is kept) and turned off for good at its first error (an old kernel, another OS);
  single datagrams and the fallback go through the asyncio transport.
* Path MTU: the don't-fragment bit is set on every datagram (:func:`set_dont_fragment`);
  ``EMSGSIZE`` is reported to the connection that sent the datagram.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
import sys
from collections.abc import Callable

from torrent.engine.udp import UdpSocket
from torrent.proto.utp import MAX_PACKET_V4, MAX_PACKET_V6, UtpConnection

__all__ = ["SOCKET_BUFFER", "UtpPort", "set_dont_fragment"]

#: Socket buffers asked for, both ways (the kernel may cap them at ``rmem_max``/``wmem_max``).
SOCKET_BUFFER = 4 << 20
#: Linux UDP GSO (``include/uapi/linux/udp.h``): the ``SOL_UDP`` option and control message.
UDP_SEGMENT = 103
#: Linux ``IP_MTU_DISCOVER`` / ``IPV6_MTU_DISCOVER`` (``include/uapi/linux/in.h``, ``in6.h``)
#: and their modes: fragment locally, or set the don't-fragment bit and refuse what is too big.
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
PMTUDISC_DONT = 0
PMTUDISC_DO = 2
#: Datagrams in one GSO send at most (the kernel's limit is 64 segments).
GSO_MAX_SEGMENTS = 64
#: Bytes in one GSO send at most: it is one UDP datagram to the kernel until it is cut, so
#: its length fits the 16-bit field (65,535 less the IPv4 and UDP headers); 64 full-size
#: packets would not (``EMSGSIZE``).
GSO_MAX_BYTES = 65535 - 20 - 8


class UtpPort:
    """One UDP socket uTP runs on (one per address family) and how datagrams go out on it.

    Datagrams go to the socket directly while the transport holds none (in order behind
    them otherwise), so a send error comes back to the connection that sent it: ``EMSGSIZE``
    (the don't-fragment bit is set, see :func:`set_dont_fragment`) is the connection's
    :meth:`~torrent.proto.utp.UtpConnection.packet_too_big`, and that datagram goes out
    once more with fragmentation allowed (a sequence number cannot be split).
    """

    __slots__ = (
        "df",
        "gso",
        "gso_datagrams",
        "gso_sends",
        "mtu_ceiling",
        "queued",
        "rcvbuf",
        "sndbuf",
        "sock",
        "sockname",
        "too_big",
        "transport",
        "udp",
        "version",
    )

    def __init__(self, udp: UdpSocket) -> None:
        assert udp.transport is not None, "open the UDP socket first"
        self.udp = udp
        self.transport = udp.transport
        sock = self.transport.get_extra_info("socket")
        self.sockname = self.transport.get_extra_info("sockname")
        v6 = ":" in str(self.sockname[0])
        #: The IP version of the socket (4 or 6).
        self.version = 6 if v6 else 4
        self.mtu_ceiling = MAX_PACKET_V6 if v6 else MAX_PACKET_V4
        self.sock = udp.sock
        # asyncio's datagram transports have it (typeshed lists it on write transports only).
        self.queued: Callable[[], int] = getattr(self.transport, "get_write_buffer_size", lambda: 1)
        #: GSO sends: on Linux until the first failure.
        self.gso = sys.platform == "linux" and self.sock is not None
        #: Datagrams refused with EMSGSIZE on this socket.
        self.too_big = 0
        #: GSO sends made, and the datagrams they carried (how often runs go out whole).
        self.gso_sends = 0
        self.gso_datagrams = 0
        #: The socket buffers the kernel granted (Linux reports twice what was asked, its
        #: bookkeeping included); 0 when unknown.
        self.rcvbuf = self.sndbuf = 0
        if sock is not None:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            with contextlib.suppress(OSError):
                self.rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
                self.sndbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        #: The don't-fragment bit is set on every datagram (path MTU discovery).
        self.df = self.sock is not None and set_dont_fragment(self.sock, self.version, PMTUDISC_DO)

    def send(self, conn: UtpConnection, addr: tuple[str, int]) -> None:
        out = conn.outgoing
        if not out:
            return
        if self.transport.is_closing():
            out.clear()
            return
        if self.sock is None or self.queued():
            sendto = self.transport.sendto  # behind what the transport holds
            for d in out:
                sendto(d, addr)
        elif len(out) > 1 and self.gso:
            self._send_segmented(conn, out, addr)
        else:
            self._send_direct(conn, out, 0, len(out), addr)
        out.clear()

    def _send_direct(
        self, conn: UtpConnection, out: list[bytes], i: int, j: int, addr: tuple[str, int]
    ) -> bool:
        """``out[i:j]`` one by one; False when the socket buffer filled up (the transport
        then holds the rest, in order)."""
        sock = self.sock
        assert sock is not None
        sendto = sock.sendto
        for k in range(i, j):
            d = out[k]
            try:
                sendto(d, addr)
            except BlockingIOError:
                queue = self.transport.sendto
                for rest in out[k:j]:
                    queue(rest, addr)
                return False
            except OSError as exc:
                self._send_failed(conn, d, addr, exc)
        return True

    def _send_failed(self, conn: UtpConnection, d: bytes, addr: tuple[str, int], exc: OSError) -> None:
        if exc.errno == errno.EMSGSIZE:
            self.too_big += 1
            conn.packet_too_big(d)
            self._send_fragmented(d, addr)
        else:  # a route went away, ...: as a lost datagram (the connection resends)
            self.udp.error_received(exc)

    def _send_fragmented(self, d: bytes, addr: tuple[str, int]) -> None:
        sock = self.sock
        if sock is None or not self.df:
            return
        set_dont_fragment(sock, self.version, PMTUDISC_DONT)
        try:
            sock.sendto(d, addr)
        except OSError as exc:
            self.udp.error_received(exc)
        finally:
            set_dont_fragment(sock, self.version, PMTUDISC_DO)

    def _send_segmented(self, conn: UtpConnection, out: list[bytes], addr: tuple[str, int]) -> None:
        """Runs of equal-sized datagrams in one GSO ``sendmsg`` each (the last may be shorter)."""
        sock = self.sock
        assert sock is not None
        n = len(out)
        i = 0
        while i < n:
            size = len(out[i])
            most = min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // size)
            j = i + 1
            while j < n and j - i < most and len(out[j]) == size:
                j += 1
            if j < n and j - i < most and len(out[j]) < size:
                j += 1  # a shorter last segment is allowed
            if j - i == 1 or not self.gso:
                if not self._send_direct(conn, out, i, j, addr):
                    self._queue(out, j, addr)
                    return
                i = j
                continue
            try:
                sock.sendmsg(
                    [b"".join(out[i:j])], [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))], 0, addr
                )
            except BlockingIOError:
                self._queue(out, i, addr)  # the socket buffer is full: the transport queues them
                return
            except OSError:
                # A segment larger than the path allows (EINVAL), or no GSO here: one by one.
                # If none of them is too big, GSO itself failed: leave it off from now on.
                before = self.too_big
                if not self._send_direct(conn, out, i, j, addr):
                    self._queue(out, j, addr)
                    return
                if self.too_big == before:
                    self.gso = False
            else:
                self.gso_sends += 1
                self.gso_datagrams += j - i
            i = j

    def _queue(self, out: list[bytes], i: int, addr: tuple[str, int]) -> None:
        sendto = self.transport.sendto
        for d in out[i:]:
            sendto(d, addr)

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.transport.is_closing():
            self.transport.sendto(data, addr)


def set_dont_fragment(sock: socket.socket, version: int, mode: int) -> bool:
    """Set path MTU discovery ``mode`` (Linux ``IP_MTU_DISCOVER``/``IPV6_MTU_DISCOVER``);
    False elsewhere (other systems number their options differently).

    ``PMTUDISC_DO`` sets the don't-fragment bit and refuses (``EMSGSIZE``) a datagram larger
    than the path MTU the kernel knows (the interface's, lowered by ICMP "fragmentation
    needed" / "packet too big" from routers): so a packet-size probe that is too big for the
    path is lost or refused instead of fragmented, and a refusal is news of a smaller path.
    ``PROBE`` would set the bit but ignore what ICMP taught the kernel, and a resend of a
    lost probe would then be dropped on the path again and again.
    """
    if sys.platform != "linux":
        return False
    if version == 6:
        level, opt = socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER
    else:
        level, opt = socket.IPPROTO_IP, IP_MTU_DISCOVER
    try:
        sock.setsockopt(level, opt, mode)
    except OSError:
        return False
    return True
