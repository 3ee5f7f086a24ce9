"""Local Service Discovery (BEP 14), sans-IO: the ``BT-SEARCH`` message and its rate limits.

A client multicasts, to 239.192.152.143:6771 (IPv4) or [ff15::efc0:988f]:6771 (IPv6)::

    BT-SEARCH * HTTP/1.1\\r\\n
    Host: 239.192.152.143:6771\\r\\n
    Port: 6881\\r\\n
    Infohash: 0123456789abcdef0123456789abcdef01234567\\r\\n
    cookie: 5f3a1c2e\\r\\n
    \\r\\n
    \\r\\n

(one ``Infohash`` line per torrent). Whoever has one of those torrents adds the sender's
address with that port as a peer. The ``cookie`` lets a client recognise, and ignore, its
own announces looped back by the network.

* :func:`encode` / :func:`decode`: the codec; :func:`decode` raises ``ValueError`` for
  anything that is not a well-formed announce, keeps at most ``MAX_INFO_HASHES`` hashes
  and ignores datagrams over ``MAX_DATAGRAM`` bytes.
* :class:`AnnounceLimiter`: when a torrent may be announced again (once per
  ``interval_s``, 5 minutes) and how many announces from one source address are taken per
  ``interval_s`` (bursts beyond ``max_per_source`` are dropped).

No clock is read here: the caller passes ``now``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "GROUP4",
    "GROUP6",
    "LSD_PORT",
    "MAX_DATAGRAM",
    "MAX_INFO_HASHES",
    "AnnounceLimiter",
    "LsdAnnounce",
    "decode",
    "encode",
]

GROUP4 = "239.192.152.143"
GROUP6 = "ff15::efc0:988f"
LSD_PORT = 6771
#: Larger datagrams are not announces (25 info hashes take about 1.4 KB).
MAX_DATAGRAM = 4096
#: Info hashes taken from one announce.
MAX_INFO_HASHES = 25
#: BEP 14 / libtorrent: announce each torrent at most every 5 minutes.
DEFAULT_INTERVAL_S = 300.0

_HEX40 = re.compile(r"[0-9a-fA-F]{40}")


@dataclass(frozen=True, slots=True)
class LsdAnnounce:
    """One ``BT-SEARCH``: the sender's TCP port, its torrents, its cookie ("" when none)."""

    port: int
    info_hashes: tuple[bytes, ...]
    cookie: str = ""


def encode(
    port: int, info_hashes: list[bytes] | tuple[bytes, ...], cookie: str, *, host: str = GROUP4
) -> bytes:
    """A ``BT-SEARCH`` announce of ``info_hashes`` (20 bytes each) on TCP ``port``."""
    where = f"[{host}]" if ":" in host else host
    lines = [
        "BT-SEARCH * HTTP/1.1",
        f"Host: {where}:{LSD_PORT}",
        f"Port: {port}",
        *(f"Infohash: {ih.hex()}" for ih in info_hashes),
        f"cookie: {cookie}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("ascii") + b"\r\n"


def decode(data: bytes) -> LsdAnnounce:
    """Parse a datagram received on the LSD port.

    Raises:
        ValueError: not a ``BT-SEARCH`` announce with a port and at least one info hash.
    """
    if len(data) > MAX_DATAGRAM:
        raise ValueError("datagram too large for an LSD announce")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("not ASCII") from None
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    if not lines or lines[0].strip() != "BT-SEARCH * HTTP/1.1":
        raise ValueError("not a BT-SEARCH request")
    port: int | None = None
    hashes: list[bytes] = []
    cookie = ""
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name, value = name.strip().lower(), value.strip()
        if name == "port":
            if not value.isdigit() or not 0 < int(value) <= 0xFFFF:
                raise ValueError(f"bad port {value!r}")
            port = int(value)
        elif name == "infohash" and _HEX40.fullmatch(value) and len(hashes) < MAX_INFO_HASHES:
            ih = bytes.fromhex(value)
            if ih not in hashes:
                hashes.append(ih)
        elif name == "cookie":
            cookie = value[:64]
    if port is None or not hashes:
        raise ValueError("an announce needs a port and an info hash")
    return LsdAnnounce(port, tuple(hashes), cookie)


class AnnounceLimiter:
    """Rate limits of LSD, both ways.

    Args:
        interval_s: the least time between two announces of one torrent; also the window
            of the per-source limit on what we receive.
        max_per_source: announces taken from one address per window (the rest dropped).
        max_sources: addresses remembered (the oldest window is forgotten first).
    """

    def __init__(
        self, interval_s: float = DEFAULT_INTERVAL_S, *, max_per_source: int = 10, max_sources: int = 1000
    ) -> None:
        self.interval_s = interval_s
        self._max_per_source = max_per_source
        self._max_sources = max_sources
        self._sent: dict[bytes, float] = {}
        self._received: dict[str, tuple[float, int]] = {}  # address -> (window start, count)
        #: Announces we dropped because their source sent too many.
        self.dropped = 0

    def due(self, info_hashes: list[bytes], now: float) -> list[bytes]:
        """Those of ``info_hashes`` that may be announced now; they count as announced."""
        out = [ih for ih in info_hashes if now - self._sent.get(ih, -self.interval_s) >= self.interval_s]
        for ih in out:
            self._sent[ih] = now
        return out

    def forget(self, info_hash: bytes) -> None:
        """A torrent left: announce it at once should it come back."""
        self._sent.pop(info_hash, None)

    def accept(self, source: str, now: float) -> bool:
        """Take one more announce from ``source``? (False: a burst, drop it.)"""
        start, count = self._received.get(source, (now, 0))
        if now - start >= self.interval_s:
            start, count = now, 0
        if count >= self._max_per_source:
            self.dropped += 1
            return False
        if source not in self._received and len(self._received) >= self._max_sources:
            oldest = min(self._received, key=lambda k: self._received[k][0])
            del self._received[oldest]
        self._received[source] = (start, count + 1)
        return True
