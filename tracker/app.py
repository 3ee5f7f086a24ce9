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

from torrent.errors import RemoteProtocolError
from torrent.proto.text import printable
from torrent.proto.tracker_codec import (
    AnnounceRequest,
    AnnounceResponse,
    PeerAddress,
    ScrapeResponse,
    decode_compact_peers,
    encode_announce_response,
    encode_compact_announce,
    encode_failure,
    encode_scrape_response,
    parse_announce_query,
    parse_scrape_query,
)
from tracker.guard import guard_middleware
from tracker.service import NOT_ALLOWED, STORE_UNAVAILABLE, TrackerService
from tracker.settings import TrackerSettings
from tracker.store import AnnounceRejected, AnnounceResult, PeerStore, StoreUnavailable
from tracker.users import NOT_REGISTERED, Ticket

log = logging.getLogger("pytorrent.tracker")

SERVICE_KEY = web.AppKey("service", TrackerService)
#: ``tracker id`` we hand out (clients echo it as ``trackerid``; we accept any).
TRACKER_ID = b"pytorrent"
_TEXT = "text/plain"
#: Clients listed on the status page.
STATUS_CLIENTS = 20


def _failure(reason: str) -> web.Response:
    return web.Response(body=encode_failure(reason), content_type=_TEXT)


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
    announce = _announce_handler(service, store, settings)
    scrape = _scrape_handler(service, store, settings)
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


def _announce_handler(service: TrackerService, store: PeerStore, settings: TrackerSettings) -> Handler:
    sync = service.sync_store.announce_nowait if service.sync_store is not None else None
    interval, min_interval = settings.interval_s, settings.min_interval_s
    counters = service.counters
    private = service.private

    async def announce(request: web.Request) -> web.Response:
        counters.http_announces += 1
        service.note_announce()
        try:
            req = parse_announce_query(request.raw_path.partition("?")[2])
        except RemoteProtocolError as exc:
            counters.failures_bad_request += 1
            return _failure(str(exc))
        service.note_client(req.peer_id)
        try:
            if not service.allowed(req.info_hash):
                counters.failures_not_allowed += 1
                return _failure(NOT_ALLOWED)
            source = service.pack_address(request.remote or "")
            if source is None:
                counters.failures_internal += 1
                return _failure("cannot tell the address of this request")
            ticket: Ticket | None = None
            if private is not None:
                verdict = private.admit(
                    request.match_info.get("passkey"), req.info_hash, req.peer_id, req.left, req.event, source
                )
                if isinstance(verdict, str):
                    counters.failures_private += 1
                    return _failure(verdict)
                ticket = private.ticket(
                    verdict, req.info_hash, req.peer_id, uploaded=req.uploaded, downloaded=req.downloaded,
                    left=req.left, event=req.event, ip=source,
                )  # fmt: skip
            want_ids = not req.compact and not req.no_peer_id
            pa = service.peer_announce(req, source, both_families=True, want_peer_ids=want_ids)
            if ticket is not None:
                pa = pa._replace(tally=ticket.tally, refuse_new=ticket.refuse_new)
            try:
                res = sync(pa) if sync is not None else await store.announce(pa)
            except StoreUnavailable as exc:
                counters.failures_store_unavailable += 1
                log.debug("store unavailable: %s", exc.detail)
                return _failure(STORE_UNAVAILABLE)
            except AnnounceRejected as exc:
                service.note_rejected(exc)
                return _failure(exc.reason)
            if private is not None and ticket is not None:
                private.settle(ticket, res.tally)
            body = _announce_body(req, res, source, interval, min_interval, want_ids=want_ids)
            return web.Response(body=body, content_type=_TEXT)
        except Exception:  # a bug: log it, never show the client a traceback
            counters.failures_internal += 1
            log.exception("announce failed")
            return _failure("internal tracker error")

    return announce


def _announce_body(
    req: AnnounceRequest,
    res: AnnounceResult,
    source: bytes,
    interval: int,
    min_interval: int,
    *,
    want_ids: bool,
) -> bytes:
    """The bencoded answer to ``req``: compact (BEP 23, 7) or the original dict form."""
    tracker_id = TRACKER_ID if req.tracker_id is None else None
    if req.compact:
        return encode_compact_announce(
            interval=interval,
            min_interval=min_interval,
            complete=res.complete,
            incomplete=res.incomplete,
            downloaded=res.downloaded,
            peers=res.peers4,
            peers6=res.peers6,
            external_ip=source,
            tracker_id=tracker_id,
        )
    peers = decode_compact_peers(res.peers4) + decode_compact_peers(res.peers6, ipv6=True)
    if want_ids:
        peers = tuple(PeerAddress(p.ip, p.port, pid) for p, pid in zip(peers, res.peer_ids, strict=True))
    return encode_announce_response(
        AnnounceResponse(
            interval=interval,
            min_interval=min_interval,
            complete=res.complete,
            incomplete=res.incomplete,
            downloaded=res.downloaded,
            peers=peers,
            external_ip=PeerAddress.from_packed(source + b"\0\0").ip,
            tracker_id=tracker_id,
        ),
        compact=False,
        no_peer_id=req.no_peer_id,
    )


def _scrape_handler(service: TrackerService, store: PeerStore, settings: TrackerSettings) -> Handler:
    counters = service.counters
    private = service.private

    async def scrape(request: web.Request) -> web.Response:
        counters.http_scrapes += 1
        if private is not None:
            reason = private.check_passkey(request.match_info.get("passkey"))
            if reason is not None:
                counters.failures_private += 1
                return _failure(reason)
        try:
            hashes = parse_scrape_query(request.raw_path.partition("?")[2])
        except RemoteProtocolError as exc:
            counters.failures_bad_request += 1
            return _failure(str(exc))
        try:
            if not hashes:
                if not settings.full_scrape:
                    counters.failures_bad_request += 1
                    return _failure("full scrape is disabled: name at least one info_hash")
                files = await store.full_scrape(settings.full_scrape_max)
                if service.allow is not None or private is not None:
                    files = {ih: s for ih, s in files.items() if service.scrapable(ih)}
            else:
                # what may not be shown is left out (see PrivateTracker.scrapable)
                wanted = [ih for ih in hashes if service.scrapable(ih)]
                if not wanted:
                    if private is not None:
                        counters.failures_private += 1
                        return _failure(NOT_REGISTERED)
                    counters.failures_not_allowed += 1
                    return _failure(NOT_ALLOWED)
                files = dict(zip(wanted, await store.scrape(wanted), strict=True))
            return web.Response(body=encode_scrape_response(ScrapeResponse(files)), content_type=_TEXT)  # type: ignore[arg-type]
        except StoreUnavailable:
            counters.failures_store_unavailable += 1
            return _failure(STORE_UNAVAILABLE)
        except Exception:
            counters.failures_internal += 1
            log.exception("scrape failed")
            return _failure("internal tracker error")

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


__all__ = ["SERVICE_KEY", "TRACKER_ID", "make_app"]
