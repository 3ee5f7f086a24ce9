"""Our side of the interop tests: ``pytorrent create``, our tracker and our client.

Each piece is used the way a user would use it where that is cheap (``pytorrent create``
runs as a subprocess, exactly as the CLI ships), and in process where the test needs to
look inside (the tracker's and the session's statistics).

A test that needs a part of pytorrent that is not on main yet skips with the reason
"not landed: ..."; once the module exists, the skip is gone by itself.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.interop.peers import ClientSpec, Peer, TorrentState, TrackerProcess

ROOT = Path(__file__).resolve().parents[2]


def require_module(module: str, what: str) -> None:
    """Skip the calling test when ``module`` is not part of the tree yet."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"not landed: {what} ({module})")


def pytorrent_create(
    path: Path, out: Path, *, trackers: tuple[str, ...] = (), piece_length: str = "32K", timeout_s: float = 60
) -> str:
    """Run ``pytorrent create PATH -o OUT`` and return the info hash it printed (hex).

    Raises:
        AssertionError: the command failed or printed no info hash.
    """
    require_module("cli.cmd_create", "pytorrent create")
    argv = [
        sys.executable,
        "-m",
        "cli.main",
        "create",
        str(path),
        "-o",
        str(out),
        "--piece-length",
        piece_length,
    ]
    for url in trackers:
        argv += ["-t", url]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, f"pytorrent create failed ({done.returncode}): {done.stderr}"
    m = re.search(r"^info hash:\s+([0-9a-f]{40})$", done.stdout, re.M)
    assert m, f"pytorrent create printed no info hash:\n{done.stdout}"
    return m.group(1)


class OurTracker(TrackerProcess):
    """``pytorrent tracker`` (HTTP and UDP, memory store) as a subprocess, stopped by PID.

    A short ``interval`` keeps the tests quick: peers learn of each other within seconds.
    """

    title = "pytorrent tracker"

    def __init__(self, workdir: Path, *, interval_s: int = 5) -> None:
        super().__init__(workdir)
        self.interval_s = interval_s

    def argv(self, info_hashes: list[str]) -> tuple[list[str], Path]:
        require_module("cli.cmd_tracker", "pytorrent tracker")
        return (
            [
                sys.executable,
                "-m",
                "cli.main",
                "tracker",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.http_port),
                "--udp-port",
                str(self.udp_port),
                "--interval",
                str(self.interval_s),
                "--min-interval",
                "1",
            ],
            ROOT,
        )


class OurPeer(Peer):
    """Our client: a ``torrent.engine.session.Session`` on the test's event loop.

    Settings are ``testing_settings()`` (loopback, free port, short timers) with seeding
    unlimited, so a seed stays up for the whole test.
    """

    spec = ClientSpec("pytorrent", "pytorrent")

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.session: Any = None
        self.torrents: dict[str, Any] = {}
        self.closes = _CloseLog()
        self._saved_level = logging.NOTSET

    async def start(self) -> None:
        require_module("torrent.engine.session", "the pytorrent client (torrent.engine.session)")
        from torrent.config import testing_settings
        from torrent.engine.session import Session

        # The swarm logs why each peer connection ended (at debug level): collect it.
        logger = logging.getLogger("torrent.engine.swarm")
        self._saved_level = logger.level
        logger.setLevel(logging.DEBUG)
        logger.addHandler(self.closes)
        settings = testing_settings().replace(seed_ratio=None, seed_time_s=None)
        if self.host != settings.listen_host:
            settings = settings.replace(listen_interfaces=((self.host, 0),))
        self.session = Session(settings)
        await self.session.__aenter__()
        self.peer_port = int(self.session.port)

    async def stop(self) -> None:
        session, self.session = self.session, None
        try:
            if session is not None:
                async with asyncio.timeout(15):
                    await session.__aexit__(None, None, None)
        finally:
            logger = logging.getLogger("torrent.engine.swarm")
            logger.removeHandler(self.closes)
            logger.setLevel(self._saved_level)

    def protocol_errors(self) -> list[str]:
        """Why our client dropped peers for breaking the protocol after the handshake.

        A peer that opens with an encrypted (MSE) handshake and retries in plaintext, as
        aria2 does, is not counted: that is the expected way to negotiate.
        """
        return [
            r for r in self.closes.reasons if "ProtocolError" in r and "not a BitTorrent handshake" not in r
        ]

    async def add(self, torrent: Path, save_dir: Path, *, seed: bool = False) -> str:
        from torrent.disk.torrent_file import read_metainfo

        meta = read_metainfo(torrent)
        handle = await self.session.add_torrent(meta, save_dir, seed=True)
        ih = meta.info_hash.hex()
        self.torrents[ih] = handle
        return ih

    async def state(self, info_hash: str) -> TorrentState:
        t = self.torrents[info_hash]
        st = t.statistics()
        return TorrentState(
            info_hash=info_hash,
            progress=st.progress if st.checked_fraction >= 1.0 else 0.0,
            seeding=st.state == "seeding",
            peers=[(a[0], int(a[1])) for a in t.swarm.peers],
            error=st.error if st.state == "error" else "",
        )

    def peer_totals(self, info_hash: str) -> list[tuple[bytes, bool, int, int]]:
        """``(peer_id, is_seed, downloaded, uploaded)`` for each connected peer, right now."""
        out = []
        for p in list(self.torrents[info_hash].swarm.peers.values()):
            if p.peer_id is not None:
                out.append((bytes(p.peer_id), bool(p.is_seed), int(p.down.total), int(p.up.total)))
        return out

    def describe_failure(self) -> str:
        lines = []
        for ih, t in self.torrents.items():
            lines.append(f"{ih}: {t.statistics()}")
        return "pytorrent:\n" + "\n".join(lines)


class _CloseLog(logging.Handler):
    """Collects the reasons in ``torrent.engine.swarm``'s "peer ... closed: REASON" debug lines."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "peer %s closed: %s" and len(self.reasons) < 10_000:
            self.reasons.append(str(record.args[1]) if isinstance(record.args, tuple) else "")
