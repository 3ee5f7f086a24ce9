"""A leecher's start-up: from process start to its first request on the wire.

Usage (as root, the script re-runs itself in a loopback-only network namespace):

    python bench/first_request.py [--runs 15] [--baseline DIR]

Each run starts ``pytorrent download X.torrent --no-seed --json --no-dht --no-lsd
--no-port-mapping --no-utp`` (``python -m cli.main``, bytecode compiled first, as a user's
``pip install`` leaves it) for a 1 MiB torrent with a fresh download directory. This
process plays both the HTTP tracker and the one seed, on loopback, with blocking sockets
on threads: the tracker answers the announce with the seed's address; the seed takes the
MSE handshake the leecher opens with (``--encryption prefer``, the default; through
:class:`torrent.proto.mse.Receiver`), sends its BitTorrent handshake, a full bitfield and
unchoke, and reads until the leecher's first ``request``. At that moment the leecher is
killed, so ``wait4`` gives its CPU seconds up to its first request; the wall times are
from just before ``exec`` to the announce arriving and to the request arriving.

With ``--baseline DIR`` (another checkout), runs alternate between the two. Prints the
median and best of each figure, and the load average before and after.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.swarm_process import make_torrent  # noqa: E402
from bench.transfer import prepare_run  # noqa: E402
from torrent.proto import bencoding  # noqa: E402
from torrent.proto.mse import NEED_DATA, HandshakeDone, Receiver  # noqa: E402

FLAGS = ["--no-seed", "--json", "--no-dht", "--no-lsd", "--no-port-mapping", "--no-utp"]
REQUEST = 6  # BEP 3 message id
WAIT_S = 30.0


@dataclass
class Samples:
    announce_ms: list[float] = field(default_factory=list)
    request_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)


class FakeSwarm:
    """One HTTP tracker and one seed on loopback, each answering one connection per run."""

    def __init__(self, info_hash: bytes) -> None:
        self.info_hash = info_hash
        self.tracker = socket.create_server(("127.0.0.1", 0))
        self.seed = socket.create_server(("127.0.0.1", 0))
        self.seed_port = self.seed.getsockname()[1]
        self.announce_url = f"http://127.0.0.1:{self.tracker.getsockname()[1]}/announce"

    def serve_announce(self, stamps: dict[str, float]) -> None:
        conn, _ = self.tracker.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            stamps["announce"] = time.perf_counter()
            peers = socket.inet_aton("127.0.0.1") + struct.pack(">H", self.seed_port)
            body = bencoding.encode({b"interval": 1800, b"peers": peers})
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )

    def serve_peer(self, stamps: dict[str, float], on_request: threading.Event) -> None:
        conn, _ = self.seed.accept()
        # As libtorrent does: without it the second of two small writes (MSE's step 4,
        # then the handshake) waits for the leecher's delayed ACK, about 40 ms.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            first = conn.recv(65536)
            if first.startswith(b"\x13BitTorrent protocol"):
                encrypt = decrypt = _same
                buffered = first[68:]
            else:
                hs = Receiver([self.info_hash], max_pad=0)
                hs.receive_data(first)
                while (ev := hs.next_event()) is NEED_DATA:
                    conn.sendall(hs.data_to_send())
                    hs.receive_data(conn.recv(65536))
                conn.sendall(hs.data_to_send())
                assert isinstance(ev, HandshakeDone)
                stream = hs.stream()
                encrypt, decrypt = stream.encrypt, stream.decrypt
                buffered = ev.initial_payload[68:] + ev.remainder
            ours = b"\x13BitTorrent protocol" + bytes(8) + self.info_hash + b"-BENCH0-" + bytes(12)
            bitfield = struct.pack(">IBB", 2, 5, 0x80)  # one piece, which we have
            unchoke = struct.pack(">IB", 1, 1)
            conn.sendall(encrypt(ours + bitfield + unchoke))
            while True:
                while len(buffered) >= 5:
                    (length,) = struct.unpack_from(">I", buffered)
                    if length and buffered[4] == REQUEST:
                        stamps["request"] = time.perf_counter()
                        on_request.set()
                        return
                    if len(buffered) < 4 + length:
                        break
                    buffered = buffered[4 + length :]
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buffered += decrypt(chunk)


def _same(data: bytes | bytearray | memoryview) -> bytes:
    return bytes(data)


def time_one(root: Path, swarm: FakeSwarm, torrent: Path, out: Path, into: Samples) -> None:
    shutil.rmtree(out, ignore_errors=True)
    stamps: dict[str, float] = {}
    got_request = threading.Event()
    threads = [
        threading.Thread(target=swarm.serve_announce, args=(stamps,), daemon=True),
        threading.Thread(target=swarm.serve_peer, args=(stamps, got_request), daemon=True),
    ]
    for t in threads:
        t.start()
    argv = [sys.executable, "-m", "cli.main", "download", *FLAGS, "--port", "0", str(torrent), "-o", str(out)]
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    if not got_request.wait(WAIT_S):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{root}: no request within {WAIT_S} s")
    os.kill(proc.pid, signal.SIGKILL)
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = -signal.SIGKILL
    for t in threads:
        t.join(WAIT_S)
    into.announce_ms.append((stamps["announce"] - started) * 1000)
    into.request_ms.append((stamps["request"] - started) * 1000)
    into.cpu_ms.append((usage.ru_utime + usage.ru_stime) * 1000)
    shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--baseline", metavar="DIR", help="alternate with this checkout")
    args = parser.parse_args()
    args.baseline = prepare_run(args.baseline)
    trees = {"this checkout": ROOT}
    if args.baseline:
        trees[f"baseline ({Path(args.baseline).name})"] = Path(args.baseline)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-first-request-") as tmp:
        work = Path(tmp)
        payload = work / "seed" / "one.bin"
        payload.parent.mkdir()
        # The announce URL is only known once the tracker listens: make the torrent then.
        probe = bencoding.decode(make_torrent(payload, 1 << 20, "http://127.0.0.1:1/announce"))
        swarm = FakeSwarm(hashlib.sha1(bencoding.encode(probe[b"info"])).digest())
        probe[b"announce"] = swarm.announce_url.encode()
        torrent = work / "one.torrent"
        torrent.write_bytes(bencoding.encode(probe))
        samples = {name: Samples() for name in trees}
        for run in range(args.runs + 1):  # run 0 warms the page cache, untimed
            for name, root in trees.items():
                into = samples[name] if run else Samples()
                time_one(root, swarm, torrent, work / "out", into)
    load_after = os.getloadavg()
    med = statistics.median
    print(f"\nprocess start to first request, {args.runs} runs alternated (median / best, ms)")
    print(f"{'leecher':28} {'to announce':>16} {'to request':>16} {'CPU to request':>16}")
    for name, s in samples.items():
        print(
            f"{name:28} {med(s.announce_ms):8.1f} /{min(s.announce_ms):6.1f} "
            f"{med(s.request_ms):8.1f} /{min(s.request_ms):6.1f} "
            f"{med(s.cpu_ms):8.1f} /{min(s.cpu_ms):6.1f}"
        )
    print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")


if __name__ == "__main__":
    main()
