"""The whole exception tree of the library.

Every error the library raises on purpose is a :class:`TorrentError`. Context goes in
attributes (``field``, ``reason``, ``piece_index``) so callers never parse messages.

* *Local* errors mean the caller misused an API: a bug, raised loudly.
* *Remote* errors mean a peer, a tracker or a file sent bad bytes: the caller drops
  that peer or rejects that input and carries on.
"""

from __future__ import annotations


class TorrentError(Exception):
    """Base class of every error raised by pytorrent on purpose."""


class BencodeError(TorrentError, ValueError):
    """Bytes that are not valid bencoding."""


class MetainfoError(TorrentError, ValueError):
    """A .torrent file or magnet URI that is malformed or unsafe.

    Attributes:
        field: the key path that failed, e.g. ``"info.files[2].path"``; empty when the
            problem is not tied to one field (e.g. the file is not bencoded at all).
    """

    def __init__(self, message: str, field: str = "") -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class ProtocolError(TorrentError):
    """A peer-wire, tracker or DHT protocol violation."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol forbids: a bug on our side."""


class RemoteProtocolError(ProtocolError):
    """The other side broke the protocol: drop that peer, keep everything else."""


class TrackerError(TorrentError):
    """A tracker could not be reached or refused the announce.

    Attributes:
        reason: the tracker's ``failure reason`` or a description of the transport error.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class MetadataTimeout(TorrentError):
    """A magnet's metadata did not arrive in time; the message says what was seen instead
    (no peers, peers without ``ut_metadata``, copies that failed the hash check)."""


class StorageError(TorrentError):
    """Reading or writing the payload on disk failed (full disk, permissions, ...).

    Attributes:
        path: the file or directory involved ("" when none is).
        errno: the operating system's error number, or None.
    """

    def __init__(self, message: str, path: str = "", errno: int | None = None) -> None:
        self.path = path
        self.errno = errno
        super().__init__(message)


class HashMismatch(TorrentError):
    """A piece's SHA-1 did not match the metainfo.

    Attributes:
        piece_index: the piece that failed.
    """

    def __init__(self, piece_index: int) -> None:
        self.piece_index = piece_index
        super().__init__(f"piece {piece_index} failed its hash check")
