"""Hypothesis: the tracker codec round-trips, and random bytes raise only our errors."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from torrent.errors import RemoteProtocolError, TrackerError
from torrent.proto import tracker_codec as tc
from torrent.proto import tracker_codec_udp as tcu
from torrent.types import InfoHash, PeerId

b20 = st.binary(min_size=20, max_size=20)
u63 = st.integers(0, 2**63 - 1)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None).map(str)


@st.composite
def announce_requests(draw: st.DrawFn, *, udp: bool = False) -> tc.AnnounceRequest:
    return tc.AnnounceRequest(
        info_hash=InfoHash(draw(b20)),
        peer_id=PeerId(draw(b20)),
        port=draw(st.integers(0 if udp else 1, 65535)),
        uploaded=draw(u63),
        downloaded=draw(u63),
        left=draw(u63),
        event=draw(st.sampled_from(tc.AnnounceEvent)),
        compact=True if udp else draw(st.booleans()),
        no_peer_id=False if udp else draw(st.booleans()),
        # BEP 15's ip field uses 0 for "the sender's address"
        ip=draw(st.none() | ipv4.filter(lambda a: a != "0.0.0.0")),
        ipv6=None if udp else draw(st.none() | ipv6),
        numwant=draw(st.none() | st.integers(0, 2**31 - 1)),
        key=draw(st.none() | st.integers(0, 2**32 - 1)) if not udp else draw(st.integers(0, 2**32 - 1)),
        tracker_id=None if udp else draw(st.none() | st.binary(min_size=1, max_size=30)),
    )


@given(announce_requests())
def test_http_query_round_trip(req: tc.AnnounceRequest) -> None:
    assert tc.parse_announce_query(tc.build_announce_query(req)) == req


@given(announce_requests(udp=True), st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1))
def test_udp_announce_round_trip(req: tc.AnnounceRequest, conn: int, txid: int) -> None:
    packet = tcu.UdpAnnounceRequest(conn, txid, req)
    raw = tcu.encode_udp_request(packet)
    assert tcu.decode_udp_request(raw) == packet
    assert tcu.encode_udp_request(tcu.decode_udp_request(raw)) == raw  # type: ignore[arg-type]


peers4 = st.builds(tc.PeerAddress, ipv4, st.integers(0, 65535))
peers6 = st.builds(tc.PeerAddress, ipv6, st.integers(0, 65535))


@given(
    st.integers(0, 2**31),
    st.lists(peers4 | peers6, max_size=20),
    st.none() | st.integers(0, 2**31),
    st.integers(0, 2**31),
    st.integers(0, 2**31),
    st.integers(0, 2**31),
    st.none() | ipv4 | ipv6,
    st.none() | st.binary(max_size=10),
)
def test_http_response_round_trip(
    interval: int,
    peers: list[tc.PeerAddress],
    mi: int | None,
    c: int,
    i: int,
    d: int,
    ext: str | None,
    tid: bytes | None,
) -> None:
    resp = tc.AnnounceResponse(
        interval=interval,
        peers=tuple(peers),
        min_interval=mi,
        complete=c,
        incomplete=i,
        downloaded=d,
        external_ip=ext,
        tracker_id=tid,
    )
    raw = tc.encode_announce_response(resp)
    back = tc.decode_announce_response(raw)
    # compact output groups IPv4 before IPv6
    assert back.peers == tuple(p for p in peers if not p.is_ipv6) + tuple(p for p in peers if p.is_ipv6)
    assert back == tc.AnnounceResponse(
        interval=interval,
        peers=back.peers,
        min_interval=mi,
        complete=c,
        incomplete=i,
        downloaded=d,
        external_ip=ext,
        tracker_id=tid,
    )
    v4, v6 = tc.encode_compact_peers(peers)
    fast = tc.encode_compact_announce(
        interval=interval,
        min_interval=mi,
        complete=c,
        incomplete=i,
        downloaded=d,
        peers=v4,
        peers6=v6,
        external_ip=None if ext is None else tc.pack_ip(ext),
        tracker_id=tid,
    )
    assert fast == raw


@given(st.lists(peers4, max_size=10), st.booleans(), st.integers(0, 2**32 - 1))
def test_udp_response_round_trip(peers: list[tc.PeerAddress], six: bool, txid: int) -> None:
    if six:
        peers = [tc.PeerAddress("2001:db8::" + p.ip.replace(".", ":"), p.port) for p in peers]
    a = tc.AnnounceResponse(interval=60, peers=tuple(peers), complete=1, incomplete=2)
    raw = tcu.encode_udp_response(tcu.UdpAnnounceResponse(txid, a), ipv6=six)
    back = tcu.decode_udp_response(raw, ipv6=six)
    assert isinstance(back, tcu.UdpAnnounceResponse)
    assert [(p.ip, p.port) for p in back.announce.peers] == [
        (str(ipaddress.ip_address(p.ip)), p.port) for p in peers
    ]


@given(st.binary(max_size=300))
def test_random_query_bytes_raise_only_our_errors(raw: bytes) -> None:
    for parse in (tc.parse_announce_query, tc.parse_scrape_query, tc.parse_query):
        try:
            parse(raw)
        except RemoteProtocolError:
            pass


@given(st.text(max_size=200))
def test_random_query_text_raises_only_our_errors(raw: str) -> None:
    try:
        tc.parse_announce_query(raw)
    except RemoteProtocolError:
        pass


@given(st.binary(max_size=200))
def test_random_response_bytes_raise_only_our_errors(raw: bytes) -> None:
    for decode in (tc.decode_announce_response, tc.decode_scrape_response):
        try:
            decode(raw)
        except (RemoteProtocolError, TrackerError):
            pass


@given(st.binary(max_size=200), st.booleans())
def test_random_udp_bytes_raise_only_our_errors(raw: bytes, six: bool) -> None:
    try:
        tcu.decode_udp_request(raw)
    except RemoteProtocolError:
        pass
    try:
        tcu.decode_udp_response(raw, ipv6=six)
    except RemoteProtocolError:
        pass


@given(st.from_regex(rb"\Ad(8:intervali[0-9]{1,5}e)?(5:peers(0:|6:.{6}|l(d2:ip3:1\.24:porti[0-9]e)?e))?e\Z"))
def test_structured_responses_raise_only_our_errors(raw: bytes) -> None:
    try:
        tc.decode_announce_response(raw)
    except (RemoteProtocolError, TrackerError):
        pass
