"""Announces whose binary values hold ``$`` (0x24) reach a real tracker and find the seed.

opentracker answers a raw ``$`` in a query with ``HTTP 400 Invalid Request``. About one
torrent in thirteen has a 0x24 byte in its info hash, and about one session in twenty
draws a peer id with one: such a leecher must still announce over HTTP, get the seed the
tracker knows, and download from it. A libtorrent seed announces to the same tracker
(libtorrent percent-encodes ``$``), so the tracker is the only way the two meet: our
leecher is given no peer address.

Run against Debian's opentracker (the tracker that refused us) and our own tracker.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.interop.conftest import StartPeer, need
from tests.interop.ours import OurTracker
from tests.interop.peers import LibtorrentPeer, OpenTracker, TrackerProcess, make_payload, same_tree
from torrent import config
from torrent.create import create
from torrent.engine.session import Session
from torrent.proto.metainfo import Metainfo
from torrent.types import PeerId

pytestmark = [pytest.mark.interop, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

DOLLAR = 0x24


def _torrent(top: Path, out: Path, url: str, *, want_dollar: bool) -> Metainfo:
    """A torrent of ``top`` whose info hash holds 0x24 (or holds none), written to ``out``.

    The info hash does not depend on the announce URL, only on the info dict: the
    torrent's name is varied until the hash is of the wanted kind.
    """
    for i in range(2000):
        meta = create(top, piece_length=16 * 1024, trackers=((url,),), name=f"enc-{i}", no_date=True)
        if (DOLLAR in meta.info_hash) == want_dollar:
            out.write_bytes(meta.to_bytes())
            return meta
    raise AssertionError("no name gave the wanted kind of info hash in 2000 tries")


@pytest.mark.parametrize("tracker_kind", ["opentracker", "pytorrent"])
@pytest.mark.parametrize("where", ["info_hash", "peer_id"])
async def test_dollar_in_announce_reaches_tracker_and_downloads(
    tracker_kind: str, where: str, start_peer: StartPeer, tmp_path: Path
) -> None:
    need("libtorrent")
    top = make_payload(tmp_path / "seed", "payload", {"a.bin": 300_000, "b/c.bin": 70_001})
    tracker: TrackerProcess
    if tracker_kind == "opentracker":
        need("opentracker")
        tracker = OpenTracker(tmp_path / "tracker")
    else:
        tracker = OurTracker(tmp_path / "tracker", interval_s=2)
    # The URL is known only once the tracker has ports; the info hash is known before.
    placeholder = _torrent(
        top, tmp_path / "x.torrent", "http://127.0.0.1:9/announce", want_dollar=where == "info_hash"
    )
    ih = placeholder.info_hash.hex()
    await tracker.start([ih])
    try:
        meta = _torrent(top, tmp_path / "t.torrent", tracker.http_url, want_dollar=where == "info_hash")
        assert meta.info_hash == placeholder.info_hash
        top.rename(tmp_path / "seed" / meta.info.name)  # the torrent's name is its top directory

        peer_id = PeerId(
            config.PEER_ID_PREFIX
            + (b"\x24" if where == "peer_id" else b"A")
            + os.urandom(11).replace(b"$", b"B")
        )
        async with asyncio.timeout(90):
            seed = await start_peer("libtorrent")
            assert isinstance(seed, LibtorrentPeer)
            await seed.add(tmp_path / "t.torrent", tmp_path / "seed", seed=True)
            await seed.wait_seeding(ih, timeout_s=20)
            await seed.wait_tracker_reply(ih, min_peers=0, timeout_s=20)

            settings = config.testing_settings().replace(seed_ratio=None, seed_time_s=None)
            async with Session(settings, peer_id=peer_id) as session:
                torrent = await session.add_torrent(meta, tmp_path / "leech", seed=False)
                await torrent.wait_complete()
                stats = torrent.statistics()
                assert stats.progress == 1.0
            assert same_tree(tmp_path / "seed" / meta.info.name, tmp_path / "leech" / meta.info.name)
    finally:
        await tracker.stop()
