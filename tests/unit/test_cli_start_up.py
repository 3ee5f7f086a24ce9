"""A download's process starts without the cyclic garbage collector, and only its start.

``cli.main.entry`` (the process) holds the collector off while the command starts;
``download`` turns it back on, past everything made so far (``gc.freeze``), once its
torrents are added (``cli.main.started``). ``cli.main.main`` called from other code (as
these tests do) leaves the collector alone.
"""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

from cli.main import main
from tests.processes import ROOT
from torrent.proto import bencoding

#: The flags of a download that touches no network (see the torrent below).
QUIET = ["--no-seed", "--quiet", "--no-dht", "--no-lsd", "--no-port-mapping", "--no-utp"]

#: Records whether the collector runs while the torrent is added and once it runs.
SCRIPT = """
import gc, sys
import cli.cmd_download
from torrent.engine.session import Session

seen = {}
add_torrent, watch = Session.add_torrent, cli.cmd_download.watch

async def add_and_look(self, *args, **kwargs):
    seen["adding"] = (gc.isenabled(), gc.get_freeze_count() > 0)
    return await add_torrent(self, *args, **kwargs)

async def watch_and_look(*args, **kwargs):
    seen["watching"] = (gc.isenabled(), gc.get_freeze_count() > 0)
    print("SEEN", sorted(seen.items()), flush=True)
    return await watch(*args, **kwargs)

Session.add_torrent = add_and_look
cli.cmd_download.watch = watch_and_look
sys.argv = ["pytorrent", *sys.argv[1:]]
from cli.main import entry

entry()
"""


def _trackerless(tmp_path: Path) -> Path:
    info = {b"name": b"one.bin", b"length": 1 << 16, b"piece length": 1 << 16, b"pieces": bytes(20)}
    torrent = tmp_path / "one.torrent"
    torrent.write_bytes(bencoding.encode({b"info": info}))
    return torrent


def test_a_download_starts_without_the_collector_and_runs_with_it(tmp_path: Path) -> None:
    argv = ["download", str(_trackerless(tmp_path)), "-o", str(tmp_path / "out"), *QUIET]
    argv += ["--bind", "127.0.0.1", "--port", "0", "--timeout", "0.1"]
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, *argv], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1, proc.stderr  # no peer: it gave up after --timeout
    # off while adding; on, past start-up's objects, once running
    assert proc.stdout.splitlines() == ["SEEN [('adding', (False, False)), ('watching', (True, True))]"]


def test_main_leaves_the_collector_alone(tmp_path: Path) -> None:
    torrent = str(_trackerless(tmp_path))
    frozen = gc.get_freeze_count()
    assert main(["info", torrent, "--json"]) == 0
    assert gc.isenabled()
    gc.disable()
    try:
        assert main(["info", torrent, "--json"]) == 0
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert gc.get_freeze_count() == frozen
