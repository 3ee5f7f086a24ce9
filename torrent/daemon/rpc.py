"""Transmission's RPC protocol (HTTP JSON at ``/transmission/rpc``): its methods and the
checks a request passes first.

Implements the request/response format of Transmission's ``docs/rpc-spec.md`` with the
field names of RPC version 17 (Transmission 4.0; kebab-case and camelCase, as
``transmission-remote`` 3.00 and the common front-ends send them):

* the CSRF handshake: a request without the current ``X-Transmission-Session-Id``
  gets 409 carrying it;
* HTTP basic auth (401) when a user name and password are set;
* a host whitelist against DNS rebinding: the ``Host`` header must be an IP address,
  ``localhost`` or a configured name (421 otherwise);
* every method a client needs (see ``METHODS``); an unknown method or a malformed
  request gets a ``result`` naming the problem, never a 500.

Nothing here is tied to an HTTP server: :func:`refuse_client` and :func:`refuse_rpc` are
the checks (:class:`Refusal` is the answer to send instead), :func:`answer` turns a
request body into the response body. Two servers use them: the hand-written HTTP/1.1
front that answers the RPC (:mod:`torrent.daemon.front`) and the aiohttp application
behind it (:mod:`torrent.daemon.webapp`: the web UI, ``/metrics``, and every request the
front hands over). aiohttp is imported only when it is needed (the application, or a
``torrent-add`` of a URL): a restarting daemon answers before it is loaded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torrent.daemon import network
from torrent.daemon.fields import Listing
from torrent.daemon.service import Daemon, DaemonError, Record
from torrent.errors import MetainfoError
from torrent.version import USER_AGENT

if TYPE_CHECKING:
    import aiohttp
    from aiohttp import web

__all__ = [
    "MAX_BODY_BYTES",
    "RPC_VERSION",
    "SESSION_HEADER",
    "Refusal",
    "RpcConfig",
    "RpcContext",
    "answer",
    "build_app",
    "refuse_client",
    "refuse_rpc",
    "session_values",
]

log = logging.getLogger(__name__)

RPC_VERSION = 17
RPC_VERSION_MINIMUM = 14
SESSION_HEADER = "X-Transmission-Session-Id"
#: A request body larger than this is refused (a .torrent in base64 fits easily).
MAX_BODY_BYTES = 32 * 1024 * 1024
#: A .torrent fetched from a URL may not be larger than this.
MAX_TORRENT_URL_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RpcConfig:
    """The RPC server's settings.

    Attributes:
        username / password: basic auth when both are set.
        host_whitelist: names accepted in ``Host`` besides IP addresses and localhost.
        session_id: the CSRF token (random by default).
    """

    username: str | None = None
    password: str | None = None
    host_whitelist: tuple[str, ...] = ()
    session_id: str = ""

    def with_session_id(self) -> RpcConfig:
        """This config, with a random session id unless it has one."""
        if self.session_id:
            return self
        # ``secrets.token_urlsafe(24)``, without importing secrets (random, hashlib) at start.
        session_id = base64.urlsafe_b64encode(os.urandom(24)).rstrip(b"=").decode("ascii")
        return RpcConfig(self.username, self.password, self.host_whitelist, session_id)


@dataclass(slots=True)
class RpcContext:
    """What the methods need besides the daemon: the config (its session id set) and an
    HTTP client for ``torrent-add`` of a URL (made on first use; :meth:`close` ends it)."""

    config: RpcConfig
    _http: aiohttp.ClientSession | None = field(default=None, repr=False)

    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            import aiohttp

            self._http = aiohttp.ClientSession(
                headers={"User-Agent": USER_AGENT}, timeout=aiohttp.ClientTimeout(total=30)
            )
        return self._http

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.close()


class RpcError(Exception):
    """A request the method refuses; the message becomes the response's ``result``."""


Handler = Callable[[Daemon, dict[str, Any], RpcContext], Awaitable[dict[str, Any]]]


def build_app(daemon: Daemon, config: RpcConfig, context: RpcContext | None = None) -> web.Application:
    """The aiohttp application serving the RPC, the web UI and the metrics
    (:func:`torrent.daemon.webapp.build_app`; imports aiohttp)."""
    from torrent.daemon import webapp

    return webapp.build_app(daemon, config, context)


# --------------------------------------------------------------------- the checks


@dataclass(frozen=True, slots=True)
class Refusal:
    """An HTTP answer sent instead of the RPC's: ``status``, its ``reason`` phrase, extra
    ``headers`` and an HTML ``text``."""

    status: int
    reason: str
    text: str
    headers: tuple[tuple[str, str], ...] = ()


UNAUTHORIZED = Refusal(
    401, "Unauthorized", "<h1>401: Unauthorized</h1>", (("WWW-Authenticate", 'Basic realm="Transmission"'),)
)
MISDIRECTED = Refusal(
    421, "Misdirected Request", "<h1>421: Misdirected Request</h1><p>Unknown host name.</p>"
)
NOT_ALLOWED = Refusal(405, "Method Not Allowed", "<h1>405: Method Not Allowed</h1>")


def refuse_client(config: RpcConfig, authorization: str | None, host: str) -> Refusal | None:
    """What the RPC and the web UI alike answer a request that fails basic auth (401)
    or names a host not on the whitelist (421); None: it passes."""
    if config.username is not None and config.password is not None and not _authorized(authorization, config):
        return UNAUTHORIZED
    if not host_allowed(host, config.host_whitelist):
        return MISDIRECTED
    return None


def refuse_rpc(config: RpcConfig, session_id: str | None, method: str) -> Refusal | None:
    """What an RPC request (past :func:`refuse_client`) gets instead of an answer: 409
    without the current session id (it carries the id), 405 when it is not a POST."""
    if session_id != config.session_id:
        return Refusal(
            409,
            "Conflict",
            f"<h1>409: Conflict</h1><p>Your request had an invalid session-id header.</p>"
            f"<p><code>{SESSION_HEADER}: {config.session_id}</code></p>",
            ((SESSION_HEADER, config.session_id),),
        )
    if method != "POST":
        return NOT_ALLOWED
    return None


def host_allowed(host: str, whitelist: tuple[str, ...]) -> bool:
    name = host
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    if name in ("localhost", "localhost.", ""):
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return name.lower() in whitelist


def _authorized(header: str | None, config: RpcConfig) -> bool:
    if header is None or not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    import secrets  # only with basic auth: not on every start

    return secrets.compare_digest(user, config.username or "") and secrets.compare_digest(
        password, config.password or ""
    )


# --------------------------------------------------------------------- a request


async def answer(daemon: Daemon, context: RpcContext, raw: bytes) -> bytes:
    """The JSON response body for the request body ``raw`` (a request that passed the
    checks). Never raises for what a client sends: a bug is logged and answered
    ``internal error``."""
    try:
        return _encode(await _call(daemon, context, raw)).encode()
    except Exception:  # a bug must not take the server down or leak a traceback
        log.exception("error serving an RPC request")
        return b'{"result":"internal error"}'


def too_large() -> bytes:
    """The response body for a request larger than :data:`MAX_BODY_BYTES`."""
    return _encode({"result": f"request larger than {MAX_BODY_BYTES} bytes"}).encode()


async def _call(daemon: Daemon, context: RpcContext, raw: bytes) -> dict[str, Any]:
    try:
        body = _json_body(raw)
    except (ValueError, UnicodeDecodeError):
        return {"result": "malformed request: not JSON"}
    if not isinstance(body, dict):
        return {"result": "malformed request: not a JSON object"}
    tag = body.get("tag")
    method = body.get("method")
    args = body.get("arguments", {})
    if not isinstance(method, str):
        return _tagged({"result": "no method name"}, tag)
    if not isinstance(args, dict):
        return _tagged({"result": "arguments must be an object"}, tag)
    handler = METHODS.get(method.replace("_", "-"))
    if handler is None:
        return _tagged({"result": "method name not recognized"}, tag)
    try:
        out = await handler(daemon, args, context)
    except (RpcError, DaemonError) as exc:
        return _tagged({"result": str(exc)}, tag)
    except (TypeError, ValueError, KeyError) as exc:
        return _tagged({"result": f"invalid argument: {exc}"}, tag)
    return _tagged({"result": "success", "arguments": out}, tag)


def _json_body(raw: bytes) -> Any:
    """``json.loads(raw)``; a body that starts ``{`` and a byte other than NUL is UTF-8 to
    json.loads's detection (not UTF-16 or -32), and is decoded as it would, without it."""
    if raw[:1] == b"{" and raw[1:2] != b"\x00":
        return _JSON_DECODE(raw.decode("utf-8", "surrogatepass"))
    return json.loads(raw)


def _tagged(body: dict[str, Any], tag: Any) -> dict[str, Any]:
    if tag is not None:
        body["tag"] = tag
    return body


class RawJson(str):
    """JSON text already built (``torrent-get``'s list), put into the answer as it is."""

    __slots__ = ()


#: What json.loads does with a str.
_JSON_DECODE = json.JSONDecoder().decode
#: One encoder for every answer (``json.dumps`` with ``separators`` builds one per call).
_JSON = json.JSONEncoder(separators=(",", ":"))


def _encode(value: Any) -> str:
    """``value`` as compact JSON, with any :class:`RawJson` in its dicts copied in as it is."""
    if isinstance(value, RawJson):
        return value
    if isinstance(value, dict) and _has_raw(value):
        return "{" + ",".join(f"{_JSON.encode(str(k))}:{_encode(v)}" for k, v in value.items()) + "}"
    # No RawJson inside (an add's answer, say): one call, not one per dict and key.
    return _JSON.encode(value)


def _has_raw(value: dict[Any, Any]) -> bool:
    """A :class:`RawJson` is in ``value`` (its dicts searched, at any depth)."""
    # A loop, not any() of a generator (twice the time): every answer passes here.
    for v in value.values():  # noqa: SIM110
        if isinstance(v, RawJson) or (isinstance(v, dict) and _has_raw(v)):
            return True
    return False


# --------------------------------------------------------------------- torrent-get


async def _torrent_get(daemon: Daemon, args: dict[str, Any], _: RpcContext) -> dict[str, Any]:
    names = args.get("fields")
    if not isinstance(names, list) or not all(isinstance(f, str) for f in names):
        raise RpcError("'fields' must be a list of field names")
    listing = Listing(names, table=args.get("format") == "table")
    out: dict[str, Any] = {"torrents": RawJson(listing.json(_ids(daemon, args), time.time()))}
    if args.get("ids") == "recently-active":
        out["removed"] = list(daemon.removed_ids)
    return out


# --------------------------------------------------------------------- torrent actions


def _ids(daemon: Daemon, args: dict[str, Any]) -> list[Record]:
    return daemon.lookup(args.get("ids"))


async def _torrent_start(daemon: Daemon, args: dict[str, Any], _: RpcContext) -> dict[str, Any]:
    await daemon.start(_ids(daemon, args))
    return {}


async def _torrent_start_now(daemon: Daemon, args: dict[str, Any], _: RpcContext) -> dict[str, Any]:
    await daemon.start(_ids(daemon, args), now=True)
    return {}


async def _torrent_stop(daemon: Daemon, args: dict[str, Any], _: RpcContext) -> dict[str, Any]:
    await daemon.stop(_ids(daemon, args))
    return {}


async def _torrent_verify(daemon: Daemon, args: dict[str, Any], _: RpcContext) -> dict[str, Any]:
    await daemon.verify(_ids(daemon, args))
    return {}


async def _torrent_reannounce(daemon: Daemon, args: dict[str, Any], _: RpcContext) -> dict[str, Any]:
    daemon.reannounce(_ids(daemon, args))
    return {}


def _index_list(args: dict[str, Any], key: str) -> list[int] | None:
    value = args.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(i, int) for i in value):
        raise RpcError(f"'{key}' must be a list of file indices")
    return value


async def _torrent_set(daemon: Daemon, args: dict[str, Any], _: RpcContext) -> dict[str, Any]:
    records = _ids(daemon, args)
    priorities = {
        prio: idx
        for prio, key in ((1, "priority-high"), (-1, "priority-low"), (0, "priority-normal"))
        if (idx := _index_list(args, key)) is not None
    }
    wanted, unwanted = _index_list(args, "files-wanted"), _index_list(args, "files-unwanted")
    if wanted is not None or unwanted is not None or priorities:
        await daemon.set_files(records, wanted=wanted, unwanted=unwanted, priorities=priorities)
    if "labels" in args:
        labels = args["labels"]
        if not isinstance(labels, list) or not all(isinstance(x, str) and "," not in x for x in labels):
            raise RpcError("labels must be a list of strings without commas")
        daemon.set_labels(records, labels)
    limits = {k: args[k] for k in _TORRENT_LIMITS if k in args}
    if not isinstance(limits.get("honorsSessionLimits", True), bool):
        raise RpcError("'honorsSessionLimits' must be true or false")
    if not isinstance(limits.get("group", ""), str):
        raise RpcError("'group' must be a bandwidth group's name")
    if limits:
        daemon.set_limits(records, limits)
    if "queuePosition" in args and records:
        daemon.set_queue_position(records[0], int(args["queuePosition"]))
    if "location" in args:
        await daemon.set_location(records, str(args["location"]), move=False)
    return {}


_TORRENT_LIMITS = (
    "bandwidthPriority",
    "group",
    "downloadLimit",
    "downloadLimited",
    "uploadLimit",
    "uploadLimited",
    "honorsSessionLimits",
    "peer-limit",
    "seedRatioLimit",
    "seedRatioMode",
    "seedIdleLimit",
    "seedIdleMode",
)


async def _torrent_set_location(daemon: Daemon, args: dict[str, Any], _: RpcContext) -> dict[str, Any]:
    location = args.get("location")
    if not isinstance(location, str) or not location:
        raise RpcError("no location")
    await daemon.set_location(_ids(daemon, args), location, move=bool(args.get("move", False)))
    return {}


async def _torrent_rename_path(daemon: Daemon, args: dict[str, Any], _: RpcContext) -> dict[str, Any]:
    path, name = args.get("path"), args.get("name")
    if not isinstance(path, str) or not isinstance(name, str):
        raise RpcError("'path' and 'name' must be strings")
    records = _ids(daemon, args)
    if len(records) != 1:
        raise RpcError("torrent-rename-path takes exactly one torrent")
    await daemon.rename_path(records[0], path, name)
    return {"id": records[0].id, "path": path, "name": name}


async def _torrent_remove(daemon: Daemon, args: dict[str, Any], _: RpcContext) -> dict[str, Any]:
    await daemon.remove(_ids(daemon, args), delete_data=bool(args.get("delete-local-data", False)))
    return {}


async def _torrent_add(daemon: Daemon, args: dict[str, Any], context: RpcContext) -> dict[str, Any]:
    metainfo_b64, filename = args.get("metainfo"), args.get("filename")
    data: bytes | None = None
    magnet: str | None = None
    if isinstance(metainfo_b64, str) and metainfo_b64:
        try:
            data = base64.b64decode("".join(metainfo_b64.split()), validate=True)
        except (binascii.Error, ValueError):
            raise RpcError("invalid or corrupt torrent file: metainfo is not base64") from None
    elif isinstance(filename, str) and filename:
        if filename.startswith("magnet:"):
            magnet = filename
        elif filename.startswith(("http://", "https://")):
            data = await _fetch_torrent(context.http(), filename)
        else:
            try:
                data = await asyncio.to_thread(_read_head, filename, MAX_TORRENT_URL_BYTES + 1)
            except OSError as exc:
                raise RpcError(f"cannot read {filename}: {exc.strerror or exc}") from None
    else:
        raise RpcError("no torrent given ('metainfo' or 'filename')")
    download_dir = args.get("download-dir")
    try:
        record, added = daemon.add(
            metainfo=data,
            magnet=magnet,
            download_dir=download_dir if isinstance(download_dir, str) and download_dir else None,
            paused=bool(args.get("paused", False)),
            files_wanted=_index_list(args, "files-wanted"),
            files_unwanted=_index_list(args, "files-unwanted"),
            labels=[x for x in args.get("labels", []) if isinstance(x, str)],
        )
    except MetainfoError as exc:
        raise RpcError(f"invalid or corrupt torrent file: {exc}") from None
    await daemon.committed()  # answered once stored: a kill -9 after the answer keeps it
    summary = {"id": record.id, "name": record.stored.name, "hashString": record.info_hash}
    return {"torrent-added": summary} if added else {"torrent-duplicate": summary}


def _read_head(path: str, limit: int) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(limit)


async def _fetch_torrent(http: aiohttp.ClientSession, url: str) -> bytes:
    import aiohttp

    try:
        async with http.get(url) as resp:
            if resp.status != 200:
                raise RpcError(f"gotMetadataFromURL: http error {resp.status}: {resp.reason}")
            data = await resp.content.read(MAX_TORRENT_URL_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise RpcError(f"cannot fetch {url}: {exc or type(exc).__name__}") from None
    if len(data) > MAX_TORRENT_URL_BYTES:
        raise RpcError(f"{url}: larger than {MAX_TORRENT_URL_BYTES} bytes")
    return data


# --------------------------------------------------------------------- session


def session_values(daemon: Daemon) -> dict[str, Any]:
    """``session-get``'s answer."""
    s = daemon.session.settings
    limits = daemon.session_limits
    return {
        "alt-speed-down": limits["alt-speed-down"],
        "alt-speed-enabled": limits["alt-speed-enabled"],
        "alt-speed-time-begin": limits["alt-speed-time-begin"],
        "alt-speed-time-day": limits["alt-speed-time-day"],
        "alt-speed-time-enabled": limits["alt-speed-time-enabled"],
        "alt-speed-time-end": limits["alt-speed-time-end"],
        "alt-speed-up": limits["alt-speed-up"],
        "blocklist-enabled": False,
        "blocklist-size": 0,
        "blocklist-url": "",
        "cache-size-mb": 4,
        "config-dir": daemon.state_dir,
        "download-dir": daemon.download_dir,
        "download-dir-free-space": _free(daemon.download_dir),
        "download-queue-enabled": True,
        "download-queue-size": daemon.max_active_downloads,
        "idle-seeding-limit": limits["idle-seeding-limit"],
        "idle-seeding-limit-enabled": limits["idle-seeding-limit-enabled"],
        "incomplete-dir": daemon.download_dir,
        "incomplete-dir-enabled": False,
        "peer-limit-global": s.max_peers_total,
        "peer-limit-per-torrent": s.max_peers_per_torrent,
        "peer-port-random-on-start": False,
        "port-forwarding-enabled": False,
        "queue-stalled-enabled": True,
        "queue-stalled-minutes": int(daemon.stall_s // 60),
        "rename-partial-files": True,
        "rpc-version": RPC_VERSION,
        "rpc-version-minimum": RPC_VERSION_MINIMUM,
        "rpc-version-semver": "5.3.0",
        "script-torrent-done-enabled": bool(daemon.config.on_complete),
        "script-torrent-done-filename": daemon.config.on_complete or "",
        "seed-queue-enabled": daemon.max_active_seeds is not None,
        "seed-queue-size": daemon.max_active_seeds or 0,
        "seedRatioLimit": limits["seedRatioLimit"],
        "seedRatioLimited": limits["seedRatioLimited"],
        "session-id": "",
        "speed-limit-down": limits["speed-limit-down"],
        "speed-limit-down-enabled": limits["speed-limit-down-enabled"],
        "speed-limit-up": limits["speed-limit-up"],
        "speed-limit-up-enabled": limits["speed-limit-up-enabled"],
        "start-added-torrents": True,
        "trash-original-torrent-files": False,
        "units": {
            "memory-bytes": 1024,
            "memory-units": ["KiB", "MiB", "GiB", "TiB"],
            "size-bytes": 1000,
            "size-units": ["kB", "MB", "GB", "TB"],
            "speed-bytes": 1000,
            "speed-units": ["kB/s", "MB/s", "GB/s", "TB/s"],
        },
        "version": f"{USER_AGENT} (pytorrent)",
        **network.values(daemon.session),
    }


def _disk_usage(path: str) -> tuple[int, int]:
    """Free bytes (for an unprivileged user) and total bytes of the file system holding
    ``path``: what ``shutil.disk_usage`` reads, without importing shutil (with zlib, bz2
    and lzma) at the first ``session-get``.

    Raises:
        OSError: ``path`` cannot be looked at.
    """
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def _free(path: str) -> int:
    try:
        return _disk_usage(path)[0]
    except OSError:
        return -1


async def _session_get(daemon: Daemon, args: dict[str, Any], context: RpcContext) -> dict[str, Any]:
    values = session_values(daemon)
    values["session-id"] = context.config.session_id
    fields = args.get("fields")
    if isinstance(fields, list):
        return {k: v for k, v in values.items() if k in fields}
    return values


async def _session_set(daemon: Daemon, args: dict[str, Any], _: RpcContext) -> dict[str, Any]:
    await daemon.update_settings(args)
    return {}


async def _session_stats(daemon: Daemon, args: dict[str, Any], _: RpcContext) -> dict[str, Any]:
    records = list(daemon.records.values())
    running = [r for r in records if r.handle is not None]
    down = up = 0
    run_up = run_down = 0
    for r in running:
        assert r.handle is not None
        st = r.handle.brief()
        down += int(st.download_rate_bps)
        up += int(st.upload_rate_bps)
        run_up += st.uploaded_bytes
        run_down += st.downloaded_bytes
    total_up = sum(r.totals()[0] for r in records)
    total_down = sum(r.totals()[1] for r in records)
    seconds = int(time.time() - daemon.started_at)
    current = {
        "uploadedBytes": daemon.session_up + run_up,
        "downloadedBytes": daemon.session_down + run_down,
        "filesAdded": len(records),
        "sessionCount": 1,
        "secondsActive": seconds,
    }
    cumulative = {**current, "uploadedBytes": total_up, "downloadedBytes": total_down}
    active = len(running) + sum(1 for r in records if r.parked)  # dormant seeds are seeding
    return {
        "activeTorrentCount": active,
        "pausedTorrentCount": len(records) - active,
        "torrentCount": len(records),
        "downloadSpeed": down,
        "uploadSpeed": up,
        "current-stats": current,
        "cumulative-stats": cumulative,
    }


async def _blocklist_update(daemon: Daemon, args: dict[str, Any], _: RpcContext) -> dict[str, Any]:
    raise RpcError("blocklist-update is not supported: this daemon has no blocklist")


async def _port_test(daemon: Daemon, args: dict[str, Any], context: RpcContext) -> dict[str, Any]:
    # Transmission asks a web service outside; we never reach outside on our own, so we
    # only tell whether our own listening socket accepts connections.
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", daemon.session.port), 3)
        writer.close()
        ok = True
    except (OSError, TimeoutError):
        ok = False
    return {"port-is-open": ok}


async def _session_close(daemon: Daemon, args: dict[str, Any], _: RpcContext) -> dict[str, Any]:
    daemon.request_close()
    return {}


def _queue(where: str) -> Handler:
    async def move(daemon: Daemon, args: dict[str, Any], _: RpcContext) -> dict[str, Any]:
        daemon.queue_move(_ids(daemon, args), where)
        return {}

    return move


async def _group_set(daemon: Daemon, args: dict[str, Any], _: RpcContext) -> dict[str, Any]:
    daemon.set_group(args)
    return {}


async def _group_get(daemon: Daemon, args: dict[str, Any], _: RpcContext) -> dict[str, Any]:
    """Every bandwidth group, or those ``group`` names (a name or a list of names)."""
    names = args.get("group")
    if isinstance(names, str):
        names = [names]
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise RpcError("'group' must be a name or a list of names")
    groups = (
        daemon.groups.values() if names is None else [daemon.groups[n] for n in names if n in daemon.groups]
    )
    return {"group": [g.entry() for g in groups]}


async def _free_space(daemon: Daemon, args: dict[str, Any], _: RpcContext) -> dict[str, Any]:
    path = args.get("path")
    if not isinstance(path, str) or not path:
        raise RpcError("no path")
    try:
        free, total = _disk_usage(path)
    except OSError as exc:
        raise RpcError(f"{path}: {exc.strerror or exc}") from None
    return {"path": path, "size-bytes": free, "total_size": total}


METHODS: dict[str, Handler] = {
    "torrent-start": _torrent_start,
    "torrent-start-now": _torrent_start_now,
    "torrent-stop": _torrent_stop,
    "torrent-verify": _torrent_verify,
    "torrent-reannounce": _torrent_reannounce,
    "torrent-set": _torrent_set,
    "torrent-get": _torrent_get,
    "torrent-add": _torrent_add,
    "torrent-remove": _torrent_remove,
    "torrent-set-location": _torrent_set_location,
    "torrent-rename-path": _torrent_rename_path,
    "session-get": _session_get,
    "session-set": _session_set,
    "session-stats": _session_stats,
    "blocklist-update": _blocklist_update,
    "port-test": _port_test,
    "session-close": _session_close,
    "queue-move-top": _queue("top"),
    "queue-move-up": _queue("up"),
    "queue-move-down": _queue("down"),
    "queue-move-bottom": _queue("bottom"),
    "free-space": _free_space,
    "group-set": _group_set,
    "group-get": _group_get,
}
