"""Hybrid poisoning (BEP 52 "Upgrade Path"): a hybrid torrent whose v1 piece hashes
describe other data than its v2 merkle trees. A peer serving the data of either half
makes one hash pass and the other fail; the torrent stops with an error that says so,
instead of writing the piece or blaming the peer."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from tests.hostile import evil_peer as ep
from tests.integration.swarm_helpers import make_payload
from torrent import config
from torrent.create import create
from torrent.engine.session import Session
from torrent.engine.status import TorrentEventKind
from torrent.proto import bencoding
from torrent.proto.metainfo import Metainfo


async def test_a_hybrid_whose_halves_disagree_stops_with_a_clear_error(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "src", "p.bin", 100_000)
    honest = create(content, piece_length=16384, torrent_format="hybrid")
    top = bencoding.decode(honest.to_bytes())
    # Piece 2's SHA-1 now names other bytes; the v2 tree still names the real ones.
    pieces = top[b"info"][b"pieces"]
    top[b"info"][b"pieces"] = pieces[:40] + hashlib.sha1(b"something else").digest() + pieces[60:]
    poisoned = Metainfo.from_bytes(bencoding.encode(top))
    payload = content.read_bytes()
    settings = config.testing_settings().replace(encryption="off")
    serve = ep.serving(payload, 16384)
    async with ep.EvilPeer(poisoned.info_hash, serve).running() as seed, Session(settings) as s:
        t = await s.add_torrent(poisoned, tmp_path / "out", peers=[("127.0.0.1", seed.port)])
        events = t.events()
        async with asyncio.timeout(20):
            async for ev in events:
                if ev.kind is TorrentEventKind.ERROR:
                    break
        assert "piece 2" in ev.message
        assert "v1 and v2 halves describe different data" in ev.message
        st = t.statistics()
        assert st.banned_peers == 0
    assert st.error == ev.message


async def test_a_peer_sending_wrong_data_for_a_v2_piece_is_banned(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "src", "p.bin", 100_000)
    meta = create(content, piece_length=16384, torrent_format="v2")
    wrong = bytes(len(content.read_bytes()))  # zeros: fail every merkle node
    settings = config.testing_settings().replace(encryption="off")
    async with (
        ep.EvilPeer(meta.info_hash, ep.serving(wrong, 16384)).running() as liar,
        Session(settings) as s,
    ):
        t = await s.add_torrent(meta, tmp_path / "out", peers=[("127.0.0.1", liar.port)])
        events = t.events()
        async with asyncio.timeout(20):
            async for ev in events:
                if ev.kind is TorrentEventKind.PEER_BANNED:
                    break
        assert f"127.0.0.1:{liar.port}" in ev.message
        assert "hash check" in ev.message
        assert t.statistics().error == ""
