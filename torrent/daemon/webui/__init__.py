"""The daemon's web UI: static files served at ``/``, talking to ``/transmission/rpc``.

The page is plain HTML, CSS and JavaScript modules under ``static/`` (no build step, no
third-party code, nothing fetched from another origin), shipped inside the package.
It drives the daemon only through the Transmission RPC, so it needs no routes of its own
besides the files, and it sits behind the RPC's auth and host whitelist.

Every response carries a Content-Security-Policy that allows scripts, styles and
connections from this origin only and no inline script: a torrent name that is
attacker-controlled HTML could not run even if it reached the DOM as markup (the page
sets names with ``textContent``; this is the second line of defence).

The files are read once, when the application is built (about 100 KB), and answered
from memory.
"""

from __future__ import annotations

import html
from importlib import resources
from importlib.resources.abc import Traversable

from aiohttp import web

__all__ = ["CSP", "add_routes", "static_files"]

#: Only our own origin; no inline script or style attribute, no framing by other sites.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}

FILES = web.AppKey("webui_files", dict[str, tuple[bytes, str]])
#: Where ``index.html`` takes the RPC session id.
PLACEHOLDER = b"__SESSION_ID__"


def static_files() -> dict[str, tuple[bytes, str]]:
    """``{"/static/<path>": (bytes, content type)}`` for every file of the UI."""
    out: dict[str, tuple[bytes, str]] = {}
    root = resources.files(__name__).joinpath("static")

    def walk(node: Traversable, prefix: str) -> None:
        for child in node.iterdir():
            name = f"{prefix}/{child.name}"
            if child.is_dir():
                walk(child, name)
                continue
            kind = _CONTENT_TYPES.get(name[name.rfind(".") :])
            if kind is not None:
                out[f"/static{name}"] = (child.read_bytes(), kind)

    walk(root, "")
    return out


def add_routes(app: web.Application, session_id: str) -> None:
    """Serve the UI: ``/`` is the page, ``/static/...`` its scripts, styles and icon.

    The page carries the RPC's ``session_id`` in a ``<meta>`` tag, so its first call
    needs no 409 round trip. That gives nothing away: the id only stops other sites
    from posting to the RPC blind, and they cannot read this page (same-origin policy)
    any more than the 409's header.
    """
    files = static_files()
    body, kind = files["/static/index.html"]
    files["/"] = (body.replace(PLACEHOLDER, html.escape(session_id).encode()), kind)
    app[FILES] = files
    app.router.add_get("/", _index)
    app.router.add_get("/static/{path:.+}", _static)


def _respond(body: bytes, content_type: str) -> web.Response:
    return web.Response(
        body=body,
        content_type=content_type,
        charset="utf-8" if not content_type.startswith("image/") else None,
        headers={
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )


async def _index(request: web.Request) -> web.Response:
    return _respond(*request.app[FILES]["/"])


async def _static(request: web.Request) -> web.Response:
    found = request.app[FILES].get(request.path)
    if found is None or request.path == "/static/index.html":
        raise web.HTTPNotFound(text="no such file")
    return _respond(*found)
