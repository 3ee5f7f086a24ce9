"""Announces of BEP 52 torrents: a hybrid under both of its hashes, as libtorrent announces
it (trackers get one announce per hash, the v2 hash truncated to 20 bytes; the DHT a
lookup and an announce for each), a v2-only torrent under its truncated v2 hash. Peers
found under either hash reach the same torrent. Our tracker and DHT nodes on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.dht_helpers import TEST_CONFIG, loopback_host
from tests.integration.swarm_helpers import make_payload, same_tree
from tests.integration.test_dht_session import WatchedNode, dht_settings
from tests.polling import wait_until
from torrent import config
from torrent.create import create
from torrent.engine.session import Session
from torrent.engine.swarm import Swarm
from torrent.proto.magnet import Magnet
from torrent.proto.metainfo import Metainfo
from torrent.types import InfoHash
from tracker.server import TrackerServer
from tracker.settings import TrackerSettings

FILES = {"a.bin": 200_001, "b/c.bin": 70_000}


def _tracker(allow_file: Path | None = None) -> TrackerServer:
    return TrackerServer(
        TrackerSettings(
            host="127.0.0.1", port=0, udp_port=0, interval_s=2, min_interval_s=1, allow_file=allow_file
        )
    )


async def _seeders(tracker: TrackerServer, ih: bytes) -> int:
    (stats,) = await tracker.store.scrape([ih])
    return stats.complete


def _v2_hash(meta: Metainfo) -> InfoHash:
    assert meta.info_hash_v2 is not None
    return InfoHash(meta.info_hash_v2[:20])


@pytest.mark.parametrize("scheme", ["http", "udp"])
async def test_a_hybrid_is_announced_under_both_hashes(tmp_path: Path, scheme: str) -> None:
    content = make_payload(tmp_path / "seed", "multi", FILES)
    async with asyncio.timeout(40), _tracker() as tracker:
        url = next(u for u in tracker.urls() if u.startswith(scheme))
        meta = create(content, piece_length=32 * 1024, trackers=[url], torrent_format="hybrid")
        v1, v2 = meta.info_hash, _v2_hash(meta)
        assert meta.info_hashes == (v1, v2)
        async with (
            Session(config.testing_settings()) as seed_s,
            Session(config.testing_settings()) as leech_s,
        ):
            seed = await seed_s.add_torrent(meta, tmp_path / "seed")
            await seed.wait_checked()
            await wait_until(
                lambda: seed.last_announce() is not None, timeout_s=10, what="the seed's first announce"
            )
            assert await _seeders(tracker, v1) == 1
            assert await _seeders(tracker, v2) == 1
            leech = await leech_s.add_torrent(meta, tmp_path / "leech", seed=False)
            await leech.wait_complete()
            report = leech.last_announce()
            assert report is not None
            assert report.ok
            assert report.message == ""
        # Both hashes heard ``stopped`` from both clients as their sessions closed.
        for ih in (v1, v2):
            (stats,) = await tracker.store.scrape([ih])
            assert (stats.complete, stats.incomplete) == (0, 0)
    assert same_tree(content, tmp_path / "leech" / "multi")


async def test_a_v2_only_torrent_is_announced_under_its_truncated_v2_hash(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "multi", FILES)
    async with asyncio.timeout(30), _tracker() as tracker:
        meta = create(content, piece_length=32 * 1024, trackers=[tracker.urls()[0]], torrent_format="v2")
        assert meta.info_hashes == (_v2_hash(meta),)
        async with Session(config.testing_settings()) as seed_s:
            seed = await seed_s.add_torrent(meta, tmp_path / "seed")
            await seed.wait_checked()
            await wait_until(
                lambda: seed.last_announce() is not None, timeout_s=10, what="the first announce"
            )
            assert await _seeders(tracker, _v2_hash(meta)) == 1
            # Nothing under the SHA-1 of the info dict, which names no v2-only torrent.
            assert await _seeders(tracker, hashlib.sha1(meta.info_bytes).digest()) == 0


async def test_peers_announced_only_under_the_v2_hash_are_found(tmp_path: Path) -> None:
    """The tracker tracks only the hybrid's truncated v2 hash and refuses the v1 one: the
    seed and the leecher still meet through it, and the refusal of one hash is not the
    torrent's error."""
    content = make_payload(tmp_path / "seed", "multi", FILES)
    meta = create(content, piece_length=32 * 1024, torrent_format="hybrid")
    allow = tmp_path / "allow.txt"
    allow.write_text(_v2_hash(meta).hex() + "\n")
    async with asyncio.timeout(40), _tracker(allow) as tracker:
        meta = create(content, piece_length=32 * 1024, trackers=[tracker.urls()[0]], torrent_format="hybrid")
        assert _v2_hash(meta).hex() == allow.read_text().strip()
        async with (
            Session(config.testing_settings()) as seed_s,
            Session(config.testing_settings()) as leech_s,
        ):
            seed = await seed_s.add_torrent(meta, tmp_path / "seed")
            await seed.wait_checked()
            leech = await leech_s.add_torrent(meta, tmp_path / "leech", seed=False)
            await leech.wait_complete()
            assert leech.statistics().tracker_message == ""
            assert seed.announce_settled  # answered under one hash: a daemon may park it
            assert await _seeders(tracker, _v2_hash(meta)) >= 1
            assert await _seeders(tracker, meta.info_hash) == 0
    assert same_tree(content, tmp_path / "leech" / "multi")


@contextlib.asynccontextmanager
async def _router() -> AsyncIterator[WatchedNode]:
    node = WatchedNode(loopback_host(0), 0, config=TEST_CONFIG)
    async with node:
        yield node


async def test_a_hybrid_is_looked_up_and_announced_under_both_hashes_in_the_dht(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "multi", FILES)
    meta = create(content, piece_length=32 * 1024, torrent_format="hybrid")  # no tracker
    v1, v2 = meta.info_hash, _v2_hash(meta)
    assert meta.info_hash_v2 is not None
    magnet = Magnet(info_hash=v1, info_hash_v2=meta.info_hash_v2)
    assert magnet.info_hashes == (v1, v2)
    async with (
        asyncio.timeout(40),
        _router() as r,
        Session(dht_settings(r)) as seed_s,
        Session(dht_settings(r)) as leech_s,
    ):
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        await wait_until(
            lambda: r.announces_seen[v1] >= 1 and r.announces_seen[v2] >= 1,
            timeout_s=20,
            what="the seed's DHT announces of both hashes",
        )
        fetched = await leech_s.fetch_metadata(magnet)
        assert r.lookups_seen[v2] >= 2  # the seed's and the magnet's
        leech = await leech_s.add_torrent(fetched, tmp_path / "leech", seed=False)
        await leech.wait_complete()
        assert leech.statistics().dht_peers >= 1
    assert same_tree(content, tmp_path / "leech" / "multi")


async def test_lsd_names_a_hybrid_under_both_hashes_and_either_reaches_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the session hands its LSD members: both hashes of a hybrid to announce, and an
    announce heard under either goes to the one torrent. (LSD itself stays off: no
    multicast leaves the test; ``test_lsd.py`` runs the real thing in a namespace.)"""
    monkeypatch.setattr(Swarm, "lsd_enabled", property(lambda self: True))
    content = make_payload(tmp_path / "seed", "multi", FILES)
    meta = create(content, piece_length=32 * 1024, torrent_format="hybrid")
    v1, v2 = meta.info_hashes
    async with asyncio.timeout(20), Session(config.testing_settings()) as s:
        assert s.lsd is None
        t = await s.add_torrent(meta, tmp_path / "seed")
        await t.wait_checked()
        assert sorted(s._lsd_torrents()) == sorted([v1, v2])
        s._lsd_peer(v2, ("127.0.0.9", 6881))
        s._lsd_peer(v1, ("127.0.0.10", 6881))
        assert t.swarm.lsd_peers == 2
        assert ("127.0.0.9", 6881) in t.swarm.peer_list
