"""``--recheck``: a verified piece changed in place (same size, same mtime) is found.

Without it a clean resume state is trusted, as documented; with it every piece is
hashed again.
"""

from __future__ import annotations

import os
from pathlib import Path

from cli.main import build_parser
from tests.integration.swarm_helpers import make_payload, make_torrent
from torrent import config
from torrent.engine.session import Session
from torrent.proto.metainfo import Metainfo

PLEN = 32 * 1024


async def pieces_on_start(meta: Metainfo, root: Path, *, recheck: bool) -> int:
    async with Session(config.testing_settings()) as s:
        t = await s.add_torrent(meta, root, recheck=recheck)
        await t.wait_checked()
        done = t.statistics().pieces_done
        await t.stop()
    return done


async def test_recheck_finds_a_piece_changed_in_place(tmp_path: Path) -> None:
    content = make_payload(tmp_path, "p.bin", 8 * PLEN)
    meta = make_torrent(content, piece_length=PLEN)
    assert await pieces_on_start(meta, tmp_path, recheck=False) == 8  # first check, state saved
    st = content.stat()
    with content.open("r+b") as f:
        f.seek(3 * PLEN + 5)
        byte = f.read(1)
        f.seek(3 * PLEN + 5)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(content, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert await pieces_on_start(meta, tmp_path, recheck=False) == 8  # trusted: documented limit
    assert await pieces_on_start(meta, tmp_path, recheck=True) == 7


def test_download_and_seed_accept_recheck() -> None:
    assert build_parser("download").parse_args(["download", "x.torrent", "--recheck"]).recheck
    assert build_parser("seed").parse_args(["seed", "x.torrent", "d", "--recheck"]).recheck
    assert not build_parser("download").parse_args(["download", "x.torrent"]).recheck
