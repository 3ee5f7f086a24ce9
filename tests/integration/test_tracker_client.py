"""The tracker client against tiny real servers on loopback: HTTP (our own GET and aiohttp) and UDP (BEP 15)."""

from __future__ import annotations

import asyncio
import random

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from tests.http_clients import KINDS, http_client
from torrent.engine.tracker_client import HttpTracker, TrackerTiers, UdpTracker
from torrent.errors import TrackerError
from torrent.proto import tracker_codec as codec
from torrent.proto import tracker_codec_udp as udp_codec
from torrent.proto.tracker_codec import AnnounceEvent, AnnounceRequest, AnnounceResponse, PeerAddress
from torrent.types import InfoHash, PeerId

IH = InfoHash(bytes(range(20)))
PID = PeerId(b"-PT0100-abcdefghijkl")


def _req(event: AnnounceEvent = AnnounceEvent.STARTED) -> AnnounceRequest:
    return AnnounceRequest(info_hash=IH, peer_id=PID, port=6881, left=100, event=event, numwant=10)


async def _http_server(handler: Handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/announce", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/announce"


@pytest.mark.parametrize("kind", KINDS)
async def test_http_announce_compact_ipv6_warning_and_query(kind: str) -> None:
    seen: list[AnnounceRequest] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(codec.parse_announce_query(request.query_string))
        resp = AnnounceResponse(
            interval=900,
            min_interval=60,
            peers=(PeerAddress("10.0.0.1", 5000), PeerAddress("::1", 6000)),
            warning_message="be nice",
            tracker_id=b"T1",
        )
        return web.Response(body=codec.encode_announce_response(resp))

    async with asyncio.timeout(10):
        runner, url = await _http_server(handler)
        try:
            async with http_client(kind) as http:
                t = HttpTracker(url, http)
                out = await t.announce(_req())
                assert out.interval == 900
                assert out.min_interval == 60
                assert {(p.ip, p.port) for p in out.peers} == {("10.0.0.1", 5000), ("::1", 6000)}
                assert out.warning_message == "be nice"
                await t.announce(_req(AnnounceEvent.NONE))
        finally:
            await runner.cleanup()
    assert seen[0].event is AnnounceEvent.STARTED
    assert seen[0].info_hash == IH
    assert seen[0].left == 100
    assert seen[1].tracker_id == b"T1"  # echoed back


@pytest.mark.parametrize("kind", KINDS)
async def test_http_dict_peers_and_failure_reason(kind: str) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            resp = AnnounceResponse(interval=30, peers=(PeerAddress("127.0.0.1", 7000, b"x" * 20),))
            return web.Response(body=codec.encode_announce_response(resp, compact=False))
        return web.Response(body=codec.encode_failure("torrent not registered"))

    async with asyncio.timeout(10):
        runner, url = await _http_server(handler)
        try:
            async with http_client(kind) as http:
                t = HttpTracker(url, http)
                out = await t.announce(_req())
                assert [(p.ip, p.port) for p in out.peers] == [("127.0.0.1", 7000)]
                with pytest.raises(TrackerError, match="torrent not registered"):
                    await t.announce(_req())
        finally:
            await runner.cleanup()


@pytest.mark.parametrize("kind", KINDS)
async def test_unreachable_http_tracker_is_a_tracker_error(kind: str) -> None:
    async with asyncio.timeout(10), http_client(kind) as http:
        # A port nobody listens on (bind, read the port, close).
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        with pytest.raises(TrackerError, match=f"127.0.0.1:{port}"):
            await HttpTracker(f"http://127.0.0.1:{port}/announce", http, timeout_s=3).announce(_req())


class _UdpTrackerServer(asyncio.DatagramProtocol):
    """BEP 15 server that drops the first ``drop`` packets and counts connects."""

    def __init__(self, drop: int = 0) -> None:
        self.drop = drop
        self.connects = 0
        self.announces: list[AnnounceRequest] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if self.drop:
            self.drop -= 1
            return
        req = udp_codec.decode_udp_request(data)
        if isinstance(req, udp_codec.UdpConnectRequest):
            self.connects += 1
            out: udp_codec.UdpResponse = udp_codec.UdpConnectResponse(req.transaction_id, 0x1234)
        elif isinstance(req, udp_codec.UdpAnnounceRequest):
            assert req.connection_id == 0x1234
            self.announces.append(req.announce)
            out = udp_codec.UdpAnnounceResponse(
                req.transaction_id,
                AnnounceResponse(
                    interval=120, peers=(PeerAddress("127.0.0.2", 9000),), complete=1, incomplete=2
                ),
            )
        else:
            out = udp_codec.UdpError(req.transaction_id, "no scrape")
        self.transport.sendto(udp_codec.encode_udp_response(out), addr)


async def test_udp_announce_retries_and_reuses_the_connection_id() -> None:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(10):
        transport, server = await loop.create_datagram_endpoint(
            lambda: _UdpTrackerServer(drop=1), local_addr=("127.0.0.1", 0)
        )
        port = transport.get_extra_info("sockname")[1]
        try:
            t = UdpTracker(f"udp://127.0.0.1:{port}/announce", retry_base_s=0.2)
            out = await t.announce(_req())  # first connect packet is dropped: one retry
            assert [(p.ip, p.port) for p in out.peers] == [("127.0.0.2", 9000)]
            assert out.complete == 1
            assert out.incomplete == 2
            await t.announce(_req(AnnounceEvent.NONE))
            assert server.connects == 1  # connection id reused within a minute
            assert [a.event for a in server.announces] == [AnnounceEvent.STARTED, AnnounceEvent.NONE]
            await t.close()
        finally:
            transport.close()


async def test_udp_gives_up_after_max_retries() -> None:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(10):
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpTrackerServer(drop=100), local_addr=("127.0.0.1", 0)
        )
        port = transport.get_extra_info("sockname")[1]
        try:
            t = UdpTracker(f"udp://127.0.0.1:{port}", retry_base_s=0.05, max_retries=2)
            with pytest.raises(TrackerError, match="no answer after 3 attempts"):
                await t.announce(_req())
            await t.close()
        finally:
            transport.close()


class _Fake:
    def __init__(self, url: str, ok: bool) -> None:
        self.url = url
        self.ok = ok
        self.calls = 0

    async def announce(self, req: AnnounceRequest) -> AnnounceResponse:
        self.calls += 1
        if not self.ok:
            raise TrackerError(f"{self.url}: down")
        return AnnounceResponse(interval=10)

    async def close(self) -> None:
        pass


async def test_tiers_move_the_responding_tracker_to_the_front_and_fall_through() -> None:
    a, b, c = _Fake("a", False), _Fake("b", True), _Fake("c", True)
    tiers = TrackerTiers([[a, b], [c]], rng=random.Random(1))
    out = await tiers.announce(_req())
    assert out.url == "b"
    assert tiers.tiers[0][0] is b  # the responder leads its tier now
    a.calls = 0
    await tiers.announce(_req())
    assert a.calls == 0
    assert c.calls == 0
    b.ok = False
    out = await tiers.announce(_req())
    assert out.url == "c"
    assert out.failures == ["b: down", "a: down"]
    c.ok = False
    with pytest.raises(TrackerError, match="a: down"):
        await tiers.announce(_req())
