"""Tracker benchmark: announces per second on one Redis vs a Redis Cluster.

Same load generator for every run: ``wrk`` (HTTP, 50 connections, the announce script
of ``bench/tracker.py``: random peers of a fixed pool per swarm into random swarms).
For each store (one ``redis-server``; a 6-node cluster of 3 masters and 3 replicas,
all on loopback) it runs ``pytorrent tracker --workers N`` for N in 1, 2, 4 and
prints announces/s, wrk's latency p50/p99, and the CPU seconds the trackers and the
Redis servers used, so a run on a small shared machine says what it was limited by.

Usage::

    python bench/tracker_cluster.py                 # ~1.5 minutes
    python bench/tracker_cluster.py --seconds 5 --workers 1 2

Needs ``redis-server``, ``redis-cli`` and ``wrk`` on PATH (Debian packages).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.tracker_cluster_fixture import RedisCluster  # noqa: E402
from tests.integration.tracker_redis_fixture import RedisServer, free_port  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_tracker", ROOT / "bench" / "tracker.py")
assert _spec is not None
assert _spec.loader is not None
bench_tracker: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_tracker)

CLK_TCK = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its live children (the --workers processes)."""
    total = 0.0
    try:
        total += float(bench_tracker.cpu_seconds(pid))
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return total
    for kid in kids:
        total += tree_cpu(int(kid))
    return total


def start_tracker(port: int, store: str, workers: int) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "cli.main", "tracker", "--host", "127.0.0.1", "--port", str(port),
        "--no-udp", "--store", store, "--workers", str(workers), "--log-every", "100000000",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read()
            # every worker answers: wait until all have bound
            if (
                workers == 1
                or len(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()) == workers
            ):
                time.sleep(0.5)
                return proc
        except OSError:
            pass
        time.sleep(0.1)
    bench_tracker.stop(proc)
    raise RuntimeError("tracker did not start")


def run_wrk(port: int, script: Path, seconds: float) -> dict[str, Any]:
    cmd = [
        "wrk",
        "-t2",
        "-c50",
        f"-d{seconds:.0f}s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}/",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m is None:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rate": rate, "requests": total, "p50_ms": ms("50"), "p99_ms": ms("99"),
            "non2xx": int(non2xx.group(1)) if non2xx else 0}  # fmt: skip


def failures(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(m.group(1))
        for m in re.finditer(r"^pytorrent_tracker_failures_total\{[^}]*\} ([\d.e+]+)$", text, re.M)
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--swarms", type=int, default=1000)
    ap.add_argument("--peers-per-swarm", type=int, default=200)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--stores", nargs="+", default=["redis", "cluster"], choices=["redis", "cluster"])
    args = ap.parse_args()
    print(
        f"machine: {os.cpu_count()} CPUs shared by wrk, the trackers and Redis; load avg {os.getloadavg()[0]:.2f}"
    )
    print(
        f"load: wrk -t2 -c50, {args.swarms} swarms x {args.peers_per_swarm} peers pool, {args.seconds:.0f} s per run"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        hashes = bench_tracker.make_swarms(args.swarms)
        script = work / "announce.lua"
        script.write_text(
            bench_tracker.WRK_LUA
            % {
                "hashes": ",".join(f'"{bench_tracker.pct(h)}"' for h in hashes),
                "peers": args.peers_per_swarm,
                "seed": 7,
            }
        )
        for store in args.stores:
            if store == "redis":
                server = RedisServer(work)
                server.start()
                url, redis_pids, stop_store = server.url, [server.proc.pid], server.stop  # type: ignore[union-attr]
            else:
                cluster = RedisCluster(work / "cluster")
                cluster.start()
                url, redis_pids, stop_store = (
                    cluster.url,
                    [p.pid for p in cluster.procs.values()],
                    cluster.stop,
                )
            try:
                for workers in args.workers:
                    port = free_port()
                    proc = start_tracker(port, url, workers)
                    try:
                        cpu_t0, cpu_r0 = (
                            tree_cpu(proc.pid),
                            sum(bench_tracker.cpu_seconds(p) for p in redis_pids),
                        )
                        fail0 = failures(port)
                        r = run_wrk(port, script, args.seconds)
                        r["tracker_cpu"] = tree_cpu(proc.pid) - cpu_t0
                        r["redis_cpu"] = sum(bench_tracker.cpu_seconds(p) for p in redis_pids) - cpu_r0
                        r["failures"] = failures(port) - fail0  # counts one worker's; any is a red flag
                    finally:
                        bench_tracker.stop(proc)
                    rows.append((store, workers, r))
                    print(f"  {store} x{workers}: {r['rate']:,.0f}/s", flush=True)
            finally:
                stop_store()
    print()
    print(f"{'store':<8} {'trackers':>8} {'announces/s':>12} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'tracker CPU s/1k':>16} {'redis CPU s/1k':>15}  notes")  # fmt: skip
    for store, workers, r in rows:
        n = max(r["requests"], 1)
        notes = []
        if r["non2xx"]:
            notes.append(f"non-2xx {r['non2xx']}")
        if r["failures"]:
            notes.append(f"failure answers {r['failures']:.0f}")
        print(
            f"{store:<8} {workers:>8} {r['rate']:>12,.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
            f"{r['tracker_cpu'] / n * 1000:>16.3f} {r['redis_cpu'] / n * 1000:>15.3f}  {'; '.join(notes)}"
        )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
