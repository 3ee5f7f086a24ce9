"""Helpers for the daemon's tests: an in-process daemon with its RPC, and an RPC client.

The RPC is served as ``pytorrent daemon`` serves it (:class:`~torrent.daemon.front.RpcServer`:
the hand-written front, aiohttp behind it). Everything binds to 127.0.0.1; the engine runs with ``testing_settings`` (loopback,
short timers) and seeds without a ratio limit, as the daemon does.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from torrent import config
from torrent.daemon.front import RpcServer
from torrent.daemon.rpc import SESSION_HEADER, RpcConfig
from torrent.daemon.service import Daemon, DaemonConfig
from torrent.proto.metainfo import Metainfo


@dataclass
class RpcClient:
    """Posts Transmission RPC requests, doing the 409 handshake as clients do."""

    http: aiohttp.ClientSession
    url: str
    session_id: str = ""

    async def post(self, body: Any, *, raw: bytes | None = None) -> tuple[int, Any]:
        """``(HTTP status, decoded JSON or None)`` after the session-id handshake."""
        for _ in range(2):
            data = raw if raw is not None else None
            async with self.http.post(
                self.url,
                json=None if raw is not None else body,
                data=data,
                headers={SESSION_HEADER: self.session_id},
            ) as resp:
                if resp.status == 409:
                    self.session_id = resp.headers[SESSION_HEADER]
                    continue
                text = await resp.text()
                try:
                    return resp.status, await resp.json(content_type=None)
                except ValueError:
                    return resp.status, text
        raise AssertionError("the 409 handshake did not settle")

    async def call(self, method: str, **arguments: Any) -> dict[str, Any]:
        """Call ``method``; fail unless the result is ``success``; return the arguments."""
        status, body = await self.post({"method": method, "arguments": arguments, "tag": 7})
        assert status == 200, body
        assert body["result"] == "success", body
        assert body["tag"] == 7
        out: dict[str, Any] = body["arguments"]
        return out

    async def result(self, method: str, **arguments: Any) -> str:
        """The ``result`` string of a call (for the error cases)."""
        status, body = await self.post({"method": method, "arguments": arguments})
        assert status == 200, body
        return str(body["result"])

    async def add(self, meta: Metainfo, **arguments: Any) -> int:
        out = await self.call("torrent-add", metainfo=base64.b64encode(meta.to_bytes()).decode(), **arguments)
        added = out.get("torrent-added") or out["torrent-duplicate"]
        return int(added["id"])

    async def get(self, ids: Any, *fields: str) -> list[dict[str, Any]]:
        args: dict[str, Any] = {"fields": list(fields)}
        if ids is not None:
            args["ids"] = ids
        out = await self.call("torrent-get", **args)
        torrents: list[dict[str, Any]] = out["torrents"]
        return torrents


def daemon_config(tmp_path: Path, **changes: Any) -> DaemonConfig:
    return DaemonConfig(
        download_dir=str(tmp_path / "downloads"),
        state_dir=str(tmp_path / "state"),
        **changes,
    )


@contextlib.asynccontextmanager
async def running_daemon(
    tmp_path: Path, rpc: RpcConfig | None = None, **changes: Any
) -> AsyncIterator[tuple[Daemon, RpcClient]]:
    """A daemon (state under ``tmp_path``) with its RPC on a loopback port, and a client."""
    settings = config.testing_settings().replace(seed_ratio=None)
    async with (
        Daemon(daemon_config(tmp_path, **changes), settings) as daemon,
        RpcServer(daemon, rpc or RpcConfig(), "127.0.0.1", 0) as server,
        aiohttp.ClientSession() as http,
    ):
        host, port = server.address
        yield daemon, RpcClient(http, f"http://{host}:{port}/transmission/rpc")
