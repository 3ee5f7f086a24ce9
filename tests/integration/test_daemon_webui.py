"""What the daemon adds for its web UI, in process on loopback: the page and its files
(behind the RPC's auth and host whitelist, with a CSP), the RPC fields the page reads
(the pieces bitfield) and the alternative speed limits. The page itself runs in a
browser in ``tests/browser``."""

from __future__ import annotations

import asyncio
import base64
import re
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.integration.daemon_helpers import daemon_config, running_daemon
from tests.integration.swarm_helpers import make_payload, make_torrent
from tests.polling import wait_until
from torrent import config
from torrent.daemon import content
from torrent.daemon.content import move_data
from torrent.daemon.rpc import RpcConfig, session_values
from torrent.daemon.service import Daemon, Status
from torrent.daemon.webui import CSP, static_files

pytestmark = pytest.mark.timeout(60)


async def test_page_and_files_are_served_with_a_csp_and_the_session_id(tmp_path: Path) -> None:
    async with asyncio.timeout(30), running_daemon(tmp_path) as (_daemon, client):
        base = client.url.removesuffix("/transmission/rpc")
        async with client.http.get(base + "/") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            assert resp.headers["Content-Security-Policy"] == CSP
            assert resp.headers["X-Frame-Options"] == "DENY"
            page = await resp.text()
        # The page carries the id the RPC's 409 hands out.
        await client.call("session-get", fields=["version"])
        assert f'<meta name="transmission-session-id" content="{client.session_id}">' in page
        # Every file the page and its modules name is served, with its type.
        names = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
        for path, (body, _) in static_files().items():
            if path.endswith(".js"):
                names += [f"/static/js/{m}" for m in re.findall(r'from "\./([\w.]+)"', body.decode())]
        assert "/static/js/main.js" in names
        assert "/static/js/list.js" in names
        for name in sorted(set(names)):
            async with client.http.get(base + name) as resp:
                assert resp.status == 200, name
                assert resp.headers["Content-Security-Policy"] == CSP
                expected = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}
                assert resp.content_type == expected[name.rsplit(".", 1)[1]], name
        for missing in (
            "/static/nope.js",
            "/static/index.html",
            "/static/../rpc.py",
            "/static/js/../../rpc.py",
        ):
            async with client.http.get(base + missing) as resp:
                assert resp.status == 404, missing


async def test_page_is_behind_the_rpc_auth_and_host_whitelist(tmp_path: Path) -> None:
    rpc = RpcConfig(username="alice", password="s3cret")
    async with asyncio.timeout(30), running_daemon(tmp_path, rpc) as (_daemon, client):
        base = client.url.removesuffix("/transmission/rpc")
        good = {"Authorization": aiohttp.encode_basic_auth("alice", "s3cret")}
        for path in ("/", "/static/js/main.js"):
            async with client.http.get(base + path) as resp:
                assert resp.status == 401, path
                assert resp.headers["WWW-Authenticate"].startswith("Basic")
            async with client.http.get(base + path, headers=good) as resp:
                assert resp.status == 200, path
        async with client.http.get(base + "/", headers={**good, "Host": "attacker.example"}) as resp:
            assert resp.status == 421
        async with client.http.get(base + "/metrics") as resp:
            assert resp.status == 200  # unchanged: no auth, bind to loopback


async def test_pieces_bitfield_shows_the_pieces_had(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    # 4 pieces of 16 KiB in the first file, which is on disk; the second file is not.
    content = make_payload(downloads, "two", {"a.bin": 64 * 1024, "b.bin": 80 * 1024})
    meta = make_torrent(content, piece_length=16 * 1024)
    (content / "b.bin").unlink()
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, client):
        tid = await client.add(meta)
        await wait_until(
            lambda: daemon.records[tid].status() == Status.DOWNLOAD and daemon.records[tid].checked,
            what="checked and downloading",
        )
        [t] = await client.get([tid], "pieces", "pieceCount", "percentDone")
        assert t["pieceCount"] == 9
        assert base64.b64decode(t["pieces"]) == bytes([0b11110000, 0b00000000])
        assert t["percentDone"] == pytest.approx(4 / 9)


async def test_alternative_speed_limits_replace_the_normal_ones_and_persist(tmp_path: Path) -> None:
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, client):
        got = await client.call("session-get", fields=["alt-speed-enabled", "alt-speed-down", "alt-speed-up"])
        assert got == {"alt-speed-enabled": False, "alt-speed-down": 50, "alt-speed-up": 50}
        await client.call("session-set", **{"speed-limit-down": 500, "speed-limit-down-enabled": True})
        assert daemon.effective_rate_limits() == (500_000, 0)
        await client.call(
            "session-set", **{"alt-speed-enabled": True, "alt-speed-down": 20, "alt-speed-up": 5}
        )
        assert daemon.effective_rate_limits() == (20_000, 5_000)
        assert (await client.result("session-set", **{"alt-speed-enabled": "yes"})).startswith(
            "'alt-speed-enabled'"
        )
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, client):
        got = await client.call(
            "session-get", fields=["alt-speed-enabled", "alt-speed-down", "speed-limit-down"]
        )
        assert got == {"alt-speed-enabled": True, "alt-speed-down": 20, "speed-limit-down": 500}
        assert daemon.effective_rate_limits() == (20_000, 5_000)
        await client.call("session-set", **{"alt-speed-enabled": False})
        assert daemon.effective_rate_limits() == (500_000, 0)


async def test_session_limits_start_from_the_engine_settings(tmp_path: Path) -> None:
    """``pytorrent daemon --max-down/--max-up`` used to be reset to "no limit" at start."""
    settings = config.testing_settings().replace(
        seed_ratio=None, max_download_bps=250_000, max_upload_bps=1_400
    )
    async with asyncio.timeout(30), Daemon(daemon_config(tmp_path), settings) as daemon:
        assert daemon.effective_rate_limits() == (250_000, 1_000)
        got = session_values(daemon)
        assert (got["speed-limit-down"], got["speed-limit-down-enabled"]) == (250, True)
        assert (got["speed-limit-up"], got["speed-limit-up-enabled"]) == (1, True)
        daemon.apply_settings({"speed-limit-up-enabled": False})
        assert daemon.effective_rate_limits() == (250_000, 0)
    # Stored settings apply over the flags.
    async with asyncio.timeout(30), Daemon(daemon_config(tmp_path), settings) as daemon:
        assert daemon.effective_rate_limits() == (250_000, 0)


async def test_tracker_stats_tell_how_the_last_announce_went(tmp_path: Path) -> None:
    async def announce(request: web.Request) -> web.Response:
        body = b"d8:completei3e10:downloadedi7e10:incompletei1e8:intervali1800e5:peers6:\x7f\x00\x00\x01\x1a\xe1e"
        return web.Response(body=body, content_type="text/plain")

    async def broken(_: web.Request) -> web.Response:
        return web.Response(status=503, text="down")

    app = web.Application()
    app.router.add_get("/announce", announce)
    app.router.add_get("/broken", broken)
    downloads = tmp_path / "downloads"
    async with (
        asyncio.timeout(30),
        TestServer(app, host="127.0.0.1") as tracker,
        running_daemon(tmp_path) as (daemon, client),
    ):
        good, bad = str(tracker.make_url("/announce")), str(tracker.make_url("/broken"))
        fine = make_torrent(make_payload(downloads, "fine.bin", 20_000, seed=1), trackers=[bad, good])
        failing = make_torrent(make_payload(downloads, "failing.bin", 20_000, seed=2), trackers=[bad])
        fine_id, failing_id = await client.add(fine), await client.add(failing)
        before = int(time.time())

        async def stats(tid: int) -> list[dict[str, Any]]:
            [t] = await client.get([tid], "trackerStats")
            return list(t["trackerStats"])

        def announced(tid: int) -> bool:
            handle = daemon.records[tid].handle
            return handle is not None and handle.last_announce() is not None

        await wait_until(lambda: announced(fine_id) and announced(failing_id), what="both announced")
        by_url = {s["announce"]: s for s in await stats(fine_id)}
        assert by_url[good]["lastAnnounceSucceeded"] is True
        assert by_url[good]["lastAnnounceResult"] == "Success"
        assert (by_url[good]["seederCount"], by_url[good]["leecherCount"], by_url[good]["downloadCount"]) == (
            3,
            1,
            7,
        )
        assert by_url[good]["lastAnnouncePeerCount"] == 1
        assert before - 1 <= by_url[good]["lastAnnounceTime"] <= time.time() + 1
        assert by_url[good]["nextAnnounceTime"] > by_url[good]["lastAnnounceTime"]
        [down] = await stats(failing_id)
        assert down["hasAnnounced"] is True
        assert down["lastAnnounceSucceeded"] is False
        assert down["lastAnnounceResult"].startswith(f"{bad}: ")


async def test_a_queue_pass_does_not_start_a_torrent_an_operation_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A move stops the torrent, moves its data in a thread, then starts it again. A queue
    pass in between (the scheduler's, or one a click in the page asks for) used to start
    it at the old place, and the move's own start then failed with "already in the
    session", leaving the torrent stopped with that error."""
    moving = threading.Event()
    go_on = threading.Event()

    def slow_move(meta: Any, download_dir: str, info_hash: str, location: str) -> None:
        moving.set()
        go_on.wait(10)
        move_data(meta, download_dir, info_hash, location)

    monkeypatch.setattr(content, "move_data", slow_move)
    downloads = tmp_path / "downloads"
    meta = make_torrent(make_payload(downloads, "moving.bin", 300_000), piece_length=16 * 1024)
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, client):
        tid = await client.add(meta)
        await wait_until(lambda: daemon.records[tid].status() == Status.SEED, what="seeding")
        r = daemon.records[tid]
        move = asyncio.create_task(daemon.set_location([r], str(tmp_path / "moved"), move=True))
        await wait_until(moving.is_set, what="the move under way")
        assert r.handle is None
        await daemon.schedule()  # a queue pass while the move holds the torrent
        assert r.handle is None
        go_on.set()
        await move
        await wait_until(lambda: r.status() == Status.SEED, what="seeding at the new place")
        assert r.stored.error == ""
        assert r.stored.download_dir == str(tmp_path / "moved")
