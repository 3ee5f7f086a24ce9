"""Every way a download stops prints its own one-line message and nothing else.

A stop races with the peers: blocks keep arriving while the swarm shuts down, and a
late one can complete a piece after the swarm's task group began to abort. Each path
runs ``RUNS`` times against a seed that uploads at full speed (no rate limit), and the
stderr of the stopping process must hold exactly the path's own message: no traceback,
no "coroutine ... was never awaited", no "Task exception was never retrieved", no
"Exception ignored".

Paths: a full disk (ENOSPC), SIGINT and SIGTERM on ``pytorrent download``, the seed
time limit reached, ``Torrent.stop()`` and leaving the ``Session``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.disk_helpers import can_mount, tmpfs
from tests.integration.swarm_helpers import make_payload, make_torrent
from tests.polling import wait_until
from torrent import config
from torrent.engine.session import Session, Torrent

ROOT = Path(__file__).resolve().parents[2]
PLEN = 256 * 1024
#: Runs per path.
RUNS = 20
#: Big enough that a transfer lasts a while at loopback speed (the signals land mid-way).
BIG = 48 * 1024 * 1024
#: What the seed-limit path downloads whole.
SMALL = 2 * 1024 * 1024

pytestmark = pytest.mark.slow

#: Lines that betray an unclean stop, whatever else is printed.
NOISE = ("Traceback", "never awaited", "never retrieved", "Exception ignored")


def assert_only(stderr: bytes, expected: str | None, run: int) -> None:
    text = stderr.decode(errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    if expected is None:
        assert not lines, f"run {run}: {text}"
    else:
        assert len(lines) == 1, f"run {run}: {text}"
        assert expected in lines[0], f"run {run}: {text}"
    for word in NOISE:
        assert word not in text, f"run {run}: {text}"


@contextlib.asynccontextmanager
async def full_speed_seed(tmp_path: Path, size: int) -> AsyncIterator[tuple[Path, Torrent, int]]:
    content = make_payload(tmp_path / "seed", "payload.bin", size, seed=11)
    meta = make_torrent(content, piece_length=PLEN)
    torrent_file = tmp_path / "t.torrent"
    torrent_file.write_bytes(meta.to_bytes())
    async with Session(config.testing_settings()) as s:
        t = await s.add_torrent(meta, tmp_path / "seed")
        await t.wait_checked()
        yield torrent_file, t, s.port


def download_args(torrent_file: Path, out: Path, port: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "cli.main", "download", "--no-dht", "--no-lsd", "--no-port-mapping", str(torrent_file), "-o", str(out),
        "--port", "0", "--bind", "127.0.0.1", "--peer", f"127.0.0.1:{port}", "--timeout", "30", *extra,
    ]  # fmt: skip


def default_sigint() -> None:
    """In the child: a suite started in the background by a shell inherits SIGINT
    ignored, and so would the leecher; Ctrl-C reaches a foreground process."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def wait_uploaded(seed: Torrent, at_least: int, proc: asyncio.subprocess.Process) -> None:
    await wait_until(
        lambda: seed.statistics().uploaded_bytes >= at_least or proc.returncode is not None,
        timeout_s=120,
        interval_s=0.005,
        what=f"{at_least} bytes uploaded",
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_signal_mid_transfer_prints_only_interrupted(tmp_path: Path, signum: int) -> None:
    async with asyncio.timeout(240), full_speed_seed(tmp_path, BIG) as (torrent_file, seed, port):
        mid_transfer = 0
        for run in range(RUNS):
            before = seed.statistics().uploaded_bytes
            proc = await asyncio.create_subprocess_exec(
                *download_args(torrent_file, tmp_path / f"out{run}", port, "--quiet"),
                cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                preexec_fn=default_sigint,
            )  # fmt: skip
            await wait_uploaded(seed, before + 4 * PLEN, proc)
            if proc.returncode is None:
                mid_transfer += 1
                proc.send_signal(signum)
            _, err = await proc.communicate()
            assert proc.returncode == 130, f"run {run}: {err.decode()}"
            assert_only(err, "pytorrent: interrupted", run)
    assert mid_transfer >= RUNS // 2, mid_transfer


async def test_a_full_disk_prints_only_the_disk_error(tmp_path: Path) -> None:
    if not can_mount():
        pytest.skip("needs root to mount a small tmpfs")
    async with asyncio.timeout(240), full_speed_seed(tmp_path, BIG // 4) as (torrent_file, _seed, port):
        for run in range(RUNS):
            with tmpfs("1m") as out:
                proc = await asyncio.create_subprocess_exec(
                    *download_args(torrent_file, Path(out), port, "--quiet", "--no-seed"),
                    cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                )  # fmt: skip
                _, err = await proc.communicate()
            assert proc.returncode == 1, f"run {run}: {err.decode()}"
            assert_only(err, "no space left on device", run)


async def test_reaching_the_seed_limit_prints_nothing(tmp_path: Path) -> None:
    async with asyncio.timeout(240), full_speed_seed(tmp_path, SMALL) as (torrent_file, _seed, port):
        for run in range(RUNS):
            proc = await asyncio.create_subprocess_exec(
                *download_args(torrent_file, tmp_path / f"out{run}", port, "--quiet", "--seed-time", "0"),
                cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _, err = await proc.communicate()
            assert proc.returncode == 0, f"run {run}: {err.decode()}"
            assert_only(err, None, run)


#: Runs in a fresh interpreter (its stderr is what the test reads): RUNS downloads, each
#: stopped mid-transfer by ``Torrent.stop()`` or by leaving the session.
_LIBRARY_STOP = """
import asyncio, gc, sys
from pathlib import Path
from torrent import config
from torrent.disk.torrent_file import read_metainfo
from torrent.engine.session import Session

torrent_file, out, port, runs, how = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
meta = read_metainfo(torrent_file)

async def once(run):
    async with Session(config.testing_settings()) as s:
        t = await s.add_torrent(meta, out / str(run), seed=False, peers=[("127.0.0.1", port)])
        async with asyncio.timeout(30):
            while t.statistics().downloaded_bytes < 4 * meta.info.piece_length:
                await asyncio.sleep(0.002)
        mid = not t.statistics().state in ("seeding", "finished")
        if how == "stop":
            await t.stop()
    gc.collect()
    return mid

async def main():
    mid = 0
    for run in range(runs):
        mid += await once(run)
    print(mid)

asyncio.run(main())
"""


@pytest.mark.parametrize("how", ["stop", "exit"], ids=["Torrent.stop", "session-exit"])
async def test_stopping_through_the_library_prints_nothing(tmp_path: Path, how: str) -> None:
    async with asyncio.timeout(240), full_speed_seed(tmp_path, BIG) as (torrent_file, _seed, port):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _LIBRARY_STOP, str(torrent_file), str(tmp_path / "out"),
            str(port), str(RUNS), how,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert_only(err, None, RUNS)
    assert int(out) >= RUNS // 2, out
