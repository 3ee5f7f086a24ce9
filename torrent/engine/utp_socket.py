"""uTP on the session's UDP sockets: demultiplexing, the connection table, timers, dialling.

:class:`UtpSocketManager` registers with :class:`~torrent.engine.udp.UdpSocket` for the first
bytes of uTP packets (type in the high nibble, version 1 in the low one: ``0x01`` ``0x11``
``0x21`` ``0x31`` ``0x41``; the DHT's ``d`` and a UDP tracker's ``0x00`` go elsewhere; a uTP
packet of another version is never routed here and counts as unclaimed there). Each datagram is
looked up in a table keyed by (address, connection id) — for a SYN the id the connection will
receive on, ``id + 1`` — and handed to that connection's sans-IO
:class:`~torrent.proto.utp.UtpConnection`; its :class:`~torrent.engine.utp_stream.UtpStream`
then delivers the bytes to the peer and sends the ACKs and data the window allows.

* A SYN for no known connection is accepted (``on_accept`` gets the new stream) unless the
  manager accepts nothing, or ``max_half_open`` accepted connections have not sent data yet
  (a SYN flood): those are counted as ``syn_refused`` and dropped. DATA or FIN for no known
  connection is answered with a RESET (the peer forgot us, or we forgot it) and counted.
* :meth:`UtpSocketManager.connect` dials: a fresh receive id, a SYN, and an await of its ACK
  (the caller bounds it; the state machine gives up after its SYN resends).
* IPv4 and IPv6: the manager serves the socket it is built with and any other one given to
  :meth:`UtpSocketManager.add_socket` (the session's second UDP socket, of the other address
  family, when it listens on both). A connection sends on the socket of its peer's family;
  the table, timer, counters and half-open limit are shared.
* Timers are batched: one loop timer every ``TICK_S`` runs the retransmission timers of every
  connection whose deadline passed, and only while there are connections.

Socket buffers: the session asks the kernel for large UDP buffers (``SOCKET_BUFFER``), as
bursts of a fast sender otherwise overflow the receive queue before the loop reads them.

Sending: a connection's run of equal-sized datagrams (a window's worth of full data packets)
goes to the kernel in one ``sendmsg`` with Linux's ``UDP_SEGMENT`` (GSO): the kernel cuts the
buffer into datagrams of that size, so the peer receives ordinary packets and we pay one system
call instead of dozens. It is used only when the transport has nothing queued (order is kept)
and turned off for good at its first error (an old kernel, another OS); single datagrams and
the fallback go through the asyncio transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import secrets
import socket
import struct
import sys
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from torrent.engine.clock import SYSTEM_CLOCK, Clock
from torrent.engine.transport import Transport
from torrent.engine.udp import UdpSocket
from torrent.engine.utp_stream import UtpStream
from torrent.proto.utp import (
    HEADER,
    HEADER_SIZE,
    MAX_PACKET_V4,
    MAX_PACKET_V6,
    PacketType,
    State,
    UtpConnection,
    UtpCounters,
    UtpStats,
)

__all__ = ["FIRST_BYTES", "SOCKET_BUFFER", "TICK_S", "UtpHints", "UtpSocketManager"]

#: First bytes of uTP version 1 packets, one per type (BEP 29).
FIRST_BYTES = bytes((t << 4) | 1 for t in PacketType)
#: How often the retransmission timers run (the lowest timeout is 500 ms).
TICK_S = 0.05
#: Socket buffers asked for, both ways (the kernel may cap them at ``rmem_max``/``wmem_max``).
SOCKET_BUFFER = 4 << 20
#: Accepted connections that have not sent data yet, at most.
MAX_HALF_OPEN = 64
#: Addresses :class:`UtpHints` remembers at most (the least recently told go first).
MAX_HINTS = 4096
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

_SYN = int(PacketType.SYN)
_DATA = int(PacketType.DATA)
_FIN = int(PacketType.FIN)
_RESET = int(PacketType.RESET)
_CONNECTED = State.CONNECTED
_CLOSED = State.CLOSED

Key = tuple[tuple[str, int], int]


class UtpHints:
    """Whether addresses speak uTP, as far as the session knows; bounded, the least recently
    told forgotten first. It steers the order of a dial (see :mod:`torrent.engine.utp_dial`).

    What we saw ourselves (a uTP connection from or to the address, a SYN that went
    unanswered) is *observed*; what a peer's PEX message said is hearsay, and never replaces
    an observation.
    """

    def __init__(self, max_entries: int = MAX_HINTS) -> None:
        self._max = max_entries
        #: address -> (speaks uTP, observed)
        self._known: OrderedDict[tuple[str, int], tuple[bool, bool]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._known)

    def learn(self, addr: tuple[str, int], *, speaks_utp: bool, observed: bool = True) -> None:
        known = self._known
        old = known.get(addr)
        if old is not None and old[1] and not observed:
            return
        known[addr] = (speaks_utp, observed)
        known.move_to_end(addr)
        if len(known) > self._max:
            known.popitem(last=False)

    def get(self, addr: tuple[str, int]) -> bool | None:
        """True: it speaks uTP; False: it does not; None: nothing known."""
        entry = self._known.get(addr)
        return None if entry is None else entry[0]

    def observed(self, addr: tuple[str, int]) -> bool:
        """What :meth:`get` says was seen by us, not told by a peer."""
        entry = self._known.get(addr)
        return entry is not None and entry[1]

    def forget(self, addr: tuple[str, int]) -> None:
        self._known.pop(addr, None)


class _Port:
    """One UDP socket uTP runs on (one per address family) and how datagrams go out on it.

    Datagrams go to the socket directly while the transport holds none (in order behind
    them otherwise), so a send error comes back to the connection that sent it: ``EMSGSIZE``
    (the don't-fragment bit is set, see :func:`_set_dont_fragment`) is the connection's
    :meth:`~torrent.proto.utp.UtpConnection.packet_too_big`, and that datagram goes out
    once more with fragmentation allowed (a sequence number cannot be split).
    """

    __slots__ = (
        "df",
        "gso",
        "mtu_ceiling",
        "queued",
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
        if sock is not None:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        #: The don't-fragment bit is set on every datagram (path MTU discovery).
        self.df = self.sock is not None and _set_dont_fragment(self.sock, self.version, PMTUDISC_DO)

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
        _set_dont_fragment(sock, self.version, PMTUDISC_DONT)
        try:
            sock.sendto(d, addr)
        except OSError as exc:
            self.udp.error_received(exc)
        finally:
            _set_dont_fragment(sock, self.version, PMTUDISC_DO)

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
            i = j

    def _queue(self, out: list[bytes], i: int, addr: tuple[str, int]) -> None:
        sendto = self.transport.sendto
        for d in out[i:]:
            sendto(d, addr)

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.transport.is_closing():
            self.transport.sendto(data, addr)


def _set_dont_fragment(sock: socket.socket, version: int, mode: int) -> bool:
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


class UtpSocketManager:
    """Every uTP connection on the session's UDP sockets (one per address family).

    Args:
        udp: the session's socket; the manager registers its routes there.
        on_accept: given each accepted stream (None: refuse incoming connections).
        clock: the time source of the state machines.
        recv_buffer: the receive window each connection advertises.
        max_half_open: accepted connections without data yet, at most.
    """

    def __init__(
        self,
        udp: UdpSocket,
        *,
        on_accept: Callable[[UtpStream], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        recv_buffer: int = 1 << 20,
        max_half_open: int = MAX_HALF_OPEN,
    ) -> None:
        self._udp = udp
        self._on_accept = on_accept
        self._clock = clock
        self._recv_buffer = recv_buffer
        self._max_half_open = max_half_open
        self.counters = UtpCounters()
        #: Which addresses speak uTP: those that connected to us over it, or we to them.
        self.hints = UtpHints()
        self._conns: dict[Key, UtpStream] = {}
        self._half_open: set[UtpStream] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._dirty: dict[UtpStream, None] = {}
        #: The clock reading of the read batch in progress (None between batches).
        self._now: float | None = None
        #: The socket of each address family (4, 6).
        self._ports: dict[int, _Port] = {}
        self.add_socket(udp)

    def add_socket(self, udp: UdpSocket) -> None:
        """Serve uTP on ``udp`` too: the session's socket of the other address family."""
        port = _Port(udp)
        if port.version in self._ports:
            raise ValueError(f"uTP already has an IPv{port.version} socket")
        self._ports[port.version] = port
        udp.route(FIRST_BYTES, self.datagram_received)
        udp.on_drained(self.drained)

    @property
    def gso(self) -> bool:
        """GSO sends are still in use on every socket (they stop after a failure)."""
        return all(p.gso for p in self._ports.values())

    def _port(self, host: str) -> _Port | None:
        return self._ports.get(6 if ":" in host else 4)

    # ------------------------------------------------------------------ public

    def statistics(self) -> UtpStats:
        """What was dropped and recovered, since the socket opened (a snapshot)."""
        return self.counters.statistics()

    @property
    def port(self) -> int:
        """The UDP port the connections share."""
        return self._udp.port

    @property
    def connections(self) -> int:
        return len(self._conns)

    def close(self) -> None:
        """Reset every connection (the session is closing)."""
        self._closed = True
        for stream in list(self._conns.values()):
            stream.abort()
        self._conns.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def connect(self, protocol: asyncio.BaseProtocol, addr: tuple[str, int]) -> Transport:
        """Dial ``addr`` over uTP; calls ``protocol.connection_made`` with the stream once the
        SYN is acknowledged and returns the stream (a :data:`~torrent.engine.transport.Connector`).

        Raises:
            OSError: the address is not an IP address of a family we have a socket for,
                the manager is closed, or the peer reset the connection.
            TimeoutError: the SYN was never acknowledged (after its resends).
        """
        host, port = addr[0], int(addr[1])
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise OSError(f"uTP dials IP addresses, not {host!r}") from None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        out = self._ports.get(ip.version)
        if self._closed or out is None:
            raise OSError(f"no uTP socket for {host}")
        key_addr = (str(ip), port)
        while True:
            recv_id = secrets.randbelow(0xFFFF)
            if (key_addr, recv_id) not in self._conns and (key_addr, recv_id + 1) not in self._conns:
                break
        now = self._clock.monotonic()
        conn = UtpConnection.dial(
            recv_id=recv_id,
            seq_nr=1 + secrets.randbelow(0xFFFE),
            now=now,
            counters=self.counters,
            mtu_ceiling=out.mtu_ceiling,
            recv_buffer=self._recv_buffer,
        )
        stream = self._new_stream(conn, key_addr, out)
        self._conns[(key_addr, recv_id)] = stream
        out.send(conn, key_addr)
        self._arm()
        try:
            await stream.connected
        except BaseException:
            stream.abort()
            raise
        self.hints.learn(key_addr, speaks_utp=True)
        stream.set_protocol(protocol)
        protocol.connection_made(stream)  # type: ignore[arg-type]
        return stream

    # ------------------------------------------------------------------ datagrams

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """One datagram whose first byte looks like uTP; never raises for bad input.

        The clock is read once per read batch (:meth:`drained` ends one): its datagrams
        arrived together, and a read costs as much as a tenth of a datagram's handling."""
        if len(data) < HEADER_SIZE:
            self.counters.malformed += 1
            return
        typ = data[0] >> 4
        cid = (data[2] << 8) | data[3]
        if len(addr) != 2:
            addr = (addr[0], addr[1])  # IPv6: (host, port, flowinfo, scope_id)
        stream = self._conns.get((addr, (cid + 1) & 0xFFFF if typ == _SYN else cid))
        if stream is None:
            self._unknown(typ, cid, data, addr)
            return
        conn = stream.conn
        now = self._now
        if now is None:
            now = self._now = self._clock.monotonic()
        conn.receive(data, now)
        if stream.half_open and typ == _DATA:
            stream.half_open = False
            self._half_open.discard(stream)
        state = conn.state
        if state == _CONNECTED:
            if stream.dialling:
                stream.on_connected()
            # The batch's bytes reach the peer in one call once the socket is drained, and
            # before the ACK goes out, so the window it advertises counts what the reader holds.
            self._dirty[stream] = None
        elif state == _CLOSED:
            stream.after_receive()
        if conn.outgoing:
            stream.transmit(conn, addr)

    def drained(self) -> None:
        """The socket has no more datagrams for now: hand each touched connection's bytes to
        its peer in one call, then send its ACK and the data its window allows (one ACK per
        batch, not per datagram)."""
        dirty = self._dirty
        now = self._now
        self._now = None
        if not dirty:
            return
        self._dirty = {}
        if now is None:
            now = self._clock.monotonic()
        for stream in dirty:
            conn = stream.conn
            if conn.received or conn.eof or conn.closed or stream.write_paused:
                stream.after_receive()
            conn.flush(now)
            if conn.outgoing:
                stream.transmit(conn, stream.addr)

    def _unknown(self, typ: int, cid: int, data: bytes, addr: tuple[str, int]) -> None:
        c = self.counters
        if typ == _SYN:
            if self._closed or self._on_accept is None or len(self._half_open) >= self._max_half_open:
                c.syn_refused += 1
                return
            self._accept(data, addr)
            return
        c.bad_connection += 1
        if typ in (_DATA, _FIN):
            # The peer still thinks the connection is open: tell it otherwise.
            seq = (data[16] << 8) | data[17]
            now_us = int(self._clock.monotonic() * 1e6) & 0xFFFFFFFF
            reset = HEADER.pack((_RESET << 4) | 1, 0, cid, now_us, 0, 0, 0, seq)
            c.resets_sent += 1
            port = self._port(addr[0])
            if port is not None:
                port.sendto(reset, addr)

    def _accept(self, data: bytes, addr: tuple[str, int]) -> None:
        port = self._port(addr[0])
        if port is None:
            return
        now = self._clock.monotonic()
        conn = UtpConnection.accept(
            data,
            seq_nr=secrets.randbelow(0x10000),
            now=now,
            counters=self.counters,
            mtu_ceiling=port.mtu_ceiling,
            recv_buffer=self._recv_buffer,
        )
        if conn is None:
            return
        stream = self._new_stream(conn, addr, port)
        self._conns[(addr, conn.recv_id)] = stream
        self._half_open.add(stream)
        stream.half_open = True
        stream.on_connected()
        self.hints.learn(addr, speaks_utp=True)
        port.send(conn, addr)
        self._arm()
        assert self._on_accept is not None
        self._on_accept(stream)

    # ------------------------------------------------------------------ plumbing

    def _new_stream(self, conn: UtpConnection, addr: tuple[str, int], port: _Port) -> UtpStream:
        return UtpStream(
            conn,
            addr,
            send=port.send,
            now=self._clock.monotonic,
            forget=self._forget,
            sockname=port.sockname,
        )

    def _forget(self, stream: UtpStream) -> None:
        key = (stream.addr, stream.conn.recv_id)
        if self._conns.get(key) is stream:
            del self._conns[key]
        self._half_open.discard(stream)

    def _arm(self) -> None:
        if self._timer is None and self._conns and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(TICK_S, self._on_tick)

    def _on_tick(self) -> None:
        self._timer = None
        now = self._clock.monotonic()
        for stream in list(self._conns.values()):
            conn = stream.conn
            deadline = conn.next_deadline()
            if deadline is not None and deadline <= now:
                conn.tick(now)
                conn.flush(now)
                stream.transmit(conn, stream.addr)
                if conn.closed or stream.write_paused:
                    stream.after_receive()
        self._arm()
