"""The daemon's hand-written HTTP/1.1 front (``torrent/daemon/front.py``) over loopback, in
raw bytes: keep-alive, pipelining, ``Connection: close``, the checks, bounded heads and
bodies, timeouts for slow clients, and what it hands to aiohttp (before and after aiohttp
is loaded)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.daemon_helpers import daemon_config
from tests.polling import wait_until
from torrent import config
from torrent.daemon import front as front_module
from torrent.daemon.front import MAX_SKIPPED_BODY, RpcServer
from torrent.daemon.rpc import MAX_BODY_BYTES, SESSION_HEADER, RpcConfig
from torrent.daemon.service import Daemon
from torrent.proto.http1 import MAX_HEAD

pytestmark = pytest.mark.timeout(60)

SID = "the-session-id"


@dataclass
class Answer:
    version: bytes
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@contextlib.asynccontextmanager
async def served(tmp_path: Path, rpc: RpcConfig | None = None) -> AsyncIterator[RpcServer]:
    settings = config.testing_settings().replace(seed_ratio=None)
    async with (
        Daemon(daemon_config(tmp_path), settings) as daemon,
        RpcServer(daemon, rpc or RpcConfig(session_id=SID), "127.0.0.1", 0) as server,
    ):
        yield server


def post(body: object, *fields: str, version: str = "1.1", sid: str | None = SID) -> bytes:
    data = json.dumps(body).encode()
    lines = [f"POST /transmission/rpc HTTP/{version}", "Host: 127.0.0.1:9091"]
    if sid is not None:
        lines.append(f"{SESSION_HEADER}: {sid}")
    lines += [*fields, f"Content-Length: {len(data)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head[:-4].split(b"\r\n")
    version, status, _ = status_line.split(b" ", 2)
    headers = {}
    for line in lines:
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(version, int(status), headers, body)


@contextlib.asynccontextmanager
async def connection(server: RpcServer) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(*server.address)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_keep_alive_pipelining_and_byte_at_a_time(tmp_path: Path) -> None:
    async with asyncio.timeout(30), served(tmp_path) as server, connection(server) as (reader, writer):
        writer.write(post({"method": "session-get", "arguments": {"fields": ["rpc-version"]}, "tag": 1}))
        first = await read_answer(reader)
        assert (first.version, first.status) == (b"HTTP/1.1", 200)
        assert first.headers["content-type"] == "application/json"
        assert first.json() == {"result": "success", "arguments": {"rpc-version": 17}, "tag": 1}
        assert "connection" not in first.headers  # HTTP/1.1 keeps alive
        # Three requests in one write are answered in order on the same connection.
        writer.write(
            b"".join(
                post({"method": "torrent-get", "arguments": {"fields": ["id"]}, "tag": t}) for t in (2, 3, 4)
            )
        )
        assert [(await read_answer(reader)).json()["tag"] for _ in range(3)] == [2, 3, 4]
        # ... and one sent a byte at a time.
        for byte in post({"method": "session-stats", "tag": 5}):
            writer.write(bytes([byte]))
            await writer.drain()
        assert (await read_answer(reader)).json()["tag"] == 5


async def test_connection_close_and_http10(tmp_path: Path) -> None:
    async with asyncio.timeout(30), served(tmp_path) as server:
        for fields, version, closes in (
            (("Connection: close",), "1.1", True),
            ((), "1.0", True),
            (("Connection: keep-alive",), "1.0", False),
        ):
            async with connection(server) as (reader, writer):
                writer.write(post({"method": "session-stats"}, *fields, version=version))
                answer = await read_answer(reader)
                assert answer.version == f"HTTP/{version}".encode()
                assert answer.json()["result"] == "success"
                if closes:
                    assert await reader.read() == b""  # the server closed it
                else:
                    assert answer.headers["connection"] == "keep-alive"
                    writer.write(post({"method": "session-stats"}, *fields, version=version))
                    assert (await read_answer(reader)).status == 200


async def test_the_session_id_handshake_keeps_the_connection(tmp_path: Path) -> None:
    async with asyncio.timeout(30), served(tmp_path) as server, connection(server) as (reader, writer):
        # Without the id, and with a body that arrives after the head: 409 with the id,
        # the body is dropped, and the next request on the connection is served.
        request = post({"method": "session-get"}, sid=None)
        head_end = request.index(b"\r\n\r\n") + 4
        writer.write(request[:head_end])
        refused = await read_answer(reader)
        assert refused.status == 409
        assert refused.headers[SESSION_HEADER.lower()] == SID
        assert SID.encode() in refused.body
        writer.write(request[head_end:] + post({"method": "session-stats", "tag": 9}))
        assert (await read_answer(reader)).json()["tag"] == 9
        # A wrong id, and a GET with the right one (405).
        writer.write(post({"method": "session-get"}, sid="stale"))
        assert (await read_answer(reader)).status == 409
        writer.write(
            f"GET /transmission/rpc HTTP/1.1\r\nHost: localhost\r\n{SESSION_HEADER}: {SID}\r\n\r\n".encode()
        )
        assert (await read_answer(reader)).status == 405


async def test_basic_auth_and_host_whitelist(tmp_path: Path) -> None:
    rpc = RpcConfig(username="alice", password="s3cret", host_whitelist=("my.box",), session_id=SID)
    good = "Authorization: Basic " + base64.b64encode(b"alice:s3cret").decode()
    async with asyncio.timeout(30), served(tmp_path, rpc) as server, connection(server) as (reader, writer):
        for fields in (
            (),
            ("Authorization: Basic " + base64.b64encode(b"alice:wrong").decode(),),
            ("Authorization: Basic !!",),
        ):
            writer.write(post({"method": "session-get"}, *fields))
            refused = await read_answer(reader)
            assert refused.status == 401
            assert refused.headers["www-authenticate"] == 'Basic realm="Transmission"'
        # Auth comes before the session id, as in the aiohttp application.
        writer.write(post({"method": "session-get"}, sid=None))
        assert (await read_answer(reader)).status == 401
        writer.write(post({"method": "session-get"}, good, sid=None))
        assert (await read_answer(reader)).status == 409
        writer.write(post({"method": "session-get", "tag": 1}, good))
        assert (await read_answer(reader)).json()["tag"] == 1
        request = post({"method": "session-get"}, good).replace(
            b"Host: 127.0.0.1:9091", b"Host: attacker.example"
        )
        writer.write(request)
        assert (await read_answer(reader)).status == 421
        writer.write(
            post({"method": "session-get"}, good).replace(b"Host: 127.0.0.1:9091", b"Host: My.Box:9091")
        )
        assert (await read_answer(reader)).status == 200
        # A request that passed is remembered; one that differs in any checked field is
        # still checked (and refused).
        for request, status in (
            (post({"method": "session-get"}, good), 200),
            (post({"method": "session-get"}), 401),
            (post({"method": "session-get"}, good[:-2] + "x="), 401),
            (post({"method": "session-get"}, good, sid="stale"), 409),
            (post({"method": "session-get"}, good).replace(b"POST ", b"GET ", 1), 405),
            (post({"method": "session-get"}, good), 200),
        ):
            writer.write(request)
            assert (await read_answer(reader)).status == status


async def test_a_refused_request_with_a_large_body_closes_the_connection(tmp_path: Path) -> None:
    async with asyncio.timeout(30), served(tmp_path) as server, connection(server) as (reader, writer):
        size = MAX_SKIPPED_BODY + 1
        writer.write(
            f"POST /transmission/rpc HTTP/1.1\r\nHost: localhost\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        refused = await read_answer(reader)
        assert refused.status == 409
        assert refused.headers["connection"] == "close"
        assert await reader.read() == b""


async def test_what_the_front_does_not_answer_goes_to_aiohttp(tmp_path: Path) -> None:
    async with asyncio.timeout(30), served(tmp_path) as server:
        # Before aiohttp is loaded: the request waits for it and is answered.
        assert server.front.fallback is None
        async with connection(server) as (reader, writer):
            writer.write(post({"method": "session-stats", "tag": 1}))
            assert (await read_answer(reader)).json()["tag"] == 1
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")  # same connection
            metrics = await read_answer(reader)
            assert metrics.status == 200
            assert b"pytorrent_torrents" in metrics.body
            assert metrics.headers["server"] != "pytorrent"  # aiohttp answered
        assert server.front.fallback is not None
        # A chunked RPC request is aiohttp's, and answered as the front would.
        async with connection(server) as (reader, writer):
            data = json.dumps({"method": "session-stats", "tag": 2}).encode()
            writer.write(
                f"POST /transmission/rpc HTTP/1.1\r\nHost: localhost\r\n{SESSION_HEADER}: {SID}\r\n"
                f"Transfer-Encoding: chunked\r\n\r\n{len(data):x}\r\n".encode()
                + data
                + b"\r\n0\r\n\r\n"
            )
            answer = await read_answer(reader)
            assert answer.json()["tag"] == 2
            assert answer.headers["server"] != "pytorrent"
        # A head longer than the front reads, a repeated session id, a body over the
        # limit: aiohttp's answers.
        async with connection(server) as (reader, writer):
            long_fields = [f"X-Long-{i}: " + "a" * 4000 for i in range(3)]  # aiohttp takes 8190 a field
            assert sum(map(len, long_fields)) > MAX_HEAD
            writer.write(post({"method": "session-stats"}, *long_fields))
            assert (await read_answer(reader)).json()["result"] == "success"
        async with connection(server) as (reader, writer):
            writer.write(post({"method": "session-stats", "tag": 3}, f"{SESSION_HEADER}: {SID}"))
            assert (await read_answer(reader)).json()["tag"] == 3
        async with connection(server) as (reader, writer):
            writer.write(
                f"POST /transmission/rpc HTTP/1.1\r\nHost: localhost\r\n{SESSION_HEADER}: {SID}\r\n"
                f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode()
                + b"x" * (MAX_BODY_BYTES + 1)
            )
            assert (await read_answer(reader)).json()["result"].startswith("request larger than")
        async with connection(server) as (reader, writer):
            writer.write(b"GET /nothing-here HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert (await read_answer(reader)).status == 404


async def test_slow_and_idle_clients_are_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(front_module, "REQUEST_TIMEOUT_S", 0.3)
    monkeypatch.setattr(front_module, "BODY_TIMEOUT_S", 0.3)
    monkeypatch.setattr(front_module, "KEEPALIVE_TIMEOUT_S", 0.6)
    async with asyncio.timeout(30), served(tmp_path) as server:
        # Half a head, then nothing: closed at the request bound, though bytes trickle in.
        async with connection(server) as (reader, writer):
            request = post({"method": "session-stats"})
            writer.write(request[:10])
            loop = asyncio.get_running_loop()
            began = loop.time()
            for byte in request[10:15]:  # until just before the bound
                await asyncio.sleep(0.05)
                writer.write(bytes([byte]))
            assert await reader.read() == b""
            assert loop.time() - began < 2.0
        # A head, then half its body; a refused head, then half the body to drop.
        async with connection(server) as (reader, writer):
            writer.write(post({"method": "session-stats"})[:-3])
            assert await reader.read() == b""
        async with connection(server) as (reader, writer):
            writer.write(post({"method": "session-stats"}, sid="stale")[:-3])
            assert (await read_answer(reader)).status == 409
            assert await reader.read() == b""
        # Nothing at all, or nothing after an answer: closed at the keep-alive bound.
        async with connection(server) as (reader, writer):
            writer.write(post({"method": "session-stats"}))
            assert (await read_answer(reader)).status == 200
            assert await reader.read() == b""
        assert not server.front.connections


async def test_a_half_closed_client_gets_every_answer(tmp_path: Path) -> None:
    async with asyncio.timeout(30), served(tmp_path) as server, connection(server) as (reader, writer):
        writer.write(b"".join(post({"method": "session-stats", "tag": t}) for t in (1, 2)))
        writer.write_eof()
        assert [(await read_answer(reader)).json()["tag"] for _ in range(2)] == [1, 2]
        assert await reader.read() == b""


@pytest.mark.parametrize("seconds", [0, 784111777, 1700000000.5, 1709251199, 4102444800])
def test_the_date_header_is_an_imf_fixdate(seconds: float) -> None:
    assert front_module.http_date(seconds) == email.utils.formatdate(seconds, usegmt=True).encode()


async def test_a_client_that_sends_and_never_reads_is_not_buffered_without_bound(tmp_path: Path) -> None:
    async with asyncio.timeout(60), served(tmp_path) as server, connection(server) as (reader, writer):
        count = 60_000  # refused (no session id): ~9 MB of requests, ~20 MB of answers
        writer.write(post({"method": "session-stats"}, sid=None) * count)
        await asyncio.sleep(1.0)  # the server answers until the kernel's buffers are full
        [protocol] = server.front.connections
        assert protocol.transport is not None
        assert protocol.transport.get_write_buffer_size() < 256 * 1024  # about the high-water mark
        for _ in range(count):  # reading again, every request is answered
            assert (await read_answer(reader)).status == 409


async def test_connections_past_the_bound_are_closed_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(front_module, "MAX_CONNECTIONS", 3)
    async with asyncio.timeout(30), served(tmp_path) as server, contextlib.AsyncExitStack() as stack:
        held = [await stack.enter_async_context(connection(server)) for _ in range(3)]
        await wait_until(lambda: len(server.front.connections) == 3, timeout_s=5, what="three connections")
        async with connection(server) as (reader, _):
            assert await reader.read() == b""  # closed at once
        assert len(server.front.connections) == 3
        reader, writer = held[0]
        writer.write(post({"method": "session-stats"}))
        assert (await read_answer(reader)).status == 200
        writer.close()
        await wait_until(lambda: len(server.front.connections) == 2, timeout_s=5, what="one to close")
        async with connection(server) as (reader, writer):  # room again
            writer.write(post({"method": "session-stats"}))
            assert (await read_answer(reader)).status == 200


async def test_connections_handed_over_to_aiohttp_count_under_the_same_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(front_module, "MAX_CONNECTIONS", 3)
    async with asyncio.timeout(30), served(tmp_path) as server, contextlib.AsyncExitStack() as stack:
        handed = [await stack.enter_async_context(connection(server)) for _ in range(2)]
        for reader, writer in handed:  # aiohttp's, kept alive
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert (await read_answer(reader)).status == 200
        assert server.front.connections == set()
        assert server.front.open_connections() == 2
        reader, writer = await stack.enter_async_context(connection(server))  # the front's
        writer.write(post({"method": "session-stats"}))
        assert (await read_answer(reader)).status == 200
        assert server.front.open_connections() == 3
        async with connection(server) as (reader, _):
            assert await reader.read() == b""  # closed at once: two with aiohttp, one here
        assert server.front.open_connections() == 3
        handed[0][1].close()
        await wait_until(lambda: server.front.open_connections() == 2, timeout_s=5, what="aiohttp to let go")
        async with connection(server) as (reader, writer):  # room again
            writer.write(post({"method": "session-stats"}))
            assert (await read_answer(reader)).status == 200
