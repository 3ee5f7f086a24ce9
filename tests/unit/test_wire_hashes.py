"""BEP 52 hash request / hashes / hash reject on the wire: exact bytes, limits, correlation."""

from __future__ import annotations

import struct

import pytest

from tests.wire_helpers import Pair, connected, feed
from torrent.errors import LocalProtocolError, RemoteProtocolError
from torrent.proto.wire import Hashes, HashReject, HashRequest, encode

ROOT = bytes(range(32))
REQ = HashRequest(ROOT, 0, 4, 4, 3)


def _msg(msg_id: int, root: bytes, *fields: int, body: bytes = b"") -> bytes:
    return struct.pack(">IB32sIIII", 49 + len(body), msg_id, root, *fields) + body


def test_the_three_messages_encode_as_bep_52_says() -> None:
    assert encode(REQ) == _msg(21, ROOT, 0, 4, 4, 3)
    assert encode(HashReject(ROOT, 0, 4, 4, 3)) == _msg(23, ROOT, 0, 4, 4, 3)
    hashes = tuple(bytes([i]) * 32 for i in range(5))
    assert encode(Hashes(ROOT, 0, 4, 4, 3, hashes)) == _msg(22, ROOT, 0, 4, 4, 3, body=b"".join(hashes))


def test_a_request_answered_with_hashes_byte_by_byte() -> None:
    pair = Pair()
    pair.handshake()
    assert pair.send(pair.a, REQ) == [REQ]
    assert pair.a.hash_requests_outstanding == 1
    hashes = tuple(bytes([i]) * 32 for i in range(5))
    data = pair.b.send(Hashes(ROOT, 0, 4, 4, 3, hashes))
    assert feed(pair.a, data, chunk=1) == [Hashes(ROOT, 0, 4, 4, 3, hashes)]
    assert pair.a.hash_requests_outstanding == 0


def test_a_reject_ends_the_request() -> None:
    pair = Pair()
    pair.handshake()
    pair.send(pair.a, REQ)
    assert pair.send(pair.b, HashReject(ROOT, 0, 4, 4, 3)) == [HashReject(ROOT, 0, 4, 4, 3)]
    assert pair.a.hash_requests_outstanding == 0


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (_msg(22, ROOT, 0, 0, 2, 0, body=bytes(64)), "never sent"),
        (_msg(23, ROOT, 0, 0, 2, 0), "never sent"),
        (_msg(21, ROOT, 0, 3, 2, 0), "BEP 52"),  # index not a multiple of length
        (_msg(21, ROOT, 0, 0, 3, 0), "BEP 52"),  # length not a power of two
        (_msg(21, ROOT, 0, 0, 0, 0), "BEP 52"),
        (_msg(21, ROOT, 65, 0, 2, 0), "out of range"),
        (struct.pack(">IB", 48, 21) + bytes(47), "hash request"),  # one byte short
        (struct.pack(">IB", 49 + 32 * 577, 22), "hashes"),  # over the frame limit, refused at once
    ],
)
def test_bad_hash_messages_are_protocol_violations(data: bytes, needle: str) -> None:
    proto = connected()
    with pytest.raises(RemoteProtocolError, match=needle):
        feed(proto, data)


def test_hashes_that_do_not_fit_the_request_are_violations() -> None:
    pair = Pair()
    pair.handshake()
    pair.send(pair.a, HashRequest(ROOT, 0, 0, 2, 0))
    with pytest.raises(RemoteProtocolError, match="do not fit"):
        feed(pair.a, _msg(22, ROOT, 0, 0, 2, 0, body=bytes(31)))


def test_a_request_for_more_than_512_nodes_is_rejected_not_a_violation() -> None:
    proto = connected()
    assert feed(proto, _msg(21, ROOT, 0, 0, 1024, 0)) == []
    assert proto.data_to_send() == _msg(23, ROOT, 0, 0, 1024, 0)


def test_we_never_send_a_request_that_breaks_the_rules_or_too_many() -> None:
    proto = connected()
    with pytest.raises(LocalProtocolError):
        proto.send(HashRequest(ROOT, 0, 1, 2, 0))
    with pytest.raises(LocalProtocolError):
        proto.send(HashRequest(b"short", 0, 0, 2, 0))
    for i in range(64):
        proto.send(HashRequest(ROOT, 0, 2 * i, 2, 0))
    with pytest.raises(LocalProtocolError, match="outstanding"):
        proto.send(HashRequest(ROOT, 0, 200, 2, 0))
