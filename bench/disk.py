"""Disk write+hash throughput of torrent.disk.diskio on a 1 GiB single-file torrent.

Run from the repository root: ``python bench/disk.py [--size-mib 1024] [--piece-kib 256] [--runs 3]``.

Modes, each on a fresh file in a temporary directory (same process run):

* ``reference``: one thread, ``sha1(piece)`` then ``os.pwrite`` per piece (what a
  plain synchronous client would do);
* ``write_piece``: ``DiskIO.write_piece`` (hash in memory, then write), 8 pieces in
  flight, as an engine that assembles pieces in memory does;
* ``blocks+hash``: 16 KiB ``DiskIO.write`` per block, then ``DiskIO.hash_piece``
  (hash read back from the page cache), 8 pieces in flight;
* ``check``: full recheck of the written file with ``DiskIO.check`` (page cache warm);
* ``read (upload)``: every block served by 16 KiB ``DiskIO.read`` calls (8 pieces at a
  time), through the whole-piece read cache.

Figures are MB/s (10^6 bytes per second) of payload, without and with the final
``fsync``, and CPU seconds per GiB (all threads); ratios are against ``reference``.
On a shared machine the CPU column is the steadier figure. The page cache absorbs the 16 KiB writes
of ``blocks+hash``, so its "no fsync" column is what such a client sees while it runs; the whole
pieces of ``write_piece`` go out with ``O_DIRECT`` (through the bounce buffer: these pieces are
``bytes``, not ``piece_buffer`` memory; see ``torrent.disk.storage``, rule 9).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from torrent.disk.diskio import DiskIO
from torrent.disk.storage import FileStorage
from torrent.proto.metainfo import FileEntry, Info
from torrent.types import BLOCK_SIZE

DISTINCT = 64  # distinct piece contents, reused round-robin so building the torrent is cheap


def _cpu_s() -> float:
    """CPU seconds of this process, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def build(size: int, plen: int) -> tuple[Info, list[bytes]]:
    rng = random.Random(1)
    bodies = [rng.randbytes(plen) for _ in range(DISTINCT)]
    n = (size + plen - 1) // plen
    hashes = [hashlib.sha1(b).digest() for b in bodies]
    last = size - (n - 1) * plen
    pieces = (
        b"".join(hashes[i % DISTINCT] for i in range(n - 1))
        + hashlib.sha1(bodies[(n - 1) % DISTINCT][:last]).digest()
    )
    info = Info(
        name="bench.bin",
        piece_length=plen,
        pieces=pieces,
        files=(FileEntry(("bench.bin",), size, 0),),
        multi_file=False,
    )
    return info, bodies


def piece_data(info: Info, bodies: list[bytes], p: int) -> bytes:
    body = bodies[p % DISTINCT]
    return body if info.piece_size(p) == len(body) else body[: info.piece_size(p)]


def reference(info: Info, bodies: list[bytes], where: str) -> tuple[float, float]:
    path = os.path.join(where, info.name)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(fd, info.total_length)
    for p in range(info.num_pieces):
        data = piece_data(info, bodies, p)
        assert hashlib.sha1(data).digest() == info.piece_hash(p)
        os.pwrite(fd, data, p * info.piece_length)
    t1 = time.perf_counter()
    os.fsync(fd)
    os.close(fd)
    return t1 - t0, time.perf_counter() - t0


async def run_disk(
    info: Info, bodies: list[bytes], where: str, mode: str, inflight: int = 8
) -> tuple[float, float]:
    storage = FileStorage(info, where)
    async with DiskIO(storage, max_queued=64) as disk:
        t0 = time.perf_counter()
        await disk.allocate()
        todo = iter(range(info.num_pieces))

        async def worker() -> None:
            for p in todo:
                data = piece_data(info, bodies, p)
                if mode == "write_piece":
                    ok = await disk.write_piece(p, data)
                else:
                    view = memoryview(data)
                    await asyncio.gather(
                        *(disk.write(p, o, view[o : o + BLOCK_SIZE]) for o in range(0, len(data), BLOCK_SIZE))
                    )
                    ok = await disk.hash_piece(p)
                assert ok, p

        async with asyncio.TaskGroup() as tg:
            for _ in range(inflight):
                tg.create_task(worker())
        t1 = time.perf_counter()
        await disk.flush()
        return t1 - t0, time.perf_counter() - t0


async def run_reads(info: Info, where: str, inflight: int = 8) -> float:
    """Serve every block as uploads do: 16 KiB ``DiskIO.read`` calls through the cache."""
    async with DiskIO(FileStorage(info, where)) as disk:
        t0 = time.perf_counter()
        todo = iter(range(info.num_pieces))

        async def worker() -> None:
            for p in todo:
                for o in range(0, info.piece_size(p), BLOCK_SIZE):
                    await disk.read(p, o, min(BLOCK_SIZE, info.piece_size(p) - o))

        async with asyncio.TaskGroup() as tg:
            for _ in range(inflight):
                tg.create_task(worker())
        return time.perf_counter() - t0


async def run_check(info: Info, where: str) -> float:
    async with DiskIO(FileStorage(info, where)) as disk:
        t0 = time.perf_counter()
        good = await disk.check()
        assert len(good) == info.num_pieces
        return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--piece-kib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3, help="runs per mode; medians are printed")
    ap.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    args = ap.parse_args()
    size = args.size_mib * 1024 * 1024
    info, bodies = build(size, args.piece_kib * 1024)
    mb = size / 1e6
    print(f"{args.size_mib} MiB, {info.num_pieces} pieces of {args.piece_kib} KiB, {os.cpu_count()} cores")
    modes = ("reference", "write_piece", "blocks+hash")
    rates: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    checks: list[float] = []
    reads: list[float] = []
    for _ in range(args.runs):  # modes interleaved, so a busy moment hits them alike
        for mode in modes:
            where = tempfile.mkdtemp(prefix="pytorrent-bench-", dir=args.dir)
            cpu0 = _cpu_s()
            try:
                if mode == "reference":
                    no_sync, synced = reference(info, bodies, where)
                else:
                    no_sync, synced = asyncio.run(run_disk(info, bodies, where, mode))
                cpu[mode].append((_cpu_s() - cpu0) / (size / 2**30))
                if mode == "write_piece":
                    checks.append(mb / asyncio.run(run_check(info, where)))
                    reads.append(mb / asyncio.run(run_reads(info, where)))
                rates[mode].append((mb / no_sync, mb / synced))
            finally:
                shutil.rmtree(where, ignore_errors=True)
    ref = statistics.median(r for r, _ in rates["reference"])
    print(f"median of {args.runs} runs; machine shared with other work")
    print(f"{'mode':<14}{'MB/s':>10}{'x ref':>8}{'MB/s fsync':>13}{'CPU s/GiB':>11}")
    for mode in modes:
        rate = statistics.median(r for r, _ in rates[mode])
        rate_sync = statistics.median(r for _, r in rates[mode])
        cpu_s = statistics.median(cpu[mode])
        print(f"{mode:<14}{rate:>10.0f}{rate / ref:>8.2f}{rate_sync:>13.0f}{cpu_s:>11.2f}")
    check = statistics.median(checks)
    print(f"{'check':<14}{check:>10.0f}{check / ref:>8.2f}{'':>13}")
    read = statistics.median(reads)
    print(f"{'read (upload)':<14}{read:>10.0f}{read / ref:>8.2f}{'':>13}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
