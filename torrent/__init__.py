"""pytorrent's client library: metainfo, the peer wire protocol, and the download engine.

The pure core (``bencoding``, ``metainfo``, ``magnet``, ``wire``, ``tracker_codec``,
``picker``, ``choker``) does no I/O; the asyncio layers on top of it own sockets, files
and timers.

The exception tree is imported eagerly; the rest of the public API loads on first use
(PEP 562), so ``import torrent.create`` or ``import torrent.errors`` (what a command
like ``pytorrent create`` needs first) does not pay for the parser and its imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from torrent.magnet import Magnet
    from torrent.metainfo import FileEntry, Info, Metainfo
    from torrent.types import BLOCK_SIZE, InfoHash, PeerId, PieceIndex

__version__ = "0.1.0"

#: Public names that load their module on first access.
_LAZY = {
    "Magnet": "torrent.magnet",
    "FileEntry": "torrent.metainfo",
    "Info": "torrent.metainfo",
    "Metainfo": "torrent.metainfo",
    "BLOCK_SIZE": "torrent.types",
    "InfoHash": "torrent.types",
    "PeerId": "torrent.types",
    "PieceIndex": "torrent.types",
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
]
