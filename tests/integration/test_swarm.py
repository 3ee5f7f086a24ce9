"""Our client against itself on loopback: one seed, several leechers, through a tracker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.disk_helpers import can_mount, tmpfs
from tests.integration.swarm_helpers import make_payload, make_torrent, our_tracker, same_tree
from torrent import config
from torrent.engine.session import Session
from torrent.errors import StorageError


async def test_seed_to_one_leecher_single_file(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "greeting.bin", 300_000)
    async with asyncio.timeout(30), our_tracker() as tracker:
        http_url = tracker.urls()[0]
        meta = make_torrent(content, piece_length=32 * 1024, trackers=[http_url])
        async with (
            Session(config.testing_settings()) as seed_s,
            Session(config.testing_settings()) as leech_s,
        ):
            seed = await seed_s.add_torrent(meta, tmp_path / "seed")
            await seed.wait_checked()
            assert seed.statistics().state == "seeding"
            leech = await leech_s.add_torrent(meta, tmp_path / "leech", seed=False)
            await leech.wait_complete()
            assert leech.statistics().downloaded_bytes >= 300_000
        assert same_tree(content, tmp_path / "leech" / "greeting.bin")


async def test_one_seed_five_leechers_share_among_themselves(tmp_path: Path) -> None:
    files = {"a/one.bin": 700_000, "b/two.bin": 1_100_000, "three.txt": 5_000}
    content = make_payload(tmp_path / "seed", "multi", files)
    size = sum(files.values())
    async with asyncio.timeout(60), our_tracker() as tracker:
        udp_url = tracker.urls()[1]
        assert udp_url.startswith("udp://")
        meta = make_torrent(content, piece_length=32 * 1024, trackers=[udp_url])
        # The seed uploads slowly, so the leechers must trade with each other.
        seed_settings = config.testing_settings().replace(max_upload_bps=600_000)
        async with Session(seed_settings) as seed_s:
            seed = await seed_s.add_torrent(meta, tmp_path / "seed")
            await seed.wait_checked()
            sessions = [Session(config.testing_settings()) for _ in range(5)]
            for s in sessions:
                await s.__aenter__()
            try:
                leeches = [
                    await s.add_torrent(meta, tmp_path / f"leech{i}", seed=True)
                    for i, s in enumerate(sessions)
                ]
                await asyncio.gather(*(t.wait_complete() for t in leeches))
                got = sum(t.statistics().downloaded_bytes for t in leeches)
                from_seed = seed.statistics().uploaded_bytes
            finally:
                for s in sessions:
                    await s.__aexit__(None, None, None)
    for i in range(5):
        assert same_tree(content, tmp_path / f"leech{i}" / "multi")
    assert got >= 5 * size
    # Most of what the leechers got came from each other, not from the seed.
    assert from_seed < 0.5 * got, (from_seed, got)


async def test_a_disk_error_at_start_reaches_wait_complete_as_that_error(tmp_path: Path) -> None:
    if not can_mount():
        pytest.skip("needs root to mount a read-only tmpfs")
    content = make_payload(tmp_path / "seed", "x.bin", 100_000)
    meta = make_torrent(content)
    with tmpfs("1m", read_only=True) as out:
        async with asyncio.timeout(20), Session(config.testing_settings()) as s:
            t = await s.add_torrent(meta, out, seed=False)
            with pytest.raises(StorageError, match="read-only") as caught:
                await t.wait_complete()
            assert t.statistics().error == str(caught.value)
