"""A peer flooding a v2 seed with BEP 52 hash requests: every request gets exactly one
answer, but at most 64 a second are served with hashes (one 49-byte request can ask for
kilobytes); the rest are rejected."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.hostile import evil_peer as ep
from tests.integration.swarm_helpers import make_payload
from tests.polling import wait_until
from torrent import config
from torrent.create import create
from torrent.engine.hash_serving import MAX_ANSWERS_PER_TICK
from torrent.engine.session import Session


async def test_a_hash_request_flood_is_answered_within_the_budget(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "src", "big.bin", 1_000_000)
    meta = create(content, piece_length=16384, torrent_format="v2")
    root = meta.info.files[0].pieces_root
    answers: dict[str, int] = {}
    flood = ep.hash_request_flood(root, 0, 300, answers)
    settings = config.testing_settings().replace(encryption="off")
    async with ep.EvilPeer(meta.info_hash, flood).running() as evil, Session(settings) as s:
        t = await s.add_torrent(meta, tmp_path / "src", peers=[("127.0.0.1", evil.port)])
        await t.wait_checked()
        async with asyncio.timeout(20):
            await wait_until(lambda: sum(answers.values()) >= 300, timeout_s=15, what="300 answers")
    assert answers["hashes"] <= 2 * MAX_ANSWERS_PER_TICK  # a tick may fall in the middle
    assert answers["hashes"] >= MAX_ANSWERS_PER_TICK // 2
    assert answers["hashes"] + answers["reject"] == 300
