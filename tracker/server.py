"""Run the tracker: HTTP (announces and scrapes in ``tracker.http1``, the rest in aiohttp)
and UDP under one task group.

``async with TrackerServer(settings) as srv:`` binds every socket before the body
runs, so bind errors reach the caller and tests can read ``srv.http_port`` and
``srv.udp_port``. Leaving the block stops the sockets, the housekeeping task and the
store. :func:`serve` wraps that for the command line: it logs the settings (debug), reloads
the allow-list on SIGHUP and returns on cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from types import TracebackType

from aiohttp import web

from tracker.app import ENDPOINTS_KEY, make_app
from tracker.guard import ConnectionGuard, effective_cap
from tracker.http1 import TrackerSite
from tracker.service import TrackerService
from tracker.settings import TrackerSettings
from tracker.store import MemoryStore, PeerStore, StoreUnavailable
from tracker.udp import ConnectionIds, UdpTracker
from tracker.users import PrivateRules, PrivateTracker

log = logging.getLogger("pytorrent.tracker")

#: Seconds between housekeeping runs (expiry sweep, rate sample).
HOUSEKEEPING_S = 5.0


def make_store(settings: TrackerSettings) -> PeerStore:
    """The store ``settings.store`` names (``memory``, a Redis URL or a Redis Cluster URL)."""
    if settings.store == "memory":
        return MemoryStore(settings.ttl_s, max_swarms=settings.max_swarms)
    if settings.store.startswith("redis-cluster://"):
        from tracker.store_redis_cluster import RedisClusterStore

        return RedisClusterStore(
            settings.store, settings.ttl_s, timeout_s=settings.redis_timeout_s, max_swarms=settings.max_swarms
        )
    from tracker.store_redis import RedisStore

    return RedisStore(
        settings.store, settings.ttl_s, timeout_s=settings.redis_timeout_s, max_swarms=settings.max_swarms
    )


def private_rules(settings: TrackerSettings) -> PrivateRules:
    s = settings
    return PrivateRules(
        ratio_floor=s.ratio_floor,
        ratio_grace_bytes=s.ratio_grace_bytes,
        max_rate_bps=s.max_rate_bps,
        leech_ip_limit=s.leech_ip_limit,
        client_allow=s.client_allow,
        client_deny=s.client_deny,
        flush_s=s.accounting_flush_s,
        poll_s=s.users_poll_s,
        ttl_s=s.ttl_s,
    )


class TrackerServer:
    """One tracker process: HTTP and UDP sockets over one store.

    Args:
        settings: tracker settings.
        store: a store to use instead of the one ``settings.store`` names (tests).
    """

    def __init__(self, settings: TrackerSettings, *, store: PeerStore | None = None) -> None:
        settings.validate()
        self.settings = settings
        self.store = store if store is not None else make_store(settings)
        self.service = TrackerService(self.store, settings)
        self.private: PrivateTracker | None = None
        if settings.private_users is not None:
            self.private = PrivateTracker(settings.private_users, private_rules(settings))
            self.service.private = self.private
        self.http_port = 0
        self.udp_port: int | None = None
        self.udp_protocols: list[UdpTracker] = []
        self.guard: ConnectionGuard | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    @property
    def hosts(self) -> list[str]:
        return [h.strip() for h in self.settings.host.split(",") if h.strip()]

    async def __aenter__(self) -> TrackerServer:
        s = self.settings
        # Unwound in reverse: housekeeping and UDP sockets, the task group, the HTTP
        # runner, the store.
        stack = contextlib.AsyncExitStack()
        try:
            stack.push_async_callback(self.store.aclose)
            if self.private is not None:  # closed after the sockets: the last flush sees all
                await stack.enter_async_context(self.private)
            app = make_app(self.store, s, service=self.service)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            stack.push_async_callback(runner.cleanup)
            await runner.setup()
            guard = self._make_guard()
            for host in self.hosts:
                site = TrackerSite(
                    runner,
                    guard,
                    app[ENDPOINTS_KEY],
                    host,
                    self.http_port or s.port,
                    reuse_port=s.reuse_port,
                    keepalive_timeout_s=s.header_timeout_s + 1,
                    body_timeout_s=s.body_timeout_s,
                )
                await site.start()
                if not self.http_port:
                    self.http_port = site.bound_port
            # Leaving the group waits for the tasks it owns (housekeeping, UDP announces
            # to an async store); a cancellation that arrives meanwhile ends the wait.
            stack.enter_context(contextlib.suppress(asyncio.CancelledError))
            tg = await stack.enter_async_context(asyncio.TaskGroup())
            if s.udp_enabled:
                await self._start_udp(tg, stack)
            stack.callback(tg.create_task(self._housekeep()).cancel)
            stack.callback(tg.create_task(guard.run()).cancel)
            if self.private is not None:
                stack.callback(tg.create_task(self.private.run()).cancel)
        except BaseException:
            # aclose() rather than handing the error to the stack: the task group would
            # wrap it in an ExceptionGroup, and callers expect the bind error itself.
            await stack.aclose()
            raise
        self._stack = stack
        return self

    def _make_guard(self) -> ConnectionGuard:
        s = self.settings
        cap = effective_cap(s.max_connections)
        if cap < s.max_connections:
            log.info(
                "HTTP connections capped at %d by the open-file limit (--max-connections %d)",
                cap,
                s.max_connections,
            )
        guard = ConnectionGuard(
            max_connections=cap,
            header_timeout_s=s.header_timeout_s,
            evict_after_s=min(1.0, s.header_timeout_s / 4),
            clock=asyncio.get_running_loop().time,
        )
        self.guard = self.service.guard = guard
        return guard

    async def _start_udp(self, tg: asyncio.TaskGroup, stack: contextlib.AsyncExitStack) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        conn_ids = ConnectionIds(s.udp_secret)
        port = self.http_port if s.udp_port is None else s.udp_port
        for host in self.hosts:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if s.reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                # a large receive buffer rides out bursts instead of dropping them
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
                sock.bind((host, port or self.udp_port or 0))
            except BaseException:
                sock.close()
                raise
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: UdpTracker(self.service, conn_ids, spawn=tg.create_task), sock=sock
            )
            stack.callback(transport.close)
            self.udp_protocols.append(protocol)
            if self.udp_port is None or self.udp_port == 0:
                self.udp_port = sock.getsockname()[1]

    async def _housekeep(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            self.service.tick()
            try:
                removed = await self.store.collect()
            except StoreUnavailable as exc:
                log.warning("housekeeping: %s (%s)", exc.reason, exc.detail)
                continue
            except Exception:
                log.exception("housekeeping failed")
                continue
            if removed:
                log.debug("expired %d peers", removed)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # The body's error is the caller's: the stack closes as after a clean exit (see
        # __aenter__), and the error propagates unchanged.
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    def reload_allow_list(self) -> bool:
        """Re-read ``--allow`` (and, in private mode, users and torrents); False when
        there is no allow-list or it could not be read."""
        if self.private is not None:
            self.private.reload_soon()
        return self.service.allow.reload() if self.service.allow is not None else False

    def urls(self) -> list[str]:
        out = []
        for host in self.hosts:
            h = f"[{host}]" if ":" in host else host
            out.append(f"http://{h}:{self.http_port}/announce")
            if self.udp_port:
                out.append(f"udp://{h}:{self.udp_port}/announce")
        return out


async def serve(settings: TrackerSettings, *, worker: int | None = None) -> None:
    """Run a tracker until cancelled (SIGINT/SIGTERM are the caller's business).

    Logs each setting at start-up (debug level: ``--debug`` shows them); SIGHUP reloads
    the allow-list.
    """
    prefix = "" if worker is None else f"worker {worker}: "
    if worker is None:  # with --workers the parent logs them once
        for line in settings.describe():
            log.debug("setting %s", line)
    async with TrackerServer(settings) as srv:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, srv.reload_allow_list)
        ping = getattr(srv.store, "ping", None)
        if ping is not None:
            try:
                await ping()
            except StoreUnavailable as exc:
                log.warning("%sstore not reachable yet (%s); announces fail until it is", prefix, exc.detail)
        log.info("%stracker listening on %s", prefix, " ".join(srv.urls()))
        try:
            await asyncio.Event().wait()
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGHUP)
            log.info("%stracker stopping", prefix)


__all__ = ["TrackerServer", "make_store", "serve"]
