"""Web seeds (BEP 19) against Debian's nginx: downloads with no peer at all, byte for byte."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.integration.swarm_helpers import make_payload, make_torrent, same_tree
from tests.integration.web_seed_helpers import NGINX, nginx, requests_logged, with_web_seeds
from torrent import config
from torrent.engine.session import Session
from torrent.proto import bencoding

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run installs it)")

ROOT = Path(__file__).resolve().parents[2]

#: Nested directories, names that need percent-encoding, an empty file.
MULTI_FILES = {
    "dir one/ünï cødé #1?.bin": 300_000,
    "dir one/deeper/100% sure+plus&amp;.dat": 123_457,
    "empty.dat": 0,
    "z/last file.txt": 70_001,
}


@pytest.mark.parametrize("as_directory", [False, True], ids=["file-url", "directory-url"])
async def test_single_file_from_nginx_with_no_peers(tmp_path: Path, as_directory: bool) -> None:
    content = make_payload(tmp_path / "www", "single file.iso", 1_000_000 + 123)
    meta = make_torrent(content, piece_length=32 * 1024)
    with nginx(tmp_path / "www", tmp_path / "nginx") as base:
        url = base if as_directory else base + quote(content.name)
        async with asyncio.timeout(30), Session(config.testing_settings()) as s:
            t = await s.add_torrent(with_web_seeds(meta, url), tmp_path / "dl", seed=False)
            st = t.statistics()
            assert (st.web_seeds_active, st.web_seeds_total) == (1, 1)
            await t.wait_complete()
            st = t.statistics()
            assert st.hash_failures == 0
            assert st.peers_connected == 0
        # Long runs: far fewer requests than pieces.
        assert 0 < requests_logged(tmp_path / "nginx") < meta.info.num_pieces / 2
    assert same_tree(content, tmp_path / "dl" / content.name)


async def test_multi_file_from_nginx_with_no_peers(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "www", "the payload", MULTI_FILES)
    meta = make_torrent(content, piece_length=16 * 1024)
    assert any(f.length == 0 for f in meta.info.files)
    with nginx(tmp_path / "www", tmp_path / "nginx") as base:
        # Without the trailing "/": the client adds it (BEP 19, as libtorrent does).
        async with asyncio.timeout(30), Session(config.testing_settings()) as s:
            t = await s.add_torrent(with_web_seeds(meta, base.rstrip("/")), tmp_path / "dl", seed=False)
            await t.wait_complete()
            assert t.statistics().hash_failures == 0
    assert same_tree(content, tmp_path / "dl" / "the payload")
    assert (tmp_path / "dl" / "the payload" / "empty.dat").stat().st_size == 0


async def test_web_seed_flag_settings_and_no_web_seeds(tmp_path: Path) -> None:
    """``Settings.web_seeds`` adds a seed to any torrent; ``use_web_seeds=False`` drops the
    torrent's own."""
    content = make_payload(tmp_path / "www", "f.bin", 200_000)
    meta = make_torrent(content, piece_length=32 * 1024)
    with nginx(tmp_path / "www", tmp_path / "nginx") as base:
        settings = config.testing_settings().replace(use_web_seeds=False, web_seeds=(base,))
        async with asyncio.timeout(30), Session(settings) as s:
            t = await s.add_torrent(
                with_web_seeds(meta, "http://127.0.0.1:9/nothing"), tmp_path / "dl", seed=False
            )
            assert t.statistics().web_seeds_total == 1
            await t.wait_complete()
    assert same_tree(content, tmp_path / "dl" / "f.bin")


def test_cli_web_seed_flag_with_json_progress(tmp_path: Path) -> None:
    """``pytorrent download --web-seed URL --json``: no peers, the web seed in the progress."""
    content = make_payload(tmp_path / "www", "cli.bin", 400_000)
    meta = make_torrent(content, piece_length=32 * 1024)
    (tmp_path / "t.torrent").write_bytes(bencoding.encode({b"info": bencoding.decode(meta.info_bytes)}))
    with nginx(tmp_path / "www", tmp_path / "nginx") as base:
        out = subprocess.run(
            [
                sys.executable, "-m", "cli.main", "download", "--no-dht", "--no-lsd", "--no-port-mapping", str(tmp_path / "t.torrent"),
                "-o", str(tmp_path / "dl"), "--port", "0", "--bind", "127.0.0.1", "--no-seed", "--json",
                "--timeout", "20", "--web-seed", base + "cli.bin",
            ],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert out.returncode == 0, out.stderr
    progress = [json.loads(line) for line in out.stdout.splitlines() if '"progress"' in line]
    assert progress[-1]["web_seeds_total"] == 1
    assert progress[-1]["progress"] == 1.0
    assert same_tree(content, tmp_path / "dl" / "cli.bin")


def test_cli_rejects_a_web_seed_that_is_not_http(tmp_path: Path) -> None:
    meta = make_torrent(make_payload(tmp_path, "x.bin", 1000))
    torrent = tmp_path / "x.torrent"
    torrent.write_bytes(bencoding.encode({b"info": bencoding.decode(meta.info_bytes)}))
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "download", "--no-dht", "--no-lsd", "--no-port-mapping", str(torrent),
         "--web-seed", "ftp://example.invalid/x"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert "--web-seed" in out.stderr


async def test_cli_magnet_ws_is_used(tmp_path: Path) -> None:
    """A magnet's ``ws=``: the metadata comes from a peer (BEP 9), then the web seed counts."""
    content = make_payload(tmp_path / "www", "mag.bin", 600_000)
    meta = make_torrent(content, piece_length=32 * 1024)
    with nginx(tmp_path / "www", tmp_path / "nginx") as base:
        async with asyncio.timeout(60), Session(config.testing_settings()) as seed_s:
            seed = await seed_s.add_torrent(meta, tmp_path / "www")
            await seed.wait_checked()
            magnet = (
                f"magnet:?xt=urn:btih:{meta.info_hash.hex()}&ws={quote(base + 'mag.bin', safe='')}"
                f"&x.pe=127.0.0.1:{seed_s.port}"
            )
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cli.main", "download", "--no-dht", "--no-lsd", "--no-port-mapping", magnet, "-o", str(tmp_path / "dl"),
                "--port", "0", "--bind", "127.0.0.1", "--no-seed", "--json", "--timeout", "30",
                cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    progress = [json.loads(line) for line in out.decode().splitlines() if '"progress"' in line]
    assert progress[-1]["web_seeds_total"] == 1
    assert same_tree(content, tmp_path / "dl" / "mag.bin")
