"""Peak memory of our leecher: a whole 1 GiB download, and the first minutes of a 100 GiB one.

Usage (as root, the script re-runs itself in a loopback-only network namespace):

    python bench/memory.py [--small-mib 1024] [--large-gib 100] [--seconds 90]

A libtorrent seed (in this process, TCP only, discovery off, ``seed_mode``) serves a
sparse file of zeros, so a 100 GiB payload costs no disk at the seed; every piece of
zeros has the same SHA-1, so the torrent is made without reading anything. Piece
lengths are what ``pytorrent create`` picks for the size (1 MiB for 1 GiB, 4 MiB for
100 GiB). Our leecher (``pytorrent download --no-seed --peer ...``, a process of its
own) downloads the small torrent to the end, and the large one for ``--seconds`` of
transfer (steady state: every table sized, the pipelines full) before a SIGINT; its
peak RSS is its ``VmHWM``. What it wrote is deleted afterwards.

Targets: 1 GiB at most 64 MiB; 100 GiB at most 16 MiB above the 1 GiB figure.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.transfer import (  # noqa: E402
    compile_bytecode,
    encryption_modes,
    free_port,
    lt_add,
    lt_session,
    reap,
    reexec_isolated,
    spawn,
    stop,
    vm_hwm_kib,
)
from torrent.create import auto_piece_length  # noqa: E402
from torrent.proto import bencoding  # noqa: E402

SMALL_TARGET_MIB = 64.0
LARGE_MARGIN_MIB = 16.0


def zero_torrent(path: Path, size: int) -> tuple[bytes, int]:
    """A sparse file of ``size`` zero bytes at ``path`` and the .torrent for it."""
    piece_length = auto_piece_length(size)
    with open(path, "wb") as f:
        f.truncate(size)
    full, last = divmod(size, piece_length)
    zero = hashlib.sha1(bytes(piece_length)).digest()
    pieces = zero * full + (hashlib.sha1(bytes(last)).digest() if last else b"")
    info = {b"length": size, b"name": path.name.encode(), b"piece length": piece_length, b"pieces": pieces}
    return bencoding.encode({b"info": info, b"created by": b"bench/memory.py"}), piece_length


async def leech(work: Path, name: str, size: int, seconds: float | None) -> tuple[float, int, float]:
    """Download ``name`` from a libtorrent seed; returns (peak RSS MiB, bytes, transfer s)."""
    data_dir, out = work / f"data-{name}", work / f"out-{name}"
    data_dir.mkdir()
    out.mkdir()
    torrent = work / f"{name}.torrent"
    meta, _ = zero_torrent(data_dir / name, size)
    torrent.write_bytes(meta)
    port = free_port()
    ses = lt_session(port)
    lt_add(ses, torrent, data_dir, seed=True)
    await asyncio.sleep(0.2)
    log = work / f"{name}.log"
    args = [
        "download",
        "--no-dht",
        "--no-lsd",
        "--no-port-mapping",
        "--no-seed",
        "--json",
        "--encryption",
        "off",
    ]
    args += [str(torrent), "-o", str(out), "--port", str(free_port()), "--peer", f"127.0.0.1:{port}"]
    proc = spawn(args, log)
    started = time.monotonic()
    try:
        if seconds is None:
            await reap(proc)
        else:
            hwm = 0
            while time.monotonic() - started < seconds and proc.popen.poll() is None:
                hwm = max(hwm, vm_hwm_kib(proc.popen.pid))
                await asyncio.sleep(0.05)
            hwm = max(hwm, vm_hwm_kib(proc.popen.pid))
            await stop(proc)
            proc.max_rss_mib = max(proc.max_rss_mib, hwm / 1024)
        took = time.monotonic() - started
        done = 0
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                ev = json.loads(line)
                done = max(done, int(ev.get("done_bytes") or 0))
        if seconds is None:
            done = size
        return proc.max_rss_mib, done, took
    finally:
        del ses
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)


async def main_async(args: argparse.Namespace) -> int:
    small, large = args.small_mib << 20, args.large_gib << 30
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(tmp)
        small_rss, _, small_s = await leech(work, "small.bin", small, None)
        print(
            f"{args.small_mib} MiB ({auto_piece_length(small) >> 10} KiB pieces), whole download in "
            f"{small_s:.1f} s: peak RSS {small_rss:.0f} MiB (target <= {SMALL_TARGET_MIB:.0f})",
            flush=True,
        )
        large_rss, done, large_s = await leech(work, "large.bin", large, args.seconds)
        got = f"{done / 1e9:.1f} GB" if done else "progress not reported"
        print(
            f"{args.large_gib} GiB ({auto_piece_length(large) >> 10} KiB pieces), first {large_s:.0f} s "
            f"({got}): peak RSS {large_rss:.0f} MiB, {large_rss - small_rss:+.0f} MiB over the small one "
            f"(target <= +{LARGE_MARGIN_MIB:.0f})"
        )
    met = small_rss <= SMALL_TARGET_MIB and large_rss - small_rss <= LARGE_MARGIN_MIB
    print("targets met" if met else "a target is MISSED")
    return 0 if met else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small-mib", type=int, default=1024)
    parser.add_argument("--large-gib", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=90.0, help="transfer time of the large torrent")
    args = parser.parse_args()
    reexec_isolated()
    compile_bytecode()
    encryption_modes()
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
