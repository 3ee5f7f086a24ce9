"""Magnet links: the metadata comes from peers (BEP 9 over BEP 10), then the download."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from tests.integration.swarm_helpers import make_payload, make_torrent, our_tracker, same_tree
from torrent import config
from torrent.engine.session import Session
from torrent.proto.magnet import Magnet

ROOT = Path(__file__).resolve().parents[2]


async def test_magnet_from_our_seed_through_our_tracker(tmp_path: Path) -> None:
    files = {"a.bin": 300_000, "sub/b.bin": 500_000}
    content = make_payload(tmp_path / "seed", "stuff", files)
    async with asyncio.timeout(30), our_tracker() as tracker:
        meta = make_torrent(content, piece_length=32 * 1024, trackers=[tracker.urls()[0]])
        magnet = Magnet(info_hash=meta.info_hash, name="stuff", trackers=(tracker.urls()[0],))
        async with (
            Session(config.testing_settings()) as seed_s,
            Session(config.testing_settings()) as leech_s,
        ):
            seed = await seed_s.add_torrent(meta, tmp_path / "seed")
            await seed.wait_checked()
            fetched = await leech_s.fetch_metadata(magnet)
            assert fetched.info_hash == meta.info_hash
            assert fetched.info_bytes == meta.info_bytes
            leech = await leech_s.add_torrent(fetched, tmp_path / "leech", seed=False)
            await leech.wait_complete()
    assert same_tree(content, tmp_path / "leech" / "stuff")


async def test_download_command_with_a_magnet_link(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "one.bin", 700_000)
    meta = make_torrent(content, piece_length=64 * 1024)
    async with asyncio.timeout(40), Session(config.testing_settings()) as seed_s:
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        uri = Magnet(info_hash=meta.info_hash, name="one.bin", peers=(("127.0.0.1", seed_s.port),)).to_uri()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", "download", "--no-dht", "--no-lsd", "--no-port-mapping", uri, "-o", str(tmp_path / "out"),
            "--no-seed", "--port", "0", "--bind", "127.0.0.1", "--timeout", "20",
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert "metadata received and verified" in err.decode()
    assert same_tree(content, tmp_path / "out" / "one.bin")


def test_magnet_without_peers_fails_after_the_timeout(tmp_path: Path) -> None:
    uri = "magnet:?xt=urn:btih:" + "ab" * 20
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "download", "--no-dht", "--no-lsd", "--no-port-mapping", uri, "-o", str(tmp_path), "--port", "0",
         "--bind", "127.0.0.1", "--timeout", "1", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith("no metadata within 1 s: no peer reachable")
