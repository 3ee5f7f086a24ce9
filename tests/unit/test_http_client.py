"""``read_reply``: HTTP/1.x answers as literal bytes, whole and one byte at a time; and how
``open_staggered`` picks among a host's addresses (resolver and connects stood in for)."""

from __future__ import annotations

import asyncio
import gzip
import socket
import time
import zlib
from typing import Any

import pytest

from torrent.engine import http_client
from torrent.engine.http_client import (
    CONNECT_STAGGER_S,
    MAX_HEAD_LINE,
    MAX_HEAD_LINES,
    BodyTooLarge,
    HttpError,
    HttpReply,
    interleave_families,
    open_staggered,
    read_reply,
)

BODY = b"d8:intervali900e5:peers0:e"


async def reply(raw: bytes, *, max_body: int = 1 << 20, bytewise: bool = False) -> HttpReply:
    reader = asyncio.StreamReader(limit=MAX_HEAD_LINE)
    if not bytewise:
        reader.feed_data(raw)
        reader.feed_eof()
        return await read_reply(reader, max_body)

    async def feed() -> None:
        for i in range(len(raw)):
            reader.feed_data(raw[i : i + 1])
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.ensure_future(feed())
    try:
        return await read_reply(reader, max_body)
    finally:
        await feeder


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nd8:in\r\n15\r\ntervali900e5:peers0:e\r\n0\r\nX-Trailer: 1\r\n\r\n"


@pytest.mark.parametrize("bytewise", [False, True])
@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCONTENT-LENGTH: 26\r\n\r\n" + BODY,
        CHUNKED,
        b"HTTP/1.0 200 OK\r\n\r\n" + BODY,  # until the server closes
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 26\r\n\r\n" + BODY,
        b"HTTP/1.1 200 OK\nContent-Length: 26\n\n" + BODY,  # bare LF line ends
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n" + gzip.compress(BODY),
        b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\n\r\n" + zlib.compress(BODY),
        b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\n\r\n" + zlib.compress(BODY, wbits=-15),
    ],
    ids=["length", "chunked", "eof", "interim", "lf", "gzip", "deflate", "raw-deflate"],
)
async def test_a_body_arrives_whole(raw: bytes, bytewise: bool) -> None:
    out = await reply(raw, bytewise=bytewise)
    assert out == HttpReply(200, "OK" if b"200 OK" in raw else "", None, BODY)


async def test_a_redirect_gives_its_location_and_leaves_the_body() -> None:
    raw = b"HTTP/1.1 302 Found\r\nLocation: /moved?a=%24\r\nContent-Length: 999999999\r\n\r\n"
    assert await reply(raw, max_body=10) == HttpReply(302, "Found", "/moved?a=%24", b"")


async def test_an_error_status_keeps_its_body_and_reason() -> None:
    raw = b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope"
    assert await reply(raw) == HttpReply(404, "Not Found", None, b"nope")


async def test_no_content_has_no_body() -> None:
    assert (await reply(b"HTTP/1.1 204 No Content\r\n\r\n")).body == b""


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 27\r\n\r\n" + BODY + b"x",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1b\r\n" + BODY + b"x\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n" + BODY + b"x",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n" + gzip.compress(bytes(10_000)),
    ],
    ids=["length", "chunked", "eof", "gzip-bomb"],
)
async def test_a_body_past_the_bound_is_too_large(raw: bytes) -> None:
    with pytest.raises(BodyTooLarge):
        await reply(raw, max_body=len(BODY))


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n", "not an HTTP/1.x answer"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "not an HTTP/1.x answer"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD_LINE + b"\r\n\r\n", "longer than"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * (MAX_HEAD_LINES + 1) + b"\r\n", "header lines"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "bad header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "ended after 5 of 10"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "transfer coding"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\n\r\nxx", "content coding"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\nnot gzip", "not valid gzip"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", "bad chunk size"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
            "longer than its size",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nabc", "middle of a chunk"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "closed the connection"),
        (b"", "closed the connection"),
    ],
)
async def test_a_broken_answer_is_one_http_error(raw: bytes, match: str) -> None:
    with pytest.raises(HttpError, match=match):
        await reply(raw)


def test_families_alternate_in_the_resolvers_order_without_repeats() -> None:
    v6, v4 = socket.AF_INET6, socket.AF_INET
    addrs = [
        (v6, "2001:db8::1"),
        (v6, "2001:db8::2"),
        (v4, "192.0.2.1"),
        (v6, "2001:db8::1"),
        (v4, "192.0.2.2"),
    ]
    assert interleave_families(addrs) == ["2001:db8::1", "192.0.2.1", "2001:db8::2", "192.0.2.2"]
    assert interleave_families([(v4, "192.0.2.1")]) == ["192.0.2.1"]
    assert interleave_families([]) == []


class _Addresses:
    """Stands in for the resolver and the connects: ``outcomes`` maps an address to how its
    connect ends (``"hang"``, ``"refuse"``, or ``"ok"``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, outcomes: dict[str, str]) -> None:
        self.outcomes = outcomes
        self.tried: list[str] = []
        self.cancelled: list[str] = []
        loop = asyncio.get_running_loop()

        async def getaddrinfo(host: str, port: int, **kw: object) -> list[tuple[Any, ...]]:
            return [
                (socket.AF_INET6 if ":" in ip else socket.AF_INET, 1, 6, "", (ip, port)) for ip in outcomes
            ]

        monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(http_client, "_connect_one", self.connect)

    async def connect(self, ip: str, port: int) -> Any:
        self.tried.append(ip)
        outcome = self.outcomes[ip]
        if outcome == "refuse":
            raise ConnectionRefusedError(111, "Connection refused")
        if outcome == "hang":
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled.append(ip)
                raise
        return ip, None


async def test_an_address_that_never_answers_is_passed_by_after_the_stagger(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = _Addresses(monkeypatch, {"2001:db8::1": "hang", "192.0.2.1": "ok"})
    started = time.monotonic()
    async with asyncio.timeout(5):
        got: Any = await open_staggered("tracker.example", 80)
    assert got == ("192.0.2.1", None)  # what the stand-in connect returns
    assert CONNECT_STAGGER_S <= time.monotonic() - started < 2
    assert fake.tried == ["2001:db8::1", "192.0.2.1"]
    assert fake.cancelled == ["2001:db8::1"]


async def test_a_refused_address_hands_over_at_once_and_all_refused_is_one_oserror(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = _Addresses(monkeypatch, {"2001:db8::1": "refuse", "192.0.2.1": "ok"})
    started = time.monotonic()
    got: Any = await open_staggered("tracker.example", 80)
    assert got == ("192.0.2.1", None)
    assert time.monotonic() - started < CONNECT_STAGGER_S
    fake = _Addresses(monkeypatch, {"2001:db8::1": "refuse", "192.0.2.1": "refuse"})
    with pytest.raises(OSError, match=r"2001:db8::1: Connection refused; 192\.0\.2\.1: Connection refused"):
        await open_staggered("tracker.example", 80)
    assert fake.tried == ["2001:db8::1", "192.0.2.1"]
