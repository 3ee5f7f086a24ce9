"""Transfer throughput on loopback: a single-file torrent (1 GiB by default), four pairings.

Usage (as root, the script re-runs itself in a loopback-only network namespace):

    python bench/transfer.py [--size-mib 1024] [--runs 3] [--only a,b,c,d] [--encryption rc4]
                             [--format v1|v2|hybrid]

Pairings, side by side in one run:

  (a) libtorrent seed -> libtorrent leecher   (the reference)
  (b) libtorrent seed -> our leecher
  (c) our seed        -> our leecher
  (d) our seed        -> libtorrent leecher

libtorrent runs in this process (TCP only: uTP crawls on loopback; DHT/LSD/UPnP/NAT-PMP
off; ``allow_multiple_connections_per_ip``). Ours run with ``--no-utp`` too, so every pairing
measures the TCP data path (our connector would otherwise try uTP first: (c) would time
our uTP stack, and (b) would wait for libtorrent's unanswered SYN before TCP). Our client runs as ``python -m cli.main``
subprocesses: their CPU seconds come from ``wait4``, their peak RSS from ``VmHWM``. Peers
find each other directly (``--peer`` / ``connect_peer``), no tracker, so the figure is the
data path alone. Transfers are timed from the torrent being added to every piece
verified: for our leecher from its ``checked`` to its ``completed`` JSON event (process
start-up excluded; its CPU seconds include it).

``--encryption plaintext`` (the default) runs our processes with ``--encryption off`` and
libtorrent with its defaults. ``--encryption rc4`` forces MSE with RC4 on every peer:
libtorrent with ``in_enc_policy`` = ``out_enc_policy`` = forced and ``allowed_enc_level`` = RC4,
ours with ``--encryption require``; the run checks that each libtorrent connection was RC4.

``--format v2`` (or ``hybrid``) makes the torrent with ``torrent.create`` in that format
(BEP 52: every piece checked against its merkle node, and for a hybrid its SHA-1 too).

Prints, per pairing: MB/s median (and every run), and for our processes CPU seconds and
peak RSS (median). MB = 10^6 bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from torrent.proto import bencoding  # noqa: E402

PIECE_LENGTH = 1 << 20
TIMEOUT_S = 300.0


def only_loopback() -> bool:
    return [n for _, n in socket.if_nameindex()] == ["lo"]


def reexec_isolated() -> None:
    """Re-run this script inside a fresh network namespace that has only loopback."""
    if only_loopback():
        return
    if os.geteuid() != 0:
        sys.exit(f"{Path(sys.argv[0]).name}: runs only in a loopback-only network namespace; run as root")
    cmd = " ".join(["exec", sys.executable, *map(_quote, sys.argv)])
    os.execvp("unshare", ["unshare", "--net", "--", "sh", "-c", f"ip link set lo up && {cmd}"])


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def compile_bytecode(root: Path = ROOT) -> None:
    """Compile the package's bytecode once, as ``pip install`` does: a checkout run with
    ``PYTHONDONTWRITEBYTECODE`` would otherwise compile every module in every process it
    starts (0.3-0.6 CPU seconds each), which no user's process pays."""
    import compileall

    for package in ("torrent", "tracker", "cli"):
        compileall.compile_dir(root / package, quiet=1)


def prepare_run(baseline: str | None = None) -> str | None:
    """What a bench that starts our processes does first: re-run itself in a loopback-only
    namespace and compile the bytecode, of ``baseline`` (another checkout) too; returns
    ``baseline`` made absolute."""
    reexec_isolated()
    compile_bytecode()
    if not baseline:
        return baseline
    baseline = str(Path(baseline).resolve())
    compile_bytecode(Path(baseline))
    return baseline


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_payload(path: Path, size: int) -> bytes:
    """Random content (not compressible, no repeated pieces); returns the .torrent bytes."""
    pieces = []
    chunk = PIECE_LENGTH
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(chunk, left)
            data = os.urandom(n)
            f.write(data)
            pieces.append(hashlib.sha1(data).digest())
            left -= n
    info = {
        b"length": size,
        b"name": path.name.encode(),
        b"piece length": PIECE_LENGTH,
        b"pieces": b"".join(pieces),
    }
    return bencoding.encode({b"info": info, b"created by": b"bench/transfer.py"})


# --------------------------------------------------------------------------- libtorrent


#: Extra libtorrent settings and our CLI flags, per ``--encryption``.
ENCRYPTION: dict[str, tuple[dict[str, int], list[str]]] = {}


def encryption_modes() -> None:
    import libtorrent as lt

    forced = int(lt.enc_policy.forced)
    ENCRYPTION["plaintext"] = ({}, ["--encryption", "off"])
    ENCRYPTION["rc4"] = (
        {"in_enc_policy": forced, "out_enc_policy": forced, "allowed_enc_level": int(lt.enc_level.rc4)},
        ["--encryption", "require"],
    )


MODE = "plaintext"


def lt_session(port: int) -> Any:
    import libtorrent as lt

    return lt.session(
        {
            **ENCRYPTION[MODE][0],
            "listen_interfaces": f"127.0.0.1:{port}",
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "enable_outgoing_utp": False,
            "enable_incoming_utp": False,
            "allow_multiple_connections_per_ip": True,
            "alert_mask": 0,
        }
    )


def lt_add(ses: Any, torrent: Path, save: Path, *, seed: bool) -> Any:
    import libtorrent as lt

    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(str(torrent))
    atp.save_path = str(save)
    atp.flags &= ~lt.torrent_flags.auto_managed
    atp.flags &= ~lt.torrent_flags.paused
    atp.flags |= lt.torrent_flags.disable_pex | lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd
    if seed:
        atp.flags |= lt.torrent_flags.seed_mode  # trust the data: no recheck in the timing
    return ses.add_torrent(atp)


def rc4_listed(handle: Any) -> bool:
    """libtorrent lists an RC4-encrypted connection of ``handle``."""
    import libtorrent as lt

    return any(int(p.flags) & int(lt.peer_info.rc4_encrypted) for p in handle.get_peer_info())


async def lt_wait(handle: Any, pred: str, timeout_s: float = TIMEOUT_S) -> bool:
    """Until ``pred``; returns whether an RC4-encrypted connection was seen meanwhile."""
    rc4 = False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = handle.status()
        if pred == "seeding" and st.is_seeding:
            return rc4
        if pred == "listening" and st.state in (3, 5):  # downloading / seeding
            return rc4
        if MODE == "rc4" and not rc4:
            rc4 = rc4_listed(handle)
        await asyncio.sleep(0.02)
    raise TimeoutError(f"libtorrent did not reach {pred} within {timeout_s} s")


# --------------------------------------------------------------------------- ours


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    started: float
    wall_s: float = 0.0
    cpu_s: float = 0.0
    sys_s: float = 0.0  # the kernel's part of cpu_s
    max_rss_mib: float = 0.0
    status: int = 0


def spawn(args: list[str], log: Path) -> Proc:
    f = open(log, "wb")  # noqa: SIM115 - closed with the process
    p = subprocess.Popen(
        [sys.executable, "-m", "cli.main", *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT
    )
    return Proc(p, time.monotonic())


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set of ``pid`` (``VmHWM``), 0 when it is gone.

    Not ``ru_maxrss`` from ``wait4``: a child's high-water mark starts at its parent's
    resident set at fork, and this process holds the payload it generated.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


async def reap(proc: Proc, timeout_s: float = TIMEOUT_S) -> Proc:
    """Wait for the process (polling wait4 and its VmHWM) and fill in its figures."""
    deadline = time.monotonic() + timeout_s
    hwm = 0
    while True:
        hwm = max(hwm, vm_hwm_kib(proc.popen.pid))
        pid, status, ru = await asyncio.to_thread(os.wait4, proc.popen.pid, os.WNOHANG)
        if pid:
            proc.wall_s = time.monotonic() - proc.started
            proc.cpu_s = ru.ru_utime + ru.ru_stime
            proc.sys_s = ru.ru_stime
            proc.max_rss_mib = hwm / 1024
            proc.status = os.waitstatus_to_exitcode(status)
            proc.popen.returncode = proc.status
            return proc
        if time.monotonic() > deadline:
            proc.popen.kill()
            raise TimeoutError(f"process {proc.popen.args} did not finish in {timeout_s} s")
        await asyncio.sleep(0.01)


async def stop(proc: Proc) -> Proc:
    if proc.popen.returncode is None:
        # Its peak before the signal: a process that exits at once is gone (a zombie, with
        # no VmHWM) before reap's first look, which would report a peak RSS of 0.
        peak_mib = vm_hwm_kib(proc.popen.pid) / 1024
        proc.popen.send_signal(2)  # SIGINT: a clean stop
        try:
            await reap(proc, 10)
        except TimeoutError:
            proc.popen.kill()
            await reap(proc, 10)
        proc.max_rss_mib = max(proc.max_rss_mib, peak_mib)
    return proc


async def wait_listening(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


async def wait_checked(log: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if '"state":"seeding"' in await asyncio.to_thread(log.read_text):
            return
        await asyncio.sleep(0.05)
    text = await asyncio.to_thread(log.read_text)
    raise TimeoutError(f"our seed did not finish checking: {text[-300:]}")


# --------------------------------------------------------------------------- pairings


@dataclass
class Result:
    rates: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    note: str = ""


def check_rc4(kind: str, seen: bool) -> None:
    if MODE == "rc4" and not seen:
        raise RuntimeError(f"({kind}): libtorrent listed no RC4-encrypted connection")


async def run_pair(
    kind: str, work: Path, torrent: Path, data_dir: Path, size: int
) -> tuple[float, Proc | None]:
    """One transfer; returns (MB/s, our measured process or None)."""
    out = work / f"out-{kind}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    seed_port, leech_port = free_port(), free_port()
    seed_lt = leech_lt = None
    our_seed: Proc | None = None
    try:
        if kind in ("a", "b"):
            seed_lt = lt_session(seed_port)
            seed_handle = lt_add(seed_lt, torrent, data_dir, seed=True)
            await asyncio.sleep(0.2)
        else:
            seed_log = work / f"seed-{kind}.log"
            our_seed = spawn(
                [
                    "seed",
                    "--no-dht",
                    "--no-lsd",
                    "--no-utp",
                    "--no-port-mapping",
                    str(torrent),
                    str(data_dir),
                    "--port",
                    str(seed_port),
                    "--bind",
                    "127.0.0.1",
                    "--json",
                    *ENCRYPTION[MODE][1],
                ],
                seed_log,
            )
            await wait_listening(seed_port)
            # The seed verifies the data (or trusts its resume state) before it takes peers.
            await wait_checked(seed_log)
        if kind in ("a", "d"):
            leech_lt = lt_session(leech_port)
            t0 = time.monotonic()
            h = lt_add(leech_lt, torrent, out, seed=False)
            h.connect_peer(("127.0.0.1", seed_port))
            rc4 = await lt_wait(h, "seeding")
            check_rc4(kind, rc4)
            return size / (time.monotonic() - t0) / 1e6, our_seed
        leech = spawn(
            [
                "download",
                "--no-dht",
                "--no-lsd",
                "--no-utp",
                "--no-port-mapping",
                str(torrent),
                "-o",
                str(out),
                "--no-seed",
                "--json",
                "--port",
                str(leech_port),
                "--bind",
                "127.0.0.1",
                "--peer",
                f"127.0.0.1:{seed_port}",
                *ENCRYPTION[MODE][1],
            ],
            work / f"leech-{kind}.log",
        )
        if seed_lt is not None and MODE == "rc4":
            rc4 = False
            while leech.popen.poll() is None and not rc4:
                rc4 = rc4_listed(seed_handle)
                await asyncio.sleep(0.02)
            check_rc4(kind, rc4)
        await reap(leech)
        log = (work / f"leech-{kind}.log").read_text()
        if leech.status != 0:
            raise RuntimeError(f"our leecher exited {leech.status}: {log[-500:]}")
        # Time the transfer as libtorrent's is timed: from the torrent being added (our
        # "checked" event, start-up and imports excluded) to every piece verified.
        times = {}
        for line in log.splitlines():
            if line.startswith("{"):
                ev = json.loads(line)
                times.setdefault(ev["event"], ev["time"])
        took = times["completed"] - times["checked"]
        return size / took / 1e6, leech
    finally:
        if our_seed is not None:
            await stop(our_seed)
        for ses in (seed_lt, leech_lt):
            if ses is not None:
                del ses
        shutil.rmtree(out, ignore_errors=True)


async def main_async(args: argparse.Namespace) -> None:
    size = args.size_mib * 1024 * 1024
    kinds = [k.strip() for k in args.only.split(",")]
    names = {
        "a": "(a) libtorrent seed -> libtorrent leecher",
        "b": "(b) libtorrent seed -> our leecher",
        "c": "(c) our seed -> our leecher",
        "d": "(d) our seed -> libtorrent leecher",
    }
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        data_dir.mkdir()
        torrent = work / "bench.torrent"
        t0 = time.monotonic()
        torrent.write_bytes(make_payload(data_dir / "payload.bin", size))
        if args.format != "v1":
            from torrent.create import create

            meta = create(data_dir / "payload.bin", piece_length=PIECE_LENGTH, torrent_format=args.format)
            torrent.write_bytes(meta.to_bytes())
        print(f"encryption: {MODE}, format: {args.format}")
        print(
            f"payload: {args.size_mib} MiB, piece length {PIECE_LENGTH // 1024} KiB, made in {time.monotonic() - t0:.1f} s"
        )
        results = {k: Result() for k in kinds}
        for run in range(args.runs):
            # Reversed every other run: a run's place in the sequence shows in its figures
            # (see bench/leech_phases.py), so a fixed order favours one pairing.
            for k in kinds if run % 2 == 0 else kinds[::-1]:
                try:
                    rate, proc = await run_pair(k, work, torrent, data_dir, size)
                except Exception as exc:  # report and go on with the other pairings
                    results[k].note = f"failed: {exc}"
                    print(f"run {run + 1} {names[k]}: {results[k].note}", flush=True)
                    continue
                results[k].rates.append(rate)
                if proc is not None:
                    results[k].cpu.append(proc.cpu_s)
                    results[k].rss.append(proc.max_rss_mib)
                extra = f", ours: {proc.cpu_s:.1f} CPU s, peak RSS {proc.max_rss_mib:.0f} MiB" if proc else ""
                print(f"run {run + 1} {names[k]}: {rate:.0f} MB/s{extra}", flush=True)
    print()
    print(f"{'pairing':45} {'MB/s median':>12} {'runs':>22} {'CPU s':>7} {'RSS MiB':>8}")
    ref = statistics.median(results["a"].rates) if "a" in results and results["a"].rates else None
    for k in kinds:
        r = results[k]
        if not r.rates:
            print(f"{names[k]:45} {'-':>12}  {r.note}")
            continue
        med = statistics.median(r.rates)
        runs = " ".join(f"{x:.0f}" for x in r.rates)
        cpu = f"{statistics.median(r.cpu):.1f}" if r.cpu else "-"
        rss = f"{statistics.median(r.rss):.0f}" if r.rss else "-"
        ratio = f"  ({med / ref:.2f}x a)" if ref and k != "a" else ""
        print(f"{names[k]:45} {med:12.0f} {runs:>22} {cpu:>7} {rss:>8}{ratio}")
    print(
        "\nour process: the leecher in (b) and (c), the seed in (d); CPU s = user+sys of that "
        "process, RSS = its peak resident set (VmHWM); machine: 2 cores, shared with other work."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="a,b,c,d")
    parser.add_argument("--format", choices=("v1", "v2", "hybrid"), default="v1", help="torrent format")
    parser.add_argument(
        "--encryption",
        choices=("plaintext", "rc4"),
        default="plaintext",
        help="MSE with RC4 forced on every peer",
    )
    args = parser.parse_args()
    reexec_isolated()
    compile_bytecode()
    global MODE
    MODE = args.encryption
    encryption_modes()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
