"""Hypothesis over the MSE handshake: any cut of the byte streams, any garbage, any corruption."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.mse_helpers import INFO_HASH, OTHER_HASH, entropy, pump
from torrent.errors import RemoteProtocolError
from torrent.proto.mse import (
    NEED_DATA,
    CryptoMethod,
    HandshakeDone,
    HandshakeError,
    Initiator,
    Receiver,
)

METHODS = st.sampled_from(
    [CryptoMethod.RC4, CryptoMethod.PLAINTEXT, CryptoMethod.RC4 | CryptoMethod.PLAINTEXT]
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def cutter(sizes: list[int]) -> Callable[[bytes], Iterator[bytes]]:
    """A split function cutting each output into pieces of the given sizes, round robin."""
    state = {"i": 0}

    def split(data: bytes) -> Iterator[bytes]:
        pos = 0
        while pos < len(data):
            n = sizes[state["i"] % len(sizes)]
            state["i"] += 1
            yield data[pos : pos + n]
            pos += n

    return split


@SETTINGS
@given(
    sizes=st.lists(st.integers(1, 700), min_size=1, max_size=20),
    provide=METHODS,
    allowed=METHODS,
    ia=st.binary(max_size=300),
    seed=st.integers(0, 2**32),
    max_pad=st.sampled_from([0, 1, 511, 512]),
)
def test_any_cut_of_the_streams_gives_the_same_handshake(
    sizes: list[int], provide: CryptoMethod, allowed: CryptoMethod, ia: bytes, seed: int, max_pad: int
) -> None:
    def run(split: object) -> tuple[HandshakeDone | None, HandshakeDone | None, bytes, bytes, str]:
        a = Initiator(INFO_HASH, initial_payload=ia, provide=provide, max_pad=max_pad, entropy=entropy(seed))
        b = Receiver([OTHER_HASH, INFO_HASH], allowed=allowed, max_pad=max_pad, entropy=entropy(seed + 1))
        try:
            out = pump(a, b, split)  # type: ignore[arg-type]
        except HandshakeError as exc:
            return None, None, b"", b"", exc.reason.name
        wire = a.stream().encrypt(b"ping")
        return (
            out.initiator,
            out.receiver,
            b.stream().decrypt(wire),
            a.stream().decrypt(b.stream().encrypt(b"pong")),
            "",
        )

    whole = run(lambda data: iter([data] if data else []))
    cut = run(cutter(sizes))
    assert cut == whole
    if provide & allowed:
        done_a, done_b, ping, pong, _ = cut
        assert done_b is not None
        assert done_b.initial_payload == ia
        assert done_b.skey == INFO_HASH
        assert done_a is not None
        assert done_a.method is done_b.method
        assert (ping, pong) == (b"ping", b"pong")
    else:
        assert cut[4] == "NO_COMMON_METHOD"


def _feed_all(machine: Initiator | Receiver, chunks: list[bytes]) -> None:
    """Feed ``chunks`` then EOF; only RemoteProtocolError may come out, and it must stick."""
    try:
        for chunk in chunks:
            machine.receive_data(chunk)
            if machine.next_event() is not NEED_DATA:
                return  # garbage that happens to be a handshake (it cannot, but it would be fine)
        machine.receive_data(b"")
        machine.next_event()
    except RemoteProtocolError as exc:
        failure = exc
    else:
        raise AssertionError("garbage and EOF did not fail the handshake")
    assert isinstance(failure, HandshakeError)
    assert machine.failure is failure.reason
    with pytest.raises(RemoteProtocolError) as again:
        machine.next_event()
    assert again.value is failure, "the failure did not stick"


@SETTINGS
@given(chunks=st.lists(st.binary(max_size=400), max_size=8), seed=st.integers(0, 2**32))
def test_garbage_only_ever_raises_remote_protocol_error(chunks: list[bytes], seed: int) -> None:
    _feed_all(Receiver([INFO_HASH], entropy=entropy(seed)), chunks)
    _feed_all(Initiator(INFO_HASH, entropy=entropy(seed)), chunks)


@SETTINGS
@given(chunks=st.lists(st.binary(max_size=400), max_size=8), key=st.integers(0, 2**768 - 1))
def test_garbage_after_a_public_key(chunks: list[bytes], key: int) -> None:
    # Past the first 96 bytes the machines scan and decrypt: garbage there too.
    _feed_all(Receiver([INFO_HASH], entropy=entropy(1)), [key.to_bytes(96, "big"), *chunks])
    _feed_all(Initiator(INFO_HASH, entropy=entropy(2)), [key.to_bytes(96, "big"), *chunks])


@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**32))
def test_one_corrupted_byte_fails_cleanly_or_changes_only_the_payload(data: st.DataObject, seed: int) -> None:
    a = Initiator(INFO_HASH, initial_payload=b"IA" * 34, entropy=entropy(seed))
    b = Receiver([INFO_HASH], entropy=entropy(seed + 1))
    b.receive_data(a.data_to_send())
    assert b.next_event() is NEED_DATA
    a.receive_data(b.data_to_send())
    assert a.next_event() is NEED_DATA
    step3 = bytearray(a.data_to_send())
    at = data.draw(st.integers(0, len(step3) - 1))
    step3[at] ^= data.draw(st.integers(1, 255))
    b.receive_data(bytes(step3))
    b.receive_data(b"")
    try:
        ev = b.next_event()
    except HandshakeError:
        return
    # A flipped byte inside PadC or IA is not detectable (RC4 has no integrity check).
    assert isinstance(ev, HandshakeDone)
