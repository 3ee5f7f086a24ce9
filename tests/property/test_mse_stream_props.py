"""Hypothesis over two MSE streams joined back to back: any cut of the bytes, any payload, garbage.

Both ends are :class:`MseStream` objects on in-memory transports; the test moves each side's
writes to the other cut into the drawn sizes. Whatever the cuts, each side's peer must get
``connection_made`` once and then exactly the bytes the other side's peer wrote, in order; and
random bytes at an accepting stream must never raise, only fail with a counted reason (or wait).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.mse_helpers import INFO_HASH, OTHER_HASH
from tests.transport_helpers import MemoryTransport
from tests.unit.test_mse_stream import Upper
from torrent.config import Encryption
from torrent.engine.clock import ManualClock
from torrent.engine.mse_stream import EncryptionCounters, MseStream, receiver_for
from torrent.proto.mse import CryptoMethod, Initiator

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CUTS = st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=8)
PAYLOAD = st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=6)


def cut(data: bytes, sizes: list[int], start: int) -> Iterator[bytes]:
    pos, i = 0, start
    while pos < len(data):
        n = sizes[i % len(sizes)]
        yield data[pos : pos + n]
        pos, i = pos + n, i + 1


class Pair:
    def __init__(self, provide: CryptoMethod, encryption: Encryption) -> None:
        clock = ManualClock()
        self.counters = EncryptionCounters()
        self.a_upper, self.b_upper = Upper(), Upper()
        self.a = MseStream(
            self.a_upper,
            Initiator(INFO_HASH, provide=provide),
            clock=clock,
            timeout_s=10,
            counters=self.counters,
        )
        self.b = MseStream(
            self.b_upper, receiver_for([OTHER_HASH, INFO_HASH], encryption), clock=clock, timeout_s=10,
            counters=self.counters,
        )  # fmt: skip
        self.ta, self.tb = MemoryTransport(self.a), MemoryTransport(self.b)
        self.a.connection_made(self.ta)
        self.b.connection_made(self.tb)

    def move(self, sizes: list[int]) -> None:
        """Deliver what each side wrote to the other, cut by ``sizes`` (the B->A cuts start one
        size later, so the two directions are cut differently)."""
        for chunk in cut(self.ta.take(), sizes, 0):
            self.b.data_received(chunk)
        for chunk in cut(self.tb.take(), sizes, 1):
            self.a.data_received(chunk)


async def run_pair(
    provide: CryptoMethod,
    encryption: Encryption,
    sizes: list[int],
    a_sends: list[bytes],
    b_sends: list[bytes],
) -> Pair:
    pair = Pair(provide, encryption)
    for _ in range(8):
        pair.move(sizes)
        if pair.a.established and pair.b.established:
            break
    assert pair.a.established
    assert pair.b.established
    assert pair.a_upper.calls == ["connection_made"]
    assert pair.b_upper.calls == ["connection_made"]
    for data in a_sends:
        pair.a.write(data)
    pair.a.writelines(b_sends[:1])
    for data in b_sends:
        pair.b.write(data)
    await asyncio.sleep(0)  # bytes held until the dialling side's first write
    for _ in range(3):
        pair.move(sizes)
    return pair


@SETTINGS
@given(
    sizes=CUTS,
    a_sends=PAYLOAD,
    b_sends=PAYLOAD,
    provide=st.sampled_from([CryptoMethod.RC4, CryptoMethod.PLAINTEXT]),
)
def test_any_cut_delivers_every_byte_in_order(
    sizes: list[int], a_sends: list[bytes], b_sends: list[bytes], provide: CryptoMethod
) -> None:
    pair = asyncio.run(run_pair(provide, Encryption.PREFER, sizes, a_sends, b_sends))
    assert bytes(pair.b_upper.received) == b"".join(a_sends) + b_sends[0]
    assert bytes(pair.a_upper.received) == b"".join(b_sends)
    assert pair.a.method is provide
    st_ = pair.counters.statistics()
    assert (st_.outgoing_encrypted, st_.incoming_encrypted, st_.failures) == (1, 1, {})


async def feed_garbage(garbage: bytes, sizes: list[int]) -> tuple[MemoryTransport, Upper, EncryptionCounters]:
    upper, counters = Upper(), EncryptionCounters()
    stream = MseStream(
        upper,
        receiver_for([INFO_HASH], Encryption.REQUIRE),
        clock=ManualClock(),
        timeout_s=10,
        counters=counters,
    )
    raw = MemoryTransport(stream)
    stream.connection_made(raw)
    for chunk in cut(garbage, sizes, 0):
        stream.data_received(chunk)
    return raw, upper, counters


@SETTINGS
@given(garbage=st.binary(min_size=0, max_size=2000), sizes=CUTS)
def test_garbage_never_raises_and_fails_with_a_counted_reason(garbage: bytes, sizes: list[int]) -> None:
    raw, upper, counters = asyncio.run(feed_garbage(garbage, sizes))
    assert upper.calls == []
    failures = counters.statistics().failures
    if raw.aborted:
        assert sum(failures.values()) == 1
        assert set(failures) <= {"bad_public_key", "no_sync_hash"}
    else:
        assert failures == {}
        assert len(garbage) < 628  # still within the bound the spec gives the receiver
