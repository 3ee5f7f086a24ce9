"""pytorrent's client library: metainfo, the peer wire protocol, and the download engine.

The layers (docs/ARCHITECTURE.md): ``torrent.proto`` is the pure, sans-IO core (bencoding,
metainfo, magnet links, the peer wire codec, the tracker codec, piece picker, choker);
``torrent.disk`` maps pieces to files and does file I/O and hashing off the event loop;
``torrent.engine`` is the asyncio client (peers, swarms, the session) on top of both.

The exception tree is imported eagerly; the rest of the public API loads on first use
(PEP 562), so ``import torrent.create`` or ``import torrent.errors`` (what a command
like ``pytorrent create`` needs first) does not pay for the parser and its imports.
"""

from __future__ import annotations

import importlib

from torrent.errors import (
    BencodeError,
    HashMismatch,
    LocalProtocolError,
    MetainfoError,
    ProtocolError,
    RemoteProtocolError,
    StorageError,
    TorrentError,
    TrackerError,
)
from torrent.version import __version__

#: ``typing`` is not imported at run time (``pytorrent create`` starts hashing without it).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from torrent.disk.torrent_file import read_metainfo
    from torrent.proto.magnet import Magnet
    from torrent.proto.metainfo import FileEntry, Info, Metainfo
    from torrent.types import BLOCK_SIZE, InfoHash, PeerId, PieceIndex


#: Public names that load their module on first access.
_LAZY = {
    "Magnet": "torrent.proto.magnet",
    "FileEntry": "torrent.proto.metainfo",
    "Info": "torrent.proto.metainfo",
    "Metainfo": "torrent.proto.metainfo",
    "BLOCK_SIZE": "torrent.types",
    "InfoHash": "torrent.types",
    "PeerId": "torrent.types",
    "PieceIndex": "torrent.types",
    "read_metainfo": "torrent.disk.torrent_file",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'torrent' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "BLOCK_SIZE",
    "BencodeError",
    "FileEntry",
    "HashMismatch",
    "Info",
    "InfoHash",
    "LocalProtocolError",
    "Magnet",
    "Metainfo",
    "MetainfoError",
    "PeerId",
    "PieceIndex",
    "ProtocolError",
    "RemoteProtocolError",
    "StorageError",
    "TorrentError",
    "TrackerError",
    "__version__",
    "read_metainfo",
]
