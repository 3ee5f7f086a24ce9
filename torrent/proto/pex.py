"""Peer exchange (BEP 11, ``ut_pex`` over the BEP 10 extension protocol), sans-IO.

A ``ut_pex`` message is a bencoded dict of compact peer lists: ``added`` (6 bytes per
IPv4 peer) with ``added.f`` (one flag byte per added peer), ``dropped``, and the IPv6
twins ``added6`` / ``added6.f`` / ``dropped6`` (18 bytes per peer).

* :func:`encode` / :func:`decode`: the codec. Decoding never trusts the sender: a
  message that is not a dict, or whose lists are not bytes, raises
  ``RemoteProtocolError``; a list whose length is not a multiple of the entry size is cut
  to whole entries; at most ``MAX_ACCEPTED`` peers per list are taken (BEP 11 says a
  message should carry at most 50 added and 50 dropped), port 0 is skipped, and a flag
  list shorter than its peer list gives the missing peers no flags.
* :class:`PexSender`: what one connected peer has been told; each message is the
  difference between the swarm's connected peers now and what it was told last, at most
  ``MAX_ADDED`` added and ``MAX_DROPPED`` dropped, and at most one message per
  ``interval_s`` (60 s, BEP 11: "no more than once a minute").

No clock is read here: the caller passes ``now``.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from torrent.errors import BencodeError, RemoteProtocolError
from torrent.proto import bencoding

__all__ = [
    "EXTENSION_NAME",
    "MAX_ACCEPTED",
    "MAX_ADDED",
    "MAX_DROPPED",
    "PexFlags",
    "PexMessage",
    "PexSender",
    "decode",
    "encode",
]

EXTENSION_NAME = "ut_pex"
#: Peers added / dropped in one message we send (BEP 11; libtorrent's limits too).
MAX_ADDED = 50
MAX_DROPPED = 50
#: Peers taken from each list of a message we receive; the rest is ignored.
MAX_ACCEPTED = 100
#: BEP 11: a peer should not send more than one message a minute.
DEFAULT_INTERVAL_S = 60.0

Address = tuple[str, int]


class PexFlags(enum.IntFlag):
    """BEP 11 ``added.f`` bits."""

    NONE = 0
    ENCRYPTION = 0x01  # prefers encryption (BEP 8 / MSE)
    SEED = 0x02  # seed or upload-only
    UTP = 0x04  # supports uTP (BEP 29)
    HOLEPUNCH = 0x08  # supports ut_holepunch (BEP 55)
    REACHABLE = 0x10  # the sender connected to it (so it accepts incoming connections)


@dataclass(frozen=True, slots=True)
class PexMessage:
    """Peers that joined (with their flags) and left the sender's swarm since its last message."""

    added: tuple[tuple[Address, PexFlags], ...] = ()
    dropped: tuple[Address, ...] = ()


def _pack(addr: Address) -> tuple[bool, bytes]:
    """(is IPv6, compact bytes); ``ValueError`` for what is not an IP address and port."""
    ip = ipaddress.ip_address(addr[0])
    if not 0 < addr[1] <= 0xFFFF:
        raise ValueError(f"port {addr[1]} out of range")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.version == 6, ip.packed + addr[1].to_bytes(2, "big")


def _unpack(data: bytes, size: int) -> list[Address | None]:
    """Whole entries of ``data`` (port 0 gives None), at most ``MAX_ACCEPTED``."""
    out: list[Address | None] = []
    for at in range(0, min(len(data) - len(data) % size, size * MAX_ACCEPTED), size):
        port = int.from_bytes(data[at + size - 2 : at + size], "big")
        host = str(ipaddress.ip_address(data[at : at + size - 2]))
        out.append((host, port) if port else None)
    return out


def encode(msg: PexMessage) -> bytes:
    """The bencoded payload of ``msg`` (entries that are not IP addresses are left out)."""
    added: dict[bool, bytearray] = {False: bytearray(), True: bytearray()}
    flags: dict[bool, bytearray] = {False: bytearray(), True: bytearray()}
    dropped: dict[bool, bytearray] = {False: bytearray(), True: bytearray()}
    for addr, f in msg.added:
        try:
            v6, packed = _pack(addr)
        except ValueError:
            continue
        added[v6] += packed
        flags[v6].append(int(f) & 0xFF)
    for addr in msg.dropped:
        try:
            v6, packed = _pack(addr)
        except ValueError:
            continue
        dropped[v6] += packed
    return bencoding.encode(
        {
            b"added": bytes(added[False]),
            b"added.f": bytes(flags[False]),
            b"dropped": bytes(dropped[False]),
            b"added6": bytes(added[True]),
            b"added6.f": bytes(flags[True]),
            b"dropped6": bytes(dropped[True]),
        }
    )


def decode(payload: bytes) -> PexMessage:
    """Parse a ``ut_pex`` payload.

    Raises:
        RemoteProtocolError: not a bencoded dict, or a list that is not a byte string.
    """
    try:
        top = bencoding.decode(payload)
    except BencodeError as exc:
        raise RemoteProtocolError(f"ut_pex: {exc}") from None
    if not isinstance(top, dict):
        raise RemoteProtocolError("ut_pex: the message is not a dict")

    def field(key: bytes) -> bytes:
        value = top.get(key, b"")
        if not isinstance(value, bytes):
            raise RemoteProtocolError(f"ut_pex: {key.decode()} is not a byte string")
        return value

    added: list[tuple[Address, PexFlags]] = []
    dropped: list[Address] = []
    for suffix, size in ((b"", 6), (b"6", 18)):
        flag_bytes = field(b"added" + suffix + b".f")
        for i, addr in enumerate(_unpack(field(b"added" + suffix), size)):
            if addr is not None:
                bits = flag_bytes[i] if i < len(flag_bytes) else 0
                added.append((addr, PexFlags(bits & 0x1F)))
        dropped += [a for a in _unpack(field(b"dropped" + suffix), size) if a is not None]
    return PexMessage(tuple(added), tuple(dropped))


class PexSender:
    """What one peer has been told about the swarm (see the module docstring).

    Args:
        interval_s: the least time between two messages to this peer.
    """

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self._told: set[Address] = set()
        self._last: float | None = None

    def due(self, now: float) -> bool:
        """May a message go out now?"""
        return self._last is None or now - self._last >= self._interval_s

    def message(self, connected: Mapping[Address, PexFlags], now: float) -> PexMessage | None:
        """The next message given the swarm's ``connected`` peers now (the peer itself
        left out by the caller), or None when it is not due or nothing changed."""
        if not self.due(now):
            return None
        added = [(a, f) for a, f in connected.items() if a not in self._told][:MAX_ADDED]
        dropped = [a for a in self._told if a not in connected][:MAX_DROPPED]
        if not added and not dropped:
            return None
        self._told.update(a for a, _ in added)
        self._told.difference_update(dropped)
        self._last = now
        return PexMessage(tuple(added), tuple(dropped))
