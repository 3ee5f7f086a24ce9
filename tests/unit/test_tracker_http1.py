"""The tracker's request-head reader: what it answers itself, what it leaves to aiohttp."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker.http1 import ANNOUNCE, MAX_HEAD, SCRAPE, Head, read_head

QUERY = b"info_hash=%01%02&peer_id=x&port=1&left=0"
PASSKEY = "0123456789abcdef0123456789abcdef"


def req(line: bytes, *fields: bytes) -> bytes:
    return line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


def head(buf: bytes, *, private: bool = False) -> Head:
    out = read_head(buf, private=private)
    assert isinstance(out, Head), out
    return out


def test_a_get_announce_with_its_query_and_where_it_ends() -> None:
    buf = req(b"GET /announce?" + QUERY + b" HTTP/1.1", b"Host: t", b"User-Agent: x/1") + b"GET /next"
    h = head(buf)
    assert (h.kind, h.query, h.passkey, h.keep_alive, h.head_only) == (ANNOUNCE, QUERY, None, True, False)
    assert buf[h.end :] == b"GET /next"
    assert h.status == b"HTTP/1.1 200 OK\r\n"


def test_scrape_head_and_no_query() -> None:
    h = head(req(b"HEAD /scrape HTTP/1.1"))
    assert (h.kind, h.query, h.head_only) == (SCRAPE, b"", True)


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive", "status"),
    [
        (b"1.1", None, True, b"HTTP/1.1 200 OK\r\n"),
        (b"1.1", b"Connection: close", False, b"HTTP/1.1 200 OK\r\nConnection: close\r\n"),
        (b"1.1", b"connection: Keep-Alive, Close", False, b"HTTP/1.1 200 OK\r\nConnection: close\r\n"),
        (b"1.0", None, False, b"HTTP/1.0 200 OK\r\n"),
        (b"1.0", b"Connection: keep-alive", True, b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"),
    ],
)
def test_keep_alive_follows_the_version_and_connection_field(
    version: bytes, connection: bytes | None, keep_alive: bool, status: bytes
) -> None:
    fields = (connection,) if connection else ()
    h = head(req(b"GET /announce?a=1 HTTP/" + version, b"Host: t", *fields))
    assert (h.keep_alive, h.status) == (keep_alive, status)


def test_content_length_zero_is_no_body() -> None:
    assert head(req(b"GET /announce?a HTTP/1.1", b"Content-Length: 0")).kind == ANNOUNCE


def test_passkey_paths_only_in_private_mode() -> None:
    buf = req(f"GET /{PASSKEY}/announce?a HTTP/1.1".encode())
    assert read_head(buf, private=False) == -1
    h = head(buf, private=True)
    assert (h.kind, h.passkey) == (ANNOUNCE, PASSKEY)
    assert head(req(f"GET /{PASSKEY}/scrape HTTP/1.1".encode()), private=True).kind == SCRAPE
    assert read_head(req(b"GET /0123/announce HTTP/1.1"), private=True) == -1


@pytest.mark.parametrize(
    "buf",
    [
        req(b"POST /announce?a HTTP/1.1", b"Content-Length: 0"),
        req(b"OPTIONS * HTTP/1.1"),
        req(b"GET / HTTP/1.1"),
        req(b"GET /metrics HTTP/1.1"),
        req(b"GET /announce/ HTTP/1.1"),
        req(b"GET /%61nnounce?a HTTP/1.1"),  # aiohttp decodes the path: leave it to aiohttp
        req(b"GET http://t/announce?a HTTP/1.1"),  # absolute form
        req(b"GET /announce?a#frag HTTP/1.1"),
        req(b"GET /announce?a HTTP/2.0"),
        req(b"GET /announce?a\xff HTTP/1.1"),
        req(b"GET  /announce?a HTTP/1.1"),
        req(b"GET /announce?a HTTP/1.1", b"Content-Length: 5") + b"hello",
        req(b"GET /announce?a HTTP/1.1", b"Content-Length: 0", b"Content-Length: 0"),
        req(b"GET /announce?a HTTP/1.1", b"Transfer-Encoding: chunked") + b"0\r\n\r\n",
        req(b"GET /announce?a HTTP/1.1", b"Upgrade: websocket", b"Connection: upgrade"),
        req(b"GET /announce?a HTTP/1.1", b"Expect: 100-continue"),
        req(b"GET /announce?a HTTP/1.1", b"Connection: close", b"Connection: keep-alive"),
        req(b"GET /announce?a HTTP/1.1", b"Host : t"),  # space before the colon
        req(b"GET /announce?a HTTP/1.1", b"X: a", b" folded"),  # obsolete line folding
        req(b"GET /announce?a HTTP/1.1", b"X: a\x00b"),
        req(b"GET /announce?a HTTP/1.1", b"X a"),
        b"GET /announce?a HTTP/1.1\nHost: t\n\n",  # bare LF line ends
        b"GET /announce?a HTTP/1.1\r\nHost: t\n\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n",
    ],
)
def test_what_is_not_ours_goes_to_aiohttp(buf: bytes) -> None:
    assert read_head(buf, private=False) == -1


def test_an_unfinished_head_waits_and_a_bad_first_line_does_not() -> None:
    full = req(b"GET /announce?" + QUERY + b" HTTP/1.1", b"Host: t")
    for cut in range(len(full)):
        assert read_head(full[:cut], private=False) == 0, cut
    assert read_head(b"BREW /pot HTTP/1.1\r\nHost", private=False) == -1
    assert read_head(b"\x16\x03\x01\x00", private=False) == 0  # no line end yet


def test_the_head_is_bounded() -> None:
    line = b"GET /announce?" + b"a" * (MAX_HEAD - 40) + b" HTTP/1.1"
    assert isinstance(read_head(req(line), private=False), Head)
    long_field = req(b"GET /announce?a HTTP/1.1", b"X: " + b"b" * MAX_HEAD)
    assert read_head(long_field, private=False) == -1
    assert read_head(long_field[: MAX_HEAD + 4], private=False) == -1  # no end in sight: not ours either
    assert read_head(long_field[: MAX_HEAD + 3], private=False) == 0


@given(st.binary(max_size=300))
def test_any_bytes_give_a_head_or_a_verdict(buf: bytes) -> None:
    out = read_head(buf, private=True)
    assert out in (0, -1) or (isinstance(out, Head) and 0 < out.end <= len(buf))


@given(
    st.lists(st.sampled_from([b"GET", b" ", b"/announce", b"?", b"a=%ff", b"\r\n", b"\n", b"Host:", b"x"]))
)
def test_made_of_request_pieces(parts: list[bytes]) -> None:
    buf = b"".join(parts)
    out = read_head(buf, private=False)
    if isinstance(out, Head):
        assert buf[: out.end].endswith(b"\r\n\r\n")
        assert buf.startswith((b"GET /announce", b"GET /announce?"))
