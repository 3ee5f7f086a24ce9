"""Daemon benchmark: ``pytorrent daemon`` beside ``transmission-daemon`` at N torrents, same run.

For each N (default 1,000 and 2,000) and each daemon, with N small complete torrents
(one 16 KiB file each, data already in the download directory):

1. start the daemon (RPC and peer port on loopback, DHT/LSD/port mapping off) and read
   its idle RSS (ours once its web server, which loads after the RPC first answers, is
   loaded);
2. add the N torrents over RPC (``torrent-add``, base64 metainfo), 8 requests in flight
   on 8 keep-alive connections, each request encoded before the clock starts (the time,
   the CPU time the daemon used meanwhile, and the bench client's own CPU: a plain HTTP
   client, so that the figure is the daemon's, not the client's);
3. wait until ``torrent-get`` lists every one complete and seeding (``percentDone`` 1,
   ``status`` 6);
4. ``torrent-get`` of 7 list fields over all torrents, a fresh connection per call:
   median latency of 20 calls;
5. RSS now, and (RSS - idle RSS) / N as the memory per torrent; CPU used over 5 s idle;
6. stop it (SIGTERM), start it again, and time until every torrent is listed complete
   and seeding (and, separately, until its RPC answers at all: the process start-up).
   Our daemon runs with its bytecode cached (``PYTHONPYCACHEPREFIX`` in the work
   directory, written before the first start) as an installed package has it.

A wait that passes ``--timeout`` is reported as ``> T`` and the run goes on with the
figures that do not depend on it (transmission-daemon checks one torrent at a time:
about 0.1 s each, so 10,000 take some 17 minutes).

Usage (inside a loopback-only namespace, as root)::

    unshare --net -- sh -c 'ip link set lo up && exec python bench/daemon.py'
    python bench/daemon.py --n 1000 2000 10000 --only pytorrent

Needs ``transmission-daemon`` on PATH for its column (Debian package).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from torrent.proto import bencoding  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PIECE = 16 * 1024
LIST_FIELDS = ["id", "name", "status", "percentDone", "rateDownload", "rateUpload", "eta"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def make_torrents(data_dir: Path, n: int) -> list[bytes]:
    """N single-file torrents of one 16 KiB piece each; their data written to ``data_dir``."""
    out = []
    data_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = f"t{i:06d}.bin"
        payload = hashlib.sha256(str(i).encode()).digest() * (PIECE // 32)
        (data_dir / name).write_bytes(payload)
        info = {
            b"length": len(payload),
            b"name": name.encode(),
            b"piece length": PIECE,
            b"pieces": hashlib.sha1(payload).digest(),
        }
        out.append(bencoding.encode({b"info": info}))
    return out


@dataclass
class Rpc:
    url: str
    sid: str = ""

    async def call(self, http: aiohttp.ClientSession, method: str, **arguments: Any) -> dict[str, Any]:
        for _ in range(3):
            async with http.post(
                self.url,
                json={"method": method, "arguments": arguments},
                headers={"X-Transmission-Session-Id": self.sid},
            ) as resp:
                if resp.status == 409:
                    self.sid = resp.headers["X-Transmission-Session-Id"]
                    continue
                body = await resp.json(content_type=None)
                if body.get("result") != "success":
                    raise RuntimeError(f"{method}: {body.get('result')}")
                out: dict[str, Any] = body.get("arguments", {})
                return out
        raise RuntimeError("no session id")


#: Requests in flight while adding, each on its own keep-alive connection.
IN_FLIGHT = 8


def own_cpu_s() -> float:
    """CPU seconds this process (the bench's client) has used so far."""
    t = os.times()
    return t.user + t.system


def add_request(port: int, sid: str, metainfo: bytes, download_dir: str) -> bytes:
    """A whole ``torrent-add`` HTTP request, encoded before the clock starts."""
    body = json.dumps(
        {
            "method": "torrent-add",
            "arguments": {"metainfo": base64.b64encode(metainfo).decode(), "download-dir": download_dir},
        }
    ).encode()
    head = (
        f"POST /transmission/rpc HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"X-Transmission-Session-Id: {sid}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def add_worker(port: int, requests: list[bytes]) -> None:
    """Send ``requests`` one at a time on one keep-alive connection, until none is left.

    A plain HTTP/1.1 client: the bench's own CPU per request (an aiohttp client spent
    about 0.15-0.19 s on 1,000 adds, as much as the daemons) is not what is measured.
    Every answer must be a 200 whose JSON says ``success``.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while requests:
            writer.write(requests.pop())
            head = await reader.readuntil(b"\r\n\r\n")
            status, _, rest = head.partition(b"\r\n")
            if status.split(b" ", 2)[1] != b"200":
                raise RuntimeError(f"torrent-add: {status.decode(errors='replace')}")
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(b":") for line in rest.split(b"\r\n") if line)
            }
            if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                body = b""
                while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                    body += (await reader.readexactly(size + 2))[:-2]
                await reader.readuntil(b"\r\n")
            else:
                body = await reader.readexactly(int(headers[b"content-length"]))
            if json.loads(body).get("result") != "success":
                raise RuntimeError(f"torrent-add: {body[:200]!r}")
    finally:
        writer.close()


class Daemon:
    name = ""

    def __init__(self, work: Path, data_dir: Path) -> None:
        self.work = work
        self.data_dir = data_dir
        self.rpc_port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        log = open(self.work / f"{self.name}.log", "ab")  # noqa: SIM115 - the process keeps it
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, cwd=ROOT, env=self.env())

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def prepare(self) -> None:
        """Anything done once before the first start (not measured)."""

    async def settle(self, http: aiohttp.ClientSession, rpc: Rpc) -> None:
        """Anything the daemon loads after its RPC answers, done before its idle RSS is read."""

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


class Ours(Daemon):
    name = "pytorrent"

    def env(self) -> dict[str, str]:
        """Bytecode cached as an installed package has it (pip compiles at install), under
        the work directory. Without it (``PYTHONDONTWRITEBYTECODE``) every start compiles
        the sources again: some 0.7 s, and 3 MiB more RSS."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        return {**env, "PYTHONPATH": str(ROOT), "PYTHONPYCACHEPREFIX": str(self.work / "pycache")}

    async def settle(self, http: aiohttp.ClientSession, rpc: Rpc) -> None:
        """The web server (aiohttp: web UI, ``/metrics``) loads after the RPC first
        answers; a request for ``/metrics`` has it loaded now."""
        # On a connection of its own: a connection the web server answered stays with it
        # (aiohttp), and the adds measure the RPC's own connections, as a front-end has.
        url = rpc.url.replace("/transmission/rpc", "/metrics")
        async with http.get(url, headers={"Connection": "close"}) as resp:
            await resp.read()

    def prepare(self) -> None:
        """Write the bytecode cache: import what the daemon imports, once."""
        modules = (
            "cli.main, cli.cmd_daemon, cli.cmd_download, torrent.daemon.rpc, torrent.daemon.front, "
            "torrent.daemon.webapp, torrent.daemon.watch, torrent.engine.swarm, torrent.engine.metadata_fetch"
        )
        warm = f"import {modules}\ntry:\n    import uvloop\nexcept ImportError:\n    pass"
        subprocess.run([sys.executable, "-c", warm], cwd=ROOT, env=self.env(), check=True)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "cli.main",
            "daemon",
            "--no-dht",
            "--no-lsd",
            "--no-port-mapping",
            "--rpc-host",
            "127.0.0.1",
            "--rpc-port",
            str(self.rpc_port),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.peer_port),
            "--state-dir",
            str(self.work / "state"),
            "--download-dir",
            str(self.data_dir),
        ]


class Transmission(Daemon):
    name = "transmission-daemon"

    def command(self) -> list[str]:
        conf = self.work / "tr-config"
        conf.mkdir(exist_ok=True)
        settings = {
            "dht-enabled": False,
            "lpd-enabled": False,
            "pex-enabled": False,
            "port-forwarding-enabled": False,
            "utp-enabled": False,
            "bind-address-ipv4": "127.0.0.1",
            "bind-address-ipv6": "::1",
            "rpc-bind-address": "127.0.0.1",
            "rpc-port": self.rpc_port,
            "rpc-whitelist": "127.0.0.1",
            "rpc-host-whitelist-enabled": False,
            "rpc-authentication-required": False,
            "peer-port": self.peer_port,
            "download-dir": str(self.data_dir),
            "message-level": 1,
        }
        (conf / "settings.json").write_text(json.dumps(settings))
        return ["transmission-daemon", "-f", "-g", str(conf)]


async def wait_for(cond: Callable[[], Awaitable[bool]], timeout_s: float, interval_s: float = 0.1) -> float:
    start = time.perf_counter()
    while not await cond():
        if time.perf_counter() - start > timeout_s:
            raise TimeoutError
        await asyncio.sleep(interval_s)
    return time.perf_counter() - start


async def all_complete(rpc: Rpc, http: aiohttp.ClientSession, n: int) -> bool:
    """Every torrent listed complete *and* seeding (status 6), not just known complete."""
    try:
        got = await rpc.call(http, "torrent-get", fields=["id", "percentDone", "status"], format="table")
    except (aiohttp.ClientError, RuntimeError, OSError):
        return False
    rows = got["torrents"][1:]
    return len(rows) == n and all(r[1] == 1 and r[2] == 6 for r in rows)


async def measure(d: Daemon, torrents: list[bytes], timeout_s: float) -> dict[str, float]:
    n = len(torrents)
    rpc = Rpc(f"http://127.0.0.1:{d.rpc_port}/transmission/rpc")
    out: dict[str, float] = {}
    d.prepare()
    d.start()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as http:

        async def up() -> bool:
            try:
                await rpc.call(http, "session-get")
            except (aiohttp.ClientError, OSError, RuntimeError):
                return False
            return True

        await wait_for(up, 30)
        await d.settle(http, rpc)
        await asyncio.sleep(1.0)
        idle = rss_kib(d.pid)
        out["idle_rss_mib"] = idle / 1024
        requests = [add_request(d.rpc_port, rpc.sid, t, str(d.data_dir)) for t in torrents]
        t0, c0, own0 = time.perf_counter(), cpu_s(d.pid), own_cpu_s()
        await asyncio.gather(*(add_worker(d.rpc_port, requests) for _ in range(IN_FLIGHT)))
        out["add_s"] = time.perf_counter() - t0
        out["add_cpu_s"] = cpu_s(d.pid) - c0
        out["client_cpu_s"] = own_cpu_s() - own0
        try:
            out["complete_s"] = out["add_s"] + await wait_for(
                lambda: all_complete(rpc, http, n), timeout_s, 0.2
            )
        except TimeoutError:
            out["complete_s"] = -timeout_s
            print(f"  not all complete within {timeout_s:.0f} s", file=sys.stderr, flush=True)
    latencies = []
    for _ in range(20):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
            rpc.sid = rpc.sid
            t = time.perf_counter()
            got = await rpc.call(fresh, "torrent-get", fields=LIST_FIELDS)
            latencies.append(time.perf_counter() - t)
            assert len(got["torrents"]) == n
    out["get_ms"] = statistics.median(latencies) * 1000
    await asyncio.sleep(2.0)
    rss = rss_kib(d.pid)
    out["rss_mib"] = rss / 1024
    out["per_torrent_kib"] = (rss - idle) / n
    c0 = cpu_s(d.pid)
    await asyncio.sleep(5.0)
    out["idle_cpu_pct"] = (cpu_s(d.pid) - c0) / 5.0 * 100
    d.stop()
    if out["complete_s"] < 0:
        return out  # a restart "until all listed complete" would only time out again
    d.start()
    t0 = time.perf_counter()
    async with aiohttp.ClientSession() as http:

        async def answers() -> bool:
            try:
                await rpc.call(http, "session-get")
            except (aiohttp.ClientError, OSError, RuntimeError):
                return False
            return True

        out["restart_rpc_s"] = await wait_for(answers, timeout_s, 0.02)
        try:
            await wait_for(lambda: all_complete(rpc, http, n), timeout_s, 0.05)
            out["restart_s"] = time.perf_counter() - t0
        except TimeoutError:
            out["restart_s"] = -timeout_s
    out["restart_rss_mib"] = rss_kib(d.pid) / 1024
    d.stop()
    return out


ROWS = [
    ("add over RPC, 8 in flight (s)", "add_s", "{:.2f}"),
    ("  the bench client's CPU meanwhile (s)", "client_cpu_s", "{:.2f}"),
    ("  daemon CPU during the adds (s)", "add_cpu_s", "{:.2f}"),
    ("until all listed complete (s)", "complete_s", "{:.1f}"),
    ("torrent-get 7 fields, all, fresh conn (ms, median)", "get_ms", "{:.1f}"),
    ("RSS idle, no torrents (MiB)", "idle_rss_mib", "{:.1f}"),
    ("RSS with N torrents (MiB)", "rss_mib", "{:.1f}"),
    ("memory per torrent (KiB)", "per_torrent_kib", "{:.1f}"),
    ("idle CPU with N seeding (%)", "idle_cpu_pct", "{:.1f}"),
    ("restart until all listed complete (s)", "restart_s", "{:.2f}"),
    ("  of which: until the RPC answers (s)", "restart_rpc_s", "{:.2f}"),
    ("RSS after restart (MiB)", "restart_rss_mib", "{:.1f}"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 2000])
    ap.add_argument("--only", choices=["pytorrent", "transmission-daemon"], default=None)
    ap.add_argument("--timeout", type=float, default=900.0, help="bound on each wait (s)")
    args = ap.parse_args()
    kinds: list[type[Daemon]] = [Ours, Transmission]
    if args.only:
        kinds = [k for k in kinds if k.name == args.only]
    if shutil.which("transmission-daemon") is None:
        kinds = [k for k in kinds if k is not Transmission]
    results: dict[tuple[str, int], dict[str, float]] = {}
    for n in args.n:
        for kind in kinds:
            with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp:
                work = Path(tmp)
                torrents = make_torrents(work / "data", n)
                d = kind(work, work / "data")
                print(f"{kind.name} N={n} ...", file=sys.stderr, flush=True)
                try:
                    results[(kind.name, n)] = asyncio.run(measure(d, torrents, args.timeout))
                except TimeoutError:
                    print(f"  {kind.name} N={n}: timed out", file=sys.stderr)
                finally:
                    if d.proc is not None and d.proc.poll() is None:
                        d.proc.kill()
                print(f"  {results.get((kind.name, n))}", file=sys.stderr, flush=True)
    cols = [(k.name, n) for n in args.n for k in kinds]
    print("| figure | " + " | ".join(f"{name} N={n}" for name, n in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for label, key, fmt in ROWS:
        cells = [_cell(results.get(c, {}).get(key), fmt, key) for c in cols]
        print(f"| {label} | " + " | ".join(cells) + " |")


#: Waits recorded as minus the bound when they passed it.
TIMED = ("complete_s", "restart_s")


def _cell(value: float | None, fmt: str, key: str) -> str:
    if value is None:
        return "-"
    if key in TIMED and value < 0:
        return f"> {-value:.0f}"
    return fmt.format(value)


if __name__ == "__main__":
    main()
