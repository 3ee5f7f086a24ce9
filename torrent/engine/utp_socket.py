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

Sending goes through a :class:`~torrent.engine.utp_port.UtpPort` per socket (socket buffers,
GSO runs, the don't-fragment bit); what the session knows of which addresses speak uTP is in
:class:`~torrent.engine.utp_hints.UtpHints` (both re-exported here).
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
from collections.abc import Callable
from typing import Any

from torrent.engine.clock import SYSTEM_CLOCK, Clock
from torrent.engine.transport import Transport
from torrent.engine.udp import UdpSocket
from torrent.engine.utp_hints import MAX_HINTS, UtpHints
from torrent.engine.utp_port import SOCKET_BUFFER, UtpPort
from torrent.engine.utp_stream import UtpStream
from torrent.proto.utp import (
    HEADER,
    HEADER_SIZE,
    PacketType,
    State,
    UtpConnection,
    UtpCounters,
    UtpStats,
)

__all__ = ["FIRST_BYTES", "MAX_HINTS", "SOCKET_BUFFER", "TICK_S", "UtpHints", "UtpPort", "UtpSocketManager"]

#: First bytes of uTP version 1 packets, one per type (BEP 29).
FIRST_BYTES = bytes((t << 4) | 1 for t in PacketType)
#: How often the retransmission timers run (the lowest timeout is 500 ms).
TICK_S = 0.05
#: Accepted connections that have not sent data yet, at most.
MAX_HALF_OPEN = 64
_SYN = int(PacketType.SYN)
_DATA = int(PacketType.DATA)
_FIN = int(PacketType.FIN)
_RESET = int(PacketType.RESET)
_CONNECTED = State.CONNECTED
_CLOSED = State.CLOSED

Key = tuple[tuple[str, int], int]


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
        self._ports: dict[int, UtpPort] = {}
        self.add_socket(udp)

    def add_socket(self, udp: UdpSocket) -> None:
        """Serve uTP on ``udp`` too: the session's socket of the other address family."""
        port = UtpPort(udp)
        if port.version in self._ports:
            raise ValueError(f"uTP already has an IPv{port.version} socket")
        self._ports[port.version] = port
        udp.route(FIRST_BYTES, self.datagram_received)
        udp.on_drained(self.drained)

    @property
    def ports(self) -> tuple[UtpPort, ...]:
        """The sockets served, one per address family (their send figures and buffers)."""
        return tuple(self._ports.values())

    @property
    def gso(self) -> bool:
        """GSO sends are still in use on every socket (they stop after a failure)."""
        return all(p.gso for p in self._ports.values())

    def _port(self, host: str) -> UtpPort | None:
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

    def _new_stream(self, conn: UtpConnection, addr: tuple[str, int], port: UtpPort) -> UtpStream:
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
