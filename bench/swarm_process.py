"""Whole-process transfers through a tracker, as a user runs them: one or three leechers.

Usage (as root, the script re-runs itself in a loopback-only network namespace):

    python bench/swarm_process.py [--size-mib 1024] [--runs 2] [--only 1,3,s]

Every peer is its own process, started the way a user starts it, and finds the others
through ``pytorrent tracker`` (HTTP, on loopback): nobody is handed a peer address. A
leecher is timed from its process start to its exit (interpreter start-up, imports,
checking, announcing, the transfer, the final ``stopped`` announce); its CPU seconds are
user+sys from ``wait4`` and its peak RSS its ``VmHWM``. Scenarios, side by side in one run:

  1  one seed -> one leecher: libtorrent seed with a libtorrent leecher, then with ours
     (``pytorrent download X.torrent --no-seed``).
  3  one seed -> three leechers at once: libtorrent seed with three libtorrent leechers,
     then with three of ours; the figure is the median leecher.
  s  one seed serving three libtorrent leechers: libtorrent's seed, then ours
     (``pytorrent seed``); the figure is the median leecher, and the seed's CPU seconds
     per GiB uploaded (its whole process, start to stop) are shown beside it. libtorrent's
     seed trusts the data (``seed_mode``); ours trusts the resume state of a first, untimed
     run that checked it (before, the first timed run included our check of the payload).

libtorrent runs as ``python -c`` processes with the PyPI bindings (TCP only, DHT, LSD,
UPnP, NAT-PMP and PEX off, ``allow_multiple_connections_per_ip``); a libtorrent leecher
exits as soon as it is seeding, as ``--no-seed`` does. Ours run with ``--no-dht --no-lsd
--no-port-mapping --no-utp`` (libtorrent's uTP is off too, so both speak TCP: with uTP on, our leechers would
try it first with libtorrent and among themselves) and their default encryption (``prefer``), libtorrent with its defaults. MB = 10^6 bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.transfer import (  # noqa: E402
    PIECE_LENGTH,
    Proc,
    compile_bytecode,
    free_port,
    make_payload,
    reap,
    reexec_isolated,
    stop,
    wait_checked,
    wait_listening,
)
from torrent.proto import bencoding  # noqa: E402

TIMEOUT_S = 600.0

#: One libtorrent peer: ``python -c LT_PEER seed|leech TORRENT SAVE PORT``. A seed runs
#: until SIGINT; a leecher exits 0 once it has every piece (1 on timeout).
LT_PEER = r"""
import signal, sys, time, warnings
warnings.simplefilter("ignore")
import libtorrent as lt
mode, torrent, save, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ses = lt.session({
    "listen_interfaces": f"127.0.0.1:{port}",
    "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
    "enable_outgoing_utp": False, "enable_incoming_utp": False,
    "allow_multiple_connections_per_ip": True, "announce_to_all_trackers": True,
    "alert_mask": 0,
})
atp = lt.add_torrent_params()
atp.ti = lt.torrent_info(torrent)
atp.save_path = save
atp.flags &= ~lt.torrent_flags.auto_managed
atp.flags &= ~lt.torrent_flags.paused
atp.flags |= lt.torrent_flags.disable_pex | lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd
if mode == "seed":
    atp.flags |= lt.torrent_flags.seed_mode
h = ses.add_torrent(atp)
stopping = []
signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
deadline = time.monotonic() + float(sys.argv[5])
while not stopping and time.monotonic() < deadline:
    if mode == "leech" and h.status().is_seeding:
        sys.exit(0)
    time.sleep(0.02)
sys.exit(0 if mode == "seed" else 1)
"""


def make_torrent(path: Path, size: int, announce: str) -> bytes:
    """Random content and a .torrent announcing to ``announce``."""
    meta = bencoding.decode(make_payload(path, size))
    meta[b"announce"] = announce.encode()
    return bencoding.encode(meta)


def spawn_ours(args: list[str], log: Path) -> Proc:
    f = open(log, "wb")  # noqa: SIM115 - closed with the process
    started = time.monotonic()
    p = subprocess.Popen(
        [sys.executable, "-m", "cli.main", *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT
    )
    return Proc(p, started)


def spawn_lt(mode: str, torrent: Path, save: Path, port: int, log: Path) -> Proc:
    f = open(log, "wb")  # noqa: SIM115 - closed with the process
    started = time.monotonic()
    p = subprocess.Popen(
        [sys.executable, "-c", LT_PEER, mode, str(torrent), str(save), str(port), str(TIMEOUT_S)],
        stdout=f,
        stderr=subprocess.STDOUT,
    )
    return Proc(p, started)


@dataclass
class Outcome:
    """One scenario run: each leecher's process, and the seed's."""

    leechers: list[Proc]
    seed: Proc


@dataclass
class Figures:
    rates: list[float] = field(default_factory=list)  # median leecher MB/s, per run
    cpu: list[float] = field(default_factory=list)  # median leecher CPU s per GiB
    rss: list[float] = field(default_factory=list)  # median leecher peak RSS MiB
    seed_cpu: list[float] = field(default_factory=list)  # seed CPU s per GiB uploaded
    note: str = ""


def our_seed_args(torrent: Path, data_dir: Path, port: int) -> list[str]:
    return [
        "seed",
        "--no-dht",
        "--no-lsd",
        "--no-port-mapping",
        "--no-utp",
        "--json",
        str(torrent),
        str(data_dir),
        "--port",
        str(port),
    ]


async def prime_our_seed(work: Path, torrent: Path, data_dir: Path) -> None:
    """Start our seed once, untimed, until it has checked the data, and stop it: the resume
    state it leaves lets every timed run start seeding at once, as libtorrent's seed does
    with ``seed_mode`` (otherwise the first run would time our check of the whole payload)."""
    log = work / "seed-prime.log"
    proc = spawn_ours(our_seed_args(torrent, data_dir, free_port()), log)
    try:
        await wait_checked(log)
    finally:
        await stop(proc)


async def run_swarm(
    work: Path, torrent: Path, data_dir: Path, *, seed: str, leecher: str, count: int
) -> Outcome:
    """A seed (``lt``/``ours``) and ``count`` leechers started at once; all stopped after."""
    seed_port = free_port()
    if seed == "lt":
        seed_proc = spawn_lt("seed", torrent, data_dir, seed_port, work / "seed.log")
    else:
        seed_proc = spawn_ours(our_seed_args(torrent, data_dir, seed_port), work / "seed.log")
    leechers: list[Proc] = []
    try:
        await wait_listening(seed_port)
        await asyncio.sleep(0.5)  # the seed's first announce reaches the tracker
        outs = []
        for i in range(count):
            out = work / f"out-{i}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            outs.append(out)
            port, log = free_port(), work / f"leech-{i}.log"
            if leecher == "lt":
                leechers.append(spawn_lt("leech", torrent, out, port, log))
            else:
                args = [
                    "download",
                    "--no-dht",
                    "--no-lsd",
                    "--no-port-mapping",
                    "--no-utp",
                    "--no-seed",
                    "--json",
                    str(torrent),
                    "-o",
                    str(out),
                ]
                leechers.append(spawn_ours([*args, "--port", str(port)], log))
        # Reaped side by side, so each one's VmHWM is read while it runs.
        await asyncio.gather(*(reap(proc, TIMEOUT_S) for proc in leechers))
        for i, proc in enumerate(leechers):
            if proc.status != 0:
                text = (work / f"leech-{i}.log").read_text(errors="replace")
                raise RuntimeError(f"leecher {i} exited {proc.status}: {text[-400:]}")
        for out in outs:
            shutil.rmtree(out, ignore_errors=True)
    finally:
        for proc in leechers:
            if proc.popen.returncode is None:
                proc.popen.kill()
        await stop(seed_proc)
    return Outcome(leechers, seed_proc)


SCENARIOS: dict[str, list[tuple[str, str, str, int]]] = {
    # key -> [(label, seed, leecher, count)]
    "1": [
        ("1: libtorrent seed -> 1 libtorrent leecher", "lt", "lt", 1),
        ("1: libtorrent seed -> 1 our leecher", "lt", "ours", 1),
    ],
    "3": [
        ("3: libtorrent seed -> 3 libtorrent leechers", "lt", "lt", 3),
        ("3: libtorrent seed -> 3 our leechers", "lt", "ours", 3),
    ],
    "s": [
        ("s: libtorrent seed -> 3 libtorrent leechers", "lt", "lt", 3),
        ("s: our seed -> 3 libtorrent leechers", "ours", "lt", 3),
    ],
}


async def main_async(args: argparse.Namespace) -> None:
    size = args.size_mib * 1024 * 1024
    gib = size / (1 << 30)
    keys = [k.strip() for k in args.only.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-swarm-") as tmp:
        work = Path(tmp)
        tracker_port = free_port()
        tracker = spawn_ours(
            [
                "tracker",
                "--host",
                "127.0.0.1",
                "--port",
                str(tracker_port),
                "--no-udp",
                "--interval",
                "60",
                "--min-interval",
                "30",
            ],
            work / "tracker.log",
        )
        try:
            await wait_listening(tracker_port)
            data_dir = work / "data"
            data_dir.mkdir()
            torrent = work / "bench.torrent"
            announce = f"http://127.0.0.1:{tracker_port}/announce"
            torrent.write_bytes(make_torrent(data_dir / "payload.bin", size, announce))
            print(f"payload: {args.size_mib} MiB, piece length {PIECE_LENGTH // 1024} KiB", flush=True)
            figures: dict[str, Figures] = {}
            if "s" in keys:
                await prime_our_seed(work, torrent, data_dir)
            for run in range(args.runs):
                for key in keys:
                    for label, seed, leecher, count in SCENARIOS[key]:
                        fig = figures.setdefault(label, Figures())
                        try:
                            got = await run_swarm(
                                work, torrent, data_dir, seed=seed, leecher=leecher, count=count
                            )
                        except Exception as exc:  # report and go on with the others
                            fig.note = f"failed: {exc}"
                            print(f"run {run + 1} {label}: {fig.note}", flush=True)
                            continue
                        fig.rates.append(statistics.median(size / p.wall_s / 1e6 for p in got.leechers))
                        fig.cpu.append(statistics.median(p.cpu_s / gib for p in got.leechers))
                        fig.rss.append(statistics.median(p.max_rss_mib for p in got.leechers))
                        fig.seed_cpu.append(got.seed.cpu_s / (gib * count))
                        walls = " ".join(f"{p.wall_s:.1f}" for p in got.leechers)
                        print(
                            f"run {run + 1} {label}: {fig.rates[-1]:.0f} MB/s (leechers' wall s: {walls}), "
                            f"leecher {fig.cpu[-1]:.1f} CPU s/GiB, {fig.rss[-1]:.0f} MiB; "
                            f"seed {fig.seed_cpu[-1]:.1f} CPU s/GiB uploaded",
                            flush=True,
                        )
        finally:
            await stop(tracker)
    report(figures)


def report(figures: dict[str, Figures]) -> None:
    print()
    head = f"{'scenario (median leecher, whole process)':46} {'MB/s':>6} {'runs':>12} {'CPU s/GiB':>9} {'RSS MiB':>8} {'seed CPU s/GiB':>14}"
    print(head)
    reference: float | None = None
    for label, fig in figures.items():
        if not fig.rates:
            print(f"{label:46} {'-':>6}  {fig.note}")
            reference = None
            continue
        med = statistics.median(fig.rates)
        runs = " ".join(f"{r:.0f}" for r in fig.rates)
        ratio = ""
        if "libtorrent seed -> 1 libtorrent" in label or "libtorrent seed -> 3 libtorrent" in label:
            reference = med
        elif reference:
            ratio = f"  ({med / reference:.2f}x the line above)"
        print(
            f"{label:46} {med:6.0f} {runs:>12} {statistics.median(fig.cpu):9.1f} "
            f"{statistics.median(fig.rss):8.0f} {statistics.median(fig.seed_cpu):14.1f}{ratio}"
        )
    print("\nmachine: 2 cores, shared with other work; every process's CPU counts against the same cores.")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--only", default="1,3,s", help="scenarios: 1, 3, s (comma-separated)")
    args = parser.parse_args()
    reexec_isolated()
    compile_bytecode()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
