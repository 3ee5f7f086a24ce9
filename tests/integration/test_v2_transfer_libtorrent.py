"""v2-only and hybrid torrents (BEP 52) between our client and libtorrent, both ways, each
checked byte for byte; a btmh magnet from a libtorrent seed.

libtorrent runs TCP only with DHT/LSD/UPnP/NAT-PMP off, inside a loopback-only network
namespace (elsewhere these tests skip; under ``CI=true`` they fail).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.hostile import evil_peer as ep
from tests.integration.swarm_helpers import make_payload, our_tracker, same_tree
from tests.interop.conftest import isolation_problem, skip_or_fail
from tests.polling import wait_until
from torrent import config
from torrent.create import create
from torrent.engine.session import Session
from torrent.errors import MetainfoError
from torrent.proto import merkle
from torrent.proto.magnet import Magnet
from torrent.proto.metainfo import Metainfo
from torrent.types import BLOCK_SIZE
from tracker.server import TrackerServer
from tracker.settings import TrackerSettings
from tracker.store import MemoryStore

pytestmark = pytest.mark.interop

FILES = {"a/one.bin": 300_001, "a/two.txt": 5_000, "b.bin": 1_048_576, "c/empty": 0, "d.bin": 77_777}


@pytest.fixture
def isolated() -> None:
    why = isolation_problem()
    if why:
        skip_or_fail(f"{why}: libtorrent runs only in a loopback-only network namespace (make test as root)")
    try:
        import libtorrent  # noqa: F401
    except ImportError:
        skip_or_fail("libtorrent (PyPI) is not installed")


def _requested_bytes(meta: Metainfo) -> int:
    """Each file's blocks, its last one whole when padding follows it (a hybrid's last
    file has padding after it too; a v2-only torrent's ends with its last byte)."""
    total = 0
    for f in meta.info.files:
        if f.length and not f.padding:
            padded = f.offset + f.length < meta.info.total_length
            total += -(-f.length // BLOCK_SIZE) * BLOCK_SIZE if padded else f.length
    return total


async def _lt_tree_written(content: Path, got: Path) -> None:
    # libtorrent 2 writes through memory-mapped files: poll until the bytes are there.
    await wait_until(lambda: same_tree(content, got), timeout_s=10, interval_s=0.1, what="libtorrent's files")


@pytest.mark.parametrize("fmt", ["v2", "hybrid"])
async def test_libtorrent_seed_to_us(isolated: None, tmp_path: Path, fmt: str) -> None:
    from tests.interop.peers import LibtorrentPeer

    content = make_payload(tmp_path / "lt", "multi", FILES)
    async with asyncio.timeout(90), our_tracker() as tracker:
        meta = create(content, piece_length=64 * 1024, trackers=[tracker.urls()[0]], torrent_format=fmt)
        torrent_file = tmp_path / "multi.torrent"
        torrent_file.write_bytes(meta.to_bytes())
        async with LibtorrentPeer(tmp_path / "lt-state") as lt:
            ih = await lt.add(torrent_file, tmp_path / "lt", seed=True)
            assert ih == meta.info_hash.hex()
            await lt.wait_seeding(ih)
            async with Session(config.testing_settings()) as ours:
                t = await ours.add_torrent(
                    Metainfo.from_bytes(torrent_file.read_bytes()), tmp_path / "ours", seed=False
                )
                await t.wait_complete()
                st = t.statistics()
    assert same_tree(content, tmp_path / "ours" / "multi")
    assert not (tmp_path / "ours" / "multi" / ".pad").exists()
    # Blocks wholly of padding are never requested: we fetched the data and the zeros of
    # each file's last, partly padded block, nothing more.
    assert st.downloaded_bytes == _requested_bytes(meta)


@pytest.mark.parametrize("fmt", ["v2", "hybrid"])
async def test_our_seed_to_libtorrent(isolated: None, tmp_path: Path, fmt: str) -> None:
    from tests.interop.peers import LibtorrentPeer

    content = make_payload(tmp_path / "seed", "multi", FILES)
    async with asyncio.timeout(90), our_tracker() as tracker:
        meta = create(content, piece_length=32 * 1024, trackers=[tracker.urls()[0]], torrent_format=fmt)
        torrent_file = tmp_path / "multi.torrent"
        torrent_file.write_bytes(meta.to_bytes())
        async with Session(config.testing_settings()) as ours:
            seed = await ours.add_torrent(meta, tmp_path / "seed")
            await seed.wait_checked()
            assert seed.statistics().state == "seeding"
            async with LibtorrentPeer(tmp_path / "lt-state") as lt:
                ih = await lt.add(torrent_file, tmp_path / "lt")
                await lt.wait_complete(ih, timeout_s=60)
                await _lt_tree_written(content, tmp_path / "lt" / "multi")
    assert same_tree(content, tmp_path / "lt" / "multi")


@pytest.mark.parametrize("fmt", ["v2", "hybrid"])
async def test_btmh_magnet_from_a_libtorrent_seed(isolated: None, tmp_path: Path, fmt: str) -> None:
    """Metadata over BEP 9 checked against the v2 hash; a v2-only torrent's piece layers
    then come from the seed by BEP 52 hash requests, each run proven against its root."""
    from tests.interop.peers import LibtorrentPeer

    content = make_payload(tmp_path / "lt", "multi", FILES)
    async with asyncio.timeout(90), our_tracker() as tracker:
        meta = create(content, piece_length=16 * 1024, trackers=[tracker.urls()[0]], torrent_format=fmt)
        torrent_file = tmp_path / "multi.torrent"
        torrent_file.write_bytes(meta.to_bytes())
        assert meta.info_hash_v2 is not None
        magnet = Magnet(
            info_hash=meta.info_hash,
            trackers=(tracker.urls()[0],),
            info_hash_v2=meta.info_hash_v2,
            v2_only=fmt == "v2",
        )
        link = Magnet.parse(magnet.to_uri())
        assert ("urn:btih:" in magnet.to_uri()) == (fmt == "hybrid")
        async with LibtorrentPeer(tmp_path / "lt-state") as lt:
            ih = await lt.add(torrent_file, tmp_path / "lt", seed=True)
            await lt.wait_seeding(ih)
            async with Session(config.testing_settings()) as ours:
                fetched = await ours.fetch_metadata(link)
                assert fetched.info_bytes == meta.info_bytes
                assert fetched.info.missing_piece_layers
                t = await ours.add_torrent(fetched, tmp_path / "ours", seed=False)
                await t.wait_complete()
                # v2-only: every layer came from the seed. A hybrid checks its pieces by
                # SHA-1 and needs none (libtorrent answers no hash request on a v1 connection).
                assert bool(fetched.info.missing_piece_layers) == (fmt == "hybrid")
    assert same_tree(content, tmp_path / "ours" / "multi")


@pytest.mark.parametrize("piece_length", [16 * 1024, 64 * 1024])
async def test_a_btmh_magnet_verified_by_per_block_proofs_from_a_libtorrent_seed(
    isolated: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece_length: int
) -> None:
    """The piece layers are never asked for (as when no peer serves them, or before they
    come): every piece of a file larger than one piece is checked by the leaf hashes
    under it, which libtorrent sends with every uncle up to the file's root (BEP 52 hash
    request, base layer 0). Each file's layer is then known from its proven pieces; the
    files arrive byte for byte."""
    from tests.interop.peers import LibtorrentPeer

    monkeypatch.setattr(merkle.PieceLayerFetch, "next_requests", lambda self, peer, limit: [])
    content = make_payload(tmp_path / "lt", "multi", FILES)
    async with asyncio.timeout(90), our_tracker() as tracker:
        meta = create(content, piece_length=piece_length, trackers=[tracker.urls()[0]], torrent_format="v2")
        torrent_file = tmp_path / "multi.torrent"
        torrent_file.write_bytes(meta.to_bytes())
        assert meta.info_hash_v2 is not None
        link = Magnet(
            info_hash=meta.info_hash,
            trackers=(tracker.urls()[0],),
            info_hash_v2=meta.info_hash_v2,
            v2_only=True,
        )
        async with LibtorrentPeer(tmp_path / "lt-state") as lt:
            ih = await lt.add(torrent_file, tmp_path / "lt", seed=True)
            await lt.wait_seeding(ih)
            async with Session(config.testing_settings()) as ours:
                fetched = await ours.fetch_metadata(Magnet.parse(link.to_uri()))
                missing = fetched.info.missing_piece_layers
                assert missing
                t = await ours.add_torrent(fetched, tmp_path / "ours", seed=False)
                await t.wait_complete()
                proven = t.swarm.hashes.pieces_proven
                st = t.statistics()
    assert same_tree(content, tmp_path / "ours" / "multi")
    # Every piece of the files larger than a piece was proven: their layers are complete,
    # and equal the torrent's own.
    assert proven == sum(-(-f.length // piece_length) for f in missing)
    assert not fetched.info.missing_piece_layers
    assert dict(fetched.info.piece_layers) == dict(meta.info.piece_layers)
    assert st.hash_failures == 0


async def test_a_libtorrent_seed_found_under_the_hybrids_v2_hash_only(isolated: None, tmp_path: Path) -> None:
    """The tracker tracks only the hybrid's truncated v2 hash: libtorrent's announce of the
    v1 hash is refused and that of the v2 hash kept, so our leecher (given no peer) finds
    the seed only by announcing the v2 hash too, as libtorrent does."""
    from tests.interop.peers import LibtorrentPeer

    content = make_payload(tmp_path / "lt", "multi", FILES)
    v2_hash = create(content, piece_length=32 * 1024, torrent_format="hybrid").info_hashes[1]
    allow = tmp_path / "allow.txt"
    allow.write_text(v2_hash.hex() + "\n")
    settings = TrackerSettings(
        host="127.0.0.1", port=0, udp_port=0, interval_s=2, min_interval_s=1, allow_file=allow
    )
    async with asyncio.timeout(90), TrackerServer(settings) as tracker:
        meta = create(content, piece_length=32 * 1024, trackers=[tracker.urls()[0]], torrent_format="hybrid")
        assert meta.info_hashes[1] == v2_hash
        torrent_file = tmp_path / "multi.torrent"
        torrent_file.write_bytes(meta.to_bytes())
        async with LibtorrentPeer(tmp_path / "lt-state") as lt:
            ih = await lt.add(torrent_file, tmp_path / "lt", seed=True)
            await lt.wait_seeding(ih)

            store = tracker.store
            assert isinstance(store, MemoryStore)
            await wait_until(
                lambda: store.scrape_nowait([v2_hash])[0].complete > 0,
                timeout_s=30,
                what="libtorrent's announce of the v2 hash",
            )
            assert store.scrape_nowait([meta.info_hash])[0].complete == 0
            async with Session(config.testing_settings()) as ours:
                t = await ours.add_torrent(meta, tmp_path / "ours", seed=False)
                await t.wait_complete()
                assert ("127.0.0.1", lt.peer_port) in t.swarm.peer_list
    assert same_tree(content, tmp_path / "ours" / "multi")


async def test_a_hybrid_link_whose_hashes_disagree_fails_at_once(isolated: None, tmp_path: Path) -> None:
    """A link with the btih of a libtorrent seed's hybrid and the btmh of another torrent:
    the metadata the seed sends matches one hash and not the other, so the fetch ends with
    an error naming the link (not a timeout), and the seed is not taken for a liar."""
    from tests.interop.peers import LibtorrentPeer

    content = make_payload(tmp_path / "lt", "multi", FILES)
    async with asyncio.timeout(60), our_tracker() as tracker:
        meta = create(content, piece_length=16 * 1024, trackers=[tracker.urls()[0]], torrent_format="hybrid")
        other = create(content, piece_length=32 * 1024, torrent_format="hybrid")
        torrent_file = tmp_path / "multi.torrent"
        torrent_file.write_bytes(meta.to_bytes())
        assert other.info_hash_v2 is not None
        link = Magnet(
            info_hash=meta.info_hash, trackers=(tracker.urls()[0],), info_hash_v2=other.info_hash_v2
        )
        async with LibtorrentPeer(tmp_path / "lt-state") as lt:
            ih = await lt.add(torrent_file, tmp_path / "lt", seed=True)
            await lt.wait_seeding(ih)
            async with Session(config.testing_settings()) as ours:
                with pytest.raises(MetainfoError, match="matches the link's btih hash but not its btmh"):
                    await ours.fetch_metadata(link, timeout_s=30)


async def test_a_failed_v2_piece_blames_the_bad_block_by_its_leaf_hash(
    isolated: None, tmp_path: Path
) -> None:
    """A peer sends block 1 of every piece, corrupt, and libtorrent the rest, so every
    failed piece has two senders. Its blocks are checked against leaf hashes libtorrent
    sends (BEP 52 hash request, base layer 0, proven against the piece's node): the liar
    is banned for the block its leaf refutes, libtorrent never, and the file arrives whole,
    each failed piece's good blocks kept."""
    from tests.interop.peers import LibtorrentPeer

    piece_length = 64 * 1024
    content = make_payload(tmp_path / "lt", "big.bin", 2_000_000)
    meta = create(content, piece_length=piece_length, torrent_format="v2")
    torrent_file = tmp_path / "big.torrent"
    torrent_file.write_bytes(meta.to_bytes())
    liar_script = ep.one_bad_block_per_piece(content.read_bytes(), piece_length)
    settings = config.testing_settings().replace(encryption="off")
    async with (
        asyncio.timeout(90),
        ep.EvilPeer(meta.info_hash, liar_script).running() as evil,
        LibtorrentPeer(tmp_path / "lt-state") as lt,
    ):
        ih = await lt.add(torrent_file, tmp_path / "lt", seed=True)
        await lt.wait_seeding(ih)
        async with Session(settings) as ours:
            t = await ours.add_torrent(meta, tmp_path / "ours", seed=False, peers=[("127.0.0.1", evil.port)])
            # The liar first, alone: some of its corrupt blocks are in before libtorrent
            # joins, whatever the machine's load.
            await wait_until(
                lambda: t.statistics().downloaded_bytes >= 2 * BLOCK_SIZE,
                timeout_s=20,
                what="the liar's blocks",
            )
            t.add_peers([("127.0.0.1", lt.peer_port)])
            await t.wait_complete()
            st = t.statistics()
            failures = st.hash_failures
            peers = t.swarm.peer_list
            liar = peers.get(("127.0.0.1", evil.port))
            honest = peers.get(("127.0.0.1", lt.peer_port))
    assert same_tree(content, tmp_path / "ours" / "big.bin")
    assert failures >= 1
    # Only the bad blocks were fetched again (the whole piece would waste piece_length).
    assert st.wasted_bytes < failures * piece_length
    assert liar is not None
    assert liar.banned
    assert "block 1 of piece" in liar.ban_reason
    assert "leaf hash refutes" in liar.ban_reason
    assert honest is not None
    assert not honest.banned


async def test_libtorrent_downloads_a_v2_magnet_from_our_seed(isolated: None, tmp_path: Path) -> None:
    """libtorrent gets the metadata from us (BEP 9) and then every piece layer by BEP 52
    hash requests, which our seed answers with proofs."""
    from tests.interop.peers import LibtorrentPeer

    content = make_payload(tmp_path / "seed", "multi", FILES)
    async with asyncio.timeout(90), our_tracker() as tracker:
        meta = create(content, piece_length=16 * 1024, trackers=[tracker.urls()[0]], torrent_format="v2")
        assert meta.info_hash_v2 is not None
        async with Session(config.testing_settings()) as ours:
            seed = await ours.add_torrent(meta, tmp_path / "seed")
            await seed.wait_checked()
            link = Magnet(
                info_hash=meta.info_hash,
                info_hash_v2=meta.info_hash_v2,
                v2_only=True,
                trackers=(tracker.urls()[0],),
                peers=(("127.0.0.1", ours.port),),
            )
            async with LibtorrentPeer(tmp_path / "lt-state") as lt:
                assert isinstance(lt, LibtorrentPeer)
                ih = await lt.add_magnet(link.to_uri(), tmp_path / "lt")
                await lt.wait_complete(ih, timeout_s=60)
                await _lt_tree_written(content, tmp_path / "lt" / "multi")
    assert same_tree(content, tmp_path / "lt" / "multi")


@pytest.mark.parametrize(
    ("who_dials", "encryption", "upgrades"),
    [
        ("we-dial", "off", True),
        ("libtorrent-dials", "off", True),
        ("libtorrent-dials", "prefer", True),
        # libtorrent takes an encrypted connection's torrent from the MSE handshake and
        # then only checks the BitTorrent handshake's hash: it answers with the v1 hash.
        ("we-dial", "prefer", False),
    ],
)
async def test_a_hybrids_v1_connection_is_upgraded_to_v2(
    isolated: None, tmp_path: Path, who_dials: str, encryption: str, upgrades: bool
) -> None:
    """BEP 52's upgrade bit, with libtorrent both ways: the side that dials names the
    hybrid's v1 hash and sets the bit, the other answers with the truncated v2 hash, and
    the connection goes on under it; the file arrives whole."""
    from tests.interop.peers import LibtorrentPeer

    content = make_payload(tmp_path / "data", "multi", FILES)
    meta = create(content, piece_length=32 * 1024, torrent_format="hybrid")
    assert meta.info_hash_v2 is not None
    v2_hash = meta.info_hash_v2[:20]
    torrent_file = tmp_path / "multi.torrent"
    torrent_file.write_bytes(meta.to_bytes())
    we_dial = who_dials == "we-dial"
    # The seed is slow, so the connection is looked at while the transfer runs.
    settings = config.testing_settings().replace(
        max_upload_bps=0 if we_dial else 512 * 1024, encryption=encryption
    )
    lt = LibtorrentPeer(tmp_path / "lt-state")
    async with asyncio.timeout(90), lt, Session(settings) as ours:
        if we_dial:
            ih = await lt.add(torrent_file, tmp_path / "data", seed=True)
            await lt.wait_seeding(ih)
            await lt.set_upload_limit(ih, 512 * 1024)
            t = await ours.add_torrent(
                meta, tmp_path / "ours", seed=False, peers=[("127.0.0.1", lt.peer_port)]
            )
        else:
            t = await ours.add_torrent(meta, tmp_path / "data")
            await t.wait_checked()
            ih = await lt.add(torrent_file, tmp_path / "lt")
            await lt.connect_peer(ih, "127.0.0.1", ours.port)

        def connected() -> list[Any]:
            return [p.proto for p in t.swarm.peers.values() if p.proto is not None and p.peer_id is not None]

        await wait_until(lambda: bool(connected()), timeout_s=30, interval_s=0.02, what="a connection")
        (proto,) = connected()
        assert proto.upgraded is upgrades
        assert proto.info_hash == (v2_hash if upgrades else meta.info_hash)
        assert proto.peer_handshake.info_hash == (v2_hash if we_dial and upgrades else meta.info_hash)
        if we_dial:
            await t.wait_complete()
            got = tmp_path / "ours" / "multi"
        else:
            await lt.wait_complete(ih, timeout_s=60)
            got = tmp_path / "lt" / "multi"
            await _lt_tree_written(content, got)
    assert same_tree(content, got)
