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
