"""Imports only point from the pure core outwards (docs/ARCHITECTURE.md, "Layers"): checked with ``ast``.

The rules come from the packages, not from a list of modules: whatever lands under
``torrent/proto`` is held to the pure-core rule the moment it exists.

- ``torrent.proto``: no I/O (asyncio, sockets, threads, files, processes) and nothing of
  the project outside ``torrent.proto``, ``torrent.errors`` and ``torrent.types``.
- ``torrent.disk``: files, threads and their asyncio front; nothing from ``torrent.engine``.
- ``torrent.engine``: everything below it, nothing above (``torrent.daemon``, ``tracker``, ``cli``).
- ``tracker``: the shared codecs only (``torrent.proto``, ``errors``, ``types``), never the client.
- Nothing imports ``cli``; only ``cli.main`` imports uvloop; only the Redis stores import redis.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: What the pure core may not import: event loops, sockets, threads, processes, files.
IO_MODULES = {
    "asyncio",
    "aiohttp",
    "socket",
    "selectors",
    "uvloop",
    "redis",
    "rich",
    "concurrent",
    "threading",
    "multiprocessing",
    "subprocess",
    "os",
    "io",
    "pathlib",
    "shutil",
    "tempfile",
    "mmap",
    "time",
}
#: Project modules the pure core may import besides its own package.
PURE_SHARED = {"torrent.errors", "torrent.types"}


def _modules() -> dict[str, set[str]]:
    """Every module of the three packages -> the absolute modules it imports."""
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
                    # ``from torrent.proto import wire`` imports the module torrent.proto.wire
                    imported.update(f"{node.module}.{alias.name}" for alias in node.names)
                elif isinstance(node, ast.ImportFrom):
                    raise AssertionError(f"{name}: relative import; the layering rules read absolute ones")
            out[name] = imported
    return out


def _project(imported: set[str]) -> set[str]:
    """The project's own modules among ``imported`` (names that exist as modules or packages)."""
    return {m for m in imported if m.split(".")[0] in {"torrent", "tracker", "cli"} and _exists(m)}


def _exists(module: str) -> bool:
    base = ROOT.joinpath(*module.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


MODULES = _modules()


def test_the_packages_exist() -> None:
    """The rules below bind only if the layers are where they say they are."""
    for package in ("torrent.proto", "torrent.disk", "torrent.engine"):
        assert package in MODULES, package
        assert any(m.startswith(package + ".") for m in MODULES), f"{package} is empty"


def test_pure_core_does_no_io_and_imports_only_the_core() -> None:
    for name, imported in MODULES.items():
        if not _within(name, "torrent.proto"):
            continue
        bad = {m for m in imported if m.split(".")[0] in IO_MODULES}
        assert not bad, f"{name} is in the pure core but imports {sorted(bad)}"
        outside = {m for m in _project(imported) if not _within(m, "torrent.proto", *PURE_SHARED)}
        assert not outside, f"{name} is in the pure core but imports {sorted(outside)}"


def test_disk_does_not_reach_up() -> None:
    for name, imported in MODULES.items():
        if _within(name, "torrent.disk"):
            up = {
                m
                for m in _project(imported)
                if _within(m, "torrent.engine", "torrent.daemon", "tracker", "cli")
            }
            assert not up, f"{name} imports {sorted(up)}"


def test_engine_does_not_reach_the_front_ends() -> None:
    for name, imported in MODULES.items():
        if _within(name, "torrent.engine"):
            up = {m for m in _project(imported) if _within(m, "torrent.daemon", "tracker", "cli")}
            assert not up, f"{name} imports {sorted(up)}"


def test_nothing_imports_cli_and_tracker_stays_out_of_the_client() -> None:
    for name, imported in MODULES.items():
        ours = _project(imported)
        if not name.startswith("cli"):
            assert not any(_within(m, "cli") for m in ours), name
        if name.startswith("tracker"):
            bad = {
                m
                for m in ours
                if _within(m, "torrent") and not _within(m, "torrent.proto", *PURE_SHARED, "torrent")
            }
            bad |= {m for m in ours if _within(m, "torrent.engine", "torrent.disk", "torrent.daemon")}
            assert not bad, f"{name} imports client internals {sorted(bad)}"
        if name.startswith("torrent"):
            assert not any(_within(m, "tracker") for m in ours), name


def test_only_cli_main_imports_uvloop_and_only_redis_stores_import_redis() -> None:
    for name, imported in MODULES.items():
        if any(m.split(".")[0] == "uvloop" for m in imported):
            assert name == "cli.main", name
        if any(m.split(".")[0] == "redis" for m in imported):
            assert name.startswith("tracker.store_redis"), name
        if any(m.split(".")[0] == "bencodepy" for m in imported):
            assert name == "torrent.proto.bencoding", name
