"""Our client with libtorrent (PyPI bindings, in process) through our tracker, on loopback.

libtorrent runs TCP only with DHT/LSD/UPnP/NAT-PMP off (``tests/interop/peers.py``), and
only inside a loopback-only network namespace: elsewhere these tests skip (under
``CI=true`` they fail).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.swarm_helpers import make_payload, make_torrent, our_tracker, same_tree
from tests.interop.conftest import isolation_problem, skip_or_fail
from torrent import config
from torrent.engine.session import Session

pytestmark = pytest.mark.interop


@pytest.fixture
def isolated() -> None:
    why = isolation_problem()
    if why:
        skip_or_fail(f"{why}: libtorrent runs only in a loopback-only network namespace (make test as root)")
    try:
        import libtorrent  # noqa: F401
    except ImportError:
        skip_or_fail("libtorrent (PyPI) is not installed")


async def test_libtorrent_seed_to_our_leecher_wanted_subset(isolated: None, tmp_path: Path) -> None:
    from tests.interop.peers import LibtorrentPeer

    files = {"docs/a.txt": 40_000, "docs/b.bin": 900_000, "big/c.bin": 1_500_000, "z.bin": 70_001}
    content = make_payload(tmp_path / "lt", "multi", files)
    async with asyncio.timeout(90), our_tracker() as tracker:
        meta = make_torrent(content, piece_length=64 * 1024, trackers=[tracker.urls()[0]])
        torrent_file = tmp_path / "multi.torrent"
        torrent_file.write_bytes(meta.to_bytes())
        async with LibtorrentPeer(tmp_path / "lt-state") as lt:
            ih = await lt.add(torrent_file, tmp_path / "lt", seed=True)
            await lt.wait_seeding(ih)
            # Want docs/b.bin and z.bin only (files sorted: big/c, docs/a, docs/b, z).
            names = [f.path_str for f in meta.info.files]
            wanted = {"docs/b.bin", "z.bin"}
            prio = [1 if n in wanted else 0 for n in names]
            async with Session(config.testing_settings()) as ours:
                t = await ours.add_torrent(meta, tmp_path / "ours", file_priorities=prio, seed=False)
                await t.wait_complete()
                st = t.statistics()
    for name in wanted:
        assert (tmp_path / "ours" / "multi" / name).read_bytes() == (content / name).read_bytes()
    # Skipped files are not created; only boundary-piece bytes were fetched for them.
    assert not (tmp_path / "ours" / "multi" / "big" / "c.bin").exists()
    assert st.downloaded_bytes < sum(files.values()) // 2


async def test_our_seed_to_libtorrent_leecher(isolated: None, tmp_path: Path) -> None:
    from tests.interop.peers import LibtorrentPeer

    content = make_payload(tmp_path / "seed", "single.bin", 3_000_000)
    async with asyncio.timeout(90), our_tracker() as tracker:
        meta = make_torrent(content, piece_length=128 * 1024, trackers=[tracker.urls()[0]])
        torrent_file = tmp_path / "single.torrent"
        torrent_file.write_bytes(meta.to_bytes())
        async with Session(config.testing_settings()) as ours:
            seed = await ours.add_torrent(meta, tmp_path / "seed")
            await seed.swarm.wait_checked()
            assert seed.statistics().state == "seeding"
            async with LibtorrentPeer(tmp_path / "lt-state") as lt:
                ih = await lt.add(torrent_file, tmp_path / "lt")
                await lt.wait_complete(ih, timeout_s=60)
                # libtorrent 2 writes through memory-mapped files; give the kernel a moment.
                for _ in range(50):
                    if same_tree(content, tmp_path / "lt" / "single.bin"):
                        break
                    await asyncio.sleep(0.1)
            assert seed.statistics().uploaded_bytes >= 3_000_000
    assert same_tree(content, tmp_path / "lt" / "single.bin")


async def test_magnet_link_metadata_from_a_libtorrent_seed(isolated: None, tmp_path: Path) -> None:
    from tests.interop.peers import LibtorrentPeer
    from torrent.proto.magnet import Magnet

    content = make_payload(tmp_path / "lt", "album", {"01.flac": 400_000, "02.flac": 300_000})
    async with asyncio.timeout(60), our_tracker() as tracker:
        meta = make_torrent(content, piece_length=32 * 1024, trackers=[tracker.urls()[0]])
        torrent_file = tmp_path / "album.torrent"
        torrent_file.write_bytes(meta.to_bytes())
        async with LibtorrentPeer(tmp_path / "lt-state") as lt:
            ih = await lt.add(torrent_file, tmp_path / "lt", seed=True)
            await lt.wait_seeding(ih)
            magnet = Magnet(info_hash=meta.info_hash, trackers=(tracker.urls()[0],))
            async with Session(config.testing_settings()) as ours:
                fetched = await ours.fetch_metadata(magnet)
                assert fetched.info_bytes == meta.info_bytes
                t = await ours.add_torrent(fetched, tmp_path / "ours", seed=False)
                await t.wait_complete()
    assert same_tree(content, tmp_path / "ours" / "album")
