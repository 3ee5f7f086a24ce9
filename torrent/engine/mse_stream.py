"""Message Stream Encryption on the transport seam: an encrypted stream, its connector, counters.

The handshake itself is the sans-IO :mod:`torrent.proto.mse`; this module runs it over asyncio
and plugs the result into the seam of :mod:`torrent.engine.transport` (see docs/ARCHITECTURE.md),
so that :class:`~torrent.engine.peer.Peer`, the wire protocol and the swarm stay as they are:

* :class:`MseStream` sits between a TCP transport and the peer. To the TCP transport it is the
  protocol: it runs the handshake on the first bytes, then decrypts in ``data_received`` and
  passes the plain bytes up. To the peer it is the :class:`~torrent.engine.transport.Transport`:
  ``write``/``writelines`` encrypt (RC4 is length-preserving, so the buffer sizes, limits and
  ``pause_writing``/``resume_writing`` of the TCP transport pass through unchanged). The peer's
  ``connection_made`` is forwarded only once the handshake is done; the receiver's initial
  payload (the BitTorrent handshake the initiator sent as ``IA``) and whatever followed it
  reach the peer as its first bytes.
* :class:`MseConnector` is a :data:`~torrent.engine.transport.Connector` for one torrent: it
  dials TCP, runs the handshake as the initiator (the spec's *A*) offering RC4 and returns the
  stream. With ``prefer`` a refused handshake is followed by a plaintext connection (a new
  TCP connection, as libtorrent does); with ``require`` the failure ends the attempt.
* :class:`EncryptionCounters` counts what happened (handshakes done each way, fallbacks,
  refused plaintext, failures by reason); :meth:`EncryptionCounters.statistics` snapshots it.

Timeouts: a handshake that is not done ``timeout_s`` after the TCP connection opened fails with
the reason ``timeout``. The decision reads the engine's :class:`~torrent.engine.clock.Clock`
(:meth:`MseStream.expire`); a loop timer armed for the remaining time asks it, and asks again
later when the clock has not got there yet (a test's ``ManualClock``).

A failed handshake closes the TCP connection quietly (nothing is logged or raised into the
loop): the reason is counted and, for an outgoing connection, raised by the connector to the
peer, which records it as its close reason.

When we dial, our BitTorrent handshake goes as the ``IA`` of step 3 (the dialling
:class:`~torrent.engine.peer.Peer` offers it as ``initial_payload``), as libtorrent does: the
peer has it one round trip sooner. After a fallback to plaintext the peer sends it as usual.

PEX (BEP 11) flags the peers that speak MSE with us as preferring encryption (``0x01``).
The flag on peers we are told of changes nothing here: ``prefer`` dials every peer with
MSE first already, and ``off`` never encrypts.

Under ``prefer`` both crypto methods are offered and accepted, and a receiver given the choice
takes the plaintext payload (see :func:`receiver_for`). Once such a stream is established, the
connection below reads straight into the peer (``set_protocol``): only writes still pass
through the stream, unchanged.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from torrent.config import Encryption
from torrent.engine.clock import Clock
from torrent.engine.transport import Buffer, Connector, StreamProtocol, Transport, tcp_connect
from torrent.errors import LocalProtocolError
from torrent.proto.mse import (
    MAX_INITIAL_PAYLOAD,
    NEED_DATA,
    CryptoMethod,
    HandshakeDone,
    HandshakeError,
    Initiator,
    PayloadStream,
    Receiver,
    SkeyCandidates,
)

__all__ = [
    "TIMEOUT",
    "EncryptionCounters",
    "EncryptionStats",
    "HandshakeTimeout",
    "MseConnector",
    "MseStream",
    "Outcome",
    "receiver_for",
]

#: The counted reason of a handshake that did not finish in time.
TIMEOUT = "timeout"


class HandshakeTimeout(TimeoutError):
    """The MSE handshake was not done within its time (a ``TimeoutError``: the peer records it)."""


@dataclass(frozen=True, slots=True)
class EncryptionStats:
    """A snapshot of :class:`EncryptionCounters`.

    Attributes:
        outgoing_encrypted: connections we dialled whose handshake succeeded.
        incoming_encrypted: accepted connections whose handshake succeeded.
        outgoing_failed: connections we dialled whose handshake failed (any reason).
        fallbacks_to_plaintext: failed outgoing handshakes retried in plaintext (``prefer``).
        plaintext_refused: accepted plaintext connections closed because encryption is required.
        failures: failed handshakes by reason (the names of
            :class:`torrent.proto.mse.Failure` in lower case, and ``timeout``), both directions.
    """

    outgoing_encrypted: int
    incoming_encrypted: int
    outgoing_failed: int
    fallbacks_to_plaintext: int
    plaintext_refused: int
    failures: dict[str, int]


@dataclass(slots=True)
class EncryptionCounters:
    """What the session's MSE handshakes did; see :class:`EncryptionStats` for each count."""

    outgoing_encrypted: int = 0
    incoming_encrypted: int = 0
    outgoing_failed: int = 0
    fallbacks_to_plaintext: int = 0
    plaintext_refused: int = 0
    failures: collections.Counter[str] = field(default_factory=collections.Counter)

    def statistics(self) -> EncryptionStats:
        return EncryptionStats(
            outgoing_encrypted=self.outgoing_encrypted,
            incoming_encrypted=self.incoming_encrypted,
            outgoing_failed=self.outgoing_failed,
            fallbacks_to_plaintext=self.fallbacks_to_plaintext,
            plaintext_refused=self.plaintext_refused,
            failures=dict(self.failures),
        )


#: What a stream reports once: the finished handshake, or why it failed.
Outcome = HandshakeDone | HandshakeError | HandshakeTimeout


class MseStream(asyncio.Protocol):
    """One MSE connection: a protocol to the TCP transport below, a Transport to the peer above.

    Args:
        upper: the connection carried (a ``Peer``); its ``connection_made`` comes after the handshake.
        handshake: a fresh :class:`Initiator` (we dialled) or :class:`Receiver` (we accepted).
        clock: the engine's clock (the handshake timeout reads it).
        timeout_s: time the handshake may take from ``connection_made``.
        counters: where successes and failures are counted.
        on_outcome: called once with the :class:`HandshakeDone` (after ``upper.connection_made``
            and before the first bytes reach ``upper``) or the error that ended the handshake
            (after the TCP connection was closed).
    """

    def __init__(
        self,
        upper: StreamProtocol,
        handshake: Initiator | Receiver,
        *,
        clock: Clock,
        timeout_s: float,
        counters: EncryptionCounters,
        on_outcome: Callable[[Outcome], None] = lambda outcome: None,
    ) -> None:
        self._upper = upper
        self._handshake: Initiator | Receiver | None = handshake
        self._outgoing = isinstance(handshake, Initiator)
        self._clock = clock
        self._timeout_s = timeout_s
        self._counters = counters
        self._on_outcome = on_outcome
        self._raw: Transport | None = None
        self._payload: PayloadStream | None = None
        self._encrypt: Callable[[Buffer], bytes] | None = None  # None: plaintext method
        self._decrypt: Callable[[Buffer], bytes] | None = None
        self._started_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._write_paused = False
        self._failed = False
        #: Dialled connections: bytes that arrived behind the handshake, kept until the peer
        #: has started its protocol (its first write, the BitTorrent handshake), then passed up.
        self._held: bytearray | None = None
        self._release_scheduled = False

    # -- state ------------------------------------------------------------------------------------

    @property
    def established(self) -> bool:
        """The handshake is done and the peer has the stream."""
        return self._payload is not None

    @property
    def method(self) -> CryptoMethod | None:
        """The crypto method of the payload stream, once established."""
        return None if self._payload is None else self._payload.method

    def expire(self, now: float) -> bool:
        """Fail the handshake when it has taken ``timeout_s`` by ``now``; True when it did."""
        if self._handshake is None or self._raw is None or now - self._started_at < self._timeout_s:
            return False
        self._fail(HandshakeTimeout(f"MSE handshake not done within {self._timeout_s:g} s"), TIMEOUT)
        return True

    # -- protocol (the TCP transport below calls these) --------------------------------------------

    def connection_made(self, transport: Any) -> None:
        raw = cast(Transport, transport)
        self._raw = raw
        self._started_at = self._clock.monotonic()
        self._arm_timer(self._timeout_s)
        assert self._handshake is not None
        out = self._handshake.data_to_send()  # the initiator's Ya, PadA; nothing for a receiver
        if out:
            raw.write(out)

    def data_received(self, data: bytes) -> None:
        if self._payload is None:
            self._advance(data)
            return
        decrypt = self._decrypt
        if decrypt is not None:
            data = decrypt(data)
        if self._held is not None:
            self._held += data
        else:
            self._upper.data_received(data)

    def eof_received(self) -> bool | None:
        if self._payload is not None:
            return self._upper.eof_received()
        self._advance(b"")  # the end of the stream half-way through the handshake fails it
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self._payload is not None:
            self._upper.connection_lost(exc)
        elif self._handshake is not None:
            self._advance(b"")

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._payload is not None:
            self._upper.pause_writing()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._payload is not None:
            self._upper.resume_writing()

    # -- Transport (the peer above calls these) ------------------------------------------------------

    def write(self, data: Buffer, /) -> None:
        raw = self._checked_raw()
        raw.write(data if self._encrypt is None else self._encrypt(data))
        if self._held is not None:
            self._release_held()

    def writelines(self, list_of_data: Iterable[Buffer], /) -> None:
        raw = self._checked_raw()
        encrypt = self._encrypt
        raw.writelines(list_of_data if encrypt is None else [encrypt(d) for d in list_of_data])
        if self._held is not None:
            self._release_held()

    def pause_reading(self) -> None:
        if self._raw is not None:
            self._raw.pause_reading()

    def resume_reading(self) -> None:
        if self._raw is not None:
            self._raw.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._raw is not None:
            self._raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return 0 if self._raw is None else self._raw.get_write_buffer_size()

    def is_closing(self) -> bool:
        return self._raw is None or self._raw.is_closing()

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()

    def abort(self) -> None:
        if self._raw is not None:
            self._raw.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "mse_method":
            return self.method
        return default if self._raw is None else self._raw.get_extra_info(name, default)

    # -- the handshake ----------------------------------------------------------------------------

    def _checked_raw(self) -> Transport:
        if self._raw is None or self._payload is None:
            raise LocalProtocolError("write before the MSE handshake is done")
        return self._raw

    def _advance(self, data: bytes) -> None:
        hs = self._handshake
        raw = self._raw
        if hs is None or raw is None:
            return
        try:
            hs.receive_data(data)
            ev = hs.next_event()
        except HandshakeError as exc:
            self._fail(exc, exc.reason.name.lower())
            return
        out = hs.data_to_send()
        if out and not raw.is_closing():
            raw.write(out)
        if ev is NEED_DATA:
            return
        assert isinstance(ev, HandshakeDone)
        self._established(hs, ev)

    def _established(self, hs: Initiator | Receiver, done: HandshakeDone) -> None:
        self._handshake = None
        self._cancel_timer()
        payload = hs.stream()
        self._payload = payload
        if payload.method is CryptoMethod.RC4:
            self._encrypt, self._decrypt = payload.encrypt, payload.decrypt
        if self._outgoing:
            self._counters.outgoing_encrypted += 1
        else:
            self._counters.incoming_encrypted += 1
        upper = self._upper
        upper.connection_made(self)
        if self._write_paused:
            upper.pause_writing()
        self._on_outcome(done)
        first = done.initial_payload + done.remainder
        if self._outgoing:
            # The peer starts its protocol when the connector returns, a step later: what B
            # sent behind the handshake waits for that (see ``_release_held``).
            self._held = bytearray(first)
        else:
            if first and self._raw is not None and not self._raw.is_closing():
                upper.data_received(first)
            self._hand_over_reads()

    def _release_held(self) -> None:
        """After the peer's first write: hand it what was held, on the next loop step (not
        from inside its own write)."""
        if not self._release_scheduled:
            self._release_scheduled = True
            asyncio.get_running_loop().call_soon(self._deliver_held)

    def _deliver_held(self) -> None:
        held, self._held = self._held, None
        if held and self._raw is not None and not self._raw.is_closing():
            self._upper.data_received(bytes(held))
        self._hand_over_reads()

    def _hand_over_reads(self) -> None:
        """Under the plaintext method the bytes read need nothing from us: the stream below
        hands them to the peer itself from now on (into the peer's own buffer, where the
        stream fills one), one copy and one call fewer per read. Writes still pass through
        us, so the peer's transport, and what it reports (``mse_method``), stay the same."""
        raw = self._raw
        if self._decrypt is not None or raw is None or raw.is_closing():
            return
        set_protocol = getattr(raw, "set_protocol", None)
        if set_protocol is not None:
            set_protocol(self._upper)

    def _fail(self, exc: HandshakeError | HandshakeTimeout, reason: str) -> None:
        if self._failed:
            return
        self._failed = True
        self._handshake = None
        self._cancel_timer()
        self._counters.failures[reason] += 1
        if self._outgoing:
            self._counters.outgoing_failed += 1
        if self._raw is not None:
            self._raw.abort()
        self._on_outcome(exc)

    def _arm_timer(self, delay_s: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        now = self._clock.monotonic()
        if self._handshake is not None and not self.expire(now):
            # The engine's clock is behind the loop's (a test's clock): ask again later.
            self._arm_timer(max(self._started_at + self._timeout_s - now, 0.05))


def receiver_for(skeys: SkeyCandidates, encryption: Encryption) -> Receiver:
    """The receiver side for an accepted connection under ``encryption`` (not ``off``).

    ``require`` accepts RC4 only. ``prefer`` accepts both methods and, offered both, picks the
    plaintext payload after the obfuscated handshake, as libtorrent does by default
    (``prefer_rc4`` off): the handshake already hides what the connection is, and the payload
    then costs no RC4 (on loopback, 244 MB/s instead of 93 from a libtorrent seed).
    """
    if encryption == Encryption.REQUIRE:
        return Receiver(skeys, allowed=CryptoMethod.RC4, prefer=CryptoMethod.RC4)
    return Receiver(skeys, allowed=CryptoMethod.RC4 | CryptoMethod.PLAINTEXT, prefer=CryptoMethod.PLAINTEXT)


def provide_for(encryption: Encryption) -> CryptoMethod:
    """What our initiator offers (``crypto_provide``): RC4 only under ``require``, both under
    ``prefer`` (the receiver chooses; libtorrent and we then choose the plaintext payload)."""
    if encryption == Encryption.REQUIRE:
        return CryptoMethod.RC4
    return CryptoMethod.RC4 | CryptoMethod.PLAINTEXT


class MseConnector:
    """Dials one torrent's peers with MSE (a :data:`~torrent.engine.transport.Connector`).

    Args:
        info_hash: the torrent's (the handshake's ``SKEY``).
        encryption: ``require`` or ``prefer`` (``prefer`` falls back to ``fallback``).
        clock, timeout_s, counters: as for :class:`MseStream`.
        fallback: opens the plaintext connection after a refused handshake.
        dial: opens the stream the handshake runs over (TCP, or uTP first).

    Raises (from a call):
        OSError: TCP could not connect (no fallback: plaintext would not connect either).
        HandshakeError, HandshakeTimeout: the handshake failed and there is no fallback.
    """

    def __init__(
        self,
        info_hash: bytes,
        *,
        encryption: Encryption,
        clock: Clock,
        timeout_s: float,
        counters: EncryptionCounters,
        fallback: Connector = tcp_connect,
        dial: Connector = tcp_connect,
    ) -> None:
        if encryption == Encryption.OFF:
            raise LocalProtocolError("encryption is off: dial with plain TCP")
        self._info_hash = bytes(info_hash)
        self._encryption = encryption
        self._clock = clock
        self._timeout_s = timeout_s
        self._counters = counters
        self._fallback = fallback
        self._dial = dial

    async def __call__(self, protocol: asyncio.BaseProtocol, addr: tuple[str, int]) -> Transport:
        try:
            return await self._encrypted(protocol, addr)
        except (HandshakeError, HandshakeTimeout):
            if self._encryption != Encryption.PREFER:
                raise
        self._counters.fallbacks_to_plaintext += 1
        return await self._fallback(protocol, addr)

    async def _encrypted(self, protocol: asyncio.BaseProtocol, addr: tuple[str, int]) -> Transport:
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[Outcome] = loop.create_future()

        def report(result: Outcome) -> None:
            if not outcome.done():
                outcome.set_result(result)

        # The BitTorrent handshake rides in the MSE handshake as IA when the peer offers it
        # (``Peer.initial_payload``), as libtorrent does: it saves a round trip.
        payload = getattr(protocol, "initial_payload", b"")
        ia = payload if isinstance(payload, bytes) and len(payload) <= MAX_INITIAL_PAYLOAD else b""
        stream = MseStream(
            cast(StreamProtocol, protocol),
            Initiator(self._info_hash, provide=provide_for(self._encryption), initial_payload=ia),
            clock=self._clock,
            timeout_s=self._timeout_s,
            counters=self._counters,
            on_outcome=report,
        )
        await self._dial(stream, addr)
        try:
            result = await outcome
        except BaseException:  # cancelled (the peer's connect timeout): drop the connection
            stream.abort()
            raise
        if isinstance(result, HandshakeDone):
            if ia:
                protocol.initial_payload = b""  # type: ignore[attr-defined]  # carried as IA
                # No first write will come to release what B sent behind its handshake.
                stream._release_held()
            return stream
        raise result
