"""A whole-process leecher's timeline: time to the first byte, the rate, the tail.

Usage (as root, the script re-runs itself in a loopback-only network namespace):

    python bench/leech_timeline.py [--size-mib 1024] [--runs 2] [--bin-ms 100] [--baseline DIR]

One libtorrent seed (from the resume data of its own untimed check, as in
``bench/swarm_process.py``) serves, one after the other, a libtorrent leecher and ``pytorrent
download X.torrent --no-seed`` (and the ``--baseline`` checkout's), each run (run 0 warms the
seed, untimed). While a leecher runs, a thread samples every 2 ms or so the bytes received on
the namespace's loopback (only the tracker and these peers use it), the CPU time of the
leecher's threads and of the seed's (``schedstat``), the machine's idle time and the disks'
writes. Printed per leecher: process start to the first MiB of payload on the wire, to half
and to all of it, to exit; the rates between 10 % and 90 % and between 25 % and 95 % of the
payload (the second one past a slow start); then one line per bin: MB/s on the wire, the CPU
(in cores) of the leecher's main thread (the event loop, for ours) and of its other threads,
of the seed's threads together and of its busiest one, the machine's idle cores, the MB/s
written to the disks and the fraction of the bin they were busy. At the end, medians per
leecher. MB = 10^6 bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.swarm_process import seeded_swarm, spawn_lt, spawn_ours  # noqa: E402
from bench.transfer import (  # noqa: E402
    TIMEOUT_S,
    Proc,
    free_port,
    prepare_run,
    reap,
)

TICK = os.sysconf("SC_CLK_TCK")


def lo_rx_bytes() -> int:
    """Bytes received on this network namespace's loopback (``/proc/net/dev``: sysfs would
    show the host's)."""
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, counters = line.partition(":")
            if name.strip() == "lo":
                return int(counters.split()[0])
    return 0


def threads_ns(pid: int) -> dict[int, int]:
    """CPU ns so far of each thread of ``pid`` (``schedstat``); empty once it is gone."""
    out: dict[int, int] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return out


def whole_disk(name: str) -> bool:
    if name.startswith("nvme"):
        return "p" not in name
    return name.startswith(("vd", "sd", "xvd")) and not name[-1].isdigit()


def disk_io() -> tuple[int, int]:
    """(bytes written, ms busy) so far, summed over the whole disks (``/proc/diskstats``)."""
    written = busy = 0
    with open("/proc/diskstats") as f:
        for line in f:
            fields = line.split()
            if whole_disk(fields[2]):
                written += int(fields[9]) * 512
                busy += int(fields[12])
    return written, busy


def idle_s() -> float:
    """Seconds the machine's cores spent idle so far (``/proc/stat``)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return (int(fields[4]) + int(fields[5])) / TICK


class Sample(NamedTuple):
    t: float
    rx: int  # loopback bytes received
    main: int  # leecher's main thread, CPU ns
    others: int  # leecher's other threads, CPU ns
    seed: dict[int, int]  # seed's threads, CPU ns
    idle: float  # machine idle, s
    disk: tuple[int, int]  # bytes written, ms busy


@dataclass
class Sampler:
    leecher: int
    seed: int
    samples: list[Sample] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        main = others = 0
        while not self.done.is_set():
            t = time.monotonic()
            rx = lo_rx_bytes()
            threads = threads_ns(self.leecher)
            if threads:  # once it has exited, keep its last figures
                main = threads.pop(self.leecher, main)
                others = sum(threads.values())
            self.samples.append(Sample(t, rx, main, others, threads_ns(self.seed), idle_s(), disk_io()))
            time.sleep(0.002)


@dataclass
class Summary:
    first_mib: list[float] = field(default_factory=list)
    late_rate: list[float] = field(default_factory=list)
    tail: list[float] = field(default_factory=list)
    whole: list[float] = field(default_factory=list)


def report(
    name: str, started: float, exited: float, size: int, samples: list[Sample], bin_s: float
) -> Summary:
    rx0 = samples[0].rx

    def when(fraction: float) -> float:
        for sample in samples:
            if sample.rx - rx0 >= fraction * size:
                return sample.t - started
        return float("nan")

    first, t10, t25, half, t90, t95, full = (
        when(f) for f in ((1 << 20) / size, 0.1, 0.25, 0.5, 0.9, 0.95, 1.0)
    )
    steady = 0.8 * size / (t90 - t10) / 1e6
    late = 0.7 * size / (t95 - t25) / 1e6
    wall = exited - started
    print(
        f"\n{name}: first MiB {first:.3f} s, 50 % {half:.3f} s, 100 % {full:.3f} s, exit {wall:.3f} s; "
        f"10-90 % at {steady:.0f} MB/s, 25-95 % at {late:.0f}; whole process {size / wall / 1e6:.0f} MB/s"
    )
    print(
        f"{'t (s)':>6} {'MB/s':>6} {'main':>5} {'others':>6} {'seed':>5} {'busiest':>7} {'idle':>5}"
        f" {'disk':>6} {'busy':>5}"
    )
    edge = started + bin_s
    prev = samples[0]
    for sample in samples[1:]:
        if sample.t < edge and sample is not samples[-1]:
            continue
        dt = sample.t - prev.t
        if dt <= 0:
            continue
        seed = [ns - prev.seed.get(tid, ns) for tid, ns in sample.seed.items()]
        print(
            f"{sample.t - started:6.2f} {(sample.rx - prev.rx) / dt / 1e6:6.0f}"
            f" {(sample.main - prev.main) / dt / 1e9:5.2f} {max(0, sample.others - prev.others) / dt / 1e9:6.2f}"
            f" {sum(seed) / dt / 1e9:5.2f} {max(seed, default=0) / dt / 1e9:7.2f} {(sample.idle - prev.idle) / dt:5.2f}"
            f" {(sample.disk[0] - prev.disk[0]) / dt / 1e6:6.0f} {(sample.disk[1] - prev.disk[1]) / dt / 1e3:5.2f}"
        )
        prev = sample
        while edge <= sample.t:
            edge += bin_s
    return Summary([first], [late], [wall - full], [size / wall / 1e6])


async def timed(proc: Proc, seed: Proc) -> tuple[list[Sample], float]:
    sampler = Sampler(proc.popen.pid, seed.popen.pid)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    await reap(proc, TIMEOUT_S)
    exited = time.monotonic()
    sampler.done.set()
    thread.join()
    if proc.status != 0:
        raise RuntimeError(f"a leecher exited {proc.status}")
    return sampler.samples, exited


async def main_async(args: argparse.Namespace) -> None:
    size = args.size_mib * 1024 * 1024
    trees = {"ours": ROOT}
    if args.baseline:
        trees[f"baseline ({Path(args.baseline).name})"] = Path(args.baseline)
    with tempfile.TemporaryDirectory(prefix="bench-timeline-") as tmp:
        work = Path(tmp)
        async with seeded_swarm(work, size) as swarm:
            out = work / "out"
            summaries = {name: Summary() for name in ["libtorrent", *trees]}
            contenders = ["libtorrent", *trees]
            for run in range(args.runs + 1):
                # Reversed every other run: a run's place in the sequence shows in its
                # figures (see bench/leech_phases.py), so a fixed order favours one side.
                for name in contenders if run % 2 == 0 else contenders[::-1]:
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir()
                    await asyncio.sleep(0.2)
                    if name == "libtorrent":
                        proc = spawn_lt("leech", swarm.torrent, out, free_port(), work / "leech.log")
                    else:
                        ours = [
                            "download",
                            *("--no-dht", "--no-lsd", "--no-port-mapping", "--no-utp", "--no-seed"),
                            *("--json", str(swarm.torrent), "-o", str(out), "--port", str(free_port())),
                        ]
                        proc = spawn_ours(ours, work / "leech.log", trees[name])
                    samples, exited = await timed(proc, swarm.seed)
                    if run > 0:
                        label = f"run {run}, {name} (load {os.getloadavg()[0]:.1f})"
                        one = report(label, proc.started, exited, size, samples, args.bin_ms / 1000)
                        for key, values in vars(summaries[name]).items():
                            values.extend(getattr(one, key))
                    if run == 0:
                        break  # run 0 only warms the seed (libtorrent goes first in it)
            shutil.rmtree(out, ignore_errors=True)
    print(f"\n{args.size_mib} MiB, medians of {args.runs}")
    print(
        f"{'leecher':24} {'first MiB s':>11} {'25-95 % MB/s':>12} {'last byte to exit s':>19} {'whole MB/s':>10}"
    )
    med = statistics.median
    for name, summary in summaries.items():
        print(
            f"{name:24} {med(summary.first_mib):11.3f} {med(summary.late_rate):12.0f}"
            f" {med(summary.tail):19.3f} {med(summary.whole):10.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--bin-ms", type=int, default=100)
    parser.add_argument("--baseline", metavar="DIR", help="also time our leecher from this checkout")
    args = parser.parse_args()
    args.baseline = prepare_run(args.baseline)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
