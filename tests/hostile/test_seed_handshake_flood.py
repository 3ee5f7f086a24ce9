"""A handshake flood against our seed under ``ulimit -n 1024``: 1,100 connections that send
half a handshake and are reopened as soon as they are closed, from one address or from
forty. The seed caps handshakes per address and in total, evicts what waits longest, and an
honest leecher arriving in the middle of the flood downloads the torrent."""

from __future__ import annotations

import contextlib
import errno
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.swarm_helpers import make_payload, make_torrent
from tests.polling import wait_until_blocking

ROOT = Path(__file__).resolve().parents[2]
HALF_HANDSHAKE = b"\x13BitTorrent protocol\x00\x00"
FLOOD = 1100


def _seed_limits() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _dead(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class Flood:
    """``FLOOD`` half-open handshakes from ``sources``, reopened as they are closed."""

    def __init__(self, port: int, sources: list[str]) -> None:
        self.port = port
        self.sources = sources
        self.socks: list[socket.socket | None] = [None] * FLOOD
        self.opened = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, n: int) -> socket.socket | None:
        s = socket.socket()
        try:
            s.bind((self.sources[n % len(self.sources)], 0))
            s.settimeout(1)
            s.connect(("127.0.0.1", self.port))
            s.sendall(HALF_HANDSHAKE)
        except OSError as exc:
            s.close()
            if exc.errno == errno.EMFILE:  # our own limit: a bug in the test
                raise
            return None
        self.opened += 1
        return s

    def _run(self) -> None:
        while not self.stop.is_set():
            reopened = 0
            for n, s in enumerate(self.socks):
                if self.stop.is_set() or reopened >= 300:
                    break
                if s is None or _dead(s):
                    if s is not None:
                        s.close()
                    self.socks[n] = self._open(n)
                    reopened += 1
            self.stop.wait(0.2)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for s in self.socks:
            if s is not None:
                s.close()


@contextlib.contextmanager
def seed_process(tmp_path: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "seed", "--no-dht", "--no-lsd", "--no-port-mapping", "--quiet", "--port", str(port),
         "--bind", "127.0.0.1", str(tmp_path / "t.torrent"), str(tmp_path / "seed" / "payload.bin")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_seed_limits,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.parametrize("addresses", [1, 40], ids=["one-address", "forty-addresses"])
def test_an_honest_leecher_downloads_through_a_handshake_flood(tmp_path: Path, addresses: int) -> None:
    content = make_payload(tmp_path / "seed", "payload.bin", 4 << 20, seed=5)
    (tmp_path / "t.torrent").write_bytes(make_torrent(content, piece_length=64 * 1024).to_bytes())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with seed_process(tmp_path, port) as seed:
        wait_until_blocking(lambda: _listening(port), timeout_s=20, what="the seed listening")
        flood = Flood(port, [f"127.0.0.{2 + n}" for n in range(addresses)])
        flood.thread.start()
        try:
            wait_until_blocking(lambda: flood.opened >= FLOOD, timeout_s=30, what="the flood")
            started, opened_before = time.monotonic(), flood.opened
            leecher = subprocess.run(
                [sys.executable, "-m", "cli.main", "download", "--no-dht", "--no-lsd", "--no-port-mapping", "--quiet", "--no-seed",
                 str(tmp_path / "t.torrent"), "-o", str(tmp_path / "out"), "--port", "0", "--bind", "127.0.0.1",
                 "--peer", f"127.0.0.1:{port}", "--timeout", "60", "--max-down", "2M"],
                cwd=ROOT, capture_output=True, timeout=120,
            )  # fmt: skip
            elapsed = time.monotonic() - started
            assert flood.thread.is_alive()  # the flood lasted the whole download
            opened_during = flood.opened - opened_before
        finally:
            flood.close()
        assert seed.poll() is None, "the seed died under the flood"
    assert leecher.returncode == 0, leecher.stderr.decode(errors="replace")
    assert (tmp_path / "out" / "payload.bin").read_bytes() == content.read_bytes()
    assert elapsed < 60
    # the flood kept coming back while the leecher downloaded: it was closed and reopened
    assert opened_during > 0
