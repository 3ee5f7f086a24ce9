"""The tracker's own HTTP/1.1 protocol on a real socket: keep-alive, pipelining, slow
clients, HEAD and other methods, binary info hashes, IPv6, and the hand-over to aiohttp
for everything else."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import quote_from_bytes

import pytest

from tests.ipv6 import needs_ipv6
from tests.polling import wait_until
from torrent.proto import bencoding
from torrent.proto.tracker_codec import ScrapeStats
from tracker.server import TrackerServer
from tracker.settings import TrackerSettings
from tracker.store import AnnounceResult, MemoryStore, PeerAnnounce, StoreStats

IH = bytes(range(20))


def pid(n: int) -> bytes:
    return b"-HT0001-" + n.to_bytes(12, "big")


def announce_target(n: int, ih: bytes = IH, **extra: object) -> bytes:
    q = f"info_hash={quote_from_bytes(ih, safe='')}&peer_id={quote_from_bytes(pid(n), safe='')}"
    q += f"&port={6000 + n}&left=5&compact=1"
    q += "".join(f"&{k}={v}" for k, v in extra.items())
    return f"/announce?{q}".encode()


def get(target: bytes, *fields: bytes, method: bytes = b"GET", version: bytes = b"1.1") -> bytes:
    return (
        method
        + b" "
        + target
        + b" HTTP/"
        + version
        + b"\r\nHost: t\r\n"
        + b"".join(f + b"\r\n" for f in fields)
        + b"\r\n"
    )


class Conn:
    """A raw client connection that reads whole answers (Content-Length framed)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> Conn:
        return cls(*await asyncio.open_connection(host, port))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def answer(self, *, head_only: bool = False) -> tuple[bytes, dict[bytes, bytes], bytes]:
        """(status line, fields by lower-case name, body)."""
        async with asyncio.timeout(5):
            raw = await self.reader.readuntil(b"\r\n\r\n")
            status, *lines = raw[:-4].split(b"\r\n")
            fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines)}
            size = 0 if head_only else int(fields.get(b"content-length", b"0"))
            return status, fields, await self.reader.readexactly(size)

    async def closed(self) -> bool:
        async with asyncio.timeout(5):
            try:
                return await self.reader.read(1) == b""
            except ConnectionError:
                return True

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def tracker() -> AsyncIterator[TrackerServer]:
    settings = TrackerSettings(
        host="127.0.0.1", port=0, udp_port=-1, header_timeout_s=1.0, body_timeout_s=1.0
    )
    async with TrackerServer(settings) as srv:
        yield srv


async def all_closed(srv: TrackerServer) -> None:
    guard = srv.guard
    assert guard is not None
    await wait_until(lambda: guard.open == 0, timeout_s=5, what="every connection closed")


async def test_keep_alive_serves_many_announces_on_one_connection(tracker: TrackerServer) -> None:
    c = await Conn.open(tracker.http_port)
    try:
        for n in range(1, 6):
            c.send(get(announce_target(n)))
            status, fields, body = await c.answer()
            assert status == b"HTTP/1.1 200 OK"
            assert fields[b"content-type"] == b"text/plain"
            assert b"connection" not in fields
            d = bencoding.decode(body)
            assert d[b"incomplete"] == n
            assert len(d[b"peers"]) == 6 * (n - 1)
        assert tracker.service.counters.http_announces == 5
        assert tracker.guard is not None
        assert tracker.guard.open == 1
    finally:
        c.close()
    await all_closed(tracker)


async def test_connection_close_and_http_1_0(tracker: TrackerServer) -> None:
    for request, kept, connection in [
        (get(announce_target(1), b"Connection: close"), False, b"close"),
        (get(announce_target(2), version=b"1.0"), False, None),
        (get(announce_target(3), b"Connection: keep-alive", version=b"1.0"), True, b"keep-alive"),
    ]:
        c = await Conn.open(tracker.http_port)
        try:
            c.send(request)
            status, fields, body = await c.answer()
            assert status.startswith(b"HTTP/1.")
            assert status.endswith(b" 200 OK")
            assert fields.get(b"connection") == connection
            assert b"failure reason" not in bencoding.decode(body)
            if kept:
                c.send(get(b"/scrape?info_hash=" + quote_from_bytes(IH, safe="").encode(), version=b"1.0"))
                _, _, body = await c.answer()
                assert bencoding.decode(body)[b"files"][IH][b"incomplete"] == 3
            assert await c.closed()
        finally:
            c.close()
    await all_closed(tracker)


async def test_pipelined_requests_are_answered_in_order_and_handed_over_at_the_first_foreign_one(
    tracker: TrackerServer,
) -> None:
    scrape = b"/scrape?info_hash=" + quote_from_bytes(IH, safe="").encode()
    c = await Conn.open(tracker.http_port)
    try:
        c.send(
            get(announce_target(1)) + get(scrape) + get(announce_target(2)) + get(scrape)
            + get(b"/metrics") + get(announce_target(3)) + get(b"/nothing", b"Connection: close")
        )  # fmt: skip
        counts = []
        for _ in range(4):
            _, _, body = await c.answer()
            d = bencoding.decode(body)
            counts.append(d[b"incomplete"] if b"incomplete" in d else d[b"files"][IH][b"incomplete"])
        assert counts == [1, 1, 2, 2]
        _, fields, metrics = await c.answer()  # aiohttp from here on
        assert b'pytorrent_tracker_announces_total{transport="http"} 2' in metrics
        assert b"aiohttp" in fields[b"server"]
        _, _, body = await c.answer()
        assert bencoding.decode(body)[b"incomplete"] == 3
        status, _, _ = await c.answer()
        assert status == b"HTTP/1.1 404 Not Found"
        assert await c.closed()
    finally:
        c.close()
    await all_closed(tracker)


async def test_head_other_methods_and_bodies(tracker: TrackerServer) -> None:
    c = await Conn.open(tracker.http_port)
    try:
        c.send(get(announce_target(1), method=b"HEAD"))
        status, fields, _ = await c.answer(head_only=True)
        assert status == b"HTTP/1.1 200 OK"
        assert int(fields[b"content-length"]) > 0
        assert tracker.service.counters.http_announces == 1  # answered like a GET, without the body
        c.send(get(announce_target(2), b"Content-Length: 0", method=b"POST"))
        status, fields, _ = await c.answer()
        assert status == b"HTTP/1.1 405 Method Not Allowed"
        assert fields[b"allow"] == b"GET,HEAD"
    finally:
        c.close()
    c = await Conn.open(tracker.http_port)
    try:
        c.send(get(announce_target(3), b"Content-Length: 5") + b"hello")
        _, _, body = await c.answer()
        assert bencoding.decode(body) == {b"failure reason": b"a tracker request has no body"}
        assert await c.closed()
    finally:
        c.close()
    assert tracker.guard is not None
    assert tracker.guard.counters.body_refused == 1
    await all_closed(tracker)


@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        (b"GET /announce?a HTTP/1.1\nHost: t\n\n", b"malformed HTTP request"),
        (b"GET /announce?a HTTP/1.1\r\nHost : t\r\n\r\n", b"malformed HTTP request"),
        (b"GET /announce?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", b"request too long"),
        (b"GET /announce?a HTTP/1.1\r\nX: " + b"b" * 9000 + b"\r\n\r\n", b"request too long"),
    ],
    ids=["bare-lf", "space-before-colon", "long-line", "long-field"],
)
async def test_malformed_and_oversized_heads_after_a_good_request(
    tracker: TrackerServer, request_bytes: bytes, reason: bytes
) -> None:
    """A bad request behind a good one on the same connection: the good one is answered
    here, the bad one gets aiohttp's bencoded failure and the connection closes."""
    c = await Conn.open(tracker.http_port)
    try:
        c.send(get(announce_target(1)) + request_bytes)
        _, _, body = await c.answer()
        assert b"failure reason" not in bencoding.decode(body)
        _, _, body = await c.answer()
        assert bencoding.decode(body) == {b"failure reason": reason}
        assert await c.closed()
    finally:
        c.close()
    assert tracker.guard is not None
    assert tracker.guard.counters.bad_request == 1


async def test_a_long_head_within_aiohttps_limits_is_still_answered(tracker: TrackerServer) -> None:
    c = await Conn.open(tracker.http_port)
    try:
        c.send(get(announce_target(1), *(b"X-Pad-%d: " % i + b"p" * 4000 for i in range(3))))
        _, _, body = await c.answer()
        assert bencoding.decode(body)[b"incomplete"] == 1
    finally:
        c.close()


async def test_a_slow_but_timely_client_is_answered(tracker: TrackerServer) -> None:
    request = get(announce_target(1))
    c = await Conn.open(tracker.http_port)
    try:
        for i in range(0, len(request), 40):  # in pieces, well within the 1 s header timeout
            c.send(request[i : i + 40])
            await asyncio.sleep(0.01)
        _, _, body = await c.answer()
        assert bencoding.decode(body)[b"incomplete"] == 1
        # then idle past the header timeout: closed and counted idle
        assert await c.closed()
    finally:
        c.close()
    guard = tracker.guard
    assert guard is not None
    assert (guard.counters.idle, guard.counters.slow_request) == (1, 0)


async def test_an_unfinished_pipelined_request_counts_as_slow(tracker: TrackerServer) -> None:
    c = await Conn.open(tracker.http_port)
    try:
        c.send(get(announce_target(1)) + b"GET /announce?info_hash=")
        _, _, body = await c.answer()
        assert b"failure reason" not in bencoding.decode(body)
        assert await c.closed()
    finally:
        c.close()
    guard = tracker.guard
    assert guard is not None
    assert (guard.counters.idle, guard.counters.slow_request) == (0, 1)


async def test_every_byte_of_a_binary_info_hash_survives(tracker: TrackerServer) -> None:
    hashes = [bytes((i + k) % 256 for k in range(20)) for i in range(0, 256, 20)]
    c = await Conn.open(tracker.http_port)
    try:
        for n, ih in enumerate(hashes):
            c.send(get(announce_target(n, ih)))
            _, _, body = await c.answer()
            assert bencoding.decode(body)[b"incomplete"] == 1
        # sub-delimiters and other visible bytes raw, the rest percent-encoded
        raw_ih = b"$!'()*,/:@;=abcdefgh"
        target = announce_target(99, raw_ih).replace(quote_from_bytes(raw_ih, safe="").encode(), raw_ih)
        c.send(get(target))
        _, _, body = await c.answer()
        assert bencoding.decode(body)[b"incomplete"] == 1
        query = "&".join(f"info_hash={quote_from_bytes(ih, safe='')}" for ih in [*hashes, raw_ih])
        c.send(get(f"/scrape?{query}".encode()))
        _, _, body = await c.answer()
        files = bencoding.decode(body)[b"files"]
        assert set(files) == {*hashes, raw_ih}
    finally:
        c.close()


@needs_ipv6
async def test_ipv6_announces_keep_alive() -> None:
    settings = TrackerSettings(host="::1", port=0, udp_port=-1)
    async with TrackerServer(settings) as srv:
        c = await Conn.open(srv.http_port, "::1")
        try:
            for n in (1, 2):
                c.send(get(announce_target(n)))
                _, _, body = await c.answer()
                d = bencoding.decode(body)
                assert d[b"external ip"] == socket.inet_pton(socket.AF_INET6, "::1")
            assert d[b"peers6"] == socket.inet_pton(socket.AF_INET6, "::1") + (6001).to_bytes(2, "big")
        finally:
            c.close()


class SlowStore:
    """A store that must be awaited (as Redis), answering later the earlier it was asked,
    so pipelined answers come out of order unless the protocol holds them back."""

    def __init__(self) -> None:
        self.inner = MemoryStore(60)
        self.delay = 0.2

    async def announce(self, a: PeerAnnounce) -> AnnounceResult:
        res = self.inner.announce_nowait(a)
        self.delay /= 2
        await asyncio.sleep(self.delay)
        return res

    async def scrape(self, info_hashes: Sequence[bytes]) -> list[ScrapeStats]:
        await asyncio.sleep(0.01)
        return self.inner.scrape_nowait(info_hashes)

    async def full_scrape(self, limit: int) -> dict[bytes, ScrapeStats]:
        return await self.inner.full_scrape(limit)

    async def statistics(self) -> StoreStats:
        return await self.inner.statistics()

    async def collect(self) -> int:
        return 0

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_pipelining_over_an_async_store_keeps_the_order() -> None:
    settings = TrackerSettings(host="127.0.0.1", port=0, udp_port=-1)
    store: Any = SlowStore()
    async with TrackerServer(settings, store=store) as srv:
        c = await Conn.open(srv.http_port)
        try:
            scrape = b"/scrape?info_hash=" + quote_from_bytes(IH, safe="").encode()
            c.send(b"".join(get(announce_target(n)) for n in range(1, 5)) + get(scrape))
            counts = [bencoding.decode((await c.answer())[2])[b"incomplete"] for _ in range(4)]
            assert counts == [1, 2, 3, 4]
            assert bencoding.decode((await c.answer())[2])[b"files"][IH][b"incomplete"] == 4
        finally:
            c.close()


async def test_a_half_closed_client_gets_every_pipelined_answer_over_an_async_store() -> None:
    settings = TrackerSettings(host="127.0.0.1", port=0, udp_port=-1)
    store: Any = SlowStore()
    async with TrackerServer(settings, store=store) as srv:
        c = await Conn.open(srv.http_port)
        try:
            c.send(b"".join(get(announce_target(n)) for n in range(1, 4)))
            c.writer.write_eof()
            counts = [bencoding.decode((await c.answer())[2])[b"incomplete"] for _ in range(3)]
            assert counts == [1, 2, 3]
            assert await c.closed()
        finally:
            c.close()
