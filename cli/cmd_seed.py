"""``pytorrent seed FILE.torrent DATA_PATH``: verify existing data, then seed until Ctrl-C.

``DATA_PATH`` is the content itself (the file of a single-file torrent, the top
directory of a multi-file one, whatever its name) or the directory that contains it
(what ``download -o`` was). The data is hash-checked first (progress shown, every core
used); missing or wrong pieces are reported and the rest is seeded.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from cli.cmd_download import add_common_arguments, parse_duration, parse_peer, parse_ratio
from torrent.proto.text import printable

if TYPE_CHECKING:
    from torrent.config import Settings
    from torrent.proto.metainfo import Metainfo


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "seed",
        help="verify existing data and seed it",
        description="Verify the data of a torrent, then seed it until Ctrl-C (or the ratio/time limit).",
    )
    p.add_argument("torrent", metavar="FILE.torrent")
    p.add_argument(
        "data_path", metavar="DATA_PATH", help="the content itself, or the directory that holds it"
    )
    p.add_argument(
        "--seed-ratio",
        type=parse_ratio,
        default=0.0,
        metavar="R",
        help="stop at this upload ratio (default: never)",
    )
    p.add_argument(
        "--seed-time", type=parse_duration, default=None, metavar="DURATION", help="stop after this long"
    )
    add_common_arguments(p)


def run(args: argparse.Namespace) -> int:
    from cli.cmd_download import build_settings, load_torrent
    from cli.main import UsageError, run_async
    from torrent.disk.storage import locate_payload

    if args.torrent.startswith("magnet:"):
        raise UsageError("seed needs a .torrent file, not a magnet link")
    meta = load_torrent(args.torrent)
    payload = locate_payload(meta.info, args.data_path)
    settings = build_settings(args, state_dir=payload.directory)
    peers = [parse_peer(p) for p in args.peer]
    return run_async(
        _seed(args, settings, meta, payload.directory, payload.content_path, peers), no_uvloop=args.no_uvloop
    )


async def _seed(
    args: argparse.Namespace,
    settings: Settings,
    meta: Metainfo,
    directory: str,
    content_path: str,
    peers: list[tuple[str, int]],
) -> int:
    import sys

    from cli.cmd_download import watch
    from cli.progress import make_view
    from torrent.engine.session import Session
    from torrent.engine.status import TorrentEvent, TorrentEventKind

    view = make_view(json_mode=args.json, quiet=args.quiet)
    try:
        async with Session(settings) as session:
            torrent = await session.add_torrent(
                meta, directory, content_path=content_path, seed=True, peers=peers, recheck=args.recheck
            )
            await torrent.wait_checked()
            st = torrent.statistics()
            view.event(
                TorrentEvent(
                    TorrentEventKind.CHECKED,
                    st.info_hash,
                    st.name,
                    f"{st.pieces_done}/{st.pieces_wanted} pieces verified",
                )
            )
            if st.error:
                print(f"pytorrent seed: {printable(st.error)}", file=sys.stderr)
                return 1
            if st.pieces_done < st.pieces_wanted:
                missing = st.pieces_wanted - st.pieces_done
                print(
                    f"pytorrent seed: {missing} of {st.pieces_wanted} pieces are missing or corrupt in "
                    f"{content_path}; seeding the rest",
                    file=sys.stderr,
                )
            return await watch(session, [torrent], view, stall_timeout_s=None, wait_seeding=True)
    finally:
        view.close()
