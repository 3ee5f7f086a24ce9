"""HTTP/1.x request heads read the strict way, for servers that answer the simple requests
themselves and hand every other one to a full HTTP server (aiohttp).

Pure, sans-IO: :func:`read_request_head` takes the bytes received so far and returns
a :class:`RequestHead`, or says that more bytes are needed, or that the request is not a
simple one. The tracker's announces (``tracker/http1.py``) and the daemon's RPC
(``torrent/daemon/front.py``) read their requests with it.

A *simple* request (RFC 9112) has:

* a request line ``METHOD SP origin-form SP HTTP/1.0|1.1 CRLF`` with one of the methods
  the caller takes and a visible-ASCII target;
* well-formed field lines (``token ":" OWS value OWS CRLF``, no obsolete line folding, no
  control bytes), CRLF line ends, and a head of at most :data:`MAX_HEAD` bytes;
* no ``Transfer-Encoding``, ``Upgrade`` or ``Expect`` field; at most one
  ``Content-Length`` (digits only) and one ``Connection``, and at most one of each name
  the caller lists as ``single``.

Anything else (a longer head, a chunked body, a field given twice that must not be, bare
LF line ends, a TLS hello) is not simple: the caller hands the connection, from that
request's first byte, to the full server, which answers or refuses it as it always did.

Keep-alive follows HTTP/1.1: ``Connection: close`` closes, HTTP/1.0 keeps the
connection only with ``Connection: keep-alive``.
"""

from __future__ import annotations

import re
from collections.abc import Container
from typing import Final, NamedTuple

__all__ = ["MAX_HEAD", "NEED_DATA", "NOT_SIMPLE", "RequestHead", "read_request_head"]

#: The longest request head read here; a longer one is not simple (aiohttp has its own
#: limits: 8190 bytes a line or field).
MAX_HEAD: Final = 8192
#: :func:`read_request_head`'s verdicts when it returns no head.
NEED_DATA: Final = 0
NOT_SIMPLE: Final = -1

#: ``token SP origin-form SP HTTP/1.x CRLF`` with a visible-ASCII target.
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (/[!-~]*) HTTP/1\.([01])\r\n")
#: Field lines (RFC 9112 5: token ":" OWS value OWS CRLF), then the empty line.
_FIELDS = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t -~\x80-\xff]*\r\n)*\r\n")
#: Field names (lower case, after a line start) that make a request not simple.
_NOT_SIMPLE_FIELDS: Final = (b"\ntransfer-encoding:", b"\nupgrade:", b"\nexpect:")
_CONTENT_LENGTH: Final = b"\ncontent-length:"
_CONNECTION: Final = b"\nconnection:"


class RequestHead(NamedTuple):
    """A simple request's head (see the module doc).

    Attributes:
        method: as sent (``b"GET"``).
        target: the origin-form target, query included (``b"/announce?..."``).
        http10: an HTTP/1.0 request.
        keep_alive: the connection stays open after the answer.
        content_length: the body's length (0 without ``Content-Length``).
        fields: the field lines as sent, after a ``\\n`` (empty without fields).
        lower: ``fields`` in lower case (same offsets).
        end: the offset just past the head (where the body starts).
    """

    method: bytes
    target: bytes
    http10: bool
    keep_alive: bool
    content_length: int
    fields: bytes
    lower: bytes
    end: int

    def field(self, name: bytes) -> bytes | None:
        """The value of field ``name`` (lower case), OWS trimmed; None when absent.
        Only the first one counts (a name in ``single`` appears at most once)."""
        return _value(self.fields, self.lower, name)


def read_request_head(
    buf: bytes, methods: Container[bytes], single: tuple[bytes, ...] = ()
) -> RequestHead | int:
    """The first request head of ``buf``.

    Args:
        buf: the bytes received, from a request's first byte.
        methods: the methods the caller answers; any other is not simple.
        single: lower-case field names that must not repeat (besides
            ``content-length`` and ``connection``).

    Returns:
        a :class:`RequestHead`; :data:`NEED_DATA` when the head is not complete yet (and
        may still become a simple one); :data:`NOT_SIMPLE` otherwise.
    """
    end = buf.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
    if end < 0:
        return _unfinished(buf, methods)
    line = _REQUEST_LINE.match(buf, 0, end + 2)
    if line is None or line.group(1) not in methods:
        return NOT_SIMPLE
    method, target, minor = line.groups()
    http10 = minor == b"0"
    keep_alive = not http10
    length = 0
    fields = lower = b""
    fields_at = line.end()
    if fields_at < end + 2:  # there are field lines
        if _FIELDS.fullmatch(buf, fields_at, end + 4) is None:
            return NOT_SIMPLE
        fields = buf[fields_at - 1 : end + 4]  # from the request line's LF
        lower = fields.lower()
        for name in _NOT_SIMPLE_FIELDS:
            if name in lower:
                return NOT_SIMPLE
        for pattern in _single_patterns(single):
            if lower.count(pattern) > 1:
                return NOT_SIMPLE
        at = lower.find(_CONTENT_LENGTH)
        if at >= 0:
            value = _after(lower, at + len(_CONTENT_LENGTH))
            if not value.isdigit() or lower.find(_CONTENT_LENGTH, at + 1) >= 0:
                return NOT_SIMPLE
            length = int(value)
        at = lower.find(_CONNECTION)
        if at >= 0:
            if lower.find(_CONNECTION, at + 1) >= 0:
                return NOT_SIMPLE
            tokens = {t.strip(b" \t") for t in _after(lower, at + len(_CONNECTION)).split(b",")}
            if b"close" in tokens:
                keep_alive = False
            elif b"keep-alive" in tokens:
                keep_alive = True
    return RequestHead(method, target, http10, keep_alive, length, fields, lower, end + 4)


#: ``single``'s field names as :func:`read_request_head` looks for them, per tuple.
_PATTERNS: dict[tuple[bytes, ...], tuple[bytes, ...]] = {}


def _single_patterns(single: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """``\\nNAME:`` for each name (made once per tuple of names; a caller has one)."""
    patterns = _PATTERNS.get(single)
    if patterns is None:
        patterns = tuple(b"\n" + name + b":" for name in single)
        if len(_PATTERNS) < 16:
            _PATTERNS[single] = patterns
    return patterns


def _unfinished(buf: bytes, methods: Container[bytes]) -> int:
    """:func:`read_request_head` of a head without its end: wait for more, unless it
    cannot become a simple one (too long, a bad line end, or a request line already
    there that is wrong: that is said now, not at the timeout)."""
    if len(buf) >= MAX_HEAD + 4 or b"\n\n" in buf:
        return NOT_SIMPLE
    nl = buf.find(b"\n")
    if nl < 0:
        return NEED_DATA
    line = _REQUEST_LINE.match(buf, 0, nl + 1)
    return NEED_DATA if line is not None and line.group(1) in methods else NOT_SIMPLE


def _value(fields: bytes, lower: bytes, name: bytes) -> bytes | None:
    """The first value of field ``name`` in ``fields`` (found in their lower-case copy)."""
    at = lower.find(b"\n" + name + b":")
    return None if at < 0 else _after(fields, at + len(name) + 2)


def _after(fields: bytes, start: int) -> bytes:
    """The field value that starts at ``start``, OWS trimmed."""
    return fields[start : fields.find(b"\r\n", start)].strip(b" \t")
