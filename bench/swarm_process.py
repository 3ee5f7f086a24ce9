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
     per GiB uploaded (its whole process, start to stop) are shown beside it.

Both seeds start every timed run from data they verified once, untimed, before the first
run (``--lt-seed verified``, the default): ours from the resume state of a first run that
checked the payload, libtorrent's from the resume data (``write_resume_data_buf``) it saved
after its own full check. ``--lt-seed seed-mode`` is the earlier setup: libtorrent's seed
trusts the data with ``seed_mode`` and hashes each piece on its first request, in every run,
so it competes for the cores with the leechers it serves (the figures of both setups are in
the README); ``--lt-seed verified,seed-mode`` runs both, alternated. ``--baseline DIR``
times our leecher from another checkout too, alternated with this one in the same run.

libtorrent runs as ``python -c`` processes with the PyPI bindings (TCP only, DHT, LSD,
UPnP, NAT-PMP and PEX off, ``allow_multiple_connections_per_ip``); a libtorrent leecher
exits as soon as it is seeding, as ``--no-seed`` does. Ours run with ``--no-dht --no-lsd
--no-port-mapping --no-utp`` (libtorrent's uTP is off too, so both speak TCP: with uTP on, our leechers would
try it first with libtorrent and among themselves) and their default encryption (``prefer``), libtorrent with its defaults. MB = 10^6 bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.transfer import (  # noqa: E402
    PIECE_LENGTH,
    Proc,
    free_port,
    make_payload,
    prepare_run,
    reap,
    stop,
    wait_checked,
    wait_listening,
)
from torrent.proto import bencoding  # noqa: E402

TIMEOUT_S = 600.0

#: One libtorrent peer: ``python -c LT_PEER seed|leech|check TORRENT SAVE PORT TIMEOUT
#: [RESUME]``. A seed runs until SIGINT: with a RESUME file it starts from that resume data
#: (no hashing), without one in ``seed_mode``. A leecher exits 0 once it has every piece (1
#: on timeout). ``check`` hashes the data, writes its resume data to RESUME and exits 0.
LT_PEER = r"""
import signal, sys, time, warnings
warnings.simplefilter("ignore")
import libtorrent as lt
mode, torrent, save, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
resume = sys.argv[6] if len(sys.argv) > 6 else ""
ses = lt.session({
    "listen_interfaces": f"127.0.0.1:{port}",
    "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
    "enable_outgoing_utp": False, "enable_incoming_utp": False,
    "allow_multiple_connections_per_ip": True, "announce_to_all_trackers": True,
    "alert_mask": 0,
})
if mode == "seed" and resume:
    with open(resume, "rb") as f:
        atp = lt.read_resume_data(f.read())
else:
    atp = lt.add_torrent_params()
if mode == "check":  # announces nothing: the tracker would keep it listed after it exits
    with open(torrent, "rb") as f:
        meta = lt.bdecode(f.read())
    meta.pop(b"announce", None)
    meta.pop(b"announce-list", None)
    atp.ti = lt.torrent_info(meta)
else:
    atp.ti = lt.torrent_info(torrent)
    atp.trackers = [t.url for t in atp.ti.trackers()]  # resume data from "check" names none
atp.save_path = save
atp.flags &= ~lt.torrent_flags.auto_managed
atp.flags &= ~lt.torrent_flags.paused
atp.flags |= lt.torrent_flags.disable_pex | lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd
if mode == "seed" and not resume:
    atp.flags |= lt.torrent_flags.seed_mode
h = ses.add_torrent(atp)
stopping = []
signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
deadline = time.monotonic() + float(sys.argv[5])
while not stopping and time.monotonic() < deadline:
    if mode != "seed" and h.status().is_seeding:
        if mode == "check":
            h.save_resume_data(lt.torrent_handle.save_info_dict)
            while time.monotonic() < deadline:
                ses.wait_for_alert(1000)
                done = [a for a in ses.pop_alerts() if isinstance(a, lt.save_resume_data_alert)]
                if done:
                    with open(resume, "wb") as f:
                        f.write(lt.write_resume_data_buf(done[0].params))
                    sys.exit(0)
            sys.exit(1)
        sys.exit(0)
    time.sleep(0.02)
sys.exit(0 if mode == "seed" else 1)
"""


def make_torrent(path: Path, size: int, announce: str) -> bytes:
    """Random content and a .torrent announcing to ``announce``."""
    meta = bencoding.decode(make_payload(path, size))
    meta[b"announce"] = announce.encode()
    return bencoding.encode(meta)


def spawn_tracker(port: int, log: Path) -> Proc:
    """Our HTTP tracker on 127.0.0.1:``port`` (no UDP), every peer announcing once a minute at most."""
    args = ["tracker", "--host", "127.0.0.1", "--port", str(port), "--no-udp"]
    return spawn_ours([*args, "--interval", "60", "--min-interval", "30"], log)


def spawn_ours(args: list[str], log: Path, root: Path = ROOT) -> Proc:
    """``pytorrent ARGS`` from the checkout ``root`` (its own code, whatever PYTHONPATH says)."""
    f = open(log, "wb")  # noqa: SIM115 - closed with the process
    started = time.monotonic()
    p = subprocess.Popen(
        [sys.executable, "-m", "cli.main", *args],
        cwd=root,
        stdout=f,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    return Proc(p, started)


def spawn_lt(mode: str, torrent: Path, save: Path, port: int, log: Path, resume: Path | None = None) -> Proc:
    f = open(log, "wb")  # noqa: SIM115 - closed with the process
    started = time.monotonic()
    extra = [str(resume)] if resume is not None else []
    p = subprocess.Popen(
        [sys.executable, "-c", LT_PEER, mode, str(torrent), str(save), str(port), str(TIMEOUT_S), *extra],
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


async def prime_lt_seed(work: Path, torrent: Path, data_dir: Path) -> Path:
    """libtorrent hashes the data once, untimed, and saves its resume data: a seed started
    from it seeds at once without hashing, as ours does from its resume state."""
    resume = work / "lt-seed.resume"
    proc = spawn_lt("check", torrent, data_dir, free_port(), work / "lt-check.log", resume)
    await reap(proc, TIMEOUT_S)
    if proc.status != 0 or not resume.exists():
        text = (work / "lt-check.log").read_text(errors="replace")
        raise RuntimeError(f"libtorrent's check exited {proc.status}: {text[-400:]}")
    return resume


@dataclass
class SeededSwarm:
    """A tracker and a libtorrent seed of one payload (:func:`seeded_swarm`)."""

    torrent: Path
    seed: Proc
    announce: str


@contextlib.asynccontextmanager
async def seeded_swarm(work: Path, size: int) -> AsyncIterator[SeededSwarm]:
    """Our tracker and a libtorrent seed of a fresh ``size``-byte payload in ``work``,
    the seed listening and announced (its data hashed once beforehand, untimed); both
    stopped afterwards."""
    tracker_port = free_port()
    tracker = spawn_tracker(tracker_port, work / "tracker.log")
    seed = None
    try:
        await wait_listening(tracker_port)
        announce = f"http://127.0.0.1:{tracker_port}/announce"
        data_dir = work / "data"
        data_dir.mkdir()
        torrent = work / "bench.torrent"
        torrent.write_bytes(make_torrent(data_dir / "payload.bin", size, announce))
        resume = await prime_lt_seed(work, torrent, data_dir)
        seed_port = free_port()
        seed = spawn_lt("seed", torrent, data_dir, seed_port, work / "seed.log", resume)
        await wait_listening(seed_port)
        await asyncio.sleep(0.5)  # the seed's first announce reaches the tracker
        yield SeededSwarm(torrent, seed, announce)
    finally:
        if seed is not None:
            await stop(seed)
        await stop(tracker)


async def run_swarm(
    work: Path,
    torrent: Path,
    data_dir: Path,
    *,
    seed: str,
    leecher: str,
    count: int,
    lt_resume: Path | None,
    baseline: Path | None = None,
) -> Outcome:
    """A seed (``lt``/``ours``) and ``count`` leechers (``lt``/``ours``/``base``, ours from
    the ``baseline`` checkout) started at once; all stopped after. A libtorrent seed starts
    from ``lt_resume`` when given, else in ``seed_mode``."""
    seed_port = free_port()
    if seed == "lt":
        seed_proc = spawn_lt("seed", torrent, data_dir, seed_port, work / "seed.log", lt_resume)
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
                root = baseline if leecher == "base" and baseline is not None else ROOT
                leechers.append(spawn_ours([*args, "--port", str(port)], log, root))
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


def scenarios(
    keys: list[str], setups: list[str], baseline: Path | None, run: int = 0
) -> list[tuple[str, str, str, str, int]]:
    """(label, lt seed set-up, seed, leecher, count) in the order run ``run`` goes through
    them. Within each scenario the contenders take turns going first (reversed every other
    run): a run's place in the sequence shows in its figures (``bench/leech_phases.py``
    timing our leecher against itself, same code, in a fixed order: 1.16 against 1.22 CPU s
    and 1.51 against 1.80 s wall, medians of 6), so a fixed order favours one side."""
    out: list[tuple[str, str, str, str, int]] = []
    for key in keys:
        for setup in setups:
            group = []
            for label, seed, leecher, count in SCENARIOS[key]:
                suffix = f" [lt seed {setup}]" if len(setups) > 1 else ""
                group.append((label + suffix, setup, seed, leecher, count))
                if baseline is not None and leecher == "ours":
                    group.append((f"{label} (baseline {baseline.name}){suffix}", setup, seed, "base", count))
            out += reversed(group) if run % 2 else group
    return out


async def main_async(args: argparse.Namespace) -> None:
    size = args.size_mib * 1024 * 1024
    gib = size / (1 << 30)
    keys = [k.strip() for k in args.only.split(",")]
    setups = [k.strip() for k in args.lt_seed.split(",")]
    baseline = Path(args.baseline) if args.baseline else None  # resolved by main()
    with tempfile.TemporaryDirectory(prefix="bench-swarm-") as tmp:
        work = Path(tmp)
        tracker_port = free_port()
        tracker = spawn_tracker(tracker_port, work / "tracker.log")
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
            lt_resume = await prime_lt_seed(work, torrent, data_dir) if "verified" in setups else None
            for run in range(args.runs):
                for label, setup, seed, leecher, count in scenarios(keys, setups, baseline, run):
                    fig = figures.setdefault(label, Figures())
                    try:
                        got = await run_swarm(
                            work,
                            torrent,
                            data_dir,
                            seed=seed,
                            leecher=leecher,
                            count=count,
                            lt_resume=lt_resume if setup == "verified" else None,
                            baseline=baseline,
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
                    kernel = statistics.median(p.sys_s / gib for p in got.leechers)
                    print(
                        f"run {run + 1} {label}: {fig.rates[-1]:.0f} MB/s (leechers' wall s: {walls}), "
                        f"leecher {fig.cpu[-1]:.2f} CPU s/GiB ({kernel:.2f} in the kernel), "
                        f"{fig.rss[-1]:.0f} MiB; "
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
    parser.add_argument(
        "--lt-seed",
        default="verified",
        help="libtorrent's seed: verified (from resume data of an untimed check), seed-mode, or both comma-separated",
    )
    parser.add_argument("--baseline", metavar="DIR", help="also time our leecher from this checkout")
    args = parser.parse_args()
    if not set(args.lt_seed.split(",")) <= {"verified", "seed-mode"}:
        parser.error("--lt-seed takes verified, seed-mode or both")
    args.baseline = prepare_run(args.baseline)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
