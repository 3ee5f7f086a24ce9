"""``pytorrent info FILE.torrent|MAGNET [--json]``: show what a torrent or magnet link holds.

Prints the name, info hash, total size, piece length and count, the private flag,
trackers by tier, web seeds, the file tree with sizes and the magnet link. On a
terminal the tree and the fields are drawn with rich; otherwise plain text, one field
per line. ``--json`` prints the same as one JSON object (sizes in bytes).

A magnet link carries no metainfo: only the fields it has are shown. Names, comments
and other text from the torrent are shown with control characters escaped
(``torrent.proto.text.printable``); ``--json`` keeps them exact.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cli.cmd_create import human_size
from torrent.proto.text import json_controls_escaped, printable


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "info",
        help="show what a .torrent file or magnet link holds",
        description="Show a torrent's name, info hash, size, pieces, trackers, web seeds, files and magnet link.",
    )
    p.add_argument("source", metavar="FILE.torrent|MAGNET", help="a .torrent file or a magnet: link")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")


def describe(source: str) -> dict[str, Any]:
    """The facts ``info`` shows, as plain data (what ``--json`` prints).

    Raises:
        MetainfoError: the file cannot be read or is not a valid torrent / magnet link.
    """
    from torrent.disk.torrent_file import read_metainfo
    from torrent.proto.magnet import Magnet

    if source.lower().startswith("magnet:"):
        magnet = Magnet.parse(source)
        return {
            "kind": "magnet",
            "name": magnet.name or None,
            "info_hash": magnet.info_hash_v1.hex() if magnet.info_hash_v1 is not None else None,
            "info_hash_v2": magnet.info_hash_v2.hex() if magnet.info_hash_v2 is not None else None,
            "trackers": [[t] for t in magnet.trackers],
            "web_seeds": list(magnet.web_seeds),
            "peers": [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in magnet.peers],
            "select_only": list(magnet.select_only),
            "magnet": magnet.to_uri(),
        }
    meta = read_metainfo(source)
    info = meta.info
    trackers = [list(t) for t in meta.announce_list]
    magnet = Magnet(
        info_hash=meta.info_hash,
        name=info.name,
        trackers=meta.trackers,
        web_seeds=meta.url_list,
        info_hash_v2=meta.info_hash_v2,
        v2_only=not info.has_v1,
    )
    pads = [f for f in info.files if f.padding]
    return {
        "kind": "torrent",
        "name": info.name,
        "info_hash": meta.info_hash_v1.hex() if meta.info_hash_v1 is not None else None,
        "info_hash_v2": meta.info_hash_v2.hex() if meta.info_hash_v2 is not None else None,
        "meta_version": meta.meta_version,
        "total_size": info.total_length - info.padding_bytes,
        "piece_length": info.piece_length,
        "piece_count": info.num_pieces,
        "private": info.private,
        "multi_file": info.multi_file,
        "trackers": trackers,
        "web_seeds": list(meta.url_list),
        "http_seeds": list(meta.httpseeds),
        "creation_date": meta.creation_date,
        "created_by": meta.created_by or None,
        "comment": meta.comment or None,
        "source": info.source or None,
        "disk_name": info.disk_name,
        # BEP 47 padding is never written: counted here, not listed among the files.
        "padding": {"files": len(pads), "size": info.padding_bytes},
        "files": [
            {
                "path": list(f.path),
                "size": f.length,
                # Where the file is written (below the download directory), only when
                # that is not what the torrent says.
                **({"disk_path": _disk_path(info, f)} if _disk_path(info, f) != _said_path(info, f) else {}),
            }
            for f in info.files
            if not f.padding
        ],
        "warnings": list(meta.warnings),
        "magnet": magnet.to_uri(),
    }


def run(args: argparse.Namespace) -> int:
    facts = describe(args.source)
    if args.json:
        import json

        sys.stdout.write(json_controls_escaped(json.dumps(facts, ensure_ascii=False)) + "\n")
    elif sys.stdout.isatty():
        _print_rich(facts)
    else:
        sys.stdout.write(_plain(facts))
    return 0


def _field_rows(facts: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = [("name", facts["name"] or "(unknown)")]
    rows.append(("info hash", facts["info_hash"] or "none (v2 only)"))
    if facts.get("info_hash_v2"):
        rows.append(("info hash v2", facts["info_hash_v2"]))
    if facts["kind"] == "torrent":
        n_files = len(facts["files"])
        version = {1: "v1", 2: "v2" if facts["info_hash"] is None else "hybrid (v1 + v2)"}
        rows += [
            ("format", version.get(facts["meta_version"], str(facts["meta_version"]))),
            (
                "total size",
                f"{human_size(facts['total_size'])} ({facts['total_size']} bytes) in {n_files} "
                f"file{'s' if n_files != 1 else ''}",
            ),
            ("pieces", f"{facts['piece_count']} x {human_size(facts['piece_length'])}"),
            ("private", "yes" if facts["private"] else "no"),
        ]
        if facts["created_by"]:
            rows.append(("created by", facts["created_by"]))
        if facts["creation_date"] is not None:
            import time

            rows.append(
                ("created", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(facts["creation_date"])))
            )
        if facts["comment"]:
            rows.append(("comment", facts["comment"]))
        if facts["source"]:
            rows.append(("source", facts["source"]))
    if facts["trackers"]:
        for i, tier in enumerate(facts["trackers"]):
            rows.append((f"tier {i + 1}" if facts["kind"] == "torrent" else "tracker", ", ".join(tier)))
    else:
        rows.append(("trackers", "none"))
    for url in facts["web_seeds"]:
        rows.append(("web seed", url))
    for url in facts.get("http_seeds", []):
        rows.append(("http seed", url))
    for peer in facts.get("peers", []):
        rows.append(("peer", peer))
    if facts.get("select_only"):
        rows.append(("select only", ", ".join(map(str, facts["select_only"]))))
    for w in facts.get("warnings", []):
        rows.append(("warning", w))
    rows.append(("magnet", facts["magnet"]))
    return rows


def _plain(facts: dict[str, Any]) -> str:
    lines = [f"{key + ':':<13} {printable(value)}" for key, value in _field_rows(facts)]
    if facts["kind"] == "torrent":
        lines.append("files:")
        for f in facts["files"]:
            shown = printable("/".join(f["path"]))
            lines.append(f"  {shown}  {human_size(f['size'])}{printable(_written_as(facts, f))}")
        if facts["padding"]["files"]:
            lines.append(f"  ({_padding_text(facts)}, not stored)")
    return "\n".join(lines) + "\n"


def _print_rich(facts: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from rich.tree import Tree

    console = Console()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in _field_rows(facts):
        table.add_row(key, escape(printable(value)))
    console.print(table)
    if facts["kind"] != "torrent":
        return
    root = Tree(f"[bold]{escape(printable(facts['name']))}[/] ({human_size(facts['total_size'])})")
    pads = facts["padding"]
    if pads["files"]:
        # BEP 47 padding files are never written to disk: count them, do not list them.
        root.add(f"[dim]{_padding_text(facts)} (not stored)[/]")
    if facts["multi_file"]:
        nodes: dict[tuple[str, ...], Tree] = {(): root}
        sizes: dict[tuple[str, ...], int] = {}
        real = facts["files"]
        for f in real:
            for depth in range(1, len(f["path"])):
                sizes[tuple(f["path"][:depth])] = sizes.get(tuple(f["path"][:depth]), 0) + f["size"]
        for f in real:
            path = tuple(f["path"])
            for depth in range(1, len(path)):
                node_key = path[:depth]
                if node_key not in nodes:
                    nodes[node_key] = nodes[path[: depth - 1]].add(
                        f"[bold blue]{escape(printable(node_key[-1]))}/[/] ({human_size(sizes[node_key])})"
                    )
            leaf = escape(printable(path[-1]))
            nodes[path[:-1]].add(
                f"{leaf} ({human_size(f['size'])}){escape(printable(_written_as(facts, f)))}"
            )
    console.print(root)


def _padding_text(facts: dict[str, Any]) -> str:
    """How much padding there is: BEP 47 files, or a v2-only torrent's alignment gaps
    (which are no files of the torrent, only room in its piece space)."""
    pads = facts["padding"]
    what = "alignment gaps" if facts["info_hash"] is None else "padding files"
    return f"{pads['files']} {what}, {human_size(pads['size'])}"


def _disk_path(info: Any, f: Any) -> list[str]:
    return [info.disk_name, *f.disk_path] if info.multi_file else [info.disk_name]


def _said_path(info: Any, f: Any) -> list[str]:
    return [info.name, *f.path] if info.multi_file else [info.name]


def _written_as(facts: dict[str, Any], f: dict[str, Any]) -> str:
    """`` -> written as <path>`` when the sanitised path differs from the torrent's, else ""."""
    if "disk_path" not in f:
        return ""
    return f"  -> written as {'/'.join(f['disk_path'])}"
