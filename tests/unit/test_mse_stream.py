"""The MSE stream wrapper over an in-memory transport (no sockets).

The far end is a sans-IO handshake machine the test drives by hand: what the stream writes is
taken from the :class:`MemoryTransport` and fed to it, and what it answers is handed to the
stream's ``data_received``. Padding is off (``max_pad=0``) on the far end only where a test needs
to know lengths; the stream under test always uses its defaults where it builds the machine.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.mse_helpers import INFO_HASH, OTHER_HASH, pump
from tests.transport_helpers import MemoryTransport
from torrent.config import Encryption
from torrent.engine.clock import ManualClock
from torrent.engine.mse_stream import (
    TIMEOUT,
    EncryptionCounters,
    HandshakeTimeout,
    MseConnector,
    MseStream,
    Outcome,
    provide_for,
    receiver_for,
)
from torrent.errors import LocalProtocolError
from torrent.proto.mse import (
    NEED_DATA,
    CryptoMethod,
    Failure,
    HandshakeDone,
    HandshakeError,
    Initiator,
    PayloadStream,
    Receiver,
)
from torrent.proto.wire import encode_handshake

TIMEOUT_S = 10.0
PEER_ID = b"-PT0100-abcdefghijkl"


class Upper:
    """What the stream carries (a ``Peer`` in the engine): records every call."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.received = bytearray()
        self.calls: list[str] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.calls.append("connection_made")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None, "bytes before connection_made"
        self.received += data
        self.calls.append("data_received")

    def eof_received(self) -> bool | None:
        self.calls.append("eof_received")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append("connection_lost")

    def pause_writing(self) -> None:
        self.calls.append("pause_writing")

    def resume_writing(self) -> None:
        self.calls.append("resume_writing")


class Rig:
    """A stream on a memory transport, its upper protocol, the far end's machine."""

    def __init__(
        self,
        ours: Initiator | Receiver,
        theirs: Initiator | Receiver,
        clock: ManualClock,
        raw: type[MemoryTransport] = MemoryTransport,
    ) -> None:
        self.upper = Upper()
        self.counters = EncryptionCounters()
        self.outcomes: list[Outcome] = []
        self.stream = MseStream(
            self.upper,
            ours,
            clock=clock,
            timeout_s=TIMEOUT_S,
            counters=self.counters,
            on_outcome=self.outcomes.append,
        )
        self.raw = raw(self.stream)
        self.theirs = theirs
        self.their_stream: PayloadStream | None = None
        self.their_done: HandshakeDone | None = None
        self.stream.connection_made(self.raw)
        self.send_theirs()  # an initiator at the far end speaks first

    def send_theirs(self) -> None:
        out = self.theirs.data_to_send()
        if out:
            self.stream.data_received(out)

    def pump(self, rounds: int = 6) -> None:
        """Move bytes both ways until the far end's handshake is done."""
        for _ in range(rounds):
            data = self.raw.take()
            if self.their_stream is not None:
                return
            if data:
                self.theirs.receive_data(data)
            ev = self.theirs.next_event()
            self.send_theirs()
            if ev is not NEED_DATA:
                assert isinstance(ev, HandshakeDone)
                self.their_done = ev
                self.their_stream = self.theirs.stream()
                return
        raise AssertionError("the handshake did not finish")

    def their_read(self) -> bytes:
        assert self.their_stream is not None
        return self.their_stream.decrypt(self.raw.take())

    def their_write(self, data: bytes) -> None:
        assert self.their_stream is not None
        self.stream.data_received(self.their_stream.encrypt(data))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def test_dialled_stream_forwards_connection_made_only_after_the_handshake(clock: ManualClock) -> None:
    rig = Rig(Initiator(INFO_HASH), Receiver([OTHER_HASH, INFO_HASH], max_pad=0), clock)
    assert rig.upper.calls == []
    assert not rig.stream.established
    with pytest.raises(LocalProtocolError):
        rig.stream.write(b"too early")
    rig.pump()
    # The far end's step 4 reaches the stream in the last pump: the stream is now up.
    assert rig.upper.calls == ["connection_made"]
    assert rig.upper.transport is rig.stream
    assert rig.stream.method is CryptoMethod.RC4
    assert rig.stream.get_extra_info("mse_method") is CryptoMethod.RC4
    assert rig.stream.get_extra_info("peername") == rig.raw.peername
    assert len(rig.outcomes) == 1
    assert isinstance(rig.outcomes[0], HandshakeDone)
    assert rig.counters.statistics().outgoing_encrypted == 1


async def test_payload_is_encrypted_both_ways_byte_for_byte(clock: ManualClock) -> None:
    rig = Rig(Initiator(INFO_HASH), Receiver([INFO_HASH]), clock)
    rig.pump()
    handshake = encode_handshake(INFO_HASH, PEER_ID)
    rig.stream.write(handshake)
    on_wire = bytes(rig.raw.buffered)
    assert len(on_wire) == len(handshake)
    assert on_wire != handshake  # RC4, not plaintext
    assert b"BitTorrent protocol" not in on_wire
    assert rig.their_read() == handshake
    rig.stream.writelines([b"one", bytearray(b"two"), memoryview(b"three")])
    assert rig.raw.writelines_calls == 1
    assert rig.their_read() == b"onetwothree"
    await asyncio.sleep(0)  # the bytes held until the first write are released a step later
    rig.their_write(b"reply" * 1000)
    assert bytes(rig.upper.received) == b"reply" * 1000


async def test_bytes_behind_the_handshake_wait_for_the_peers_first_write(clock: ManualClock) -> None:
    """A dialled connection: the peer starts its protocol once the connector returns, so what
    the far end sends right behind its handshake must not reach it before that."""
    rig = Rig(Initiator(INFO_HASH), Receiver([INFO_HASH]), clock)
    rig.theirs.receive_data(rig.raw.take())  # Ya
    rig.theirs.next_event()
    rig.send_theirs()  # Yb
    rig.theirs.receive_data(rig.raw.take())  # req1, req2^req3, VC...
    assert isinstance(rig.theirs.next_event(), HandshakeDone)
    their_stream = rig.theirs.stream()
    # Step 4 and their BitTorrent handshake in one read.
    theirs = encode_handshake(INFO_HASH, b"-XX0000-theirpeerid0")
    rig.stream.data_received(rig.theirs.data_to_send() + their_stream.encrypt(theirs))
    assert rig.upper.calls == ["connection_made"]
    rig.stream.data_received(their_stream.encrypt(b"more"))
    assert rig.upper.received == b""
    rig.stream.write(encode_handshake(INFO_HASH, PEER_ID))
    assert rig.upper.received == b""  # not from inside the peer's own write
    await asyncio.sleep(0)
    assert bytes(rig.upper.received) == theirs + b"more"
    rig.stream.data_received(their_stream.encrypt(b"after"))
    assert bytes(rig.upper.received) == theirs + b"moreafter"


async def test_accepted_stream_hands_the_initial_payload_to_the_peer_first(clock: ManualClock) -> None:
    ia = encode_handshake(INFO_HASH, b"-XX0000-theirpeerid0")
    rig = Rig(
        receiver_for(lambda: [OTHER_HASH, INFO_HASH], Encryption.REQUIRE),
        Initiator(INFO_HASH, initial_payload=ia),
        clock,
    )
    rig.pump()
    assert rig.upper.calls == ["connection_made", "data_received"]
    assert bytes(rig.upper.received) == ia
    done = rig.outcomes[0]
    assert isinstance(done, HandshakeDone)
    assert done.skey == INFO_HASH
    assert rig.counters.statistics().incoming_encrypted == 1
    rig.stream.write(b"our handshake")
    assert rig.their_read() == b"our handshake"


async def test_prefer_accepts_the_plaintext_method_and_then_passes_bytes_unchanged(
    clock: ManualClock,
) -> None:
    rig = Rig(
        receiver_for([INFO_HASH], Encryption.PREFER),
        Initiator(INFO_HASH, provide=CryptoMethod.PLAINTEXT),
        clock,
    )
    rig.pump()
    assert rig.stream.method is CryptoMethod.PLAINTEXT
    rig.stream.write(b"clear")
    assert rig.raw.take() == b"clear"
    rig.stream.data_received(b"also clear")
    assert rig.upper.received.endswith(b"also clear")


class SwitchableTransport(MemoryTransport):
    """A memory transport whose protocol can be replaced, as asyncio's and uvloop's can."""

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol


def reader(rig: Rig) -> Any:
    """The protocol the connection below hands its reads to."""
    return rig.raw.protocol


async def test_plaintext_method_hands_reads_to_the_peer_and_rc4_does_not(clock: ManualClock) -> None:
    """Under the plaintext method the connection below reads straight into the peer once the
    stream has delivered what it held; writes still pass through the stream."""
    accepted = Rig(
        receiver_for([INFO_HASH], Encryption.PREFER),
        Initiator(INFO_HASH, provide=CryptoMethod.PLAINTEXT),
        clock,
        raw=SwitchableTransport,
    )
    accepted.pump()
    assert reader(accepted) is accepted.upper
    assert accepted.upper.transport is accepted.stream
    accepted.stream.write(b"clear")
    assert accepted.raw.take() == b"clear"

    dialled = Rig(
        Initiator(INFO_HASH, provide=provide_for(Encryption.PREFER)),
        receiver_for([INFO_HASH], Encryption.PREFER),
        clock,
        raw=SwitchableTransport,
    )
    dialled.pump()
    assert dialled.stream.method is CryptoMethod.PLAINTEXT
    assert reader(dialled) is dialled.stream  # bytes behind the handshake are held first
    dialled.stream.data_received(b"held")
    dialled.stream.write(b"our handshake")
    await asyncio.sleep(0)
    assert bytes(dialled.upper.received) == b"held"
    assert reader(dialled) is dialled.upper

    rc4 = Rig(Initiator(INFO_HASH), Receiver([INFO_HASH]), clock, raw=SwitchableTransport)
    rc4.pump()
    rc4.stream.write(b"x")
    await asyncio.sleep(0)
    assert rc4.stream.method is CryptoMethod.RC4
    assert reader(rc4) is rc4.stream


async def test_require_refuses_an_initiator_that_offers_only_plaintext(clock: ManualClock) -> None:
    rig = Rig(
        receiver_for([INFO_HASH], Encryption.REQUIRE),
        Initiator(INFO_HASH, provide=CryptoMethod.PLAINTEXT),
        clock,
    )
    rig.theirs.receive_data(rig.raw.take())
    rig.theirs.next_event()
    rig.send_theirs()
    assert rig.raw.aborted
    assert rig.upper.calls == []
    assert isinstance(rig.outcomes[0], HandshakeError)
    assert rig.counters.statistics().failures == {"no_common_method": 1}


async def test_garbage_fails_quietly_with_a_counted_reason(clock: ManualClock) -> None:
    rig = Rig(receiver_for([INFO_HASH], Encryption.PREFER), Initiator(INFO_HASH), clock)
    rig.stream.data_received(bytes(range(96)) + b"\x07" * 600)  # a key, then no req1 hash
    assert rig.raw.aborted
    assert rig.upper.calls == []
    (outcome,) = rig.outcomes
    assert isinstance(outcome, HandshakeError)
    assert outcome.reason is Failure.NO_SYNC_HASH
    rig.stream.data_received(b"more garbage")  # nothing raises after the failure
    rig.stream.connection_lost(None)
    assert len(rig.outcomes) == 1
    assert rig.counters.statistics().failures == {"no_sync_hash": 1}


async def test_unknown_torrent_is_counted(clock: ManualClock) -> None:
    rig = Rig(receiver_for([OTHER_HASH], Encryption.PREFER), Initiator(INFO_HASH), clock)
    with pytest.raises(AssertionError, match="did not finish"):
        rig.pump()
    assert rig.counters.statistics().failures == {"unknown_skey": 1}


async def test_connection_closed_during_the_handshake(clock: ManualClock) -> None:
    rig = Rig(Initiator(INFO_HASH), Receiver([INFO_HASH]), clock)
    rig.stream.connection_lost(None)
    (outcome,) = rig.outcomes
    assert isinstance(outcome, HandshakeError)
    assert outcome.reason is Failure.CLOSED
    st = rig.counters.statistics()
    assert st.failures == {"closed": 1}
    assert st.outgoing_failed == 1
    assert rig.upper.calls == []


async def test_eof_during_the_handshake_fails_it(clock: ManualClock) -> None:
    rig = Rig(Initiator(INFO_HASH), Receiver([INFO_HASH]), clock)
    assert rig.stream.eof_received() is None
    assert rig.counters.statistics().failures == {"closed": 1}


async def test_handshake_timeout_reads_the_engines_clock(clock: ManualClock) -> None:
    rig = Rig(Initiator(INFO_HASH), Receiver([INFO_HASH]), clock)
    assert not rig.stream.expire(clock.advance(TIMEOUT_S - 0.5))
    assert not rig.raw.aborted
    assert rig.stream.expire(clock.advance(1.0))
    assert rig.raw.aborted
    (outcome,) = rig.outcomes
    assert isinstance(outcome, HandshakeTimeout)
    assert isinstance(outcome, TimeoutError)
    assert rig.counters.statistics().failures == {TIMEOUT: 1}
    assert not rig.stream.expire(clock.advance(100))  # once


async def test_no_timeout_once_established(clock: ManualClock) -> None:
    rig = Rig(Initiator(INFO_HASH), Receiver([INFO_HASH]), clock)
    rig.pump()
    assert not rig.stream.expire(clock.advance(1000))
    assert not rig.raw.aborted


async def test_back_pressure_and_reading_pass_through(clock: ManualClock) -> None:
    rig = Rig(Initiator(INFO_HASH), Receiver([INFO_HASH]), clock)
    rig.stream.pause_writing()  # before the peer has the stream: remembered
    rig.pump()
    assert rig.upper.calls == ["connection_made", "pause_writing"]
    rig.stream.resume_writing()
    assert rig.upper.calls[-1] == "resume_writing"
    rig.stream.set_write_buffer_limits(high=100, low=10)
    assert (rig.raw.high, rig.raw.low) == (100, 10)
    rig.stream.write(b"x" * 150)  # over the raw transport's high mark
    assert rig.stream.get_write_buffer_size() == 150
    assert rig.upper.calls[-1] == "pause_writing"
    rig.raw.take()
    assert rig.upper.calls[-1] == "resume_writing"
    rig.stream.pause_reading()
    assert not rig.raw.reading
    rig.stream.resume_reading()
    assert rig.raw.reading
    assert rig.stream.eof_received() is None
    assert rig.upper.calls[-1] == "eof_received"
    rig.stream.close()
    assert rig.stream.is_closing()
    await asyncio.sleep(0)  # the memory transport reports the loss a step later
    assert rig.upper.calls[-1] == "connection_lost"


def test_the_connector_is_not_for_plaintext() -> None:
    with pytest.raises(LocalProtocolError):
        MseConnector(
            INFO_HASH,
            encryption=Encryption.OFF,
            clock=ManualClock(),
            timeout_s=1,
            counters=EncryptionCounters(),
        )


@pytest.mark.parametrize(
    ("ours", "theirs", "method"),
    [
        (Encryption.PREFER, Encryption.PREFER, CryptoMethod.PLAINTEXT),
        (Encryption.REQUIRE, Encryption.PREFER, CryptoMethod.RC4),
        (Encryption.PREFER, Encryption.REQUIRE, CryptoMethod.RC4),
        (Encryption.REQUIRE, Encryption.REQUIRE, CryptoMethod.RC4),
    ],
)
def test_payload_method_per_setting(ours: Encryption, theirs: Encryption, method: CryptoMethod) -> None:
    """``prefer`` offers and accepts both and, offered both, keeps the payload plaintext after
    the obfuscated handshake (libtorrent's default); ``require`` on either side means RC4."""
    out = pump(Initiator(INFO_HASH, provide=provide_for(ours)), receiver_for([INFO_HASH], theirs))
    assert out.initiator is not None
    assert out.receiver is not None
    assert out.initiator.method is method
    assert out.receiver.method is method
