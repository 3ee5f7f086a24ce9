"""kill -9 at random moments while pieces are written, hashed and saved; then restart.

A child process downloads from an in-memory payload (some pieces first arrive
corrupted and fail their hash), saving resume state every few pieces and printing each
saved bitfield. The parent kills it with SIGKILL at a random moment, then checks the
restart plan: every piece the child had saved as verified is kept, and every piece the
restart counts as verified is intact on disk. After a few rounds the child finishes and
the files are byte-identical.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.disk_helpers import make_torrent
from torrent.disk.diskio import DiskIO
from torrent.disk.resume import ResumeStore
from torrent.disk.storage import FileStorage
from torrent.proto.pieceset import PieceSet

ROOT = Path(__file__).resolve().parents[2]
LAYOUT = [("a", 300_000), ("pad", 27_680, True), ("d/b", 200_000), ("empty", 0), ("d/c", 500_000)]
PLEN = 16 * 1024

CHILD = """
import asyncio, random, sys
from tests.disk_helpers import make_torrent
from tests.integration.test_resume_crash import LAYOUT, PLEN
from torrent.disk.diskio import DiskIO
from torrent.disk.resume import ResumeStore, start
from torrent.proto.pieceset import PieceSet
from torrent.disk.storage import FileStorage

where, seed = sys.argv[1], int(sys.argv[2])
fx = make_torrent(LAYOUT, PLEN)
n = fx.info.num_pieces

async def main():
    storage = FileStorage(fx.info, where, info_hash=fx.info_hash)
    store = ResumeStore(fx.info, fx.info_hash, where)
    async with DiskIO(storage, journal=store, max_queued=8) as disk:
        verified, plan = await start(store, disk)
        print("START", PieceSet.from_indexes(verified, n).to_bytes().hex(), flush=True)
        rng = random.Random(seed)
        todo = [p for p in range(n) if p not in verified]
        rng.shuffle(todo)
        for i, p in enumerate(todo):
            data = bytearray(fx.piece(p))
            # Offsets of this piece that are real file bytes (writes to padding are dropped).
            real, at = [], 0
            for fi, _, ln in storage.spans(p, 0, len(data)):
                if not fx.info.files[fi].padding:
                    real.extend((at, at + ln - 1))
                at += ln
            if real and rng.random() < 0.25:  # a bad peer's copy first
                bad = bytearray(data)
                bad[rng.choice(real)] ^= 0xFF
                await asyncio.gather(*(disk.write(p, o, bad[o:o + 4096]) for o in range(0, len(bad), 4096)))
                assert not await disk.hash_piece(p)
            if rng.random() < 0.5:
                blocks = list(range(0, len(data), 4096))
                rng.shuffle(blocks)
                await asyncio.gather(*(disk.write(p, o, data[o:o + 4096]) for o in blocks))
                if await disk.hash_piece(p):
                    verified.add(p)
            elif await disk.write_piece(p, bytes(data)):
                verified.add(p)
            await asyncio.sleep(0.02)
            if i % 5 == 4:
                await store.save(storage, verified, flush=disk.flush)
                print("SAVED", PieceSet.from_indexes(verified, n).to_bytes().hex(), flush=True)
        await store.save(storage, verified, clean=True, flush=disk.flush)
        print("DONE", flush=True)

asyncio.run(main())
"""


def run_child(where: Path, seed: int, kill_after_s: float | None) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(where), str(seed)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if kill_after_s is not None:
            try:
                proc.wait(timeout=kill_after_s)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if kill_after_s is None or proc.returncode != -signal.SIGKILL:
        assert proc.returncode == 0, err
    # A line cut by the kill has no newline; ignore it.
    return [line for line in out.splitlines(keepends=True) if line.endswith("\n")]


def last_saved(lines: list[str], n: int) -> set[int]:
    saved: set[int] = set()
    for line in lines:
        kind, _, rest = line.strip().partition(" ")
        if kind in ("SAVED", "START"):
            saved = set(PieceSet.from_bytes(bytes.fromhex(rest), n))
    return saved


def intact_pieces(fx, where: Path, pieces) -> set[int]:
    storage = FileStorage(fx.info, where, info_hash=fx.info_hash)
    try:
        good = set()
        for p in pieces:
            try:
                if hashlib.sha1(storage.read_piece(p)).digest() == fx.info.piece_hash(p):
                    good.add(p)
            except Exception:
                pass
        return good
    finally:
        storage.close()


def test_kill_9_at_random_moments_keeps_every_saved_piece_and_counts_nothing_unverified(
    tmp_path: Path,
) -> None:
    fx = make_torrent(LAYOUT, PLEN)
    n = fx.info.num_pieces
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    print("seed", seed)
    rng = random.Random(seed)
    kept_total = 0
    deadline = time.monotonic() + 60
    for round_no in range(6):
        assert time.monotonic() < deadline
        lines = run_child(tmp_path, seed + round_no, kill_after_s=rng.uniform(0.3, 1.2))
        saved = last_saved(lines, n)
        storage = FileStorage(fx.info, tmp_path, info_hash=fx.info_hash)
        store = ResumeStore(fx.info, fx.info_hash, tmp_path)
        plan = store.plan(storage)
        # Never count what is not intact; keep everything that was verified and saved.
        assert plan.verified <= intact_pieces(fx, tmp_path, plan.verified), plan.reason
        assert saved <= plan.verified, f"verified and saved pieces lost ({plan.reason})"
        kept_total += len(plan.verified)

        async def recheck(storage=storage, plan=plan) -> set[int]:
            async with asyncio.timeout(30), DiskIO(storage) as disk:
                return await disk.check(plan.recheck)

        found = asyncio.run(recheck())
        assert found == intact_pieces(fx, tmp_path, plan.recheck), "recheck finds exactly the good pieces"
    lines = run_child(tmp_path, seed + 99, kill_after_s=None)
    assert lines[-1] == "DONE\n"
    storage = FileStorage(fx.info, tmp_path, info_hash=fx.info_hash)
    plan = ResumeStore(fx.info, fx.info_hash, tmp_path).plan(storage)
    assert plan.reason == "clean resume: no recheck"
    assert plan.verified == frozenset(range(n))
    for i, f in enumerate(fx.info.files):
        if not f.padding:
            assert (tmp_path / "t" / f.path_str).read_bytes() == fx.file_bytes(i)
    assert kept_total > 0, "some round was killed after saving progress"
