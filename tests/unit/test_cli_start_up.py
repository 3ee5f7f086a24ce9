"""A download's start-up runs without the cyclic garbage collector, and only its start-up.

``cli.main.main`` holds the collector off while the command starts; ``download`` turns it
back on once its torrents are added (``cli.main.started``), and ``main`` leaves it as it
found it whatever happens.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

import cli.cmd_download
from cli.main import main
from torrent.engine.session import Session
from torrent.proto import bencoding

#: The flags of a download that touches no network (see the torrent below).
QUIET = ["--no-seed", "--json", "--no-dht", "--no-lsd", "--no-port-mapping", "--no-utp"]


def _trackerless(tmp_path: Path) -> Path:
    info = {b"name": b"one.bin", b"length": 1 << 16, b"piece length": 1 << 16, b"pieces": bytes(20)}
    torrent = tmp_path / "one.torrent"
    torrent.write_bytes(bencoding.encode({b"info": info}))
    return torrent


def test_the_collector_is_off_while_a_download_starts_and_on_once_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, bool] = {}
    add_torrent = Session.add_torrent
    watch = cli.cmd_download.watch

    async def add_and_look(self: Session, *args: Any, **kwargs: Any) -> Any:
        seen["adding"] = gc.isenabled()
        return await add_torrent(self, *args, **kwargs)

    async def watch_and_look(*args: Any, **kwargs: Any) -> int:
        seen["watching"] = gc.isenabled()
        return await watch(*args, **kwargs)

    monkeypatch.setattr(Session, "add_torrent", add_and_look)
    monkeypatch.setattr(cli.cmd_download, "watch", watch_and_look)
    assert gc.isenabled()
    argv = ["download", str(_trackerless(tmp_path)), "-o", str(tmp_path / "out"), *QUIET]
    code = main([*argv, "--bind", "127.0.0.1", "--port", "0", "--timeout", "0.1"])
    assert code == 1  # no peer: it gave up after --timeout
    assert seen == {"adding": False, "watching": True}
    assert gc.isenabled()


def test_main_leaves_the_collector_as_it_found_it(tmp_path: Path) -> None:
    torrent = str(_trackerless(tmp_path))
    assert main(["info", torrent, "--json"]) == 0
    assert gc.isenabled()
    gc.disable()
    try:
        assert main(["info", torrent, "--json"]) == 0
        assert main(["download", str(tmp_path / "missing.torrent")]) == 2  # a usage error
        assert not gc.isenabled()
    finally:
        gc.enable()
