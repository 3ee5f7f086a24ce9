"""``pytorrent create PATH``: make a .torrent file from a file or a directory.

Trackers and BEP 12 tiers: ``-t URL`` adds a tracker to the current tier and ``--tier``
starts the next one, so ``-t A -t B --tier -t C`` gives the tiers ``[[A, B], [C]]``.
Without ``--tier`` every tracker is in one tier (clients shuffle a tier and use the
first tracker that answers). The first tracker is also written as ``announce``.

A progress bar with bytes/s is drawn (with rich) only when stdout is a terminal;
otherwise the command prints just its result, one ``key: value`` per line.
"""

from __future__ import annotations

import gc
import os
import sys

from cli import prewalk
from cli.main import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
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


def _actions() -> tuple[type[argparse.Action], type[argparse.Action]]:
    """The actions of ``-t`` and ``--tier`` (argparse is imported only when it parses)."""
    import argparse

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

    return _TrackerAction, _TierAction


def add_parser(subparsers: Any) -> None:
    tracker_action, tier_action = _actions()
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
        action=tracker_action,
        dest="tiers",
        default=None,
        help="tracker announce URL, added to the current tier (repeatable)",
    )
    p.add_argument(
        "--tier",
        nargs=0,
        action=tier_action,
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


#: Where ``parse_plain`` puts each option's value, as ``add_parser`` declares them.
_VALUE_DESTS = {
    "-t": "tiers",
    "--tracker": "tiers",
    "-o": "output",
    "--output": "output",
    "-l": "piece_length",
    "--piece-length": "piece_length",
    "--comment": "comment",
    "--source": "source",
    "-w": "web_seed",
    "--web-seed": "web_seed",
    "--format": "torrent_format",
    "--name": "name",
    "--threads": "threads",
}
_FLAG_DESTS = {
    "--tier": "tiers",
    "-f": "force",
    "--force": "force",
    "--private": "private",
    "--no-date": "no_date",
}
_FORMATS = ("v1", "v2", "hybrid")


class PlainArgs:
    """The arguments :func:`parse_plain` read: the attributes argparse's namespace has."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.__dict__.update(fields)

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any: ...  # as argparse.Namespace's


def parse_plain(args: Sequence[str]) -> PlainArgs | None:
    """``[--debug] [--no-uvloop] create ...`` read as argparse reads it, when it is plain:
    every option spelled out in full and its value in the next argument, no value that
    starts with ``-``, one PATH, ``--threads`` in ASCII digits and ``--format`` one of
    its choices. Anything else (an abbreviation, ``--opt=value``, ``--help``, an error)
    gives None, and argparse parses it and says what is wrong.

    Importing argparse (with ``re``, ``enum``, ``gettext`` and ``locale``) and building the
    parser took about 9 ms of the command's CPU, before its hashing could start.
    """
    fields: dict[str, Any] = {"debug": False, "no_uvloop": False}
    i = 0
    while i < len(args) and args[i] in prewalk.TOP_FLAGS:
        fields[args[i][2:].replace("-", "_")] = True
        i += 1
    if i >= len(args) or args[i] != "create":
        return None
    fields.update(
        command="create",
        path=None,
        tiers=None,
        output=None,
        force=False,
        piece_length="auto",
        private=False,
        comment="",
        source="",
        web_seed=[],
        torrent_format="v1",
        no_date=False,
        name=None,
        threads=None,
    )
    i += 1
    while i < len(args):
        arg = args[i]
        dest = _VALUE_DESTS.get(arg)
        if dest is not None:
            if i + 1 >= len(args) or args[i + 1].startswith("-"):
                return None
            value: Any = args[i + 1]
            if dest == "tiers":  # as _TrackerAction does
                value = fields["tiers"] or [[]]
                value[-1].append(args[i + 1])
            elif dest == "web_seed":
                value = [*fields["web_seed"], value]
            elif dest == "threads":
                if not (value.isascii() and value.isdigit()):
                    return None
                value = int(value)
            elif dest == "torrent_format" and value not in _FORMATS:
                return None
            fields[dest] = value
            i += 2
            continue
        dest = _FLAG_DESTS.get(arg)
        if dest == "tiers":  # as _TierAction does
            tiers = fields["tiers"] or [[]]
            if tiers[-1]:
                tiers.append([])
            fields["tiers"] = tiers
        elif dest is not None:
            fields[dest] = True
        elif arg.startswith("-") or fields["path"] is not None:
            return None
        else:
            fields["path"] = arg
        i += 1
    return None if fields["path"] is None else PlainArgs(fields)


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


def run(args: argparse.Namespace | PlainArgs) -> int:
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
