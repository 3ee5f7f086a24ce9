"""The BEP 15 UDP tracker over a real loopback socket, IPv4 and IPv6."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.ipv6 import needs_ipv6
from torrent.proto import tracker_codec as tc
from torrent.proto import tracker_codec_udp as tcu
from torrent.types import InfoHash
from tracker.server import TrackerServer
from tracker.settings import TrackerSettings
from tracker.udp import CONNECTION_ID_WINDOW_S, ConnectionIds

from .tracker_redis_fixture import RedisServer, redis_server  # noqa: F401

IH = InfoHash(bytes(range(20)))


def pid(n: int) -> bytes:
    return b"-XX0001-" + n.to_bytes(12, "big")


class Client:
    def __init__(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind((host, 0))
        self.addr = (host, port)
        self.ipv6 = family == socket.AF_INET6

    async def send_only(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendto(self.sock, data, self.addr)

    async def raw(self, data: bytes) -> bytes:
        """Send ``data`` and return the next datagram that arrives."""
        await self.send_only(data)
        async with asyncio.timeout(1.0):
            reply, _ = await asyncio.get_running_loop().sock_recvfrom(self.sock, 65536)
        return reply

    async def send(self, packet: tcu.UdpRequest) -> tcu.UdpResponse:
        reply = await self.raw(tcu.encode_udp_request(packet))
        return tcu.decode_udp_response(reply, ipv6=self.ipv6)

    async def connect(self, txid: int = 1) -> int:
        resp = await self.send(tcu.UdpConnectRequest(txid))
        assert isinstance(resp, tcu.UdpConnectResponse)
        assert resp.transaction_id == txid
        return resp.connection_id

    async def announce(self, n: int, **kw: object) -> tcu.UdpResponse:
        conn = await self.connect()
        fields: dict[str, object] = {
            "info_hash": IH,
            "peer_id": pid(n),
            "port": 6000 + n,
            "left": 5,
            "key": n,
        }
        fields.update(kw)
        return await self.send(tcu.UdpAnnounceRequest(conn, 77, tc.AnnounceRequest(**fields)))  # type: ignore[arg-type]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[TrackerServer]:
    allow = tmp_path / "allow"
    allow.write_text(IH.hex() + "\n" + (b"\x01" * 20).hex() + "\n")
    settings = TrackerSettings(host="127.0.0.1", port=0, udp_port=0, interval_s=900, allow_file=allow)
    async with asyncio.timeout(20), TrackerServer(settings) as srv:
        yield srv


@pytest.fixture
async def client(server: TrackerServer) -> AsyncIterator[Client]:
    assert server.udp_port
    c = Client("127.0.0.1", server.udp_port)
    yield c
    c.close()


async def test_connect_announce_scrape(server: TrackerServer, client: Client) -> None:
    r1 = await client.announce(1, event=tc.AnnounceEvent.STARTED)
    assert r1 == tcu.UdpAnnounceResponse(
        77, tc.AnnounceResponse(interval=900, peers=(), complete=0, incomplete=1)
    )
    r2 = await client.announce(2, left=0, event=tc.AnnounceEvent.COMPLETED, numwant=10)
    assert isinstance(r2, tcu.UdpAnnounceResponse)
    assert r2.announce.peers == (tc.PeerAddress("127.0.0.1", 6001),)
    assert (r2.announce.complete, r2.announce.incomplete) == (1, 1)
    conn = await client.connect()
    resp = await client.send(
        tcu.UdpScrapeRequest(conn, 5, (IH, InfoHash(b"\x01" * 20), InfoHash(b"\x02" * 20)))
    )
    assert resp == tcu.UdpScrapeResponse(
        5, (tc.ScrapeStats(1, 1, 1), tc.ScrapeStats(0, 0, 0), tc.ScrapeStats(0, 0, 0))
    )
    r3 = await client.announce(1, event=tc.AnnounceEvent.STOPPED)
    assert isinstance(r3, tcu.UdpAnnounceResponse)
    assert r3.announce.incomplete == 0
    assert r3.announce.peers == ()
    assert server.service.counters.udp_announces == 3
    assert server.service.counters.udp_scrapes == 1


async def test_numwant_zero_and_default(server: TrackerServer, client: Client) -> None:
    for n in range(5):
        await client.announce(n)
    r = await client.announce(9, numwant=0)
    assert isinstance(r, tcu.UdpAnnounceResponse)
    assert r.announce.peers == ()
    r = await client.announce(9, numwant=None)
    assert isinstance(r, tcu.UdpAnnounceResponse)
    assert len(r.announce.peers) == 5


async def test_bad_connection_id_gets_an_error(server: TrackerServer, client: Client) -> None:
    req = tc.AnnounceRequest(info_hash=IH, peer_id=pid(1), port=1)  # type: ignore[arg-type]
    resp = await client.send(tcu.UdpAnnounceRequest(12345, 9, req))
    assert resp == tcu.UdpError(9, "bad or expired connection id")
    assert server.service.counters.udp_bad_connection_id == 1


async def test_not_allowed(server: TrackerServer, client: Client) -> None:
    resp = await client.announce(1, info_hash=b"\x09" * 20)
    assert resp == tcu.UdpError(77, "torrent not allowed")


async def test_malformed_packets_are_dropped_or_refused_and_counted(
    server: TrackerServer, client: Client
) -> None:
    c = server.service.counters
    await client.send_only(b"")
    await client.send_only(b"\x00" * 15)
    await client.send_only(bytes(16))  # connect without the magic
    # The server reads one socket in order: once the connect is answered, the three
    # packets before it were handled, and had any been answered, that answer would
    # have arrived first (connect() checks the reply is its own).
    conn = await client.connect()
    assert (c.udp_dropped_short, c.udp_dropped_malformed) == (2, 1)
    reply = await client.raw(struct.pack(">QII", 0, 7, 3))
    assert reply == struct.pack(">II", 3, 3) + b"unknown action"
    reply = await client.raw(struct.pack(">QII", conn, 1, 4) + b"short")
    assert reply.startswith(struct.pack(">II", 3, 4))
    assert b"shorter than 98" in reply
    reply = await client.raw(struct.pack(">QII", conn, 2, 5) + IH + b"x")
    assert b"20-byte hashes" in reply
    reply = await client.raw(struct.pack(">QII", conn, 2, 6) + IH * 75)
    assert b"more than 74" in reply
    announce = tcu.encode_udp_request(
        tcu.UdpAnnounceRequest(conn, 8, tc.AnnounceRequest(info_hash=IH, peer_id=pid(1), port=1))  # type: ignore[arg-type]
    )
    bad_event = announce[:80] + struct.pack(">I", 9) + announce[84:]
    reply = await client.raw(bad_event)
    assert b"bad event" in reply
    assert c.udp_dropped_malformed == 6
    # and it still serves
    assert isinstance(await client.announce(1), tcu.UdpAnnounceResponse)


async def test_scrape_of_74_hashes(server: TrackerServer, client: Client) -> None:
    conn = await client.connect()
    hashes = tuple(bytes([i]) * 20 for i in range(74))
    resp = await client.send(tcu.UdpScrapeRequest(conn, 1, hashes))  # type: ignore[arg-type]
    assert isinstance(resp, tcu.UdpScrapeResponse)
    assert len(resp.stats) == 74


def test_connection_ids_are_stateless_keyed_and_expire() -> None:
    now = [1_000_000.0]
    ids = ConnectionIds(b"k" * 32, clock=lambda: now[0])
    cid = ids.issue("127.0.0.1")
    assert ids.check(cid, "127.0.0.1")
    assert not ids.check(cid, "127.0.0.2")
    assert not ids.check(cid ^ 1, "127.0.0.1")
    assert not ConnectionIds(b"j" * 32, clock=lambda: now[0]).check(cid, "127.0.0.1")
    assert ConnectionIds(b"k" * 32, clock=lambda: now[0]).check(cid, "127.0.0.1")  # shared secret
    now[0] += CONNECTION_ID_WINDOW_S  # always valid for 2 minutes
    assert ids.check(cid, "127.0.0.1")
    now[0] += CONNECTION_ID_WINDOW_S
    assert not ids.check(cid, "127.0.0.1")


@needs_ipv6
async def test_ipv6_announce_gets_18_byte_peers() -> None:
    settings = TrackerSettings(host="127.0.0.1,::1", port=0, udp_port=0)
    async with asyncio.timeout(10), TrackerServer(settings) as srv:
        assert srv.udp_port
        c6, c4 = Client("::1", srv.udp_port), Client("127.0.0.1", srv.udp_port)
        try:
            await c6.announce(1)
            await c6.announce(2)
            await c4.announce(3)
            r = await c6.announce(4)
            assert isinstance(r, tcu.UdpAnnounceResponse)
            assert sorted(r.announce.peers, key=lambda p: p.port) == [
                tc.PeerAddress("::1", 6001),
                tc.PeerAddress("::1", 6002),
            ]
            assert (r.announce.incomplete, r.announce.complete) == (4, 0)
            r = await c4.announce(5)
            assert isinstance(r, tcu.UdpAnnounceResponse)
            assert r.announce.peers == (tc.PeerAddress("127.0.0.1", 6003),)
        finally:
            c6.close()
            c4.close()


async def test_udp_over_the_redis_store_and_redis_down(redis_server: RedisServer) -> None:  # noqa: F811
    settings = TrackerSettings(
        host="127.0.0.1", port=0, udp_port=0, store=redis_server.url, redis_timeout_s=0.5
    )
    async with asyncio.timeout(20), TrackerServer(settings) as srv:
        assert srv.udp_port
        c = Client("127.0.0.1", srv.udp_port)
        try:
            await c.announce(1)
            r = await c.announce(2)
            assert isinstance(r, tcu.UdpAnnounceResponse)
            assert r.announce.peers == (tc.PeerAddress("127.0.0.1", 6001),)
            conn = await c.connect()
            s = await c.send(tcu.UdpScrapeRequest(conn, 3, (IH,)))
            assert s == tcu.UdpScrapeResponse(3, (tc.ScrapeStats(0, 0, 2),))
            redis_server.stop()
            assert await c.announce(3) == tcu.UdpError(77, "tracker store unavailable")
            assert srv.service.counters.failures_store_unavailable == 1
        finally:
            c.close()
