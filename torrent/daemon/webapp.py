"""The daemon's aiohttp application: the web UI, ``/metrics``, and the Transmission RPC
for the requests the hand-written front (:mod:`torrent.daemon.front`) hands over.

Every path but ``/metrics`` passes the RPC's basic auth and host whitelist
(:func:`~torrent.daemon.rpc.refuse_client`); ``/transmission/rpc`` then the session-id
handshake, and its body goes to :func:`~torrent.daemon.rpc.answer`, as in the front.
``/metrics`` serves the Prometheus text format (no auth; bind to loopback). ``/`` serves
the web UI (:mod:`torrent.daemon.webui`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from torrent.daemon import rpc, webui
from torrent.daemon.service import Daemon

__all__ = ["build_app"]

log = logging.getLogger(__name__)

DAEMON = web.AppKey("daemon", Daemon)
CONTEXT = web.AppKey("rpc_context", rpc.RpcContext)


def build_app(
    daemon: Daemon, config: rpc.RpcConfig, context: rpc.RpcContext | None = None
) -> web.Application:
    """The aiohttp application serving the RPC, the web UI and the metrics.

    Args:
        daemon: what the RPC drives.
        config: the RPC's settings (a random session id when it has none).
        context: shared with another server of the same RPC (its session id and HTTP
            client); by default the application makes its own and closes it on cleanup.
    """
    if context is None:
        context = rpc.RpcContext(config.with_session_id())
        owned = True
    else:
        owned = False
    app = web.Application(client_max_size=rpc.MAX_BODY_BYTES, middlewares=[_guard])
    app[DAEMON] = daemon
    app[CONTEXT] = context
    app.router.add_route("*", "/transmission/rpc", _rpc)
    app.router.add_route("*", "/transmission/rpc/", _rpc)
    app.router.add_get("/metrics", _metrics)
    webui.add_routes(app, context.config.session_id)
    if owned:
        app.cleanup_ctx.append(_close_context)
    return app


async def _close_context(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[CONTEXT].close()


def _refused(refusal: rpc.Refusal) -> web.Response:
    return web.Response(
        status=refusal.status, text=refusal.text, content_type="text/html", headers=dict(refusal.headers)
    )


@web.middleware
async def _guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Auth, host whitelist and a JSON answer for anything that goes wrong (no 500 page)."""
    if request.path != "/metrics":  # the RPC and the web UI alike
        refusal = rpc.refuse_client(
            request.app[CONTEXT].config, request.headers.get("Authorization"), request.host
        )
        if refusal is not None:
            return _refused(refusal)
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:  # a bug must not take the server down or leak a traceback
        log.exception("error serving %s", request.path)
        return web.json_response({"result": "internal error"}, status=200)


async def _rpc(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    refusal = rpc.refuse_rpc(context.config, request.headers.get(rpc.SESSION_HEADER), request.method)
    if refusal is not None:
        return _refused(refusal)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return web.Response(body=rpc.too_large(), content_type="application/json")
    return web.Response(
        body=await rpc.answer(request.app[DAEMON], context, raw), content_type="application/json"
    )


async def _metrics(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    by_status: dict[int, int] = dict.fromkeys(range(7), 0)
    down = up = peers = 0.0
    total_up = total_down = 0
    for r in daemon.records.values():
        by_status[r.status()] += 1
        if r.handle is not None:
            st = r.handle.statistics()
            down += st.download_rate_bps
            up += st.upload_rate_bps
            peers += st.peers_connected
        u, d = r.totals()
        total_up += u
        total_down += d
    names = ["stopped", "check_wait", "check", "download_wait", "download", "seed_wait", "seed"]
    lines = [
        "# HELP pytorrent_torrents Torrents by state.",
        "# TYPE pytorrent_torrents gauge",
        *(f'pytorrent_torrents{{state="{names[k]}"}} {v}' for k, v in by_status.items()),
        "# HELP pytorrent_download_rate_bytes Payload download rate, bytes per second.",
        "# TYPE pytorrent_download_rate_bytes gauge",
        f"pytorrent_download_rate_bytes {down:.0f}",
        "# HELP pytorrent_upload_rate_bytes Payload upload rate, bytes per second.",
        "# TYPE pytorrent_upload_rate_bytes gauge",
        f"pytorrent_upload_rate_bytes {up:.0f}",
        "# HELP pytorrent_peers_connected Connected peers.",
        "# TYPE pytorrent_peers_connected gauge",
        f"pytorrent_peers_connected {peers:.0f}",
        "# HELP pytorrent_uploaded_bytes_total Payload uploaded, every torrent, ever.",
        "# TYPE pytorrent_uploaded_bytes_total counter",
        f"pytorrent_uploaded_bytes_total {total_up}",
        "# HELP pytorrent_downloaded_bytes_total Payload downloaded, every torrent, ever.",
        "# TYPE pytorrent_downloaded_bytes_total counter",
        f"pytorrent_downloaded_bytes_total {total_down}",
        "",
    ]
    return web.Response(
        text="\n".join(lines),
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )
