"""Hybrid torrents (BEP 52 + BEP 47 padding) and the v1-only clients of the matrix.

The issue's swarm, our hybrid seed serving a v1-only client and libtorrent at once, is
built with rTorrent 0.9.8 and CTorrent 3.3.2: both read a hybrid through its v1 half,
hash the info dict as it came, and download the BEP 47 pad files from the swarm as
ordinary files (our seed serves their bytes as zeros; they write them as real files of
zeros, which the tests accept and check). Each of them also seeds a hybrid to us.

aria2 1.36 and Transmission 3.00 cannot join a hybrid swarm, and these tests pin down
why, on libtorrent's own hybrid (byte-identical to ours, checked in
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
    """Every real file of ``top`` (pad files aside) is in ``got`` with the same bytes."""
    for src in (p for p in top.rglob("*") if p.is_file() and ".pad" not in p.relative_to(top).parts):
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


#: The v1-only clients that join a hybrid swarm, each on a loopback address of its own
#: (CTorrent refuses peers at its own address).
V1_ONLY = [
    pytest.param("rtorrent", "127.0.0.4", id="rtorrent"),
    pytest.param("ctorrent", "127.0.0.3", id="ctorrent"),
]


def _pad_files(torrent: Path) -> dict[str, int]:
    """The BEP 47 pad files of a multi-file torrent: relative path -> length."""
    info = bencoding.decode(torrent.read_bytes())[b"info"]
    return {
        "/".join(p.decode() for p in f[b"path"]): f[b"length"]
        for f in info[b"files"]
        if b"p" in f.get(b"attr", b"")
    }


def _pad_files_are_zeros(got: Path, pads: dict[str, int]) -> bool:
    """A v1-only client writes every pad file as a real file: of its length, all zeros."""
    for rel, length in pads.items():
        path = got / rel
        if not path.is_file() or path.read_bytes() != bytes(length):
            return False
    return True


async def _files_settle(top: Path, got: Path) -> bool:
    """Whether ``got`` holds ``top``'s files, polling a little: a client may report
    completion a moment before its last write reaches the file."""
    for _ in range(50):
        if _same_files(top, got):
            return True
        await asyncio.sleep(0.2)
    return False


@pytest.mark.slow
@pytest.mark.parametrize(("client", "host"), V1_ONLY)
async def test_our_hybrid_seed_serves_a_v1_only_client_and_libtorrent_at_once(
    start_peer: StartPeer, start_tracker: StartTracker, tmp_path: Path, client: str, host: str
) -> None:
    """The issue's swarm: one v1-only client and libtorrent download our hybrid (with pad
    files) from our seed at the same time; every file arrives byte for byte, and the
    v1-only client's pad files are zeros."""
    async with asyncio.timeout(180):
        seed, top, ih, _ = await _our_hybrid_seed(start_peer, start_tracker, tmp_path)
        torrent = tmp_path / "hybrid.torrent"
        pads = _pad_files(torrent)
        assert pads, "the hybrid has no pad files"
        v1 = await start_peer(client, host=host)
        lt = await start_peer("libtorrent", host="127.0.0.2")
        for peer in (v1, lt):
            dest = tmp_path / f"dl-{peer.name}"
            dest.mkdir()
            assert await peer.add(torrent, dest) == ih
        for peer in (v1, lt):
            await peer.wait_complete(ih, timeout_s=120)
        assert await _files_settle(top, tmp_path / f"dl-{client}" / top.name), f"{client} wrote other bytes"
        assert _pad_files_are_zeros(tmp_path / f"dl-{client}" / top.name, pads)
        assert await _files_settle(top, tmp_path / "dl-libtorrent" / top.name), "libtorrent wrote other bytes"
        assert not (tmp_path / "dl-libtorrent" / top.name / ".pad").exists()
        assert seed.torrents[ih].statistics().uploaded_bytes >= sum(SIZES.values())
        assert not seed.protocol_errors()


@pytest.mark.slow
@pytest.mark.parametrize(("client", "host"), V1_ONLY)
async def test_a_v1_only_client_seeds_a_hybrid_to_us(
    start_peer: StartPeer, start_tracker: StartTracker, tmp_path: Path, client: str, host: str
) -> None:
    """A v1-only client that holds a hybrid (pad files as real files of zeros, as it
    downloads them) seeds it to our leecher, which checks v1 and v2 hashes and writes no
    pad file."""
    async with asyncio.timeout(180):
        top = make_payload(tmp_path / "seed", "hybrid", SIZES, seed=12)
        probe = create(top, piece_length=256 * 1024, torrent_format="hybrid")
        tracker = await start_tracker([probe.info_hash.hex()], interval_s=5)
        meta = create(top, piece_length=256 * 1024, torrent_format="hybrid", trackers=[tracker.http_url])
        torrent = tmp_path / "hybrid.torrent"
        torrent.write_bytes(meta.to_bytes())
        ih = meta.info_hash.hex()
        for rel, length in _pad_files(torrent).items():
            (top / rel).parent.mkdir(parents=True, exist_ok=True)
            (top / rel).write_bytes(bytes(length))

        v1 = await start_peer(client, host=host)
        assert await v1.add(torrent, top.parent, seed=True) == ih
        await v1.wait_seeding(ih, timeout_s=60)
        ours = await start_peer("pytorrent")
        assert isinstance(ours, OurPeer)
        dest = tmp_path / "dl"
        dest.mkdir()
        assert await ours.add(torrent, dest) == ih
        await ours.wait_complete(ih, timeout_s=120)
        got = dest / top.name
        assert await _files_settle(top, got)
        assert not (got / ".pad").exists()
        assert ours.torrents[ih].statistics().hash_failures == 0
        assert not ours.protocol_errors()
