"""BEP 52's upgrade bit: a hybrid's v1 connection becomes a v2 one when both sides agree."""

from __future__ import annotations

import pytest

from torrent.errors import RemoteProtocolError
from torrent.proto import wire
from torrent.proto.wire.events import V2_UPGRADE_BIT, NeedData

V1 = b"\x01" * 20
V2 = b"\x02" * 20
OTHER = b"\x03" * 20
PEER_ID = b"-XX0001-" + b"p" * 12


def _proto(info_hash: bytes, hybrid: tuple[bytes, bytes] | None = (V1, V2)) -> wire.PeerProtocol:
    return wire.PeerProtocol(
        info_hash=info_hash,
        our_peer_id=b"-PT0001-" + b"o" * 12,
        piece_length=16384,
        total_length=65536,
        hybrid=hybrid,
    )


def _their_handshake(info_hash: bytes, *, upgrade: bool) -> bytes:
    reserved = bytearray(8)
    if upgrade:
        reserved[V2_UPGRADE_BIT[0]] |= V2_UPGRADE_BIT[1]
    return wire.encode_handshake(info_hash, PEER_ID, bytes(reserved))


def _receive(proto: wire.PeerProtocol, data: bytes) -> wire.Event | NeedData:
    proto.receive_data(data, 0.0)
    return proto.next_event()


def test_we_set_the_bit_only_when_speaking_a_hybrids_v1_hash() -> None:
    for info_hash, hybrid, bit in ((V1, (V1, V2), True), (V2, (V1, V2), False), (V1, None, False)):
        ours = wire.parse_handshake(_proto(info_hash, hybrid).send(wire.Handshake(), 0.0))
        assert ours.v2_upgrade is bit
        assert ours.info_hash == info_hash


def test_an_answer_naming_the_v2_hash_upgrades_our_v1_connection() -> None:
    proto = _proto(V1)
    proto.send(wire.Handshake(), 0.0)
    hs = _receive(proto, _their_handshake(V2, upgrade=False))
    assert isinstance(hs, wire.Handshake)
    assert proto.upgraded
    assert proto.info_hash == V2


def test_a_plain_v1_answer_leaves_the_connection_on_v1() -> None:
    proto = _proto(V1)
    proto.send(wire.Handshake(), 0.0)
    assert isinstance(_receive(proto, _their_handshake(V1, upgrade=True)), wire.Handshake)
    assert not proto.upgraded
    assert proto.info_hash == V1


def test_we_upgraded_a_peer_that_named_the_v1_hash_with_the_bit() -> None:
    # The engine saw the bit (peek_v2_upgrade) and speaks the v2 hash.
    first = _their_handshake(V1, upgrade=True)
    assert wire.peek_v2_upgrade(first[:28])
    assert not wire.peek_v2_upgrade(_their_handshake(V1, upgrade=False)[:28])
    assert not wire.peek_v2_upgrade(first[:27])
    proto = _proto(V2)
    assert wire.parse_handshake(proto.send(wire.Handshake(), 0.0)).info_hash == V2
    assert isinstance(_receive(proto, first), wire.Handshake)
    assert proto.upgraded


@pytest.mark.parametrize(
    ("ours", "hybrid", "theirs", "upgrade", "sent_first"),
    [
        (V2, (V1, V2), V1, False, True),  # the v1 hash without the bit, on a v2 connection
        (V1, (V1, V2), V2, True, False),  # the v2 hash before we spoke: not an answer to our bit
        (V1, None, V2, True, True),  # not a hybrid
        (V1, (V1, V2), OTHER, True, True),  # another torrent
    ],
)
def test_other_hashes_are_still_another_torrent(
    ours: bytes, hybrid: tuple[bytes, bytes] | None, theirs: bytes, upgrade: bool, sent_first: bool
) -> None:
    proto = _proto(ours, hybrid)
    if sent_first:
        proto.send(wire.Handshake(), 0.0)
    with pytest.raises(RemoteProtocolError, match="another torrent"):
        _receive(proto, _their_handshake(theirs, upgrade=upgrade))
    assert not proto.upgraded


def test_hybrid_must_name_the_connections_hash() -> None:
    with pytest.raises(ValueError, match="hybrid"):
        _proto(OTHER)
