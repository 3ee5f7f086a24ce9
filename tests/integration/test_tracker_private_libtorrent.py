"""Private mode with real clients: a libtorrent seed and leecher, each announcing with
its own user's passkey; the tracker's accounting matches the bytes libtorrent reports.

Runs only inside a loopback-only network namespace (see test_tracker_libtorrent).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.libtorrent_settings import loopback_settings
from tests.polling import wait_until, wait_until_blocking
from tracker.server import TrackerServer
from tracker.settings import TrackerSettings
from tracker.users import UserDb

from .test_tracker_libtorrent import loopback_only, lt  # noqa: F401
from .tracker_redis_fixture import RedisServer, free_port, redis_server  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.interop


def _session(*, all_tiers: bool = False) -> Any:
    # libtorrent's SSRF mitigation refuses HTTP trackers on localhost unless the path
    # is exactly /announce; a passkey path is /<passkey>/announce
    return lt.session(
        loopback_settings(
            announce_to_all_trackers=True,
            announce_to_all_tiers=all_tiers,
            alert_mask=0,
            stop_tracker_timeout=1,
            ssrf_mitigation=False,
        )
    )


def _torrent(payload: Path) -> Any:
    fs = lt.file_storage()
    lt.add_files(fs, str(payload))
    # v1 only: a hybrid torrent announces its v1 and its truncated v2 hash, and a
    # private tracker registers one of them
    ct = lt.create_torrent(fs, 16 * 1024, flags=lt.create_torrent.v1_only)
    lt.set_piece_hashes(ct, str(payload.parent))
    return lt.torrent_info(lt.bencode(ct.generate()))


@pytest.mark.parametrize("transport", ["http", "udp"])
async def test_two_users_accounting_matches_libtorrent(
    transport: str,
    tmp_path: Path,
    loopback_only: None,  # noqa: F811
) -> None:
    url = f"sqlite:///{tmp_path / 'users.db'}"
    db = UserDb(url)
    alice, bob = db.add_user("alice"), db.add_user("bob")
    seed_dir, leech_dir = tmp_path / "seed", tmp_path / "leech"
    seed_dir.mkdir()
    leech_dir.mkdir()
    payload = seed_dir / "payload.bin"
    size = 400 * 1024 + 321
    payload.write_bytes(os.urandom(size))
    info = _torrent(payload)
    ih = info.info_hash().to_bytes()
    db.add_torrent(ih)
    db.close()
    # libtorrent caches UDP connection ids per tracker address for the whole process;
    # a tracker on a loopback address of its own does not inherit another test's
    # (now unknown) id
    host = "127.0.0.1" if transport == "http" else "127.0.0.2"
    settings = TrackerSettings(
        host=host, port=0, udp_port=0, interval_s=60, min_interval_s=1, private_users=url
    )
    seed, leech = _session(), _session()
    try:
        async with asyncio.timeout(90), TrackerServer(settings) as srv:
            pt = srv.private
            assert pt is not None

            def tracker(key: str) -> str:
                if transport == "http":
                    return f"http://127.0.0.1:{srv.http_port}/{key}/announce"
                return f"udp://{host}:{srv.udp_port}/{key}/announce"

            s = seed.add_torrent(
                {
                    "ti": info,
                    "save_path": str(seed_dir),
                    "flags": lt.torrent_flags.seed_mode,
                    "trackers": [tracker(alice)],
                }
            )
            store = srv.service.sync_store
            assert store is not None
            await wait_until(lambda: store.scrape_nowait([ih])[0].complete > 0, timeout_s=30, what="the seed")
            h = leech.add_torrent(
                {"ti": lt.torrent_info(info), "save_path": str(leech_dir), "trackers": [tracker(bob)]}
            )
            await wait_until(lambda: h.status().is_seeding, timeout_s=60, what="the download")
            # both report their final counters; the tracker's totals then equal them
            users = {u: pt._users[k] for u, k in (("alice", alice), ("bob", bob))}
            ignore_min = lt.reannounce_flags_t.ignore_min_interval

            def caught_up() -> bool:
                return bool(
                    users["bob"].downloaded == h.status().total_payload_download
                    and users["alice"].uploaded == s.status().total_payload_upload
                )

            # both report their counters now (and again every 2 s while a counter still
            # moves); the tracker's totals must then equal them
            loop = asyncio.get_running_loop()
            deadline, next_round = loop.time() + 30, 0.0
            while not caught_up():
                now = loop.time()
                if now >= deadline:
                    pytest.fail(
                        f"accounting {users['alice'].uploaded}/{users['bob'].downloaded} never matched "
                        f"libtorrent's {s.status().total_payload_upload}/{h.status().total_payload_download}"
                    )
                if now >= next_round:
                    for handle in (s, h):
                        handle.force_reannounce(0, -1, ignore_min)
                    next_round = now + 2
                await asyncio.sleep(0.05)
            uploaded, downloaded = s.status().total_payload_upload, h.status().total_payload_download
            assert downloaded >= size
            assert uploaded >= size
    finally:
        for sess in (seed, leech):
            for t in sess.get_torrents():
                sess.remove_torrent(t)
        del seed, leech
    # leaving the server flushed the accounting
    stats = {r["name"]: r for r in UserDb(url).stats()}
    assert stats["bob"]["downloaded"] == downloaded
    assert stats["alice"]["uploaded"] == uploaded
    assert stats["bob"]["completed"] == 1


async def test_accounting_across_two_trackers_sharing_one_redis(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
    loopback_only: None,  # noqa: F811
) -> None:
    """Two tracker instances over one Redis (as two processes or hosts would run: each its
    own store client, private-mode state and accounting; only Redis and the users
    database shared), and libtorrent announcing every time to both. Each announce counts
    only what changed since the peer's previous one, whichever instance that reached: the
    totals equal libtorrent's counters (per-instance baselines counted them twice)."""
    url = f"sqlite:///{tmp_path / 'users.db'}"
    db = UserDb(url)
    alice, bob = db.add_user("alice"), db.add_user("bob")
    seed_dir, leech_dir = tmp_path / "seed", tmp_path / "leech"
    seed_dir.mkdir()
    leech_dir.mkdir()
    payload = seed_dir / "payload.bin"
    size = 600 * 1024 + 123
    payload.write_bytes(os.urandom(size))
    info = _torrent(payload)
    ih = info.info_hash().to_bytes()
    db.add_torrent(ih)
    settings = TrackerSettings(
        host="127.0.0.1", port=0, udp_port=-1, interval_s=60, min_interval_s=1, private_users=url,
        store=redis_server.url,
    )  # fmt: skip
    # every announce goes to both trackers (each is a tier of its own)
    seed, leech = _session(all_tiers=True), _session(all_tiers=True)
    try:
        async with asyncio.timeout(120), TrackerServer(settings) as one, TrackerServer(settings) as two:
            trackers = [one, two]

            def urls(key: str) -> list[str]:
                return [f"http://127.0.0.1:{t.http_port}/{key}/announce" for t in trackers]

            s = seed.add_torrent(
                {
                    "ti": info,
                    "save_path": str(seed_dir),
                    "flags": lt.torrent_flags.seed_mode,
                    "trackers": urls(alice),
                }
            )
            await wait_until(lambda: s.status().num_complete > 0 or s.status().is_seeding, timeout_s=30)
            h = leech.add_torrent(
                {"ti": lt.torrent_info(info), "save_path": str(leech_dir), "trackers": urls(bob)}
            )
            await wait_until(lambda: h.status().is_seeding, timeout_s=60, what="the download")
            ignore_min = lt.reannounce_flags_t.ignore_min_interval

            async def counted() -> dict[str, dict[str, Any]]:
                for t in trackers:
                    assert t.private is not None
                    await t.private.flush()
                return {r["name"]: r for r in db.stats()}

            # both clients report their final counters to both trackers (again every 2 s
            # while a counter still moves); the flushed totals must then equal them
            loop = asyncio.get_running_loop()
            deadline, next_round = loop.time() + 40, 0.0
            while True:
                up, down = s.status().total_payload_upload, h.status().total_payload_download
                stats = await counted()
                if stats["alice"]["uploaded"] == up and stats["bob"]["downloaded"] == down:
                    break
                now = loop.time()
                assert stats["bob"]["downloaded"] <= down, "counted more than libtorrent downloaded"
                if now >= deadline:
                    pytest.fail(
                        f"accounting {stats['alice']['uploaded']}/{stats['bob']['downloaded']} never "
                        f"matched libtorrent's {up}/{down}"
                    )
                if now >= next_round:
                    for handle in (s, h):
                        handle.force_reannounce(0, -1, ignore_min)
                    next_round = now + 2
                await asyncio.sleep(0.2)
            assert down >= size
            # each tracker got announces from both clients: the baselines really were shared
            for t in trackers:
                assert t.service.counters.http_announces >= 4
    finally:
        for sess in (seed, leech):
            for t in sess.get_torrents():
                sess.remove_torrent(t)
        del seed, leech
        db.close()
    # leaving the servers flushed what was left: still no double count
    stats = {r["name"]: r for r in UserDb(url).stats()}
    assert stats["bob"]["downloaded"] == down
    assert stats["alice"]["uploaded"] == up
    assert stats["bob"]["completed"] == 1  # sent to both trackers, counted once


def test_accounting_with_workers_sharing_one_redis(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
    loopback_only: None,  # noqa: F811
) -> None:
    """``pytorrent tracker --workers 2`` (two processes sharing the port; the kernel hands
    each connection to either) over one Redis: libtorrent's announces land on both, and
    the totals written at exit equal libtorrent's counters."""
    url = f"sqlite:///{tmp_path / 'users.db'}"
    db = UserDb(url)
    alice, bob = db.add_user("alice"), db.add_user("bob")
    seed_dir, leech_dir = tmp_path / "seed", tmp_path / "leech"
    seed_dir.mkdir()
    leech_dir.mkdir()
    payload = seed_dir / "payload.bin"
    size = 500 * 1024 + 77
    payload.write_bytes(os.urandom(size))
    info = _torrent(payload)
    db.add_torrent(info.info_hash().to_bytes())
    db.close()
    port = free_port()
    tracker = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "tracker", "--host", "127.0.0.1", "--port", str(port), "--no-udp",
         "--store", redis_server.url, "--workers", "2", "--private-users", url, "--interval", "60",
         "--min-interval", "1"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    seed, leech = _session(), _session()
    try:
        wait_until_blocking(lambda: _answers(port), timeout_s=20, what="the tracker")

        def urls(key: str) -> list[str]:
            return [f"http://127.0.0.1:{port}/{key}/announce"]

        s = seed.add_torrent(
            {
                "ti": info,
                "save_path": str(seed_dir),
                "flags": lt.torrent_flags.seed_mode,
                "trackers": urls(alice),
            }
        )
        time.sleep(1)
        h = leech.add_torrent(
            {"ti": lt.torrent_info(info), "save_path": str(leech_dir), "trackers": urls(bob)}
        )
        wait_until_blocking(lambda: h.status().is_seeding, timeout_s=60, what="the download")
        ignore_min = lt.reannounce_flags_t.ignore_min_interval
        # the counters have stopped moving: report them, several times (to either worker)
        for _ in range(4):
            for handle in (s, h):
                handle.force_reannounce(0, -1, ignore_min)
            time.sleep(1.0)
        up, down = s.status().total_payload_upload, h.status().total_payload_download
    finally:
        for sess in (seed, leech):
            for t in sess.get_torrents():
                sess.remove_torrent(t)
        del seed, leech
        tracker.send_signal(signal.SIGTERM)
        _, err = tracker.communicate(timeout=20)
    assert tracker.returncode == 0, err.decode(errors="replace")
    assert down >= size
    stats = {r["name"]: r for r in UserDb(url).stats()}  # written by each worker at exit
    assert stats["bob"]["downloaded"] == down
    assert stats["alice"]["uploaded"] == up
    assert stats["bob"]["completed"] == 1


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1):
            return True
    except OSError:
        return False
