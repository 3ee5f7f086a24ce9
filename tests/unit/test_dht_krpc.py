"""KRPC codec (BEP 5, 32, 42) with literal bytes: the BEP's own examples, and every kind of bad input."""

from __future__ import annotations

import pytest

from torrent.errors import RemoteProtocolError
from torrent.proto.dht import krpc
from torrent.proto.dht.krpc import KrpcDecodeError, NodeInfo

A = b"abcdefghij0123456789"
M = b"mnopqrstuvwxyz123456"

# the examples of BEP 5, byte for byte
BEP5 = {
    "ping": b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
    "ping_r": b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re",
    "find_node": b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node1:t2:aa1:y1:qe",
    "get_peers": b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe",
    "get_peers_r": b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re",
    "announce": (
        b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e"
        b"5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe"
    ),
    "error": b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee",
}


def test_bep5_examples_decode_and_reencode_to_the_same_bytes() -> None:
    assert krpc.decode(BEP5["ping"]) == krpc.Ping(b"aa", A)
    assert krpc.decode(BEP5["ping_r"]) == krpc.Response(b"aa", M)
    assert krpc.decode(BEP5["find_node"]) == krpc.FindNode(b"aa", A, M)
    assert krpc.decode(BEP5["get_peers"]) == krpc.GetPeers(b"aa", A, M)
    assert krpc.decode(BEP5["get_peers_r"]) == krpc.Response(
        b"aa", A, values=(("97.120.106.101", 11893), ("105.100.104.116", 28269)), token=b"aoeusnth"
    )
    assert krpc.decode(BEP5["announce"]) == krpc.AnnouncePeer(
        b"aa", A, M, 6881, b"aoeusnth", implied_port=True
    )
    assert krpc.decode(BEP5["error"]) == krpc.Error(b"aa", 201, "A Generic Error Ocurred")
    for raw in BEP5.values():
        assert krpc.encode(krpc.decode(raw)) == raw


def test_compact_nodes_v4_and_v6() -> None:
    v4 = A + bytes([192, 0, 2, 7]) + (6881).to_bytes(2, "big")
    v6 = M + bytes.fromhex("20010db8000000000000000000000001") + (51413).to_bytes(2, "big")
    ip = bytes([203, 0, 113, 5, 0x1A, 0xE1])
    raw = b"d2:ip6:" + ip + b"1:rd2:id20:" + A + b"5:nodes26:" + v4 + b"6:nodes638:" + v6 + b"e1:t1:x1:y1:re"
    r = krpc.decode(raw)
    assert isinstance(r, krpc.Response)
    assert r.nodes == (NodeInfo(A, "192.0.2.7", 6881),)
    assert r.nodes6 == (NodeInfo(M, "2001:db8::1", 51413),)
    assert r.ip == ("203.0.113.5", 6881)  # BEP 42
    assert krpc.encode(r) == raw
    assert krpc.encode_nodes([NodeInfo(A, "192.0.2.7", 6881)]) == v4
    # a node with port 0 cannot be reached: skipped, not an error
    assert krpc.decode_nodes(A + bytes(6)) == ()


def test_want_is_read_and_unknown_families_ignored() -> None:
    raw = b"d1:ad2:id20:" + A + b"6:target20:" + M + b"4:wantl2:n42:n62:n9ee1:q9:find_node1:t2:aa1:y1:qe"
    q = krpc.decode(raw)
    assert isinstance(q, krpc.FindNode)
    assert q.want == (b"n4", b"n6")


def _query(args: bytes, method: bytes = b"get_peers") -> bytes:
    return b"d1:ad" + args + b"e1:q" + str(len(method)).encode() + b":" + method + b"1:t2:aa1:y1:qe"


@pytest.mark.parametrize(
    ("raw", "reason", "answered"),
    [
        (b"", "not_a_dict", False),
        (b"l1:ae", "not_a_dict", False),
        (b"d1:t2:aa1:y1:q", "bencode", False),
        (b"d" + b"1:x" * 2000 + b"e", "oversized", False),
        (b"d1:y1:qe", "bad_tid", False),
        (b"d1:t17:" + b"x" * 17 + b"1:y1:qe", "bad_tid", False),
        (b"d1:t2:aa1:y1:ze", "bad_type", False),
        (_query(b"2:id3:abc9:info_hash20:" + M), "bad_id", True),
        (_query(b"2:id20:" + A + b"9:info_hashi5e"), "bad_info_hash", True),
        (_query(b"2:id20:" + A, b"find_node"), "bad_target", True),
        (_query(b"2:id20:" + A, b"vote"), "unknown_method", True),
        (_query(b"2:id20:" + A + b"9:info_hash20:" + M + b"4:wantl" + b"2:n4" * 5 + b"e"), "bad_want", True),
        (
            _query(b"2:id20:" + A + b"9:info_hash20:" + M + b"4:porti0e5:token1:x", b"announce_peer"),
            "bad_port",
            True,
        ),
        (
            _query(b"2:id20:" + A + b"9:info_hash20:" + M + b"4:porti70000e5:token1:x", b"announce_peer"),
            "bad_port",
            True,
        ),
        (
            _query(b"2:id20:" + A + b"9:info_hash20:" + M + b"4:porti1e", b"announce_peer"),
            "bad_token_field",
            True,
        ),
        (b"d1:ai1e1:q4:ping1:t2:aa1:y1:qe", "bad_args", True),
        (b"d1:rd2:id20:" + A + b"5:nodes25:" + b"x" * 25 + b"e1:t2:aa1:y1:re", "nodes_length", False),
        (b"d1:rd2:id20:" + A + b"6:nodes626:" + b"x" * 26 + b"e1:t2:aa1:y1:re", "nodes6_length", False),
        (b"d1:rd2:id20:" + A + b"5:nodes858:" + b"x" * 858 + b"e1:t2:aa1:y1:re", "too_many_nodes", False),
        (b"d1:rd2:id20:" + A + b"6:valuesl5:abcdeee1:t2:aa1:y1:re", "bad_address", False),
        (b"d1:rd2:id20:" + A + b"6:valuesli1eee1:t2:aa1:y1:re", "bad_values", False),
        (b"d1:rd2:id20:" + A + b"5:token65:" + b"x" * 65 + b"e1:t2:aa1:y1:re", "bad_token_field", False),
        (b"d1:rle1:t2:aa1:y1:re", "bad_response", False),
        (b"d1:eli201ee1:t2:aa1:y1:ee", "bad_error", False),
        (b"d1:el3:abc3:defe1:t2:aa1:y1:ee", "bad_error", False),
    ],
)
def test_bad_input_raises_one_error_with_a_reason(raw: bytes, reason: str, answered: bool) -> None:
    with pytest.raises(KrpcDecodeError) as info:
        krpc.decode(raw)
    assert isinstance(info.value, RemoteProtocolError)
    assert info.value.reason == reason
    # only a query with a readable transaction id gets an error reply
    assert (info.value.is_query and info.value.tid == b"aa") == answered
    if reason == "unknown_method":
        assert info.value.code == krpc.ERROR_METHOD_UNKNOWN


def test_advisory_ip_field_that_is_bad_is_ignored() -> None:
    r = krpc.decode(b"d2:ip3:abc1:rd2:id20:" + A + b"e1:t2:aa1:y1:re")
    assert isinstance(r, krpc.Response)
    assert r.ip is None


def test_encoding_refuses_bad_values_of_our_own() -> None:
    with pytest.raises(ValueError, match="port out of range"):
        krpc.encode(krpc.AnnouncePeer(b"aa", A, M, 0, b"t"))
    with pytest.raises(ValueError, match="port out of range"):
        krpc.pack_address("192.0.2.1", 0)
