"""Transfers over ``::1`` with libtorrent, Transmission and aria2, both directions.

Every client listens on ``::1`` and announces to our tracker on ``[::1]`` (HTTP), which
answers IPv6 announces with ``peers6`` (BEP 7): so every address anyone learns, and every
connection, is IPv6. The downloaded files are compared byte for byte; our client must
not drop the other for a protocol error along the way, and its connection to the other
client must be an IPv6 one. Third-party clients run with DHT, LSD, PEX, UPnP and NAT-PMP
off, inside the loopback-only namespace (``conftest.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.interop.conftest import StartPeer
from tests.interop.ours import OurPeer, pytorrent_create
from tests.interop.peers import Peer, make_payload, same_tree
from tests.interop.test_transfer import _expect_no_protocol_errors
from tracker.server import TrackerServer
from tracker.settings import TrackerSettings

pytestmark = [
    pytest.mark.interop,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.timeout(200),
]

MIB = 1024 * 1024
SIZES = {"six.bin": 3 * MIB + 4321, "dir/four.bin": 1 * MIB - 17}
TIMEOUT_S = 90
#: Transmission waits for its 10 s rechoke pulse before it becomes interested: slow cells.
CELLS = [
    pytest.param("libtorrent", id="libtorrent"),
    pytest.param("transmission", id="transmission", marks=pytest.mark.slow),
    pytest.param("aria2", id="aria2"),
]


@pytest.fixture
async def tracker6(loopback_only: None) -> AsyncIterator[str]:
    """Our tracker on [::1] (in process): its HTTP announce URL."""
    server = TrackerServer(TrackerSettings(host="::1", port=0, udp_port=0, interval_s=5, min_interval_s=1))
    async with server as t:
        yield t.urls()[0]


async def _torrent(tmp_path: Path, url: str) -> tuple[Path, Path, str]:
    top = make_payload(tmp_path / "seed", "v6", SIZES, seed=11)
    torrent = tmp_path / "v6.torrent"
    ih = await asyncio.to_thread(pytorrent_create, top, torrent, trackers=(url,), piece_length="64K")
    return top, torrent, ih


async def _transfer(seed: Peer, leecher: Peer, ours: OurPeer, top: Path, torrent: Path, ih: str) -> None:
    other = leecher.name if ours is seed else seed.name
    assert await seed.add(torrent, top.parent, seed=True) == ih
    await seed.wait_seeding(ih, timeout_s=60)
    dest = leecher.workdir / "v6-download"
    dest.mkdir(parents=True)
    assert await leecher.add(torrent, dest) == ih
    async with asyncio.timeout(TIMEOUT_S):
        while (await leecher.state(ih)).progress < 1.0:
            _expect_no_protocol_errors(ours, other)
            await asyncio.sleep(0.2)
    for _ in range(50):
        if same_tree(top, dest / top.name):
            break
        await asyncio.sleep(0.2)
    assert same_tree(top, dest / top.name), f"{leecher.name} wrote different bytes"
    _expect_no_protocol_errors(ours, other)
    moved = ours.torrents[ih].statistics()
    assert (moved.uploaded_bytes if ours is seed else moved.downloaded_bytes) >= sum(SIZES.values())


def _only_ipv6(ours: OurPeer, ih: str) -> None:
    hosts = {p.host for p in ours.torrents[ih].peers()}
    assert hosts <= {"::1"}, f"our client has non-IPv6 peers: {hosts}"


@pytest.mark.parametrize("client", CELLS)
async def test_it_seeds_we_download_over_ipv6(
    client: str, start_peer: StartPeer, tracker6: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(TIMEOUT_S + 90):
        top, torrent, ih = await _torrent(tmp_path, tracker6)
        seed = await start_peer(client, host="::1")
        ours = await start_peer("pytorrent", host="::1")
        assert isinstance(ours, OurPeer)
        await _transfer(seed, ours, ours, top, torrent, ih)
        _only_ipv6(ours, ih)


@pytest.mark.parametrize("client", CELLS)
async def test_we_seed_it_downloads_over_ipv6(
    client: str, start_peer: StartPeer, tracker6: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(TIMEOUT_S + 90):
        top, torrent, ih = await _torrent(tmp_path, tracker6)
        ours = await start_peer("pytorrent", host="::1")
        assert isinstance(ours, OurPeer)
        leecher = await start_peer(client, host="::1")
        await _transfer(ours, leecher, ours, top, torrent, ih)
        _only_ipv6(ours, ih)
