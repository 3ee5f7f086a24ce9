"""The engine's controls a long-running front end uses: remove and re-add a torrent,
session-wide rate limits at run time, per-file progress, connected peers, reannounce."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.swarm_helpers import make_payload, make_torrent
from tests.polling import wait_until
from torrent import config
from torrent.engine.bandwidth import RateLimiter
from torrent.engine.clock import ManualClock
from torrent.engine.session import Session
from torrent.errors import TorrentError


async def test_remove_then_add_again_resumes_and_peers_are_listed(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "pair", {"a.bin": 100_000, "b.bin": 60_000})
    meta = make_torrent(content, piece_length=16 * 1024)
    settings = config.testing_settings().replace(seed_ratio=None)
    async with asyncio.timeout(30), Session(settings) as seed_s, Session(settings) as leech_s:
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        assert seed.file_progress() == [100_000, 60_000]
        leech = await leech_s.add_torrent(
            meta, tmp_path / "leech", file_priorities=[1, 0], peers=[("127.0.0.1", seed_s.port)]
        )
        await wait_until(lambda: len(seed.peers()) == 1 and len(leech.peers()) == 1, what="connected")
        [p] = leech.peers()
        assert (p.host, p.port, p.incoming) == ("127.0.0.1", seed_s.port, False)
        assert seed.peers()[0].incoming
        assert p.client.startswith("pytorrent ")  # the extension handshake's "v"
        await leech.wait_complete()
        progress = leech.file_progress()
        assert progress[0] == 100_000
        assert progress[1] == 7 * 16 * 1024 - 100_000  # not wanted: only the piece it shares with a.bin
        leech.reannounce()  # no tracker: nothing to do, and no error

        await leech_s.remove_torrent(meta.info_hash)
        assert leech_s.torrents() == []
        with pytest.raises(TorrentError):
            await leech_s.remove_torrent(meta.info_hash)
        again = await leech_s.add_torrent(meta, tmp_path / "leech", file_priorities=[1, 0])
        await again.wait_checked()
        assert again.file_progress()[0] == 100_000  # resumed, nothing downloaded again
        assert again.statistics().downloaded_bytes == 0


async def test_session_rate_limits_change_at_run_time() -> None:
    async with Session(config.testing_settings().replace(max_download_bps=1000)) as s:
        assert s._down.rate_bps == 1000
        s.set_rate_limits(download_bps=0, upload_bps=5000)
        assert (s._down.rate_bps, s._up.rate_bps) == (0, 5000)
        s.set_rate_limits(upload_bps=None)
        assert s._up.rate_bps == 5000


def test_rate_limiter_set_rate_applies_to_the_next_take() -> None:
    clock = ManualClock()
    bucket = RateLimiter(0, clock=clock)
    assert bucket.take_nowait(10**9) == 0.0
    bucket.set_rate(100_000)
    bucket.take_nowait(100_000)  # the bucket holds 2 blocks: this goes into debt
    assert bucket.take_nowait(1) > 0.5
    bucket.set_rate(0)
    assert bucket.take_nowait(10**9) == 0.0
    with pytest.raises(ValueError, match="negative"):
        bucket.set_rate(-1)
