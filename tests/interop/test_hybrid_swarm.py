"""Hybrid torrents (BEP 52 + BEP 47 padding) and the v1-only clients of the matrix.

A hybrid swarm served by our seed to a v1-only client and to libtorrent at once cannot
be built with the v1-only clients installed here, and these tests pin down why, on
libtorrent's own hybrid (byte-identical to ours, checked in
``tests/integration/test_create_v2_libtorrent.py``):

* aria2 1.36 loads it, but its bencode reader drops the ``""`` keys of the ``file tree``
  and it hashes its re-encoding: it names the torrent by another info hash, so it never
  meets the swarm (not on the tracker, not in a handshake).
* Transmission 3.00 refuses the file ("invalid or corrupt torrent file").

By magnet link (the v1 hash) from our seed it is no better: aria2 fetches the metadata
and checks its SHA-1, then restarts the download under its re-encoding's hash; Transmission
fetches it, the SHA-1 passes, and its parser refuses it ("magnet status: checksum passed 1,
metainfo parsed 0", for ever). The fault is theirs: our seed's metadata is the info dict
byte for byte (libtorrent and Transmission's own check accept its hash).

So the mixed case is tested with the clients that can join: libtorrent downloads a
hybrid from our seed while our own leecher downloads it too.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.interop.conftest import StartPeer, StartTracker
from tests.interop.ours import OurPeer
from tests.interop.peers import Aria2Peer, PeerError, TransmissionPeer, make_payload, wait_for
from tests.lt_create import lt_create
from torrent.create import create
from torrent.proto import bencoding

pytestmark = [
    pytest.mark.interop,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.timeout(240),
]

MIB = 1024 * 1024
SIZES = {"a.bin": 3 * MIB + 12_345, "dir/b.bin": 2 * MIB - 7, "dir/c/tiny.txt": 1_000}


def _same_files(top: Path, got: Path) -> bool:
    """Every real file of ``top`` is in ``got`` with the same bytes."""
    for src in (p for p in top.rglob("*") if p.is_file()):
        dst = got / src.relative_to(top)
        if not dst.is_file() or dst.read_bytes() != src.read_bytes():
            return False
    return True


def _without_empty_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_empty_keys(v) for k, v in value.items() if k != b""}
    if isinstance(value, list):
        return [_without_empty_keys(v) for v in value]
    return value


async def _libtorrents_hybrid(tmp_path: Path, start_tracker: StartTracker) -> tuple[Path, Path, str]:
    top = make_payload(tmp_path / "seed", "hybrid", SIZES, seed=11)
    torrent = tmp_path / "hybrid.torrent"
    torrent.write_bytes(lt_create(top, "hybrid", 256 * 1024))
    ih = hashlib.sha1(bencoding.encode(bencoding.decode(torrent.read_bytes())[b"info"])).hexdigest()
    return top, torrent, ih


async def test_aria2_names_a_hybrid_by_another_info_hash(
    start_peer: StartPeer, start_tracker: StartTracker, tmp_path: Path
) -> None:
    _, torrent, ih = await _libtorrents_hybrid(tmp_path, start_tracker)
    info = bencoding.decode(torrent.read_bytes())[b"info"]
    mangled = hashlib.sha1(bencoding.encode(_without_empty_keys(info))).hexdigest()
    aria2 = await start_peer("aria2")
    (tmp_path / "dl").mkdir()
    assert await aria2.add(torrent, tmp_path / "dl") == mangled != ih


async def test_transmission_refuses_a_hybrid(
    start_peer: StartPeer, start_tracker: StartTracker, tmp_path: Path
) -> None:
    _, torrent, _ = await _libtorrents_hybrid(tmp_path, start_tracker)
    transmission = await start_peer("transmission")
    (tmp_path / "dl").mkdir()
    with pytest.raises(PeerError, match="invalid or corrupt"):
        await transmission.add(torrent, tmp_path / "dl")


async def test_our_hybrid_seed_serves_libtorrent_and_our_leecher_at_once(
    start_peer: StartPeer, start_tracker: StartTracker, tmp_path: Path
) -> None:
    async with asyncio.timeout(180):
        top = make_payload(tmp_path / "seed", "hybrid", SIZES, seed=11)
        probe = create(top, piece_length=256 * 1024, torrent_format="hybrid")
        tracker = await start_tracker([probe.info_hash.hex()], interval_s=5)
        meta = create(top, piece_length=256 * 1024, torrent_format="hybrid", trackers=[tracker.http_url])
        assert meta.info.padding_bytes > 0
        torrent = tmp_path / "hybrid.torrent"
        torrent.write_bytes(meta.to_bytes())
        ih = meta.info_hash.hex()

        seed = await start_peer("pytorrent")
        assert isinstance(seed, OurPeer)
        assert await seed.add(torrent, top.parent, seed=True) == ih
        await seed.wait_seeding(ih, timeout_s=60)
        leechers = [await start_peer("libtorrent", host="127.0.0.2"), await start_peer("pytorrent")]
        for peer in leechers:
            dest = tmp_path / f"{peer.name}-{id(peer)}"
            dest.mkdir()
            assert await peer.add(torrent, dest, seed=False) == ih
        for peer in leechers:
            await peer.wait_complete(ih, timeout_s=120)
        for peer in leechers:
            got = tmp_path / f"{peer.name}-{id(peer)}" / top.name
            for _ in range(50):
                if _same_files(top, got):
                    break
                await asyncio.sleep(0.2)
            assert _same_files(top, got), f"{peer.name} wrote different bytes"
            assert not (got / ".pad").exists()
        assert not seed.protocol_errors()


async def _our_hybrid_seed(
    start_peer: StartPeer, start_tracker: StartTracker, tmp_path: Path
) -> tuple[OurPeer, Path, str, str]:
    """Our seed of a hybrid through our tracker; returns it, the payload, the v1 hash and
    a magnet link naming that hash."""
    from torrent.proto.magnet import Magnet

    top = make_payload(tmp_path / "seed", "hybrid", SIZES, seed=11)
    probe = create(top, piece_length=256 * 1024, torrent_format="hybrid")
    tracker = await start_tracker([probe.info_hash.hex()], interval_s=5)
    meta = create(top, piece_length=256 * 1024, torrent_format="hybrid", trackers=[tracker.http_url])
    torrent = tmp_path / "hybrid.torrent"
    torrent.write_bytes(meta.to_bytes())
    ih = meta.info_hash.hex()
    seed = await start_peer("pytorrent")
    assert isinstance(seed, OurPeer)
    assert await seed.add(torrent, top.parent, seed=True) == ih
    await seed.wait_seeding(ih, timeout_s=60)
    return (
        seed,
        top,
        ih,
        Magnet(info_hash=meta.info_hash, trackers=(tracker.http_url,), name="hybrid").to_uri(),
    )


async def test_aria2_by_magnet_gets_our_hybrids_metadata_then_renames_it(
    start_peer: StartPeer, start_tracker: StartTracker, tmp_path: Path
) -> None:
    """By magnet aria2 fetches the metadata from our seed and checks its SHA-1, then starts
    the download under the hash of its own re-encoding (without the ``""`` keys): it
    leaves the swarm it found."""
    async with asyncio.timeout(120):
        seed, _, ih, uri = await _our_hybrid_seed(start_peer, start_tracker, tmp_path)
        aria2 = await start_peer("aria2")
        assert isinstance(aria2, Aria2Peer)
        (tmp_path / "dl").mkdir()
        assert await aria2.add_magnet(uri, tmp_path / "dl") == ih
        # aria2 announces "left=0" while it has no metadata, and a tracker gives a seed no
        # seeds: our seed dials it instead.
        seed.torrents[ih].add_peers([("127.0.0.1", aria2.peer_port)])
        metadata_gid = aria2.gids[ih]

        async def renamed() -> bool:
            await aria2.state(ih)
            return aria2.gids[ih] != metadata_gid

        await wait_for(renamed, timeout_s=60, what="aria2 to start the download after the metadata")
        status = await aria2.rpc("aria2.tellStatus", aria2.gids[ih], ["infoHash"])
        info = bencoding.decode(seed.torrents[ih].metainfo.to_bytes())[b"info"]
        mangled = hashlib.sha1(bencoding.encode(_without_empty_keys(info))).hexdigest()
        assert status["infoHash"] == mangled != ih


async def test_transmission_by_magnet_checks_our_hybrids_metadata_then_cannot_parse_it(
    start_peer: StartPeer, start_tracker: StartTracker, tmp_path: Path
) -> None:
    """By magnet Transmission 3.00 fetches the metadata from our seed, its SHA-1 passes,
    and its parser refuses it, again and again ("checksum passed 1, metainfo parsed 0")."""
    async with asyncio.timeout(120):
        _, _, ih, uri = await _our_hybrid_seed(start_peer, start_tracker, tmp_path)
        transmission = await start_peer("transmission")
        assert isinstance(transmission, TransmissionPeer)
        (tmp_path / "dl").mkdir()
        assert await transmission.add_magnet(uri, tmp_path / "dl") == ih

        async def refused() -> bool:
            return transmission.log_text().count("checksum passed 1, metainfo parsed 0") >= 2

        await wait_for(refused, timeout_s=60, what="Transmission to fetch the metadata and refuse it")
        assert (await transmission.state(ih)).progress == 0.0
