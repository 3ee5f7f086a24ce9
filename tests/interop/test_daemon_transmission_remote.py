"""``pytorrent daemon`` as a process, driven by Debian's ``transmission-remote`` on loopback.

Also what only a process shows: SIGTERM ends it with exit 0, SIGHUP reloads the settings
file, kill -9 loses no torrent, the watch directory, and a real download from a
``pytorrent seed`` process.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.swarm_helpers import free_port, make_payload, make_torrent
from tests.polling import wait_until_blocking
from torrent import config
from torrent.engine.session import Session
from torrent.proto.metainfo import Metainfo

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.usefixtures("loopback_only"),
    pytest.mark.skipif(
        shutil.which("transmission-remote") is None, reason="transmission-remote is not installed"
    ),
]

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DaemonProcess:
    proc: subprocess.Popen[bytes]
    log: Path
    rpc: str  # host:port
    peer_port: int
    auth: tuple[str, ...] = ()

    def remote(self, *args: str, check: bool = True) -> str:
        """Run ``transmission-remote HOST:PORT args``; its stdout."""
        out = subprocess.run(
            ["transmission-remote", self.rpc, *self.auth, *args], capture_output=True, text=True, timeout=30
        )
        if check:
            assert out.returncode == 0, (out.stdout, out.stderr)
        return out.stdout + out.stderr

    def rows(self) -> list[list[str]]:
        """``-l`` as rows of columns (header and sum line left out)."""
        lines = self.remote("-l").splitlines()[1:-1]
        return [line.split() for line in lines]

    def info(self, tid: int) -> str:
        return self.remote("-t", str(tid), "-i")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    return env


@contextlib.contextmanager
def daemon_process(tmp_path: Path, *extra: str, name: str = "daemon") -> Iterator[DaemonProcess]:
    log = tmp_path / f"{name}.log"
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli.main",
                "--no-uvloop",
                "daemon",
                "--no-dht",
                "--no-lsd",
                "--no-port-mapping",
                "--rpc-host",
                "127.0.0.1",
                "--rpc-port",
                "0",
                "--bind",
                "127.0.0.1",
                "--port",
                "0",
                "--state-dir",
                str(tmp_path / "state"),
                "--download-dir",
                str(tmp_path / "downloads"),
                *extra,
            ],
            stderr=err,
            stdout=subprocess.DEVNULL,
            cwd=ROOT,
            env=_env(),
        )
    try:
        pattern = re.compile(r"RPC on http://([\d.]+:\d+)/transmission/rpc; peers on port (\d+)")
        found: list[re.Match[str]] = []

        def started() -> bool:
            matches = list(pattern.finditer(log.read_text()))
            if matches:
                found.append(matches[-1])
            return bool(matches) or proc.poll() is not None

        wait_until_blocking(started, timeout_s=20, what="the daemon's RPC is up")
        assert found, log.read_text()
        auth: tuple[str, ...] = ()
        if "--rpc-username" in extra:
            auth = (
                "-n",
                f"{extra[extra.index('--rpc-username') + 1]}:{extra[extra.index('--rpc-password') + 1]}",
            )
        yield DaemonProcess(proc, log, found[-1].group(1), int(found[-1].group(2)), auth)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _stop(d: DaemonProcess, sig: int = signal.SIGTERM) -> int:
    d.proc.send_signal(sig)
    return d.proc.wait(timeout=30)


def _row(d: DaemonProcess, tid: int) -> list[str]:
    for row in d.rows():
        if row[0].rstrip("*") == str(tid):
            return row
    raise AssertionError(f"torrent {tid} not listed: {d.rows()}")


def test_transmission_remote_drives_the_daemon(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    content = make_payload(downloads, "album", {"one.bin": 70_000, "two.bin": 50_000})
    torrent = tmp_path / "album.torrent"
    torrent.write_bytes(make_torrent(content, piece_length=16 * 1024).to_bytes())
    with daemon_process(tmp_path, "--rpc-username", "u", "--rpc-password", "p") as d:
        # Without credentials: 401.
        out = subprocess.run(["transmission-remote", d.rpc, "-l"], capture_output=True, text=True, timeout=30)
        assert "401" in out.stdout + out.stderr
        assert "success" in d.remote("-a", str(torrent))
        wait_until_blocking(lambda: _row(d, 1)[1] == "100%", what="checked complete")
        info = d.info(1)
        assert "Name: album" in info
        assert "Percent Done: 100%" in info
        assert f"Location: {downloads}" in info
        files = d.remote("-t", "1", "-f")
        assert "one.bin" in files
        assert "two.bin" in files

        d.remote("-t", "1", "-S")
        wait_until_blocking(lambda: "Stopped" in _row(d, 1), what="stopped")
        d.remote("-t", "1", "-s")
        wait_until_blocking(lambda: "Stopped" not in _row(d, 1), what="started")

        d.remote("-t", "1", "-G", "1")  # two.bin not wanted
        assert re.search(r"1:\s+\S+\s+Normal\s+No", d.remote("-t", "1", "-f"))
        d.remote("-t", "1", "-g", "1")
        assert re.search(r"1:\s+\S+\s+Normal\s+Yes", d.remote("-t", "1", "-f"))

        d.remote("-t", "1", "-v")
        rows: list[list[str]] = []

        def verified() -> bool:
            rows.append(_row(d, 1))
            return rows[-1][1] == "100%" and "Verifying" not in " ".join(rows[-1])

        try:
            wait_until_blocking(verified, timeout_s=30, what="verified")
        finally:
            print("rows seen while verifying:", rows[:3], rows[-3:])

        d.remote("-d", "300", "-u", "200")
        session = d.remote("-si")
        assert "Download speed limit: 300 kB/s" in session
        assert "Upload speed limit: 200 kB/s" in session
        d.remote("-D", "-U")
        assert "Download speed limit: Unlimited" in d.remote("-si")
        assert "Started 1 times" in d.remote("-st")

        moved = tmp_path / "moved"
        d.remote("-t", "1", "--move", str(moved))
        assert (moved / "album" / "one.bin").is_file()
        assert f"Location: {moved}" in d.info(1)

        d.remote("-t", "1", "-r")
        assert d.rows() == []
        assert (moved / "album" / "one.bin").is_file()  # -r keeps the data

        assert "success" in d.remote("-a", str(torrent), "-w", str(moved))
        wait_until_blocking(lambda: bool(d.rows()) and d.rows()[0][1] == "100%", what="re-added complete")
        d.remote("-t", "2", "--remove-and-delete")
        wait_until_blocking(lambda: not (moved / "album").exists(), what="data deleted")
        assert d.rows() == []
        assert _stop(d) == 0


def test_download_from_a_pytorrent_seed_over_rpc(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "greeting.bin", 600_000)
    torrent = tmp_path / "greeting.torrent"
    torrent.write_bytes(make_torrent(content, piece_length=32 * 1024).to_bytes())
    with daemon_process(tmp_path) as d:
        assert "success" in d.remote("-a", str(torrent))
        seed = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli.main",
                "--no-uvloop",
                "seed",
                "--no-port-mapping",
                str(torrent),
                str(content),
                "--bind",
                "127.0.0.1",
                "--port",
                "0",
                "--peer",
                f"127.0.0.1:{d.peer_port}",
                "-q",
            ],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until_blocking(lambda: _row(d, 1)[1] == "100%", timeout_s=60, what="downloaded")
        finally:
            seed.terminate()
            seed.wait(timeout=30)
        got = tmp_path / "downloads" / "greeting.bin"
        assert got.read_bytes() == content.read_bytes()
        assert "Downloaded: 600.0 kB" in d.info(1)
        assert _stop(d, signal.SIGINT) == 0


def test_kill_9_loses_no_torrent_and_sigterm_exits_0(tmp_path: Path) -> None:
    torrents = []
    for i in range(5):
        content = make_payload(tmp_path / "downloads", f"t{i}.bin", 40_000, seed=i)
        path = tmp_path / f"t{i}.torrent"
        path.write_bytes(make_torrent(content, piece_length=16 * 1024).to_bytes())
        torrents.append(path)
    with daemon_process(tmp_path) as d:
        for path in torrents:
            assert "success" in d.remote("-a", str(path))
        d.remote("-t", "2", "-S")
        wait_until_blocking(
            lambda: len(d.rows()) == 5 and all(r[1] == "100%" for r in d.rows()), what="all checked"
        )
        d.proc.kill()  # kill -9: no clean shutdown
        d.proc.wait()
    with daemon_process(tmp_path, name="again") as d:
        wait_until_blocking(lambda: len(d.rows()) == 5, what="every torrent back")
        wait_until_blocking(lambda: all(r[1] == "100%" for r in d.rows()), what="all complete again")
        assert "Stopped" in _row(d, 2)
        assert _stop(d) == 0
        assert "stopped" in d.log.read_text().splitlines()[-1]


def test_kill_9_right_after_the_add_replies_loses_no_torrent(tmp_path: Path) -> None:
    """Adds from twenty clients at once (so they share group commits); kill -9 as soon as
    the last one answered success: every torrent is back after the restart."""
    paths = []
    for i in range(20):
        content = make_payload(tmp_path / "downloads", f"k{i:02d}.bin", 20_000, seed=i)
        path = tmp_path / f"k{i:02d}.torrent"
        path.write_bytes(make_torrent(content, piece_length=16 * 1024).to_bytes())
        paths.append(str(path))
    with daemon_process(tmp_path) as d:
        # transmission-remote 3.00 adds only the last of several files given to one -a.
        clients = [
            subprocess.Popen(
                ["transmission-remote", d.rpc, "-a", p], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            for p in paths
        ]
        outputs = [c.communicate(timeout=30)[0].decode() for c in clients]
        d.proc.kill()  # kill -9 at once: no clean shutdown, no scheduler pass in between
        d.proc.wait()
    assert all("success" in out for out in outputs), outputs
    with daemon_process(tmp_path, name="again") as d:
        names = sorted(r[-1] for r in d.rows())
        assert names == [f"k{i:02d}.bin" for i in range(20)]
        assert _stop(d) == 0


def test_alternative_speed_schedule_over_transmission_remote(tmp_path: Path) -> None:
    """``--alt-speed-scheduler`` with times and days: a window around now turns the
    turtle limits on at once, one later in the day turns them off; the schedule persists."""

    def hhmm(minutes: int) -> str:
        minutes %= 24 * 60
        return f"{minutes // 60:02d}{minutes % 60:02d}"

    local = datetime.datetime.now()
    now = local.hour * 60 + local.minute
    with daemon_process(tmp_path) as d:
        d.remote("-as", "--alt-speed-days", "0-6")  # -as: turtle on by hand first, then the schedule
        d.remote(
            "--alt-speed-scheduler",
            "--alt-speed-time-begin",
            hhmm(now + 120),
            "--alt-speed-time-end",
            hhmm(now + 180),
        )
        info = d.remote("-si")
        assert f"Turtle schedule: {hhmm(now + 120)[:2]}:{hhmm(now + 120)[2:]} - " in info
        assert "Sun Mon Tue Wed Thu Fri Sat" in info
        assert "Disabled turtle limit" in info  # outside the window: off at once
        d.remote("--alt-speed-time-begin", hhmm(now - 60), "--alt-speed-time-end", hhmm(now + 60))
        wait_until_blocking(
            lambda: "Enabled turtle limit" in d.remote("-si"), what="turtle on by the schedule"
        )
        # Not today, nor yesterday (whose window may run past midnight into today).
        today = (local.weekday() + 1) % 7  # 0 is Sunday
        others = [day for day in range(7) if day not in (today, (today - 1) % 7)]
        d.remote("--alt-speed-days", ",".join(map(str, others)))
        wait_until_blocking(lambda: "Disabled turtle limit" in d.remote("-si"), what="not today: off")
        assert _stop(d) == 0
    with daemon_process(tmp_path, name="again") as d:
        info = d.remote("-si")
        assert f"Turtle schedule: {hhmm(now - 60)[:2]}:{hhmm(now - 60)[2:]} - " in info
        names = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        assert " ".join(names[day] for day in others) in info
        d.remote("--no-alt-speed-scheduler")
        assert "Turtle schedule" not in d.remote("-si")
        assert _stop(d) == 0


def test_sighup_reloads_the_settings_file_and_watch_dir(tmp_path: Path) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"speed-limit-up": 42, "speed-limit-up-enabled": True}))
    watch = tmp_path / "watch"
    watch.mkdir()
    with daemon_process(tmp_path, "--config", str(settings), "--watch-dir", str(watch)) as d:
        assert "Upload speed limit: 42 kB/s" in d.remote("-si")
        # The network keys reload too, as session-set applies them.
        port = free_port()
        network = {"peer-port": port, "encryption": "required", "pex-enabled": False, "utp-enabled": False}
        settings.write_text(json.dumps({"speed-limit-up": 7, "speed-limit-up-enabled": True, **network}))
        d.proc.send_signal(signal.SIGHUP)
        wait_until_blocking(lambda: "Upload speed limit: 7 kB/s" in d.remote("-si"), what="reloaded")
        got = _network(d)
        assert (got["Listenport"], got["Encryption"]) == (str(port), "required")
        assert (got["Peer exchange allowed"], got["uTP enabled"]) == ("No", "No")
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the new port listens
        settings.write_text(json.dumps({"peer-port": 70000}))
        d.proc.send_signal(signal.SIGHUP)
        wait_until_blocking(lambda: "peer-port" in d.log.read_text(), what="the bad value logged")
        assert "kept the previous settings" in d.log.read_text()
        assert _network(d)["Listenport"] == str(port)

        content = make_payload(tmp_path / "downloads", "w.bin", 30_000)
        (watch / "good.torrent").write_bytes(make_torrent(content).to_bytes())
        (watch / "bad.torrent").write_bytes(b"this is not bencoded")
        wait_until_blocking(lambda: (watch / "good.torrent.added").exists(), what="good.torrent taken")
        wait_until_blocking(lambda: (watch / "bad.torrent.invalid").exists(), what="bad.torrent refused")
        assert [r[-1] for r in d.rows()] == ["w.bin"]
        assert "bad.torrent is not a valid torrent" in d.log.read_text()
        assert _stop(d) == 0


def _leech(meta: Metainfo, into: Path, peer_port: int) -> float:
    """Download ``meta`` from the daemon's peer port with an in-process session; seconds taken."""

    async def run() -> float:
        async with Session(config.testing_settings()) as session:
            start = time.monotonic()
            leecher = await session.add_torrent(meta, into, peers=[("127.0.0.1", peer_port)], seed=False)
            async with asyncio.timeout(60):
                await leecher.wait_complete()
            return time.monotonic() - start

    return asyncio.run(run())


def test_transmission_remote_sets_per_torrent_rate_and_ratio_limits(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "downloads", "big.bin", 400_000)
    meta = make_torrent(content, piece_length=32 * 1024)
    torrent = tmp_path / "big.torrent"
    torrent.write_bytes(meta.to_bytes())
    with daemon_process(tmp_path) as d:
        assert "success" in d.remote("-a", str(torrent))
        wait_until_blocking(lambda: _row(d, 1)[1] == "100%", what="checked complete")
        d.remote("-t", "1", "-u", "100", "-d", "50")
        info = d.info(1)
        assert "Upload Limit: 100 kB/s" in info
        assert "Download Limit: 50 kB/s" in info

        # 400 kB through a 100 kB/s bucket (half a second of burst): at least 3.5 s;
        # unlimited on loopback it takes a fraction of a second.
        elapsed = _leech(meta, tmp_path / "leecher", d.peer_port)
        assert (tmp_path / "leecher" / "big.bin").read_bytes() == content.read_bytes()
        assert elapsed >= 3.0, f"400 kB in {elapsed:.2f} s through a 100 kB/s limit"

        # Ratio 0.5 and 400 kB uploaded: the daemon stops it and calls it finished.
        d.remote("-t", "1", "-sr", "0.5")
        assert "Ratio Limit: 0.5" in d.info(1)
        # transmission-remote lists a torrent stopped at its limit as "Finished".
        wait_until_blocking(lambda: "Finished" in _row(d, 1), what="stopped at its seed ratio")
        assert "State: Finished" in d.info(1)
        # No ratio limit any more, started again: it seeds.
        d.remote("-t", "1", "-SR")
        assert "Ratio Limit: Unlimited" in d.info(1)
        d.remote("-t", "1", "-s")
        # Seeding with nobody to upload to: transmission-remote calls it "Idle".
        wait_until_blocking(lambda: "Idle" in _row(d, 1), what="seeding again")
        assert "State: Finished" not in d.info(1)
        assert _stop(d) == 0


def _network(d: DaemonProcess) -> dict[str, str]:
    """``-si``'s network lines, by their label."""
    labels = {
        "Listenport",
        "uTP enabled",
        "Distributed hash table enabled",
        "Local peer discovery enabled",
        "Peer exchange allowed",
        "Encryption",
    }
    out = {}
    for line in d.remote("-si").splitlines():
        label, _, value = line.strip().partition(": ")
        if label in labels:
            out[label] = value
    return out


def test_transmission_remote_changes_network_settings_live_and_they_persist(tmp_path: Path) -> None:
    # DHT bootstrap at a loopback port nobody answers on: turned on, it stays on the machine.
    nowhere = f"127.0.0.1:{free_port()}"
    with daemon_process(tmp_path, "--dht-bootstrap", nowhere) as d:
        before = _network(d)
        assert before == {
            "Listenport": str(d.peer_port),
            "uTP enabled": "Yes",
            "Distributed hash table enabled": "No",
            "Local peer discovery enabled": "No",
            "Peer exchange allowed": "Yes",
            "Encryption": "preferred",
        }
        port = free_port()
        d.remote("-p", str(port), "-o", "-X", "-y", "-er", "--no-utp")
        assert _network(d) == {
            "Listenport": str(port),
            "uTP enabled": "No",
            "Distributed hash table enabled": "Yes",
            "Local peer discovery enabled": "Yes",
            "Peer exchange allowed": "No",
            "Encryption": "required",
        }
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the new port listens
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", d.peer_port), timeout=5),
        ):
            pass
        d.remote("-ep")
        assert _network(d)["Encryption"] == "preferred"
        d.remote("-O", "-Y", "-et")
        assert _network(d)["Encryption"] == "tolerated"
        assert _network(d)["Distributed hash table enabled"] == "No"
        out = d.remote("-p", "70000", check=False)
        assert "success" not in out
        assert _stop(d) == 0
        assert "Traceback" not in d.log.read_text()
    with daemon_process(tmp_path, "--dht-bootstrap", nowhere, name="again") as d:
        assert d.peer_port == port
        assert _network(d) == {
            "Listenport": str(port),
            "uTP enabled": "No",
            "Distributed hash table enabled": "No",
            "Local peer discovery enabled": "No",
            "Peer exchange allowed": "No",
            "Encryption": "tolerated",
        }


def test_transmission_remote_takes_a_torrent_out_from_under_the_session_limits(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "downloads", "big.bin", 800_000)
    meta = make_torrent(content, piece_length=32 * 1024)
    torrent = tmp_path / "big.torrent"
    torrent.write_bytes(meta.to_bytes())
    with daemon_process(tmp_path) as d:
        assert "success" in d.remote("-a", str(torrent))
        wait_until_blocking(lambda: _row(d, 1)[1] == "100%", what="checked complete")
        d.remote("-u", "100")  # the session's upload limit: 100 kB/s
        assert "Honors Session Limits: Yes" in d.info(1)
        d.remote("-t", "1", "-HL")
        assert "Honors Session Limits: No" in d.info(1)
        # Not under the session's 100 kB/s: 800 kB in well under the 7.5 s it would take.
        elapsed = _leech(meta, tmp_path / "free", d.peer_port)
        assert (tmp_path / "free" / "big.bin").read_bytes() == content.read_bytes()
        assert elapsed < 5.0, f"800 kB in {elapsed:.2f} s with no limit of its own"
        d.remote("-t", "1", "-hl")
        assert "Honors Session Limits: Yes" in d.info(1)
        elapsed = _leech(meta, tmp_path / "limited", d.peer_port)
        assert elapsed >= 6.0, f"800 kB in {elapsed:.2f} s through the session's 100 kB/s"
        assert _stop(d) == 0
