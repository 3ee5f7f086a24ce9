"""Make v1, v2 and hybrid torrents with libtorrent (the reference) for cross-checks.

libtorrent only hashes files here: no session, no network.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("CI") == "true":
    import libtorrent as lt
else:
    lt = pytest.importorskip("libtorrent", reason="libtorrent (pip install libtorrent) is the reference")

__all__ = ["FLAGS", "lt", "lt_create", "lt_info"]

#: ``--format`` name -> libtorrent's create_torrent flags.
FLAGS = {"v1": "v1_only", "v2": "v2_only", "hybrid": None}


def lt_create(path: Path, fmt: str, piece_length: int) -> bytes:
    """The .torrent libtorrent makes for ``path`` (file or directory), without a date."""
    flag_name = FLAGS[fmt]
    flags = getattr(lt.create_torrent, flag_name) if flag_name else 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        fs = lt.file_storage()
        lt.add_files(fs, str(path))
        ct = lt.create_torrent(fs, piece_length, flags)
        lt.set_piece_hashes(ct, str(path.parent))
        entry = ct.generate()
    entry.pop(b"creation date", None)
    return bytes(lt.bencode(entry))


def lt_info(data: bytes) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return lt.torrent_info(data)
