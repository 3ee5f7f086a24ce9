"""An evil HTTP tracker against the client: each answer ends in one clear ``TrackerError``
(or a bounded re-announce delay), never a hang, a crash or unbounded memory."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.http_clients import KINDS, http_client
from tests.integration.swarm_helpers import make_payload, make_torrent
from tests.polling import wait_until
from torrent import config
from torrent.engine.announcer import MAX_TRACKER_INTERVAL_S, announce_delay
from torrent.engine.session import Session
from torrent.engine.tracker_client import MAX_HTTP_REDIRECTS, MAX_HTTP_RESPONSE, HttpTracker
from torrent.errors import TrackerError
from torrent.proto import bencoding
from torrent.proto.tracker_codec import AnnounceEvent, AnnounceRequest, AnnounceResponse
from torrent.types import InfoHash, PeerId

REQ = AnnounceRequest(
    info_hash=InfoHash(bytes(range(20))), peer_id=PeerId(b"-PT0100-abcdefghijkl"), port=6881, left=1,
    event=AnnounceEvent.STARTED, numwant=10,
)  # fmt: skip


@contextlib.asynccontextmanager
async def evil_tracker(
    body: bytes = b"", *, redirect_loop: bool = False, chunked: bool = False
) -> AsyncIterator[str]:
    """An HTTP tracker on loopback answering every announce with ``body`` (or a redirect
    to itself; ``chunked``: streamed without a Content-Length); yields its announce URL."""

    async def announce(request: web.Request) -> web.StreamResponse:
        if redirect_loop:
            raise web.HTTPFound(location="/announce?again=1")
        if not chunked:
            return web.Response(body=body)
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(body), 1 << 16):
            await resp.write(body[i : i + (1 << 16)])
        return resp

    app = web.Application()
    app.router.add_get("/announce", announce)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/announce"
    finally:
        await runner.cleanup()


async def announce_to(url: str, kind: str) -> AnnounceResponse:
    async with http_client(kind) as http:
        return await HttpTracker(url, http, timeout_s=5).announce(REQ)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<html>502 Bad Gateway</html>", "not bencoded|bad response"),
        (b"d8:intervali60e5:peers7:abcdefge", "compact peers length 7 is not a multiple of 6"),
        (b"d5:peers0:e", "no interval"),
        (b"d8:intervali60e5:peers0:" + b"x" * 10 + b"e", "bad response"),
    ],
)
@pytest.mark.parametrize("kind", KINDS)
async def test_garbage_answers_are_one_tracker_error(body: bytes, expected: str, kind: str) -> None:
    async with evil_tracker(body) as url:
        with pytest.raises(TrackerError, match=expected) as info:
            await announce_to(url, kind)
    assert "\n" not in info.value.reason


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("chunked", [False, True])
async def test_a_huge_body_is_response_too_large(chunked: bool, kind: str) -> None:
    n = MAX_HTTP_RESPONSE * 2
    body = b"d8:intervali60e5:peers" + str(n).encode() + b":" + bytes(n) + b"e"
    async with evil_tracker(body, chunked=chunked) as url:
        with pytest.raises(TrackerError, match="response too large"):
            await announce_to(url, kind)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_redirect_loop_is_too_many_redirects(kind: str) -> None:
    async with evil_tracker(redirect_loop=True) as url:
        with pytest.raises(TrackerError, match=f"too many redirects \\(more than {MAX_HTTP_REDIRECTS}\\)"):
            await announce_to(url, kind)


@pytest.mark.parametrize("kind", KINDS)
async def test_escape_sequences_in_a_failure_reason_are_kept_exact_for_json(kind: str) -> None:
    # The views escape them (tests/hostile/test_terminal_escapes.py); the error keeps them.
    body = bencoding.encode({b"failure reason": b"\x1b[2Jgo away\x9b"})
    async with evil_tracker(body) as url:
        with pytest.raises(TrackerError, match="go away") as info:
            await announce_to(url, kind)
    assert "\x1b[2J" in info.value.reason


@pytest.mark.parametrize(
    ("interval", "min_interval", "expected"),
    [
        (-5, None, "default"),  # negative: nonsense, our default
        (0, None, "default"),  # zero: our default
        (10**18, None, "cap"),  # huge: capped
        (10**18, 10**18, "cap"),
        (60, -1, 60.0),
    ],
)
def test_odd_intervals_give_a_bounded_delay(
    interval: int, min_interval: int | None, expected: object
) -> None:
    s = config.Settings()
    resp = AnnounceResponse(interval=interval, peers=(), min_interval=min_interval)
    delay, min_gap = announce_delay(resp, s)
    want = {
        "min": s.min_announce_interval_s,
        "default": s.default_announce_interval_s,
        "cap": MAX_TRACKER_INTERVAL_S,
    }
    assert delay == want.get(expected, expected)  # type: ignore[call-overload]
    assert s.min_announce_interval_s <= delay <= MAX_TRACKER_INTERVAL_S
    assert min_gap <= delay


async def test_a_tracker_listing_170_000_peers_leaves_a_bounded_peer_list(tmp_path: Path) -> None:
    """As many compact peers as fit under the 1 MiB response limit (10^6 do not: that is
    ``response too large`` above): the torrent keeps at most ``max_known_peers`` of them.
    Every address is on loopback (127.x.y.z, port 1: refused at once), so nothing leaves
    the machine."""
    n = MAX_HTTP_RESPONSE // 6 - 20
    peers = b"".join(
        bytes([127, (i >> 16) & 0xFF, (i >> 8) & 0xFF, i & 0xFF or 1]) + b"\x00\x01" for i in range(n)
    )
    body = bencoding.encode({b"interval": 1800, b"peers": peers})
    assert len(body) <= MAX_HTTP_RESPONSE
    content = make_payload(tmp_path / "src", "p.bin", 50_000)
    settings = config.testing_settings()
    async with evil_tracker(body) as url, Session(settings) as s:
        meta = make_torrent(content, trackers=[url])
        t = await s.add_torrent(meta, tmp_path / "out")
        await wait_until(lambda: t.statistics().peers_known > 0, timeout_s=20, what="the tracker's peers")
        assert t.statistics().peers_known <= settings.max_known_peers
