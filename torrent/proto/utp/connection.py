"""One uTP connection (BEP 29) as a sans-IO state machine: datagrams and ``now`` in, datagrams out.

Usage (the engine's socket manager does this; tests do it with a simulated network)::

    conn = UtpConnection.dial(recv_id=r, seq_nr=s, now=t, counters=c)   # queues the SYN
    send_all(conn.outgoing); conn.outgoing.clear()
    conn.receive(datagram, now)          # never raises: bad packets are counted and dropped
    conn.write(b"..."); conn.flush(now)  # packetise what the window allows, send pending ACKs
    deliver(conn.received); conn.received.clear()
    conn.tick(now)                       # at conn.next_deadline(): timeouts and resends

States and rules:

* ``SYN_SENT`` (we dialled) → ``CONNECTED`` when the SYN is acknowledged (a STATE or DATA whose
  ``ack_nr`` is the SYN's sequence number); the side that accepts starts ``CONNECTED`` and
  answers the SYN with a STATE. Connection ids: the dialler picks ``recv_id`` and sends with
  ``recv_id + 1``; the SYN carries ``recv_id``; the acceptor receives on ``syn id + 1`` and
  sends with the SYN's id. ``→ CLOSED`` when our FIN is acknowledged, on a RESET, after too
  many timeouts (``close_reason`` says which; "" for a clean close).
* Sequence numbers are 16 bits and wrap. DATA, FIN and SYN take one; STATE carries the next
  one without taking it. ``ack_nr`` is the last packet received in order; packets ahead of it
  wait in a reorder buffer (at most ``max_reorder`` packets ahead) and are announced with a
  selective ACK bitmask on our STATE packets.
* Send window: ``min(cwnd, peer's wnd_size)`` bytes of payload in flight (LEDBAT,
  :mod:`.congestion`); one packet may always be in flight. Small writes wait while data is
  in flight (Nagle) and go out as one packet when the ACK arrives or the data fills one.
* Loss: the oldest unacknowledged packet is resent after 3 duplicate ACKs; a packet with 3
  selectively acknowledged packets after it is resent too; either halves the window once per
  window. A timeout (``max(rtt + 4 * rtt_var, 500 ms)``, doubled each time) resends everything
  in flight as the window allows, from one packet; ``MAX_TIMEOUTS`` in a row without progress
  (``SYN_RESENDS`` for the SYN) close the connection.
* Receive window: ``recv_buffer`` minus what the application has not taken yet
  (:meth:`set_app_buffered`) minus the reorder buffer; data past it is dropped (and counted).
  A peer whose window stays at zero gets a probe packet per timeout; ``MAX_TIMEOUTS`` probes
  without the window opening close the connection.
* Packet size: start at ``INITIAL_PACKET`` bytes (1,400 of payload), probe up halfway to
  ``mtu_ceiling`` (what the socket allows) with one larger packet at a time; an ACK raises
  the floor, a loss lowers the ceiling. When the socket refuses a datagram as too big for
  the path (``EMSGSIZE`` with the don't-fragment bit set), the caller reports it with
  :meth:`packet_too_big`: the ceiling drops below that size and, if the floor was not below
  it, the floor drops to ``MIN_PACKET`` (what any IPv4 path carries), from where the probes
  climb again. Packets already made keep their size (a sequence number cannot be split): the
  caller sends that one datagram with fragmentation allowed.

Every datagram goes through :meth:`receive`, which counts and drops what is malformed or
hostile (see :class:`~.counters.UtpCounters`) and never raises. Left out: keep-alives (the
peer wire sends its own every two minutes, and its idle timeout closes a silent
connection), clock-drift correction of the base delay, and packet pacing.
"""

from __future__ import annotations

import enum

from torrent.errors import LocalProtocolError
from torrent.proto.utp.congestion import DelayHistory, Ledbat, RttEstimator
from torrent.proto.utp.counters import UtpCounters
from torrent.proto.utp.packet import (
    ACK_MASK,
    EXT_SACK,
    HEADER,
    HEADER_SIZE,
    VERSION,
    PacketType,
    parse_extensions,
    sack_bitmask,
    sacked,
)
from torrent.proto.utp.sendbuf import SendBuffer

__all__ = [
    "INITIAL_PACKET",
    "MAX_PACKET_V4",
    "MAX_PACKET_V6",
    "MAX_TIMEOUTS",
    "MIN_PACKET",
    "SYN_RESENDS",
    "State",
    "UtpConnection",
]

#: Datagram size we start with: 1,400 bytes of payload behind the header.
INITIAL_PACKET = 1400 + HEADER_SIZE
#: The largest datagram on a 1,500-byte Ethernet path: 1500 - IPv4 (20) - UDP (8).
MAX_PACKET_V4 = 1472
#: ... and over IPv6 (40-byte header).
MAX_PACKET_V6 = 1452
#: The smallest datagram every IPv4 path carries: 576 - IPv4 (20) - UDP (8) (RFC 791).
MIN_PACKET = 576 - 28
#: A probe stops once floor and ceiling are this close.
MTU_SEARCH_DONE = 16
#: Times the SYN is resent before the dial fails (libtorrent's ``utp_syn_resends``).
SYN_RESENDS = 2
#: Timeouts in a row without progress before the connection is given up.
MAX_TIMEOUTS = 6
#: How long a connection whose FIN was acknowledged waits for the peer's FIN.
LINGER_S = 5.0
#: Default receive buffer we advertise (``wnd_size``).
DEFAULT_RECV_BUFFER = 1 << 20
#: Duplicate ACKs that trigger a fast retransmit (BEP 29).
DUP_ACKS = 3
#: Packets resent on one SACK at most.
MAX_SACK_RESENDS = 4
#: Longest SACK bitmask we send (256 packets).
MAX_SACK_BYTES = 32

_U32 = 0xFFFFFFFF
_DATA = PacketType.DATA
_FIN = PacketType.FIN
_STATE = PacketType.STATE
_RESET = PacketType.RESET
_SYN = PacketType.SYN
_pack = HEADER.pack
_DATA_V1 = (_DATA << 4) | VERSION
_unpack_from = HEADER.unpack_from


class State(enum.IntEnum):
    SYN_SENT = 0
    CONNECTED = 1
    CLOSED = 2


_CONNECTED = State.CONNECTED


class _Sent:
    """A packet in flight (kept until acknowledged, rebuilt with a fresh header on resend)."""

    __slots__ = ("fast_resent", "need_resend", "payload", "probe", "sent_at", "transmissions", "type")

    def __init__(self, type_: int, payload: bytes, sent_at: float, probe: bool) -> None:
        self.type = type_
        self.payload = payload
        self.sent_at = sent_at
        self.transmissions = 1
        self.need_resend = False
        self.fast_resent = False
        self.probe = probe


class UtpConnection:
    """See the module docstring. Build with :meth:`dial` or :meth:`accept`.

    Attributes:
        outgoing: datagrams to send, in order (the caller sends and clears them).
        received: payload received in order (the caller delivers and clears it).
        state: :class:`State`.
        close_reason: why it closed ("" while open or after a clean close).
        eof: the peer's FIN arrived and everything before it was received.
    """

    def __init__(
        self,
        *,
        recv_id: int,
        send_id: int,
        seq_nr: int,
        now: float,
        counters: UtpCounters,
        mtu_ceiling: int = MAX_PACKET_V4,
        recv_buffer: int = DEFAULT_RECV_BUFFER,
        nagle: bool = True,
    ) -> None:
        self.recv_id = recv_id & ACK_MASK
        self.send_id = send_id & ACK_MASK
        self.counters = counters
        self.outgoing: list[bytes] = []
        self.received: list[bytes] = []
        self.state = State.SYN_SENT
        self.close_reason = ""
        self.eof = False
        # send side
        self.seq_nr = seq_nr & ACK_MASK
        self.acked_seq = (seq_nr - 1) & ACK_MASK
        self._inflight: dict[int, _Sent] = {}
        self._bytes_in_flight = 0
        self._unacked = 0  # payload bytes in _inflight, resends included
        self._num_need_resend = 0
        self._sendbuf = SendBuffer()
        self._fin_pending = False
        self._fin_seq: int | None = None
        self._peer_wnd = DEFAULT_RECV_BUFFER
        self._dup_acks = 0
        self._num_timeouts = 0
        self._zero_window_probes = 0
        self._timeout_at: float | None = None
        self._cwnd_limited = False
        self._progress = False
        self._nagle = nagle
        self.rtt = RttEstimator()
        self._delays = DelayHistory()
        self._queue_delay_us: int | None = None
        self._last_delay_us = 0  # the latest sample, not yet in the history
        ceiling = max(mtu_ceiling, HEADER_SIZE + 100)
        self._mtu_ceiling = ceiling
        self._mtu_floor = min(INITIAL_PACKET, ceiling)
        self.packet_size = self._mtu_floor
        self._probe_seq: int | None = None
        self.ledbat = Ledbat(self.packet_size - HEADER_SIZE)
        # receive side
        self.ack_nr = 0
        self._syn_seq = -1
        self._reorder: dict[int, bytes] = {}
        self._reorder_bytes = 0
        self._recv_buffer = recv_buffer
        self._max_reorder = max(64, min(recv_buffer // 1000, 0x4000))
        self._app_buffered = 0
        self._eof_seq: int | None = None
        self._reply_us = 0
        self._ack_pending = False
        self.last_received_at = now

    # ------------------------------------------------------------------ opening

    @classmethod
    def dial(
        cls, *, recv_id: int, seq_nr: int, now: float, counters: UtpCounters, **kw: int | bool
    ) -> UtpConnection:
        """A connection we open: queues the SYN (``connection_id = recv_id``)."""
        conn = cls(recv_id=recv_id, send_id=recv_id + 1, seq_nr=seq_nr, now=now, counters=counters, **kw)  # type: ignore[arg-type]
        conn._send_new(_SYN, b"", now, False)
        return conn

    @classmethod
    def accept(
        cls,
        syn: bytes,
        *,
        seq_nr: int,
        now: float,
        counters: UtpCounters,
        mtu_ceiling: int = MAX_PACKET_V4,
        recv_buffer: int = DEFAULT_RECV_BUFFER,
        nagle: bool = True,
    ) -> UtpConnection | None:
        """A connection the peer opened with the SYN datagram ``syn``; queues our STATE.

        Returns None (counted) when ``syn`` is not a well-formed SYN.
        """
        if len(syn) < HEADER_SIZE:
            counters.malformed += 1
            return None
        tv, ext, cid, ts, _tsd, wnd, seq, _ack = _unpack_from(syn, 0)
        if tv != (_SYN << 4) | VERSION:
            counters.unexpected += 1
            return None
        if ext and parse_extensions(syn, ext) is None:
            counters.malformed += 1
            return None
        conn = cls(
            recv_id=cid + 1,
            send_id=cid,
            seq_nr=seq_nr,
            now=now,
            counters=counters,
            mtu_ceiling=mtu_ceiling,
            recv_buffer=recv_buffer,
            nagle=nagle,
        )
        conn.state = State.CONNECTED
        conn.ack_nr = seq
        conn._syn_seq = seq
        conn._peer_wnd = wnd
        conn._reply_us = (int(now * 1e6) - ts) & _U32
        conn._ack_pending = True
        conn.flush(now)
        return conn

    # ------------------------------------------------------------------ state

    @property
    def connected(self) -> bool:
        return self.state == State.CONNECTED

    @property
    def closed(self) -> bool:
        return self.state == State.CLOSED

    @property
    def send_buffer_bytes(self) -> int:
        """Bytes written and not yet acknowledged (queued plus in flight)."""
        return len(self._sendbuf) + self._unacked

    @property
    def queued_bytes(self) -> int:
        """Bytes written and not yet sent."""
        return len(self._sendbuf)

    @property
    def bytes_in_flight(self) -> int:
        return self._bytes_in_flight

    @property
    def cwnd(self) -> int:
        return int(self.ledbat.cwnd)

    @property
    def peer_window(self) -> int:
        return self._peer_wnd

    @property
    def queue_delay_us(self) -> int | None:
        """The queueing delay on our direction as of the latest ACK of our data (None
        before a sample)."""
        return self._queue_delay_us

    @property
    def window(self) -> int:
        """The receive window we advertise."""
        free = self._recv_buffer - self._app_buffered - self._reorder_bytes
        return free if free > 0 else 0

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has work (a timeout), or None."""
        return None if self.state == State.CLOSED else self._timeout_at

    # ------------------------------------------------------------------ application side

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue bytes to send (sent by the next :meth:`flush`).

        Raises:
            LocalProtocolError: after :meth:`close` or once closed.
        """
        if self._fin_pending or self.state == State.CLOSED:
            raise LocalProtocolError("write on a closed uTP connection")
        self._sendbuf.append(data)

    def set_app_buffered(self, nbytes: int, now: float) -> None:
        """The application holds ``nbytes`` received and not yet read (it shrinks our window).

        When this opens a window that was (almost) closed, a STATE tells the peer.
        """
        before = self.window
        self._app_buffered = max(0, nbytes)
        if before < self.packet_size <= self.window and self.state == State.CONNECTED:
            self._ack_pending = True
            self.flush(now)

    def close(self, now: float) -> None:
        """Send a FIN once everything written went out; CLOSED when it is acknowledged."""
        if self.state == State.CLOSED or self._fin_pending:
            return
        self._fin_pending = True
        if self.state == State.SYN_SENT:
            self._close("")  # nothing was sent: nothing to wait for
            return
        self.flush(now)

    def reset(self, now: float) -> None:
        """Abort: send a RESET and close at once (what was queued is dropped)."""
        if self.state == State.CLOSED:
            return
        if self.state == State.CONNECTED:
            self.outgoing.append(
                _pack(
                    (_RESET << 4) | VERSION,
                    0,
                    self.send_id,
                    int(now * 1e6) & _U32,
                    self._reply_us,
                    0,
                    self.seq_nr,
                    self.ack_nr,
                )
            )
            self.counters.resets_sent += 1
        self._close("aborted")

    def _close(self, reason: str) -> None:
        self.state = State.CLOSED
        if not self.close_reason:
            self.close_reason = reason
        self._timeout_at = None
        self._sendbuf.clear()
        self._inflight.clear()
        self._reorder.clear()
        self._bytes_in_flight = 0
        self._unacked = 0

    # ------------------------------------------------------------------ receiving

    def receive(self, data: bytes, now: float) -> None:
        """Take one datagram addressed to this connection; never raises."""
        if len(data) < HEADER_SIZE:
            self.counters.malformed += 1
            return
        tv, ext, cid, ts, tsd, wnd, seq, ack = _unpack_from(data, 0)
        if (
            tv == _DATA_V1
            and not ext
            and cid == self.recv_id
            and ack == self.acked_seq
            and self.state == _CONNECTED
            and self._fin_seq is None
        ):
            # The receiving side's usual packet: data that acknowledges nothing new. The
            # checks and ACK handling of _receive would find nothing to do (see _admit,
            # _on_ack); what _took_header does is done here (a call is a tenth of this path).
            self.last_received_at = now
            self._reply_us = (int(now * 1e6) - ts) & _U32
            self._peer_wnd = wnd
            if wnd >= self.packet_size:
                self._zero_window_probes = 0
            if tsd:
                self._last_delay_us = tsd
            self._progress = False
            plen = len(data) - HEADER_SIZE
            if (
                seq == ((self.ack_nr + 1) & ACK_MASK)
                and not self._reorder
                and self._eof_seq is None
                and self._app_buffered + plen <= self._recv_buffer
            ):
                # ... and the next one in order, with room: what _on_data would do.
                self._ack_pending = True
                if plen:
                    self.received.append(data[HEADER_SIZE:])
                self.ack_nr = seq
                return
            self._on_data(seq, data, HEADER_SIZE, plen)
            return
        self._receive(data, tv, ext, cid, ts, tsd, wnd, seq, ack, now)

    def _receive(
        self,
        data: bytes,
        tv: int,
        ext: int,
        cid: int,
        ts: int,
        tsd: int,
        wnd: int,
        seq: int,
        ack: int,
        now: float,
    ) -> None:
        """Every other packet: checked, then its ACK, data or FIN taken."""
        c = self.counters
        if tv & 0x0F != VERSION:
            c.bad_version += 1
            return
        typ = tv >> 4
        if typ > _SYN:
            c.bad_type += 1
            return
        sack: bytes | None = None
        off = HEADER_SIZE
        if ext:
            parsed = parse_extensions(data, ext)
            if parsed is None:
                c.malformed += 1
                return
            off, sack = parsed
        if self.state == State.CLOSED or not self._admit(typ, cid, seq, ack):
            return
        # The ACK must lie between what was acknowledged before and what we sent.
        sent_unacked = (self.seq_nr - 1 - self.acked_seq) & ACK_MASK
        d = (ack - self.acked_seq) & ACK_MASK
        if sent_unacked < d < 0x8000:
            c.ack_unsent += 1
            return
        self._took_header(ts, tsd, wnd, now)
        self._on_ack(typ, ack, d, sent_unacked, sack, now)
        if typ == _DATA:
            self._on_data(seq, data, off, len(data) - off)
        elif typ == _FIN:
            self._on_fin(seq)
        if self._fin_seq is not None and self._fin_seq not in self._inflight:
            self._fin_acknowledged(now)

    def _took_header(self, ts: int, tsd: int, wnd: int, now: float) -> None:
        """What every accepted packet tells: it is alive, its clock, its window, our delay."""
        self.last_received_at = now
        self._reply_us = (int(now * 1e6) - ts) & _U32
        self._peer_wnd = wnd
        if wnd >= self.packet_size:
            self._zero_window_probes = 0
        if tsd:
            self._last_delay_us = tsd

    def _fin_acknowledged(self, now: float) -> None:
        """Our FIN is acknowledged: the peer has everything. Once its FIN is here too (or
        after a linger), the connection is done; acknowledge what it sent last."""
        if self.eof:
            if self._ack_pending:
                self._send_state(now)
            self._close("")
        elif self._progress:
            self._timeout_at = now + LINGER_S

    def _admit(self, typ: int, cid: int, seq: int, ack: int) -> bool:
        """SYN, RESET and the first answer to our SYN; False when the packet stops here."""
        c = self.counters
        if typ == _SYN:
            if cid + 1 == self.recv_id and seq == self._syn_seq:
                c.duplicate_syn += 1  # our STATE was lost: answer again
                self._ack_pending = True
            else:
                c.unexpected += 1
            return False
        if cid != self.recv_id:
            c.bad_connection += 1
            return False
        if typ == _RESET:
            c.resets_received += 1
            self._close("connection reset by peer")
            return False
        if self.state == State.SYN_SENT:
            if ack != (self.acked_seq + 1) & ACK_MASK:
                c.unexpected += 1
                return False
            self.state = State.CONNECTED
            self.ack_nr = (seq - 1) & ACK_MASK
        return True

    def _on_ack(self, typ: int, ack: int, d: int, sent_unacked: int, sack: bytes | None, now: float) -> int:
        """The ACK part of a packet (``d``: how far ``ack`` moved); returns the bytes acknowledged."""
        acked = 0
        self._progress = False
        if 0 < d <= sent_unacked:
            acked = self._ack_up_to(ack, now)
        if sack is not None:
            acked += self._on_sack(ack, sack, now)
        if self._progress:
            self._dup_acks = 0
            self._num_timeouts = 0
            if self._last_delay_us:
                # Our packets' one-way delay goes into the history only when LEDBAT reads it,
                # as data of ours is acknowledged: a side that only receives pays nothing.
                self._queue_delay_us = self._delays.add(self._last_delay_us, now)
                self._last_delay_us = 0
            self.ledbat.on_ack(acked, self._queue_delay_us, window_full=self._cwnd_limited)
            self._timeout_at = now + self.rtt.rto_s if self._inflight else None
        elif d == 0 and typ == _STATE and self._inflight:
            self._dup_acks += 1
            if self._dup_acks == DUP_ACKS:
                first = (self.acked_seq + 1) & ACK_MASK
                p = self._inflight.get(first)
                if p is not None and not p.need_resend:
                    self._fast_resend(first, p, now)
        return acked

    def _ack_up_to(self, ack: int, now: float) -> int:
        """Everything up to ``ack`` arrived: forget those packets; returns their payload bytes."""
        inflight = self._inflight
        acked = 0
        sample: _Sent | None = None
        s = self.acked_seq
        plain = 0  # payload of packets in flight and not probes: _forget inlined for them
        found = False
        while s != ack:
            s = (s + 1) & ACK_MASK
            p = inflight.pop(s, None)
            if p is None:
                continue  # acknowledged earlier by a SACK
            found = True
            if p.need_resend or p.probe:
                acked += self._forget(p)
            else:
                plain += len(p.payload)
            if p.transmissions == 1:
                sample = p
        self.acked_seq = ack
        if found:
            self._progress = True
        if plain:
            self._unacked -= plain
            self._bytes_in_flight -= plain
            acked += plain
        if sample is not None:
            self.rtt.sample(now - sample.sent_at)
        return acked

    def _forget(self, p: _Sent) -> int:
        """``p`` was acknowledged (cumulatively or by a SACK): its bytes leave the books."""
        self._progress = True
        size = len(p.payload)
        self._unacked -= size
        if p.need_resend:
            self._num_need_resend -= 1
        else:
            self._bytes_in_flight -= size
        if p.probe:
            self._probe_acked(size)
        return size

    def _on_sack(self, ack: int, mask: bytes, now: float) -> int:
        """Packets past ``ack + 1`` that arrived: forget them, resend holes 3 SACKs behind."""
        inflight = self._inflight
        got = sacked(ack, mask)
        sent_unacked = (self.seq_nr - 1 - self.acked_seq) & ACK_MASK
        acked = 0
        for s in got:
            if ((s - self.acked_seq) & ACK_MASK) > sent_unacked:
                self.counters.ack_unsent += 1
                break
            p = inflight.pop(s, None)
            if p is None:
                continue
            acked += self._forget(p)
            if p.transmissions == 1:
                self.rtt.sample(now - p.sent_at)
        if not got:
            return acked
        # Walk back from the highest SACKed packet: a hole with 3 or more SACKed after it is lost.
        sacked_set = set(got)
        top = (got[-1] - self.acked_seq) & ACK_MASK
        count = 0
        resent = 0
        for dist in range(min(top, sent_unacked), 0, -1):
            s = (self.acked_seq + dist) & ACK_MASK
            if s in sacked_set:
                count += 1
                continue
            p = inflight.get(s)
            if p is not None and count >= DUP_ACKS and not p.fast_resent and not p.need_resend:
                self._fast_resend(s, p, now)
                resent += 1
                if resent >= MAX_SACK_RESENDS:
                    break
        return acked

    def _on_data(self, seq: int, data: bytes, off: int, plen: int) -> None:
        c = self.counters
        self._ack_pending = True
        d = (seq - self.ack_nr) & ACK_MASK
        if d == 0 or d >= 0x8000:
            c.duplicate_data += 1
            return
        eof_seq = self._eof_seq
        if eof_seq is not None and d >= ((eof_seq - self.ack_nr) & ACK_MASK):
            c.unexpected += 1  # data at or after the FIN
            return
        if d > self._max_reorder:
            c.out_of_window += 1
            return
        if self._app_buffered + self._reorder_bytes + plen > self._recv_buffer:
            c.over_window += 1
            return
        if d == 1:
            if plen:
                self.received.append(data[off:] if off else data)
            self.ack_nr = seq
            if self._reorder:
                self._drain_reorder()
            if eof_seq is not None and ((self.ack_nr + 1) & ACK_MASK) == eof_seq:
                self.ack_nr = eof_seq
                self.eof = True
            return
        reorder = self._reorder
        if seq in reorder:
            c.duplicate_data += 1
            return
        payload = data[off:]
        reorder[seq] = payload
        self._reorder_bytes += plen

    def _drain_reorder(self) -> None:
        reorder = self._reorder
        nxt = (self.ack_nr + 1) & ACK_MASK
        while nxt in reorder:
            payload = reorder.pop(nxt)
            self._reorder_bytes -= len(payload)
            if payload:
                self.received.append(payload)
            self.ack_nr = nxt
            nxt = (nxt + 1) & ACK_MASK

    def _on_fin(self, seq: int) -> None:
        self._ack_pending = True
        if self._eof_seq is None:
            d = (seq - self.ack_nr) & ACK_MASK
            if d == 0 or d >= 0x8000 or d > self._max_reorder:
                self.counters.out_of_window += 1
                return
            self._eof_seq = seq
        if ((self.ack_nr + 1) & ACK_MASK) == self._eof_seq:
            self.ack_nr = self._eof_seq
            self.eof = True

    # ------------------------------------------------------------------ sending

    def flush(self, now: float) -> None:
        """Send what the window allows, the FIN when due, and an ACK when one is owed."""
        if self.state != State.CONNECTED:
            return
        if self._num_need_resend:
            self._resend_marked(now)
        if self._sendbuf:
            self._send_data(now)
        if self._fin_pending and self._fin_seq is None and not self._sendbuf:
            self._fin_seq = self.seq_nr
            self._send_new(_FIN, b"", now, False)
        if self._ack_pending:
            self._send_state(now)

    def _send_data(self, now: float) -> None:
        """Cut what was written into DATA packets while the windows allow.

        The sending side's hot loop: what every packet of the run shares (the clock, our
        window, the ids, the ACK) is read once, and each packet is made here rather than in
        :meth:`_send_new`."""
        buf = self._sendbuf
        queued = len(buf)
        mss = self.packet_size - HEADER_SIZE
        cwnd = self.ledbat.cwnd
        peer_wnd = self._peer_wnd
        in_flight = self._bytes_in_flight
        self._cwnd_limited = False
        seq = self.seq_nr
        sent = 0
        wnd = self.window
        ts = int(now * 1e6) & _U32
        head = (self.send_id, ts, self._reply_us, wnd)
        ack_nr = self.ack_nr
        inflight = self._inflight
        out = self.outgoing.append
        take = buf.take
        while queued:
            n = queued
            probe = False
            if n >= mss:
                n = mss
                if self._probe_seq is None and self._mtu_ceiling - self._mtu_floor >= MTU_SEARCH_DONE:
                    n, probe = self._probe_payload(queued, mss)
            if in_flight:
                if in_flight + n > cwnd:
                    self._cwnd_limited = True
                    break
                if in_flight + n > peer_wnd or (n < mss and self._nagle):
                    break  # Nagle: the tail waits for the ACK or for more data
            elif peer_wnd < n and peer_wnd < mss:
                # A closed window: probe it when the timer fires.
                if self._timeout_at is None:
                    self._timeout_at = now + self.rtt.rto_s
                break
            payload = take(n)
            inflight[seq] = _Sent(_DATA, payload, now, probe)
            if probe:
                self._probe_seq = seq
            out(_pack(_DATA_V1, 0, *head, seq, ack_nr) + payload)
            seq = (seq + 1) & ACK_MASK
            in_flight += n
            sent += n
            queued -= n
        if sent:
            self.seq_nr = seq
            self._bytes_in_flight = in_flight
            self._unacked += sent
            self._ack_pending = False
            if self._timeout_at is None:
                self._timeout_at = now + self.rtt.rto_s

    def _probe_payload(self, queued: int, mss: int) -> tuple[int, bool]:
        """The payload of the next full packet while the packet size is being searched:
        halfway between floor and ceiling (a probe) if that much is queued."""
        size = (self._mtu_floor + self._mtu_ceiling) // 2
        if queued >= size - HEADER_SIZE:
            return size - HEADER_SIZE, True
        return mss, False

    def _send_new(self, typ: int, payload: bytes, now: float, probe: bool) -> None:
        seq = self.seq_nr
        self.seq_nr = (seq + 1) & ACK_MASK
        self._inflight[seq] = _Sent(typ, payload, now, probe)
        if probe:
            self._probe_seq = seq
        self._bytes_in_flight += len(payload)
        self._unacked += len(payload)
        wnd = self._recv_buffer - self._app_buffered - self._reorder_bytes
        cid = self.recv_id if typ == _SYN else self.send_id
        self.outgoing.append(
            _pack(
                (typ << 4) | VERSION,
                0,
                cid,
                int(now * 1e6) & _U32,
                self._reply_us,
                wnd if wnd > 0 else 0,
                seq,
                self.ack_nr,
            )
            + payload
        )
        self._ack_pending = False
        if self._timeout_at is None:
            self._timeout_at = now + self.rtt.rto_s

    def _resend(self, seq: int, p: _Sent, now: float) -> None:
        p.transmissions += 1
        p.sent_at = now
        if p.need_resend:
            p.need_resend = False
            self._num_need_resend -= 1
            self._bytes_in_flight += len(p.payload)
        wnd = self.window
        cid = self.recv_id if p.type == _SYN else self.send_id
        self.outgoing.append(
            _pack(
                (p.type << 4) | VERSION, 0, cid, int(now * 1e6) & _U32, self._reply_us, wnd, seq, self.ack_nr
            )
            + p.payload
        )
        self._ack_pending = False

    def _fast_resend(self, seq: int, p: _Sent, now: float) -> None:
        self.counters.fast_retransmits += 1
        p.fast_resent = True
        if p.probe:
            p.probe = False
            self._probe_lost(len(p.payload))
        self.ledbat.on_loss(seq, (self.seq_nr - 1) & ACK_MASK)
        self._resend(seq, p, now)

    def _resend_marked(self, now: float) -> None:
        """After a timeout: resend what was in flight, oldest first, as the window allows."""
        s = self.acked_seq
        end = self.seq_nr
        cwnd = max(self.ledbat.cwnd, 1.0)
        while self._num_need_resend and s != end:
            s = (s + 1) & ACK_MASK
            p = self._inflight.get(s)
            if p is None or not p.need_resend:
                continue
            if self._bytes_in_flight and self._bytes_in_flight + len(p.payload) > cwnd:
                return
            self._resend(s, p, now)

    def _send_state(self, now: float) -> None:
        wnd = self.window
        reorder = self._reorder
        mask = sack_bitmask(self.ack_nr, reorder, MAX_SACK_BYTES) if reorder else None
        if mask is None:
            self.outgoing.append(
                _pack(
                    (_STATE << 4) | VERSION,
                    0,
                    self.send_id,
                    int(now * 1e6) & _U32,
                    self._reply_us,
                    wnd,
                    self.seq_nr,
                    self.ack_nr,
                )
            )
        else:
            head = _pack((_STATE << 4) | VERSION, EXT_SACK, self.send_id, int(now * 1e6) & _U32,
                         self._reply_us, wnd, self.seq_nr, self.ack_nr)  # fmt: skip
            self.outgoing.append(head + bytes((0, len(mask))) + mask)
        self._ack_pending = False

    # ------------------------------------------------------------------ packet size

    def _probe_acked(self, payload: int) -> None:
        self._probe_seq = None
        size = payload + HEADER_SIZE
        if size > self._mtu_floor:
            self._mtu_floor = min(size, self._mtu_ceiling)
            self.packet_size = self._mtu_floor
            self.ledbat.min_cwnd = self.packet_size - HEADER_SIZE

    def packet_too_big(self, datagram: bytes) -> None:
        """The socket refused ``datagram`` (one of ours) as larger than the path's MTU: send
        nothing larger from now on (see the module docstring). Queues nothing."""
        size = len(datagram)
        if size <= MIN_PACKET or size < HEADER_SIZE:
            return  # nothing smaller to fall back to
        self.counters.mtu_too_big += 1
        seq = (datagram[16] << 8) | datagram[17]
        if seq == self._probe_seq:
            self._probe_seq = None
            p = self._inflight.get(seq)
            if p is not None:
                p.probe = False
        self._mtu_ceiling = min(self._mtu_ceiling, size - 1)
        if self._mtu_floor >= size:
            self._mtu_floor = min(MIN_PACKET, self._mtu_ceiling)
        if self.packet_size > self._mtu_floor:
            self.packet_size = self._mtu_floor
            self.ledbat.min_cwnd = self.packet_size - HEADER_SIZE

    def _probe_lost(self, payload: int) -> None:
        self._probe_seq = None
        self.counters.mtu_probes_lost += 1
        self._mtu_ceiling = max(self._mtu_floor, payload + HEADER_SIZE - 1)

    # ------------------------------------------------------------------ timers

    def tick(self, now: float) -> None:
        """Run the retransmission timer (call at or after :meth:`next_deadline`)."""
        at = self._timeout_at
        if self.state == State.CLOSED or at is None or now < at:
            return
        c = self.counters
        if self._fin_seq is not None and self._fin_seq not in self._inflight:
            self._close("")  # lingered long enough for the peer's FIN
            return
        if not self._inflight:
            self._timeout_at = None
            if self._sendbuf and self.state == State.CONNECTED:
                self._probe_window(now)
            return
        c.timeouts += 1
        self._num_timeouts += 1
        limit = SYN_RESENDS if self.state == State.SYN_SENT else MAX_TIMEOUTS
        if self._num_timeouts > limit:
            c.connections_timed_out += 1
            self._close("connect timed out" if self.state == State.SYN_SENT else "timed out")
            return
        self.rtt.back_off()
        self.ledbat.on_timeout()
        self._dup_acks = 0
        first_seq = -1
        s = self.acked_seq
        while s != self.seq_nr:
            s = (s + 1) & ACK_MASK
            p = self._inflight.get(s)
            if p is None:
                continue
            if first_seq < 0:
                first_seq = s
            if p.probe:
                p.probe = False
                self._probe_lost(len(p.payload))
            p.fast_resent = False
            if not p.need_resend:
                p.need_resend = True
                self._num_need_resend += 1
                self._bytes_in_flight -= len(p.payload)
        self._timeout_at = now + self.rtt.rto_s
        first = self._inflight[first_seq]
        self._resend(first_seq, first, now)

    def _probe_window(self, now: float) -> None:
        """The peer's window is closed and we have data: send one packet anyway."""
        self._zero_window_probes += 1
        if self._zero_window_probes > MAX_TIMEOUTS:
            self.counters.zero_window_timeouts += 1
            self._close("the peer's receive window stayed closed")
            return
        self.rtt.back_off()
        n = min(len(self._sendbuf), self.packet_size - HEADER_SIZE)
        self._send_new(_DATA, self._sendbuf.take(n), now, False)
        self._timeout_at = now + self.rtt.rto_s
