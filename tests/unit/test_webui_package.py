"""The web UI's files ship in the wheel: pyproject's package-data covers every one of them
(a new folder under ``static/`` would otherwise be left out without anyone noticing)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_package_data_covers_every_webui_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = config["tool"]["setuptools"]["package-data"]["torrent"]
    static = ROOT / "torrent" / "daemon" / "webui" / "static"
    files = [p.relative_to(ROOT / "torrent").as_posix() for p in static.rglob("*") if p.is_file()]
    assert "daemon/webui/static/index.html" in files
    assert "daemon/webui/static/js/main.js" in files
    # setuptools' globs do not cross "/" with "*": match part by part.
    uncovered = [
        f
        for f in files
        if not any(
            len(g.split("/")) == len(f.split("/"))
            and all(fnmatch.fnmatchcase(a, b) for a, b in zip(f.split("/"), g.split("/"), strict=True))
            for g in globs
        )
    ]
    assert uncovered == []
