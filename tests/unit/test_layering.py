"""Imports only point from the pure core outwards (STYLE.md §2): checked with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PURE_CORE = {
    "torrent.bencoding",
    "torrent.errors",
    "torrent.types",
    "torrent.metainfo",
    "torrent.magnet",
    "torrent.wire",
    "torrent.ut_metadata",
    "torrent.pieceset",
    "torrent.tracker_codec",
    "torrent.picker",
    "torrent.choker",
    "torrent.dht.krpc",
    "torrent.dht.routing",
}
IO_MODULES = {"asyncio", "aiohttp", "socket", "selectors", "uvloop", "redis", "rich", "concurrent", "threading"}


def _modules() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for package in ("torrent", "tracker", "cli"):
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            name = ".".join(rel.parts).removesuffix(".__init__")
            imported: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    imported.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    imported.add(node.module)
            out[name] = imported
    return out


def test_pure_core_does_no_io() -> None:
    for name, imported in _modules().items():
        if name in PURE_CORE:
            bad = {m for m in imported if m.split(".")[0] in IO_MODULES}
            assert not bad, f"{name} is pure core but imports {sorted(bad)}"
            inner = {m for m in imported if m.startswith("torrent.") and m not in PURE_CORE}
            assert not inner, f"{name} is pure core but imports {sorted(inner)}"


def test_nothing_imports_cli_and_tracker_stays_out_of_the_client() -> None:
    for name, imported in _modules().items():
        if not name.startswith("cli"):
            assert not any(m == "cli" or m.startswith("cli.") for m in imported), name
        if name.startswith("tracker"):
            bad = {m for m in imported if m.startswith("torrent.") and m.split(".")[1] in {"session", "swarm", "peer"}}
            assert not bad, f"{name} imports client internals {sorted(bad)}"
        if name.startswith("torrent"):
            assert not any(m == "tracker" or m.startswith("tracker.") for m in imported), name


def test_only_cli_main_imports_uvloop_and_only_store_redis_imports_redis() -> None:
    for name, imported in _modules().items():
        if any(m.split(".")[0] == "uvloop" for m in imported):
            assert name == "cli.main", name
        if any(m.split(".")[0] == "redis" for m in imported):
            assert name == "tracker.store_redis", name
        if any(m.split(".")[0] == "bencodepy" for m in imported):
            assert name == "torrent.bencoding", name
