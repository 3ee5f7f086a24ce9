"""Our side of the interop tests: ``pytorrent create``, our tracker and our client.

Each piece is used the way a user would use it where that is cheap (``pytorrent create``
runs as a subprocess, exactly as the CLI ships), and in process where the test needs to
look inside (the tracker's and the session's statistics).

A test that needs a part of pytorrent that is not on main yet skips with the reason
"not landed: ..."; once the module exists, the skip is gone by itself.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.interop.peers import TrackerProcess

ROOT = Path(__file__).resolve().parents[2]


def require_module(module: str, what: str) -> None:
    """Skip the calling test when ``module`` is not part of the tree yet."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"not landed: {what} ({module})")


def pytorrent_create(
    path: Path, out: Path, *, trackers: tuple[str, ...] = (), piece_length: str = "32K", timeout_s: float = 60
) -> str:
    """Run ``pytorrent create PATH -o OUT`` and return the info hash it printed (hex).

    Raises:
        AssertionError: the command failed or printed no info hash.
    """
    require_module("cli.cmd_create", "pytorrent create")
    argv = [sys.executable, "-m", "cli.main", "create", str(path), "-o", str(out), "--piece-length", piece_length]
    for url in trackers:
        argv += ["-t", url]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, f"pytorrent create failed ({done.returncode}): {done.stderr}"
    m = re.search(r"^info hash:\s+([0-9a-f]{40})$", done.stdout, re.M)
    assert m, f"pytorrent create printed no info hash:\n{done.stdout}"
    return m.group(1)


class OurTracker(TrackerProcess):
    """``pytorrent tracker`` (HTTP and UDP, memory store) as a subprocess, stopped by PID.

    A short ``interval`` keeps the tests quick: peers learn of each other within seconds.
    """

    title = "pytorrent tracker"

    def __init__(self, workdir: Path, *, interval_s: int = 5) -> None:
        super().__init__(workdir)
        self.interval_s = interval_s

    def argv(self, info_hashes: list[str]) -> tuple[list[str], Path]:
        require_module("cli.cmd_tracker", "pytorrent tracker")
        return (
            [
                sys.executable,
                "-m",
                "cli.main",
                "tracker",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.http_port),
                "--udp-port",
                str(self.udp_port),
                "--interval",
                str(self.interval_s),
                "--min-interval",
                "1",
            ],
            ROOT,
        )
