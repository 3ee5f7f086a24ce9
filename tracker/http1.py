"""``/announce`` and ``/scrape`` over a hand-written HTTP/1.1 protocol; aiohttp for the rest.

aiohttp sets up a request handler, a parser, a task and a response object for every
connection and request, which costs about as much CPU as the announce itself; most
clients open a new connection per announce. :class:`AnnounceProtocol` is what every
accepted connection starts with. It reads request heads itself and answers the
requests it fully understands:

* ``GET`` or ``HEAD`` of ``/announce`` or ``/scrape`` (``/<passkey>/announce`` and
  ``/<passkey>/scrape`` in private mode), HTTP/1.0 or 1.1;
* a head of at most :data:`MAX_HEAD` bytes, CRLF line ends, well-formed field lines,
  no body (no ``Transfer-Encoding``, ``Content-Length`` absent or 0), no ``Upgrade``
  or ``Expect``.

Anything else (another path, another method, a body, a malformed or longer head) is
handed, at that request's first byte, to aiohttp's handler for the same connection
(:class:`~tracker.guard.GuardedHandler`), which then owns the connection: the status
page, ``/metrics``, a 404 or 405, and every bencoded parse error come from there exactly
as before. The answers themselves come from :class:`~tracker.endpoints.HttpEndpoints`,
which the aiohttp routes call too.

Keep-alive follows HTTP/1.1 (``Connection: close`` closes; HTTP/1.0 keeps alive only
on ``Connection: keep-alive``). Pipelined requests are answered in order: an answer
that must wait for the store (Redis) holds back the requests behind it. The connection
guard sees the same events as with aiohttp (opened, bytes, head complete, answered,
closed), so its header timeout, idle timeout and connection cap apply unchanged. One
difference: a connection handed over starts its wait for a request head afresh, so a
request that is not ours may take up to twice the header timeout in all (it is handed
over as soon as its request line shows it is not ours).

:func:`read_head` is the pure part (bytes in, a :class:`Head` out) and is tested alone; the
request head itself is read by :mod:`torrent.proto.http1`, which the daemon's RPC shares.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Coroutine
from email.utils import formatdate
from typing import Any, Final, NamedTuple

from aiohttp import web

from torrent.proto.http1 import MAX_HEAD, read_request_head
from tracker.endpoints import HttpEndpoints
from tracker.guard import ConnectionGuard, GuardedSite

#: Bytes held while an earlier answer is pending before reading pauses.
MAX_BUFFERED: Final = 4 * MAX_HEAD

ANNOUNCE: Final = 1
SCRAPE: Final = 2

_METHODS: Final = frozenset((b"GET", b"HEAD"))
_PATHS: Final = {b"/announce": ANNOUNCE, b"/scrape": SCRAPE}
_PASSKEY_PATH = re.compile(rb"/([0-9a-f]{32})/(announce|scrape)")
#: Status line and connection header by (HTTP/1.0?, keep alive?), as aiohttp writes them.
_STATUS: Final = {
    (False, True): b"HTTP/1.1 200 OK\r\n",
    (False, False): b"HTTP/1.1 200 OK\r\nConnection: close\r\n",
    (True, True): b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n",
    (True, False): b"HTTP/1.0 200 OK\r\n",
}


class Head(NamedTuple):
    """A request head :func:`read_head` accepted.

    Attributes:
        kind: :data:`ANNOUNCE` or :data:`SCRAPE`.
        query: the raw query string (still percent-encoded).
        passkey: private mode's path passkey, else ``None``.
        keep_alive: the connection stays open after the answer.
        status: the answer's status line and connection header.
        head_only: a ``HEAD`` request: the answer has no body.
        end: the offset just past the head in the buffer.
    """

    kind: int
    query: bytes
    passkey: str | None
    keep_alive: bool
    status: bytes
    head_only: bool
    end: int


def read_head(buf: bytes, *, private: bool) -> Head | int:
    """The first request head of ``buf`` (read by :func:`torrent.proto.http1.read_request_head`).

    Returns:
        a :class:`Head` when the request is one answered here; ``0`` when the head is
        not complete yet (and may still be); ``-1`` when the request is not ours (the
        caller hands ``buf`` to aiohttp).
    """
    head = read_request_head(buf, _METHODS)
    if isinstance(head, int):
        return head
    path, _, query = head.target.partition(b"?")
    kind = _PATHS.get(path)
    passkey = None
    if kind is None:
        m = _PASSKEY_PATH.fullmatch(path) if private else None
        if m is None:
            return -1
        kind = ANNOUNCE if m.group(2) == b"announce" else SCRAPE
        passkey = m.group(1).decode()
    if b"#" in query or head.content_length:
        return -1
    keep_alive = head.keep_alive
    return Head(
        kind, query, passkey, keep_alive, _STATUS[head.http10, keep_alive], head.method == b"HEAD", head.end
    )


class HttpFront:
    """What every :class:`AnnounceProtocol` of one site shares.

    Args:
        endpoints: the announce and scrape logic.
        guard: the process's connection guard.
        fallback: makes aiohttp's handler for a connection handed over.
        private: private mode (``/<passkey>/announce`` paths).
    """

    def __init__(
        self,
        endpoints: HttpEndpoints,
        guard: ConnectionGuard,
        fallback: Callable[[], asyncio.Protocol],
        *,
        private: bool,
    ) -> None:
        self.endpoints = endpoints
        self.guard = guard
        self.fallback = fallback
        self.private = private
        self.tasks: set[asyncio.Task[None]] = set()
        self._date_at = -1
        self._date = b""

    def date(self) -> bytes:
        """The ``Date`` header's value, formatted once a second."""
        now = int(time.time())
        if now != self._date_at:
            self._date_at = now
            self._date = formatdate(now, usegmt=True).encode()
        return self._date

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class AnnounceProtocol(asyncio.Protocol):
    """One HTTP connection: announces and scrapes here, anything else handed to aiohttp
    (see the module doc)."""

    __slots__ = (
        "_buf",
        "_eof",
        "_pending",
        "_reading_paused",
        "_remote",
        "_write_paused",
        "front",
        "partial",
        "transport",
    )

    def __init__(self, front: HttpFront) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        #: bytes of an unfinished request head have arrived (read by the guard)
        self.partial = False
        self._buf = b""
        self._remote: str | None = None
        #: an answer is waiting for the store; requests behind it wait in ``_buf``
        self._pending = False
        self._write_paused = False
        self._reading_paused = False
        #: the client half-closed while an answer was pending
        self._eof = False

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.front.guard.opened(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.transport is not None:  # None once handed to aiohttp
            self.transport = None
            self.front.guard.closed(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if not self._pending:
            self._resume()

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        self.front.guard.bytes_arrived(self)
        buf = self._buf + data if self._buf else data
        if self._pending or self._write_paused:
            self._buf = buf
            if len(buf) > MAX_BUFFERED and not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()
            return
        self._serve(buf)

    def eof_received(self) -> bool | None:
        """A half-closed client has sent all its requests: close once those pending or
        held back are answered."""
        if self._pending:
            self._eof = True
            return True  # keep the transport open for the answer
        return None

    # ------------------------------------------------------------ the guard's view

    def force_close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------ serving

    def _serve(self, buf: bytes) -> None:
        """Answer the complete requests at the start of ``buf``, in order."""
        front = self.front
        guard = front.guard
        transport = self.transport
        assert transport is not None
        while True:
            head = read_head(buf, private=front.private)
            if isinstance(head, int):
                if head:
                    self._hand_off(buf)
                else:
                    self._buf = buf
                return
            guard.head_arrived(self)
            rest = buf[head.end :]
            if head.kind == ANNOUNCE:
                body = front.endpoints.announce(head.query, self._peer(), head.passkey)
                if not isinstance(body, bytes):
                    self._wait(front.endpoints.finish(body), head, rest)
                    return
            else:
                self._wait(front.endpoints.scrape(head.query, head.passkey), head, rest)
                return
            if not self._send(head, body) or not rest:
                self._buf = b""
                return
            self.partial = True
            if self._write_paused:
                self._buf = rest
                return
            buf = rest

    def _send(self, head: Head, body: bytes) -> bool:
        """Write the answer; False when the connection closes after it."""
        transport = self.transport
        assert transport is not None
        transport.write(
            b"%sContent-Type: text/plain\r\nContent-Length: %d\r\nDate: %s\r\nServer: pytorrent\r\n\r\n%s"
            % (head.status, len(body), self.front.date(), b"" if head.head_only else body)
        )
        if not head.keep_alive:
            transport.close()
            return False
        self.front.guard.answered(self)
        return True

    def _peer(self) -> str:
        remote = self._remote
        if remote is None:
            assert self.transport is not None
            peer = self.transport.get_extra_info("peername")
            remote = self._remote = str(peer[0]) if peer else ""
        return remote

    def _wait(self, answer: Coroutine[Any, Any, bytes], head: Head, rest: bytes) -> None:
        """The answer needs the event loop: hold the requests behind it until it is sent."""
        self._pending = True
        self._buf = rest
        self.front.spawn(self._answer_later(answer, head))

    async def _answer_later(self, answer: Coroutine[Any, Any, bytes], head: Head) -> None:
        try:
            body = await answer
        finally:
            self._pending = False
        if self.transport is None or self.transport.is_closing():
            return
        if self._send(head, body):
            if self._buf:
                self.partial = True
            if not self._write_paused:
                self._resume()
            if self._eof and not self._pending and self.transport is not None:
                self.transport.close()

    def _resume(self) -> None:
        """Go on with what arrived while an answer was pending or writes were paused."""
        if self.transport is None:
            return
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        buf, self._buf = self._buf, b""
        if buf:
            self._serve(buf)

    def _hand_off(self, buf: bytes) -> None:
        """aiohttp's handler takes the connection over, from the first byte of ``buf``."""
        transport = self.transport
        assert transport is not None
        self.transport = None
        self._buf = b""
        guard = self.front.guard
        guard.closed(self)
        if self._reading_paused:
            transport.resume_reading()
        handler = self.front.fallback()
        transport.set_protocol(handler)
        handler.connection_made(transport)  # the handler registers with the guard itself
        if buf:
            handler.data_received(buf)


class TrackerSite(GuardedSite):
    """A :class:`~tracker.guard.GuardedSite` whose connections start as
    :class:`AnnounceProtocol`\\ s over ``endpoints``."""

    def __init__(
        self,
        runner: web.AppRunner,
        guard: ConnectionGuard,
        endpoints: HttpEndpoints,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, guard, *args, **kwargs)
        self._endpoints = endpoints
        self._front: HttpFront | None = None

    def protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        front = self._front = HttpFront(
            self._endpoints,
            self._guard,
            super().protocol_factory(),
            private=self._endpoints.service.private is not None,
        )
        return lambda: AnnounceProtocol(front)

    async def stop(self) -> None:
        await super().stop()
        if self._front is not None:
            for task in list(self._front.tasks):
                task.cancel()


__all__ = [
    "ANNOUNCE",
    "MAX_HEAD",
    "SCRAPE",
    "AnnounceProtocol",
    "Head",
    "HttpFront",
    "TrackerSite",
    "read_head",
]
