"""Matrix rows "it seeds, our client downloads" and "our client seeds, it downloads",
and the mixed swarm.

Every transfer goes through our tracker (HTTP, 5 s announce interval) with a multi-file
torrent made by ``pytorrent create`` (20 MiB in three files with odd sizes: Transmission
3.00 moves 13-23 MB/s on loopback, so payloads stay small), and ends with the downloaded
files compared byte for byte with the originals.

How peers find each other: the leecher learns the seed from the tracker and dials it,
except when the leecher is Transmission 3.00, which ignores 127.x peers from a tracker.
Then our seed must connect to it: it re-announces (every 5 s here), is handed
Transmission's address, and dials it; that is what "our client seeds, Transmission
downloads" checks. Transmission also waits for its 10 s rechoke pulse before it becomes
interested, so its cells take at least ~10 s.

A transfer passes only if our client never dropped the other client for a protocol error
along the way (from the reasons our swarm logs): finishing by reconnecting over and over
is not interoperating.

The mixed swarm (10 MiB): one libtorrent seed whose upload is throttled to 1 MiB/s (so
leechers must trade among themselves to finish). Transmission 3.00 accepts one connection
per IP address, so the libtorrent seed runs on 127.0.0.2 and aria2 on 127.0.0.3, while
ours and Transmission stay on 127.0.0.1 (all of 127.0.0.0/8 is loopback), and as leechers our client, Transmission and aria2.
All complete; our leecher must have downloaded blocks from peers that were not seeds at
the time, which is read from our session's per-peer counters while the swarm runs, and
must not have dropped any of them for a protocol error.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from tests.interop.conftest import StartPeer, StartTracker
from tests.interop.ours import OurPeer, pytorrent_create, require_module
from tests.interop.peers import LibtorrentPeer, Peer, make_payload, same_tree

pytestmark = [
    pytest.mark.interop,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.timeout(240),  # the waits inside are shorter; this is the backstop
]

CLIENTS = ["libtorrent", "transmission", "aria2", "qbittorrent"]
MIB = 1024 * 1024
SIZES = {"big.bin": 12 * MIB + 4321, "dir/mid.bin": 6 * MIB - 17, "dir/sub/small.bin": 2 * MIB + 1}
#: The mixed swarm's payload is smaller: its seed is throttled to 1 MiB/s.
MIXED_SIZES = {"one.bin": 6 * MIB + 99, "two/two.bin": 4 * MIB - 99}
TRANSFER_TIMEOUT_S = 90


async def _setup(
    tmp_path: Path, start_tracker: StartTracker, sizes: dict[str, int] = SIZES
) -> tuple[Path, Path, str, str]:
    """Payload, torrent (``pytorrent create``, 256 KiB pieces), its info hash, the tracker URL."""
    require_module("torrent.engine.session", "the pytorrent client (torrent.engine.session)")
    top = make_payload(tmp_path / "seed", "swarm", sizes, seed=7)
    torrent = tmp_path / "swarm.torrent"
    # The info hash does not depend on the tracker URL (it is outside 'info').
    ih = pytorrent_create(top, tmp_path / "probe.torrent", piece_length="256K")
    tracker = await start_tracker([ih], interval_s=5)
    assert pytorrent_create(top, torrent, trackers=(tracker.http_url,), piece_length="256K") == ih
    return top, torrent, ih, tracker.http_url


async def _transfer(seed: Peer, leecher: Peer, top: Path, torrent: Path, ih: str, tmp_path: Path) -> None:
    assert await seed.add(torrent, top.parent, seed=True) == ih
    await seed.wait_seeding(ih, timeout_s=60)
    dest = tmp_path / f"{leecher.name}-download"
    dest.mkdir()
    assert await leecher.add(torrent, dest) == ih
    ours = seed if isinstance(seed, OurPeer) else leecher
    assert isinstance(ours, OurPeer)
    other = seed.name if ours is leecher else leecher.name
    async with asyncio.timeout(TRANSFER_TIMEOUT_S):
        while (await leecher.state(ih)).progress < 1.0:
            _expect_no_protocol_errors(ours, other)  # fail at once, not at the deadline
            await asyncio.sleep(0.2)
    if isinstance(leecher, OurPeer):
        st = leecher.torrents[ih].statistics()
        assert st.pieces_done == st.pieces_wanted
    # Clients may finish writing a moment after they report completion.
    for _ in range(50):
        if same_tree(top, dest / top.name):
            break
        await asyncio.sleep(0.2)
    assert same_tree(top, dest / top.name), f"{leecher.name} wrote different bytes"
    _expect_no_protocol_errors(ours, other)


def _expect_no_protocol_errors(ours: OurPeer, other: str) -> None:
    """The transfer must not have relied on reconnecting after our client dropped the peer."""
    errors = ours.protocol_errors()
    if errors:
        counted = Counter(errors).most_common(3)
        raise AssertionError(
            f"our client dropped {other} {len(errors)} time(s) for protocol errors: {counted}"
        )


@pytest.mark.parametrize("client", CLIENTS)
async def test_it_seeds_we_download(
    client: str, start_peer: StartPeer, start_tracker: StartTracker, tmp_path: Path
) -> None:
    async with asyncio.timeout(TRANSFER_TIMEOUT_S + 90):
        top, torrent, ih, _ = await _setup(tmp_path, start_tracker)
        seed = await start_peer(client)
        ours = await start_peer("pytorrent")
        await _transfer(seed, ours, top, torrent, ih, tmp_path)
        assert isinstance(ours, OurPeer)
        assert ours.torrents[ih].statistics().downloaded_bytes >= sum(SIZES.values())


@pytest.mark.parametrize("client", CLIENTS)
async def test_we_seed_it_downloads(
    client: str, start_peer: StartPeer, start_tracker: StartTracker, tmp_path: Path
) -> None:
    async with asyncio.timeout(TRANSFER_TIMEOUT_S + 90):
        top, torrent, ih, _ = await _setup(tmp_path, start_tracker)
        ours = await start_peer("pytorrent")
        leecher = await start_peer(client)
        await _transfer(ours, leecher, top, torrent, ih, tmp_path)
        assert isinstance(ours, OurPeer)
        assert ours.torrents[ih].statistics().uploaded_bytes >= sum(SIZES.values())


async def test_mixed_swarm(start_peer: StartPeer, start_tracker: StartTracker, tmp_path: Path) -> None:
    async with asyncio.timeout(TRANSFER_TIMEOUT_S + 90):
        top, torrent, ih, _ = await _setup(tmp_path, start_tracker, MIXED_SIZES)
        # Transmission 3.00 keeps one connection per IP address: give the others their own
        # loopback addresses (ours and Transmission stay on 127.0.0.1).
        seed = await start_peer("libtorrent", host="127.0.0.2")
        assert isinstance(seed, LibtorrentPeer)
        assert await seed.add(torrent, top.parent, seed=True) == ih
        await seed.wait_seeding(ih, timeout_s=60)
        # The seed can push about one copy in 10 s, shared by three leechers: they can
        # only finish by trading pieces among themselves.
        await seed.set_upload_limit(ih, MIB)

        leechers: list[Peer] = []
        for key, host in (("transmission", "127.0.0.1"), ("aria2", "127.0.0.3"), ("pytorrent", "127.0.0.1")):
            peer = await start_peer(key, host=host)
            dest = tmp_path / f"{key}-download"
            dest.mkdir()
            assert await peer.add(torrent, dest) == ih
            leechers.append(peer)
        ours = leechers[-1]
        assert isinstance(ours, OurPeer)

        # Bytes our leecher got from each peer while that peer was not a seed, sampled
        # while the swarm runs (peers that disconnect take their counters with them).
        from_non_seeds: dict[bytes, int] = {}
        to_peers: dict[bytes, int] = {}

        async def sample_until_done() -> None:
            while True:
                for peer_id, is_seed, down, up in ours.peer_totals(ih):
                    if not is_seed:
                        from_non_seeds[peer_id] = max(from_non_seeds.get(peer_id, 0), down)
                    to_peers[peer_id] = max(to_peers.get(peer_id, 0), up)
                states = [await p.state(ih) for p in leechers]
                if all(s.progress >= 1.0 for s in states):
                    return
                await asyncio.sleep(0.1)

        await asyncio.wait_for(sample_until_done(), TRANSFER_TIMEOUT_S)
        for peer in leechers:
            dest = tmp_path / f"{peer.name}-download" / top.name
            for _ in range(50):
                if same_tree(top, dest):
                    break
                await asyncio.sleep(0.2)
            assert same_tree(top, dest), f"{peer.name} wrote different bytes"

        got = {pid[:8].decode("latin-1"): n for pid, n in from_non_seeds.items() if n}
        sent = {pid[:8].decode("latin-1"): n for pid, n in to_peers.items() if n}
        errors = Counter(ours.protocol_errors()).most_common(3)
        print(f"mixed swarm: our leecher got from non-seeds {got}; sent to {sent}; protocol errors {errors}")
        problems = []
        if not got:
            problems.append("our leecher got no block from a peer that was not a seed")
        if not sent:
            problems.append("our leecher uploaded nothing to the other leechers")
        if errors:
            problems.append(f"our client dropped peers for protocol errors: {errors}")
        assert not problems, "; ".join(problems) + f" (got from non-seeds {got}, sent {sent})"
