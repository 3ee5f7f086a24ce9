"""Bounds on the HTTP tracker's connections: what a slowloris or a connection flood meets.

aiohttp reads a request for as long as the client takes and accepts every connection
the kernel hands it, so ~1,000 connections that send half a request each would hold
every file descriptor a default ``ulimit -n 1024`` process has. :class:`ConnectionGuard`
keeps three rules (nginx's ``client_header_timeout``, ``keepalive_timeout`` and
``worker_connections`` in one place):

1. A connection must deliver a complete request head within ``header_timeout_s`` of
   opening or of its previous answer; otherwise it is closed (counted as a slow
   request when bytes came, an idle connection when none did). The check is one sweep
   over connections ordered by when they started waiting, so it costs nothing per byte.
2. At most ``max_connections`` are open. A new connection over the cap first evicts the
   connection that has waited longest for its request head, if that one has waited at
   least ``evict_after_s`` (an honest client sends its request within milliseconds of
   connecting, so what is evicted is what a slowloris holds); when there is none, the
   newcomer is reset at once without reading a byte (the cheapest refusal there is).
3. A tracker request has no body. One that carries a body gets a bencoded failure and
   its connection is closed after at most ``body_timeout_s`` of reading it.

Every refusal bumps a counter that ``/metrics`` shows, and the first refusal at the cap
in each ten seconds is logged. Parse errors (an over-long request line or header, a
malformed request) are answered with a bencoded ``failure reason`` as every other
problem is, instead of aiohttp's plain-text error page, and are not logged as
exceptions (a stranger controls how often they happen).

:class:`GuardedSite` is an aiohttp site whose connections are :class:`GuardedHandler`\\ s
registered with one guard; :func:`guard_middleware` tells the guard when a request head
has arrived and when it has been answered.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.typedefs import Handler

from torrent.proto.tracker_codec import encode_failure

log = logging.getLogger("pytorrent.tracker")

#: File descriptors kept back from the connection cap (UDP sockets, the store's pool,
#: the users database, log files, the listening sockets).
FD_RESERVE = 64
#: Seconds between two "cap reached" log lines.
CAP_LOG_EVERY_S = 10.0
#: Failure reasons sent for refused requests.
TOO_LONG = "request too long"
MALFORMED = "malformed HTTP request"
BODY_REFUSED = "a tracker request has no body"


@dataclass(slots=True)
class GuardCounters:
    """Monotonic counters, one per kind of refusal (exported on ``/metrics``)."""

    refused_cap: int = 0  # reset at accept: at the cap with nothing old enough to evict
    evicted: int = 0  # closed to make room: waited longest for a request head
    slow_request: int = 0  # a request head not complete within header_timeout_s
    idle: int = 0  # nothing sent within header_timeout_s of opening or of the last answer
    body_refused: int = 0  # a request that carried a body
    bad_request: int = 0  # unparseable or over-long request line or headers


def effective_cap(max_connections: int) -> int:
    """``max_connections`` lowered to what the process's open-file limit allows."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return max_connections
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, soft - FD_RESERVE))


class GuardedConnection(Protocol):
    """What the guard needs of a connection: aiohttp's handler (:class:`GuardedHandler`)
    or the announce protocol (``tracker.http1``)."""

    #: bytes of an unfinished request head have arrived
    partial: bool

    @property
    def transport(self) -> asyncio.BaseTransport | None: ...

    def force_close(self) -> None: ...


class ConnectionGuard:
    """Counts, times and caps the HTTP connections of one tracker process.

    Args:
        max_connections: connections open at once (already lowered by
            :func:`effective_cap` if wanted).
        header_timeout_s: time allowed for a request head (see the module doc).
        evict_after_s: a waiting connection this old may be evicted by a newcomer.
        clock: the loop's clock.
    """

    def __init__(
        self,
        *,
        max_connections: int,
        header_timeout_s: float,
        evict_after_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.evict_after_s = evict_after_s
        self.clock = clock
        self.counters = GuardCounters()
        self.open = 0
        #: Connections waiting for a request head -> since when; insertion order is the
        #: order they started waiting, so the oldest is first.
        self._waiting: dict[GuardedConnection, float] = {}
        self._last_cap_log = -CAP_LOG_EVERY_S

    # ------------------------------------------------------------ accept

    def accept(self) -> bool:
        """A connection arrives: True to serve it (evicting one if needed), False to reset it."""
        if self.open < self.max_connections:
            return True
        now = self.clock()
        oldest = next(iter(self._waiting.items()), None)
        if oldest is not None and now - oldest[1] >= self.evict_after_s:
            self.counters.evicted += 1
            self._close(oldest[0])
            self._log_cap(now)
            return True
        self.counters.refused_cap += 1
        self._log_cap(now)
        return False

    def _log_cap(self, now: float) -> None:
        if now - self._last_cap_log >= CAP_LOG_EVERY_S:
            self._last_cap_log = now
            c = self.counters
            log.warning(
                "HTTP connection cap (%d) reached: %d refused, %d evicted so far",
                self.max_connections,
                c.refused_cap,
                c.evicted,
            )

    # ------------------------------------------------------------ one connection's life

    def opened(self, conn: GuardedConnection) -> None:
        self.open += 1
        self._waiting[conn] = self.clock()

    def closed(self, conn: GuardedConnection) -> None:
        self.open -= 1
        self._waiting.pop(conn, None)

    def bytes_arrived(self, conn: GuardedConnection) -> None:
        """Bytes came: if the connection was not waiting for a head, a new one starts."""
        if conn not in self._waiting:
            self._waiting[conn] = self.clock()
        conn.partial = True

    def head_arrived(self, conn: GuardedConnection) -> None:
        self._waiting.pop(conn, None)
        conn.partial = False

    def answered(self, conn: GuardedConnection) -> None:
        """The answer is out: the connection waits for its next request head."""
        if conn.transport is not None and conn not in self._waiting:
            self._waiting[conn] = self.clock()

    # ------------------------------------------------------------ expiry

    def sweep(self) -> int:
        """Close connections whose request head is overdue; returns how many."""
        deadline = self.clock() - self.header_timeout_s
        waiting = self._waiting
        closed = 0
        while waiting:
            conn, since = next(iter(waiting.items()))
            if since > deadline:
                break
            if conn.partial:
                self.counters.slow_request += 1
            else:
                self.counters.idle += 1
            self._close(conn)
            closed += 1
        return closed

    def _close(self, conn: GuardedConnection) -> None:
        self._waiting.pop(conn, None)
        conn.force_close()

    async def run(self) -> None:
        """Sweep a few times per timeout, until cancelled."""
        period = max(0.05, min(1.0, self.header_timeout_s / 4))
        while True:
            await asyncio.sleep(period)
            self.sweep()


class GuardedHandler(web.RequestHandler):
    """aiohttp's connection handler, reporting to a :class:`ConnectionGuard`, and
    answering parse errors with a bencoded failure."""

    def __init__(self, manager: web.Server, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        #: bytes of an unfinished request head have arrived
        self.partial = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.guard.opened(self)
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.guard.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.guard.bytes_arrived(self)
        super().data_received(data)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            log.error("HTTP request from %s failed", request.remote, exc_info=exc)
            reason = "internal tracker error"
        else:
            self.guard.counters.bad_request += 1
            too_long = isinstance(exc, LineTooLong) or status in (413, 414, 431)
            reason = TOO_LONG if too_long else MALFORMED
            log.debug("bad HTTP request from %s: %r %r", request.remote, exc, message)
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was already sent; cannot send the error")
        resp = web.Response(body=encode_failure(reason), content_type="text/plain")
        resp.force_close()
        return resp


class _Reset(asyncio.Protocol):
    """A refused connection: reset at once, nothing read, nothing allocated."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        abort = getattr(transport, "abort", None)
        if abort is not None:
            abort()
        else:
            transport.close()


class GuardedSite(web.BaseSite):
    """A TCP site of ``runner`` whose connections pass through ``guard``.

    Args:
        runner: the set-up :class:`aiohttp.web.AppRunner`.
        guard: the process's connection guard.
        host, port: where to listen.
        reuse_port: bind with SO_REUSEPORT (``--workers``).
        keepalive_timeout_s: aiohttp's own idle timer, a backstop behind the guard's.
        body_timeout_s: the most time spent reading a body we do not use.
        backlog: the listen backlog.
    """

    def __init__(
        self,
        runner: web.AppRunner,
        guard: ConnectionGuard,
        host: str,
        port: int,
        *,
        reuse_port: bool,
        keepalive_timeout_s: float,
        body_timeout_s: float,
        backlog: int = 1024,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._guard = guard
        self._host = host
        self._port = port
        self._reuse_port = reuse_port
        self._handler_args: dict[str, Any] = {
            "access_log": None,
            "keepalive_timeout": keepalive_timeout_s,
            "lingering_time": body_timeout_s,
        }
        self.bound_port = 0

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.bound_port or self._port}"

    def protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        """Makes the protocol of each accepted connection (the guard has let it in)."""
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        guard, args = self._guard, self._handler_args

        def handler() -> asyncio.Protocol:
            return GuardedHandler(server, guard, loop=loop, **args)

        return handler

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        guard, make = self._guard, self.protocol_factory()

        def factory() -> asyncio.Protocol:
            if not guard.accept():
                return _Reset()
            return make()

        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        self._server = await loop.create_server(
            factory,
            self._host,
            self._port,
            family=family,
            backlog=self._backlog,
            reuse_address=True,
            reuse_port=self._reuse_port or None,
        )
        self.bound_port = self._server.sockets[0].getsockname()[1]


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection's guard that a head arrived and, later, that it was answered;
    refuse requests that carry a body."""
    conn = request.protocol
    if not isinstance(conn, GuardedHandler):  # e.g. aiohttp's test server
        return await handler(request)
    guard = conn.guard
    guard.head_arrived(conn)
    if request.body_exists:
        guard.counters.body_refused += 1
        resp = web.Response(body=encode_failure(BODY_REFUSED), content_type="text/plain")
        resp.force_close()
        return resp
    try:
        return await handler(request)
    finally:
        guard.answered(conn)


__all__ = [
    "ConnectionGuard",
    "GuardCounters",
    "GuardedConnection",
    "GuardedHandler",
    "GuardedSite",
    "effective_cap",
    "guard_middleware",
]
