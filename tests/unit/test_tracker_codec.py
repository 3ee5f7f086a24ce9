"""Literal-byte tests of the announce/scrape codec (BEP 3, 7, 15, 23, 24, 48)."""

from __future__ import annotations

import struct

import pytest

from torrent.errors import LocalProtocolError, RemoteProtocolError, TrackerError
from torrent.proto import tracker_codec as tc
from torrent.proto import tracker_codec_udp as tcu
from torrent.types import InfoHash

IH = bytes(range(20))  # includes bytes that must be percent-encoded
PID = b"-PT0001-" + b"\x00\xff ab+&=%?/1"


def _req(**kw: object) -> tc.AnnounceRequest:
    base: dict[str, object] = {"info_hash": IH, "peer_id": PID, "port": 6881, "left": 100}
    base.update(kw)
    return tc.AnnounceRequest(**base)  # type: ignore[arg-type]


def test_query_percent_encodes_every_byte_but_unreserved() -> None:
    q = tc.build_announce_query(_req(event=tc.AnnounceEvent.STARTED, numwant=30, key=0xDEADBEEF))
    assert q.startswith("info_hash=%00%01%02%03%04%05%06%07%08%09%0A%0B%0C%0D%0E%0F%10%11%12%13&")
    assert "peer_id=-PT0001-%00%FF%20ab%2B%26%3D%25%3F%2F1&" in q
    assert "&event=started" in q
    assert "&numwant=30" in q
    assert "&key=DEADBEEF" in q
    assert "&compact=1" in q


def test_parse_raw_query_keeps_binary_values() -> None:
    q = tc.build_announce_query(_req(event=tc.AnnounceEvent.COMPLETED, ip="10.0.0.1", ipv6="::1", key=7))
    req = tc.parse_announce_query(q.encode())
    assert req == _req(event=tc.AnnounceEvent.COMPLETED, ip="10.0.0.1", ipv6="::1", key=7)


def test_parse_query_from_libtorrent_style_bytes() -> None:
    raw = (
        b"info_hash=%12%34Vx%9a%bc%de%f0%12%34Vx%9a%bc%de%f0%12%34Vx&peer_id=-lt2010-abcdefghijkl"
        b"&port=6881&uploaded=0&downloaded=0&left=1024&corrupt=0&key=1A2B3C4D&event=started"
        b"&numwant=200&compact=1&no_peer_id=1"
    )
    req = tc.parse_announce_query(raw)
    assert req.info_hash == bytes.fromhex("12345678 9abcdef0 12345678 9abcdef0 12345678".replace(" ", ""))
    assert req.peer_id == b"-lt2010-abcdefghijkl"
    assert (req.port, req.left, req.numwant, req.key) == (6881, 1024, 200, 0x1A2B3C4D)
    assert req.event is tc.AnnounceEvent.STARTED
    assert req.compact
    assert req.no_peer_id


def test_plus_is_a_space_and_last_value_wins() -> None:
    pairs = tc.parse_query("a=1+2&a=3&&b&c=%41")
    assert pairs == [(b"a", b"1 2"), (b"a", b"3"), (b"b", b""), (b"c", b"A")]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("peer_id=x", "missing info_hash"),
        ("info_hash=abc", "info_hash is not 20 bytes"),
        (f"info_hash={'a' * 20}", "missing peer_id"),
        (f"info_hash={'a' * 20}&peer_id=abc", "peer_id is not 20 bytes"),
        (f"info_hash={'a' * 20}&peer_id={'b' * 20}&left=0", "missing port"),
        (f"info_hash={'a' * 20}&peer_id={'b' * 20}&port=0&left=0", "bad port"),
        (f"info_hash={'a' * 20}&peer_id={'b' * 20}&port=65536&left=0", "bad port"),
        (f"info_hash={'a' * 20}&peer_id={'b' * 20}&port=-1&left=0", "bad port"),
        (f"info_hash={'a' * 20}&peer_id={'b' * 20}&port=1", "missing left"),
        (f"info_hash={'a' * 20}&peer_id={'b' * 20}&port=1&left=x", "bad left"),
        (f"info_hash={'a' * 20}&peer_id={'b' * 20}&port=1&left=0&uploaded=-5", "bad uploaded"),
        (f"info_hash={'a' * 20}&peer_id={'b' * 20}&port=1&left=0&downloaded=1e3", "bad downloaded"),
        (f"info_hash={'a' * 20}&peer_id={'b' * 20}&port=1&left=0&event=bogus", "bad event"),
        (f"info_hash={'a' * 20}&peer_id={'b' * 20}&port=1&left=0&numwant=lots", "bad numwant"),
        (f"info_hash={'a' * 20}&peer_id={'b' * 20}&port=1&left=0&ip=%FF", "bad ip"),
        ("x=" + "a" * 9000, "longer than"),
    ],
)
def test_parse_errors_name_the_problem(query: str, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        tc.parse_announce_query(query)


def test_optional_parameters_and_defaults() -> None:
    q = f"info_hash={'a' * 20}&peer_id={'b' * 20}&port=1&left=0&compact=0&numwant=-1&event=&key=not-hex!!"
    req = tc.parse_announce_query(q)
    assert req.uploaded == req.downloaded == 0
    assert req.is_seed
    assert not req.compact
    assert req.numwant is None
    assert req.event is tc.AnnounceEvent.NONE
    assert req.key is not None
    assert req.key <= 0xFFFFFFFF
    assert tc.parse_announce_query(q.replace("event=", "event=paused")).event is tc.AnnounceEvent.NONE


def test_build_rejects_bad_values() -> None:
    with pytest.raises(LocalProtocolError):
        tc.build_announce_query(_req(info_hash=b"short"))
    with pytest.raises(LocalProtocolError):
        tc.build_announce_query(_req(port=70000))


def test_announce_and_scrape_urls() -> None:
    assert tc.announce_url("http://t/announce", _req()).startswith("http://t/announce?info_hash=")
    assert tc.announce_url("http://t/announce?pk=1", _req()).startswith("http://t/announce?pk=1&info_hash=")
    assert tc.scrape_url("http://t:80/x/announce.php?pk=1") == "http://t:80/x/scrape.php?pk=1"
    assert tc.scrape_url("http://t/a") is None


def test_scrape_query() -> None:
    q = tc.build_scrape_query([IH, b"b" * 20, IH])
    assert tc.parse_scrape_query(q) == (IH, b"b" * 20)
    assert tc.parse_scrape_query("") == ()
    with pytest.raises(RemoteProtocolError, match="not 20 bytes"):
        tc.parse_scrape_query("info_hash=abc")
    many = "&".join(f"info_hash={i:020d}" for i in range(75))
    with pytest.raises(RemoteProtocolError, match="too many"):
        tc.parse_scrape_query(many)


def test_compact_response_exact_bytes() -> None:
    raw = tc.encode_compact_announce(
        interval=1800,
        min_interval=900,
        complete=2,
        incomplete=3,
        downloaded=4,
        peers=b"\x7f\x00\x00\x01\x1a\xe1",
        external_ip=b"\x7f\x00\x00\x01",
    )
    assert raw == (
        b"d8:completei2e10:downloadedi4e11:external ip4:\x7f\x00\x00\x01"
        b"10:incompletei3e8:intervali1800e12:min intervali900e5:peers6:\x7f\x00\x00\x01\x1a\xe1e"
    )
    resp = tc.decode_announce_response(raw)
    assert resp.peers == (tc.PeerAddress("127.0.0.1", 6881),)
    assert (resp.interval, resp.min_interval, resp.complete, resp.incomplete, resp.downloaded) == (
        1800,
        900,
        2,
        3,
        4,
    )
    assert resp.external_ip == "127.0.0.1"


def test_general_encoder_matches_fast_path() -> None:
    resp = tc.AnnounceResponse(
        interval=60,
        min_interval=30,
        complete=1,
        incomplete=0,
        downloaded=9,
        peers=(tc.PeerAddress("1.2.3.4", 80), tc.PeerAddress("::1", 443)),
        tracker_id=b"t1",
    )
    fast = tc.encode_compact_announce(
        interval=60,
        min_interval=30,
        complete=1,
        incomplete=0,
        downloaded=9,
        peers=b"\x01\x02\x03\x04\x00\x50",
        peers6=bytes(15) + b"\x01\x01\xbb",
        tracker_id=b"t1",
    )
    assert tc.encode_announce_response(resp) == fast
    assert tc.decode_announce_response(fast) == resp


def test_dict_peer_list() -> None:
    resp = tc.AnnounceResponse(interval=5, peers=(tc.PeerAddress("10.0.0.2", 1, b"x" * 20),))
    raw = tc.encode_announce_response(resp, compact=False)
    assert b"5:peersld2:ip8:10.0.0.27:peer id20:" in raw
    assert tc.decode_announce_response(raw) == resp
    raw = tc.encode_announce_response(resp, compact=False, no_peer_id=True)
    assert tc.decode_announce_response(raw).peers == (tc.PeerAddress("10.0.0.2", 1),)


def test_failure_and_warning() -> None:
    with pytest.raises(TrackerError) as info:
        tc.decode_announce_response(tc.encode_failure("torrent not allowed"))
    assert info.value.reason == "torrent not allowed"
    assert tc.encode_failure("x") == b"d14:failure reason1:xe"
    resp = tc.decode_announce_response(b"d8:intervali1e5:peers0:15:warning message3:hmme")
    assert resp.warning_message == "hmm"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "not bencoded"),
        (b"le", "not a bencoded dictionary"),
        (b"d5:peers0:e", "no interval"),
        (b"d8:intervali1e5:peers5:abcdee", "not a multiple of 6"),
        (b"d8:intervali1e6:peers65:abcdee", "not a multiple of 18"),
        (b"d8:intervali1e5:peersi3ee", "neither"),
        (b"d8:intervali-1ee", "non-negative"),
        (b"d8:intervali1e11:external ip3:abce", "external ip"),
        (b"d8:intervali1e5:peersld4:porti1eeee", "no ip"),
        (b"d8:intervali1e5:peersld2:ip1:a4:porti99999eeee", "bad port"),
    ],
)
def test_malformed_responses(raw: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        tc.decode_announce_response(raw)


def test_scrape_response_round_trip() -> None:
    resp = tc.ScrapeResponse({InfoHash(IH): tc.ScrapeStats(complete=1, downloaded=2, incomplete=3)})
    raw = tc.encode_scrape_response(resp)
    assert raw == b"d5:filesd20:" + IH + b"d8:completei1e10:downloadedi2e10:incompletei3eeee"
    assert tc.decode_scrape_response(raw) == resp
    with pytest.raises(RemoteProtocolError):
        tc.decode_scrape_response(b"d5:filesd3:abcdeee")


# --------------------------------------------------------------------------- UDP


def test_udp_connect_exact_bytes() -> None:
    raw = tcu.encode_udp_request(tcu.UdpConnectRequest(0x01020304))
    assert raw == bytes.fromhex("00000417271019800000000001020304")
    assert tcu.decode_udp_request(raw) == tcu.UdpConnectRequest(0x01020304)
    resp = tcu.encode_udp_response(tcu.UdpConnectResponse(5, 0x1122334455667788))
    assert resp == bytes.fromhex("00000000000000051122334455667788")
    assert tcu.decode_udp_response(resp) == tcu.UdpConnectResponse(5, 0x1122334455667788)


def test_udp_connect_needs_magic() -> None:
    with pytest.raises(RemoteProtocolError, match="protocol id"):
        tcu.decode_udp_request(bytes(16))


def test_udp_announce_request_layout() -> None:
    req = _req(event=tc.AnnounceEvent.STOPPED, uploaded=5, downloaded=6, ip="1.2.3.4", key=9, numwant=None)
    raw = tcu.encode_udp_request(tcu.UdpAnnounceRequest(77, 88, req))
    assert len(raw) == 98
    assert raw[:16] == struct.pack(">QII", 77, 1, 88)
    assert raw[16:36] == IH
    assert raw[36:56] == PID
    assert raw[56:80] == struct.pack(">QQQ", 6, 100, 5)
    assert raw[80:] == struct.pack(">IIIiH", 3, 0x01020304, 9, -1, 6881)
    back = tcu.decode_udp_request(raw + b"\x02\x05/path")  # BEP 41 options are ignored
    assert back == tcu.UdpAnnounceRequest(
        77,
        88,
        _req(event=tc.AnnounceEvent.STOPPED, uploaded=5, downloaded=6, ip="1.2.3.4", key=9, numwant=None),
    )


def test_udp_announce_response_v4_and_v6() -> None:
    peers4 = (tc.PeerAddress("10.1.2.3", 6881),)
    peers6 = (tc.PeerAddress("2001:db8::1", 51413),)
    a4 = tc.AnnounceResponse(interval=1800, peers=peers4, complete=2, incomplete=7)
    raw4 = tcu.encode_udp_response(tcu.UdpAnnounceResponse(3, a4))
    assert raw4 == struct.pack(">IIIII", 1, 3, 1800, 7, 2) + bytes([10, 1, 2, 3, 0x1A, 0xE1])
    assert tcu.decode_udp_response(raw4) == tcu.UdpAnnounceResponse(3, a4)
    a6 = tc.AnnounceResponse(interval=1800, peers=peers6, complete=0, incomplete=1)
    raw6 = tcu.encode_udp_response(tcu.UdpAnnounceResponse(3, a6), ipv6=True)
    assert len(raw6) == 20 + 18
    assert tcu.decode_udp_response(raw6, ipv6=True) == tcu.UdpAnnounceResponse(3, a6)
    with pytest.raises(RemoteProtocolError):
        tcu.decode_udp_response(raw6 + b"\x00")


def test_udp_scrape() -> None:
    hashes = tuple(bytes([i]) * 20 for i in range(74))
    raw = tcu.encode_udp_request(tcu.UdpScrapeRequest(1, 2, hashes))  # type: ignore[arg-type]
    assert len(raw) == 16 + 74 * 20
    assert tcu.decode_udp_request(raw) == tcu.UdpScrapeRequest(1, 2, hashes)  # type: ignore[arg-type]
    with pytest.raises(RemoteProtocolError, match="more than 74"):
        tcu.decode_udp_request(raw + IH)
    with pytest.raises(LocalProtocolError):
        tcu.encode_udp_request(tcu.UdpScrapeRequest(1, 2, (*hashes, IH)))  # type: ignore[arg-type]
    with pytest.raises(RemoteProtocolError, match="20-byte"):
        tcu.decode_udp_request(raw[:-1])
    stats = (tc.ScrapeStats(1, 2, 3), tc.ScrapeStats(4, 5, 6))
    out = tcu.encode_udp_response(tcu.UdpScrapeResponse(9, stats))
    assert out == struct.pack(">II", 2, 9) + struct.pack(">IIIIII", 1, 2, 3, 4, 5, 6)
    assert tcu.decode_udp_response(out) == tcu.UdpScrapeResponse(9, stats)


def test_udp_error_and_garbage() -> None:
    raw = tcu.encode_udp_response(tcu.UdpError(4, "bad connection id"))
    assert raw == struct.pack(">II", 3, 4) + b"bad connection id"
    assert tcu.decode_udp_response(raw) == tcu.UdpError(4, "bad connection id")
    for bad in (b"", b"\x00" * 15, struct.pack(">QII", 1, 9, 0), struct.pack(">QII", 1, 1, 0) + b"x"):
        with pytest.raises(RemoteProtocolError):
            tcu.decode_udp_request(bad)
    for bad in (b"", b"\x00" * 7, struct.pack(">II", 0, 0), struct.pack(">II", 7, 0)):
        with pytest.raises(RemoteProtocolError):
            tcu.decode_udp_response(bad)
