"""Magnet URIs (BEP 9, BEP 52, BEP 53): parse and build.

Understands ``xt=urn:btih:`` with the info hash in hex (40 characters) or base32
(32 characters), ``xt=urn:btmh:`` with a BEP 52 v2 info hash as a multihash (``1220``
then 64 hex characters: SHA-256, 32 bytes), alone or beside a ``btih`` (a hybrid), ``dn`` (display name), ``tr`` (trackers, several), ``ws`` (web seeds,
BEP 19), ``x.pe`` (peer addresses ``host:port``) and ``so`` (BEP 53 file selection,
e.g. ``0,2,4-6``). Unknown parameters are ignored. Errors are :class:`MetainfoError`.

Left out: multihashes other than SHA-256.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlsplit

from torrent.errors import MetainfoError
from torrent.types import InfoHash

#: The longest magnet URI we parse; real ones are a few KiB at most.
MAX_MAGNET_LENGTH = 64 * 1024
#: ``so`` ranges may not expand to more indices than this.
MAX_SELECTED_FILES = 1_000_000


@dataclass(frozen=True, slots=True)
class Magnet:
    """A parsed magnet link.

    Attributes:
        info_hash: the 20 bytes that name the torrent on the wire: the v1 info hash, or
            for a v2-only link the v2 hash truncated to 20 bytes (BEP 52).
        info_hash_v2: the full 32-byte v2 info hash (``urn:btmh``), or None.
        v2_only: the link has no ``urn:btih``: ``info_hash`` is the truncated v2 hash.
        name: ``dn``, "" when absent.
        trackers: ``tr`` values in order.
        web_seeds: ``ws`` values in order.
        peers: ``x.pe`` values as ``(host, port)``.
        select_only: BEP 53 ``so`` file indices, sorted; empty means every file.
    """

    info_hash: InfoHash
    name: str = ""
    trackers: tuple[str, ...] = ()
    web_seeds: tuple[str, ...] = ()
    peers: tuple[tuple[str, int], ...] = ()
    select_only: tuple[int, ...] = ()
    info_hash_v2: bytes | None = None
    v2_only: bool = False

    @property
    def info_hashes(self) -> tuple[InfoHash, ...]:
        """Every 20-byte hash the link's torrent is named by on the wire, to trackers and
        in the DHT: a hybrid link's v1 hash and its v2 hash truncated to 20 bytes (BEP 52),
        else its one hash."""
        hashes = [self.info_hash]
        if self.info_hash_v2 is not None and self.info_hash_v2[:20] != self.info_hash:
            hashes.append(InfoHash(self.info_hash_v2[:20]))
        return tuple(hashes)

    @property
    def info_hash_v1(self) -> InfoHash | None:
        """The v1 info hash, or None for a v2-only link."""
        return None if self.v2_only else self.info_hash

    @classmethod
    def parse(cls, uri: str) -> Magnet:
        """Parse a ``magnet:?`` URI.

        Raises:
            MetainfoError: not a magnet URI, no usable ``xt``, or a malformed parameter.
        """
        query = _magnet_query(uri)
        info_hash: bytes | None = None
        info_hash_v2: bytes | None = None
        name = ""
        trackers: list[str] = []
        web_seeds: list[str] = []
        peers: list[tuple[str, int]] = []
        select: set[int] = set()
        for key, value in parse_qsl(query, keep_blank_values=True):
            key = key.lower()
            if key == "xt" or (key.startswith("xt.") and key[3:].isdigit()):
                low = value.lower()
                if low.startswith("urn:btih:"):
                    info_hash = _decode_btih(value[9:])
                elif low.startswith("urn:btmh:"):
                    info_hash_v2 = _decode_btmh(value[9:])
            elif key == "dn":
                name = value
            elif key == "tr":
                if value:
                    trackers.append(value)
            elif key == "ws":
                if value:
                    web_seeds.append(value)
            elif key == "x.pe":
                peers.append(_parse_peer(value))
            elif key == "so":
                select.update(_parse_select(value))
        if info_hash is None and info_hash_v2 is None:
            raise MetainfoError("no 'xt=urn:btih:' or 'xt=urn:btmh:' info hash", "magnet.xt")
        return cls(
            info_hash=InfoHash(info_hash if info_hash is not None else (info_hash_v2 or b"")[:20]),
            info_hash_v2=info_hash_v2,
            v2_only=info_hash is None,
            name=name,
            trackers=tuple(dict.fromkeys(trackers)),
            web_seeds=tuple(dict.fromkeys(web_seeds)),
            peers=tuple(peers),
            select_only=tuple(sorted(select)),
        )

    def to_uri(self) -> str:
        """Build the magnet URI (hex info hashes; parameters in BEP 9 order)."""
        parts = [] if self.v2_only else [f"xt=urn:btih:{self.info_hash.hex()}"]
        if self.info_hash_v2 is not None:
            parts.append(f"xt=urn:btmh:{_SHA256_MULTIHASH}{self.info_hash_v2.hex()}")
        if self.name:
            parts.append("dn=" + quote(self.name, safe=""))
        parts.extend("tr=" + quote(t, safe="") for t in self.trackers)
        parts.extend("ws=" + quote(w, safe="") for w in self.web_seeds)
        for host, port in self.peers:
            shown = f"[{host}]" if ":" in host else host
            parts.append("x.pe=" + quote(f"{shown}:{port}", safe=""))
        if self.select_only:
            parts.append("so=" + _format_select(self.select_only))
        return "magnet:?" + "&".join(parts)


def _magnet_query(uri: str) -> str:
    """The query part of a magnet URI, once it is known to be one of a sane length."""
    if not isinstance(uri, str):
        raise MetainfoError("a magnet link must be text", "magnet")
    if len(uri) > MAX_MAGNET_LENGTH:
        raise MetainfoError(f"longer than {MAX_MAGNET_LENGTH} characters", "magnet")
    parts = urlsplit(uri.strip())
    if parts.scheme.lower() != "magnet":
        raise MetainfoError("not a magnet link (must start with 'magnet:?')", "magnet")
    return parts.query


#: Multihash prefix of a SHA-256 digest: code 0x12, length 0x20 (BEP 52 magnets).
_SHA256_MULTIHASH = "1220"


def _decode_btmh(text: str) -> bytes:
    if not text.lower().startswith(_SHA256_MULTIHASH):
        raise MetainfoError(
            f"{text[:8]!r}...: only SHA-256 multihashes ('1220' + 64 hex) are known", "magnet.xt"
        )
    digest = text[len(_SHA256_MULTIHASH) :]
    if len(digest) != 64:
        raise MetainfoError(f"a v2 info hash is 64 hex characters, got {len(digest)}", "magnet.xt")
    try:
        return binascii.unhexlify(digest)
    except (binascii.Error, ValueError):
        raise MetainfoError(f"{digest!r} is not a hex info hash", "magnet.xt") from None


def _decode_btih(text: str) -> bytes:
    if len(text) == 40:
        try:
            return binascii.unhexlify(text)
        except (binascii.Error, ValueError):
            raise MetainfoError(f"{text!r} is not a hex info hash", "magnet.xt") from None
    if len(text) == 32:
        try:
            return base64.b32decode(text.upper())
        except (binascii.Error, ValueError):
            raise MetainfoError(f"{text!r} is not a base32 info hash", "magnet.xt") from None
    raise MetainfoError(f"info hash must be 40 hex or 32 base32 characters, got {len(text)}", "magnet.xt")


def _parse_peer(value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise MetainfoError(f"{value!r} is not host:port", "magnet.x.pe")
    port = int(port_text)
    if not 0 < port < 65536:
        raise MetainfoError(f"port {port} out of range", "magnet.x.pe")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def _parse_select(value: str) -> set[int]:
    out: set[int] = set()
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        first, dash, last = item.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise MetainfoError(f"{item!r} is not an index or a range", "magnet.so")
        lo, hi = int(first), int(last) if dash else int(first)
        if hi < lo:
            raise MetainfoError(f"range {item!r} runs backwards", "magnet.so")
        if hi - lo + len(out) > MAX_SELECTED_FILES:
            raise MetainfoError(f"selects more than {MAX_SELECTED_FILES} files", "magnet.so")
        out.update(range(lo, hi + 1))
    return out


def _format_select(indices: tuple[int, ...]) -> str:
    runs: list[str] = []
    start = prev = indices[0]
    for i in (*indices[1:], -2):
        if i == prev + 1:
            prev = i
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = i
    return ",".join(runs)
