"""Start-up time of the commands a user types most: wall time from exec to exit.

Each command runs RUNS times as a whole process (``python -m cli.main ...`` with this
checkout first on ``PYTHONPATH``); the table shows the median and best wall time in
milliseconds. Bytecode is compiled once before timing and ``PYTHONDONTWRITEBYTECODE`` is
cleared for the children, as it is for a user whose ``pip install`` compiled the package.
``python -c pass`` is the interpreter's own floor on this machine; ``transmission-show``
(when installed) is a native program doing what ``info`` does, for scale.

The commands: ``download --help`` (argument parsing for the largest command, nothing
imported that a transfer needs), ``info X.torrent`` (the rich view) and
``info X.torrent --json``. Target: each at most 80 ms.

Usage: ``python bench/startup.py [--runs 15] [--torrent fixtures/multi.libtorrent.torrent]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.transfer import compile_bytecode  # noqa: E402

TARGET_MS = 80.0


def _time_once(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - started) * 1000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, metavar="N")
    parser.add_argument("--torrent", type=Path, default=ROOT / "fixtures" / "multi.libtorrent.torrent")
    args = parser.parse_args()

    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = str(ROOT)
    compile_bytecode()

    python = sys.executable
    torrent = str(args.torrent)
    commands: list[tuple[str, list[str], bool]] = [
        ("python -c pass (floor)", [python, "-c", "pass"], False),
        ("pytorrent download --help", [python, "-m", "cli.main", "download", "--help"], True),
        ("pytorrent info X.torrent", [python, "-m", "cli.main", "info", torrent], True),
        (
            "pytorrent info X.torrent --json",
            [python, "-m", "cli.main", "info", torrent, "--json"],
            True,
        ),
    ]
    show = shutil.which("transmission-show")
    if show is not None:
        commands.append(("transmission-show X.torrent", [show, torrent], False))

    samples: dict[str, list[float]] = {label: [] for label, _, _ in commands}
    for argv in (argv for _, argv, _ in commands):  # warm the page cache
        _time_once(argv, env)
    for _ in range(args.runs):  # interleaved, so load from elsewhere hits all alike
        for label, argv, _ in commands:
            samples[label].append(_time_once(argv, env))

    print(f"{'command':36} {'median ms':>10} {'best ms':>8}  target")
    missed = False
    for label, _, judged in commands:
        median = statistics.median(samples[label])
        verdict = ""
        if judged:
            met = median <= TARGET_MS
            missed = missed or not met
            verdict = f"{'met' if met else 'MISSED'} (<= {TARGET_MS:.0f} ms)"
        print(f"{label:36} {median:10.1f} {min(samples[label]):8.1f}  {verdict}")
    print(f"runs: {args.runs}, python {sys.version.split()[0]}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
