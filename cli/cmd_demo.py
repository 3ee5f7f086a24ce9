"""``pytorrent demo``: a whole swarm on loopback, live: our tracker, one seed, three leechers.

Everything runs in this process, on 127.0.0.1, in a temporary directory that is deleted
afterwards:

1. generate a multi-file payload (nested directories, an empty file, a unicode name)
   and make a torrent of it with ``torrent.create`` (every core hashing);
2. start our tracker (HTTP and UDP, ``tracker.server.TrackerServer``);
3. start one seed and three downloaders, each its own ``Session`` with its own
   listening port and peer id, every uploader rate-limited (``--rate``) so the
   transfer takes long enough to watch and the downloaders must trade with each other;
4. draw one live row per peer until every downloader has verified every piece;
5. compare every downloaded file with the original, print who uploaded how much,
   and exit 0 (1 if anything differs).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torrent.engine.session import Torrent

LEECHERS = 3


def add_parser(subparsers: Any) -> None:
    from cli.cmd_download import parse_rate

    p = subparsers.add_parser(
        "demo",
        help="run a local swarm (tracker, seed, three downloaders) with live progress",
        description="Run a whole swarm on loopback: our tracker, one seed and three downloaders, live.",
    )
    p.add_argument("--size", metavar="MiB", type=int, default=32, help="payload size in MiB (default 32)")
    p.add_argument(
        "--rate", metavar="RATE", type=parse_rate, default=parse_rate("2M"),
        help="upload limit of each peer, e.g. 2M (default 2M; 0 = unlimited)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="one JSON event per line instead of the live view")


def make_payload(base: Path, size: int) -> dict[str, int]:
    """Deterministic random data: the same ``size`` always gives the same info hash."""
    layout = {
        "README.txt": 100,
        "video/clip-1.bin": size * 45 // 100,
        "video/clip-2.bin": size * 35 // 100,
        "music/ünïcödé.flac": size * 15 // 100,
        "docs/deep/notes.txt": 4321,
        "docs/empty.txt": 0,
    }
    layout["extras.bin"] = max(1, size - sum(layout.values()))
    rng = random.Random(size)
    for rel, n in layout.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            left = n
            while left:
                chunk = rng.randbytes(min(left, 1 << 20))
                fh.write(chunk)
                left -= len(chunk)
    return layout


def run(args: argparse.Namespace) -> int:
    from cli.main import UsageError, run_async

    if not 1 <= args.size <= 4096:
        raise UsageError("--size must be between 1 and 4096 MiB")
    return run_async(_demo(args), no_uvloop=args.no_uvloop)


class _Labelled:
    """Gives each row of the view its peer's label instead of the torrent's name."""

    def __init__(self, view: Any) -> None:
        self.view = view

    def show(self, rows: list[tuple[str, Torrent]], *, force: bool = False) -> None:
        import dataclasses

        stats = []
        for label, t in rows:
            st = t.statistics()
            # One row per peer: key it by label (the info hash is the same for all).
            stats.append(dataclasses.replace(st, name=label, info_hash=label.encode().ljust(20, b" ")[:20]))  # type: ignore[arg-type]
        self.view.update(stats, force=force)


async def _demo(args: argparse.Namespace) -> int:
    import tempfile

    from cli.progress import JsonView, PlainView, RichView, human_bytes
    from torrent.config import testing_settings
    from torrent.create import create
    from torrent.engine.session import Session
    from tracker.server import TrackerServer
    from tracker.settings import TrackerSettings

    tty = sys.stderr.isatty() and not args.json
    out = sys.stderr

    def say(text: str) -> None:
        if not args.json:
            print(text, file=out, flush=True)

    with tempfile.TemporaryDirectory(prefix="pytorrent-demo-") as tmp:
        root = Path(tmp)
        source = root / "seed" / "demo-payload"
        size = args.size * 2**20
        layout = make_payload(source, size)
        t0 = time.perf_counter()
        async with TrackerServer(
            TrackerSettings(host="127.0.0.1", port=0, udp_port=0, interval_s=5, min_interval_s=1)
        ) as tracker:
            http_url, udp_url = tracker.urls()[:2]
            meta = await asyncio.to_thread(
                create, source, trackers=[[http_url], [udp_url]], comment="pytorrent demo", no_date=True
            )
            say(
                f"payload: {len(layout)} files, {human_bytes(size)}, {meta.info.num_pieces} pieces of "
                f"{human_bytes(meta.info.piece_length)}, hashed in {time.perf_counter() - t0:.1f} s"
            )
            say(f"tracker: {http_url} and {udp_url}")
            limit = f"{human_bytes(args.rate)}/s each" if args.rate else "unlimited"
            say(f"peers:   1 seed and {LEECHERS} downloaders on 127.0.0.1, uploads {limit}\n")

            # Everyone seeds on (no ratio limit) until the last downloader is done.
            base = testing_settings().replace(max_upload_bps=args.rate, choke_interval_s=2.0, seed_ratio=None)
            sessions = [Session(base) for _ in range(LEECHERS + 1)]
            view = JsonView() if args.json else (RichView() if tty else PlainView(every_s=2.0))
            labelled = _Labelled(view)
            try:
                for s in sessions:
                    await s.__aenter__()
                seed = await sessions[0].add_torrent(meta, root / "seed")  # seeds until we stop it
                await seed.wait_complete()  # checked: it has everything
                leechers = [
                    await s.add_torrent(meta, root / f"downloader-{i + 1}", seed=True)
                    for i, s in enumerate(sessions[1:])
                ]
                rows = [("seed", seed)] + [(f"downloader {i + 1}", t) for i, t in enumerate(leechers)]
                done = asyncio.ensure_future(asyncio.gather(*(t.wait_complete() for t in leechers)))
                started = time.perf_counter()
                while not done.done():
                    labelled.show(rows)
                    await asyncio.wait({done}, timeout=0.25)
                done.result()
                took = time.perf_counter() - started
                labelled.show(rows, force=True)
                uploads = [(label, t.statistics().uploaded_bytes) for label, t in rows]
            finally:
                view.close()
                for s in reversed(sessions):
                    await s.__aexit__(None, None, None)

        # Verify: every downloader's files are byte-identical to the source.
        bad = []
        for i in range(LEECHERS):
            for rel in layout:
                a, b = source / rel, root / f"downloader-{i + 1}" / "demo-payload" / rel
                if not b.exists() or a.read_bytes() != b.read_bytes():
                    bad.append(f"downloader {i + 1}: {rel}")
        total_up = sum(u for _, u in uploads) or 1
        say("")
        say(f"all {LEECHERS} downloaders finished in {took:.1f} s; uploaded:")
        for label, up in uploads:
            say(f"  {label:13} {human_bytes(up):>10}  {up / total_up * 100:5.1f}%")
        traded = 1 - uploads[0][1] / total_up
        say(f"the downloaders got {traded * 100:.0f}% of their data from each other")
        if bad:
            print("pytorrent demo: files differ: " + ", ".join(bad), file=sys.stderr)
            return 1
        say(f"verified: {LEECHERS} x {len(layout)} files byte-identical to the original")
    return 0
