"""``pytorrent demo`` end to end (small payload): tracker, seed, three downloaders, exit 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_a_whole_swarm_and_verifies_it() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--size", "3", "--rate", "4M"],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "verified: 3 x 7 files byte-identical" in proc.stderr
    assert "from each other" in proc.stderr


def test_demo_json_is_one_object_per_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--size", "2", "--rate", "0", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    final = [e for e in events if e["event"] == "progress"][-4:]
    assert {e["name"] for e in final} == {"seed", "downloader 1", "downloader 2", "downloader 3"}
    assert all(e["progress"] == 1.0 for e in final)
