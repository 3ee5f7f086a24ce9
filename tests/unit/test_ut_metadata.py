"""ut_metadata (BEP 9): codec with the BEP's literal bytes, the assembler, the server."""

from __future__ import annotations

import hashlib

import pytest

from torrent.errors import MetainfoError, RemoteProtocolError
from torrent.proto import bencoding
from torrent.proto.ut_metadata import (
    METADATA_PIECE_SIZE,
    MetadataAssembler,
    MetadataData,
    MetadataReject,
    MetadataRequest,
    MetadataServer,
    decode,
    encode,
    metainfo_from_info,
)

# -- codec: the examples of BEP 9 -----------------------------------------------------------------


def test_request_bytes() -> None:
    raw = b"d8:msg_typei0e5:piecei0ee"
    assert encode(MetadataRequest(0)) == raw
    assert decode(raw) == MetadataRequest(0)


def test_data_bytes_with_trailing_piece() -> None:
    raw = b"d8:msg_typei1e5:piecei0e10:total_sizei34256eexxxxxxxx"
    assert decode(raw) == MetadataData(0, 34256, b"xxxxxxxx")
    assert encode(MetadataData(0, 34256, b"xxxxxxxx")) == raw


def test_reject_bytes() -> None:
    raw = b"d8:msg_typei2e5:piecei0ee"
    assert encode(MetadataReject(0)) == raw
    assert decode(raw) == MetadataReject(0)


def test_data_piece_may_start_with_bencode_like_bytes() -> None:
    piece = b"d4:name3:abce" + b"e" * 10
    raw = encode(MetadataData(1, 20000, piece))
    assert decode(raw) == MetadataData(1, 20000, piece)


def test_unknown_keys_are_ignored() -> None:
    raw = b"d3:fooli1ei2ee8:msg_typei2e5:piecei3ee"
    assert decode(raw) == MetadataReject(3)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"li1ee",
        b"d8:msg_typei0ee",  # no piece
        b"d5:piecei0ee",  # no msg_type
        b"d8:msg_typei7e5:piecei0ee",  # unknown type
        b"d8:msg_typei0e5:piecei-1ee",  # negative piece
        b"d8:msg_typei0e5:piecei0eeXX",  # bytes after a request
        b"d8:msg_typei1e5:piecei0ee",  # data without total_size
        b"d8:msg_typei1e5:piecei0e10:total_sizei0ee",
        b"d8:msg_typei0e5:piece",  # truncated
        b"d8:msg_type3:abc5:piecei0ee",  # msg_type not an int
        b"d99999999999:x",
        b"dxe",
    ],
)
def test_garbage_raises_remote_error(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(raw)


def test_oversized_data_piece_refused() -> None:
    raw = b"d8:msg_typei1e5:piecei0e10:total_sizei99999ee" + b"x" * (METADATA_PIECE_SIZE + 1)
    with pytest.raises(RemoteProtocolError):
        decode(raw)
    with pytest.raises(ValueError, match=r"metadata piece of 16385 bytes \(at most 16384\)"):
        encode(MetadataData(0, 99999, b"x" * (METADATA_PIECE_SIZE + 1)))


# -- server ---------------------------------------------------------------------------------------

INFO = bencoding.encode(
    {b"length": 5, b"name": b"hello.txt", b"piece length": 16384, b"pieces": hashlib.sha1(b"hello").digest()}
)


def test_server_answers_and_rejects() -> None:
    big = b"d" + b"0:" * 20000 + b"e"  # 40002 bytes: three pieces
    server = MetadataServer(big)
    assert server.handshake_fields() == {"metadata_size": 40002}
    assert server.answer(MetadataRequest(0)) == MetadataData(0, 40002, big[:16384])
    assert server.answer(MetadataRequest(2)) == MetadataData(2, 40002, big[32768:])
    assert server.answer(MetadataRequest(3)) == MetadataReject(3)
    assert server.answer(MetadataReject(0)) is None


# -- assembler ------------------------------------------------------------------------------------


def _big_info(n: int) -> bytes:
    body = b"x" * n
    return bencoding.encode({b"name": b"a", b"pad": body})


def _serve(asm: MetadataAssembler, peer: str, info: bytes, now: float = 0.0) -> int:
    """Ask ``peer`` for pieces until none is left; answer from ``info``; returns how many."""
    server = MetadataServer(info)
    count = 0
    while (piece := asm.next_request(peer, now)) is not None:
        reply = server.answer(MetadataRequest(piece))
        assert reply is not None
        asm.on_message(peer, reply, now)
        count += 1
    return count


def test_assembler_single_peer() -> None:
    info = _big_info(40000)
    asm = MetadataAssembler(hashlib.sha1(info).digest())
    assert asm.add_peer("a", len(info))
    assert asm.size == len(info)
    assert _serve(asm, "a", info) == 3
    assert asm.done
    assert asm.result == info
    assert asm.take_banned() == []


def test_assembler_spreads_requests_and_bounds_in_flight() -> None:
    info = _big_info(20 * METADATA_PIECE_SIZE)
    asm = MetadataAssembler(hashlib.sha1(info).digest(), max_outstanding=4)
    asm.add_peer("a", len(info))
    asm.add_peer("b", len(info))
    a = [asm.next_request("a", 0.0) for _ in range(5)]
    b = [asm.next_request("b", 0.0) for _ in range(5)]
    assert a == [0, 1, 2, 3, None]
    assert b == [4, 5, 6, 7, None]


def test_refuses_oversized_or_missing_size() -> None:
    asm = MetadataAssembler(bytes(20), max_size=1000)
    assert not asm.add_peer("a", 1001)
    assert not asm.add_peer("b", None)
    assert not asm.add_peer("c", 0)
    assert asm.size is None
    assert asm.next_request("a", 0.0) is None


def test_reject_backs_off_then_another_peer_gets_the_piece() -> None:
    info = _big_info(100)
    asm = MetadataAssembler(hashlib.sha1(info).digest(), reject_backoff_s=5.0)
    asm.add_peer("a", len(info))
    asm.add_peer("b", len(info))
    assert asm.next_request("a", 0.0) == 0
    asm.on_message("a", MetadataReject(0), 0.0)
    assert asm.next_request("a", 1.0) is None  # backing off
    assert _serve(asm, "b", info, 1.0) == 1
    assert asm.done


def test_timeout_hands_piece_to_another_peer_and_strikes_out() -> None:
    info = _big_info(100)
    asm = MetadataAssembler(hashlib.sha1(info).digest(), request_timeout_s=10.0, max_strikes=2)
    asm.add_peer("slow", len(info))
    assert asm.next_request("slow", 0.0) == 0
    asm.tick(5.0)
    assert asm.next_request("slow", 5.0) is None  # still outstanding
    asm.tick(10.0)
    assert asm.next_request("slow", 10.0) == 0  # one strike: asked again
    asm.tick(20.0)
    assert asm.usable_peers() == 0
    assert asm.next_request("slow", 20.0) is None
    asm.add_peer("good", len(info))
    assert _serve(asm, "good", info, 21.0) == 1
    assert asm.done


def test_wrong_total_size_or_length_is_a_remote_error() -> None:
    info = _big_info(40000)
    asm = MetadataAssembler(hashlib.sha1(info).digest())
    asm.add_peer("a", len(info))
    assert asm.next_request("a", 0.0) == 0
    with pytest.raises(RemoteProtocolError):
        asm.on_message("a", MetadataData(0, len(info) + 1, info[:16384]), 0.0)
    asm.remove_peer("a")  # the caller drops it
    asm.add_peer("b", len(info))
    assert asm.next_request("b", 0.0) == 0  # back in the pool
    with pytest.raises(RemoteProtocolError):
        asm.on_message("b", MetadataData(0, len(info), b"short"), 0.0)


def test_unsolicited_data_is_ignored() -> None:
    info = _big_info(100)
    asm = MetadataAssembler(hashlib.sha1(info).digest())
    asm.add_peer("a", len(info))
    asm.on_message("a", MetadataData(0, len(info), info), 0.0)
    assert not asm.done


def test_single_liar_is_banned_and_honest_peer_completes() -> None:
    info = _big_info(40000)
    bad = bytearray(info)
    bad[20000] ^= 0xFF
    asm = MetadataAssembler(hashlib.sha1(info).digest())
    asm.add_peer("liar", len(info))
    _serve(asm, "liar", bytes(bad))
    assert not asm.done
    assert asm.hash_failures == 1
    assert asm.take_banned() == ["liar"]
    assert asm.is_banned("liar")
    assert not asm.add_peer("liar", len(info))
    asm.add_peer("honest", len(info))
    _serve(asm, "honest", info)
    assert asm.result == info


def test_mixed_copy_fails_then_single_source_finds_the_liar() -> None:
    info = _big_info(40000)  # three pieces
    bad = bytearray(info)
    bad[16384 + 5] ^= 0xFF  # piece 1 corrupted
    asm = MetadataAssembler(hashlib.sha1(info).digest(), max_outstanding=1)
    asm.add_peer("honest", len(info))
    asm.add_peer("liar", len(info))
    good_server, bad_server = MetadataServer(info), MetadataServer(bytes(bad))
    # piece 0 from honest, piece 1 from the liar, piece 2 from honest
    p0 = asm.next_request("honest", 0.0)
    p1 = asm.next_request("liar", 0.0)
    assert (p0, p1) == (0, 1)
    asm.on_message("honest", good_server.answer(MetadataRequest(0)), 0.0)  # type: ignore[arg-type]
    asm.on_message("liar", bad_server.answer(MetadataRequest(1)), 0.0)  # type: ignore[arg-type]
    assert asm.next_request("honest", 0.0) == 2
    asm.on_message("honest", good_server.answer(MetadataRequest(2)), 0.0)  # type: ignore[arg-type]
    assert asm.hash_failures == 1
    assert asm.take_banned() == []  # who lied is not known yet
    # Now one peer delivers a whole copy; the other gets nothing to do.
    first = asm.next_request("honest", 1.0)
    assert first == 0
    assert asm.next_request("liar", 1.0) is None
    asm.on_message("honest", good_server.answer(MetadataRequest(0)), 1.0)  # type: ignore[arg-type]
    _serve(asm, "honest", info, 1.0)
    assert asm.result == info
    assert asm.take_banned() == ["liar"]


def test_single_source_leaving_restarts_with_another() -> None:
    info = _big_info(40000)
    bad = bytearray(info)
    bad[5] ^= 1
    asm = MetadataAssembler(hashlib.sha1(info).digest(), max_outstanding=1)
    for k in ("x", "y", "z"):
        asm.add_peer(k, len(info))
    servers = {"x": MetadataServer(bytes(bad)), "y": MetadataServer(info), "z": MetadataServer(info)}
    for k in ("x", "y", "z"):
        p = asm.next_request(k, 0.0)
        asm.on_message(k, servers[k].answer(MetadataRequest(p)), 0.0)  # type: ignore[arg-type,arg-type]
    assert asm.hash_failures == 1
    assert asm.next_request("y", 1.0) == 0  # y is now the single source
    asm.remove_peer("y")
    _serve(asm, "z", info, 2.0)
    assert asm.result == info
    assert asm.take_banned() == ["x"]


def test_majority_size_wins() -> None:
    info = _big_info(100)
    asm = MetadataAssembler(hashlib.sha1(info).digest())
    asm.add_peer("odd", 999)
    asm.add_peer("a", len(info))
    asm.add_peer("b", len(info))
    assert asm.size == len(info)
    assert asm.next_request("odd", 0.0) is None


def test_metainfo_from_info_keeps_hash_and_trackers() -> None:
    meta = metainfo_from_info(INFO, ["http://127.0.0.1:1/announce", "udp://127.0.0.1:2"])
    assert meta.info_hash == hashlib.sha1(INFO).digest()
    assert meta.info_bytes == INFO
    assert meta.announce_list == (("http://127.0.0.1:1/announce",), ("udp://127.0.0.1:2",))
    assert meta.info.name == "hello.txt"
    assert metainfo_from_info(INFO).announce_list == ()
    with pytest.raises(MetainfoError):
        metainfo_from_info(b"d4:name1:xe")


def test_v2_metadata_is_checked_with_sha256() -> None:
    import hashlib as _hashlib

    from torrent.proto import ut_metadata as _um

    info = b"d4:name1:xe" * 10
    v2 = _hashlib.sha256(info).digest()
    for expected_v2, done in ((v2, True), (_hashlib.sha256(b"other").digest(), False)):
        asm = _um.MetadataAssembler(expected_v2[:20], info_hash_v2=expected_v2)
        asm.add_peer("p", len(info))
        assert asm.next_request("p", 0.0) == 0
        asm.on_message("p", _um.MetadataData(piece=0, total_size=len(info), data=info), 0.0)
        assert asm.done is done


@pytest.mark.parametrize(
    ("btih_matches", "btmh_matches"), [(True, True), (True, False), (False, True), (False, False)]
)
def test_a_hybrid_link_checks_the_metadata_against_both_hashes(
    btih_matches: bool, btmh_matches: bool
) -> None:
    import hashlib as _hashlib

    from torrent.proto import ut_metadata as _um

    info = b"d4:name1:xe" * 10
    btih = _hashlib.sha1(info if btih_matches else b"another torrent").digest()
    btmh = _hashlib.sha256(info if btmh_matches else b"another torrent").digest()
    asm = _um.MetadataAssembler(btih, info_hash_v2=btmh)
    asm.add_peer("p", len(info))
    assert asm.next_request("p", 0.0) == 0
    asm.on_message("p", _um.MetadataData(piece=0, total_size=len(info), data=info), 0.0)
    assert asm.done is (btih_matches and btmh_matches)
    if btih_matches != btmh_matches:
        # The link names two torrents: the honest sender is kept, and nothing more is asked.
        assert asm.conflict is not None
        assert ("matches the link's btih" in asm.conflict) is btih_matches
        assert not asm.is_banned("p")
        assert asm.next_request("p", 1.0) is None
    else:
        assert asm.conflict is None
        assert asm.is_banned("p") is not btih_matches
