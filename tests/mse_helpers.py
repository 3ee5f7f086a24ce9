"""Helpers for the MSE tests: a fake link between two handshake machines, a reference RC4.

``pump`` plays the part of two sockets joined back to back: it moves each side's output to the
other, cut into pieces by a ``split`` function (whole, byte at a time, random), until both
sides are done or one fails. ``rc4_reference`` is the textbook RC4 in Python, slow and obviously
right, to check the OpenSSL-backed stream against.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from torrent.proto.mse import NEED_DATA, HandshakeDone, Initiator, Receiver

INFO_HASH = bytes(range(20))
OTHER_HASH = bytes(range(100, 120))

Split = Callable[[bytes], Iterator[bytes]]


def whole(data: bytes) -> Iterator[bytes]:
    if data:
        yield data


def bytewise(data: bytes) -> Iterator[bytes]:
    for i in range(len(data)):
        yield data[i : i + 1]


def random_split(seed: int) -> Split:
    rng = random.Random(seed)

    def split(data: bytes) -> Iterator[bytes]:
        i = 0
        while i < len(data):
            n = rng.randint(1, 200)
            yield data[i : i + n]
            i += n

    return split


def entropy(seed: int) -> Callable[[int], bytes]:
    """A reproducible stand-in for ``secrets.token_bytes``."""
    return random.Random(seed).randbytes


def fixed_entropy(private_key: int) -> Callable[[int], bytes]:
    """Entropy whose 20-byte draw (the private key) is ``private_key`` and whose other draws are zeros."""

    def draw(n: int) -> bytes:
        return private_key.to_bytes(20, "big") if n == 20 else bytes(n)

    return draw


@dataclass
class Outcome:
    initiator: HandshakeDone | None = None
    receiver: HandshakeDone | None = None
    to_receiver: list[bytes] = field(default_factory=list)  # every chunk A sent, in order
    to_initiator: list[bytes] = field(default_factory=list)


def pump(a: Initiator, b: Receiver, split: Split = whole, *, rounds: int = 20) -> Outcome:
    """Run ``a`` and ``b`` against each other until both report ``HandshakeDone``.

    Exceptions from either side propagate (the tests check which).
    """
    out = Outcome()
    for _ in range(rounds):
        data = a.data_to_send()
        out.to_receiver.append(data)
        for chunk in split(data):
            b.receive_data(chunk)
            if out.receiver is None:
                ev = b.next_event()
                if ev is not NEED_DATA:
                    assert isinstance(ev, HandshakeDone)
                    out.receiver = ev
        data = b.data_to_send()
        out.to_initiator.append(data)
        for chunk in split(data):
            a.receive_data(chunk)
            if out.initiator is None:
                ev = a.next_event()
                if ev is not NEED_DATA:
                    assert isinstance(ev, HandshakeDone)
                    out.initiator = ev
        if out.initiator is not None and out.receiver is not None:
            return out
    raise AssertionError(f"no handshake after {rounds} rounds: {out}")


def rc4_reference(key: bytes, data: bytes, *, discard: int = 0) -> bytes:
    """RC4 (key scheduling, then the keystream XORed in), the first ``discard`` bytes dropped."""
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    i = j = 0
    out = bytearray()
    for n in range(discard + len(data)):
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        k = s[(s[i] + s[j]) % 256]
        if n >= discard:
            out.append(data[n - discard] ^ k)
    return bytes(out)
