"""Processes a test starts: a script in a fresh interpreter, and looking at them
through ``/proc`` (Linux)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def last_line_of(script: str) -> str:
    """Run ``script`` in a fresh interpreter from the repository (so what it imports is
    what a command's start imports): its last line of output. It must exit 0."""
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (none once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(x) for x in text.split()]


def gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie awaiting its new parent's reaping counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
