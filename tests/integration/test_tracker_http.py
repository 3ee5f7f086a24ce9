"""The HTTP tracker with raw byte requests (aiohttp TestServer/TestClient)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from tests.ipv6 import needs_ipv6
from tests.polling import wait_until
from torrent.proto import bencoding
from torrent.proto.tracker_codec import decode_announce_response, decode_compact_peers
from tracker.app import SERVICE_KEY, make_app
from tracker.server import TrackerServer
from tracker.settings import TrackerSettings
from tracker.store import MemoryStore

IH = bytes(range(100, 120))
IH2 = b"\xff" * 20


def pid(n: int) -> bytes:
    return b"-XX0001-" + n.to_bytes(12, "big")


def q(**params: Any) -> str:
    out = []
    for k, v in params.items():
        if isinstance(v, bytes):
            v = quote_from_bytes(v, safe="")
        out.append(f"{k}={v}")
    return "&".join(out)


def announce_q(n: int, **extra: Any) -> str:
    params: dict[str, Any] = {
        "info_hash": IH,
        "peer_id": pid(n),
        "port": 6000 + n,
        "uploaded": 0,
        "downloaded": 0,
        "left": 10,
        "compact": 1,
    }
    params.update(extra)
    return q(**{k: v for k, v in params.items() if v is not None})


Get = Callable[..., Any]


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., Any]]:
    clients: list[TestClient[Any, Any]] = []

    async def factory(**settings: Any) -> tuple[Get, TestClient[Any, Any]]:
        s = TrackerSettings(**settings)
        store = MemoryStore(s.ttl_s)
        client = TestClient(TestServer(make_app(store, s)))
        await client.start_server()
        clients.append(client)

        async def get(path: str, query: str = "") -> tuple[int, bytes]:
            url = URL(
                f"http://{client.host}:{client.port}{path}" + (f"?{query}" if query else ""), encoded=True
            )
            async with client.session.get(url) as resp:
                return resp.status, await resp.read()

        return get, client

    yield factory
    for c in clients:
        await c.close()


async def test_compact_announce_and_every_response_field(make_client: Callable[..., Any]) -> None:
    get, _ = await make_client(interval_s=600, min_interval_s=300)
    status, body = await get("/announce", announce_q(1, event="started"))
    assert status == 200
    d = bencoding.decode(body)
    assert d[b"interval"] == 600
    assert d[b"min interval"] == 300
    assert (d[b"complete"], d[b"incomplete"], d[b"downloaded"]) == (0, 1, 0)
    assert d[b"peers"] == b""
    assert d[b"external ip"] == b"\x7f\x00\x00\x01"
    assert d[b"tracker id"] == b"pytorrent"
    status, body = await get("/announce", announce_q(2, left=0, event="completed", trackerid="pytorrent"))
    d = bencoding.decode(body)
    assert d[b"peers"] == b"\x7f\x00\x00\x01" + (6001).to_bytes(2, "big")
    assert (d[b"complete"], d[b"incomplete"], d[b"downloaded"]) == (1, 1, 1)
    assert b"tracker id" not in d  # the client already echoes it


async def test_dict_peer_list_and_no_peer_id(make_client: Callable[..., Any]) -> None:
    get, _ = await make_client()
    await get("/announce", announce_q(1))
    _, body = await get("/announce", announce_q(2, compact=0))
    assert bencoding.decode(body)[b"peers"] == [{b"ip": b"127.0.0.1", b"peer id": pid(1), b"port": 6001}]
    _, body = await get("/announce", announce_q(2, compact=0, no_peer_id=1))
    assert bencoding.decode(body)[b"peers"] == [{b"ip": b"127.0.0.1", b"port": 6001}]


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (q(peer_id=pid(1), port=1, left=0), b"missing info_hash"),
        (q(info_hash=b"abc", peer_id=pid(1), port=1, left=0), b"info_hash is not 20 bytes (got 3)"),
        (q(info_hash=IH + b"x", peer_id=pid(1), port=1, left=0), b"info_hash is not 20 bytes (got 21)"),
        (q(info_hash=IH, port=1, left=0), b"missing peer_id"),
        (q(info_hash=IH, peer_id=b"short", port=1, left=0), b"peer_id is not 20 bytes (got 5)"),
        (q(info_hash=IH, peer_id=pid(1), left=0), b"missing port"),
        (q(info_hash=IH, peer_id=pid(1), port="http", left=0), b"bad port"),
        (q(info_hash=IH, peer_id=pid(1), port=70000, left=0), b"bad port"),
        (q(info_hash=IH, peer_id=pid(1), port=1), b"missing left"),
        (q(info_hash=IH, peer_id=pid(1), port=1, left=-1), b"bad left: not a non-negative integer"),
        (
            q(info_hash=IH, peer_id=pid(1), port=1, left=0, uploaded="x"),
            b"bad uploaded: not a non-negative integer",
        ),
        (
            q(info_hash=IH, peer_id=pid(1), port=1, left=0, downloaded="1.5"),
            b"bad downloaded: not a non-negative integer",
        ),
        (q(info_hash=IH, peer_id=pid(1), port=1, left=0, event="begun"), b"bad event"),
        (q(info_hash=IH, peer_id=pid(1), port=1, left=0, numwant="many"), b"bad numwant: not an integer"),
        (q(info_hash=IH, peer_id=pid(1), port=1, left=0, ip="%C3%A9"), b"bad ip: not ASCII text"),
        ("", b"missing info_hash"),
    ],
)
async def test_errors_are_200_with_a_failure_reason(
    make_client: Callable[..., Any], query: str, reason: bytes
) -> None:
    get, _ = await make_client()
    status, body = await get("/announce", query)
    assert status == 200
    assert bencoding.decode(body)[b"failure reason"].startswith(reason)


async def test_numwant_default_and_cap(make_client: Callable[..., Any]) -> None:
    get, _ = await make_client(numwant_default=3, numwant_max=5)
    for n in range(10):
        await get("/announce", announce_q(n))
    _, body = await get("/announce", announce_q(20))
    assert len(bencoding.decode(body)[b"peers"]) == 3 * 6
    _, body = await get("/announce", announce_q(20, numwant=1000))
    assert len(bencoding.decode(body)[b"peers"]) == 5 * 6
    _, body = await get("/announce", announce_q(20, numwant=2))
    assert len(bencoding.decode(body)[b"peers"]) == 2 * 6
    _, body = await get("/announce", announce_q(20, numwant=-1))
    assert len(bencoding.decode(body)[b"peers"]) == 3 * 6


async def test_stopped_removes_and_seed_gets_no_seeds(make_client: Callable[..., Any]) -> None:
    get, _ = await make_client()
    await get("/announce", announce_q(1, left=0))
    await get("/announce", announce_q(2, left=0))
    _, body = await get("/announce", announce_q(3, left=0))
    d = bencoding.decode(body)
    assert d[b"peers"] == b""
    assert d[b"complete"] == 3
    _, body = await get("/announce", announce_q(1, left=0, event="stopped"))
    d = bencoding.decode(body)
    assert d[b"complete"] == 2
    assert d[b"peers"] == b""
    _, body = await get("/announce", announce_q(4))
    assert len(bencoding.decode(body)[b"peers"]) == 12


async def test_ip_and_ipv6_params_and_key(make_client: Callable[..., Any]) -> None:
    get, _ = await make_client(accept_ip_param=True)
    await get("/announce", announce_q(1, ip="10.1.2.3", key="0000abcd"))
    await get("/announce", announce_q(2, ipv6="2001%3Adb8%3A%3A7"))
    _, body = await get("/announce", announce_q(3))
    resp = decode_announce_response(body)
    assert {(p.ip, p.port) for p in resp.peers} == {("10.1.2.3", 6001), ("2001:db8::7", 6002)}
    # peer 1 moves: allowed only with its key
    _, body = await get("/announce", announce_q(1, ip="10.9.9.9"))
    assert bencoding.decode(body)[b"failure reason"].startswith(b"peer id already in use")
    _, body = await get("/announce", announce_q(1, ip="10.9.9.9", key="0000ABCD"))
    assert b"failure reason" not in bencoding.decode(body)
    _, body = await get("/announce", announce_q(3))
    assert ("10.9.9.9", 6001) in {(p.ip, p.port) for p in decode_announce_response(body).peers}


async def test_ip_param_ignored_by_default(make_client: Callable[..., Any]) -> None:
    get, _ = await make_client()
    await get("/announce", announce_q(1, ip="10.1.2.3"))
    _, body = await get("/announce", announce_q(2))
    assert decode_compact_peers(bencoding.decode(body)[b"peers"])[0].ip == "127.0.0.1"


async def test_scrape_one_many_and_full(make_client: Callable[..., Any]) -> None:
    get, _ = await make_client()
    await get("/announce", announce_q(1))
    await get("/announce", announce_q(2, left=0, event="completed"))
    _, body = await get("/scrape", q(info_hash=IH))
    assert bencoding.decode(body) == {b"files": {IH: {b"complete": 1, b"downloaded": 1, b"incomplete": 1}}}
    _, body = await get("/scrape", q(info_hash=IH) + "&" + q(info_hash=IH2))
    files = bencoding.decode(body)[b"files"]
    assert files[IH2] == {b"complete": 0, b"downloaded": 0, b"incomplete": 0}
    assert len(files) == 2
    _, body = await get("/scrape")
    assert bencoding.decode(body)[b"failure reason"].startswith(b"full scrape is disabled")
    _, body = await get("/scrape", q(info_hash=b"short"))
    assert bencoding.decode(body)[b"failure reason"] == b"info_hash is not 20 bytes (got 5)"
    get2, _ = await make_client(full_scrape=True)
    await get2("/announce", announce_q(1))
    _, body = await get2("/scrape")
    assert list(bencoding.decode(body)[b"files"]) == [IH]


async def test_allow_list_and_reload(make_client: Callable[..., Any], tmp_path: Path) -> None:
    allow = tmp_path / "allow.txt"
    allow.write_text(f"# private\n{IH.hex()}\n")
    get, client = await make_client(allow_file=allow)
    _, body = await get("/announce", announce_q(1))
    assert b"failure reason" not in bencoding.decode(body)
    _, body = await get("/announce", announce_q(1, info_hash=IH2))
    assert bencoding.decode(body) == {b"failure reason": b"torrent not allowed"}
    _, body = await get("/scrape", q(info_hash=IH2))
    assert bencoding.decode(body) == {b"failure reason": b"torrent not allowed"}
    allow.write_text(f"{IH2.hex().upper()}\n")
    service = client.server.app[SERVICE_KEY]
    assert service.allow is not None
    assert service.allow.reload()
    _, body = await get("/announce", announce_q(1, info_hash=IH2))
    assert b"failure reason" not in bencoding.decode(body)
    _, body = await get("/announce", announce_q(1))
    assert bencoding.decode(body) == {b"failure reason": b"torrent not allowed"}
    allow.write_text("not a hash\n")
    assert not service.allow.reload()  # a bad file keeps the old list
    _, body = await get("/announce", announce_q(1, info_hash=IH2))
    assert b"failure reason" not in bencoding.decode(body)


async def test_status_page_and_metrics(make_client: Callable[..., Any]) -> None:
    get, _ = await make_client()
    await get("/announce", announce_q(1))
    await get("/announce", announce_q(2, left=0))
    await get("/announce", "garbage")
    status, page = await get("/")
    assert status == 200
    assert b"<table>" in page
    for label in (b"swarms</th><td>1", b"peers</th><td>2", b"seeds</th><td>1", b"uptime"):
        assert label in page
    status, text = await get("/metrics")
    assert status == 200
    lines = text.decode().splitlines()
    assert 'pytorrent_tracker_announces_total{transport="http"} 3' in lines
    assert 'pytorrent_tracker_failures_total{reason="bad_request"} 1' in lines
    assert 'pytorrent_tracker_peers{state="seed"} 1' in lines
    assert "# TYPE pytorrent_tracker_swarms gauge" in lines


async def test_a_store_bug_is_a_failure_reason_not_a_500() -> None:
    class Broken(MemoryStore):
        def announce_nowait(self, a: Any) -> Any:
            raise RuntimeError("boom")

        async def scrape(self, info_hashes: Any) -> Any:
            raise RuntimeError("boom")

    s = TrackerSettings()
    async with TestClient(TestServer(make_app(Broken(60), s))) as client:
        url = URL(f"http://{client.host}:{client.port}/announce?{announce_q(1)}", encoded=True)
        async with client.session.get(url) as resp:
            assert resp.status == 200
            assert bencoding.decode(await resp.read()) == {b"failure reason": b"internal tracker error"}
        async with client.session.get(
            URL(f"http://{client.host}:{client.port}/scrape?{q(info_hash=IH)}", encoded=True)
        ) as resp:
            assert resp.status == 200
            assert b"internal tracker error" in await resp.read()


@needs_ipv6
async def test_ipv6_announce_gets_peers6() -> None:
    settings = TrackerSettings(host="127.0.0.1,::1", port=0, udp_port=-1)
    async with asyncio.timeout(10), TrackerServer(settings) as srv, aiohttp.ClientSession() as http:
        base6 = f"http://[::1]:{srv.http_port}/announce?"
        base4 = f"http://127.0.0.1:{srv.http_port}/announce?"
        async with http.get(URL(base6 + announce_q(1), encoded=True)) as resp:
            d = bencoding.decode(await resp.read())
            assert d[b"external ip"] == bytes(15) + b"\x01"
        async with http.get(URL(base4 + announce_q(2), encoded=True)) as resp:
            d = bencoding.decode(await resp.read())
            assert d[b"peers6"] == bytes(15) + b"\x01" + (6001).to_bytes(2, "big")
        async with http.get(URL(base6 + announce_q(3, compact=0), encoded=True)) as resp:
            peers = bencoding.decode(await resp.read())[b"peers"]
            assert {(p[b"ip"], p[b"port"]) for p in peers} == {(b"::1", 6001), (b"127.0.0.1", 6002)}


async def test_access_log_is_one_line_per_n_announces(
    make_client: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    get, _ = await make_client(log_every=5)
    with caplog.at_level("INFO", logger="pytorrent.tracker.access"):
        for n in range(12):
            await get("/announce", announce_q(n))
    lines = [r.getMessage() for r in caplog.records if r.name == "pytorrent.tracker.access"]
    assert len(lines) == 2
    assert lines[0].startswith("5 announces in ")
    assert "http 5, udp 0 total" in lines[0]


async def test_startup_logs_every_setting(caplog: pytest.LogCaptureFixture) -> None:
    """At debug level: twenty setting lines at INFO buried the one line that mattered."""
    from tracker.server import serve

    settings = TrackerSettings(host="127.0.0.1", port=0, udp_port=-1, store="memory")
    with caplog.at_level("DEBUG", logger="pytorrent.tracker"):
        task = asyncio.create_task(serve(settings))
        await wait_until(
            lambda: any("tracker listening on" in r.getMessage() for r in caplog.records),
            timeout_s=5,
            what="the start-up log line",
        )
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    text = "\n".join(r.getMessage() for r in caplog.records)
    for name in ("host=127.0.0.1", "interval_s=1800", "numwant_max=200", "store=memory", "peer_ttl_s=3600"):
        assert name in text
    assert "tracker stopping" in text
    assert not [r for r in caplog.records if r.getMessage().startswith("setting ") and r.levelname != "DEBUG"]


async def test_raw_and_encoded_sub_delimiters_mean_the_same_peer(make_client: Callable[..., Any]) -> None:
    """Clients differ in what they leave raw (libtorrent sends ``! * ' ( )`` as they are,
    others send ``$ , ; : @ /`` raw): both forms name the same swarm and peer."""
    special = b"$!*'(),;:@/$!*'(),;:"
    get, _ = await make_client()
    raw = special.decode()
    for n, (info_hash, peer_id) in enumerate(
        [(quote_from_bytes(special, safe=""), quote_from_bytes(special, safe="")), (raw, raw)]
    ):
        query = f"info_hash={info_hash}&peer_id={peer_id}&port={7000 + n}&uploaded=0&downloaded=0&left=10&compact=0"
        status, body = await get("/announce", query)
        d = bencoding.decode(body)
        assert status == 200, d
        assert b"failure reason" not in d, d
    # The second announce (raw form) is the same peer as the first (encoded): one peer in
    # the swarm, now on the second port.
    _, body = await get("/scrape", f"info_hash={quote_from_bytes(special, safe='')}")
    assert bencoding.decode(body)[b"files"][special][b"incomplete"] == 1
    status, body = await get("/announce", announce_q(3, info_hash=special, compact=0))
    assert bencoding.decode(body)[b"peers"] == [{b"ip": b"127.0.0.1", b"peer id": special, b"port": 7001}]
