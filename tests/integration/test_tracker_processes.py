"""``pytorrent tracker`` as real processes: two sharing one Redis, --workers, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote_from_bytes

import pytest

from tests.polling import wait_until_blocking
from torrent.proto import bencoding
from torrent.proto.tracker_codec import decode_compact_peers

from .tracker_redis_fixture import RedisServer, free_port, redis_server  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
IH = bytes(range(40, 60))


def pid(n: int) -> bytes:
    return b"-PR0001-" + n.to_bytes(12, "big")


def announce(port: int, n: int, ih: bytes = IH, **extra: object) -> dict[bytes, object]:
    query = (
        f"info_hash={quote_from_bytes(ih, safe='')}&peer_id={quote_from_bytes(pid(n), safe='')}"
        f"&port={7000 + n}&left=1&compact=1"
    )
    query += "".join(f"&{k}={v}" for k, v in extra.items())
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/announce?{query}", timeout=5) as resp:
        assert resp.status == 200
        result: dict[bytes, object] = bencoding.decode(resp.read())
        return result


def peer_ports(d: dict[bytes, object]) -> set[int]:
    raw = d[b"peers"]
    assert isinstance(raw, bytes)
    return {p.port - 7000 for p in decode_compact_peers(raw)}


class Tracker:
    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.stderr = ""
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli.main",
                "tracker",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *args,
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"tracker exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("tracker did not start")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr and not self.proc.stderr.closed:
            self.stderr = self.proc.stderr.read().decode(errors="replace")
            self.proc.stderr.close()
        return int(self.proc.returncode)


@pytest.fixture
def trackers() -> Iterator[list[Tracker]]:
    started: list[Tracker] = []
    yield started
    for t in started:
        t.stop()


def test_two_processes_share_one_redis_and_survive_it_going_away(
    redis_server: RedisServer,  # noqa: F811
    trackers: list[Tracker],
) -> None:
    a = Tracker("--no-udp", "--store", redis_server.url)
    trackers.append(a)
    b = Tracker("--no-udp", "--store", redis_server.url)
    trackers.append(b)
    assert peer_ports(announce(a.port, 1)) == set()
    assert peer_ports(announce(b.port, 2)) == {1}
    assert peer_ports(announce(a.port, 1)) == {2}
    redis_server.stop()
    assert announce(a.port, 3) == {b"failure reason": b"tracker store unavailable"}
    assert a.proc.poll() is None
    redis_server.start()
    wait_until_blocking(
        lambda: b"failure reason" not in announce(b.port, 3), timeout_s=10, what="b to reach Redis again"
    )
    assert peer_ports(announce(a.port, 4)) == {3}
    assert a.stop() == 0
    assert b.stop() == 0


def test_sighup_reloads_the_allow_list_and_sigterm_stops(tmp_path: Path, trackers: list[Tracker]) -> None:
    allow = tmp_path / "allow.txt"
    allow.write_text("")
    t = Tracker("--no-udp", "--allow", str(allow))
    trackers.append(t)
    assert announce(t.port, 1) == {b"failure reason": b"torrent not allowed"}
    allow.write_text(IH.hex() + "\n")
    t.proc.send_signal(signal.SIGHUP)
    wait_until_blocking(
        lambda: b"failure reason" not in announce(t.port, 1), timeout_s=5, what="the allow-list reload"
    )
    assert t.stop(signal.SIGTERM) == 0


def test_sigint_stops_cleanly(trackers: list[Tracker]) -> None:
    t = Tracker("--udp-port", str(free_port()))
    trackers.append(t)
    announce(t.port, 1)
    assert t.stop(signal.SIGINT) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="--workers needs fork")
def test_workers_share_the_port(redis_server: RedisServer, trackers: list[Tracker]) -> None:  # noqa: F811
    t = Tracker("--workers", "2", "--udp-port", str(free_port()), "--store", redis_server.url)
    trackers.append(t)
    for n in range(20):  # connections land on either worker; all see one swarm
        announce(t.port, n)
    assert len(peer_ports(announce(t.port, 99, numwant=100))) == 20
    assert t.stop() == 0, t.stderr


def test_bad_flags_are_usage_errors() -> None:
    from cli.main import main

    assert main(["tracker", "--workers", "2"]) == 2
    assert main(["tracker", "--numwant-default", "500"]) == 2
    assert main(["tracker", "--allow", "/nonexistent/allow.txt"]) == 2
    assert main(["tracker", "--store", "postgres://x"]) == 2
