"""A restart of ``pytorrent daemon`` with dormant seeds, as the command runs it.

Its first answers list every torrent seeding without importing what no dormant seed
needs (the peer wire, MSE, uTP, the metainfo and magnet parsers, the disk layer, the swarm), and the
cyclic garbage collector, paused while it starts, is running again once it answers.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.daemon_helpers import running_daemon
from tests.integration.swarm_helpers import make_payload, make_torrent
from tests.polling import wait_until

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]

#: Modules a restart of dormant seeds must not import before its first answers.
NOT_ON_RESTART = (
    "torrent.proto.wire.events",
    "torrent.proto.wire.codec",
    "torrent.proto.wire.connection",
    "torrent.proto.metainfo",
    "torrent.proto.magnet",
    "torrent.disk.resume",
    "torrent.disk.storage",
    "torrent.engine.swarm",
    "torrent.engine.peer",
    "torrent.engine.mse_stream",
    "torrent.proto.mse",
    "torrent.engine.utp_socket",
    "torrent.proto.utp",
)
#: ... nor these (aiohttp, which loads a second after the first answers, imports some).
STDLIB_NOT_ON_RESTART = ("shutil", "secrets", "pathlib", "urllib.parse")

# Runs the daemon command in this process (``cmd_daemon.run``, as the console script does)
# and, from a thread, its first RPC calls over a plain socket; prints what it saw.
SCRIPT = """
import gc, json, socket, sys, threading, time
from cli import cmd_daemon
from cli.main import build_parser

cmd_daemon.GC_UNFREEZE_S = 0.3
port = int(sys.argv[1])
args = build_parser("daemon").parse_args(sys.argv[2:-1])
report = {}

def post(body, sid=""):
    raw = json.dumps(body).encode()
    head = (
        "POST /transmission/rpc HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\n"
        f"X-Transmission-Session-Id: {sid}\\r\\nContent-Length: {len(raw)}\\r\\n\\r\\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode() + raw)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\\r\\n\\r\\n")
    return head.decode(), payload

def client():
    deadline = time.monotonic() + 30
    while True:
        try:
            head, _ = post({"method": "session-get"})
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    sid = next(line.split(":", 1)[1].strip() for line in head.split("\\r\\n")
               if line.lower().startswith("x-transmission-session-id:"))
    post({"method": "session-get"}, sid)
    _, payload = post({"method": "torrent-get", "arguments": {"fields": ["id", "status", "percentDone"]}}, sid)
    report["torrents"] = json.loads(payload)["arguments"]["torrents"]
    report["loaded"] = sorted(m for m in json.loads(sys.argv[-1]) if m in sys.modules)
    report["aiohttp"] = "aiohttp" in sys.modules
    report["gc_enabled"] = gc.isenabled()
    report["frozen"] = gc.get_freeze_count()
    deadline = time.monotonic() + 30
    while gc.get_freeze_count() and time.monotonic() < deadline:
        time.sleep(0.05)
    report["frozen_later"] = gc.get_freeze_count()
    post({"method": "session-close"}, sid)

thread = threading.Thread(target=client)
thread.start()
report["code"] = cmd_daemon.run(args)
thread.join()
report["gc_enabled_after"] = gc.isenabled()
print("REPORT", json.dumps(report))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_restart_answers_without_the_wire_parsers_or_disk_and_collects_again(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    metas = [make_torrent(make_payload(downloads, f"f{i}.bin", 50_000, seed=i)) for i in range(3)]
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, client):
        ids = [await client.add(m) for m in metas]
        await wait_until(lambda: all(daemon.records[i].parked for i in ids), what="all dormant")
    port = _free_port()
    command = [
        "daemon",
        *("--rpc-host", "127.0.0.1", "--rpc-port", str(port)),
        *("--bind", "127.0.0.1", "--port", "0"),
        *("--no-dht", "--no-lsd", "--no-port-mapping"),
        *("--state-dir", str(tmp_path / "state"), "--download-dir", str(downloads)),
    ]
    proc = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-c",
            SCRIPT,
            str(port),
            *command,
            json.dumps([*NOT_ON_RESTART, *STDLIB_NOT_ON_RESTART]),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    [line] = [x for x in proc.stdout.splitlines() if x.startswith("REPORT ")]
    report = json.loads(line.removeprefix("REPORT "))
    assert [(t["id"], t["status"], t["percentDone"]) for t in report["torrents"]] == [(i, 6, 1) for i in ids]
    expected_loaded = (
        [] if not report["aiohttp"] else sorted(set(report["loaded"]) & set(STDLIB_NOT_ON_RESTART))
    )
    assert report["loaded"] == expected_loaded
    assert report["gc_enabled"] is True
    assert report["frozen"] > 0  # what the start made, left out of the first collections
    assert report["frozen_later"] == 0
    assert report["code"] == 0
    assert report["gc_enabled_after"] is True
