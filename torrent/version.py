"""The client's version, and every string derived from it (one place to bump).

* :data:`PEER_ID_PREFIX`: the Azureus-style peer id prefix (BEP 20), ``-PT`` + one character
  per version field (major, minor, patch, then 0) + ``-``: ``-PT0100-`` for 0.1.0.
* :data:`CLIENT_NAME`: the ``v`` of our BEP 10 extension handshake, ``pytorrent 0.1.0``.
* :data:`USER_AGENT`: the HTTP ``User-Agent`` of tracker requests, ``pytorrent/0.1.0``.
* :data:`CREATED_BY`: the ``created by`` of torrents we make, ``pytorrent/0.1.0``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # ``typing`` is not imported at run time: ``pytorrent create`` imports this first
    from typing import Final

__all__ = ["CLIENT_NAME", "CREATED_BY", "PEER_ID_PREFIX", "USER_AGENT", "__version__", "peer_id_prefix"]

__version__: Final = "0.1.0"

#: One character per version field in an Azureus-style peer id (as libtorrent: 0-9, A-Z, a-z).
_DIGITS: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def peer_id_prefix(version: str, client: bytes = b"PT") -> bytes:
    """The 8-byte Azureus-style peer id prefix of ``client`` at ``version`` (BEP 20).

    Raises:
        ValueError: the version has more than four fields, or a field is not 0..61.
    """
    fields = [int(part) for part in version.split(".")]
    if len(fields) > 4 or any(not 0 <= f < len(_DIGITS) for f in fields):
        raise ValueError(f"version {version!r} does not fit a peer id")
    fields += [0] * (4 - len(fields))
    return b"-" + client + "".join(_DIGITS[f] for f in fields).encode("ascii") + b"-"


PEER_ID_PREFIX: Final = peer_id_prefix(__version__)
CLIENT_NAME: Final = f"pytorrent {__version__}"
USER_AGENT: Final = f"pytorrent/{__version__}"
CREATED_BY: Final = f"pytorrent/{__version__}"
