"""Hybrid torrents (BEP 52 + BEP 47 padding) and the v1-only clients of the matrix.

A hybrid swarm served by our seed to a v1-only client and to libtorrent at once cannot
be built with the v1-only clients installed here, and these tests pin down why, on
libtorrent's own hybrid (byte-identical to ours, checked in
``tests/integration/test_create_v2_libtorrent.py``):

* aria2 1.36 loads it, but its bencode reader drops the ``""`` keys of the ``file tree``
  and it hashes its re-encoding: it names the torrent by another info hash, so it never
  meets the swarm (not on the tracker, not in a handshake).
* Transmission 3.00 refuses the file ("invalid or corrupt torrent file").

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
from tests.interop.peers import PeerError, make_payload
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
