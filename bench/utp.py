"""uTP (BEP 29) throughput on loopback at MTU 1500: four pairings, our CPU, the Python ceiling.

Usage (as root, the script re-runs itself in a loopback-only network namespace and sets
``lo``'s MTU to 1500 there):

    python bench/utp.py [--size-mib 256] [--runs 1] [--only a,b,c,d] [--echo-s 3]

Pairings, side by side in one run, every one over uTP only:

  (a) libtorrent seed -> libtorrent leecher   (the reference; the leecher's
      ``recv_socket_buffer_size`` is 4 MiB, without which the kernel drops its UDP)
  (b) libtorrent seed -> our leecher
  (c) our seed        -> our leecher
  (d) our seed        -> libtorrent leecher   (its ``recv_socket_buffer_size`` 4 MiB too)

libtorrent runs in this process with TCP off both ways (``enable_incoming_tcp`` /
``enable_outgoing_tcp`` False, uTP on) and MSE off (ours run with ``--encryption off``). Ours are ``python -m cli.main`` processes with their
defaults (uTP dialled first) and ``--encryption off``; in (c) the run checks that no TCP
connection carried the transfer (``/proc/net/tcp`` of the namespace, sampled while it runs).
Timing, CPU seconds (``wait4``) and peak RSS as in ``bench/transfer.py``; CPU is also given as
seconds per GiB moved: of our leecher in (b) and (c), of our seed in (d), and in (c) of the
seed as well (a seed's figure includes checking the payload at start). Bytecode is compiled
first, as an installed copy has it. ``--profile DIR`` runs our processes under cProfile.

``--echo-s``: the ceiling of Python datagram handling here: one asyncio datagram endpoint
sending 1,452-byte datagrams to another that echoes them (a window of 64 in flight), for that
many seconds; datagrams per second each way. And ``--sim-mib``: the sans-IO state machine
alone, two connections moving that much in memory (no sockets): microseconds per data packet
(sender and receiver together, ACKs included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import transfer as tb  # noqa: E402

GIB = 1 << 30
ECHO_SIZE = 1452

UTP_ONLY: dict[str, object] = {
    "enable_incoming_tcp": False,
    "enable_outgoing_tcp": False,
    "enable_incoming_utp": True,
    "enable_outgoing_utp": True,
}


def lt_session(port: int, *, receiver: bool) -> Any:
    import libtorrent as lt

    settings: Any = {
        # Plaintext, as ours run with --encryption off: libtorrent's default tries MSE first
        # and, refused, redials a second later, which would be timed as transfer.
        "out_enc_policy": int(lt.enc_policy.disabled),
        "in_enc_policy": int(lt.enc_policy.disabled),
        "listen_interfaces": f"127.0.0.1:{port}",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": 0,
        **UTP_ONLY,
    }
    if receiver:
        settings["recv_socket_buffer_size"] = 4 << 20
    return lt.session(settings)


def tcp_established_on(port: int) -> bool:
    """An established TCP connection to or from ``port`` in this namespace."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if state == "01" and (int(local.split(":")[1], 16) == port or int(remote.split(":")[1], 16) == port):
            return True
    return False


#: Extra arguments before our subcommand (``--no-uvloop``).
OURS_GLOBAL: list[str] = []
#: ``--profile``: where our processes write their cProfile statistics (None: not profiled).
PROFILE_DIR: Path | None = None
PROFILE_RUNS: list[str] = []
#: Runs ``cli.main`` under cProfile timed by the main thread's CPU clock: wall time would
#: charge whatever runs when the machine's other load preempts us, and the disk threads'
#: CPU is not the loop's.
PROFILE_STUB = """
import cProfile, runpy, sys, time
out = sys.argv[1]
sys.argv = ["cli.main", *sys.argv[2:]]
prof = cProfile.Profile(time.thread_time)
try:
    prof.runcall(runpy.run_module, "cli.main", run_name="__main__", alter_sys=True)
except (SystemExit, KeyboardInterrupt):
    pass
finally:
    prof.dump_stats(out)
"""


def ours(args: list[str], log: Path) -> tb.Proc:
    argv = [
        *OURS_GLOBAL,
        *args,
        "--no-dht",
        "--no-lsd",
        "--no-port-mapping",
        "--json",
        "--bind",
        "127.0.0.1",
        "--encryption",
        "off",
    ]
    if PROFILE_DIR is None:
        return tb.spawn(argv, log)
    PROFILE_RUNS.append(log.stem)
    out = PROFILE_DIR / f"{len(PROFILE_RUNS):02d}-{log.stem}.prof"
    f = open(log, "wb")  # noqa: SIM115 - closed with the process
    p = subprocess.Popen(
        [sys.executable, "-c", PROFILE_STUB, str(out), *argv],
        cwd=tb.ROOT,
        stdout=f,
        stderr=subprocess.STDOUT,
    )
    return tb.Proc(p, time.monotonic())


async def run_pair(
    kind: str, work: Path, torrent: Path, data_dir: Path, size: int, seeds: list[tb.Proc]
) -> tuple[float, tb.Proc | None]:
    """(MB/s, our process to report: the leecher, or in (d) the seed); our seed, once
    stopped, is appended to ``seeds``."""
    out = work / f"out-{kind}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    seed_port, leech_port = tb.free_port(), tb.free_port()
    sessions: list[Any] = []
    our_seed: tb.Proc | None = None
    try:
        if kind in ("a", "b"):
            seed_lt = lt_session(seed_port, receiver=False)
            sessions.append(seed_lt)
            tb.lt_add(seed_lt, torrent, data_dir, seed=True)
            await asyncio.sleep(0.2)
        else:
            seed_log = work / f"seed-{kind}.log"
            our_seed = ours(["seed", str(torrent), str(data_dir), "--port", str(seed_port)], seed_log)
            await tb.wait_listening(seed_port)
            await tb.wait_checked(seed_log)
        if kind in ("a", "d"):
            leech_lt = lt_session(leech_port, receiver=True)
            sessions.append(leech_lt)
            t0 = time.monotonic()
            h = tb.lt_add(leech_lt, torrent, out, seed=False)
            h.connect_peer(("127.0.0.1", seed_port))
            await tb.lt_wait(h, "seeding")
            return size / (time.monotonic() - t0) / 1e6, our_seed
        leech_log = work / f"leech-{kind}.log"
        leech = ours(
            [
                "download",
                str(torrent),
                "-o",
                str(out),
                "--no-seed",
                "--port",
                str(leech_port),
                "--peer",
                f"127.0.0.1:{seed_port}",
            ],
            leech_log,
        )
        tcp_seen: list[bool] = []

        async def sample() -> None:
            while True:
                if tcp_established_on(seed_port):
                    tcp_seen.append(True)
                await asyncio.sleep(0.05)

        sampler = asyncio.ensure_future(sample())
        try:
            await tb.reap(leech)
        finally:
            sampler.cancel()
        log = leech_log.read_text()
        if leech.status != 0:
            raise RuntimeError(f"our leecher exited {leech.status}: {log[-500:]}")
        if tcp_seen:
            raise RuntimeError("the transfer went over TCP")
        times: dict[str, float] = {}
        for line in log.splitlines():
            if line.startswith("{"):
                ev = json.loads(line)
                times.setdefault(ev["event"], ev["time"])
        return size / (times["completed"] - times["checked"]) / 1e6, leech
    finally:
        if our_seed is not None:
            seeds.append(await tb.stop(our_seed))
        sessions.clear()
        shutil.rmtree(out, ignore_errors=True)


# --------------------------------------------------------------------------- ceilings


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


class _Pinger(asyncio.DatagramProtocol):
    def __init__(self, window: int) -> None:
        self.window = window
        self.got = 0
        self.payload = bytes(ECHO_SIZE)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        for _ in range(self.window):
            transport.sendto(self.payload)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got += 1
        self.transport.sendto(self.payload)


async def echo_ceiling(seconds: float) -> float:
    """Datagrams per second each way through a do-nothing asyncio echo (one process)."""
    loop = asyncio.get_running_loop()
    server, _ = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
    port = server.get_extra_info("sockname")[1]
    client, pinger = await loop.create_datagram_endpoint(lambda: _Pinger(64), remote_addr=("127.0.0.1", port))
    try:
        await asyncio.sleep(0.5)
        start, t0 = pinger.got, time.monotonic()
        await asyncio.sleep(seconds)
        return (pinger.got - start) / (time.monotonic() - t0)
    finally:
        client.close()
        server.close()


def sim_cost(mib: int) -> tuple[float, int]:
    """(µs per data packet, packets) for the two state machines alone, lossless, in memory."""
    from torrent.proto.utp import UtpConnection, UtpCounters

    c = UtpCounters()
    a = UtpConnection.dial(recv_id=7, seq_nr=1, now=0.0, counters=c)
    b = UtpConnection.accept(a.outgoing.pop(), seq_nr=100, now=0.0, counters=c)
    assert b is not None
    a.receive(b.outgoing.pop(), 0.0)
    chunk = bytes(256 * 1024)
    total = mib << 20
    got = 0
    packets = 0
    now = 0.0
    t0 = time.process_time()
    while got < total:
        if a.send_buffer_bytes < (1 << 20):
            a.write(chunk)
        a.flush(now)
        out = a.outgoing
        a.outgoing = []
        packets += len(out)
        for d in out:
            b.receive(d, now)
        b.flush(now)
        for d in b.outgoing:
            a.receive(d, now)
        b.outgoing.clear()
        got += sum(len(x) for x in b.received)
        b.received.clear()
        now += 0.0001
    cpu = time.process_time() - t0
    return cpu / packets * 1e6, packets


# --------------------------------------------------------------------------- main


async def main_async(args: argparse.Namespace) -> None:
    size = args.size_mib * 1024 * 1024
    kinds = [k.strip() for k in args.only.split(",") if k.strip()]
    names = {
        "a": "(a) libtorrent seed -> libtorrent leecher",
        "b": "(b) libtorrent seed -> our leecher",
        "c": "(c) our seed -> our leecher",
        "d": "(d) our seed -> libtorrent leecher",
    }
    results: dict[str, tb.Result] = {k: tb.Result() for k in kinds}
    with tempfile.TemporaryDirectory(prefix="bench-utp-") as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        data_dir.mkdir()
        torrent = work / "bench.torrent"
        torrent.write_bytes(tb.make_payload(data_dir / "payload.bin", size))
        print(
            f"payload: {args.size_mib} MiB, piece length {tb.PIECE_LENGTH // 1024} KiB, lo MTU 1500, uTP only"
        )
        for run in range(args.runs):
            for k in kinds:
                seeds: list[tb.Proc] = []
                try:
                    rate, proc = await run_pair(k, work, torrent, data_dir, size, seeds)
                except Exception as exc:  # report and go on with the other pairings
                    results[k].note = f"failed: {exc}"
                    print(f"run {run + 1} {names[k]}: {results[k].note}", flush=True)
                    continue
                results[k].rates.append(rate)
                extra = ""
                if proc is not None:
                    results[k].cpu.append(proc.cpu_s)
                    results[k].rss.append(proc.max_rss_mib)
                    extra = (
                        f", ours: {proc.cpu_s:.1f} CPU s ({proc.cpu_s / (size / GIB):.1f} s/GiB),"
                        f" peak RSS {proc.max_rss_mib:.0f} MiB"
                    )
                if k == "c" and seeds:
                    extra += (
                        f"; our seed: {seeds[0].cpu_s:.1f} CPU s ({seeds[0].cpu_s / (size / GIB):.1f} s/GiB)"
                    )
                print(f"run {run + 1} {names[k]}: {rate:.1f} MB/s{extra}", flush=True)
    print()
    print(f"{'pairing':45} {'MB/s median':>12} {'runs':>16} {'CPU s/GiB':>10} {'RSS MiB':>8}")
    ref = statistics.median(results["a"].rates) if "a" in results and results["a"].rates else None
    for k in kinds:
        r = results[k]
        if not r.rates:
            print(f"{names[k]:45} {'-':>12}  {r.note}")
            continue
        med = statistics.median(r.rates)
        runs = " ".join(f"{x:.1f}" for x in r.rates)
        cpu = f"{statistics.median(r.cpu) / (size / GIB):.1f}" if r.cpu else "-"
        rss = f"{statistics.median(r.rss):.0f}" if r.rss else "-"
        ratio = f"  ({med / ref:.2f}x a)" if ref and k != "a" else ""
        print(f"{names[k]:45} {med:12.1f} {runs:>16} {cpu:>10} {rss:>8}{ratio}")
    if args.echo_s > 0:
        rate = await echo_ceiling(args.echo_s)
        print(
            f"\nceiling: do-nothing asyncio echo of {ECHO_SIZE}-byte datagrams: {rate:,.0f} datagrams/s each way"
            f" ({rate * ECHO_SIZE / 1e6:.0f} MB/s of payload)"
        )
    if args.sim_mib > 0:
        us, packets = sim_cost(args.sim_mib)
        print(
            f"state machines alone ({args.sim_mib} MiB, {packets} data packets): {us:.1f} µs CPU per data packet"
        )


def set_lo_mtu(mtu: int) -> None:
    subprocess.run(["ip", "link", "set", "lo", "mtu", str(mtu)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--only", default="a,b,c,d")
    parser.add_argument("--echo-s", type=float, default=3.0)
    parser.add_argument("--sim-mib", type=int, default=64)
    parser.add_argument("--no-uvloop", action="store_true", help="run our processes on asyncio's own loop")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="run our processes under cProfile, statistics into DIR"
    )
    args = parser.parse_args()
    if args.no_uvloop:
        OURS_GLOBAL.append("--no-uvloop")
    if args.profile is not None:
        global PROFILE_DIR
        PROFILE_DIR = args.profile.resolve()
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    tb.reexec_isolated()
    tb.compile_bytecode()  # as an installed copy has it: not timed as our CPU
    set_lo_mtu(1500)  # only ever inside the namespace reexec_isolated made
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
