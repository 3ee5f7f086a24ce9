"""pytorrent's client library: metainfo, the peer wire protocol, and the download engine.

The pure core (``bencoding``, ``metainfo``, ``magnet``, ``wire``, ``tracker_codec``,
``picker``, ``choker``) does no I/O; the asyncio layers on top of it own sockets, files
and timers.
"""

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
from torrent.magnet import Magnet
from torrent.metainfo import FileEntry, Info, Metainfo
from torrent.types import BLOCK_SIZE, InfoHash, PeerId, PieceIndex

__version__ = "0.1.0"

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
