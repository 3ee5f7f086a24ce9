"""``pytorrent seed FILE.torrent DATA_PATH``: DATA_PATH is the content itself or its parent."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from tests.integration.swarm_helpers import free_port, make_payload, make_torrent, same_tree
from torrent import config
from torrent.engine.session import Session

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("given", ["content", "parent", "renamed"])
async def test_seed_command_serves_a_leecher(tmp_path: Path, given: str) -> None:
    content = make_payload(tmp_path / "data", "set", {"a.bin": 200_000, "d/b.bin": 150_000})
    meta = make_torrent(content, piece_length=32 * 1024)
    (tmp_path / "t.torrent").write_bytes(meta.to_bytes())
    if given == "renamed":
        content = content.rename(tmp_path / "data" / "other-name")
    data_path = tmp_path / "data" if given == "parent" else content
    port = free_port()
    async with asyncio.timeout(40):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", "seed", "--no-dht", "--no-lsd", "--no-port-mapping", str(tmp_path / "t.torrent"), str(data_path),
            "--port", str(port), "--bind", "127.0.0.1", "--json",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            while True:  # until the seed says it has checked its data
                ev = json.loads(await proc.stdout.readline())
                if ev["event"] == "checked":
                    assert ev["message"] == f"{meta.info.num_pieces}/{meta.info.num_pieces} pieces verified"
                    break
            async with Session(config.testing_settings()) as s:
                t = await s.add_torrent(meta, tmp_path / "out", seed=False, peers=[("127.0.0.1", port)])
                await t.wait_complete()
        finally:
            proc.send_signal(signal.SIGINT)
            await proc.wait()
    assert proc.returncode == 130
    assert same_tree(content, tmp_path / "out" / "set")
