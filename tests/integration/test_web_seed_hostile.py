"""Web seeds that misbehave (a small aiohttp server): each failure backs off with a
warning, an honest second seed finishes the download, a liar is banned."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.integration.swarm_helpers import make_payload, make_torrent, same_tree
from tests.integration.web_seed_helpers import with_web_seeds
from torrent import config
from torrent.engine.session import Session, Torrent
from torrent.engine.status import TorrentEvent, TorrentEventKind
from torrent.proto.metainfo import Metainfo

PIECE = 32 * 1024
SIZE = 1_000_000 + 17


class Server:
    """Serves one payload at ``/<mode>/file``; the mode says how to misbehave."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.hits: dict[str, list[float]] = {}
        self.base = ""
        self.info_hash = b""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        mode = request.match_info["mode"]
        self.hits.setdefault(mode, []).append(asyncio.get_running_loop().time())
        if mode.startswith("bep17"):
            return self.bep17(request, mode)
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", request.headers.get("Range", ""))
        start, end = (int(m.group(1)), int(m.group(2)) + 1) if m else (0, len(self.data))
        body = self.data[start:end]
        if mode == "redirect":
            raise web.HTTPFound(f"/redirect/{request.match_info['name']}")
        if mode == "busy" and len(self.hits[mode]) == 1:
            return web.Response(status=503, headers={"Retry-After": "1"})
        if mode == "ignore-range":
            resp = web.StreamResponse(status=200, headers={"Content-Length": str(len(self.data))})
            await resp.prepare(request)
            for i in range(0, len(self.data), 16 * 1024):
                await resp.write(self.data[i : i + 16 * 1024])
            return resp
        if mode == "corrupt":
            # One byte wrong in every piece it serves.
            buf = bytearray(body)
            for p in range(-(-start // PIECE) * PIECE, end, PIECE):
                buf[p - start] ^= 0xFF
            body = bytes(buf)
        resp = web.StreamResponse(
            status=206, headers={"Content-Range": f"bytes {start}-{end - 1}/{len(self.data)}"}
        )
        resp.content_length = len(body)
        await resp.prepare(request)
        if mode == "trickle" and len(self.hits[mode]) == 1:
            await resp.write(body[:10])
            await asyncio.sleep(3600)
        if mode == "hangup":
            await resp.write(body[: len(body) // 2])
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write(body)
        return resp

    def bep17(self, request: web.Request, mode: str) -> web.Response:
        """BEP 17: ``?info_hash=&piece=&ranges=a-b`` (inclusive); a 503 body is the wait."""
        if mode == "bep17-busy" and len(self.hits[mode]) == 1:
            return web.Response(status=503, text="1")
        raw = dict(kv.split("=", 1) for kv in request.rel_url.raw_query_string.split("&"))
        assert urllib.parse.unquote_to_bytes(raw["info_hash"]) == self.info_hash, raw
        q = request.rel_url.query
        a, b = (int(x) for x in q["ranges"].split("-"))
        base = int(q["piece"]) * PIECE
        return web.Response(body=self.data[base + a : base + b + 1])

    def url(self, mode: str) -> str:
        return f"{self.base}/{mode}/file"


@contextlib.asynccontextmanager
async def serve(data: bytes) -> AsyncIterator[Server]:
    server = Server(data)
    app = web.Application()
    app.router.add_get("/{mode}/{name}", server.handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.base = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


def _settings() -> config.Settings:
    # Small requests: both seeds get work from the start.
    return config.testing_settings().replace(web_seed_request_bytes=4 * PIECE)


async def _download(
    tmp_path: Path, meta: Metainfo, *urls: str, settings: config.Settings | None = None
) -> tuple[Torrent, list[TorrentEvent]]:
    events: list[TorrentEvent] = []
    async with asyncio.timeout(30), Session(settings or _settings()) as s:
        t = await s.add_torrent(with_web_seeds(meta, *urls), tmp_path / "dl", seed=False)

        async def collect() -> None:
            async for ev in t.events():
                events.append(ev)

        task = asyncio.create_task(collect())
        await t.wait_complete()
        task.cancel()
    return t, events


@pytest.fixture
def payload(tmp_path: Path) -> tuple[Path, Metainfo]:
    content = make_payload(tmp_path / "www", "file", SIZE)
    return content, make_torrent(content, piece_length=PIECE)


def _warnings(events: list[TorrentEvent], url: str) -> list[str]:
    return [e.message for e in events if e.kind == TorrentEventKind.WEB_SEED_WARNING and url in e.message]


async def test_a_liar_is_banned_and_the_honest_seed_finishes(
    tmp_path: Path, payload: tuple[Path, Metainfo]
) -> None:
    content, meta = payload
    async with serve(content.read_bytes()) as srv:
        t, events = await _download(tmp_path, meta, srv.url("corrupt"), srv.url("honest"))
    assert same_tree(content, tmp_path / "dl" / "file")
    st = t.statistics()
    assert st.hash_failures >= 1
    assert (st.web_seeds_active, st.web_seeds_total) == (1, 2)
    bans = [e.message for e in events if e.kind == TorrentEventKind.PEER_BANNED]
    assert any(srv.url("corrupt") in b for b in bans), bans


@pytest.mark.parametrize(
    ("mode", "why"),
    [
        ("ignore-range", "ignores Range"),
        ("redirect", "redirect"),
        ("hangup", "body"),
    ],
)
async def test_a_failing_seed_backs_off_and_the_other_finishes(
    tmp_path: Path, payload: tuple[Path, Metainfo], mode: str, why: str
) -> None:
    content, meta = payload
    async with serve(content.read_bytes()) as srv:
        t, events = await _download(tmp_path, meta, srv.url(mode), srv.url("honest"))
    assert same_tree(content, tmp_path / "dl" / "file")
    warned = _warnings(events, srv.url(mode))
    assert warned
    assert all(why in w for w in warned), warned
    assert t.statistics().hash_failures == 0
    if mode == "ignore-range":
        # Stopped at the first unexpected bytes: nothing of the whole-file answers was used.
        assert t.statistics().wasted_bytes == 0


async def test_503_with_retry_after_is_honoured(tmp_path: Path, payload: tuple[Path, Metainfo]) -> None:
    content, meta = payload
    async with serve(content.read_bytes()) as srv:
        # One request at a time, so the second request is the retry.
        one = _settings().replace(web_seed_connections=1)
        _, events = await _download(tmp_path, meta, srv.url("busy"), settings=one)
        hits = srv.hits["busy"]
    assert same_tree(content, tmp_path / "dl" / "file")
    assert any("HTTP 503" in w for w in _warnings(events, srv.url("busy")))
    # The second request waited for Retry-After (1 s), not the 0.2 s back-off.
    assert len(hits) >= 2
    assert hits[1] - hits[0] >= 0.9


async def test_a_trickle_is_dropped_and_retried(tmp_path: Path, payload: tuple[Path, Metainfo]) -> None:
    """The only source trickles on its first request (10 bytes, then nothing): after the
    slow window (1 s in the test settings) it is dropped, backs off, and then finishes."""
    content, meta = payload
    async with serve(content.read_bytes()) as srv:
        _, events = await _download(tmp_path, meta, srv.url("trickle"))
    assert same_tree(content, tmp_path / "dl" / "file")
    warned = _warnings(events, srv.url("trickle"))
    assert len(warned) == 1
    assert "too slow" in warned[0], warned


@pytest.mark.parametrize("mode", ["bep17", "bep17-busy"])
async def test_bep17_http_seed(tmp_path: Path, payload: tuple[Path, Metainfo], mode: str) -> None:
    """A BEP 17 ``httpseeds`` server alone: piece requests by query string; a 503 whose
    body says 1 s is waited out."""
    content, meta = payload
    async with serve(content.read_bytes()) as srv:
        srv.info_hash = meta.info_hash
        meta = dataclasses.replace(meta, httpseeds=(srv.url(mode),))
        one = _settings().replace(web_seed_connections=1)
        t, events = await _download(tmp_path, meta, settings=one)
        hits = srv.hits[mode]
    assert same_tree(content, tmp_path / "dl" / "file")
    assert t.statistics().web_seeds_total == 1
    if mode == "bep17-busy":
        assert any("503" in w for w in _warnings(events, srv.url(mode)))
        assert hits[1] - hits[0] >= 0.9
