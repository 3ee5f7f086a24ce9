"""``pytorrent daemon``: a long-running client that Transmission front-ends can drive.

Runs in the foreground and logs to stderr. SIGTERM and SIGINT (and the RPC
``session-close``) stop it cleanly (``stopped`` announces, resume state and totals
saved, exit 0); SIGHUP re-reads the settings file (JSON with ``session-set`` keys, the
network ones included, default ``<state-dir>/settings.json``).
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torrent.daemon.service import Daemon


#: Seconds after the RPC opens before the objects made by the start are collected as
#: usual (frozen until then: see ``run``).
GC_UNFREEZE_S = 5.0


def _default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "pytorrent")


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def add_parser(subparsers: Any) -> None:
    from cli.cmd_download import parse_listen

    p = subparsers.add_parser(
        "daemon",
        help="run a long-lived client driven over Transmission's RPC",
        description="Run a BitTorrent daemon in the foreground, driven over Transmission's RPC protocol "
        "(transmission-remote and other Transmission front-ends work with it).",
    )
    p.add_argument("--rpc-host", default="127.0.0.1", help="address the RPC server binds (default 127.0.0.1)")
    p.add_argument("--rpc-port", type=int, default=9091, help="RPC port (default 9091; 0 picks one)")
    p.add_argument("--rpc-username", default=None, metavar="U", help="require HTTP basic auth with this user")
    p.add_argument("--rpc-password", default=None, metavar="P", help="... and this password")
    p.add_argument(
        "--rpc-host-whitelist",
        default="",
        metavar="NAMES",
        help="comma-separated host names accepted besides IP addresses and localhost",
    )
    p.add_argument(
        "--bind", default="0.0.0.0", metavar="ADDR", help="address the peer port binds (0.0.0.0: and [::])"
    )
    p.add_argument(
        "--listen",
        type=parse_listen,
        default=None,
        metavar="ADDR:PORT[,ADDR:PORT...]",
        help="peer listening addresses, e.g. 0.0.0.0:6881,[::]:6881 (overrides --bind/--port)",
    )
    p.add_argument("--port", type=int, default=6881, help="peer listening port (default 6881)")
    p.add_argument(
        "--download-dir",
        default=os.path.join(os.path.expanduser("~"), "Downloads"),
        metavar="DIR",
        help="where new torrents' data goes (default ~/Downloads)",
    )
    p.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help="database and settings (default $XDG_STATE_HOME/pytorrent)",
    )
    p.add_argument(
        "--config", default=None, metavar="FILE", help="settings file (default <state-dir>/settings.json)"
    )
    p.add_argument("--watch-dir", default=None, metavar="DIR", help="add .torrent files dropped here")
    p.add_argument(
        "--max-active-downloads", type=_count, default=5, metavar="N", help="downloads at once (default 5)"
    )
    p.add_argument(
        "--max-active-seeds", type=_count, default=None, metavar="N", help="seeds at once (default: no limit)"
    )
    p.add_argument(
        "--on-complete", default=None, metavar="CMD", help="shell command run when a download completes"
    )
    p.add_argument(
        "--max-down", type=_count, default=0, metavar="BPS", help="session download limit, bytes/s (0: none)"
    )
    p.add_argument(
        "--max-up", type=_count, default=0, metavar="BPS", help="session upload limit, bytes/s (0: none)"
    )
    p.add_argument("--stall-minutes", type=float, default=10.0, metavar="MIN", help=argparse.SUPPRESS)
    from cli.cmd_download import add_discovery_arguments, add_disk_arguments

    add_discovery_arguments(p)
    add_disk_arguments(p)


def run(args: argparse.Namespace) -> int:
    import gc
    import logging

    # No cyclic garbage collection until the first answer (see ``_serve``): importing the
    # daemon and loading its records make tens of thousands of objects that all live on,
    # and the collector would walk them over and over as they appear.
    gc.disable()
    try:
        from cli.main import UsageError, run_async

        if (args.rpc_username is None) != (args.rpc_password is None):
            raise UsageError("--rpc-username and --rpc-password go together")
        logging.basicConfig(
            level=logging.DEBUG if args.debug else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        return run_async(_serve(args), no_uvloop=args.no_uvloop)
    finally:
        gc.unfreeze()
        gc.enable()


def _read_settings_file(path: str) -> dict[str, Any]:
    import json
    import logging

    try:
        with open(path, encoding="utf-8") as fh:
            values = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logging.getLogger("pytorrent.daemon").warning("settings file %s unreadable: %s", path, exc)
        return {}
    return values if isinstance(values, dict) else {}


async def _reload(daemon: Daemon, path: str) -> None:
    """Apply the settings file as ``session-set`` would, the network keys included (not
    stored: the file is read again at each start)."""
    import logging

    from torrent.daemon.service import DaemonError

    log = logging.getLogger("pytorrent.daemon")
    try:
        await daemon.update_settings(_read_settings_file(path), persist=False)
    except (DaemonError, ValueError) as exc:
        log.warning("settings file %s: %s; kept the previous settings", path, exc)
        return
    log.info("reloaded settings from %s", path)


async def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import gc
    import logging
    import signal

    from cli.cmd_download import discovery_settings
    from torrent.config import Settings
    from torrent.daemon.front import RpcServer
    from torrent.daemon.rpc import RpcConfig
    from torrent.daemon.service import Daemon, DaemonConfig
    from torrent.daemon.watch import watch_directory

    log = logging.getLogger("pytorrent.daemon")
    state_dir = args.state_dir or _default_state_dir()
    settings_file = args.config or os.path.join(state_dir, "settings.json")
    os.makedirs(args.download_dir, exist_ok=True)
    config = DaemonConfig(
        download_dir=args.download_dir,
        state_dir=state_dir,
        watch_dir=args.watch_dir,
        max_active_downloads=args.max_active_downloads,
        max_active_seeds=args.max_active_seeds,
        stall_s=args.stall_minutes * 60.0,
        on_complete=args.on_complete,
    )
    settings = Settings(
        listen_host=args.bind,
        listen_port=args.port,
        listen_interfaces=args.listen or (),
        max_download_bps=args.max_down,
        max_upload_bps=args.max_up,
        seed_ratio=None,  # a daemon seeds until told otherwise
        **discovery_settings(args, os.path.join(state_dir, "dht.state")),
        direct_writes=not args.no_direct_writes,
    )
    rpc = RpcConfig(
        username=args.rpc_username,
        password=args.rpc_password,
        host_whitelist=tuple(h.strip().lower() for h in args.rpc_host_whitelist.split(",") if h.strip()),
    )
    async with Daemon(config, settings) as daemon:
        await _reload(daemon, settings_file)
        await daemon.wait_ready()  # the first answer lists every stored torrent as it is
        loop = asyncio.get_running_loop()
        try:
            # aiohttp (the web UI, /metrics) loads once the torrents are listed.
            async with RpcServer(daemon, rpc, args.rpc_host, args.rpc_port) as server:
                # What the start made stays out of the collections until the first answers
                # are out; then it is collected as usual.
                gc.freeze()
                gc.enable()
                loop.call_later(GC_UNFREEZE_S, gc.unfreeze)
                host, port = server.address
                log.info(
                    "RPC on http://%s:%d/transmission/rpc; peers on port %d", host, port, daemon.session.port
                )
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, daemon.request_close)
                async with asyncio.TaskGroup() as tg:
                    loop.add_signal_handler(
                        signal.SIGHUP, lambda: tg.create_task(_reload(daemon, settings_file))
                    )
                    watcher = (
                        tg.create_task(watch_directory(daemon, args.watch_dir)) if args.watch_dir else None
                    )
                    await daemon.close_requested.wait()
                    if watcher is not None:
                        watcher.cancel()
                log.info("stopping")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(ValueError, RuntimeError):
                    loop.remove_signal_handler(sig)
    log.info("stopped")
    return 0
