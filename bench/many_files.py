"""``pytorrent info`` on a torrent with many files: wall time and peak memory.

Builds a multi-file torrent of N one-byte files (in directories of 1,000) in a temp
dir, then runs ``python -m cli.main info`` on it as a whole process and reads its peak
RSS from ``resource.getrusage(RUSAGE_CHILDREN)`` of a small wrapper process. With N above ``MAX_FILES`` it shows
how fast the refusal is.

Usage: ``python bench/many_files.py [--files 200000] [--files 1000000]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def many_files_torrent(n: int) -> bytes:
    """A v1 torrent of ``n`` one-byte files, bencoded directly (a list of a million dicts
    would take longer to build than the refusal takes). The piece hashes are zeros:
    ``info`` does not check them."""
    entries = b"".join(b"d6:lengthi1e4:pathl5:d%04d12:f%07d.binee" % (i // 1000, i) for i in range(n))
    pieces = bytes(20 * -(-n // (1 << 20)))
    info = b"d5:filesl%be4:name4:many12:piece lengthi1048576e6:pieces%d:%be" % (entries, len(pieces), pieces)
    return b"d4:info" + info + b"e"


def measure(n: int) -> tuple[float, int, int]:
    """(seconds, peak RSS in bytes, exit status) of ``pytorrent info`` on ``n`` files.

    The torrent is written by a child process and measured in another, so neither peak
    includes this process's memory."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "many.torrent"
        subprocess.run([sys.executable, __file__, "--write", str(n), str(path)], check=True)
        script = (
            "import resource, subprocess, sys, time; t0 = time.perf_counter();"
            "rc = subprocess.run([sys.executable, '-m', 'cli.main', 'info', sys.argv[1]],"
            " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode;"
            "print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)"
        )
        out = subprocess.run(
            [sys.executable, "-c", script, str(path)], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    return float(out[0]), int(out[1]) * 1024, int(out[2])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, action="append", help="file count (repeatable)")
    ap.add_argument("--write", nargs=2, metavar=("N", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write:
        Path(args.write[1]).write_bytes(many_files_torrent(int(args.write[0])))
        return
    for n in args.files or [200_000, 1_000_000]:
        elapsed, peak, rc = measure(n)
        print(f"{n:>9,} files: {elapsed:6.2f} s, peak RSS {peak / 2**20:6.0f} MiB, exit {rc}")


if __name__ == "__main__":
    main()
