"""``pytorrent tracker``: run the HTTP + UDP tracker.

SIGINT and SIGTERM stop it cleanly (exit 0); SIGHUP re-reads ``--allow``. With
``--workers N`` the command starts N tracker processes that share the ports
(SO_REUSEPORT) and the Redis store, forwards those signals to them and waits.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from cli.main import UsageError, run_async

log = logging.getLogger("pytorrent.tracker")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "tracker",
        help="run a BitTorrent tracker (HTTP and UDP)",
        description="Run a BitTorrent tracker: HTTP announce/scrape (BEP 3, 7, 23, 24, 48), "
        "UDP (BEP 15), a status page at / and Prometheus metrics at /metrics.",
    )
    p.add_argument(
        "--host",
        default="0.0.0.0",
        metavar="ADDR[,ADDR...]",
        help="address(es) to bind, comma-separated (default 0.0.0.0)",
    )
    p.add_argument(
        "--port", type=int, default=6969, metavar="PORT", help="HTTP port (default 6969; 0 picks one)"
    )
    udp = p.add_mutually_exclusive_group()
    udp.add_argument("--udp-port", type=int, metavar="PORT", help="UDP port (default: the HTTP port number)")
    udp.add_argument("--no-udp", action="store_true", help="do not serve UDP")
    p.add_argument(
        "--interval", type=int, default=1800, metavar="SECONDS", help="announce interval (default 1800)"
    )
    p.add_argument(
        "--min-interval", type=int, default=900, metavar="SECONDS", help="min interval (default 900)"
    )
    p.add_argument(
        "--peer-ttl", type=int, metavar="SECONDS", help="forget peers silent this long (default 2 x interval)"
    )
    p.add_argument(
        "--numwant-default",
        type=int,
        default=50,
        metavar="N",
        help="peers per answer when not asked (default 50)",
    )
    p.add_argument(
        "--numwant-max", type=int, default=200, metavar="N", help="most peers per answer (default 200)"
    )
    p.add_argument(
        "--allow",
        type=Path,
        metavar="FILE",
        help="track only these info hashes (hex, one a line); SIGHUP reloads",
    )
    p.add_argument(
        "--store",
        default="memory",
        metavar="URL",
        help="'memory' (default), redis://host:port/db or redis-cluster://host:port[,host:port...]",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes sharing the ports (needs --store redis://)",
    )
    p.add_argument(
        "--full-scrape", action="store_true", help="answer /scrape without info_hash with every swarm"
    )
    p.add_argument(
        "--accept-ip-param",
        action="store_true",
        help="list peers at the ip/ipv6 they claim, not their source address",
    )
    p.add_argument(
        "--log-every", type=int, default=10_000, metavar="N", help="one access-log line per N announces"
    )
    p.add_argument(
        "--udp-secret", metavar="HEX", help="key for UDP connection ids (same on every host sharing a Redis)"
    )
    lim = p.add_argument_group("limits against abuse")
    lim.add_argument(
        "--max-connections",
        type=int,
        default=8192,
        metavar="N",
        help="HTTP connections at once, lowered to fit the open-file limit (default 8192)",
    )
    lim.add_argument(
        "--header-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="time a connection has to send its request (default 5)",
    )
    lim.add_argument(
        "--body-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="time spent reading a request body before closing (default 5)",
    )
    lim.add_argument(
        "--max-swarms",
        type=int,
        default=1_000_000,
        metavar="N",
        help="swarms tracked at once; announces starting more are refused (default 1000000)",
    )
    priv = p.add_argument_group("private tracker (needs --private-users)")
    priv.add_argument(
        "--private-users",
        metavar="sqlite:///PATH",
        help="passkeys, accounting and access rules from this database (see tracker-admin)",
    )
    priv.add_argument(
        "--ratio-floor",
        type=float,
        default=0.0,
        metavar="RATIO",
        help="no new downloads below this ratio (0: off)",
    )
    priv.add_argument(
        "--max-rate",
        type=int,
        default=128 << 20,
        metavar="BPS",
        help="flag (do not count) reported rates above this",
    )
    priv.add_argument(
        "--leech-ips", type=int, default=3, metavar="N", help="addresses a user may leech from at once"
    )
    priv.add_argument(
        "--allow-client", action="append", default=[], metavar="PREFIX", help="only these peer-id prefixes"
    )
    priv.add_argument(
        "--deny-client", action="append", default=[], metavar="PREFIX", help="refuse this peer-id prefix"
    )


def settings_from_args(args: argparse.Namespace) -> Any:
    from tracker.settings import TrackerSettings

    secret = None
    if args.udp_secret:
        try:
            secret = bytes.fromhex(args.udp_secret)
        except ValueError:
            raise UsageError("--udp-secret must be hex") from None
    settings = TrackerSettings(
        host=args.host,
        port=args.port,
        udp_port=-1 if args.no_udp else args.udp_port,
        interval_s=args.interval,
        min_interval_s=args.min_interval,
        peer_ttl_s=args.peer_ttl,
        numwant_default=args.numwant_default,
        numwant_max=args.numwant_max,
        allow_file=args.allow,
        store=args.store,
        workers=args.workers,
        reuse_port=args.workers > 1,
        full_scrape=args.full_scrape,
        accept_ip_param=args.accept_ip_param,
        log_every=args.log_every,
        udp_secret=secret,
        private_users=args.private_users,
        ratio_floor=args.ratio_floor,
        max_rate_bps=args.max_rate,
        leech_ip_limit=args.leech_ips,
        client_allow=tuple(args.allow_client),
        client_deny=tuple(args.deny_client),
        max_connections=args.max_connections,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        max_swarms=args.max_swarms,
    )
    try:
        settings.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if settings.allow_file is not None and not settings.allow_file.is_file():
        raise UsageError(f"--allow {settings.allow_file}: no such file")
    return settings


async def _run_one(settings: Any, worker: int | None) -> int:
    import asyncio
    import signal

    from tracker.server import serve

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    stopping = False

    def stop() -> None:
        nonlocal stopping
        stopping = True
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        await serve(settings, worker=worker)
    except asyncio.CancelledError:
        if stopping:
            return 0
        raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


def _run_workers(settings: Any, no_uvloop: bool) -> int:
    import dataclasses
    import multiprocessing
    import signal

    if settings.udp_secret is None:
        settings = dataclasses.replace(settings, udp_secret=os.urandom(32))
    for line in settings.describe():
        log.debug("setting %s", line)
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_worker_main, args=(settings, i, no_uvloop), name=f"tracker-{i}", daemon=False)
        for i in range(settings.workers)
    ]

    def forward(signum: int, _frame: Any) -> None:
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    for proc in procs:
        proc.start()
    log.info("started %d workers: %s", len(procs), " ".join(str(p.pid) for p in procs))
    for proc in procs:
        proc.join()
    codes = [proc.exitcode or 0 for proc in procs]
    return 0 if all(c == 0 for c in codes) else 1


def _worker_main(settings: Any, index: int, no_uvloop: bool) -> None:
    import signal

    def exit_now(_signum: int, _frame: Any) -> None:
        raise SystemExit(0)  # stopped before the event loop took the signals over

    signal.signal(signal.SIGINT, exit_now)
    signal.signal(signal.SIGTERM, exit_now)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    sys.exit(run_async(_run_one(settings, index), no_uvloop=no_uvloop))


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.DEBUG if args.debug else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    if settings.workers > 1:
        return _run_workers(settings, args.no_uvloop)
    return int(run_async(_run_one(settings, None), no_uvloop=args.no_uvloop))
