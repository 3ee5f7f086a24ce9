"""``pytorrent download`` as a process: Ctrl-C, kill -9 and restart, a full disk.

The seed runs in the test's event loop (our ``Session``, upload rate-limited so the
download takes a few seconds); the leecher is ``python -m cli.main download`` with
``--peer`` pointing at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.swarm_helpers import make_payload, make_torrent
from tests.polling import wait_until
from torrent import config
from torrent.disk.resume import ResumeStore
from torrent.disk.storage import FileStorage
from torrent.engine.session import Session, Torrent
from torrent.proto.metainfo import Metainfo

ROOT = Path(__file__).resolve().parents[2]
PLEN = 64 * 1024


@contextlib.asynccontextmanager
async def slow_seed(
    tmp_path: Path, size: int, rate_bps: int
) -> AsyncIterator[tuple[Metainfo, Torrent, int, Path]]:
    content = make_payload(tmp_path / "seed", "payload.bin", size, seed=7)
    meta = make_torrent(content, piece_length=PLEN)
    (tmp_path / "t.torrent").write_bytes(meta.to_bytes())
    async with Session(config.testing_settings().replace(max_upload_bps=rate_bps)) as s:
        t = await s.add_torrent(meta, tmp_path / "seed")
        await t.wait_checked()
        yield meta, t, s.port, content


async def leecher(tmp_path: Path, port: int, *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "download", "--no-dht", "--no-lsd", "--no-port-mapping", str(tmp_path / "t.torrent"),
        "-o", str(tmp_path / "out"), "--port", "0", "--bind", "127.0.0.1",
        "--peer", f"127.0.0.1:{port}", "--timeout", "60", *extra,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        # A suite started in the background inherits SIGINT ignored; Ctrl-C reaches a
        # foreground process, so give the leecher the default disposition back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


async def wait_uploaded(seed: Torrent, at_least: int) -> None:
    await wait_until(
        lambda: seed.statistics().uploaded_bytes >= at_least, timeout_s=60, interval_s=0.05, what="the upload"
    )


def verified_on_disk(meta: Metainfo, out: Path) -> set[int]:
    """Pieces of ``out`` whose bytes match their hash."""
    data = (out / meta.info.name).read_bytes() if (out / meta.info.name).exists() else b""
    good = set()
    for i in range(meta.info.num_pieces):
        chunk = data[i * PLEN : (i + 1) * PLEN]
        if hashlib.sha1(chunk).digest() == meta.info.piece_hash(i):
            good.add(i)
    return good


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_interrupt_exits_130_and_saves_resume_state(tmp_path: Path, signum: int) -> None:
    async with asyncio.timeout(60), slow_seed(tmp_path, 2_000_000, 400_000) as (meta, seed, port, _):
        proc = await leecher(tmp_path, port, "--quiet")
        await wait_uploaded(seed, 600_000)
        proc.send_signal(signum)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        _, err = await proc.communicate()
        took = loop.time() - t0
    assert proc.returncode == 130, err.decode()
    assert took < 6, took
    state, why = ResumeStore(meta.info, meta.info_hash, tmp_path / "out").load()
    assert state is not None, why
    assert state.clean_shutdown
    assert state.verified, "pieces verified before Ctrl-C are in the state"
    assert state.verified <= verified_on_disk(meta, tmp_path / "out")


async def test_kill_9_then_restart_completes_without_refetching_verified_pieces(tmp_path: Path) -> None:
    size = 3_000_000
    async with asyncio.timeout(90), slow_seed(tmp_path, size, 600_000) as (meta, seed, port, content):
        proc = await leecher(tmp_path, port, "--quiet")
        await wait_uploaded(seed, int(size * random.uniform(0.3, 0.7)))
        proc.kill()
        await proc.wait()
        # What a restart will trust without hashing: never fetched again.
        storage = FileStorage(meta.info, tmp_path / "out", info_hash=meta.info_hash)
        plan = ResumeStore(meta.info, meta.info_hash, tmp_path / "out").plan(storage)
        storage.close()
        assert not plan.full_recheck

        proc = await leecher(tmp_path, port, "--json", "--no-seed")
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    events = [json.loads(line) for line in out.decode().splitlines()]
    checked = next(e for e in events if e["event"] == "checked")
    have, _total = map(int, re.search(r"(\d+)/(\d+) pieces verified", checked["message"]).groups())  # type: ignore[union-attr]
    assert have >= len(plan.verified)
    assert have > 0
    downloaded = [e for e in events if e["event"] == "progress"][-1]["downloaded_bytes"]
    missing = size - have * PLEN
    # Only the pieces not verified at the restart were fetched (plus a block or two of
    # endgame duplicates at most).
    assert missing <= downloaded <= missing + 2 * PLEN, (downloaded, missing)
    assert (tmp_path / "out" / "payload.bin").read_bytes() == content.read_bytes()


def _can_mount_tmpfs() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    return r.returncode == 0


async def test_full_disk_fails_with_a_clear_message_and_intact_resume_state(tmp_path: Path) -> None:
    if not _can_mount_tmpfs():
        pytest.skip("needs root to mount a small tmpfs in a private mount namespace")
    out = tmp_path / "out"
    out.mkdir()
    async with asyncio.timeout(60), slow_seed(tmp_path, 3_000_000, 0) as (meta, _seed, port, _):
        # A 1 MiB tmpfs over the download directory, in a mount namespace of its own.
        script = (
            f"mount -t tmpfs -o size=1m tmpfs {out} && {sys.executable} -m cli.main download --no-dht --no-lsd --no-port-mapping "
            f"{tmp_path / 't.torrent'} -o {out} --port 0 --bind 127.0.0.1 --peer 127.0.0.1:{port} "
            "--no-seed --quiet --timeout 30; "
        )
        proc = await asyncio.create_subprocess_exec(
            "unshare", "--mount", "--", "sh", "-c", script + f"echo rc=$? ; cp -r {out} {tmp_path}/copy",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, err = await proc.communicate()
    text = err.decode()
    assert "rc=1" in stdout.decode(), (stdout, text)
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "no space left on device" in lines[0], text
    # The state saved before the failure is readable and claims nothing it does not have.
    state, why = ResumeStore(meta.info, meta.info_hash, tmp_path / "copy").load()
    assert state is not None, why
    assert state.verified <= verified_on_disk(meta, tmp_path / "copy")
