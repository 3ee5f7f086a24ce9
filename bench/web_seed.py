"""Web seed throughput on loopback: one file (1 GiB by default) from Debian's nginx, no peers.

Usage (as root, the script re-runs itself in a loopback-only network namespace):

    python bench/web_seed.py [--size-mib 1024] [--runs 3] [--piece-kib 1024]

Side by side in one run, each fetching the same file from the same nginx:

  curl        ``curl -o FILE URL``: plain HTTP, the ceiling
  libtorrent  a torrent whose ``url-list`` is the nginx URL (libtorrent in process,
              DHT/LSD/UPnP/NAT-PMP off), timed from add to every piece verified
  ours        ``python -m cli.main download --no-seed --json`` on the same torrent,
              timed from its ``checked`` to its ``completed`` JSON event (process
              start-up excluded); CPU seconds from ``wait4`` (start-up included)

Prints MB/s per client (median and every run). MB = 10^6 bytes. The payload sits in the
page cache (nginx serves it from memory), downloads go to a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.transfer import reexec_isolated  # noqa: E402
from tests.integration.web_seed_helpers import nginx  # noqa: E402
from torrent.proto import bencoding  # noqa: E402

TIMEOUT_S = 600.0


def make_payload(path: Path, size: int, piece_length: int, url: str) -> bytes:
    """Random content; returns the .torrent bytes with ``url`` as its web seed."""
    pieces = []
    with open(path, "wb") as f:
        left = size
        while left:
            data = os.urandom(min(piece_length, left))
            f.write(data)
            pieces.append(hashlib.sha1(data).digest())
            left -= len(data)
    info = {
        b"length": size,
        b"name": path.name.encode(),
        b"piece length": piece_length,
        b"pieces": b"".join(pieces),
    }
    return bencoding.encode({b"info": info, b"url-list": [url.encode()], b"created by": b"bench/web_seed.py"})


def run_curl(url: str, out: Path) -> float:
    t0 = time.monotonic()
    subprocess.run(["curl", "-sS", "-o", str(out), url], check=True, timeout=TIMEOUT_S)
    return time.monotonic() - t0


def run_libtorrent(torrent: Path, save: Path) -> float:
    import libtorrent as lt

    ses = lt.session(
        {
            "listen_interfaces": "127.0.0.1:0",
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "enable_outgoing_utp": False,
            "enable_incoming_utp": False,
            "alert_mask": 0,
        }
    )
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(str(torrent))
    atp.save_path = str(save)
    atp.flags &= ~lt.torrent_flags.auto_managed
    atp.flags &= ~lt.torrent_flags.paused
    atp.flags |= lt.torrent_flags.disable_pex | lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd
    t0 = time.monotonic()
    handle = ses.add_torrent(atp)
    deadline = t0 + TIMEOUT_S
    while not handle.status().is_seeding:
        if time.monotonic() > deadline:
            raise TimeoutError("libtorrent did not finish")
        time.sleep(0.005)
    elapsed = time.monotonic() - t0
    ses.remove_torrent(handle)
    del ses
    return elapsed


async def _run_ours(torrent: Path, save: Path, err: IO[bytes]) -> float:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "download", "--no-dht", "--no-lsd", "--no-port-mapping", str(torrent), "-o", str(save),
        "--no-seed", "--json",
        "--port", "0", "--bind", "127.0.0.1",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=err,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stdout is not None
    checked = completed = None
    async with asyncio.timeout(TIMEOUT_S):
        async for line in proc.stdout:
            if b'"event":"checked"' in line:
                checked = time.monotonic()
            elif b'"event":"completed"' in line:
                completed = time.monotonic()
        await proc.wait()
    if proc.returncode != 0 or checked is None or completed is None:
        raise RuntimeError(f"our download failed ({proc.returncode}); its stderr is in {err.name}")
    return completed - checked


def run_ours(torrent: Path, save: Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(save.parent / "ours.log", "wb") as err:
        elapsed = asyncio.run(_run_ours(torrent, save, err))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return elapsed, cpu


def same_file(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--piece-kib", type=int, default=1024)
    ap.add_argument("--only", default="curl,libtorrent,ours")
    args = ap.parse_args()
    reexec_isolated()
    size = args.size_mib << 20
    only = args.only.split(",")
    results: dict[str, list[float]] = {k: [] for k in only}
    cpu: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-webseed-") as tmp:
        top = Path(tmp)
        (top / "www").mkdir()
        with nginx(top / "www", top / "nginx") as base:
            url = base + "payload.bin"
            torrent = top / "payload.torrent"
            torrent.write_bytes(make_payload(top / "www" / "payload.bin", size, args.piece_kib << 10, url))
            subprocess.run(["cat", str(top / "www" / "payload.bin")], stdout=subprocess.DEVNULL, check=True)
            for run in range(args.runs):
                for client in only:
                    out = top / f"out-{client}"
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir()
                    if client == "curl":
                        elapsed = run_curl(url, out / "payload.bin")
                    elif client == "libtorrent":
                        elapsed = run_libtorrent(torrent, out)
                    else:
                        elapsed, c = run_ours(torrent, out)
                        cpu.append(c)
                    if not same_file(top / "www" / "payload.bin", out / "payload.bin"):
                        raise SystemExit(f"{client}: the downloaded file differs")
                    results[client].append(size / elapsed / 1e6)
                    print(f"run {run + 1} {client:10} {size / elapsed / 1e6:8.1f} MB/s", flush=True)
                    shutil.rmtree(out)
    print(f"\n{args.size_mib} MiB from nginx on loopback, {args.piece_kib} KiB pieces, no peers:")
    for client, rates in results.items():
        extra = f"  (CPU {statistics.median(cpu):.1f} s incl. start-up)" if client == "ours" and cpu else ""
        runs = ", ".join(f"{r:.0f}" for r in rates)
        print(f"  {client:10} median {statistics.median(rates):7.1f} MB/s  [{runs}]{extra}")


if __name__ == "__main__":
    main()
