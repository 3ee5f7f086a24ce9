"""``pytorrent dht``: a standalone node others can join; SIGINT and SIGTERM exit 0."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.dht_helpers import TEST_CONFIG, loopback_host
from torrent.engine.dht_node import DhtNode, load_state

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_a_standalone_node_serves_others_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    state = tmp_path / "dht.state"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "dht", "--bind", "127.0.0.1", "--port", "0",
        "--bootstrap", "", "--interval", "0.3", "--state", str(state),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(20):
            first = (await proc.stdout.readline()).decode()
            m = re.fullmatch(r"DHT node ([0-9a-f]{40}) on UDP 127\.0\.0\.1:(\d+)\n", first)
            assert m, first
            port = int(m.group(2))
            async with DhtNode(
                loopback_host(0), 0, bootstrap=[("127.0.0.1", port)], config=TEST_CONFIG
            ) as node:
                await node.wait_bootstrapped()
                ours = (node.host, node.port)
                done = await node.find_node(node.node_id)
                assert bytes.fromhex(m.group(1)) in {n.id for n in done.closest}
                # the standalone node now knows ours: a status line says so
                while True:
                    line = (await proc.stdout.readline()).decode()
                    assert line.startswith("nodes "), line
                    if re.match(r"nodes [1-9]", line):
                        break
            proc.send_signal(sig)
            rest, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert rest.decode().splitlines()[-1] == "DHT node stopped"
    saved_id, nodes = load_state(state)
    assert saved_id == bytes.fromhex(m.group(1))
    assert ours in {(n.host, n.port) for n in nodes}
