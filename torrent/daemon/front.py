"""The RPC over a hand-written HTTP/1.1 protocol; aiohttp for everything else.

aiohttp sets up a request handler, a parser, a task and a response object for every
connection and request, and most RPC clients (``transmission-remote``, scripts) open a
new connection per call: that was most of a ``torrent-get``'s time at 1,000 torrents
besides the listing itself. Importing aiohttp's server also costs a restarting daemon
about 0.3 s before it can answer. So every accepted connection starts as an
:class:`RpcProtocol`, which answers the requests it fully understands:

* ``POST`` or ``GET`` of ``/transmission/rpc`` (or ``/transmission/rpc/``), no query;
* a simple head (:func:`torrent.proto.http1.read_request_head`: at most
  :data:`~torrent.proto.http1.MAX_HEAD` bytes, no ``Transfer-Encoding``, ``Upgrade`` or
  ``Expect``) with one ``Host``, at most one ``Authorization`` and one
  ``X-Transmission-Session-Id``, and a ``Content-Length`` body of at most
  :data:`~torrent.daemon.rpc.MAX_BODY_BYTES`.

It runs the same checks as the aiohttp application, in the same order (basic auth 401,
host whitelist 421, session id 409, method 405: :func:`~torrent.daemon.rpc.refuse_client`,
:func:`~torrent.daemon.rpc.refuse_rpc`) and the same :func:`~torrent.daemon.rpc.answer`.
A refused request is answered as soon as its head is read; its body (when it has one
not yet received) is read and dropped when it is at most :data:`MAX_SKIPPED_BODY`
bytes, otherwise the connection closes after the answer.

Anything else (the web UI, ``/metrics``, another method or path, a malformed, chunked or
oversized request) is handed, from that request's first byte, to aiohttp's handler for
the same connection, which then owns it and answers exactly as before. aiohttp is
imported and its application built once the daemon's first scheduler pass has listed
every stored torrent (and :data:`WEB_LOAD_DELAY_S` more), or at once when a request
needs it; such a request waits for it. What an add and its check import is imported
then too (:meth:`~torrent.daemon.service.Daemon.preload`).

Keep-alive follows HTTP/1.1 (``Connection: close`` closes; HTTP/1.0 keeps alive only on
``Connection: keep-alive``). Pipelined requests are answered in order: requests behind
one being answered wait (reading pauses past :data:`MAX_BUFFERED` bytes). A request's
head must arrive within :data:`REQUEST_TIMEOUT_S` of its first byte and its body within
:data:`BODY_TIMEOUT_S` of the head, and an idle connection is closed after
:data:`KEEPALIVE_TIMEOUT_S` (aiohttp's default keep-alive timeout). At most
:data:`MAX_CONNECTIONS` connections are open at once, those handed over to aiohttp
included (until aiohttp's handler of one has finished with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final

from torrent.daemon import rpc
from torrent.daemon.service import Daemon
from torrent.proto.http1 import MAX_HEAD, NEED_DATA, RequestHead, read_request_head

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["RpcFront", "RpcProtocol", "RpcServer"]

#: Seconds after the daemon's first scheduler pass before aiohttp is loaded (unless a
#: request needs it sooner): a restart's first listings are answered before.
WEB_LOAD_DELAY_S: Final = 1.0
#: A request's head must arrive within this many seconds of its first byte ...
REQUEST_TIMEOUT_S: Final = 30.0
#: ... and its body within this many seconds of the head's end (a large ``torrent-add``
#: over a slow link takes a while).
BODY_TIMEOUT_S: Final = 120.0
#: A connection with no request under way is closed after this many seconds.
KEEPALIVE_TIMEOUT_S: Final = 75.0
#: The body of a refused request is read and dropped up to this size (the connection
#: stays open); past it, the connection closes after the answer.
MAX_SKIPPED_BODY: Final = 64 * 1024
#: Bytes held while an answer is pending before reading pauses.
MAX_BUFFERED: Final = 4 * MAX_HEAD
#: Connections open at once, in the front and handed over to aiohttp together (a
#: handful of front-ends and scripts use the RPC); one more is closed as soon as it is
#: accepted. Idle ones go after :data:`KEEPALIVE_TIMEOUT_S` (aiohttp's too), so a client
#: that opens many and leaves them cannot hold the daemon's file descriptors for long.
MAX_CONNECTIONS: Final = 256
#: Distinct clients (their checks' inputs) remembered as having passed the checks.
MAX_PASSED: Final = 64

_METHODS: Final = frozenset((b"GET", b"POST"))
_PATHS: Final = frozenset((b"/transmission/rpc", b"/transmission/rpc/"))
#: Fields read here; a request repeating one goes to aiohttp.
_SINGLE: Final = (b"host", b"authorization", b"x-transmission-session-id")
_JSON: Final = b"application/json"
_HTML: Final = b"text/html; charset=utf-8"

#: What a connection's timer waits for.
_NO_TIMER, _IDLE, _REQUEST, _BODY = 0, 1, 2, 3


class RpcFront:
    """What every :class:`RpcProtocol` of one server shares.

    Args:
        daemon: what the RPC drives.
        context: the RPC's config (session id set) and HTTP client.
    """

    def __init__(self, daemon: Daemon, context: rpc.RpcContext) -> None:
        self.daemon = daemon
        self.context = context
        #: Makes aiohttp's handler for a connection handed over (None until loaded).
        self.fallback: Callable[[], asyncio.Protocol] | None = None
        #: Set when a request needs aiohttp before it was loaded.
        self.web_wanted = asyncio.Event()
        #: Connections waiting for aiohttp to take them over.
        self.waiting: list[RpcProtocol] = []
        #: Connections the front serves (those waiting for aiohttp included).
        self.connections: set[RpcProtocol] = set()
        #: How many connections handed over aiohttp still holds (0 until it is loaded).
        self.handed_over: Callable[[], int] = lambda: 0
        self.tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._date_at = -1
        self._date = b""
        #: The checks' inputs of requests that passed them (the ``Authorization``, ``Host``
        #: and session id fields, the method), under the config they passed: a client's
        #: next request is not checked again (:meth:`passed`).
        self._passed: set[tuple[bytes | None, ...]] = set()
        self._passed_under: rpc.RpcConfig | None = None

    def passed(self, key: tuple[bytes | None, ...]) -> bool:
        """A request with these checks' inputs passed them under the current config."""
        return self._passed_under is self.context.config and key in self._passed

    def note_passed(self, key: tuple[bytes | None, ...]) -> None:
        if self._passed_under is not self.context.config or len(self._passed) >= MAX_PASSED:
            self._passed_under = self.context.config
            self._passed = set()
        self._passed.add(key)

    def date(self) -> bytes:
        """The ``Date`` header's value, formatted once a second."""
        now = int(time.time())
        if now != self._date_at:
            self._date_at = now
            self._date = http_date(now)
        return self._date

    def loop(self) -> asyncio.AbstractEventLoop:
        """The server's loop (remembered: in Python 3.11 each asyncio.get_running_loop()
        is a getpid() system call, and a request made several)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def open_connections(self) -> int:
        """The connections under :data:`MAX_CONNECTIONS`: the front's and aiohttp's."""
        return len(self.connections) + self.handed_over()

    def web_loaded(self, fallback: Callable[[], asyncio.Protocol], handed_over: Callable[[], int]) -> None:
        """aiohttp's handlers can be made now (``fallback``; ``handed_over`` counts those
        still holding a connection): hand over the connections waiting for one."""
        self.fallback = fallback
        self.handed_over = handed_over
        waiting, self.waiting = self.waiting, []
        for protocol in waiting:
            protocol.hand_over_now()


class RpcProtocol(asyncio.Protocol):
    """One HTTP connection: the RPC here, anything else handed to aiohttp (see the module doc)."""

    __slots__ = (
        "_body",
        "_buf",
        "_deadline",
        "_eof",
        "_handing",
        "_head",
        "_pending",
        "_reading_paused",
        "_skip",
        "_timer",
        "_timing",
        "_write_paused",
        "front",
        "transport",
    )

    def __init__(self, front: RpcFront) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        #: Bytes received from a request's first byte on, not yet answered.
        self._buf = b""
        #: The head whose body is being received, and the body so far.
        self._head: RequestHead | None = None
        self._body = bytearray()
        #: Bytes of a refused request's body still to drop.
        self._skip = 0
        #: A request is being answered: the ones behind it wait in ``_buf``.
        self._pending = False
        self._write_paused = False
        self._reading_paused = False
        #: The client half-closed: close once what it sent is answered.
        self._eof = False
        #: Waiting for aiohttp to take the connection over.
        self._handing = False
        self._timer: asyncio.TimerHandle | None = None
        self._timing = _NO_TIMER
        #: When the current bound ends (loop time; the timer may be set earlier).
        self._deadline = 0.0

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.front.open_connections() >= MAX_CONNECTIONS:
            transport.close()
            return
        self.transport = transport  # type: ignore[assignment]
        self.front.connections.add(self)
        self._time(_IDLE)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_timer()
        self.front.connections.discard(self)
        if self._handing:
            with contextlib.suppress(ValueError):
                self.front.waiting.remove(self)
        self.transport = None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if not self._pending:
            self._resume()

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        if self._handing:
            self._buf += data
            return
        if self._skip:
            dropped = min(len(data), self._skip)
            self._skip -= dropped
            data = data[dropped:]
            if not data:
                if not self._skip:
                    self._time(_IDLE)
                return
        head = self._head
        if head is not None:
            self._body += data
            if len(self._body) < head.content_length:
                return
            whole, self._body, self._head = self._body, bytearray(), None
            self._dispatch(head, bytes(whole[: head.content_length]), bytes(whole[head.content_length :]))
            return
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
        held back are answered (or tell aiohttp, once it has the connection)."""
        if self._pending or self._handing:
            self._eof = True
            return True  # keep the transport open for the answer
        return None

    # ------------------------------------------------------------ serving

    def _serve(self, buf: bytes) -> None:
        """Answer the requests at the start of ``buf``, in order, as far as they are complete."""
        while True:
            if not buf:
                self._buf = b""
                if self._eof and self.transport is not None:
                    self.transport.close()
                else:
                    self._time(_IDLE)
                return
            head = read_request_head(buf, _METHODS, _SINGLE)
            if isinstance(head, int):
                if head == NEED_DATA:
                    self._buf = buf
                    self._time(_REQUEST)
                else:
                    self._hand_off(buf)
                return
            host = head.field(b"host")
            if head.target not in _PATHS or host is None or head.content_length > rpc.MAX_BODY_BYTES:
                self._hand_off(buf)
                return
            length = head.content_length
            rest = buf[head.end :]
            refusal = self._refusal(head, host)
            if refusal is not None:
                keep_alive = head.keep_alive and length - len(rest) <= MAX_SKIPPED_BODY
                text = refusal.text.encode()
                if not self._write(
                    head, refusal.status, refusal.reason, _HTML, text, keep_alive, refusal.headers
                ):
                    return
                if length > len(rest):
                    self._skip = length - len(rest)
                    self._buf = b""
                    self._time(_BODY)
                    return
                buf = rest[length:]
                if self._write_paused:  # a client that sends and does not read: wait for it
                    self._buf = buf
                    return
                continue
            if length > len(rest):
                self._head = head
                self._body = bytearray(rest)
                self._buf = b""
                self._time(_BODY)
                return
            self._dispatch(head, rest[:length], rest[length:])
            return

    def _refusal(self, head: RequestHead, host: bytes) -> rpc.Refusal | None:
        front = self.front
        authorization, session_id = head.field(b"authorization"), head.field(b"x-transmission-session-id")
        key = (authorization, host, session_id, head.method)
        if front.passed(key):
            return None
        config = front.context.config
        refusal = rpc.refuse_client(config, _text(authorization), _text(host) or "") or rpc.refuse_rpc(
            config, _text(session_id), head.method.decode()
        )
        if refusal is None:
            front.note_passed(key)
        return refusal

    def _dispatch(self, head: RequestHead, body: bytes, rest: bytes) -> None:
        """Answer one request that passed the checks; what follows it waits."""
        self._pending = True
        self._buf = rest
        self._time(_NO_TIMER)
        self.front.spawn(self._answer(head, body))

    async def _answer(self, head: RequestHead, body: bytes) -> None:
        front = self.front
        try:
            out = await rpc.answer(front.daemon, front.context, body)
        finally:
            self._pending = False
        if self.transport is None or self.transport.is_closing():
            return
        if self._write(head, 200, "OK", _JSON, out, head.keep_alive) and not self._write_paused:
            self._resume()

    def _write(
        self,
        head: RequestHead,
        status: int,
        reason: str,
        content_type: bytes,
        body: bytes,
        keep_alive: bool,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> bool:
        """Write an answer (``headers``: besides the usual ones); False when the
        connection closes after it."""
        transport = self.transport
        assert transport is not None
        if head.http10:
            version, connection = b"HTTP/1.0", b"Connection: keep-alive\r\n" if keep_alive else b""
        else:
            version, connection = b"HTTP/1.1", b"" if keep_alive else b"Connection: close\r\n"
        extra = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in headers) if headers else b""
        status_and_fields = (
            b"%s %d %s\r\n%s%sContent-Type: %s\r\nContent-Length: %d\r\nDate: %s\r\nServer: pytorrent\r\n\r\n"
            % (
                version,
                status,
                reason.encode(),
                connection,
                extra,
                content_type,
                len(body),
                self.front.date(),
            )
        )
        # One send for both (uvloop gathers them; asyncio joins them), not one each.
        transport.writelines((status_and_fields, body))
        if not keep_alive:
            transport.close()
            return False
        return True

    def _resume(self) -> None:
        """Go on with what arrived while an answer was pending or writes were paused."""
        if self.transport is None:
            return
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        buf, self._buf = self._buf, b""
        self._serve(buf)

    def _time(self, what: int) -> None:
        """Wait for a request (:data:`_IDLE`), for the rest of its head (:data:`_REQUEST`:
        the bound runs from its first byte, so a trickle does not extend it), for its body
        or the body being dropped (:data:`_BODY`, from the head's end) or for nothing.

        One timer per connection, moved only when a bound comes sooner than it: a later
        bound (the next request's wait, after an answer) is checked when the timer fires,
        not set by a cancel and a new timer each request."""
        if what == self._timing:
            return
        self._timing = what
        if what == _NO_TIMER or self.transport is None:
            return
        loop = self.front.loop()
        self._deadline = loop.time() + (KEEPALIVE_TIMEOUT_S, REQUEST_TIMEOUT_S, BODY_TIMEOUT_S)[what - 1]
        if self._timer is not None:
            if self._timer.when() <= self._deadline:
                return
            self._timer.cancel()
        self._timer = loop.call_at(self._deadline, self._expire)

    def _stop_timer(self) -> None:
        """No bound any more, and no timer (the connection is closed or handed over)."""
        self._timing = _NO_TIMER
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._timing == _NO_TIMER or self.transport is None:
            return
        loop = self.front.loop()
        if loop.time() < self._deadline:  # the bound moved on since the timer was set
            self._timer = loop.call_at(self._deadline, self._expire)
            return
        self._timing = _NO_TIMER
        self.transport.close()

    # ------------------------------------------------------------ handing over

    def _hand_off(self, buf: bytes) -> None:
        """aiohttp's handler takes the connection over, from the first byte of ``buf``
        (once aiohttp is loaded: reading pauses until then)."""
        assert self.transport is not None
        self._stop_timer()
        self._buf = buf
        if self.front.fallback is not None:
            self.hand_over_now()
            return
        self._handing = True
        if not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
        self.front.waiting.append(self)
        self.front.web_wanted.set()

    def hand_over_now(self) -> None:
        transport, fallback = self.transport, self.front.fallback
        if transport is None or fallback is None:
            return
        self.transport = None
        self.front.connections.discard(self)
        buf, self._buf = self._buf, b""
        handler = fallback()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if buf:
            handler.data_received(buf)
        if self._eof:
            handler.eof_received()
        if self._reading_paused and not transport.is_closing():
            transport.resume_reading()


_DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(seconds: float) -> bytes:
    """``seconds`` since the epoch as an HTTP date (RFC 9110 5.6.7 IMF-fixdate; English
    names whatever the locale; what ``email.utils.formatdate(usegmt=True)`` gives, without
    importing the email package at start)."""
    t = time.gmtime(seconds)
    return b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAYS[t.tm_wday].encode(),
        t.tm_mday,
        _MONTHS[t.tm_mon - 1].encode(),
        t.tm_year,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
    )


def _text(value: bytes | None) -> str | None:
    """A field value as aiohttp decodes it."""
    return None if value is None else value.decode("utf-8", "surrogateescape")


class RpcServer:
    """The daemon's HTTP server: the RPC in :class:`RpcProtocol`, the rest in aiohttp.

    Use as ``async with RpcServer(daemon, config, host, port) as server:``; entering
    binds the port (errors reach the caller; :attr:`address` is then known), leaving
    closes every connection and aiohttp's application.
    """

    def __init__(self, daemon: Daemon, config: rpc.RpcConfig, host: str, port: int) -> None:
        self.daemon = daemon
        self.context = rpc.RpcContext(config.with_session_id())
        self.front = RpcFront(daemon, self.context)
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._loader: asyncio.Task[None] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` the server listens on."""
        assert self._server is not None, "the server was not entered"
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    async def __aenter__(self) -> RpcServer:
        loop = asyncio.get_running_loop()
        front = self.front
        self._server = await loop.create_server(lambda: RpcProtocol(front), self._host, self._port)
        self._loader = loop.create_task(self._load_web())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        if self._loader is not None:
            self._loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loader
        for task in list(self.front.tasks):
            task.cancel()
        for protocol in list(self.front.connections):
            if protocol.transport is not None:
                protocol.transport.close()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.context.close()

    async def _load_web(self) -> None:
        """Build aiohttp's application once the daemon listed its torrents (and
        :data:`WEB_LOAD_DELAY_S` more), or when a request needs it."""

        async def quiet() -> None:
            await self.daemon.wait_ready()
            await asyncio.sleep(WEB_LOAD_DELAY_S)

        async with asyncio.TaskGroup() as tg:
            waits = [tg.create_task(quiet()), tg.create_task(self.front.web_wanted.wait())]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()
        from aiohttp import web

        from torrent.daemon import webapp

        app = webapp.build_app(self.daemon, self.context.config, self.context)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runner = runner
        server = runner.server
        assert server is not None
        # aiohttp's server counts the connections its handlers hold, from the hand-over
        # until the handler's last request has finished.
        self.front.web_loaded(server, lambda: len(server.connections))
        self.daemon.preload()  # idle now: the first add does not wait for these imports
