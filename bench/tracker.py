"""Tracker benchmark: announces per second over HTTP and UDP against opentracker, same run.

What it does, in one run:

1. Starts Debian's ``opentracker`` (whitelist mode, chrooted into a temp dir) and
   ``pytorrent tracker`` (memory store, uvloop), both pinned to CPU 0 with ``taskset``,
   and warms both up with every kind of load (``--warmup`` seconds each: the swarms fill
   up to their steady size). Then ``--rounds`` rounds, each running every kind of load
   against each server in turn (which server goes first alternates); the figures that
   count are the medians over the rounds of the per-round ratios.
2. HTTP: ``wrk`` (one thread, 50 connections, pinned to CPU 1) with a Lua script that
   announces random peers (a fixed pool per swarm) into random swarms of a fixed set;
   once as it comes (``http``: keep-alive where the server offers it; opentracker closes
   after every answer) and once with ``Connection: close`` on every request
   (``http-close``: a new connection per announce, as most clients announce).
3. UDP: an asyncio + uvloop generator (this file, ``--udp-gen``; pinned to CPU 1)
   that connects once and keeps ``--inflight`` BEP 15 announces outstanding.
4. For each run it reads the server's and the generator's CPU time from /proc, so it
   can say which process was the bottleneck and what one announce costs the server.
5. ``--udp-path PASSES`` instead times the UDP announce path alone: the same packet mix
   (the generator's pool, from one sender) through ``UdpTracker`` and ``MemoryStore`` in
   this process, with a transport that only counts what is sent, so no sockets, kernel or
   event loop: the Python a UDP announce costs. It prints CPU microseconds per announce
   (the best pass); under ``valgrind --tool=cachegrind`` the difference between two pass
   counts gives the instructions per announce.
6. Memory per peer of ``MemoryStore``, measured with tracemalloc in a fresh process
   (1 million peers by default), and per swarm of one peer (what a flood of announces
   for random info hashes costs: 50,000 by default).

Usage::

    python bench/tracker.py                     # everything, ~2 minutes
    python bench/tracker.py --skip memory --rounds 5 --seconds 5
    python bench/tracker.py --udp-path 7         # the UDP announce path alone, in-process

Needs ``opentracker``, ``wrk`` and ``taskset`` on PATH (Debian packages); without
opentracker the pytorrent figures are still printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- helpers


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (and its reaped children) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # fields[11], [12] are utime, stime (the 14th/15th of the whole line)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


def wait_port(port: int, kind: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if kind == socket.SOCK_STREAM:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        else:
            return
    raise RuntimeError(f"nothing listens on port {port}")


def make_swarms(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(20) for _ in range(n)]


# --------------------------------------------------------------------------- HTTP (wrk)

WRK_LUA = r"""
local hashes = {%(hashes)s}
local nswarms = #hashes
local npeers = %(peers)d
math.randomseed(%(seed)d)
request = function()
  local s = math.random(1, nswarms)
  local p = math.random(0, npeers - 1)
  local left = (p %% 4 == 0) and 0 or 1000
  local path = "/announce?info_hash=" .. hashes[s] ..
    "&peer_id=-WK0001-" .. string.format("%%06d%%06d", s, p) ..
    "&port=" .. (10000 + p) .. "&uploaded=0&downloaded=0&left=" .. left .. "&compact=1"
  return wrk.format("GET", path)
end
"""


def pct(b: bytes) -> str:
    return "".join(f"%{c:02X}" for c in b)


def run_wrk(
    port: int, script: Path, seconds: float, server_pid: int, *, close: bool = False
) -> dict[str, Any]:
    cmd = [
        *pin(1),
        "wrk",
        "-t1",
        "-c50",
        f"-d{seconds:.0f}s",
        "-s",
        str(script),
        *(["-H", "Connection: close"] if close else []),
        f"http://127.0.0.1:{port}/announce",
    ]
    cpu0 = cpu_seconds(server_pid)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    gen_cpu = 0.0
    # sample the generator's CPU just before it exits
    deadline = time.monotonic() + seconds + 30
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            gen_cpu = cpu_seconds(proc.pid)
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.2)
    out = proc.communicate(timeout=30)[0].decode()
    cpu1 = cpu_seconds(server_pid)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rate": rate,
        "requests": total,
        "server_cpu_s": cpu1 - cpu0,
        "gen_cpu_s": gen_cpu,
        "seconds": seconds,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


# --------------------------------------------------------------------------- UDP generator


def announce_pool(conn_id: int, swarms: list[bytes], peers: int) -> list[bytes]:
    """65,536 BEP 15 announces of random peers (a fixed pool per swarm) into random swarms."""
    rng = random.Random(2)
    ann = struct.Struct(">QII20s20sQQQIIIiH")
    pool = []
    for i in range(65536):
        s = rng.randrange(len(swarms))
        p = rng.randrange(peers)
        pid = b"-UG0001-" + b"%06d%06d" % (s, p)
        left = 0 if p % 4 == 0 else 1000
        pool.append(ann.pack(conn_id, 1, i, swarms[s], pid, 0, left, 0, 0, 0, p, -1, 10000 + p))
    return pool


class _UdpGen(asyncio.DatagramProtocol):
    """Connects once, then answers every reply with the next announce of the pool."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.conn_id: int | None = None
        self.done = asyncio.Event()  # set on the connect reply, then again to stop
        self.pool: list[bytes] = []
        self.sent = self.received = self.errors = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)

    def send(self, n: int) -> None:
        pool = self.pool
        for _ in range(n):
            self.transport.sendto(pool[self.sent % len(pool)])
            self.sent += 1

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.conn_id is None:
            if len(data) >= 16 and data[:4] == b"\0\0\0\0":
                self.conn_id = struct.unpack_from(">Q", data, 8)[0]
                self.done.set()
            return
        if data[3] == 3:
            self.errors += 1
        self.received += 1
        if not self.done.is_set():
            self.send(1)


def udp_generator(
    host: str, port: int, seconds: float, inflight: int, swarms: list[bytes], peers: int
) -> dict[str, Any]:
    """Runs inside its own process (``--udp-gen``): keep ``inflight`` announces outstanding."""
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        loop_factory = None

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        transport, gen = await loop.create_datagram_endpoint(_UdpGen, remote_addr=(host, port))
        for _ in range(50):
            transport.sendto(struct.pack(">QII", 0x41727101980, 0, 1))
            try:
                async with asyncio.timeout(0.2):
                    await gen.done.wait()
                    break
            except TimeoutError:
                continue
        if gen.conn_id is None:
            raise SystemExit("UDP tracker did not answer connect")
        gen.done.clear()
        gen.pool = announce_pool(gen.conn_id, swarms, peers)
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        gen.send(inflight)
        end = t0 + seconds
        last = 0
        while time.perf_counter() < end:
            await asyncio.sleep(0.05)
            if gen.received == last:  # lost packets: top the window up
                gen.send(inflight)
            last = gen.received
        gen.done.set()
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        transport.close()
        return {"received": gen.received, "elapsed": elapsed, "errors": gen.errors, "cpu": cpu}

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


def run_udp(
    port: int, seconds: float, inflight: int, hashfile: Path, peers: int, server_pid: int
) -> dict[str, Any]:
    cmd = [
        *pin(1),
        sys.executable,
        __file__,
        "--udp-gen",
        str(port),
        str(seconds),
        str(inflight),
        str(hashfile),
        str(peers),
    ]
    cpu0 = cpu_seconds(server_pid)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=seconds + 60)
    cpu1 = cpu_seconds(server_pid)
    if proc.returncode:
        raise RuntimeError(f"UDP generator failed: {err.decode()[-500:]}")
    res = json.loads(out)
    return {
        "rate": res["received"] / res["elapsed"],
        "requests": res["received"],
        "server_cpu_s": cpu1 - cpu0,
        "gen_cpu_s": res["cpu"],  # the measured window only, not the set-up
        "seconds": res["elapsed"],
        "errors": res["errors"],
    }


# --------------------------------------------------------------------------- the UDP path alone


class _CountingTransport:
    def __init__(self) -> None:
        self.sent = 0

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent += 1


def udp_path(passes: int, swarms: list[bytes], peers: int) -> dict[str, Any]:
    """The generator's pool through ``UdpTracker`` in this process: fill the swarms with
    one pass, then time ``passes`` passes (CPU time); a fixed clock and random seed, so
    that two runs execute the same code."""
    sys.path.insert(0, str(ROOT))
    from tracker.service import TrackerService
    from tracker.settings import TrackerSettings
    from tracker.store import MemoryStore
    from tracker.udp import ConnectionIds, UdpTracker

    service = TrackerService(MemoryStore(3600, rng=random.Random(9)), TrackerSettings())
    ids = ConnectionIds(b"k" * 32, clock=lambda: 5000.0)
    proto = UdpTracker(service, ids)
    transport = _CountingTransport()
    proto.transport = transport  # type: ignore[assignment]
    addr = ("127.0.0.1", 40000)
    pool = announce_pool(ids.issue(addr[0]), swarms, peers)
    receive = proto.datagram_received
    for data in pool:
        receive(data, addr)
    best = float("inf")
    for _ in range(passes):
        cpu = time.process_time()
        for data in pool:
            receive(data, addr)
        best = min(best, (time.process_time() - cpu) / len(pool))
    c = service.counters
    return {
        "announces": c.udp_announces,
        "answered": transport.sent,
        "failures": c.failures_internal + c.udp_bad_connection_id + c.failures_rejected,
        "best_us": best * 1e6,
    }


# --------------------------------------------------------------------------- servers


def start_opentracker(
    workdir: Path, hashes: list[bytes], http: int, udp: int
) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("opentracker")
    if exe is None:
        return None
    chroot = workdir / "ot"
    chroot.mkdir()
    (chroot / "whitelist.txt").write_text("".join(h.hex() + "\n" for h in hashes))
    cmd = [
        *pin(0),
        exe,
        "-i",
        "127.0.0.1",
        "-p",
        str(http),
        "-P",
        str(udp),
        "-d",
        str(chroot),
        "-w",
        "/whitelist.txt",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(http, socket.SOCK_STREAM)
    return proc


def start_pytorrent(http: int, udp: int) -> subprocess.Popen[bytes]:
    cmd = [
        *pin(0), sys.executable, "-m", "cli.main", "tracker", "--host", "127.0.0.1", "--port", str(http),
        "--udp-port", str(udp), "--log-every", "100000000",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(http, socket.SOCK_STREAM)
    urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5).read()
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# --------------------------------------------------------------------------- memory


MEMORY_CODE = r"""
import json, os, sys, time, tracemalloc
sys.path.insert(0, %(root)r)
from tracker.store import MemoryStore, PeerAnnounce
from torrent.proto.tracker_codec import AnnounceEvent
n, swarms = %(n)d, %(swarms)d
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
rss0 = rss()
store = MemoryStore(3600)
rnd = os.urandom
if %(traced)d:
    tracemalloc.start()
base = tracemalloc.get_traced_memory()[0] if %(traced)d else 0
for i in range(n):
    ih = (i %% swarms).to_bytes(20, "big")
    store.announce_nowait(PeerAnnounce(ih, rnd(20), rnd(4) + b"\x1a\xe1", i & 0xFFFFFFFF, i %% 3 == 0,
                                       AnnounceEvent.STARTED, 0, True, False))
traced = tracemalloc.get_traced_memory()[0] - base if %(traced)d else 0
st = store.statistics_nowait()
print(json.dumps({"peers": st.peers, "swarms": st.swarms, "traced": traced, "rss": rss() - rss0}))
"""


def measure_memory(n: int, swarms: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for traced in (1, 0):
        code = MEMORY_CODE % {"root": str(ROOT), "n": n, "swarms": swarms, "traced": traced}
        res = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout)
        out["peers"] = res["peers"]
        out["swarms"] = res["swarms"]
        out["traced" if traced else "rss"] = res["traced" if traced else "rss"]
    return out


# --------------------------------------------------------------------------- main


def single_process_mode(args: argparse.Namespace) -> int:
    """``--udp-gen`` (the generator the bench starts) or ``--udp-path``."""
    if args.udp_gen:
        port, seconds, inflight, hashfile, peers = args.udp_gen
        swarms = [bytes.fromhex(line) for line in Path(hashfile).read_text().split()]
        print(
            json.dumps(
                udp_generator("127.0.0.1", int(port), float(seconds), int(inflight), swarms, int(peers))
            )
        )
        return 0
    r = udp_path(args.udp_path, make_swarms(args.swarms), args.peers_per_swarm)
    print(
        f"UDP announce path in-process ({args.swarms} swarms x {args.peers_per_swarm} peers pool, "
        f"{r['announces']:,} announces, {r['failures']} failures): "
        f"{r['best_us']:.2f} us of CPU per announce (best of {args.udp_path} passes)"
    )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5, help="seconds per measured run")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every run; figures are medians")
    ap.add_argument("--warmup", type=float, default=2, help="seconds of each kind of load before round 1")
    ap.add_argument("--swarms", type=int, default=1000)
    ap.add_argument("--peers-per-swarm", type=int, default=200)
    ap.add_argument("--inflight", type=int, default=256)
    ap.add_argument("--memory-peers", type=int, default=1_000_000)
    ap.add_argument("--memory-swarms", type=int, default=10_000)
    ap.add_argument(
        "--memory-flood", type=int, default=50_000, help="one-peer swarms for the random-hash flood figure"
    )
    ap.add_argument("--skip", action="append", default=[], choices=["opentracker", "http", "udp", "memory"])
    ap.add_argument(
        "--udp-path",
        type=int,
        metavar="PASSES",
        help="time PASSES passes of the UDP announce mix through the tracker in this process, and exit",
    )
    ap.add_argument(
        "--udp-gen",
        nargs=5,
        metavar=("PORT", "SECONDS", "INFLIGHT", "HASHFILE", "PEERS"),
        help=argparse.SUPPRESS,
    )
    args = ap.parse_args()

    if args.udp_gen or args.udp_path is not None:
        return single_process_mode(args)

    print(f"machine: {os.cpu_count()} CPUs, shared with other work; servers on CPU 0, generators on CPU 1")
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    print(
        f"load: {args.swarms} swarms x {args.peers_per_swarm} peers pool; {args.warmup:.0f} s warm-up, "
        f"then {args.rounds} rounds of {args.seconds:.0f} s per run, servers alternating within each round"
    )
    kinds = [k for k in ("http", "http-close") if "http" not in args.skip and shutil.which("wrk")]
    if "udp" not in args.skip:
        kinds.append("udp")
    rounds: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        hashes = make_swarms(args.swarms)
        hashfile = work / "hashes.txt"
        hashfile.write_text("".join(h.hex() + "\n" for h in hashes))
        script = work / "announce.lua"
        script.write_text(
            WRK_LUA
            % {"hashes": ",".join(f'"{pct(h)}"' for h in hashes), "peers": args.peers_per_swarm, "seed": 7}
        )
        servers: dict[str, tuple[subprocess.Popen[bytes], int, int]] = {}
        for name in ([] if "opentracker" in args.skip else ["opentracker"]) + ["pytorrent"]:
            http, udp = free_port(), free_port(socket.SOCK_DGRAM)
            proc = (
                start_opentracker(work, hashes, http, udp)
                if name == "opentracker"
                else start_pytorrent(http, udp)
            )
            if proc is None:
                print("opentracker not installed: skipping the reference")
                continue
            stack.callback(stop, proc)
            servers[name] = (proc, http, udp)

        def run(name: str, kind: str, seconds: float) -> dict[str, Any]:
            proc, http, udp = servers[name]
            if kind == "udp":
                return run_udp(udp, seconds, args.inflight, hashfile, args.peers_per_swarm, proc.pid)
            return run_wrk(http, script, seconds, proc.pid, close=kind == "http-close")

        if args.warmup > 0:  # swarms filled, code paths warm, before anything is counted
            for name in servers:
                for kind in kinds:
                    run(name, kind, args.warmup)
        for i in range(args.rounds):
            results: dict[str, dict[str, Any]] = {}
            for kind in kinds:
                # alternate which server goes first, so neither always meets the same moment
                for name in list(servers)[:: 1 if i % 2 == 0 else -1]:
                    results[f"{name} {kind}"] = run(name, kind, args.seconds)
            print(f"\nround {i + 1} of {args.rounds}:")
            report(results)
            rounds.append(results)

    if rounds:
        summary(rounds, kinds)
    if "memory" not in args.skip:
        m = measure_memory(args.memory_peers, args.memory_swarms)
        print(
            f"memory: MemoryStore with {m['peers']:,} peers in {m['swarms']:,} swarms: "
            f"{m['traced'] / m['peers']:.0f} bytes/peer (tracemalloc), {m['rss'] / m['peers']:.0f} bytes/peer (RSS growth)"
            " (target <= 200)"
        )
        f = measure_memory(args.memory_flood, args.memory_flood)
        print(
            f"memory: {f['swarms']:,} swarms of one peer (a flood of random info hashes): "
            f"{f['traced'] / f['swarms']:.0f} bytes/swarm (tracemalloc), {f['rss'] / f['swarms']:.0f} (RSS growth)"
        )
    return 0


def ceiling(r: dict[str, Any]) -> float:
    """Announces/s on a whole idle core: the lower of the server's and the generator's,
    each from its CPU seconds per announce."""
    n = max(r["requests"], 1)
    server = n / r["server_cpu_s"] if r["server_cpu_s"] else float("inf")
    gen = n / r["gen_cpu_s"] if r["gen_cpu_s"] else float("inf")
    return min(server, gen)


def report(results: dict[str, dict[str, Any]]) -> None:
    """One round: the table of runs, each side's ceiling on a whole core."""
    print(
        f"{'run':<23} {'announces/s':>12} {'server CPU':>11} {'gen CPU':>8} {'server ms/ann':>14} "
        f"{'server ceiling':>15} {'gen ceiling':>12}  notes"
    )
    for key, r in results.items():
        server_util = r["server_cpu_s"] / r["seconds"]
        gen_util = r["gen_cpu_s"] / r["seconds"]
        n = max(r["requests"], 1)
        per_ann = r["server_cpu_s"] / n * 1000
        server_ceiling = n / r["server_cpu_s"] if r["server_cpu_s"] else float("inf")
        gen_ceiling = n / r["gen_cpu_s"] if r["gen_cpu_s"] else float("inf")
        if server_util > 0.9 and server_util >= gen_util:
            bottleneck = "server"
        elif gen_util > 0.9:
            bottleneck = "generator"
        else:  # neither process got a whole core: other work was using the machine
            bottleneck = "CPU contention"
        notes = f"bottleneck: {bottleneck}"
        if r.get("socket_errors"):
            notes += f"; wrk socket errors: {r['socket_errors']}"
        if r.get("non2xx"):
            notes += f"; non-2xx {r['non2xx']}"
        if r.get("errors"):
            notes += f"; error answers {r['errors']}"
        print(
            f"{key:<23} {r['rate']:>12,.0f} {server_util:>10.0%} {gen_util:>8.0%} {per_ann:>14.4f} "
            f"{server_ceiling:>14,.0f}/s {gen_ceiling:>11,.0f}/s  {notes}"
        )


def summary(rounds: list[dict[str, dict[str, Any]]], kinds: list[str]) -> None:
    """Medians over the rounds of each run's figures and of pytorrent / opentracker."""
    print(f"\nmedians of {len(rounds)} rounds:")
    print(
        f"{'run':<12} {'opentracker/s':>14} {'pytorrent/s':>12} {'measured':>9} {'projected':>10} "
        f"{'server ms/ann (ot, ours)':>25}  per-round projected"
    )
    for kind in kinds:
        ours = [r[f"pytorrent {kind}"] for r in rounds if f"pytorrent {kind}" in r]
        refs = [r[f"opentracker {kind}"] for r in rounds if f"opentracker {kind}" in r]
        ours_rate = statistics.median(r["rate"] for r in ours)
        our_ms = statistics.median(r["server_cpu_s"] / max(r["requests"], 1) * 1000 for r in ours)
        if len(refs) != len(ours):
            print(f"{kind:<12} {'-':>14} {ours_rate:>12,.0f} {'':>9} {'':>10} {'-':>12}, {our_ms:.4f}")
            continue
        measured = [o["rate"] / r["rate"] for o, r in zip(ours, refs, strict=True)]
        projected = [ceiling(o) / ceiling(r) for o, r in zip(ours, refs, strict=True)]
        ref_ms = statistics.median(r["server_cpu_s"] / max(r["requests"], 1) * 1000 for r in refs)
        print(
            f"{kind:<12} {statistics.median(r['rate'] for r in refs):>14,.0f} {ours_rate:>12,.0f} "
            f"{statistics.median(measured):>8.2f}x {statistics.median(projected):>9.2f}x "
            f"{ref_ms:>13.4f}, {our_ms:.4f}  " + " ".join(f"{p:.2f}x" for p in projected)
        )
    print(
        "(measured: announces/s in the same round; projected: each pair's ceiling on whole cores; target >= 0.5x)"
    )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
