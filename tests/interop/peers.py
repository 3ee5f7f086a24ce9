"""Harness for the interoperability tests: run real BitTorrent clients on loopback.

Each class here starts one third-party client in a temporary directory with its own
configuration, on free loopback ports, and drives it through its own API:

- :class:`LibtorrentPeer`: the PyPI ``libtorrent`` bindings, one session per **subprocess**
  (``lt_worker.py``), driven over JSON lines through asyncio pipes, so the event loop
  (which may be running our client) never waits on libtorrent. In-process sessions share
  libtorrent's process-wide UDP tracker connection-id cache, which breaks UDP announces
  as soon as two sessions (or two tests) talk to trackers on one address.
- :class:`TransmissionPeer`: ``transmission-daemon`` (3.00) with ``--config-dir`` and a
  prepared ``settings.json``, driven over its JSON-RPC (including the
  ``X-Transmission-Session-Id`` 409 exchange).
- :class:`Aria2Peer`: ``aria2c`` as a daemon with its JSON-RPC on a loopback port; progress,
  completion and the info hash come from ``aria2.tellStatus``.
- :class:`QBittorrentPeer`: ``qbittorrent-nox`` (4.5.2) with a prepared profile and its
  Web API (``/api/v2``).
- :class:`RtorrentPeer`: ``rtorrent`` (0.9.8 on rakshasa libtorrent 0.13.8, v1 only) as a
  daemon, driven over XML-RPC on its SCGI port.
- :class:`CtorrentPeer`: Enhanced CTorrent (3.3.2, v1 only), one process per torrent, with
  no API: its progress is read from the status lines it prints.

Every client runs with DHT, local peer discovery, UPnP, NAT-PMP and peer exchange off,
uTP off, and bound to 127.0.0.1; the tests also refuse to start them outside a
loopback-only network namespace (see ``conftest.py``). External processes are started in
their own process group and stopped by that group's id (SIGTERM, then SIGKILL after a
grace period), and nothing else is ever signalled. Every wait has a deadline.

IPv6: a client given the host ``::1`` listens there (Transmission listens on 127.0.0.1 and
::1 at once); ``test_ipv6_transfer.py`` uses it.

Left out: encryption (each client is set to accept plaintext); magnet links for aria2 and
Transmission only (libtorrent has its own ``add_magnet``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

LOOPBACK = "127.0.0.1"
#: How long a client gets to answer its API after start.
READY_TIMEOUT_S = 20.0
#: Grace period between SIGTERM and SIGKILL.
STOP_GRACE_S = 5.0
REPO_ROOT = Path(__file__).resolve().parents[2]

# --- what each client needs -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """A third-party client: what must be on the machine and how to get it."""

    key: str
    title: str
    executables: tuple[str, ...] = ()
    module: str = ""
    install: str = ""

    def missing(self) -> str:
        """Why this client cannot run here ("" when it can)."""
        for exe in self.executables:
            if shutil.which(exe) is None:
                return f"{exe} is not installed (install the Debian package: {self.install})"
        if self.module:
            try:
                __import__(self.module)
            except ImportError as exc:
                return f"Python module {self.module!r} does not import ({exc}); install: {self.install}"
        return ""


CLIENTS: dict[str, ClientSpec] = {
    "libtorrent": ClientSpec(
        "libtorrent", "libtorrent", module="libtorrent", install="pip install libtorrent"
    ),
    "transmission": ClientSpec(
        "transmission",
        "Transmission",
        executables=("transmission-daemon",),
        install="apt-get install transmission-daemon",
    ),
    "aria2": ClientSpec("aria2", "aria2", executables=("aria2c",), install="apt-get install aria2"),
    "qbittorrent": ClientSpec(
        "qbittorrent",
        "qBittorrent",
        executables=("qbittorrent-nox",),
        install="apt-get install qbittorrent-nox",
    ),
    "rtorrent": ClientSpec(
        "rtorrent", "rTorrent", executables=("rtorrent",), install="apt-get install rtorrent"
    ),
    "ctorrent": ClientSpec(
        "ctorrent", "CTorrent", executables=("ctorrent",), install="apt-get install ctorrent"
    ),
    # Tools that only make torrents.
    "transmission-create": ClientSpec(
        "transmission-create",
        "transmission-create",
        executables=("transmission-create", "transmission-show"),
        install="apt-get install transmission-cli",
    ),
    "mktorrent": ClientSpec(
        "mktorrent", "mktorrent", executables=("mktorrent",), install="apt-get install mktorrent"
    ),
    "opentracker": ClientSpec(
        "opentracker", "opentracker", executables=("opentracker",), install="apt-get install opentracker"
    ),
}


class PeerError(Exception):
    """A client did not start, refused a request, or missed a deadline."""


class ProcessExited(Exception):
    """A client process we started is gone; waits stop at once instead of timing out."""


# --- ports, payloads ---------------------------------------------------------------------


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port that is free right now for ``kind`` (TCP by default)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free for both TCP and UDP (clients may open both on one port)."""
    ports: list[int] = []
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind((LOOPBACK, 0))
            port = int(t.getsockname()[1])
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.bind((LOOPBACK, port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
        if len(ports) == n:
            return ports
    raise PeerError("no free loopback ports")


def make_payload(root: Path, name: str, sizes: dict[str, int], *, seed: int = 1) -> Path:
    """Write a multi-file payload under ``root/name``: ``sizes`` maps relative paths to byte counts.

    The bytes are pseudo-random (seeded, so reruns are reproducible) and incompressible.
    """
    rng = random.Random(seed)
    top = root / name
    for rel, size in sizes.items():
        path = top / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            left = size
            while left:
                chunk = min(left, 1 << 20)
                fh.write(rng.randbytes(chunk))
                left -= chunk
    return top


def same_tree(a: Path, b: Path) -> bool:
    """True when the regular files under ``a`` and ``b`` have the same relative paths and bytes."""

    def digest(top: Path) -> dict[str, str]:
        out: dict[str, str] = {}
        for p in sorted(top.rglob("*")):
            if p.is_file():
                out[str(p.relative_to(top))] = hashlib.sha1(p.read_bytes()).hexdigest()
        return out

    return digest(a) == digest(b)


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], *, timeout_s: float, what: str, every_s: float = 0.1
) -> None:
    """Await ``predicate()`` until it is true; :class:`PeerError` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last_exc: BaseException | None = None
    while True:
        try:
            if await predicate():
                return
            last_exc = None
        except (PeerError, aiohttp.ClientError, OSError, KeyError, ValueError) as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc})" if last_exc else ""
            raise PeerError(f"timed out after {timeout_s:.0f} s waiting for {what}{detail}")
        await asyncio.sleep(every_s)


# --- processes ---------------------------------------------------------------------------

#: Every external process the harness started and has not yet reaped, by PID. The session
#: finalizer in ``conftest.py`` stops whatever is left here, so a crashed test leaves nothing.
LIVE_PIDS: set[int] = set()


class ManagedProcess:
    """One external program in its own process group, logging to a file.

    ``stop()`` signals only that process group (its id is the PID we got back from
    ``Popen``), so children the program forks go with it and nothing else is touched.
    """

    def __init__(
        self, argv: list[str], *, cwd: Path, log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.argv = argv
        self.cwd = cwd
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # our own process group, id == pid
            )
        LIVE_PIDS.add(self.proc.pid)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ProcessExited(
                f"{self.argv[0]} exited with status {self.proc.returncode}; log:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self) -> None:
        """SIGTERM to our process group, SIGKILL after :data:`STOP_GRACE_S`; always reaps."""
        if self.proc is None:
            return
        proc = self.proc
        try:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(proc.wait, STOP_GRACE_S)
            # The leader may be gone while a child it forked lives on: the group goes regardless.
            _signal_group(proc.pid, signal.SIGKILL)
            if proc.poll() is None:
                await asyncio.to_thread(proc.wait, 5)
        finally:
            LIVE_PIDS.discard(proc.pid)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_leftovers() -> list[int]:
    """Synchronously SIGKILL the process group of every PID still in :data:`LIVE_PIDS`."""
    killed = sorted(LIVE_PIDS)
    for pid in killed:
        _signal_group(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    LIVE_PIDS.clear()
    return killed


# --- the common interface ---------------------------------------------------------------


@dataclass(slots=True)
class TorrentState:
    """A client's view of one torrent, in one shape for every client."""

    info_hash: str  # hex, lower case, as the client reports it
    progress: float  # 0.0 .. 1.0
    seeding: bool
    peers: list[tuple[str, int]] = field(default_factory=list)
    tracker_peers: int | None = None  # peers the last announce handed out, when the client says
    tracker_ok: bool | None = None
    error: str = ""


class Peer:
    """Base class: start, add a torrent, watch it, stop. One instance, one client process."""

    spec: ClientSpec

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.peer_port = 0
        #: The loopback address the client binds and connects from; 127.0.0.0/8 is all
        #: loopback, and a distinct address makes it a distinct IP to the other clients.
        self.host = LOOPBACK

    @property
    def name(self) -> str:
        return self.spec.key

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def add(self, torrent: Path, save_dir: Path, *, seed: bool = False) -> str:
        """Add ``torrent``; data lives (or will be written) under ``save_dir``.

        Returns:
            The info hash (hex) as the client reports it.
        """
        raise NotImplementedError

    async def state(self, info_hash: str) -> TorrentState:
        raise NotImplementedError

    def describe_failure(self) -> str:
        """Extra text for an assertion message (log tail)."""
        return ""

    async def __aenter__(self) -> Peer:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # Waits shared by every client.

    async def wait_seeding(self, info_hash: str, timeout_s: float = 60) -> None:
        """Until the client has checked its data and is seeding it."""

        async def ok() -> bool:
            st = await self.state(info_hash)
            if st.error:
                raise PeerError(f"{self.name}: {st.error}")
            return st.seeding and st.progress >= 1.0

        await wait_for(ok, timeout_s=timeout_s, what=f"{self.name} to seed {info_hash}")

    async def wait_complete(self, info_hash: str, timeout_s: float = 120) -> None:
        """Until every piece is downloaded and verified."""

        async def ok() -> bool:
            st = await self.state(info_hash)
            return st.progress >= 1.0

        await wait_for(ok, timeout_s=timeout_s, what=f"{self.name} to finish {info_hash}", every_s=0.2)

    async def wait_tracker_reply(
        self, info_hash: str, min_peers: int = 1, timeout_s: float = 30
    ) -> TorrentState:
        """Until the client says its last announce succeeded and handed it ``min_peers`` peers.

        For clients whose API reports no such count, see their override.
        """
        result: list[TorrentState] = []

        async def ok() -> bool:
            st = await self.state(info_hash)
            result[:] = [st]
            return bool(st.tracker_ok) and (st.tracker_peers or 0) >= min_peers

        await wait_for(
            ok, timeout_s=timeout_s, what=f"{self.name} to get {min_peers} peer(s) from the tracker"
        )
        return result[0]


# --- libtorrent --------------------------------------------------------------------------


class LibtorrentPeer(Peer):
    """libtorrent 2.x, one session per process (``lt_worker.py`` says why), over JSON lines.

    Requests go over the worker's stdin and replies come back on its stdout through
    asyncio pipes, so the event loop never waits on libtorrent.
    """

    spec = CLIENTS["libtorrent"]

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._next_id = 0
        self._log_path = self.workdir / "libtorrent.log"
        self._last_log: list[str] = []

    async def start(self) -> None:
        repo = REPO_ROOT
        with await asyncio.to_thread(open, self._log_path, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.interop.lt_worker",
                cwd=repo,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        LIVE_PIDS.add(self.proc.pid)
        (port,) = free_ports(1)
        self.peer_port = int(await self.call("start", port=port, host=self.host, timeout_s=READY_TIMEOUT_S))

    async def call(self, op: str, timeout_s: float = 10, **args: Any) -> Any:
        """One request to the worker; raises :class:`PeerError` with its error text."""
        proc = self.proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise PeerError("libtorrent worker is not running")
        async with self._lock:
            self._next_id += 1
            proc.stdin.write((json.dumps({"id": self._next_id, "op": op, "args": args}) + "\n").encode())
            await proc.stdin.drain()
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), timeout_s)
            except TimeoutError:
                raise PeerError(f"libtorrent worker did not answer {op} within {timeout_s} s") from None
        if not line:
            raise ProcessExited(f"libtorrent worker exited ({proc.returncode}); log:\n{self._tail()}")
        reply = json.loads(line)
        if "error" in reply:
            raise PeerError(f"libtorrent {op}: {reply['error']}")
        return reply["ok"]

    def _tail(self) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.returncode is None:
                with contextlib.suppress(Exception):
                    self._last_log = await self.call_on(proc, "log")
                with contextlib.suppress(Exception):
                    assert proc.stdin is not None
                    proc.stdin.write(b'{"op": "quit"}\n')
                    await proc.stdin.drain()
                    proc.stdin.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
            _signal_group(proc.pid, signal.SIGKILL)
            if proc.returncode is None:
                await asyncio.wait_for(proc.wait(), 5)
        finally:
            LIVE_PIDS.discard(proc.pid)

    async def call_on(self, proc: asyncio.subprocess.Process, op: str) -> Any:
        saved, self.proc = self.proc, proc
        try:
            return await self.call(op, timeout_s=3)
        finally:
            self.proc = saved

    async def add(self, torrent: Path, save_dir: Path, *, seed: bool = False) -> str:
        return str(await self.call("add", torrent=str(torrent), save_path=str(save_dir)))

    async def add_magnet(self, uri: str, save_dir: Path) -> str:
        """Add a magnet link (its metadata, and a v2 torrent's piece layers, come from peers)."""
        return str(await self.call("add_magnet", uri=uri, save_path=str(save_dir)))

    async def state(self, info_hash: str) -> TorrentState:
        d = await self.call("state", info_hash=info_hash)
        return TorrentState(
            info_hash=d["info_hash"],
            progress=d["progress"],
            seeding=d["seeding"],
            peers=[(h, int(p)) for h, p in d["peers"]],
            tracker_peers=d["tracker_peers"],
            tracker_ok=d["tracker_ok"],
            error=d["error"],
        )

    async def connections(self, info_hash: str) -> list[Connection]:
        """Every open connection of ``info_hash``, with who dialed whom and the bytes moved."""
        return [
            Connection(
                address=(c["address"][0], int(c["address"][1])),
                peer_id=bytes.fromhex(c["peer_id"]),
                client=c["client"],
                outgoing=c["outgoing"],
                downloaded_bytes=c["downloaded_bytes"],
                uploaded_bytes=c["uploaded_bytes"],
                seed=c["seed"],
            )
            for c in await self.call("connections", info_hash=info_hash)
        ]

    async def set_upload_limit(self, info_hash: str, bps: int) -> None:
        await self.call("set_upload_limit", info_hash=info_hash, bps=bps)

    async def connect_peer(self, info_hash: str, host: str, port: int) -> None:
        await self.call("connect_peer", info_hash=info_hash, host=host, port=port)

    def describe_failure(self) -> str:
        return "libtorrent alerts:\n" + "\n".join(self._last_log) + "\n" + self._tail()


@dataclass(frozen=True, slots=True)
class Connection:
    """One peer connection as libtorrent sees it."""

    address: tuple[str, int]
    peer_id: bytes
    client: str
    outgoing: bool
    downloaded_bytes: int
    uploaded_bytes: int
    seed: bool


# --- Transmission ------------------------------------------------------------------------


class TransmissionPeer(Peer):
    """transmission-daemon 3.00 with its own config dir; JSON-RPC over HTTP.

    ``encryption`` is 0 ("prefer plaintext"): our client speaks plaintext only, and so the
    handshake that is tested is the plain BitTorrent one.
    """

    spec = CLIENTS["transmission"]
    #: Transmission's ``utp-enabled`` (off: the transfer tests compare TCP with TCP).
    utp = False

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.rpc_port = 0
        self.proc: ManagedProcess | None = None
        self.http: aiohttp.ClientSession | None = None
        self.session_id = ""

    async def start(self) -> None:
        self.rpc_port, self.peer_port = free_ports(2)
        config = self.workdir / "config"
        config.mkdir(exist_ok=True)
        downloads = self.workdir / "downloads"
        downloads.mkdir(exist_ok=True)
        settings = {
            "dht-enabled": False,
            "lpd-enabled": False,
            "pex-enabled": False,
            "port-forwarding-enabled": False,
            "utp-enabled": self.utp,
            # With an IPv4 bind address Transmission's libcurl binds tracker requests to it
            # and cannot reach a tracker on [::1]; "any" is still only lo in the namespace.
            "bind-address-ipv4": "0.0.0.0" if ":" in self.host else LOOPBACK,
            "bind-address-ipv6": "::1",
            "rpc-enabled": True,
            "rpc-bind-address": LOOPBACK,
            "rpc-port": self.rpc_port,
            "rpc-authentication-required": False,
            "rpc-whitelist-enabled": False,
            "rpc-host-whitelist-enabled": False,
            "peer-port": self.peer_port,
            "peer-port-random-on-start": False,
            "download-dir": str(downloads),
            "incomplete-dir-enabled": False,
            "rename-partial-files": False,
            "encryption": 0,
            "blocklist-enabled": False,
            "ratio-limit-enabled": False,
            "idle-seeding-limit-enabled": False,
            "speed-limit-down-enabled": False,
            "speed-limit-up-enabled": False,
            "alt-speed-enabled": False,
            "download-queue-enabled": False,
            "seed-queue-enabled": False,
            "queue-stalled-enabled": False,
            "start-added-torrents": True,
            "trash-original-torrent-files": False,
            "cache-size-mb": 4,
            "message-level": 2,
            "umask": 18,
            "scrape-paused-torrents-enabled": False,
        }
        (config / "settings.json").write_text(json.dumps(settings, indent=2))
        self.proc = ManagedProcess(
            ["transmission-daemon", "--foreground", "--config-dir", str(config)],
            cwd=self.workdir,
            log_path=self.workdir / "transmission.log",
        )
        self.proc.start()
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

        async def ready() -> bool:
            assert self.proc is not None
            self.proc.check_running()
            await self.rpc("session-get", {"fields": ["version"]})
            return True

        await wait_for(ready, timeout_s=READY_TIMEOUT_S, what="transmission-daemon RPC")

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
            self.http = None
        if self.proc is not None:
            await self.proc.stop()

    async def rpc(self, method: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        """One JSON-RPC call; answers the 409 with the session id it hands out, once."""
        assert self.http is not None
        url = f"http://{LOOPBACK}:{self.rpc_port}/transmission/rpc"
        body = {"method": method, "arguments": arguments or {}}
        for _ in range(2):
            async with self.http.post(
                url, json=body, headers={"X-Transmission-Session-Id": self.session_id}
            ) as r:
                if r.status == 409:
                    self.session_id = r.headers.get("X-Transmission-Session-Id", "")
                    continue
                r.raise_for_status()
                reply = await r.json(content_type=None)
            if reply.get("result") != "success":
                raise PeerError(f"transmission {method}: {reply.get('result')}")
            return dict(reply.get("arguments", {}))
        raise PeerError("transmission RPC kept answering 409")

    async def add_magnet(self, uri: str, save_dir: Path) -> str:
        """Add a magnet link (the metadata comes from peers, BEP 9)."""
        reply = await self.rpc(
            "torrent-add", {"filename": uri, "download-dir": str(save_dir), "paused": False}
        )
        added = reply.get("torrent-added") or reply.get("torrent-duplicate")
        if not added:
            raise PeerError(f"transmission torrent-add: unexpected reply {reply}")
        return str(added["hashString"]).lower()

    def log_text(self) -> str:
        try:
            return (self.workdir / "transmission.log").read_text(errors="replace")
        except OSError:
            return ""

    async def add(self, torrent: Path, save_dir: Path, *, seed: bool = False) -> str:
        args = {
            "metainfo": base64.b64encode(await asyncio.to_thread(torrent.read_bytes)).decode(),
            "download-dir": str(save_dir),
            "paused": False,
        }
        reply = await self.rpc("torrent-add", args)
        added = reply.get("torrent-added") or reply.get("torrent-duplicate")
        if not added:
            raise PeerError(f"transmission torrent-add: unexpected reply {reply}")
        ih = str(added["hashString"]).lower()
        if seed:
            # 3.00 does not always recheck data that is already there; make it.
            await self.rpc("torrent-verify", {"ids": [ih]})
        return ih

    async def state(self, info_hash: str) -> TorrentState:
        assert self.proc is not None
        self.proc.check_running()
        reply = await self.rpc(
            "torrent-get",
            {
                "ids": [info_hash],
                "fields": [
                    "hashString",
                    "percentDone",
                    "status",
                    "peers",
                    "trackerStats",
                    "error",
                    "errorString",
                ],
            },
        )
        torrents = reply.get("torrents", [])
        if not torrents:
            raise PeerError(f"transmission does not know {info_hash}")
        t = torrents[0]
        stats = t.get("trackerStats") or [{}]
        last = stats[0]
        # status 6 = seeding, 2 = checking; percentDone is of the wanted bytes.
        return TorrentState(
            info_hash=str(t["hashString"]).lower(),
            progress=float(t["percentDone"]) if t["status"] not in (1, 2) else 0.0,
            seeding=t["status"] == 6,
            peers=[(p["address"], int(p["port"])) for p in t.get("peers", [])],
            tracker_peers=int(last["lastAnnouncePeerCount"]) if last.get("hasAnnounced") else None,
            tracker_ok=bool(last.get("lastAnnounceSucceeded")),
            error=t.get("errorString", "") if t.get("error") in (3,) else "",
        )

    def describe_failure(self) -> str:
        return "transmission log:\n" + (self.proc.log_tail() if self.proc else "")


# --- aria2 -------------------------------------------------------------------------------


class Aria2Peer(Peer):
    """aria2c as an RPC daemon; one aria2c process per instance.

    Completion is read from ``aria2.tellStatus`` (``completedLength == totalLength``) rather
    than from ``--on-bt-download-complete``: the RPC also gives the info hash and the peer
    list, and one mechanism is enough. aria2 keeps seeding after completion (``seed-ratio``
    0, no ``seed-time``) until we stop it.
    """

    spec = CLIENTS["aria2"]

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.rpc_port = 0
        self.proc: ManagedProcess | None = None
        self.http: aiohttp.ClientSession | None = None
        self.gids: dict[str, str] = {}
        self.secret = "interop"

    async def start(self) -> None:
        self.rpc_port, self.peer_port = free_ports(2)
        argv = [
            "aria2c",
            "--no-conf=true",
            "--enable-rpc=true",
            f"--rpc-listen-port={self.rpc_port}",
            "--rpc-listen-all=false",
            f"--rpc-secret={self.secret}",
            f"--stop-with-process={os.getpid()}",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            f"--listen-port={self.peer_port}",
            f"--interface={self.host}",
            f"--disable-ipv6={'false' if ':' in self.host else 'true'}",
            "--seed-ratio=0.0",
            "--bt-hash-check-seed=true",
            "--check-integrity=true",
            "--file-allocation=none",
            "--bt-save-metadata=false",
            "--rpc-save-upload-metadata=false",
            "--auto-save-interval=0",
            "--save-session-interval=0",
            "--summary-interval=0",
            "--console-log-level=warn",
            "--bt-tracker-connect-timeout=5",
            "--bt-tracker-timeout=5",
            f"--dir={self.workdir / 'downloads'}",
            f"--log={self.workdir / 'aria2.log'}",
            "--log-level=info",
        ]
        self.proc = ManagedProcess(argv, cwd=self.workdir, log_path=self.workdir / "aria2.out")
        self.proc.start()
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

        async def ready() -> bool:
            assert self.proc is not None
            self.proc.check_running()
            await self.rpc("aria2.getVersion")
            return True

        await wait_for(ready, timeout_s=READY_TIMEOUT_S, what="aria2 RPC")

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
            self.http = None
        if self.proc is not None:
            await self.proc.stop()

    async def rpc(self, method: str, *params: Any) -> Any:
        assert self.http is not None
        body = {"jsonrpc": "2.0", "id": "1", "method": method, "params": [f"token:{self.secret}", *params]}
        async with self.http.post(f"http://{LOOPBACK}:{self.rpc_port}/jsonrpc", json=body) as r:
            reply = await r.json(content_type=None)
        if "error" in reply:
            raise PeerError(f"aria2 {method}: {reply['error']}")
        return reply["result"]

    async def add(self, torrent: Path, save_dir: Path, *, seed: bool = False) -> str:
        options = {"dir": str(save_dir), "check-integrity": "true", "seed-ratio": "0.0"}
        raw = await asyncio.to_thread(torrent.read_bytes)
        gid = await self.rpc("aria2.addTorrent", base64.b64encode(raw).decode(), [], options)
        status = await self.rpc("aria2.tellStatus", gid, ["infoHash"])
        ih = str(status["infoHash"]).lower()
        self.gids[ih] = gid
        return ih

    async def add_magnet(self, uri: str, save_dir: Path) -> str:
        """Add a magnet link: aria2 fetches the metadata (BEP 9) under one gid, then
        downloads under the gid that follows it (:meth:`state` switches to it)."""
        options = {"dir": str(save_dir), "seed-ratio": "0.0", "bt-save-metadata": "false"}
        gid = await self.rpc("aria2.addUri", [uri], options)
        status = await self.rpc("aria2.tellStatus", gid, ["infoHash"])
        ih = str(status["infoHash"]).lower()
        self.gids[ih] = gid
        return ih

    async def state(self, info_hash: str) -> TorrentState:
        assert self.proc is not None
        self.proc.check_running()
        gid = self.gids[info_hash]
        follow = await self.rpc("aria2.tellStatus", gid, ["followedBy"])
        if follow.get("followedBy"):  # a magnet's metadata is in: the download runs under this gid
            gid = self.gids[info_hash] = follow["followedBy"][0]
        s = await self.rpc(
            "aria2.tellStatus",
            gid,
            [
                "status",
                "totalLength",
                "completedLength",
                "infoHash",
                "seeder",
                "errorMessage",
                "verifiedLength",
            ],
        )
        total = int(s["totalLength"])
        done = int(s["completedLength"])
        peers = await self.rpc("aria2.getPeers", gid) if s["status"] == "active" else []
        progress = done / total if total else 0.0
        return TorrentState(
            info_hash=str(s["infoHash"]).lower(),
            progress=progress,
            seeding=s.get("seeder") == "true" and "verifiedLength" not in s,
            peers=[(p["ip"], int(p["port"])) for p in peers],
            error=s.get("errorMessage", "") if s["status"] == "error" else "",
        )

    async def wait_tracker_reply(
        self, info_hash: str, min_peers: int = 1, timeout_s: float = 30
    ) -> TorrentState:
        """aria2's RPC does not report tracker replies: a peer it was handed shows up connected."""
        result: list[TorrentState] = []

        async def ok() -> bool:
            st = await self.state(info_hash)
            result[:] = [st]
            return len(st.peers) >= min_peers

        await wait_for(
            ok, timeout_s=timeout_s, what=f"aria2 to connect to {min_peers} peer(s) from the tracker"
        )
        return result[0]

    def describe_failure(self) -> str:
        try:
            log = (self.workdir / "aria2.log").read_text(errors="replace").splitlines()[-60:]
        except OSError:
            log = []
        return "aria2 log:\n" + "\n".join(log)


# --- qBittorrent -------------------------------------------------------------------------

QBT_CONF = """\
[LegalNotice]
Accepted=true

[BitTorrent]
Session\\DHTEnabled=false
Session\\LSDEnabled=false
Session\\PeXEnabled=false
Session\\AnonymousModeEnabled=false
Session\\BTProtocol=TCP
Session\\Encryption=0
Session\\Interface=lo
Session\\InterfaceName=lo
Session\\InterfaceAddress={address}
Session\\Port={peer_port}
Session\\DefaultSavePath={save}
Session\\TempPathEnabled=false
Session\\QueueingSystemEnabled=false
Session\\MultiConnectionsPerIp=true
Session\\AddTrackersEnabled=false
Session\\GlobalMaxRatio=-1
Session\\GlobalMaxSeedingMinutes=-1
Session\\IgnoreLimitsOnLAN=true

[Core]
AutoDeleteAddedTorrentFile=Never

[Network]
PortForwardingEnabled=false
Proxy\\OnlyForTorrents=false

[Preferences]
Connection\\UPnP=false
Connection\\ResolvePeerCountries=false
General\\UseRandomPort=false
WebUI\\Address={address}
WebUI\\Port={webui_port}
WebUI\\LocalHostAuth=false
WebUI\\CSRFProtection=false
WebUI\\HostHeaderValidation=false
WebUI\\ClickjackingProtection=false
WebUI\\UseUPnP=false
"""


class QBittorrentPeer(Peer):
    """qbittorrent-nox 4.5.2 with a prepared profile, driven through its Web API.

    The profile turns discovery off; after start the harness reads the preferences back
    through the API and refuses to go on unless DHT, LSD, PeX and UPnP are off, uTP is off
    and the listening port is ours, then repeats the essential ones with
    ``app/setPreferences`` as a second layer.
    """

    spec = CLIENTS["qbittorrent"]

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.webui_port = 0
        self.proc: ManagedProcess | None = None
        self.http: aiohttp.ClientSession | None = None

    @property
    def base(self) -> str:
        return f"http://{LOOPBACK}:{self.webui_port}/api/v2"

    async def start(self) -> None:
        self.webui_port, self.peer_port = free_ports(2)
        profile = self.workdir / "profile"
        conf_dir = profile / "qBittorrent" / "config"
        conf_dir.mkdir(parents=True, exist_ok=True)
        save = self.workdir / "downloads"
        save.mkdir(exist_ok=True)
        (conf_dir / "qBittorrent.conf").write_text(
            QBT_CONF.format(address=LOOPBACK, peer_port=self.peer_port, webui_port=self.webui_port, save=save)
        )
        env = dict(
            os.environ, HOME=str(self.workdir), XDG_CONFIG_HOME=str(profile), QT_QPA_PLATFORM="offscreen"
        )
        self.proc = ManagedProcess(
            ["qbittorrent-nox", f"--profile={profile}", f"--webui-port={self.webui_port}"],
            cwd=self.workdir,
            log_path=self.workdir / "qbittorrent.log",
            env=env,
        )
        self.proc.start()
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

        async def ready() -> bool:
            assert self.proc is not None
            assert self.http is not None
            self.proc.check_running()
            async with self.http.get(f"{self.base}/app/version") as r:
                return r.status == 200

        await wait_for(ready, timeout_s=READY_TIMEOUT_S, what="qBittorrent Web API")
        wanted = {
            "dht": False,
            "lsd": False,
            "pex": False,
            "upnp": False,
            "listen_port": self.peer_port,
            "bittorrent_protocol": 1,  # TCP only
            "enable_multi_connections_from_same_ip": True,
            "queueing_enabled": False,
            "max_ratio_enabled": False,
            "encryption": 0,
        }
        await self.post("app/setPreferences", data={"json": json.dumps(wanted)})
        prefs = await self.get_json("app/preferences")
        wrong = {k: prefs.get(k) for k, v in wanted.items() if prefs.get(k) != v}
        if wrong:
            raise PeerError(f"qBittorrent did not take these settings: {wrong}")

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
            self.http = None
        if self.proc is not None:
            await self.proc.stop()

    async def post(self, path: str, **kw: Any) -> str:
        assert self.http is not None
        async with self.http.post(f"{self.base}/{path}", **kw) as r:
            text = await r.text()
            if r.status != 200:
                raise PeerError(f"qBittorrent {path}: HTTP {r.status} {text[:200]}")
            return text

    async def get_json(self, path: str, **params: str) -> Any:
        assert self.http is not None
        async with self.http.get(f"{self.base}/{path}", params=params) as r:
            if r.status != 200:
                raise PeerError(f"qBittorrent {path}: HTTP {r.status}")
            return await r.json(content_type=None)

    async def add(self, torrent: Path, save_dir: Path, *, seed: bool = False) -> str:
        form = aiohttp.FormData()
        raw = await asyncio.to_thread(torrent.read_bytes)
        form.add_field("torrents", raw, filename=torrent.name, content_type="application/x-bittorrent")
        form.add_field("savepath", str(save_dir))
        form.add_field("paused", "false")
        form.add_field("root_folder", "true")
        form.add_field("contentLayout", "Original")
        form.add_field("autoTMM", "false")
        text = await self.post("torrents/add", data=form)
        if text.strip() != "Ok.":
            raise PeerError(f"qBittorrent refused the torrent: {text.strip()}")
        found: list[str] = []

        async def listed() -> bool:
            infos = await self.get_json("torrents/info")
            found[:] = [str(t["hash"]).lower() for t in infos]
            return bool(found)

        await wait_for(listed, timeout_s=10, what="qBittorrent to list the torrent")
        return found[-1]

    async def state(self, info_hash: str) -> TorrentState:
        assert self.proc is not None
        self.proc.check_running()
        infos = await self.get_json("torrents/info", hashes=info_hash)
        if not infos:
            raise PeerError(f"qBittorrent does not know {info_hash}")
        t = infos[0]
        trackers = await self.get_json("torrents/trackers", hash=info_hash)
        real = [tr for tr in trackers if not str(tr.get("url", "")).startswith("** [")]
        peers_reply = await self.get_json("sync/torrentPeers", hash=info_hash, rid="0")
        peers = []
        for p in (peers_reply.get("peers") or {}).values():
            peers.append((str(p.get("ip")), int(p.get("port", 0))))
        state = str(t["state"])
        tracker_ok = any(tr.get("status") == 2 for tr in real) if real else None
        tracker_peers = max((int(tr.get("num_peers", 0)) for tr in real), default=None) if real else None
        return TorrentState(
            info_hash=str(t["hash"]).lower(),
            progress=float(t["progress"]) if not state.startswith("checking") else 0.0,
            seeding=state in ("uploading", "stalledUP", "forcedUP", "queuedUP"),
            peers=peers,
            tracker_peers=tracker_peers if tracker_peers is not None and tracker_peers >= 0 else None,
            tracker_ok=tracker_ok,
            error=state if state in ("error", "missingFiles") else "",
        )

    def describe_failure(self) -> str:
        return "qBittorrent log:\n" + (self.proc.log_tail() if self.proc else "")


# --- rTorrent ----------------------------------------------------------------------------

RTORRENT_RC = """\
system.daemon.set = true
network.scgi.open_port = {loopback}:{rpc_port}
network.port_range.set = {peer_port}-{peer_port}
network.port_random.set = no
network.bind_address.set = {address}
network.local_address.set = {address}
dht.mode.set = disable
protocol.pex.set = no
trackers.use_udp.set = no
protocol.encryption.set = allow_incoming,try_outgoing,enable_retry
pieces.hash.on_completion.set = yes
directory.default.set = {downloads}
session.path.set = {session}
log.open_file = "main", {log}
log.add_output = "info", "main"
"""


class RtorrentPeer(Peer):
    """rTorrent 0.9.8 as a daemon (``system.daemon.set``), over XML-RPC on an SCGI port.

    It knows BitTorrent v1 only; a hybrid's v2 keys are left alone, and it hashes the info
    dict as it came. DHT, peer exchange and UDP trackers are off; it binds ``host``.
    """

    spec = CLIENTS["rtorrent"]

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.rpc_port = 0
        self.proc: ManagedProcess | None = None

    async def start(self) -> None:
        self.rpc_port, self.peer_port = free_ports(2)
        (self.workdir / "session").mkdir(exist_ok=True)
        (self.workdir / "downloads").mkdir(exist_ok=True)
        rc = self.workdir / "rtorrent.rc"
        rc.write_text(
            RTORRENT_RC.format(
                loopback=LOOPBACK,
                rpc_port=self.rpc_port,
                peer_port=self.peer_port,
                address=self.host,
                downloads=self.workdir / "downloads",
                session=self.workdir / "session",
                log=self.workdir / "rtorrent.log",
            )
        )
        env = {**os.environ, "HOME": str(self.workdir), "TERM": "dumb"}
        self.proc = ManagedProcess(
            ["rtorrent", "-n", "-o", f"import={rc}"],
            cwd=self.workdir,
            log_path=self.workdir / "rtorrent.out",
            env=env,
        )
        self.proc.start()

        async def ready() -> bool:
            assert self.proc is not None
            self.proc.check_running()
            await self.rpc("system.client_version")
            return True

        await wait_for(ready, timeout_s=READY_TIMEOUT_S, what="rtorrent SCGI")

    async def stop(self) -> None:
        if self.proc is not None:
            await self.proc.stop()

    async def rpc(self, method: str, *params: Any) -> Any:
        """One XML-RPC call over SCGI (a netstring of headers, then the body)."""
        body = xmlrpc.client.dumps(params, method).encode()
        headers = f"CONTENT_LENGTH\0{len(body)}\0SCGI\x001\0".encode()
        reader, writer = await asyncio.open_connection(LOOPBACK, self.rpc_port)
        try:
            writer.write(b"%d:%s," % (len(headers), headers) + body)
            await writer.drain()
            async with asyncio.timeout(10):
                reply = await reader.read()
        finally:
            writer.close()
        _, _, xml = reply.partition(b"\r\n\r\n")
        try:
            return xmlrpc.client.loads(xml.decode())[0][0]
        except xmlrpc.client.Fault as exc:
            raise PeerError(f"rtorrent {method}: {exc.faultString}") from exc

    async def add(self, torrent: Path, save_dir: Path, *, seed: bool = False) -> str:
        before = set(await self.rpc("download_list"))
        raw = await asyncio.to_thread(torrent.read_bytes)
        await self.rpc("load.raw_start_verbose", "", xmlrpc.client.Binary(raw), f"d.directory.set={save_dir}")
        added: list[str] = []

        async def listed() -> bool:
            added[:] = [h for h in await self.rpc("download_list") if h not in before]
            return bool(added)

        await wait_for(listed, timeout_s=10, what="rtorrent to load the torrent")
        if seed:
            await self.rpc("d.check_hash", added[0])
        return added[0].lower()

    async def state(self, info_hash: str) -> TorrentState:
        assert self.proc is not None
        self.proc.check_running()
        h = info_hash.upper()
        done, size, complete, hashing, message = [
            await self.rpc(m, h)
            for m in ("d.completed_bytes", "d.size_bytes", "d.complete", "d.hashing", "d.message")
        ]
        progress = done / size if size and not hashing else 0.0
        return TorrentState(
            info_hash=info_hash,
            progress=progress,
            seeding=bool(complete) and not hashing,
            error=str(message) if "error" in str(message).lower() else "",
        )

    def describe_failure(self) -> str:
        try:
            log = (self.workdir / "rtorrent.log").read_text(errors="replace").splitlines()[-60:]
        except OSError:
            log = []
        return "rtorrent log:\n" + "\n".join(log)


# --- CTorrent ----------------------------------------------------------------------------

#: The status line CTorrent prints every second: ``[have/total/available]`` pieces.
_CTORRENT_STATUS = re.compile(rb"\[(\d+)/(\d+)/(\d+)\]")


class CtorrentPeer(Peer):
    """Enhanced CTorrent 3.3.2: a command-line client for one torrent and no API.

    Each :meth:`add` starts one ``ctorrent`` process in the save directory; its progress is
    the last ``[have/total/available]`` status line in its output. It has no DHT and no
    peer exchange, and speaks to HTTP trackers only. It refuses every peer at its own IP
    address ("Connection from myself"): give it a loopback address of its own (``host``).
    It writes a torrent's BEP 47 pad files as real files (of zeros).
    """

    spec = CLIENTS["ctorrent"]

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.procs: dict[str, ManagedProcess] = {}

    async def start(self) -> None:
        """Nothing runs until a torrent is added."""

    async def stop(self) -> None:
        for proc in self.procs.values():
            await proc.stop()

    async def add(self, torrent: Path, save_dir: Path, *, seed: bool = False) -> str:
        """Start ``ctorrent`` on ``torrent`` in ``save_dir``.

        CTorrent prints no info hash: the hash returned is the SHA-1 of the torrent's info
        dict as stored, the one CTorrent hashes too. That it is the one it uses shows when a
        peer answers its handshake.
        """
        from torrent.proto.bencoding import decode_with_info_span

        raw = await asyncio.to_thread(torrent.read_bytes)
        _, info = decode_with_info_span(raw)
        if info is None:
            raise PeerError(f"{torrent} has no info dict")
        ih = hashlib.sha1(info).hexdigest()
        self.peer_port = free_port()
        # -e 1: seed for an hour after completion (the test stops it long before).
        argv = ["ctorrent", "-v", "-e", "1", "-i", self.host, "-p", str(self.peer_port)]
        argv += ["-M", "20", "-C", "4", "-b", str(self.workdir / f"{ih}.bf"), str(torrent)]
        proc = ManagedProcess(argv, cwd=save_dir, log_path=self.workdir / f"ctorrent-{ih}.log")
        proc.start()
        self.procs[ih] = proc
        return ih

    async def state(self, info_hash: str) -> TorrentState:
        proc = self.procs[info_hash]
        proc.check_running()
        try:
            out = await asyncio.to_thread(proc.log_path.read_bytes)
        except OSError:
            out = b""
        found = _CTORRENT_STATUS.findall(out[-4096:])
        have, total = (int(found[-1][0]), int(found[-1][1])) if found else (0, 1)
        return TorrentState(info_hash=info_hash, progress=have / total, seeding=have == total)

    def describe_failure(self) -> str:
        tails = [f"{ih}:\n{proc.log_tail(60)}" for ih, proc in self.procs.items()]
        return "ctorrent output:\n" + "\n".join(tails)


PEER_CLASSES: dict[str, type[Peer]] = {
    "libtorrent": LibtorrentPeer,
    "transmission": TransmissionPeer,
    "aria2": Aria2Peer,
    "qbittorrent": QBittorrentPeer,
    "rtorrent": RtorrentPeer,
    "ctorrent": CtorrentPeer,
}


# --- trackers ----------------------------------------------------------------------------


class TrackerProcess:
    """A tracker in its own process group on free loopback ports (HTTP and UDP).

    Subclasses give the command line. ``scrape()`` asks the HTTP side for an info hash's
    counts, which is how a test sees that the tracker recorded a client's announce
    without reaching into the tracker's internals.
    """

    title = "tracker"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.http_port = 0
        self.udp_port = 0
        self.proc: ManagedProcess | None = None

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}/announce"

    @property
    def udp_url(self) -> str:
        return f"udp://{LOOPBACK}:{self.udp_port}/announce"

    def url(self, proto: str) -> str:
        return {"http": self.http_url, "udp": self.udp_url}[proto]

    def argv(self, info_hashes: list[str]) -> tuple[list[str], Path]:
        """The command and its working directory."""
        raise NotImplementedError

    async def start(self, info_hashes: list[str] | None = None) -> None:
        self.http_port, self.udp_port = free_ports(2)
        argv, cwd = self.argv(info_hashes or [])
        self.proc = ManagedProcess(argv, cwd=cwd, log_path=self.workdir / "tracker.log")
        self.proc.start()

        async def ready() -> bool:
            assert self.proc is not None
            self.proc.check_running()
            await self._udp_connect()
            _reader, writer = await asyncio.open_connection(LOOPBACK, self.http_port)
            writer.close()
            return True

        await wait_for(ready, timeout_s=READY_TIMEOUT_S, what=f"{self.title} to listen")

    async def stop(self) -> None:
        if self.proc is not None:
            await self.proc.stop()

    async def __aenter__(self) -> TrackerProcess:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _udp_connect(self) -> None:
        """One BEP 15 connect round trip: the UDP side answers."""
        loop = asyncio.get_running_loop()
        txid = random.getrandbits(32)
        reply: asyncio.Future[bytes] = loop.create_future()

        class _Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                if not reply.done():
                    reply.set_result(data)

        transport, _ = await loop.create_datagram_endpoint(_Proto, remote_addr=(LOOPBACK, self.udp_port))
        try:
            transport.sendto(
                (0x41727101980).to_bytes(8, "big") + (0).to_bytes(4, "big") + txid.to_bytes(4, "big")
            )
            data = await asyncio.wait_for(reply, 1)
        finally:
            transport.close()
        if len(data) < 16 or int.from_bytes(data[4:8], "big") != txid:
            raise PeerError("bad UDP connect reply")

    async def scrape(self, info_hash: str) -> dict[str, int]:
        """``complete``/``incomplete``/``downloaded`` for ``info_hash`` (hex) over HTTP."""
        from urllib.parse import quote_from_bytes

        from torrent.proto import bencoding

        url = f"http://{LOOPBACK}:{self.http_port}/scrape?info_hash={quote_from_bytes(bytes.fromhex(info_hash))}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http, http.get(url) as r:
            body = await r.read()
        decoded = bencoding.decode(body)
        files = decoded.get(b"files", {})
        entry = files.get(bytes.fromhex(info_hash), {})
        return {k.decode(): int(v) for k, v in entry.items() if isinstance(v, int)}

    def describe_failure(self) -> str:
        return f"{self.title} log:\n" + (self.proc.log_tail() if self.proc else "")


class OpenTracker(TrackerProcess):
    """Debian's opentracker (whitelist mode) as a reference tracker.

    ``INTEROP_TRACKER=opentracker`` runs the tracker rows against it instead of ours,
    which tells a harness problem from a tracker problem.
    """

    title = "opentracker"

    async def start(self, info_hashes: list[str] | None = None) -> None:
        await super().start(info_hashes)
        # It loads the whitelist in a thread after it starts listening; announces that
        # arrive before that are refused.
        await asyncio.sleep(1.0)

    def argv(self, info_hashes: list[str]) -> tuple[list[str], Path]:
        root = self.workdir / "root"
        root.mkdir(exist_ok=True)
        root.chmod(0o755)  # it chroots here, then drops root for 'nobody'
        whitelist = root / "whitelist.txt"
        whitelist.write_text("".join(f"{ih}\n" for ih in info_hashes))
        whitelist.chmod(0o644)
        return (
            [
                "opentracker",
                "-i",
                LOOPBACK,
                "-p",
                str(self.http_port),
                "-P",
                str(self.udp_port),
                "-d",
                str(root),
                "-u",
                "nobody",
                "-w",
                "/whitelist.txt",
            ],
            root,
        )
