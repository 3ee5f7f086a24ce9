"""Our seed serves a magnet link's metadata to libtorrent (PyPI bindings, in process).

libtorrent adds the torrent from ``parse_magnet_uri`` with our tracker, gets the info dict
from us over ut_metadata (BEP 9), verifies it and downloads. It runs TCP only with
DHT/LSD/UPnP/NAT-PMP off, bound to 127.0.0.1, and only inside a loopback-only network
namespace: elsewhere this test skips (under ``CI=true`` it fails).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.swarm_helpers import make_payload, make_torrent, our_tracker, same_tree
from tests.interop.conftest import isolation_problem, skip_or_fail
from tests.libtorrent_settings import loopback_settings
from tests.polling import wait_until
from torrent import config
from torrent.engine.session import Session
from torrent.proto.magnet import Magnet

pytestmark = pytest.mark.interop


@pytest.fixture
def lt() -> Any:
    why = isolation_problem()
    if why:
        skip_or_fail(f"{why}: libtorrent runs only in a loopback-only network namespace (make test as root)")
    try:
        import libtorrent
    except ImportError:
        skip_or_fail("libtorrent (PyPI) is not installed")
    return libtorrent


async def _until(pred: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_our_seed_to_libtorrent_magnet_download(lt: Any, tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "single.bin", 1_000_000)
    async with asyncio.timeout(90), our_tracker(interval_s=1) as tracker:
        url = tracker.urls()[0]
        meta = make_torrent(content, piece_length=64 * 1024, trackers=[url])
        async with Session(config.testing_settings()) as ours:
            seed = await ours.add_torrent(meta, tmp_path / "seed")
            await seed.wait_checked()
            assert seed.statistics().state == "seeding"
            ses = lt.session(
                loopback_settings(
                    outgoing_interfaces="127.0.0.1",
                    stop_tracker_timeout=1,
                    min_announce_interval=1,
                    alert_mask=0,
                )
            )
            try:
                atp = lt.parse_magnet_uri(Magnet(meta.info_hash, trackers=(url,)).to_uri())
                atp.save_path = str(tmp_path / "lt")
                atp.flags &= ~lt.torrent_flags.auto_managed
                atp.flags &= ~lt.torrent_flags.paused
                atp.flags |= (
                    lt.torrent_flags.disable_pex | lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd
                )
                handle = ses.add_torrent(atp)
                # The only peer is our seed: the metadata can only have come from us.
                await _until(lambda: handle.status().has_metadata, "libtorrent to get the metadata from us")
                assert str(handle.torrent_file().info_hashes().v1) == meta.info_hash.hex()
                await _until(lambda: handle.status().is_seeding, "libtorrent to complete")
                handle.flush_cache()
                await wait_until(
                    lambda: same_tree(content, tmp_path / "lt" / "single.bin"),
                    timeout_s=10,
                    what="libtorrent's copy to reach the disk",
                )
            finally:
                ses.pause()
                del ses
