"""What an HTTP announce puts on the wire, read off a raw socket.

A tracker sees the request line as bytes; opentracker answers a raw ``$`` in the query
with HTTP 400, and other trackers split values on a raw ``&``, ``?``, ``/`` or ``@``.
So every byte of a binary value must arrive percent-encoded (RFC 3986's unreserved
characters may stay as they are) and decode back to exactly the bytes we meant, on the
first request and after a redirect.
"""

from __future__ import annotations

import asyncio
import re
import string
from urllib.parse import unquote_to_bytes

import pytest

from tests.http_clients import KINDS, http_client
from torrent.engine.http_client import HttpClient
from torrent.engine.tracker_client import HttpTracker
from torrent.proto import tracker_codec as codec
from torrent.proto.tracker_codec import AnnounceEvent, AnnounceRequest, AnnounceResponse
from torrent.types import InfoHash, PeerId

UNRESERVED = set((string.ascii_letters + string.digits + "-._~").encode())
EVERY_BYTE = bytes(range(256))
#: 20-byte values that between them hold every byte value 0-255 (the last one padded).
CHUNKS = [EVERY_BYTE[i : i + 20].ljust(20, b"\x24") for i in range(0, 256, 20)]
BODY = codec.encode_announce_response(AnnounceResponse(interval=900))


class RawTracker:
    """An HTTP/1.1 server on loopback that records each request line and answers a fixed body.

    ``redirect_once``: a request for ``/announce`` is answered ``302`` to ``/moved/announce``
    with the same query, as it came (so the client must send it again unchanged).
    """

    def __init__(self, *, redirect_once: bool = False) -> None:
        self.lines: list[bytes] = []
        self.redirect_once = redirect_once
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/announce"

    async def __aenter__(self) -> RawTracker:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(1000):  # requests on one kept-alive connection
                line = await reader.readline()
                if not line:
                    return
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                self.lines.append(line.rstrip(b"\r\n"))
                target = line.split(b" ")[1]
                if self.redirect_once and target.startswith(b"/announce?"):
                    location = b"/moved" + target
                    writer.write(
                        b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n"
                    )
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def _raw_params(line: bytes) -> dict[bytes, bytes]:
    """The query of a request line, split but still encoded."""
    target = line.split(b" ")[1]
    query = target.partition(b"?")[2]
    return dict(part.partition(b"=")[::2] for part in query.split(b"&"))


def _assert_encoded(raw: bytes, meant: bytes) -> None:
    assert unquote_to_bytes(raw) == meant, (raw, meant)
    for i, byte in enumerate(raw):
        if byte == ord("%"):
            assert re.fullmatch(rb"[0-9A-Fa-f]{2}", raw[i + 1 : i + 3]), raw
        else:
            assert byte in UNRESERVED or raw[i - 1 : i] == b"%" or raw[i - 2 : i - 1] == b"%", (
                f"raw {chr(byte)!r} in {raw!r}"
            )


def _req(info_hash: bytes, peer_id: bytes) -> AnnounceRequest:
    return AnnounceRequest(
        info_hash=InfoHash(info_hash),
        peer_id=PeerId(peer_id),
        port=6881,
        left=1,
        event=AnnounceEvent.STARTED,
        tracker_id=b"$id/?@&=#+ ",
    )


@pytest.mark.parametrize("kind", KINDS)
async def test_every_byte_of_info_hash_and_peer_id_arrives_encoded(kind: str) -> None:
    async with asyncio.timeout(30), RawTracker() as server, http_client(kind) as http:
        tracker = HttpTracker(server.url, http)
        for chunk in CHUNKS:
            await tracker.announce(_req(chunk, b"-PT0100-abcdefghijkl"))
            await tracker.announce(_req(b"A" * 20, chunk))
        assert len(server.lines) == 2 * len(CHUNKS)
        for chunk, (by_hash, by_id) in zip(
            CHUNKS, zip(server.lines[::2], server.lines[1::2], strict=True), strict=True
        ):
            _assert_encoded(_raw_params(by_hash)[b"info_hash"], chunk)
            _assert_encoded(_raw_params(by_id)[b"peer_id"], chunk)
            _assert_encoded(_raw_params(by_id)[b"trackerid"], b"$id/?@&=#+ ")
        # And the whole line is one request target: nothing a parser would split on.
        for line in server.lines:
            method, target, version = line.split(b" ")
            assert (method, version) == (b"GET", b"HTTP/1.1")
            assert target.count(b"?") == 1
            assert b"#" not in target


@pytest.mark.parametrize("kind", KINDS)
async def test_redirected_announce_keeps_its_encoding(kind: str) -> None:
    meant = b"$$!*'()/?@:,;=+&#%\x00\xff"
    async with asyncio.timeout(10), RawTracker(redirect_once=True) as server, http_client(kind) as http:
        tracker = HttpTracker(server.url, http)
        out = await tracker.announce(_req(meant, meant))
        assert out.interval == 900
        assert len(server.lines) == 2
        first, second = server.lines
        assert second.split(b" ")[1].startswith(b"/moved/announce?")
        for line in (first, second):
            _assert_encoded(_raw_params(line)[b"info_hash"], meant)
            _assert_encoded(_raw_params(line)[b"peer_id"], meant)


@pytest.mark.parametrize("kind", KINDS)
async def test_an_announce_url_with_its_own_query_keeps_it(kind: str) -> None:
    async with asyncio.timeout(10), RawTracker() as server, http_client(kind) as http:
        tracker = HttpTracker(server.url + "?passkey=a%24b", http)
        await tracker.announce(_req(b"$" * 20, b"-PT0100-abcdefghijkl"))
        params = _raw_params(server.lines[0])
        assert params[b"passkey"] == b"a%24b"
        _assert_encoded(params[b"info_hash"], b"$" * 20)


async def test_our_own_get_sends_one_plain_request_and_closes() -> None:
    """The whole request of a plain-HTTP announce, byte for byte (no aiohttp involved)."""
    await _own_get_roundtrip()


def test_our_own_get_runs_on_uvloop() -> None:
    """The CLI runs on uvloop, whose ``create_connection`` takes fewer options than asyncio's."""
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_own_get_roundtrip())


async def _own_get_roundtrip() -> None:
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)
        await writer.drain()
        assert await reader.read() == b""  # Connection: close: the client hangs up
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(10), http_client("own") as http:
            url = f"http://127.0.0.1:{port}/announce?passkey=a%24b"
            out = await HttpTracker(url, http).announce(_req(b"$" * 20, b"-PT0100-abcdefghijkl"))
            assert out.interval == 900
    finally:
        server.close()
        await server.wait_closed()
    (head,) = heads
    line, _, rest = head.partition(b"\r\n")
    assert line.startswith(b"GET /announce?passkey=a%24b&info_hash=%24%24")
    assert line.endswith(b" HTTP/1.1")
    assert rest == (
        b"Host: 127.0.0.1:%d\r\nUser-Agent: pytorrent-test/1.0\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        % port
    )


async def test_a_url_with_a_user_name_goes_through_aiohttp_with_basic_auth() -> None:
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = HttpClient("pytorrent-test/1.0")
    try:
        async with asyncio.timeout(10):
            url = f"http://alice:s3cret@127.0.0.1:{port}/announce"
            await HttpTracker(url, client).announce(_req(b"A" * 20, b"-PT0100-abcdefghijkl"))
        assert client.started  # aiohttp, not our own GET
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
    assert b"Authorization: Basic YWxpY2U6czNjcmV0\r\n" in heads[0]
