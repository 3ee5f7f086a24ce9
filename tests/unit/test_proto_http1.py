"""The shared strict request-head reader (``torrent/proto/http1.py``): what is simple,
what waits for more bytes, what goes to the full server."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torrent.proto.http1 import MAX_HEAD, NEED_DATA, NOT_SIMPLE, RequestHead, read_request_head

METHODS = frozenset((b"GET", b"POST"))
SINGLE = (b"host", b"authorization")


def req(line: bytes, *fields: bytes) -> bytes:
    return line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


def head(buf: bytes) -> RequestHead:
    out = read_request_head(buf, METHODS, SINGLE)
    assert isinstance(out, RequestHead), out
    return out


def test_a_post_with_its_body_length_and_fields_as_sent() -> None:
    buf = req(
        b"POST /transmission/rpc HTTP/1.1",
        b"Host: 127.0.0.1:9091",
        b"X-Transmission-Session-Id:  AbC-123 ",
        b"Content-Length: 5",
    )
    h = head(buf + b"hello")
    assert (h.method, h.target, h.http10, h.keep_alive, h.content_length) == (
        b"POST",
        b"/transmission/rpc",
        False,
        True,
        5,
    )
    assert (buf + b"hello")[h.end :] == b"hello"
    assert h.field(b"x-transmission-session-id") == b"AbC-123"  # case kept, OWS trimmed
    assert h.field(b"host") == b"127.0.0.1:9091"
    assert h.field(b"authorization") is None


def test_no_fields_and_keep_alive_by_version() -> None:
    h = head(req(b"GET / HTTP/1.0"))
    assert (h.http10, h.keep_alive, h.content_length, h.fields) == (True, False, 0, b"")
    assert head(req(b"GET / HTTP/1.0", b"Connection: Keep-Alive")).keep_alive
    assert not head(req(b"GET / HTTP/1.1", b"Connection: keep-alive, close")).keep_alive


@pytest.mark.parametrize(
    "buf",
    [
        req(b"PUT / HTTP/1.1"),  # a method the caller does not take
        req(b"GET / HTTP/1.1", b"Host: a", b"host: b"),  # a single field given twice
        req(b"GET / HTTP/1.1", b"Content-Length: 1", b"Content-Length: 1"),
        req(b"GET / HTTP/1.1", b"Content-Length: -1"),
        req(b"GET / HTTP/1.1", b"Content-Length: 0x10"),
        req(b"GET / HTTP/1.1", b"Transfer-Encoding: chunked"),
        req(b"GET / HTTP/1.1", b"Connection: close", b"Connection: close"),
        req(b"GET / HTTP/1.1", b"Host : a"),
        b"GET / HTTP/1.1\nHost: a\n\n",
        req(b"GET / HTTP/1.1", b"X: " + b"a" * MAX_HEAD),
    ],
)
def test_not_simple(buf: bytes) -> None:
    assert read_request_head(buf, METHODS, SINGLE) == NOT_SIMPLE


def test_a_field_not_named_single_may_repeat() -> None:
    assert head(req(b"GET / HTTP/1.1", b"Accept: a", b"Accept: b")).field(b"accept") == b"a"


def test_every_prefix_of_a_simple_head_waits() -> None:
    full = req(b"POST /transmission/rpc HTTP/1.1", b"Host: h", b"Content-Length: 2")
    for cut in range(len(full)):
        assert read_request_head(full[:cut], METHODS, SINGLE) == NEED_DATA, cut
    assert read_request_head(b"PUT / HTTP/1.1\r\nHo", METHODS, SINGLE) == NOT_SIMPLE  # said at once


@given(st.binary(max_size=300))
def test_any_bytes_give_a_head_or_a_verdict(buf: bytes) -> None:
    out = read_request_head(buf, METHODS, SINGLE)
    assert out in (NEED_DATA, NOT_SIMPLE) or (isinstance(out, RequestHead) and 0 < out.end <= len(buf))
