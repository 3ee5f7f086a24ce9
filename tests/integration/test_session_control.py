"""The engine's controls a long-running front end uses: remove and re-add a torrent,
session-wide rate limits at run time, per-file progress, connected peers, reannounce."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from pathlib import Path

import pytest

from tests.integration.swarm_helpers import make_payload, make_torrent
from tests.polling import wait_until
from torrent import config
from torrent.engine.bandwidth import RateLimiter
from torrent.engine.clock import ManualClock
from torrent.engine.session import Session
from torrent.engine.status import TorrentState
from torrent.errors import TorrentError


async def test_remove_then_add_again_resumes_and_peers_are_listed(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "pair", {"a.bin": 100_000, "b.bin": 60_000})
    meta = make_torrent(content, piece_length=16 * 1024)
    settings = config.testing_settings().replace(seed_ratio=None)
    # The leecher is slowed down so that the peers stay connected while the test looks
    # at them (two seeds disconnect from each other).
    slow = settings.replace(max_download_bps=50_000)
    async with asyncio.timeout(30), Session(settings) as seed_s, Session(slow) as leech_s:
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        assert seed.file_progress() == [100_000, 60_000]
        leech = await leech_s.add_torrent(
            meta, tmp_path / "leech", file_priorities=[1, 0], peers=[("127.0.0.1", seed_s.port)]
        )
        await wait_until(lambda: len(seed.peers()) == 1 and len(leech.peers()) == 1, what="connected")
        # Until the extension handshake (BEP 10) arrives the name comes from the peer id.
        assert leech.peers()[0].client in ("PT0100", "pytorrent 0.1.0")
        await wait_until(lambda: leech.peers()[0].client.startswith("pytorrent "), what="the peer's 'v'")
        [p] = leech.peers()
        assert (p.host, p.port, p.incoming) == ("127.0.0.1", seed_s.port, False)
        assert seed.peers()[0].incoming
        await leech.wait_complete()
        b, st = leech.brief(), leech.statistics()
        assert (b.state, b.done_bytes, b.wanted_bytes, b.downloaded_bytes, b.uploaded_bytes, b.error) == (
            st.state,
            st.done_bytes,
            st.wanted_bytes,
            st.downloaded_bytes,
            st.uploaded_bytes,
            st.error,
        )
        assert b.done_bytes == b.wanted_bytes == 7 * 16 * 1024  # the pieces of a.bin
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


async def test_idle_seeding_torrents_hold_no_file_and_no_thread_of_their_own(tmp_path: Path) -> None:
    metas = [
        make_torrent(make_payload(tmp_path / "data", f"t{i}.bin", 40_000, seed=i), piece_length=16 * 1024)
        for i in range(30)
    ]
    settings = config.testing_settings().replace(seed_ratio=None)
    async with asyncio.timeout(30), Session(settings) as s:
        torrents = [await s.add_torrent(m, tmp_path / "data") for m in metas]
        for t in torrents:
            await t.wait_checked()
        assert all(t.statistics().state == "seeding" for t in torrents)
        data_dir = str(tmp_path / "data")

        def open_files() -> list[str]:
            return [p for p in _fd_paths() if p.startswith(data_dir)]

        # Resume saves finish in the background; then neither payload nor journal
        # descriptors stay open.
        await wait_until(lambda: open_files() == [], what=f"no open file under {data_dir}")
        diskio_threads = [t for t in threading.enumerate() if t.name.startswith("diskio")]
        assert len(diskio_threads) <= max(8, 2 * (os.cpu_count() or 1) + 2)  # one shared pool


def _fd_paths() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
    return out


async def test_a_shared_disk_pool_outlives_the_diskio_that_used_it(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tests.disk_helpers import make_torrent as make_fixture
    from torrent.disk.diskio import DiskIO
    from torrent.disk.storage import FileStorage

    fx = make_fixture([("a.bin", 40_000)], piece_length=16 * 1024)
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        for _ in range(2):
            async with DiskIO(FileStorage(fx.info, tmp_path), executor=pool) as disk:
                await disk.write_piece(0, fx.piece(0))
                assert await disk.hash_piece(0)
        assert pool.submit(lambda: 42).result() == 42  # not shut down by either DiskIO
    finally:
        pool.shutdown()


@pytest.mark.parametrize("direct", [True, False])
async def test_the_direct_writes_setting_reaches_each_torrents_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    from torrent.disk import storage

    made: list[storage.FileStorage] = []

    class Recorded(storage.FileStorage):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            made.append(self)

    monkeypatch.setattr(storage, "FileStorage", Recorded)
    meta = make_torrent(make_payload(tmp_path / "data", "a.bin", 40_000, seed=1), piece_length=16 * 1024)
    settings = config.testing_settings().replace(direct_writes=direct)
    async with asyncio.timeout(30), Session(settings) as s:
        torrent = await s.add_torrent(meta, tmp_path / "data")
        await torrent.wait_checked()
    assert len(made) == 1
    assert made[0].direct_writes is (direct and hasattr(os, "O_DIRECT"))


async def test_a_torrent_stopped_while_its_start_waits_ends_without_hashing(tmp_path: Path) -> None:
    """A start-up that waits on a check of the same data (``after``) and is stopped
    meanwhile ends when that check does, without hashing the data itself."""
    content = make_payload(tmp_path / "data", "big.bin", 2_000_000)
    meta = make_torrent(content, piece_length=16 * 1024)
    async with asyncio.timeout(30), Session(config.testing_settings()) as s:
        check: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        t = s.add_torrent_nowait(meta, tmp_path / "data", after=check)
        t.stop_nowait()
        check.cancel()  # the check was cancelled: the torrent is being removed
        await t.stop()
        assert t.state is TorrentState.STOPPED
        assert t.brief().done_bytes == 0, "it hashed the data after it was stopped"
