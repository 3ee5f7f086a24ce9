"""Web seeds with libtorrent (PyPI bindings) on loopback: libtorrent downloads the same
torrent from the same nginx (the reference), and a libtorrent seed plus nginx both feed us.

Only inside a loopback-only network namespace (see ``tests/integration/test_libtorrent.py``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.swarm_helpers import make_payload, make_torrent, same_tree
from tests.integration.test_web_seed import MULTI_FILES
from tests.integration.web_seed_helpers import NGINX, nginx, with_web_seeds
from tests.interop.conftest import isolation_problem, skip_or_fail
from torrent import config
from torrent.engine.session import Session
from torrent.proto import bencoding
from torrent.proto.metainfo import Metainfo

pytestmark = [pytest.mark.interop, pytest.mark.skipif(NGINX is None, reason="nginx is not installed")]


@pytest.fixture
def isolated() -> None:
    why = isolation_problem()
    if why:
        skip_or_fail(f"{why}: libtorrent runs only in a loopback-only network namespace (make test as root)")
    try:
        import libtorrent  # noqa: F401
    except ImportError:
        skip_or_fail("libtorrent (PyPI) is not installed")


def _torrent_file(meta: Metainfo, path: Path, *urls: str) -> Path:
    top = dict(meta.raw)
    top[b"info"] = bencoding.Raw(meta.info_bytes)
    if urls:
        top[b"url-list"] = [u.encode() for u in urls]
    path.write_bytes(bencoding.encode(top))
    return path


async def test_libtorrent_downloads_the_same_torrent_from_the_same_nginx(
    isolated: None, tmp_path: Path
) -> None:
    from tests.interop.peers import LibtorrentPeer

    content = make_payload(tmp_path / "www", "the payload", MULTI_FILES)
    meta = make_torrent(content, piece_length=16 * 1024)
    with nginx(tmp_path / "www", tmp_path / "nginx") as base:
        torrent = _torrent_file(meta, tmp_path / "m.torrent", base)
        async with asyncio.timeout(90):
            async with LibtorrentPeer(tmp_path / "lt-state") as lt:
                ih = await lt.add(torrent, tmp_path / "lt")
                await lt.wait_complete(ih, timeout_s=60)
            async with Session(config.testing_settings()) as s:
                t = await s.add_torrent(with_web_seeds(meta, base), tmp_path / "ours", seed=False)
                await t.wait_complete()
    assert same_tree(content, tmp_path / "lt" / "the payload")
    assert same_tree(content, tmp_path / "ours" / "the payload")


async def test_a_libtorrent_seed_and_nginx_both_contribute(isolated: None, tmp_path: Path) -> None:
    from tests.interop.peers import LibtorrentPeer

    content = make_payload(tmp_path / "www", "both.bin", 16 * 1024 * 1024)
    meta = make_torrent(content, piece_length=64 * 1024)
    torrent = _torrent_file(meta, tmp_path / "b.torrent")
    # The web seed is asked for any piece (not only what no peer has), and nginx sends
    # 4 MB/s per connection, so it cannot take everything before the peer is unchoked.
    settings = config.testing_settings().replace(web_seed_peer_rate_bps=1 << 40)
    with nginx(tmp_path / "www", tmp_path / "nginx", limit_rate="4m") as base:
        async with asyncio.timeout(90), LibtorrentPeer(tmp_path / "lt-state") as lt:
            ih = await lt.add(torrent, tmp_path / "www", seed=True)
            await lt.wait_seeding(ih)
            async with Session(settings) as s:
                t = await s.add_torrent(
                    with_web_seeds(meta, base + "both.bin"),
                    tmp_path / "ours",
                    seed=False,
                    peers=[("127.0.0.1", lt.peer_port)],
                )
                await t.wait_complete()
                st = t.statistics()
                from_web = sum(w.meter.total for w in t.swarm.web_seeds.seeds.values())
    assert same_tree(content, tmp_path / "ours" / "both.bin")
    assert from_web > 0
    assert st.downloaded_bytes - from_web > 0
