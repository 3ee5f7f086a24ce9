"""Sans-IO tracker protocol: announce and scrape over HTTP and UDP.

Both the tracker server (``tracker/``) and the client (``torrent/tracker_client.py``)
use this module; it turns typed values into bytes and bytes into typed values and
does no I/O at all.

Covers:

* BEP 3 HTTP announce: the query string (binary ``info_hash``/``peer_id``
  percent-encoded byte by byte, exactly as clients send them) in both directions,
  and the bencoded response with ``interval``, ``min interval``, ``complete``,
  ``incomplete``, ``downloaded``, ``tracker id``, ``warning message`` and
  ``failure reason``.
* BEP 23 compact ``peers`` (6 bytes each) and the dict list (``compact=0``).
* BEP 7 ``peers6`` (18 bytes each) and the ``ipv6`` announce parameter.
* BEP 24 ``external ip``.
* BEP 48 scrape: query (one or many ``info_hash``) and the ``files`` response.
* BEP 15 UDP: connect, announce (IPv4 and IPv6 response forms), scrape (at most 74
  hashes) and error packets, requests and responses in both directions: in
  :mod:`torrent.proto.tracker_codec_udp`, which a client announcing over HTTP alone never
  imports.

Left out: BEP 41 UDP options (trailing bytes after an announce are ignored), the
``supportcrypto``/``requirecrypto`` extensions and BEP 52 (v2) hashes.

Errors: malformed input raises :class:`RemoteProtocolError` with a one-line message
fit to be sent back as a ``failure reason``; a tracker's ``failure reason`` is raised
as :class:`TrackerError`; building a request from bad values raises
:class:`LocalProtocolError`.
"""

from __future__ import annotations

import enum
import ipaddress
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_from_bytes, unquote_to_bytes, urlsplit, urlunsplit

from torrent.errors import BencodeError, LocalProtocolError, RemoteProtocolError, TrackerError
from torrent.proto import bencoding
from torrent.proto.tracker_url import TRACKER_SCHEMES, tracker_url_problem
from torrent.types import InfoHash, PeerId

__all__ = [
    "MAX_QUERY_LENGTH",
    "MAX_UDP_SCRAPE_HASHES",
    "TRACKER_SCHEMES",
    "AnnounceEvent",
    "AnnounceRequest",
    "AnnounceResponse",
    "PeerAddress",
    "ScrapeResponse",
    "ScrapeStats",
    "announce_url",
    "build_announce_query",
    "build_scrape_query",
    "decode_announce_response",
    "decode_compact_peers",
    "decode_scrape_response",
    "encode_announce_response",
    "encode_compact_announce",
    "encode_compact_peers",
    "encode_failure",
    "encode_scrape_response",
    "pack_ip",
    "parse_announce_query",
    "parse_query",
    "parse_scrape_query",
    "scrape_url",
    "tracker_url_problem",
    "unpack_ip",
]

#: Longest query string we parse. A real announce is about 300 bytes; a scrape of 74
#: hashes (the UDP limit, reused for HTTP) is about 4.5 KiB.
MAX_QUERY_LENGTH = 8192
#: Most ``info_hash`` values one scrape may carry (BEP 15's packet-size bound; we apply
#: it to HTTP too).
MAX_UDP_SCRAPE_HASHES = 74
#: Longest text a value like ``ip`` or ``trackerid`` may have.
_MAX_TEXT = 255
_INT64_MAX = 2**63 - 1


class AnnounceEvent(enum.IntEnum):
    """The ``event`` of an announce; values are the BEP 15 numbers."""

    NONE = 0
    COMPLETED = 1
    STARTED = 2
    STOPPED = 3

    @property
    def http_name(self) -> str:
        """The BEP 3 query value: ``""`` for NONE, else the lower-case name."""
        return "" if self is AnnounceEvent.NONE else self.name.lower()


_HTTP_EVENTS: dict[bytes, AnnounceEvent] = {
    b"": AnnounceEvent.NONE,
    b"empty": AnnounceEvent.NONE,
    b"paused": AnnounceEvent.NONE,  # BEP 21: a partial seed pausing; tracked as a plain announce
    b"started": AnnounceEvent.STARTED,
    b"completed": AnnounceEvent.COMPLETED,
    b"stopped": AnnounceEvent.STOPPED,
}


# --------------------------------------------------------------------------- addresses


def pack_ip(ip: str) -> bytes:
    """Pack a textual IPv4 (4 bytes) or IPv6 (16 bytes) address.

    IPv4-mapped IPv6 addresses (``::ffff:1.2.3.4``) pack as plain IPv4.

    Raises:
        LocalProtocolError: ``ip`` is not an IP address.
    """
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise LocalProtocolError(f"not an IP address: {ip!r}") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.packed
    return addr.packed


def unpack_ip(packed: bytes) -> str:
    """The text form of a 4- or 16-byte packed address.

    Raises:
        RemoteProtocolError: ``packed`` is neither 4 nor 16 bytes long.
    """
    if len(packed) == 4:
        return ".".join(map(str, packed))
    if len(packed) == 16:
        return str(ipaddress.IPv6Address(bytes(packed)))
    raise RemoteProtocolError(f"a packed address is 4 or 16 bytes, got {len(packed)}")


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """One peer in an announce response.

    Attributes:
        ip: textual IPv4 or IPv6 address (the dict form may also carry a host name).
        port: TCP port, 0-65535.
        peer_id: the peer's id when the tracker sent the dict form, else ``None``.
    """

    ip: str
    port: int
    peer_id: bytes | None = None

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.ip

    def packed(self) -> bytes:
        """The compact form: 4+2 bytes (BEP 23) or 16+2 bytes (BEP 7).

        Raises:
            LocalProtocolError: ``ip`` is not an address or ``port`` is out of range.
        """
        if not 0 <= self.port <= 0xFFFF:
            raise LocalProtocolError(f"port out of range: {self.port}")
        return pack_ip(self.ip) + self.port.to_bytes(2, "big")

    @classmethod
    def from_packed(cls, data: bytes) -> PeerAddress:
        """Parse one 6- or 18-byte compact entry.

        Raises:
            RemoteProtocolError: ``data`` is neither 6 nor 18 bytes long.
        """
        if len(data) not in (6, 18):
            raise RemoteProtocolError(f"a compact peer is 6 or 18 bytes, got {len(data)}")
        return cls(unpack_ip(data[:-2]), int.from_bytes(data[-2:], "big"))


def encode_compact_peers(peers: Iterable[PeerAddress]) -> tuple[bytes, bytes]:
    """Split ``peers`` into the BEP 23 ``peers`` and BEP 7 ``peers6`` strings.

    Raises:
        LocalProtocolError: a peer has no packable address.
    """
    v4: list[bytes] = []
    v6: list[bytes] = []
    for peer in peers:
        raw = peer.packed()
        (v4 if len(raw) == 6 else v6).append(raw)
    return b"".join(v4), b"".join(v6)


def decode_compact_peers(data: bytes, *, ipv6: bool = False) -> tuple[PeerAddress, ...]:
    """Parse a compact peer string: 6-byte entries, or 18-byte entries when ``ipv6``.

    Raises:
        RemoteProtocolError: the length is not a multiple of the entry size.
    """
    size = 18 if ipv6 else 6
    if len(data) % size:
        raise RemoteProtocolError(
            f"compact {'peers6' if ipv6 else 'peers'} length {len(data)} is not a multiple of {size}"
        )
    return tuple(PeerAddress.from_packed(data[i : i + size]) for i in range(0, len(data), size))


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class AnnounceRequest:
    """What a client tells the tracker (BEP 3 names; BEP 7, 15, 23 additions).

    Attributes:
        info_hash: 20 bytes.
        peer_id: 20 bytes.
        port: the client's listening port.
        uploaded, downloaded, left: byte counts since ``started``; ``left`` is 0 for a seed.
        event: started / completed / stopped / none.
        compact: the client accepts the BEP 23 compact form (HTTP only).
        no_peer_id: the client does not want peer ids in the dict form (HTTP only).
        ip: the ``ip`` the client claims (HTTP text, or the BEP 15 IPv4 field); ``None``
            means "use the address the request came from".
        ipv6: the BEP 7 ``ipv6`` parameter (HTTP only).
        ipv4: the BEP 7 ``ipv4`` parameter (HTTP only): the client's IPv4 address, for an
            announce that reaches the tracker over IPv6.
        numwant: how many peers the client wants; ``None`` means the tracker's default.
        key: a 32-bit value that lets the tracker recognise the client after its IP
            changes. HTTP keys are hex (as libtorrent and Transmission send them); any
            other text is reduced to 32 bits with CRC-32.
        tracker_id: the ``tracker id`` from an earlier response (HTTP only).
    """

    info_hash: InfoHash
    peer_id: PeerId
    port: int
    uploaded: int = 0
    downloaded: int = 0
    left: int = 0
    event: AnnounceEvent = AnnounceEvent.NONE
    compact: bool = True
    no_peer_id: bool = False
    ip: str | None = None
    ipv6: str | None = None
    numwant: int | None = None
    key: int | None = None
    tracker_id: bytes | None = None
    ipv4: str | None = None

    @property
    def is_seed(self) -> bool:
        return self.left == 0


def _check_request(req: AnnounceRequest) -> None:
    if len(req.info_hash) != 20:
        raise LocalProtocolError(f"info_hash must be 20 bytes, got {len(req.info_hash)}")
    if len(req.peer_id) != 20:
        raise LocalProtocolError(f"peer_id must be 20 bytes, got {len(req.peer_id)}")
    if not 0 <= req.port <= 0xFFFF:
        raise LocalProtocolError(f"port out of range: {req.port}")
    for name in ("uploaded", "downloaded", "left"):
        value = getattr(req, name)
        if not 0 <= value <= _INT64_MAX:
            raise LocalProtocolError(f"{name} out of range: {value}")
    if req.numwant is not None and not 0 <= req.numwant <= 0x7FFFFFFF:
        raise LocalProtocolError(f"numwant out of range: {req.numwant}")
    if req.key is not None and not 0 <= req.key <= 0xFFFFFFFF:
        raise LocalProtocolError(f"key must fit in 32 bits: {req.key}")


def _q(value: bytes | str) -> str:
    """Percent-encode every byte except RFC 3986 unreserved characters (as libtorrent does)."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    return quote_from_bytes(value, safe="")


def build_announce_query(req: AnnounceRequest) -> str:
    """The query string (without ``?``) for an HTTP announce.

    Raises:
        LocalProtocolError: a field is out of range (e.g. an info hash that is not 20 bytes).
    """
    _check_request(req)
    parts = [
        f"info_hash={_q(req.info_hash)}",
        f"peer_id={_q(req.peer_id)}",
        f"port={req.port}",
        f"uploaded={req.uploaded}",
        f"downloaded={req.downloaded}",
        f"left={req.left}",
        f"compact={1 if req.compact else 0}",
    ]
    if req.no_peer_id:
        parts.append("no_peer_id=1")
    if req.event is not AnnounceEvent.NONE:
        parts.append(f"event={req.event.http_name}")
    if req.ip is not None:
        parts.append(f"ip={_q(req.ip)}")
    if req.ipv6 is not None:
        parts.append(f"ipv6={_q(req.ipv6)}")
    if req.ipv4 is not None:
        parts.append(f"ipv4={_q(req.ipv4)}")
    if req.numwant is not None:
        parts.append(f"numwant={req.numwant}")
    if req.key is not None:
        parts.append(f"key={req.key:08X}")
    if req.tracker_id is not None:
        parts.append(f"trackerid={_q(req.tracker_id)}")
    return "&".join(parts)


def announce_url(base: str, req: AnnounceRequest) -> str:
    """``base`` (a tracker's announce URL, which may already hold a query) plus ``req``."""
    sep = "&" if "?" in base else "?"
    if base.endswith(("?", "&")):
        sep = ""
    return base + sep + build_announce_query(req)


def build_scrape_query(info_hashes: Sequence[bytes]) -> str:
    """The query string for a BEP 48 scrape of ``info_hashes`` (empty: a full scrape).

    Raises:
        LocalProtocolError: a hash is not 20 bytes.
    """
    for ih in info_hashes:
        if len(ih) != 20:
            raise LocalProtocolError(f"info_hash must be 20 bytes, got {len(ih)}")
    return "&".join(f"info_hash={_q(ih)}" for ih in info_hashes)


def scrape_url(announce: str) -> str | None:
    """The BEP 48 scrape URL for an announce URL, or ``None`` when it has none.

    The convention: the last path segment must start with ``announce``, which is
    replaced by ``scrape``.
    """
    parts = urlsplit(announce)
    head, _, last = parts.path.rpartition("/")
    if not last.startswith("announce"):
        return None
    path = f"{head}/scrape{last[len('announce') :]}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def parse_query(query: str | bytes) -> list[tuple[bytes, bytes]]:
    """Split a raw (still percent-encoded) query string into decoded byte pairs.

    Use this instead of a web framework's decoded query: those decode values as UTF-8
    text, which mangles binary ``info_hash`` and ``peer_id`` values. ``+`` means a
    space, as in every form-encoded query.

    Raises:
        RemoteProtocolError: the query is longer than :data:`MAX_QUERY_LENGTH`.
    """
    if isinstance(query, str):
        query = query.encode("utf-8", "surrogateescape")
    if len(query) > MAX_QUERY_LENGTH:
        raise RemoteProtocolError(f"query string longer than {MAX_QUERY_LENGTH} bytes")
    out: list[tuple[bytes, bytes]] = []
    for part in query.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        if b"+" in value:
            value = value.replace(b"+", b" ")
        if b"%" in value:
            value = unquote_to_bytes(value)
        if b"%" in name or b"+" in name:
            name = unquote_to_bytes(name.replace(b"+", b" "))
        out.append((name, value))
    return out


def _int(params: dict[bytes, bytes], name: bytes, default: int | None, hi: int) -> int:
    raw = params.get(name)
    if raw is None:
        if default is None:
            raise RemoteProtocolError(f"missing {name.decode()}")
        return default
    if not raw.isdigit() or len(raw) > 20:
        raise RemoteProtocolError(f"bad {name.decode()}: not a non-negative integer")
    value = int(raw)
    if value > hi:
        raise RemoteProtocolError(f"bad {name.decode()}: out of range")
    return value


def _text(raw: bytes | None, name: str) -> str | None:
    if raw is None or raw == b"":
        return None
    if len(raw) > _MAX_TEXT:
        raise RemoteProtocolError(f"bad {name}: too long")
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise RemoteProtocolError(f"bad {name}: not ASCII text") from None


def _key(raw: bytes | None) -> int | None:
    if raw is None or raw == b"":
        return None
    if len(raw) > _MAX_TEXT:
        raise RemoteProtocolError("bad key: too long")
    if len(raw) <= 8:
        try:
            return int(raw, 16)
        except ValueError:
            pass
    return zlib.crc32(raw)


def parse_announce_query(query: str | bytes) -> AnnounceRequest:
    """Parse the raw query string of an HTTP announce (server side).

    ``info_hash``, ``peer_id``, ``port`` and ``left`` are required; ``uploaded`` and
    ``downloaded`` default to 0. A negative or empty ``numwant`` means the default.
    When a parameter repeats, the last one wins.

    Raises:
        RemoteProtocolError: a parameter is missing or malformed; the message names it
            and is meant to go back to the client as the ``failure reason``.
    """
    params = dict(parse_query(query))
    info_hash = params.get(b"info_hash")
    if info_hash is None:
        raise RemoteProtocolError("missing info_hash")
    if len(info_hash) != 20:
        raise RemoteProtocolError(f"info_hash is not 20 bytes (got {len(info_hash)})")
    peer_id = params.get(b"peer_id")
    if peer_id is None:
        raise RemoteProtocolError("missing peer_id")
    if len(peer_id) != 20:
        raise RemoteProtocolError(f"peer_id is not 20 bytes (got {len(peer_id)})")
    raw_port = params.get(b"port")
    if raw_port is None:
        raise RemoteProtocolError("missing port")
    if not raw_port.isdigit() or len(raw_port) > 5 or not 0 < int(raw_port) <= 0xFFFF:
        raise RemoteProtocolError("bad port")
    port = int(raw_port)
    uploaded = _int(params, b"uploaded", 0, _INT64_MAX)
    downloaded = _int(params, b"downloaded", 0, _INT64_MAX)
    left = _int(params, b"left", None, _INT64_MAX)
    raw_event = params.get(b"event", b"")
    event = _HTTP_EVENTS.get(raw_event)
    if event is None:
        raise RemoteProtocolError("bad event: expected started, completed, stopped or empty")
    numwant: int | None = None
    raw_numwant = params.get(b"numwant")
    if raw_numwant:
        if raw_numwant.startswith(b"-") and raw_numwant[1:].isdigit():
            numwant = None
        elif raw_numwant.isdigit() and len(raw_numwant) <= 10:
            numwant = min(int(raw_numwant), 0x7FFFFFFF)
        else:
            raise RemoteProtocolError("bad numwant: not an integer")
    tracker_id = params.get(b"trackerid")
    if tracker_id is not None and len(tracker_id) > _MAX_TEXT:
        raise RemoteProtocolError("bad trackerid: too long")
    return AnnounceRequest(
        info_hash=InfoHash(info_hash),
        peer_id=PeerId(peer_id),
        port=port,
        uploaded=uploaded,
        downloaded=downloaded,
        left=left,
        event=event,
        compact=params.get(b"compact", b"1") != b"0",
        no_peer_id=params.get(b"no_peer_id", b"0") not in (b"0", b""),
        ip=_text(params.get(b"ip"), "ip"),
        ipv6=_text(params.get(b"ipv6"), "ipv6"),
        ipv4=_text(params.get(b"ipv4"), "ipv4"),
        numwant=numwant,
        key=_key(params.get(b"key")),
        tracker_id=tracker_id or None,
    )


def parse_scrape_query(query: str | bytes) -> tuple[InfoHash, ...]:
    """The ``info_hash`` values of a BEP 48 scrape query, in order, duplicates dropped.

    An empty tuple asks for a full scrape.

    Raises:
        RemoteProtocolError: a hash is not 20 bytes or there are more than
            :data:`MAX_UDP_SCRAPE_HASHES`.
    """
    out: list[InfoHash] = []
    seen: set[bytes] = set()
    for name, value in parse_query(query):
        if name != b"info_hash":
            continue
        if len(value) != 20:
            raise RemoteProtocolError(f"info_hash is not 20 bytes (got {len(value)})")
        if value not in seen:
            seen.add(value)
            out.append(InfoHash(value))
    if len(out) > MAX_UDP_SCRAPE_HASHES:
        raise RemoteProtocolError(f"too many info_hash values (at most {MAX_UDP_SCRAPE_HASHES})")
    return tuple(out)


# --------------------------------------------------------------------------- responses


@dataclass(frozen=True, slots=True)
class AnnounceResponse:
    """What the tracker answers to an announce.

    Attributes:
        interval: seconds the client should wait before the next regular announce.
        min_interval: the tracker's lower bound on re-announces, if it sent one.
        complete: seeds in the swarm (``None`` if not sent).
        incomplete: leechers in the swarm (``None`` if not sent).
        downloaded: times the torrent was completed (``None`` if not sent).
        peers: IPv4 and IPv6 peers together (``peers`` and ``peers6`` merged).
        external_ip: BEP 24: the address the tracker saw the request come from.
        tracker_id: to be echoed back as ``trackerid``.
        warning_message: a non-fatal message from the tracker.
    """

    interval: int
    peers: tuple[PeerAddress, ...] = ()
    min_interval: int | None = None
    complete: int | None = None
    incomplete: int | None = None
    downloaded: int | None = None
    external_ip: str | None = None
    tracker_id: bytes | None = None
    warning_message: str | None = None


@dataclass(frozen=True, slots=True)
class ScrapeStats:
    """One torrent's counts in a scrape (BEP 48 names)."""

    complete: int = 0
    downloaded: int = 0
    incomplete: int = 0


@dataclass(frozen=True, slots=True)
class ScrapeResponse:
    """A scrape answer: info hash → counts."""

    files: Mapping[InfoHash, ScrapeStats] = field(default_factory=dict)


def encode_failure(reason: str) -> bytes:
    """A bencoded ``failure reason`` response (sent with HTTP status 200)."""
    raw = reason.encode("utf-8", "replace")
    return b"d14:failure reason%d:%se" % (len(raw), raw)


def encode_compact_announce(
    *,
    interval: int,
    min_interval: int | None,
    complete: int,
    incomplete: int,
    downloaded: int,
    peers: bytes,
    peers6: bytes = b"",
    external_ip: bytes | None = None,
    tracker_id: bytes | None = None,
) -> bytes:
    """The fast path for a compact response: already-packed peer strings in, bytes out.

    ``peers`` holds 6-byte and ``peers6`` 18-byte entries; ``external_ip`` is 4 or 16
    packed bytes. Keys are written in the sorted order bencoding requires.
    """
    out = [b"d8:completei%de10:downloadedi%de" % (complete, downloaded)]
    if external_ip is not None:
        out.append(b"11:external ip%d:%s" % (len(external_ip), external_ip))
    out.append(b"10:incompletei%de8:intervali%de" % (incomplete, interval))
    if min_interval is not None:
        out.append(b"12:min intervali%de" % min_interval)
    out.append(b"5:peers%d:%s" % (len(peers), peers))
    if peers6:
        out.append(b"6:peers6%d:%s" % (len(peers6), peers6))
    if tracker_id is not None:
        out.append(b"10:tracker id%d:%s" % (len(tracker_id), tracker_id))
    out.append(b"e")
    return b"".join(out)


def encode_announce_response(
    resp: AnnounceResponse, *, compact: bool = True, no_peer_id: bool = False
) -> bytes:
    """Bencode ``resp``: compact ``peers``/``peers6`` or the dict list when not ``compact``.

    Raises:
        LocalProtocolError: a peer address cannot be packed in the compact form.
    """
    d: dict[bytes, Any] = {b"interval": resp.interval}
    if resp.min_interval is not None:
        d[b"min interval"] = resp.min_interval
    if resp.complete is not None:
        d[b"complete"] = resp.complete
    if resp.incomplete is not None:
        d[b"incomplete"] = resp.incomplete
    if resp.downloaded is not None:
        d[b"downloaded"] = resp.downloaded
    if compact:
        v4, v6 = encode_compact_peers(resp.peers)
        d[b"peers"] = v4
        if v6:
            d[b"peers6"] = v6
    else:
        items = []
        for peer in resp.peers:
            item: dict[bytes, Any] = {b"ip": peer.ip, b"port": peer.port}
            if peer.peer_id is not None and not no_peer_id:
                item[b"peer id"] = peer.peer_id
            items.append(item)
        d[b"peers"] = items
    if resp.external_ip is not None:
        d[b"external ip"] = pack_ip(resp.external_ip)
    if resp.tracker_id is not None:
        d[b"tracker id"] = resp.tracker_id
    if resp.warning_message is not None:
        d[b"warning message"] = resp.warning_message
    return bencoding.encode(d)


def _decode_dict(data: bytes, what: str) -> dict[bytes, Any]:
    try:
        value = bencoding.decode(data)
    except BencodeError as exc:
        raise RemoteProtocolError(f"{what} is not bencoded: {exc}") from None
    if not isinstance(value, dict):
        raise RemoteProtocolError(f"{what} is not a bencoded dictionary")
    failure = value.get(b"failure reason")
    if failure is not None:
        if isinstance(failure, bytes):
            raise TrackerError(failure.decode("utf-8", "replace"))
        raise TrackerError(f"tracker failure (unreadable reason {failure!r:.80})")
    return value


def _opt_int(d: dict[bytes, Any], key: bytes) -> int | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or value < 0:
        raise RemoteProtocolError(f"{key.decode()} is not a non-negative integer")
    return value


def _opt_text(d: dict[bytes, Any], key: bytes) -> str | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, bytes):
        raise RemoteProtocolError(f"{key.decode()} is not a string")
    return value.decode("utf-8", "replace")


def _dict_peers(items: list[Any]) -> list[PeerAddress]:
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise RemoteProtocolError("peers list entry is not a dictionary")
        ip, port, pid = item.get(b"ip"), item.get(b"port"), item.get(b"peer id")
        if not isinstance(ip, bytes) or not ip:
            raise RemoteProtocolError("peers list entry has no ip")
        if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
            raise RemoteProtocolError("peers list entry has a bad port")
        if pid is not None and not isinstance(pid, bytes):
            raise RemoteProtocolError("peers list entry has a bad peer id")
        try:
            text = ip.decode("ascii")
        except UnicodeDecodeError:
            raise RemoteProtocolError("peers list entry has a non-ASCII ip") from None
        out.append(PeerAddress(text, port, pid))
    return out


def decode_announce_response(data: bytes) -> AnnounceResponse:
    """Parse a tracker's HTTP announce response (client side).

    Accepts compact and dict-list ``peers`` and BEP 7 ``peers6``.

    Raises:
        TrackerError: the tracker sent a ``failure reason``.
        RemoteProtocolError: the response is malformed.
    """
    d = _decode_dict(data, "announce response")
    interval = _opt_int(d, b"interval")
    if interval is None:
        raise RemoteProtocolError("announce response has no interval")
    peers: list[PeerAddress] = []
    raw = d.get(b"peers", b"")
    if isinstance(raw, bytes):
        peers.extend(decode_compact_peers(raw))
    elif isinstance(raw, list):
        peers.extend(_dict_peers(raw))
    else:
        raise RemoteProtocolError("peers is neither a string nor a list")
    raw6 = d.get(b"peers6", b"")
    if not isinstance(raw6, bytes):
        raise RemoteProtocolError("peers6 is not a string")
    peers.extend(decode_compact_peers(raw6, ipv6=True))
    ext = d.get(b"external ip")
    external_ip: str | None = None
    if ext is not None:
        if not isinstance(ext, bytes) or len(ext) not in (4, 16):
            raise RemoteProtocolError("external ip is not 4 or 16 bytes")
        external_ip = unpack_ip(ext)
    tid = d.get(b"tracker id")
    if tid is not None and not isinstance(tid, bytes):
        raise RemoteProtocolError("tracker id is not a string")
    return AnnounceResponse(
        interval=interval,
        peers=tuple(peers),
        min_interval=_opt_int(d, b"min interval"),
        complete=_opt_int(d, b"complete"),
        incomplete=_opt_int(d, b"incomplete"),
        downloaded=_opt_int(d, b"downloaded"),
        external_ip=external_ip,
        tracker_id=tid,
        warning_message=_opt_text(d, b"warning message"),
    )


def encode_scrape_response(resp: ScrapeResponse) -> bytes:
    """Bencode a BEP 48 scrape response."""
    files = {
        bytes(ih): {b"complete": s.complete, b"downloaded": s.downloaded, b"incomplete": s.incomplete}
        for ih, s in resp.files.items()
    }
    return bencoding.encode({b"files": files})


def decode_scrape_response(data: bytes) -> ScrapeResponse:
    """Parse a BEP 48 scrape response (client side).

    Raises:
        TrackerError: the tracker sent a ``failure reason``.
        RemoteProtocolError: the response is malformed.
    """
    d = _decode_dict(data, "scrape response")
    files = d.get(b"files", {})
    if not isinstance(files, dict):
        raise RemoteProtocolError("scrape files is not a dictionary")
    out: dict[InfoHash, ScrapeStats] = {}
    for ih, stats in files.items():
        if len(ih) != 20:
            raise RemoteProtocolError(f"scrape files key is not 20 bytes (got {len(ih)})")
        if not isinstance(stats, dict):
            raise RemoteProtocolError("scrape entry is not a dictionary")
        out[InfoHash(ih)] = ScrapeStats(
            complete=_opt_int(stats, b"complete") or 0,
            downloaded=_opt_int(stats, b"downloaded") or 0,
            incomplete=_opt_int(stats, b"incomplete") or 0,
        )
    return ScrapeResponse(out)
