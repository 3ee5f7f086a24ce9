"""The session's HTTP client for trackers and web seeds: plain HTTP/1.1 GETs of its own, aiohttp
for the rest, started on first use.

aiohttp costs about 110 ms of CPU and 13-20 MiB to import (it builds its TLS contexts then),
more than a whole ``pytorrent download`` spends from process start to its first connection.
Most trackers are plain ``http://``, and an announce is one small GET answered by a small
bencoded body, so :meth:`HttpClient.get` sends those itself over an asyncio stream: one
connection per announce (``Connection: close``; announces are minutes apart), the answer
read as HTTP/1.1 says (``Content-Length``, ``chunked``, or until the server closes; gzip
and deflate decoded although we never ask for them), every part of it bounded. ``https://``
URLs, URLs that are not plain ASCII (yarl encodes those) or carry a user name (Basic auth),
web seeds (:meth:`session`) and a client handed an aiohttp session (tests) go through aiohttp, loaded by the first of them;
every later one shares the same connection pool.

Redirects are the caller's: :meth:`HttpClient.get` returns a 3xx with its ``Location``
unread, so each hop is sent exactly as the server wrote it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import aiohttp
    from yarl import URL

__all__ = ["BodyTooLarge", "HttpClient", "HttpError", "HttpReply", "wire_url"]

#: Connections the pool keeps open at once, across every host.
POOL_LIMIT = 20
#: Statuses whose ``Location`` the caller follows (the body is not read).
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Happy Eyeballs (RFC 8305): the next address of a host is tried when the last one has not
#: connected after this long (its recommended 250 ms, aiohttp's too).
CONNECT_STAGGER_S = 0.25
#: Longest status or header line we read from a server, and most header lines.
MAX_HEAD_LINE = 8 * 1024
MAX_HEAD_LINES = 100


class HttpReply(NamedTuple):
    """A server's answer: ``body`` is empty for a redirect (its ``location`` says where)."""

    status: int
    reason: str
    location: str | None
    body: bytes


class HttpError(Exception):
    """The exchange failed: the answer broke HTTP/1.1, or aiohttp raised (its message)."""


class BodyTooLarge(HttpError):
    """The body is longer than the caller's bound (it was not read to its end)."""


def wire_url(url: str) -> URL:
    """``url`` as a yarl URL that goes on the wire byte for byte.

    The tracker codec percent-encodes every byte of binary values (``info_hash``,
    ``peer_id``) except RFC 3986's unreserved characters; yarl's default parsing would
    decode ``%24`` back to a raw ``$`` (and ``%2F``, ``%3F``, ``%40``...), which
    opentracker answers with HTTP 400. A URL that is not plain ASCII (a user's announce
    URL with a space or a non-ASCII host) has not been encoded yet: yarl encodes that one.
    """
    from yarl import URL

    if _encoded(url):
        return URL(url, encoded=True)
    return URL(url)


def _encoded(url: str) -> bool:
    return url.isascii() and " " not in url


class HttpClient:
    """Plain HTTP GETs of our own; one aiohttp client session for the rest, made when first needed."""

    def __init__(self, user_agent: str = "", *, session: aiohttp.ClientSession | None = None) -> None:
        """``session``: use this one for every request, plain HTTP too (the caller closes it;
        :meth:`close` does not)."""
        self._user_agent = user_agent
        self._session = session
        self._owned = session is None

    @property
    def started(self) -> bool:
        """The aiohttp session exists (our own GETs need none)."""
        return self._session is not None

    def session(self) -> aiohttp.ClientSession:
        """The aiohttp client session; call from a coroutine on the loop that will use it."""
        if self._session is None:
            import aiohttp  # the first request that needs it pays for the import

            headers = {"User-Agent": self._user_agent} if self._user_agent else None
            self._session = aiohttp.ClientSession(
                headers=headers, connector=aiohttp.TCPConnector(limit=POOL_LIMIT, force_close=False)
            )
        return self._session

    async def get(self, url: str, *, max_body: int) -> HttpReply:
        """GET ``url`` (already percent-encoded, as the tracker codec makes it), no redirect
        followed. Bound the whole call with a timeout: this one has none.

        Raises:
            BodyTooLarge: the body is longer than ``max_body`` bytes.
            HttpError: the answer is not HTTP/1.x, or aiohttp failed.
            OSError: the connection failed.
        """
        if self._owned and url[:7].lower() == "http://" and _encoded(url):
            return await self._get_plain(url, max_body)
        return await self._get_aiohttp(url, max_body)

    async def _get_aiohttp(self, url: str, max_body: int) -> HttpReply:
        import aiohttp

        try:
            async with self.session().get(wire_url(url), allow_redirects=False) as resp:
                location = resp.headers.get("Location")
                if resp.status in REDIRECT_STATUSES and location:
                    return HttpReply(resp.status, resp.reason or "", location, b"")
                if resp.content_length is not None and resp.content_length > max_body:
                    raise BodyTooLarge(f"more than {max_body} bytes")
                # A single read(n) returns whatever has arrived: read until the end.
                body = bytearray()
                while chunk := await resp.content.read(max_body + 1 - len(body)):
                    body += chunk
                    if len(body) > max_body:
                        raise BodyTooLarge(f"more than {max_body} bytes")
                return HttpReply(resp.status, resp.reason or "", location, bytes(body))
        except aiohttp.ClientError as exc:
            raise HttpError(str(exc) or type(exc).__name__) from None

    async def _get_plain(self, url: str, max_body: int) -> HttpReply:
        from urllib.parse import urlsplit  # by the first announce, not by every start

        parts = urlsplit(url)
        if "@" in parts.netloc:  # user:password@host: aiohttp sends them as Basic auth
            return await self._get_aiohttp(url, max_body)
        try:
            port = parts.port or 80
        except ValueError:
            raise HttpError(f"bad port in {url!r}") from None
        if not parts.hostname:
            raise HttpError(f"no host in {url!r}")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = f"GET {target} HTTP/1.1\r\nHost: {parts.netloc.rpartition('@')[2]}\r\n"
        if self._user_agent:
            head += f"User-Agent: {self._user_agent}\r\n"
        head += "Accept: */*\r\nConnection: close\r\n\r\n"
        reader, writer = await open_staggered(parts.hostname, port)
        try:
            writer.write(head.encode("ascii"))
            return await read_reply(reader, max_body)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._owned:
            await session.close()


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _connect_one(ip: str, port: int) -> Stream:
    return await asyncio.open_connection(ip, port, limit=MAX_HEAD_LINE)


async def open_staggered(host: str, port: int) -> Stream:
    """A connection to the first of ``host``'s addresses that answers (RFC 8305, as aiohttp
    connects): the addresses are tried in the resolver's order with the families
    interleaved, the next one as soon as the last failed or after ``CONNECT_STAGGER_S``.
    (uvloop's ``create_connection`` takes no ``happy_eyeballs_delay`` and tries one address
    after another, so an unreachable IPv6 address would use up the announce's timeout.)

    Raises:
        OSError: no address, or every one failed (their errors joined).
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addrs = interleave_families([(family, str(sockaddr[0])) for family, _, _, _, sockaddr in infos])
    if not addrs:
        raise OSError(f"{host}: no address")
    streams: list[Stream] = []
    errors: list[str] = []
    wake = asyncio.Event()

    async def attempt(ip: str) -> None:
        try:
            streams.append(await _connect_one(ip, port))
        except OSError as exc:
            errors.append(f"{ip}: {exc.strerror or exc}")
        finally:
            wake.set()

    async with asyncio.TaskGroup() as tg:
        tasks = []
        for ip in addrs:
            tasks.append(tg.create_task(attempt(ip)))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CONNECT_STAGGER_S):
                    await wake.wait()  # this attempt (or an earlier one) ended
            wake.clear()
            if streams:
                break
        while not streams and len(errors) < len(tasks):
            await wake.wait()
            wake.clear()
        for task in tasks:
            task.cancel()
    if not streams:
        raise OSError(f"cannot connect to {host} port {port} ({'; '.join(errors)})")
    for _, writer in streams[1:]:  # two connected at once: keep the first
        writer.close()
    return streams[0]


def interleave_families(addrs: Sequence[tuple[int, str]]) -> list[str]:
    """The addresses in the resolver's order, but alternating between the first family and
    the others (RFC 8305 section 4), without repeats."""
    unique = list(dict.fromkeys(addrs))
    if not unique:
        return []
    first = unique[0][0]
    ours = [ip for family, ip in unique if family == first]
    others = [ip for family, ip in unique if family != first]
    out: list[str] = []
    for i in range(max(len(ours), len(others))):
        out += ours[i : i + 1] + others[i : i + 1]
    return out


async def read_reply(reader: asyncio.StreamReader, max_body: int) -> HttpReply:
    """An HTTP/1.x answer to a GET, from its status line to the end of its body.

    Raises:
        BodyTooLarge: the body is longer than ``max_body`` bytes.
        HttpError: not HTTP/1.x, a head line longer than ``MAX_HEAD_LINE`` or more than
            ``MAX_HEAD_LINES`` of them, an unknown transfer or content coding, or a body
            cut short.
    """
    while True:
        status, reason, headers = await _read_head(reader)
        if not 100 <= status < 200:  # 1xx: an interim answer, the real one follows
            break
    location = headers.get("location")
    if status in REDIRECT_STATUSES and location:
        return HttpReply(status, reason, location, b"")
    coding = headers.get("transfer-encoding", "identity").lower()
    if status in (204, 304):
        body = b""
    elif coding == "chunked":
        body = await _read_chunked(reader, max_body)
    elif coding != "identity":
        raise HttpError(f"unsupported transfer coding {coding!r}")
    elif "content-length" in headers:
        body = await _read_sized(reader, headers["content-length"], max_body)
    else:  # the body ends when the server closes the connection
        whole = bytearray()
        while len(whole) <= max_body and (more := await reader.read(max_body + 1 - len(whole))):
            whole += more
        if len(whole) > max_body:
            raise BodyTooLarge(f"more than {max_body} bytes")
        body = bytes(whole)
    return HttpReply(status, reason, location, _decoded(body, headers.get("content-encoding", ""), max_body))


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise HttpError(f"a line of the answer is longer than {MAX_HEAD_LINE} bytes") from None
    except asyncio.IncompleteReadError:
        raise HttpError("the server closed the connection in the middle of its answer") from None
    return line.rstrip(b"\r\n")


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
    """The status line and the headers (names lowercased; a repeated one keeps its last value)."""
    first = await _line(reader)
    version, _, rest = first.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise HttpError(f"not an HTTP/1.x answer: {first[:60]!r}")
    headers: dict[str, str] = {}
    for _ in range(MAX_HEAD_LINES):
        line = await _line(reader)
        if not line:
            return int(code), reason.decode("latin-1"), headers
        name, sep, value = line.partition(b":")
        if not sep:
            raise HttpError(f"bad header line: {line[:60]!r}")
        headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    raise HttpError(f"more than {MAX_HEAD_LINES} header lines")


async def _read_sized(reader: asyncio.StreamReader, length: str, max_body: int) -> bytes:
    if not length.isdigit():
        raise HttpError(f"bad Content-Length {length[:30]!r}")
    n = int(length)
    if n > max_body:
        raise BodyTooLarge(f"more than {max_body} bytes")
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError as exc:
        raise HttpError(f"the body ended after {len(exc.partial)} of {n} bytes") from None


async def _read_chunked(reader: asyncio.StreamReader, max_body: int) -> bytes:
    body = bytearray()
    while True:
        size_field = (await _line(reader)).partition(b";")[0].strip()
        try:
            size = int(size_field, 16)
        except ValueError:
            raise HttpError(f"bad chunk size {size_field[:30]!r}") from None
        if size < 0:
            raise HttpError(f"bad chunk size {size_field[:30]!r}")
        if size == 0:
            break
        if len(body) + size > max_body:
            raise BodyTooLarge(f"more than {max_body} bytes")
        try:
            body += await reader.readexactly(size)
        except asyncio.IncompleteReadError:
            raise HttpError("the body ended in the middle of a chunk") from None
        if await _line(reader):
            raise HttpError("a chunk is longer than its size says")
    for _ in range(MAX_HEAD_LINES):  # trailer fields, up to the empty line
        if not await _line(reader):
            return bytes(body)
    raise HttpError(f"more than {MAX_HEAD_LINES} trailer lines")


def _decoded(body: bytes, coding: str, max_body: int) -> bytes:
    """``body`` without its ``Content-Encoding`` (identity, gzip, deflate), at most ``max_body`` bytes."""
    coding = coding.strip().lower()
    if coding in ("", "identity"):
        return body
    if coding not in ("gzip", "x-gzip", "deflate"):
        raise HttpError(f"unsupported content coding {coding!r}")
    import zlib

    # gzip or zlib by their headers (wbits 32 + 15); deflate sent raw, as some servers do (-15).
    for wbits in (47, -15) if coding == "deflate" else (47,):
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(body, max_body + 1)
        except zlib.error:
            continue
        if len(out) > max_body:
            raise BodyTooLarge(f"more than {max_body} bytes once decoded")
        return out
    raise HttpError(f"the body is not valid {coding}")
