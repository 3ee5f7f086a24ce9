"""``pytorrent``: the command-line front end.

``main(argv) -> int`` parses arguments and hands each subcommand to its own module
(``cli/cmd_<name>.py``), which exposes ``add_parser(subparsers)`` and ``run(args) -> int``.
Command modules import heavy libraries (aiohttp, rich, the client) inside ``run`` so
that start-up stays lean for the commands that do not need them.

Exit codes: 0 success, 1 the job failed, 2 usage or input error, 130 interrupted.
User errors print one line on stderr and no traceback; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import os
import sys

from cli import prewalk

# ``pytorrent create DIR``: the directory is walked in a forked process while the rest
# of the command loads (cli/prewalk.py), so before anything else is imported.
if __name__ == "cli.main" and os.path.basename(sys.argv[0]) in ("pytorrent", "-c", "main.py"):
    prewalk.start(sys.argv)

import gc
import importlib

from torrent.errors import MetainfoError, TorrentError

#: ``typing`` (about 4 ms with its imports) is not imported at run time: a command that
#: needs it imports it itself, and ``pytorrent create`` starts hashing without it.
#: Nor are ``argparse`` and ``torrent.proto.text`` (with ``re``, ``enum``, ``gettext`` and
#: ``locale``: about 9 ms of CPU) until a command needs them: ``create`` with plain
#: arguments parses them itself (``parse_plain`` in its module).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Coroutine, Sequence
    from typing import Any, NoReturn, TypeVar

    T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Subcommands in the order ``--help`` lists them; each lives in ``cli/cmd_<name>.py``.
COMMANDS = ("download", "seed", "create", "info", "tracker", "tracker-admin", "dht", "demo", "daemon")


class UsageError(Exception):
    """A command was given arguments it cannot use; printed as one line, exit 2."""


def _module(command: str) -> str:
    """``tracker-admin`` lives in ``cli/cmd_tracker_admin.py``."""
    return f"cli.cmd_{command.replace('-', '_')}"


def _one_line_errors() -> type[argparse.ArgumentParser]:
    """argparse's parser, but an argument error is one line (``PROG: MESSAGE``) and exit
    2, not the whole usage block; ``--help`` still shows the usage. Subcommand parsers
    inherit it. Made (with argparse imported) on first use."""
    global _parser_type
    if _parser_type is not None:
        return _parser_type
    import argparse

    from torrent.proto.text import printable

    class _OneLineErrors(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            self.exit(EXIT_USAGE, f"{self.prog}: {printable(message)} (see {self.prog} --help)\n")

        def _get_formatter(self) -> argparse.HelpFormatter:
            # argparse makes a formatter for every add_argument() call, and its default one
            # imports shutil (with zlib, bz2, lzma and fnmatch: about 9 ms of every start)
            # just for the terminal's width, which is read here the way shutil reads it.
            if self.formatter_class is argparse.HelpFormatter:
                return argparse.HelpFormatter(prog=self.prog, width=_terminal_columns() - 2)
            return super()._get_formatter()

    _parser_type = _OneLineErrors
    return _parser_type


_parser_type: type[argparse.ArgumentParser] | None = None


def _terminal_columns() -> int:
    """``$COLUMNS``, else the width of the terminal on stdout, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (``only``) one with just that subcommand, which imports no other command module."""
    parser = _one_line_errors()(prog="pytorrent", description="BitTorrent client, tracker and torrent maker.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument(
        "--no-uvloop", action="store_true", help="use asyncio's default event loop instead of uvloop"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        if only is not None and name != only:
            continue
        try:
            module = importlib.import_module(_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != _module(name):
                raise
            continue
        module.add_parser(sub)
    return parser


def raise_open_file_limit() -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; returns the soft limit.

    Every long-running command (trackers, seeds, the daemon) holds one descriptor per
    connection, and the usual soft limit of 1024 is what a connection flood exhausts first;
    the hard limit is what the administrator allows.
    """
    try:
        import resource
    except ImportError:  # not a POSIX system
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # e.g. macOS refuses RLIM_INFINITY
            pass
    return soft


def run_async(coro: Coroutine[Any, Any, T], *, no_uvloop: bool = False) -> T:
    """Run ``coro`` to completion on uvloop when it imports (unless ``no_uvloop``), with
    the open-file limit raised first (:func:`raise_open_file_limit`)."""
    import asyncio  # here, not at the top: commands that need no loop start faster

    raise_open_file_limit()

    loop_factory = None
    if not no_uvloop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_terminate_like_interrupt(coro))


async def _terminate_like_interrupt(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro``; SIGTERM then shuts it down exactly as Ctrl-C does.

    Service managers and ``kill`` send SIGTERM, and a job started in the background by a
    shell ignores SIGINT: either way the user expects the same clean stop (``stopped``
    announce, resume state saved, exit 130), so SIGTERM cancels the main task and surfaces
    as ``KeyboardInterrupt``.
    """
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    terminated = False

    def on_sigterm() -> None:
        nonlocal terminated
        terminated = True
        if task is not None:
            task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        installed = True
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals
        installed = False
    try:
        return await coro
    except asyncio.CancelledError:
        if terminated:
            raise KeyboardInterrupt from None
        raise
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGTERM)


#: True while :func:`entry` holds the cyclic garbage collector off (see :func:`started`).
_collector_held = False


def _hold_collector() -> None:
    global _collector_held
    if gc.isenabled():
        gc.disable()
        _collector_held = True


def started() -> None:
    """The command's start-up is over: the garbage collector runs again, past it.

    Start-up (imports, the parser, the session) makes tens of thousands of objects that
    live as long as the process, and the collector walked them about 60 times before a
    download's first request (about 6 ms of its start); held off, it would walk them all
    at its first pass instead. So :func:`entry` (the process, not :func:`main` called
    from other code) holds it off from the start, and this moves everything made so far
    out of its sight (``gc.freeze``) before turning it back on: start-up's few hundred
    objects of cyclic garbage are never freed, and every later pass is shorter. It runs
    when the command module starts, or, for a module that says ``HOLDS_COLLECTOR =
    True``, when that module calls it (at the latest when the command returns). Without
    a hold, or called again, it does nothing.
    """
    global _collector_held
    if _collector_held:
        _collector_held = False
        gc.freeze()
        gc.enable()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pytorrent`` command; returns the exit status."""
    args_list = sys.argv[1:] if argv is None else list(argv)
    # The first non-option word names the command: build only its parser, so a command
    # does not pay for importing every other command module at start-up.
    words = [i for i, a in enumerate(args_list) if not a.startswith("-")]
    first = args_list[words[0]] if words else None
    top_help = any(a in ("-h", "--help") for a in args_list[: words[0] if words else None])
    args = _parse_plain(first, args_list) if first in COMMANDS and not top_help else None
    if args is None:
        parser = build_parser(first if first in COMMANDS and not top_help else None)
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # argparse already printed the message
            prewalk.keep_only(None)
            return EXIT_OK if exc.code == 0 else EXIT_USAGE
    # A walk started at import time is kept only for the path argparse found.
    prewalk.keep_only(args.path if args.command == "create" and argv is None else None)
    module = importlib.import_module(_module(args.command))
    # Log lines carry names and messages from torrents, trackers and peers. A command
    # module that never logs says so (``LOGS = False``) and is spared importing logging.
    if getattr(module, "LOGS", True):
        from torrent.proto.text import install_printable_log_records

        install_printable_log_records()
    global _exit_at_once
    _exit_at_once = bool(getattr(module, "EXIT_AT_ONCE", False))
    if not getattr(module, "HOLDS_COLLECTOR", False):
        started()
    try:
        return int(module.run(args))
    except KeyboardInterrupt:
        print("pytorrent: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, MetainfoError) as exc:
        if args.debug:
            import traceback

            traceback.print_exc()
        from torrent.proto.text import printable

        print(f"pytorrent {args.command}: {printable(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except TorrentError as exc:
        if args.debug:
            import traceback

            traceback.print_exc()
        from torrent.proto.text import printable

        print(f"pytorrent {args.command}: {printable(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        if args.debug:
            import traceback

            traceback.print_exc()
        from torrent.proto.text import printable

        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"pytorrent {args.command}: {printable(f'{exc.strerror or exc}{where}')}", file=sys.stderr)
        return EXIT_FAILED


def _parse_plain(command: str, args_list: list[str]) -> Any:
    """The command module's own parse of ``args_list`` (its ``parse_plain``), or None when
    it has none or leaves them to argparse."""
    try:
        module = importlib.import_module(_module(command))
    except ModuleNotFoundError as exc:
        if exc.name != _module(command):
            raise
        return None
    parse = getattr(module, "parse_plain", None)
    return None if parse is None else parse(args_list)


#: Set by :func:`main` for a command module that says ``EXIT_AT_ONCE = True``: it leaves
#: nothing for the interpreter's teardown to do (no log handlers, no atexit work, every
#: file closed), so :func:`entry` ends the process without it.
_exit_at_once = False


def entry() -> None:
    """Console-script entry point.

    A command that leaves nothing to tear down (``create``, ``download``) ends with
    ``os._exit`` once stdout and stderr are flushed: the interpreter's teardown (freeing
    every object and module) took about 5 ms of a 40 ms ``create``, longer after 5,000
    files, and 20-35 ms of a ``download``'s 0.2 s of CPU. The garbage collector is held
    off while the command starts (:func:`started`).
    """
    _hold_collector()
    code = main()
    started()
    if _exit_at_once:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:  # a closed pipe: what the teardown would have reported
            code = code or EXIT_FAILED
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    # Run through the imported module, not this ``__main__`` copy, so that command modules
    # that import ``cli.main`` (e.g. for ``UsageError``) share its classes.
    from cli import main as _main

    _main.entry()
