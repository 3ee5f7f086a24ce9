"""``pytorrent dht``: a standalone DHT node (BEP 5).

A bootstrap node for a private network (``--bootstrap ''`` joins nobody and waits to be
joined), or a way to watch the DHT work. Every ``--interval`` seconds it prints one line:
nodes in the routing table, queries in and out per second, peers stored for others.
SIGINT and SIGTERM stop it with exit status 0 (the routing table is saved first when
``--state`` names a file).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.cmd_download import parse_duration, parse_nodes, parse_port
from torrent.config import DEFAULT_DHT_ROUTERS

if TYPE_CHECKING:
    from torrent.engine.dht_node import DhtNode
    from torrent.proto.dht.node import DhtStatistics


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "dht",
        help="run a standalone DHT node",
        description="Run a DHT node (BEP 5) and print what it does every few seconds; Ctrl-C stops it.",
    )
    p.add_argument("--port", type=parse_port, default=6881, help="UDP port (default 6881; 0 picks one)")
    p.add_argument("--bind", default="0.0.0.0", metavar="ADDR", help="address to bind (default 0.0.0.0)")
    p.add_argument(
        "--bootstrap",
        type=parse_nodes,
        default=DEFAULT_DHT_ROUTERS,
        metavar="HOST:PORT[,HOST:PORT...]",
        help="nodes to join through (default: the public routers; '' joins nobody)",
    )
    p.add_argument(
        "--state", metavar="FILE", help="load the routing table from FILE and save it there on exit"
    )
    p.add_argument(
        "--interval",
        type=parse_duration,
        default=5.0,
        metavar="DURATION",
        help="seconds between status lines (default 5)",
    )


def run(args: argparse.Namespace) -> int:
    from cli.main import run_async

    return run_async(_serve(args), no_uvloop=args.no_uvloop)


def status_line(now: DhtStatistics, before: DhtStatistics | None, elapsed_s: float) -> str:
    """One line of what the node did since ``before`` (rates per second)."""
    span = max(elapsed_s, 1e-9)
    q_in = (now.queries_in - (before.queries_in if before else 0)) / span
    q_out = (now.queries_out - (before.queries_out if before else 0)) / span
    return (
        f"nodes {now.nodes + now.nodes6} (good {now.good_nodes}) "
        f"queries in {q_in:.1f}/s out {q_out:.1f}/s "
        f"stored peers {now.stored_peers} for {now.stored_info_hashes} torrents"
    )


async def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from torrent.engine.dht_node import DhtNode

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # no signals here (not the main thread)
            pass
    try:
        state = Path(args.state) if args.state else None
        async with DhtNode(args.bind, args.port, bootstrap=args.bootstrap, state_file=state) as node:
            print(f"DHT node {node.node_id.hex()} on UDP {args.bind}:{node.port}", flush=True)
            await _report(node, stop, args.interval)
        print("DHT node stopped", flush=True)
        return 0
    except OSError as exc:
        print(
            f"pytorrent dht: cannot bind UDP {args.bind}:{args.port}: {exc.strerror or exc}", file=sys.stderr
        )
        return 1
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _report(node: DhtNode, stop: Any, interval_s: float) -> None:
    import asyncio
    import contextlib

    loop = asyncio.get_running_loop()
    before, at = None, loop.time()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval_s):
                await stop.wait()
        now = node.statistics()
        print(status_line(now, before, loop.time() - at), flush=True)
        before, at = now, loop.time()
