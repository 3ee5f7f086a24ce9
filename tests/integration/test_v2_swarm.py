"""v2-only and hybrid torrents (BEP 52) between our own clients: file selection,
sequential mode, resume and recheck work as for v1; our seed serves the leaf hashes that
blame a bad block, and that prove pieces whose piece layer a magnet download lacks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cli.cmd_download import file_priorities
from tests.hostile import evil_peer as ep
from tests.integration.swarm_helpers import make_payload, our_tracker, same_tree
from tests.polling import wait_until
from torrent import config
from torrent.create import create
from torrent.engine.session import Session
from torrent.proto import merkle
from torrent.proto.magnet import Magnet
from torrent.types import BLOCK_SIZE

FILES = {"a.bin": 200_001, "b/c.bin": 333_333, "b/d.txt": 1_234, "e.bin": 150_000}


@pytest.mark.parametrize("fmt", ["v2", "hybrid"])
async def test_selected_files_sequentially_then_resume_and_recheck(tmp_path: Path, fmt: str) -> None:
    content = make_payload(tmp_path / "seed", "multi", FILES)
    async with asyncio.timeout(60), our_tracker() as tracker:
        meta = create(content, piece_length=32 * 1024, trackers=[tracker.urls()[0]], torrent_format=fmt)
        # Indices count real files only (as `pytorrent info` lists them): 1 is b/c.bin.
        prio = file_priorities(meta, "1,e.bin")
        assert prio is not None
        assert [f.path_str for f, p in zip(meta.info.files, prio, strict=True) if p] == ["b/c.bin", "e.bin"]
        async with Session(config.testing_settings()) as seed_s:
            seed = await seed_s.add_torrent(meta, tmp_path / "seed")
            await seed.wait_checked()
            async with Session(config.testing_settings()) as leech_s:
                leech = await leech_s.add_torrent(
                    meta, tmp_path / "leech", file_priorities=prio, sequential=True, seed=False
                )
                await leech.wait_complete()
                st = leech.statistics()
            assert st.wanted_bytes == 333_333 + 150_000
            for name in ("b/c.bin", "e.bin"):
                assert (tmp_path / "leech" / "multi" / name).read_bytes() == (content / name).read_bytes()
            assert not (tmp_path / "leech" / "multi" / "a.bin").exists()
            # Every file now: the resume state keeps what was verified.
            async with Session(config.testing_settings()) as leech_s:
                leech = await leech_s.add_torrent(meta, tmp_path / "leech", seed=False)
                await leech.wait_complete()
                again = leech.statistics()
            assert again.downloaded_bytes < 200_001 + 1_234 + 3 * 32 * 1024
            assert same_tree(content, tmp_path / "leech" / "multi")
            # A full recheck from disk passes every piece by its merkle node (and SHA-1).
            async with Session(config.testing_settings()) as check_s:
                t = await check_s.add_torrent(meta, tmp_path / "leech", seed=False, recheck=True)
                await t.wait_complete()
                assert t.statistics().downloaded_bytes == 0


async def test_a_hybrid_answers_to_its_v1_and_its_truncated_v2_hash(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "multi", FILES)
    meta = create(content, piece_length=32 * 1024, torrent_format="hybrid")
    assert meta.info_hash_v2 is not None
    pstr = b"\x13BitTorrent protocol" + bytes(8)
    async with asyncio.timeout(20), Session(config.testing_settings().replace(encryption="off")) as s:
        t = await s.add_torrent(meta, tmp_path / "seed")
        await t.wait_checked()
        for named in (meta.info_hash, meta.info_hash_v2[:20], b"\x01" * 20):
            r, w = await asyncio.open_connection("127.0.0.1", s.port)
            w.write(pstr + named + b"-XX0001-" + b"x" * 12)
            try:
                answer = await r.readexactly(68)
            except asyncio.IncompleteReadError:
                answer = b""
            finally:
                w.close()
            # Answered with the hash the peer named; an unknown hash is hung up on.
            assert answer[28:48] == (named if named != b"\x01" * 20 else b"")


async def test_our_seed_serves_the_leaf_hashes_that_blame_a_bad_block(tmp_path: Path) -> None:
    """A peer sends block 1 of every piece, corrupt, and our seed the rest. Our leecher
    asks for a failed piece's leaf hashes (BEP 52, base layer 0, below the piece layer):
    our seed hashes the piece from disk and answers, the liar is banned for the block the
    leaves refute, the seed never, and the file arrives whole. Only the bad blocks are
    fetched again: the failed pieces' good blocks are kept."""
    piece_length = 64 * 1024
    content = make_payload(tmp_path / "seed", "big.bin", 2_000_000)
    meta = create(content, piece_length=piece_length, torrent_format="v2")
    liar_script = ep.one_bad_block_per_piece(content.read_bytes(), piece_length)
    settings = config.testing_settings().replace(encryption="off")
    async with (
        asyncio.timeout(60),
        ep.EvilPeer(meta.info_hash, liar_script).running() as evil,
        # A seed slow enough that the liar's blocks are asked for too.
        Session(settings.replace(max_upload_bps=1 << 20)) as seed_s,
    ):
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        async with Session(settings) as ours:
            t = await ours.add_torrent(meta, tmp_path / "ours", seed=False, peers=[("127.0.0.1", evil.port)])
            # The liar first, alone: some of its corrupt blocks are in before the seed
            # joins, whatever the machine's load.
            await wait_until(
                lambda: t.statistics().downloaded_bytes >= 2 * BLOCK_SIZE,
                timeout_s=20,
                what="the liar's blocks",
            )
            t.add_peers([("127.0.0.1", seed_s.port)])
            await t.wait_complete()
            leaf_answers = seed.swarm.hashes.leaf_answers
            st = t.statistics()
            failures = st.hash_failures
            liar = t.swarm.peer_list.get(("127.0.0.1", evil.port))
            honest = t.swarm.peer_list.get(("127.0.0.1", seed_s.port))
    assert same_tree(content, tmp_path / "ours" / "big.bin")
    assert failures >= 1
    # A failed piece wasted its one bad block (and endgame duplicates), not the whole piece.
    assert st.wasted_bytes < failures * piece_length
    assert liar is not None
    assert liar.banned
    assert "leaf hash refutes" in liar.ban_reason
    assert honest is not None
    assert not honest.banned
    assert leaf_answers >= 1  # our seed answered below its piece layer


@pytest.mark.parametrize("piece_length", [16 * 1024, 64 * 1024])
async def test_a_v2_magnet_from_our_seed_checked_by_per_block_proofs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece_length: int
) -> None:
    """The piece layers are never asked for: each piece of a file larger than a piece is
    held until our seed sends the leaf hashes under it with every uncle up to the file's
    root (BEP 52, base layer 0, below the seed's piece layer), then checked. Each file's
    layer is then complete from its proven pieces; the files arrive byte for byte."""
    monkeypatch.setattr(merkle.PieceLayerFetch, "next_requests", lambda self, peer, limit: [])
    content = make_payload(tmp_path / "seed", "multi", FILES)
    meta = create(content, piece_length=piece_length, torrent_format="v2")
    assert meta.info_hash_v2 is not None
    link = Magnet(info_hash=meta.info_hash, info_hash_v2=meta.info_hash_v2, v2_only=True)
    async with (
        asyncio.timeout(60),
        Session(config.testing_settings()) as seed_s,
        Session(config.testing_settings()) as ours,
    ):
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        fetched = await ours.fetch_metadata(link, peers=[("127.0.0.1", seed_s.port)])
        missing = fetched.info.missing_piece_layers
        assert missing
        t = await ours.add_torrent(fetched, tmp_path / "ours", seed=False, peers=[("127.0.0.1", seed_s.port)])
        await t.wait_complete()
        proven = t.swarm.hashes.pieces_proven
        leaf_answers = seed.swarm.hashes.leaf_answers
    assert same_tree(content, tmp_path / "ours" / "multi")
    assert proven == sum(-(-f.length // piece_length) for f in missing)
    # Below its piece layer, our seed hashed the pieces to answer (with 16 KiB pieces the
    # leaves are the piece layer).
    assert (leaf_answers >= 1) is (piece_length > BLOCK_SIZE)
    assert not fetched.info.missing_piece_layers
    assert dict(fetched.info.piece_layers) == dict(meta.info.piece_layers)


async def test_a_bad_block_of_a_proven_piece_is_blamed_by_its_proven_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Layers unknown (never asked for), a liar sends block 1 of every piece corrupt and
    our seed the rest. Each piece is proven by the leaf hashes our seed sends, then
    fails its check: the leaves already proven name the bad block at once, the liar is
    banned for it, only that block is fetched again, and the file arrives whole."""
    monkeypatch.setattr(merkle.PieceLayerFetch, "next_requests", lambda self, peer, limit: [])
    piece_length = 64 * 1024
    content = make_payload(tmp_path / "seed", "big.bin", 2_000_000)
    meta = create(content, piece_length=piece_length, torrent_format="v2")
    assert meta.info_hash_v2 is not None
    link = Magnet(info_hash=meta.info_hash, info_hash_v2=meta.info_hash_v2, v2_only=True)
    liar_script = ep.one_bad_block_per_piece(content.read_bytes(), piece_length)
    settings = config.testing_settings().replace(encryption="off")
    async with (
        asyncio.timeout(60),
        ep.EvilPeer(meta.info_hash, liar_script).running() as evil,
        Session(settings.replace(max_upload_bps=1 << 20)) as seed_s,
    ):
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        async with Session(settings) as ours:
            fetched = await ours.fetch_metadata(link, peers=[("127.0.0.1", seed_s.port)])
            assert fetched.info.missing_piece_layers
            t = await ours.add_torrent(
                fetched, tmp_path / "ours", seed=False, peers=[("127.0.0.1", evil.port)]
            )
            await wait_until(
                lambda: t.statistics().downloaded_bytes >= 2 * BLOCK_SIZE,
                timeout_s=20,
                what="the liar's blocks",
            )
            t.add_peers([("127.0.0.1", seed_s.port)])
            await t.wait_complete()
            st = t.statistics()
            proven = t.swarm.hashes.pieces_proven
            liar = t.swarm.peer_list.get(("127.0.0.1", evil.port))
            honest = t.swarm.peer_list.get(("127.0.0.1", seed_s.port))
    assert same_tree(content, tmp_path / "ours" / "big.bin")
    assert proven >= 1
    assert st.hash_failures >= 1
    assert st.wasted_bytes < st.hash_failures * piece_length
    assert liar is not None
    assert liar.banned
    assert "leaf hash refutes" in liar.ban_reason
    assert honest is not None
    assert not honest.banned
