"""Session edges: unknown info hashes, unreachable trackers, the download rate limit."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from cli.cmd_download import watch
from cli.progress import QuietView
from tests.integration.swarm_helpers import free_port, make_payload, make_torrent
from tests.polling import wait_until
from torrent import config
from torrent.engine.clock import ManualClock
from torrent.engine.session import Session
from torrent.proto import wire
from torrent.types import InfoHash, PeerId


async def test_incoming_connection_for_an_unknown_torrent_is_dropped(tmp_path: Path) -> None:
    async with asyncio.timeout(10), Session(config.testing_settings()) as s:
        r, w = await asyncio.open_connection("127.0.0.1", s.port)
        w.write(wire.encode_handshake(InfoHash(b"\x01" * 20), PeerId(b"-XX0001-" + b"x" * 12)))
        await w.drain()
        assert await r.read(1000) == b""  # closed without a handshake back
        w.close()


async def test_unreachable_tracker_fails_with_a_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What ``pytorrent download --timeout 2`` runs, on a clock the test moves: no 2 s wait.
    content = make_payload(tmp_path, "x.bin", 50_000)
    meta = make_torrent(content, trackers=[f"http://127.0.0.1:{free_port()}/announce"])
    clock = ManualClock()
    async with asyncio.timeout(10), Session(config.testing_settings(), clock=clock) as s:
        t = await s.add_torrent(meta, tmp_path / "out", seed=False)
        await t.wait_checked()
        await wait_until(lambda: t.statistics().tracker_message, what="the announce to be refused")
        watching = asyncio.ensure_future(watch(s, [t], QuietView(), stall_timeout_s=2, wait_seeding=False))
        while not watching.done():
            clock.advance(0.5)
            await asyncio.sleep(0.05)
        assert watching.result() == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "no peers reachable within 2 s" in lines[0], lines
    assert "tracker:" in lines[0], lines


async def test_download_rate_limit_is_respected(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "x.bin", 1_200_000)
    meta = make_torrent(content, piece_length=64 * 1024)
    async with asyncio.timeout(30):
        limited = config.testing_settings().replace(max_download_bps=400_000)
        async with Session(config.testing_settings()) as seed_s, Session(limited) as leech_s:
            seed = await seed_s.add_torrent(meta, tmp_path / "seed")
            await seed.wait_checked()
            t0 = time.monotonic()
            leech = await leech_s.add_torrent(
                meta, tmp_path / "out", seed=False, peers=[("127.0.0.1", seed_s.port)]
            )
            await leech.wait_complete()
            took = time.monotonic() - t0
    # 1.2 MB at 400 kB/s is 3 s; less the burst allowance (0.5 s of rate) and the last read
    # (up to 256 KiB arrive before the limiter can pause the socket): at least ~1.9 s.
    # Unlimited, the same transfer takes about 0.1 s.
    assert took > 1.5, took
