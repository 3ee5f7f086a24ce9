"""``pytorrent demo``: make a torrent from generated data in a temp dir and show it.

An interim demo: it writes a small multi-file payload (nested directories, an empty
file, a unicode name) into a temporary directory, hashes it with ``create`` on every
core, reads the .torrent back and prints what ``pytorrent info`` prints. Everything is
deleted afterwards. The full local-swarm demo replaces it once the client exists.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="make a torrent from generated data and show it",
        description="Create a torrent from generated data in a temp dir, then show its info.",
    )
    p.add_argument("--size", metavar="MiB", type=int, default=64, help="payload size in MiB (default 64)")


def _payload(base: Path, size: int) -> None:
    """Deterministic data: the same ``size`` always gives the same info hash."""
    layout = {
        "README.txt": 100,
        "video/clip-1.bin": size * 45 // 100,
        "video/clip-2.bin": size * 35 // 100,
        "music/ünïcödé.flac": size * 15 // 100,
        "docs/deep/notes.txt": 4321,
        "docs/empty.txt": 0,
    }
    layout["extras.bin"] = max(1, size - sum(layout.values()))
    for rel, n in layout.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        block = hashlib.sha512(rel.encode()).digest() * 1024  # 64 KiB pattern per file
        with open(path, "wb") as fh:
            left = n
            while left:
                chunk = block[: min(left, len(block))]
                fh.write(chunk)
                left -= len(chunk)


def run(args: argparse.Namespace) -> int:
    import tempfile

    from cli.cmd_create import human_size
    from cli.cmd_info import _plain, _print_rich, describe
    from cli.main import UsageError
    from torrent.create import create

    if not 1 <= args.size <= 4096:
        raise UsageError("--size must be between 1 and 4096 MiB")
    with tempfile.TemporaryDirectory(prefix="pytorrent-demo-") as tmp:
        base = Path(tmp) / "demo-payload"
        _payload(base, args.size * 2**20)
        print(f"generated {human_size(args.size * 2**20)} in {base}")
        import torrent.metainfo  # noqa: F401  # loaded before the clock starts: time the hashing only

        t = time.perf_counter()
        meta = create(base, trackers=["http://127.0.0.1:6969/announce"], comment="pytorrent demo", no_date=True)
        elapsed = time.perf_counter() - t
        out = Path(tmp) / "demo-payload.torrent"
        out.write_bytes(meta.to_bytes())
        rate = meta.info.total_length / elapsed / 1e6 if elapsed > 0 else 0.0
        print(f"hashed {meta.info.num_pieces} pieces in {elapsed:.2f} s ({rate:,.0f} MB/s); wrote {out.name}\n")
        facts = describe(str(out))
        if sys.stdout.isatty():
            _print_rich(facts)
        else:
            sys.stdout.write(_plain(facts))
    return 0
