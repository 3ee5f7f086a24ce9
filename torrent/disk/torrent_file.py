"""Reading ``.torrent`` files from disk.

The parser (:class:`~torrent.proto.metainfo.Metainfo`) is pure and takes bytes; this
module is the file-system side: it bounds the read and turns ``OSError`` into the
one-line :class:`MetainfoError` the CLI prints.
"""

from __future__ import annotations

import os

from torrent.errors import MetainfoError
from torrent.proto.metainfo import MAX_TORRENT_FILE_BYTES, Metainfo

__all__ = ["read_metainfo"]


def read_metainfo(path: str | os.PathLike[str]) -> Metainfo:
    """Read and parse a .torrent file.

    Raises:
        MetainfoError: the file cannot be read, is larger than
            :data:`~torrent.proto.metainfo.MAX_TORRENT_FILE_BYTES`, or is not a valid torrent.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_TORRENT_FILE_BYTES + 1)
    except OSError as exc:
        raise MetainfoError(f"cannot read {os.fspath(path)}: {exc.strerror or exc}") from None
    if len(data) > MAX_TORRENT_FILE_BYTES:
        raise MetainfoError(f"{os.fspath(path)} is larger than {MAX_TORRENT_FILE_BYTES} bytes")
    return Metainfo.from_bytes(data)
