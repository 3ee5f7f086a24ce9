"""Real clients through our tracker alone: a libtorrent seed and leecher, HTTP then UDP.

Third-party peers run only inside a loopback-only network namespace (skipped elsewhere,
failed under CI=true): ``unshare --net -- sh -c 'ip link set lo up && exec pytest ...'``.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.libtorrent_settings import loopback_settings
from tests.polling import wait_until
from tracker.server import TrackerServer
from tracker.settings import TrackerSettings

lt: Any = pytest.importorskip("libtorrent")

pytestmark = pytest.mark.interop


def _isolation_problem() -> str:
    names = sorted(name for _, name in socket.if_nameindex())
    if names != ["lo"]:
        return f"not in a loopback-only network namespace (interfaces: {', '.join(names)})"
    return ""


@pytest.fixture
def loopback_only() -> None:
    why = _isolation_problem()
    if why:
        msg = (
            f"{why}: libtorrent runs only in an isolated namespace; run `make test` as root or "
            "unshare --net -- sh -c 'ip link set lo up && exec python -m pytest tests/integration/test_tracker_libtorrent.py'"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


def _session() -> Any:
    return lt.session(loopback_settings(announce_to_all_trackers=True, alert_mask=0, stop_tracker_timeout=1))


def _make_torrent(payload: Path, tracker_url: str) -> Any:
    fs = lt.file_storage()
    lt.add_files(fs, str(payload))
    ct = lt.create_torrent(fs, 16 * 1024)
    ct.add_tracker(tracker_url)
    lt.set_piece_hashes(ct, str(payload.parent))
    return lt.torrent_info(lt.bencode(ct.generate()))


@pytest.mark.parametrize("transport", ["http", "udp"])
async def test_libtorrent_seed_and_leecher_meet_through_our_tracker(
    transport: str, tmp_path: Path, loopback_only: None
) -> None:
    settings = TrackerSettings(host="127.0.0.1", port=0, udp_port=0, interval_s=60, min_interval_s=30)
    async with asyncio.timeout(60), TrackerServer(settings) as srv:
        url = (
            f"http://127.0.0.1:{srv.http_port}/announce"
            if transport == "http"
            else f"udp://127.0.0.1:{srv.udp_port}/announce"
        )
        seed_dir, leech_dir = tmp_path / "seed", tmp_path / "leech"
        seed_dir.mkdir()
        leech_dir.mkdir()
        payload = seed_dir / "payload.bin"
        payload.write_bytes(os.urandom(300 * 1024 + 123))
        info = _make_torrent(payload, url)
        seed, leech = _session(), _session()
        try:
            seed.add_torrent({"ti": info, "save_path": str(seed_dir), "flags": lt.torrent_flags.seed_mode})
            ih = info.info_hash().to_bytes()
            store = srv.service.sync_store
            assert store is not None
            # the seed is known before the leecher asks
            await wait_until(lambda: store.scrape_nowait([ih])[0].complete > 0, timeout_s=30, what="the seed")
            h = leech.add_torrent({"ti": lt.torrent_info(info), "save_path": str(leech_dir)})
            await wait_until(lambda: h.status().is_seeding, timeout_s=50, what="the download")
            h.flush_cache()
            data = payload.read_bytes()
            got = leech_dir / "payload.bin"
            await wait_until(
                lambda: got.is_file() and got.read_bytes() == data, timeout_s=5, what="the file on disk"
            )
            c = srv.service.counters
            assert (c.http_announces if transport == "http" else c.udp_announces) >= 2
            assert store.scrape_nowait([ih])[0].complete >= 1
        finally:
            for s in (seed, leech):
                for t in s.get_torrents():
                    s.remove_torrent(t)
            del seed, leech
