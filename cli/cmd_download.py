"""``pytorrent download``: fetch one or more torrents, verify them, then seed.

Default after completion: keep seeding until the upload ratio reaches ``--seed-ratio``
(1.0) or ``--seed-time`` passes, or Ctrl-C (as aria2 does). ``--no-seed`` exits 0 as
soon as every selected file is complete and verified.

Exit codes: 0 complete, 1 failed (no peers within the time limit, disk error, tracker
failure), 2 usage error, 130 interrupted (resume state saved).
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torrent.config import DEFAULT_DHT_ROUTERS
from torrent.proto.text import printable

if TYPE_CHECKING:
    from torrent.config import Settings
    from torrent.engine.session import Session, Torrent
    from torrent.proto.magnet import Magnet
    from torrent.proto.metainfo import Metainfo

#: Nothing is left to tear down when it returns: the session has closed every peer and
#: file, awaited every disk write and the final flush, and saved the resume state (all
#: through unbuffered descriptors). The console script then ends the process at once
#: (``cli.main.entry``) instead of freeing every object and module first: about 30 ms
#: of the 0.2 s of CPU a download of a small torrent costs.
EXIT_AT_ONCE = True
#: The garbage collector stays off until the torrents are added (``cli.main.started``):
#: the session's and the swarm's imports are the larger part of a download's start-up.
HOLDS_COLLECTOR = True

_RATE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
}
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(text: str) -> int:
    """``"500K"``, ``"2M"``, ``"1.5MiB"``, ``"0"`` → bytes per second (``/s`` optional)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)(?:/s)?\s*", text)
    if not m or m.group(2).lower() not in _RATE_UNITS:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (examples: 500K, 2M, 1.5MiB)")
    return int(float(m.group(1)) * _RATE_UNITS[m.group(2).lower()])


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"30m"``, ``"1h30m"``, ``"2d"`` → seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", text):
        return float(text)
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)([smhd])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (examples: 90s, 30m, 1h30m)")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def parse_ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a ratio: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("the seed ratio must not be negative")
    return value


def parse_port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is out of range (0-65535)")
    return value


def select_files(paths: Sequence[str], selection: str) -> list[int]:
    """File priorities (1 wanted, 0 skipped) for ``--files``.

    ``selection`` is a comma-separated list of file indices (``0``), ranges (``2-5``)
    or glob patterns matched against each file's path inside the torrent (``*.txt``,
    ``docs/*``). Indices count files as ``pytorrent info`` lists them.

    Raises:
        ValueError: an index is out of range or nothing matches.
    """
    n = len(paths)
    chosen: set[int] = set()
    for raw in selection.split(","):
        item = raw.strip()
        if not item:
            continue
        if re.fullmatch(r"[0-9]+", item):
            i = int(item)
            if i >= n:
                raise ValueError(f"--files: index {i} out of range (the torrent has {n} files)")
            chosen.add(i)
        elif m := re.fullmatch(r"([0-9]+)-([0-9]+)", item):
            a, b = int(m.group(1)), int(m.group(2))
            if a > b or b >= n:
                raise ValueError(f"--files: range {item} out of range (the torrent has {n} files)")
            chosen.update(range(a, b + 1))
        else:
            hits = {
                i
                for i, p in enumerate(paths)
                if fnmatch.fnmatch(p, item) or fnmatch.fnmatch(os.path.basename(p), item)
            }
            if not hits:
                raise ValueError(f"--files: no file matches {item!r}")
            chosen |= hits
    if not chosen:
        raise ValueError("--files selects no file")
    return [1 if i in chosen else 0 for i in range(n)]


def parse_nodes(text: str) -> tuple[tuple[str, int], ...]:
    """``"a:6881,[::1]:6881"`` → ``(("a", 6881), ("::1", 6881))``; an empty text is no node."""
    out = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise argparse.ArgumentTypeError(f"not a node address: {item!r} (expected HOST:PORT)")
        out.append((host.strip("[]"), int(port)))
    return tuple(out)


def parse_listen(text: str) -> tuple[tuple[str, int], ...]:
    """``"0.0.0.0:6881,[::]:6881"`` → ``(("0.0.0.0", 6881), ("::", 6881))``; port 0 is allowed
    (the first entry's 0 picks a free port, a later one takes the first one's)."""
    out = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise argparse.ArgumentTypeError(f"not a listen address: {item!r} (expected ADDR:PORT)")
        if ":" in host and not (host.startswith("[") and host.endswith("]")):
            raise argparse.ArgumentTypeError(f"not a listen address: {item!r} (write IPv6 as [ADDR]:PORT)")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise argparse.ArgumentTypeError("--listen names no address")
    return tuple(out)


def add_discovery_arguments(p: argparse.ArgumentParser) -> None:
    """``--encryption``, ``--no-utp``, ``--no-dht``, ``--dht-bootstrap``, ``--no-pex``,
    ``--no-lsd``, ``--no-port-mapping`` (download, seed and the daemon)."""
    p.add_argument(
        "--encryption",
        choices=("require", "prefer", "off"),
        default="prefer",
        help="MSE/PE: require it, prefer it and fall back to plaintext (default), or off",
    )
    p.add_argument(
        "--no-utp",
        action="store_true",
        help="TCP only: neither accept nor dial uTP connections (BEP 29; on by default, dialled first)",
    )
    p.add_argument(
        "--no-dht", action="store_true", help="do not use the DHT to find peers (it is on by default)"
    )
    p.add_argument(
        "--dht-bootstrap",
        type=parse_nodes,
        default=None,
        metavar="HOST:PORT[,HOST:PORT...]",
        help="join the DHT through these nodes (default: the public routers, "
        + ", ".join(f"{h}:{port}" for h, port in DEFAULT_DHT_ROUTERS)
        + ")",
    )
    p.add_argument(
        "--no-pex", action="store_true", help="do not exchange peer lists with peers (ut_pex, BEP 11)"
    )
    p.add_argument(
        "--no-lsd",
        action="store_true",
        help="do not announce or look for peers on the local network (BEP 14 multicast)",
    )
    p.add_argument(
        "--no-port-mapping",
        action="store_true",
        help="do not ask the router to forward the listen port (NAT-PMP, PCP, UPnP IGD)",
    )


def discovery_settings(args: argparse.Namespace, dht_state_file: str | None) -> dict[str, Any]:
    """The Settings fields of :func:`add_discovery_arguments`' flags."""
    from torrent.config import Encryption

    out: dict[str, Any] = {
        "dht_enabled": not args.no_dht,
        "pex_enabled": not args.no_pex,
        "lsd_enabled": not args.no_lsd,
        "port_mapping": not args.no_port_mapping,
        "utp_enabled": not args.no_utp,
        "encryption": Encryption(args.encryption),
    }
    if args.dht_bootstrap is not None:
        out["dht_bootstrap"] = args.dht_bootstrap
    if dht_state_file is not None and not args.no_dht:
        out["dht_state_file"] = dht_state_file
    return out


def add_disk_arguments(p: argparse.ArgumentParser) -> None:
    """``--no-direct-writes`` (download, seed and the daemon)."""
    p.add_argument(
        "--no-direct-writes",
        action="store_true",
        help="write pieces through the page cache (default: past it, which costs less CPU; "
        "use this on network file systems)",
    )


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=parse_port, default=6881, help="listening port (default 6881; 0 picks one)")
    p.add_argument(
        "--bind",
        default="0.0.0.0",
        metavar="ADDR",
        help="address to listen on (default 0.0.0.0, and then [::] too on the same port)",
    )
    p.add_argument(
        "--listen",
        type=parse_listen,
        default=None,
        metavar="ADDR:PORT[,ADDR:PORT...]",
        help="listen on exactly these addresses, e.g. 0.0.0.0:6881,[::]:6881 (overrides --bind/--port)",
    )
    p.add_argument(
        "--max-peers", type=int, default=50, metavar="N", help="connected peers per torrent (default 50)"
    )
    p.add_argument(
        "--max-up",
        type=parse_rate,
        default=0,
        metavar="RATE",
        help="upload limit, e.g. 500K, 2M (default unlimited)",
    )
    p.add_argument(
        "--max-down", type=parse_rate, default=0, metavar="RATE", help="download limit (default unlimited)"
    )
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="also connect to this peer (repeatable)",
    )
    add_discovery_arguments(p)
    add_disk_arguments(p)
    p.add_argument(
        "--recheck",
        action="store_true",
        help="hash every piece on disk at start, ignoring the resume state (finds data changed in place)",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    out.add_argument("--json", action="store_true", help="one JSON event per line on stdout")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "download",
        help="download torrents, verify them, then seed",
        description="Download one or more torrents (files or magnet links), verify every piece, then seed.",
    )
    p.add_argument("torrents", nargs="+", metavar="FILE.torrent|MAGNET")
    p.add_argument("-o", "--output", default=".", metavar="DIR", help="download directory (default: current)")
    p.add_argument(
        "--files", metavar="SELECTION", help="only these files: indices, ranges or globs, comma-separated"
    )
    p.add_argument("--sequential", action="store_true", help="download pieces in order (for streaming)")
    p.add_argument(
        "--seed-ratio",
        type=parse_ratio,
        default=1.0,
        metavar="R",
        help="stop seeding at this upload ratio (default 1.0; 0 = never stop)",
    )
    p.add_argument(
        "--seed-time",
        type=parse_duration,
        default=None,
        metavar="DURATION",
        help="stop seeding after this long (e.g. 30m)",
    )
    p.add_argument(
        "--no-seed", action="store_true", help="exit as soon as the download is complete and verified"
    )
    p.add_argument(
        "--timeout",
        type=parse_duration,
        default=600.0,
        metavar="DURATION",
        help="give up when no data arrived for this long (default 10m)",
    )
    p.add_argument(
        "--web-seed",
        action="append",
        default=[],
        metavar="URL",
        help="also download from this HTTP server (BEP 19 web seed; repeatable)",
    )
    p.add_argument(
        "--no-web-seeds",
        action="store_true",
        help="ignore the torrents' web seeds (url-list, httpseeds, magnet ws=)",
    )
    add_common_arguments(p)
    p.set_defaults(seed_mode=False)


def parse_peer(text: str) -> tuple[str, int]:
    from cli.main import UsageError

    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UsageError(f"--peer {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def build_settings(args: argparse.Namespace, *, state_dir: str | None = None) -> Settings:
    """The session's settings from the flags; the DHT's routing table is kept in
    ``state_dir/.pytorrent/dht.state`` (the download directory's state directory)."""
    from torrent.config import Settings
    from torrent.disk.storage import state_dir as state_dir_of

    seed_ratio = getattr(args, "seed_ratio", None)
    dht_state = os.path.join(state_dir_of(state_dir), "dht.state") if state_dir is not None else None
    return Settings(
        listen_host=args.bind,
        listen_port=args.port,
        listen_interfaces=args.listen or (),
        max_peers_per_torrent=max(1, args.max_peers),
        max_upload_bps=args.max_up,
        max_download_bps=args.max_down,
        seed_ratio=seed_ratio or None,
        seed_time_s=getattr(args, "seed_time", None),
        **discovery_settings(args, dht_state),
        direct_writes=not args.no_direct_writes,
        use_web_seeds=not getattr(args, "no_web_seeds", False),
        web_seeds=tuple(getattr(args, "web_seed", ())),
    )


def load_torrent(source: str) -> Metainfo:
    """Read a .torrent file (usage errors for what is not one)."""
    from cli.main import UsageError
    from torrent.disk.torrent_file import read_metainfo

    if source[:7].lower() == "magnet:":
        raise UsageError("this command needs a .torrent file, not a magnet link")
    if not os.path.exists(source):
        raise UsageError(f"{source}: no such file")
    return read_metainfo(source)


def load_source(source: str) -> Metainfo | Magnet:
    """A .torrent file, or a magnet link (its metadata is fetched from peers later)."""
    if source[:7].lower() == "magnet:":
        from torrent.proto.magnet import Magnet

        return Magnet.parse(source)
    return load_torrent(source)


def file_priorities(meta: Metainfo, selection: str | None, magnet: Magnet | None = None) -> list[int] | None:
    """``--files`` (or a magnet's BEP 53 ``so``) as file priorities; None wants everything.

    Raises:
        UsageError: the selection matches nothing or names a file that is not there.
    """
    from cli.main import UsageError

    if selection:
        # Indices count the files ``pytorrent info`` lists: padding (BEP 47, and a v2
        # torrent's alignment gaps) is not among them, and is never wanted.
        real = [i for i, f in enumerate(meta.info.files) if not f.padding]
        try:
            chosen = select_files([meta.info.files[i].path_str for i in real], selection)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        priorities = [0] * len(meta.info.files)
        for i, prio in zip(real, chosen, strict=True):
            priorities[i] = prio
        return priorities
    if magnet is not None and magnet.select_only:
        wanted = set(magnet.select_only)
        return [1 if i in wanted else 0 for i in range(len(meta.info.files))]
    return None


def run(args: argparse.Namespace) -> int:
    from cli.main import run_async
    from torrent.proto.metainfo import Metainfo

    sources = [load_source(src) for src in args.torrents]
    for src in sources:  # check --files now for what we can (magnets: once their metadata is in)
        if isinstance(src, Metainfo):
            file_priorities(src, args.files)
    peers = [parse_peer(p) for p in args.peer]
    for url in args.web_seed:
        if not url.lower().startswith(("http://", "https://")):
            from cli.main import UsageError

            raise UsageError(f"--web-seed {url!r}: expected an http:// or https:// URL")
    settings = build_settings(args, state_dir=args.output)
    os.makedirs(args.output, exist_ok=True)
    return run_async(_download(args, settings, sources, peers), no_uvloop=args.no_uvloop)


async def _download(
    args: argparse.Namespace,
    settings: Settings,
    sources: list[Metainfo | Magnet],
    peers: list[tuple[str, int]],
) -> int:

    from cli.main import started
    from cli.progress import make_view
    from torrent.engine.session import Session
    from torrent.engine.status import TorrentEvent, TorrentEventKind
    from torrent.errors import MetadataTimeout
    from torrent.proto.metainfo import Metainfo

    view = make_view(json_mode=args.json, quiet=args.quiet)
    try:
        async with Session(settings) as session:
            torrents = []
            for src in sources:
                # magnet.py is imported only for a magnet link (load_source).
                magnet = None if isinstance(src, Metainfo) else src
                meta: Metainfo
                if magnet is not None:
                    started()  # waiting for peers to send the metadata is no start-up
                    label = magnet.name or magnet.info_hash.hex()
                    view.event(
                        TorrentEvent(
                            TorrentEventKind.METADATA,
                            magnet.info_hash,
                            label,
                            "fetching the metadata from peers (BEP 9)",
                        )
                    )
                    try:
                        meta = await session.fetch_metadata(magnet, peers=peers, timeout_s=args.timeout)
                    except MetadataTimeout as exc:
                        print(f"pytorrent: {printable(label)}: {printable(str(exc))}", file=sys.stderr)
                        return 1
                    view.event(
                        TorrentEvent(
                            TorrentEventKind.METADATA,
                            meta.info_hash,
                            meta.info.name,
                            "metadata received and verified",
                        )
                    )
                else:
                    assert isinstance(src, Metainfo)
                    meta = src
                torrents.append(
                    await session.add_torrent(
                        meta,
                        args.output,
                        file_priorities=file_priorities(meta, args.files, magnet),
                        sequential=args.sequential,
                        seed=not args.no_seed,
                        peers=[*peers, *(magnet.peers if magnet is not None else ())],
                        recheck=args.recheck,
                    )
                )
            started()
            return await watch(
                session, torrents, view, stall_timeout_s=args.timeout, wait_seeding=not args.no_seed
            )
    finally:
        view.close()


class _StallWatch:
    """Fails a torrent that received nothing for ``timeout_s`` while incomplete."""

    def __init__(self, torrents: list[Torrent], timeout_s: float | None, now: float) -> None:
        self._timeout_s = timeout_s
        self._last = {t: (now, -1) for t in torrents}

    def check(self, t: Torrent, now: float, *, refused_encryption: bool = False) -> str | None:
        """The failure line for ``t`` when it stalled, else None.

        ``refused_encryption``: encryption is required and every encrypted handshake we
        tried failed, which is then why no peer was reachable.
        """
        from torrent.engine.status import TorrentState

        st = t.statistics()
        since, seen = self._last[t]
        if (
            st.state in (TorrentState.CHECKING, TorrentState.SEEDING, TorrentState.FINISHED)
            or st.downloaded_bytes != seen
        ):
            self._last[t] = (now, st.downloaded_bytes)
            return None
        if self._timeout_s is None or now - since <= self._timeout_s:
            return None
        why = f"no data from any peer for {self._timeout_s:g} s"
        if st.peers_connected == 0:
            why = f"no peers reachable within {self._timeout_s:g} s"
            if refused_encryption:
                why = f"no peer accepted encryption within {self._timeout_s:g} s (--encryption require)"
            elif st.banned_peers:
                # The peers were there but misbehaved: say so rather than "unreachable".
                n = st.banned_peers
                why += f"; {n} peer{'s' if n != 1 else ''} banned (last: {st.last_ban})"
        if st.tracker_message:
            why += f" (tracker: {st.tracker_message})"
        return f"{t.name}: {why}"


def _encryption_refused(session: Session) -> bool:
    """Encryption is required, and the encrypted handshakes we tried all failed."""
    from torrent.config import Encryption

    if session.settings.encryption != Encryption.REQUIRE:
        return False
    st = session.encryption_statistics()
    return st.outgoing_failed > 0 and st.outgoing_encrypted == 0 and st.incoming_encrypted == 0


def _outcomes(done_tasks: dict[Torrent, Any]) -> list[str]:
    """Failure lines of the torrents whose wait ended with a TorrentError; other
    exceptions (bugs) are raised."""
    from torrent.errors import TorrentError

    failures = []
    for t, fut in done_tasks.items():
        if fut.cancelled():
            continue
        exc = fut.exception()
        if isinstance(exc, TorrentError):
            failures.append(f"{t.name}: {exc}")
        elif exc is not None:
            raise exc
    return failures


async def watch(
    session: Session,
    torrents: list[Torrent],
    view: Any,
    *,
    stall_timeout_s: float | None,
    wait_seeding: bool,
) -> int:
    """Drive the view until every torrent is done; returns the exit code.

    A torrent that received nothing for ``stall_timeout_s`` while incomplete fails the
    run ("no peers reachable"), as does a torrent that stopped on a disk error.
    """
    import asyncio

    clock = session.clock  # the session's time: tests move it by hand

    async def forward(t: Torrent) -> None:
        async for ev in t.events():
            view.event(ev)

    async def finish(t: Torrent) -> None:
        if wait_seeding:
            await t.wait_finished()
        else:
            await t.wait_complete()

    failures: list[str] = []
    async with asyncio.TaskGroup() as tg:
        for t in torrents:
            tg.create_task(forward(t))
        done_tasks = {t: asyncio.ensure_future(finish(t)) for t in torrents}
        stalls = _StallWatch(torrents, stall_timeout_s, clock.monotonic())
        try:
            while not all(f.done() for f in done_tasks.values()):
                await asyncio.wait(list(done_tasks.values()), timeout=0.25, return_when=asyncio.ALL_COMPLETED)
                view.update(session.statistics())
                now = clock.monotonic()
                refused = _encryption_refused(session)
                for t, fut in done_tasks.items():
                    line = None if fut.done() else stalls.check(t, now, refused_encryption=refused)
                    if line is not None:
                        failures.append(line)
                        fut.cancel()
            failures += _outcomes(done_tasks)
            view.update(session.statistics(), force=True)
        finally:
            for fut in done_tasks.values():
                fut.cancel()
            for t in torrents:
                t.stop_nowait()
    if failures:
        for line in failures:
            print(f"pytorrent: {printable(line)}", file=sys.stderr)
        return 1
    return 0
