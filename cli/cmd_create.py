"""``pytorrent create PATH``: make a .torrent file from a file or a directory.

Trackers and BEP 12 tiers: ``-t URL`` adds a tracker to the current tier and ``--tier``
starts the next one, so ``-t A -t B --tier -t C`` gives the tiers ``[[A, B], [C]]``.
Without ``--tier`` every tracker is in one tier (clients shuffle a tier and use the
first tracker that answers). The first tracker is also written as ``announce``.

A progress bar with bytes/s is drawn (with rich) only when stdout is a terminal;
otherwise the command prints just its result, one ``key: value`` per line.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

from cli import prewalk
from cli.main import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: This command never logs: ``cli.main`` then leaves ``logging`` unloaded.
LOGS = False
#: Nothing is left to tear down when it returns (the output file is closed, the hashing
#: workers reaped): the console script then ends the process at once (``cli.main.entry``).
EXIT_AT_ONCE = True
#: The last torrent :func:`run` made, kept so that its file list is not freed object by
#: object as ``run`` returns (0.4 ms for 5,000 files) when the exit drops it all at once.
_last: Any = None

_UNITS = {
    "": 1,
    "B": 1,
    "K": 1024,
    "KB": 1024,
    "KIB": 1024,
    "M": 1024**2,
    "MB": 1024**2,
    "MIB": 1024**2,
    "G": 1024**3,
    "GB": 1024**3,
    "GIB": 1024**3,
}


class _TrackerAction(argparse.Action):
    """``-t URL``: append to the current (last) tier."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        tiers = getattr(namespace, "tiers", None) or [[]]
        tiers[-1].append(values)
        namespace.tiers = tiers


class _TierAction(argparse.Action):
    """``--tier``: the following ``-t`` URLs go into a new tier."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        tiers = getattr(namespace, "tiers", None) or [[]]
        if tiers[-1]:
            tiers.append([])
        namespace.tiers = tiers


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "create",
        help="make a .torrent file from a file or directory",
        description="Hash a file or directory on every core and write a .torrent file. "
        "Symlinks are followed; empty files are included; an empty payload is refused.",
    )
    p.add_argument("path", metavar="PATH", help="file or directory to share")
    p.add_argument(
        "-t",
        "--tracker",
        metavar="URL",
        action=_TrackerAction,
        dest="tiers",
        default=None,
        help="tracker announce URL, added to the current tier (repeatable)",
    )
    p.add_argument(
        "--tier",
        nargs=0,
        action=_TierAction,
        dest="tiers",
        help="start a new tier: later -t URLs are backups for the earlier tiers (BEP 12)",
    )
    p.add_argument("-o", "--output", metavar="OUT", help="where to write the torrent (default NAME.torrent)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument(
        "--piece-length",
        "-l",
        metavar="auto|SIZE",
        default="auto",
        help="bytes per piece: a power of two like 256K, 1M, 4M (default auto)",
    )
    p.add_argument("--private", action="store_true", help="set the private flag (BEP 27)")
    p.add_argument("--comment", metavar="TEXT", default="", help="comment stored in the torrent")
    p.add_argument(
        "--source", metavar="TEXT", default="", help="source tag in the info dict (changes the info hash)"
    )
    p.add_argument(
        "--web-seed",
        "-w",
        metavar="URL",
        action="append",
        default=[],
        help="web seed URL (BEP 19, repeatable)",
    )
    p.add_argument(
        "--format",
        choices=("v1", "v2", "hybrid"),
        default="v1",
        dest="torrent_format",
        help="v1 (BEP 3, default), v2 (BEP 52 merkle trees) or hybrid (both, with BEP 47 padding)",
    )
    p.add_argument("--no-date", action="store_true", help="leave out the creation date")
    p.add_argument("--name", metavar="NAME", help="torrent name (default: the base name of PATH)")
    p.add_argument(
        "--threads",
        metavar="N",
        type=int,
        default=None,
        help="hashing workers, processes from 32 MiB up (default: one per core)",
    )


def parse_size(text: str) -> int | None:
    """``auto`` gives None; ``256K``, ``1M``, ``1MiB``, ``65536`` give bytes.

    Raises:
        UsageError: not a size.
    """
    t = text.strip().upper()
    if t == "AUTO":
        return None
    digits = t.rstrip("KMGIB")
    unit = t[len(digits) :]
    if not digits.isdigit() or unit not in _UNITS:
        raise UsageError(f"--piece-length: {text!r} is not 'auto' or a size like 256K or 1M")
    return int(digits) * _UNITS[unit]


def human_size(n: int) -> str:
    """``1536`` -> ``1.5 KiB``; exact powers of two print without decimals."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            if unit == "B":
                return f"{n} B"
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def run(args: argparse.Namespace) -> int:
    from torrent.create import make

    piece_length = parse_size(args.piece_length)
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")
    tiers = [t for t in (args.tiers or []) if t]

    name = args.name
    if name is None:
        name = os.path.basename(os.path.abspath(args.path))
    out = args.output or f"{name}.torrent"
    if os.path.exists(out) and not args.force:
        raise UsageError(f"{out} exists (use -f to overwrite or -o to choose another file)")

    kwargs: dict[str, Any] = dict(
        piece_length=piece_length,
        trackers=tiers,
        private=args.private,
        comment=args.comment,
        source=args.source,
        web_seeds=args.web_seed,
        name=args.name,
        no_date=args.no_date,
        threads=args.threads,
        torrent_format=args.torrent_format,
    )
    # The scan and the file list make thousands of small objects and no cycles: the
    # collector's passes over them cost this short-lived command up to 40 ms a run. It is
    # enabled again only once the result is printed: its first pass then would go over
    # every object made meanwhile (0.7 ms for 5,000 files) just before the process ends.
    gc.disable()
    try:
        global _last
        made = _last = _make(make, args.path, kwargs)
        _write(out, made.data, args.force)
        how = "auto" if piece_length is None else "chosen"
        hashes = f"info hash:    {made.info_hash_v1.hex()}\n" if made.info_hash_v1 is not None else ""
        if made.info_hash_v2 is not None:
            hashes += f"info hash v2: {made.info_hash_v2.hex()}\n"
        sys.stdout.write(
            f"name:         {made.name}\n"
            f"{hashes}"
            f"size:         {human_size(made.size)} in {made.files} file"
            f"{'s' if made.files != 1 else ''}\n"
            f"piece length: {human_size(made.piece_length)} ({how}; {made.pieces} pieces)\n"
            f"written to:   {out}\n"
        )
    finally:
        gc.enable()
    return 0


def _make(make: Any, path: str, kwargs: dict[str, Any]) -> Any:
    """``make(path, **kwargs)``, with the walk ``cli.main`` started for ``path`` if any,
    and with a progress bar on a terminal."""
    from torrent.create import walks_ahead

    walker = prewalk.take(path)
    if walker is not None:
        walks_ahead[path] = walker.chunks
    try:
        return _create_with_bar(make, path, kwargs) if sys.stdout.isatty() else make(path, **kwargs)
    finally:
        if walker is not None:
            walks_ahead.pop(path, None)
            walker.discard()


def _write(out: str, data: bytes, force: bool) -> None:
    """Write ``data`` to ``out`` through a temporary file (so a failed run leaves no
    half-written torrent).

    Raises:
        UsageError: ``out`` appeared meanwhile and ``force`` is false.
    """
    tmp = f"{out}.part{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        if not force and os.path.exists(out):
            raise UsageError(f"{out} appeared while hashing; not overwritten")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _create_with_bar(make: Any, path: str, kwargs: dict[str, Any]) -> Any:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("hashing"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
        # Redrawn from the progress callback (every 0.1 s) rather than by rich's refresh
        # thread: with a second thread running, the hashing could not fork its workers.
        auto_refresh=False,
    ) as bar:
        task = bar.add_task("hashing", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)
            bar.refresh()

        return make(path, progress=progress, **kwargs)
