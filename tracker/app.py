"""The HTTP tracker (BEP 3, 7, 23, 24, 48) as an aiohttp application.

Routes: ``GET /announce``, ``GET /scrape``, ``GET /`` (an HTML status page) and
``GET /metrics`` (Prometheus text format).

Every problem with an announce or scrape is answered with HTTP 200 and a bencoded
``failure reason``, which is what clients show to their users; the handlers never let
an exception turn into a 500 or a traceback. Query strings are parsed raw by
:mod:`torrent.proto.tracker_codec`, because aiohttp decodes query values as UTF-8 text and
binary ``info_hash`` values do not survive that.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Handler

from torrent.proto.text import printable
from tracker.endpoints import TRACKER_ID, HttpEndpoints
from tracker.guard import guard_middleware
from tracker.service import TrackerService
from tracker.settings import TrackerSettings
from tracker.store import PeerStore, StoreUnavailable

log = logging.getLogger("pytorrent.tracker")

SERVICE_KEY = web.AppKey("service", TrackerService)
#: The announce and scrape logic, shared with the fast HTTP protocol (``tracker.http1``).
ENDPOINTS_KEY = web.AppKey("endpoints", HttpEndpoints)
_TEXT = "text/plain"
#: Clients listed on the status page.
STATUS_CLIENTS = 20


def make_app(
    store: PeerStore, settings: TrackerSettings, *, service: TrackerService | None = None
) -> web.Application:
    """Build the HTTP tracker over ``store``.

    Args:
        store: the peer store (shared with the UDP server when ``service`` is given).
        settings: tracker settings.
        service: the tracker service; a new one is made when ``None``.
    """
    service = service or TrackerService(store, settings)
    app = web.Application(middlewares=[guard_middleware])
    app[SERVICE_KEY] = service
    endpoints = HttpEndpoints(service, store, settings)
    app[ENDPOINTS_KEY] = endpoints
    announce = _announce_handler(endpoints)
    scrape = _scrape_handler(endpoints)
    app.router.add_get("/announce", announce)
    app.router.add_get("/scrape", scrape)
    if service.private is not None:  # private mode: /<passkey>/announce (Ocelot, XBT)
        app.router.add_get("/{passkey:[0-9a-f]{32}}/announce", announce)
        app.router.add_get("/{passkey:[0-9a-f]{32}}/scrape", scrape)
    app.router.add_get("/", _status_handler(service, store))
    app.router.add_get("/metrics", _metrics_handler(service, store))
    return app


# Each route is a closure over what it reads on every request (cheaper than attribute
# lookups on the hot announce path).


def _announce_handler(endpoints: HttpEndpoints) -> Handler:
    begin, finish = endpoints.announce, endpoints.finish

    async def announce(request: web.Request) -> web.Response:
        body = begin(
            request.raw_path.partition("?")[2], request.remote or "", request.match_info.get("passkey")
        )
        if not isinstance(body, bytes):
            body = await finish(body)
        return web.Response(body=body, content_type=_TEXT)

    return announce


def _scrape_handler(endpoints: HttpEndpoints) -> Handler:
    scrape_body = endpoints.scrape

    async def scrape(request: web.Request) -> web.Response:
        body = await scrape_body(request.raw_path.partition("?")[2], request.match_info.get("passkey"))
        return web.Response(body=body, content_type=_TEXT)

    return scrape


def _status_handler(service: TrackerService, store: PeerStore) -> Handler:
    counters = service.counters

    async def status(request: web.Request) -> web.Response:
        try:
            stats = await store.statistics()
            store_line = ""
        except StoreUnavailable:
            stats, store_line = service.last_stats, "<p><b>store unavailable</b>: figures are stale</p>"
        service.last_stats = stats
        rows = [
            ("swarms", stats.swarms),
            ("peers", stats.peers),
            ("seeds", stats.seeds),
            ("leechers", stats.peers - stats.seeds),
            ("completed", stats.downloaded),
            ("announces per second", f"{service.announces_per_second():.1f}"),
            ("announces (http / udp)", f"{counters.http_announces} / {counters.udp_announces}"),
            ("uptime", _duration(service.uptime_s())),
        ]
        guard = service.guard
        if guard is not None:
            g = guard.counters
            rows.append(("HTTP connections (open / cap)", f"{guard.open} / {guard.max_connections}"))
            rows.append(
                (
                    "HTTP refused (cap / evicted / slow / idle / body / malformed)",
                    f"{g.refused_cap} / {g.evicted} / {g.slow_request} / {g.idle} / {g.body_refused} / {g.bad_request}",
                )
            )
        clients = [(_shown(prefix), n) for prefix, n in service.top_clients(STATUS_CLIENTS)]
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>pytorrent tracker</title>"
            "<style>body{font-family:sans-serif}th{text-align:left;padding-right:1em}</style></head>"
            f"<body><h1>pytorrent tracker</h1>{store_line}<table>{_rows(rows)}</table>"
            f"<h2>clients (peer-id prefix, announces)</h2><table>{_rows(clients)}</table>"
            "<p><a href='/metrics'>metrics</a></p></body></html>"
        )
        return web.Response(text=page, content_type="text/html")

    return status


def _rows(rows: Sequence[tuple[str, object]]) -> str:
    """Table rows, every cell HTML-escaped (some come from strangers)."""
    return "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)


def _shown(raw: bytes) -> str:
    """A peer-chosen byte string as text: Latin-1 (every byte a character), controls
    escaped; the caller HTML-escapes it."""
    return printable(raw.decode("latin-1"))


def _metrics_handler(service: TrackerService, store: PeerStore) -> Handler:
    async def metrics(request: web.Request) -> web.Response:
        try:
            stats = await store.statistics()
            service.last_stats = stats
        except StoreUnavailable:
            stats = service.last_stats
        return web.Response(
            text=service.metrics_text(stats),
            content_type="text/plain",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    return metrics


def _duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


__all__ = ["ENDPOINTS_KEY", "SERVICE_KEY", "TRACKER_ID", "make_app"]
