"""Sans-IO BEP 15 UDP tracker packets: connect, announce, scrape and error.

Split from :mod:`torrent.proto.tracker_codec`, which holds what HTTP and UDP share (the
announce and scrape values, compact peers): a client whose trackers all speak HTTP, and a
tracker with UDP off, never import this module and its seven message classes (about 4 ms
of a download's start-up). The UDP tracker client imports it when it is made.

Covers connect, announce (IPv4 and IPv6 response forms), scrape (at most
:data:`~torrent.proto.tracker_codec.MAX_UDP_SCRAPE_HASHES` hashes) and error packets,
requests and responses in both directions, and BEP 41's URL data option. Errors as in
:mod:`torrent.proto.tracker_codec`.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass
from typing import TypeAlias, Union

from torrent.errors import LocalProtocolError, RemoteProtocolError
from torrent.proto.tracker_codec import (
    _INT64_MAX,
    MAX_UDP_SCRAPE_HASHES,
    AnnounceEvent,
    AnnounceRequest,
    AnnounceResponse,
    ScrapeStats,
    _check_request,
    decode_compact_peers,
    encode_compact_peers,
    unpack_ip,
)
from torrent.types import InfoHash, PeerId

__all__ = [
    "UDP_ANNOUNCE_SIZE",
    "UDP_PROTOCOL_ID",
    "UdpAction",
    "UdpAnnounceFields",
    "UdpAnnounceRequest",
    "UdpAnnounceResponse",
    "UdpConnectRequest",
    "UdpConnectResponse",
    "UdpError",
    "UdpRequest",
    "UdpResponse",
    "UdpScrapeRequest",
    "UdpScrapeResponse",
    "decode_udp_request",
    "decode_udp_response",
    "encode_udp_request",
    "encode_udp_response",
    "encode_udp_url_data",
    "parse_udp_url_data",
    "unpack_udp_announce",
]

#: The magic constant that opens a BEP 15 connect request.
UDP_PROTOCOL_ID = 0x41727101980


class UdpAction(enum.IntEnum):
    """BEP 15 action numbers."""

    CONNECT = 0
    ANNOUNCE = 1
    SCRAPE = 2
    ERROR = 3


_HEADER = struct.Struct(">QII")  # connection id / protocol id, action, transaction id
_CONNECT_RESPONSE = struct.Struct(">IIQ")
# connection id, action, txid, info hash, peer id, downloaded, left, uploaded, event,
# ip, key, num want, port: 98 bytes
_ANNOUNCE = struct.Struct(">QII20s20sQQQIIIiH")
_ANNOUNCE_RESPONSE = struct.Struct(">IIIII")  # action, txid, interval, leechers, seeders
_ACTION_TXID = struct.Struct(">II")
_SCRAPE_ENTRY = struct.Struct(">III")  # seeders, completed, leechers
#: Longest error message we put in (or accept from) a UDP error packet.
_MAX_UDP_ERROR = 1024


@dataclass(frozen=True, slots=True)
class UdpConnectRequest:
    transaction_id: int


@dataclass(frozen=True, slots=True)
class UdpConnectResponse:
    transaction_id: int
    connection_id: int


@dataclass(frozen=True, slots=True)
class UdpAnnounceRequest:
    """A BEP 15 announce; ``announce.compact``, ``no_peer_id``, ``ipv6`` and
    ``tracker_id`` have no UDP field and are ignored when encoding."""

    connection_id: int
    transaction_id: int
    announce: AnnounceRequest


@dataclass(frozen=True, slots=True)
class UdpScrapeRequest:
    connection_id: int
    transaction_id: int
    info_hashes: tuple[InfoHash, ...]


@dataclass(frozen=True, slots=True)
class UdpAnnounceResponse:
    """A BEP 15 announce answer. Its peers are all IPv4 or all IPv6: the form depends on
    the address family the request arrived over. ``announce.complete`` and
    ``incomplete`` are the seeders and leechers fields."""

    transaction_id: int
    announce: AnnounceResponse


@dataclass(frozen=True, slots=True)
class UdpScrapeResponse:
    """Counts in the order the hashes were asked for."""

    transaction_id: int
    stats: tuple[ScrapeStats, ...]


@dataclass(frozen=True, slots=True)
class UdpError:
    transaction_id: int
    message: str


UdpRequest: TypeAlias = Union[UdpConnectRequest, UdpAnnounceRequest, UdpScrapeRequest]
UdpResponse: TypeAlias = Union[UdpConnectResponse, UdpAnnounceResponse, UdpScrapeResponse, UdpError]


def _u32(name: str, value: int) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise LocalProtocolError(f"{name} must fit in 32 bits: {value}")


def encode_udp_request(packet: UdpRequest) -> bytes:
    """Encode a client → tracker packet.

    Raises:
        LocalProtocolError: a field is out of range, or too many hashes for one scrape.
    """
    _u32("transaction_id", packet.transaction_id)
    if isinstance(packet, UdpConnectRequest):
        return _HEADER.pack(UDP_PROTOCOL_ID, UdpAction.CONNECT, packet.transaction_id)
    if not 0 <= packet.connection_id < 2**64:
        raise LocalProtocolError(f"connection_id must fit in 64 bits: {packet.connection_id}")
    if isinstance(packet, UdpAnnounceRequest):
        req = packet.announce
        _check_request(req)
        ip = 0
        if req.ip is not None:
            try:
                ip = int(ipaddress.IPv4Address(req.ip))
            except ValueError:
                ip = 0  # BEP 15's ip field holds IPv4 only; anything else means "sender"
        return _ANNOUNCE.pack(
            packet.connection_id,
            UdpAction.ANNOUNCE,
            packet.transaction_id,
            req.info_hash,
            req.peer_id,
            req.downloaded,
            req.left,
            req.uploaded,
            int(req.event),
            ip,
            req.key or 0,
            -1 if req.numwant is None else req.numwant,
            req.port,
        )
    if isinstance(packet, UdpScrapeRequest):
        if not 1 <= len(packet.info_hashes) <= MAX_UDP_SCRAPE_HASHES:
            raise LocalProtocolError(f"a UDP scrape carries 1 to {MAX_UDP_SCRAPE_HASHES} hashes")
        for ih in packet.info_hashes:
            if len(ih) != 20:
                raise LocalProtocolError(f"info_hash must be 20 bytes, got {len(ih)}")
        return _HEADER.pack(packet.connection_id, UdpAction.SCRAPE, packet.transaction_id) + b"".join(
            packet.info_hashes
        )
    raise LocalProtocolError(f"not a UDP request: {type(packet).__name__}")


UdpAnnounceFields: TypeAlias = tuple[int, int, bytes, bytes, int, int, int, int, int, int, int, int]


def unpack_udp_announce(data: bytes) -> UdpAnnounceFields:
    """The checked raw fields of a BEP 15 announce, without building objects.

    :func:`decode_udp_request` is built on this; the tracker's UDP hot path calls it
    directly to skip two dataclass constructions per packet.

    Returns:
        ``(connection_id, transaction_id, info_hash, peer_id, downloaded, left,
        uploaded, event, ip, key, numwant, port)``; ``event`` is 0-3, ``ip`` and
        ``key`` are unsigned 32-bit, ``numwant`` is signed (-1 = default).

    Raises:
        RemoteProtocolError: short packet, bad event or byte count out of range.
    """
    if len(data) < _ANNOUNCE.size:
        raise RemoteProtocolError(f"UDP announce shorter than {_ANNOUNCE.size} bytes ({len(data)})")
    conn_id, _, txid, ih, pid, downloaded, left, uploaded, event, ip, key, numwant, port = (
        _ANNOUNCE.unpack_from(data)
    )
    if event > 3:
        raise RemoteProtocolError(f"bad event: {event}")
    if downloaded > _INT64_MAX or left > _INT64_MAX or uploaded > _INT64_MAX:
        raise RemoteProtocolError("byte count out of range")
    return conn_id, txid, ih, pid, downloaded, left, uploaded, event, ip, key, numwant, port


# BEP 41: options after the 98-byte announce
_UDP_OPTION_END, _UDP_OPTION_NOP, _UDP_OPTION_URL_DATA = 0, 1, 2
UDP_ANNOUNCE_SIZE = _ANNOUNCE.size


def parse_udp_url_data(options: bytes) -> bytes:
    """The URL data (BEP 41 option 2, all of them joined) in ``options``.

    ``options`` are the bytes after the 98-byte announce. ``EndOfOptions`` stops the
    scan, ``NOP`` is one byte, every other option is type, length, data (unknown
    types are skipped, as BEP 41 asks).

    Raises:
        RemoteProtocolError: an option runs past the end of the packet.
    """
    out = bytearray()
    i, n = 0, len(options)
    while i < n:
        kind = options[i]
        if kind == _UDP_OPTION_END:
            break
        if kind == _UDP_OPTION_NOP:
            i += 1
            continue
        if i + 1 >= n or i + 2 + options[i + 1] > n:
            raise RemoteProtocolError("BEP 41 option runs past the end of the packet")
        size = options[i + 1]
        if kind == _UDP_OPTION_URL_DATA:
            out += options[i + 2 : i + 2 + size]
        i += 2 + size
    return bytes(out)


def encode_udp_url_data(url_data: bytes) -> bytes:
    """BEP 41 options carrying ``url_data`` (path and query), in 255-byte pieces."""
    out = bytearray()
    for i in range(0, len(url_data), 255):
        piece = url_data[i : i + 255]
        out += bytes([_UDP_OPTION_URL_DATA, len(piece)]) + piece
    return bytes(out + bytes([_UDP_OPTION_END]))


def decode_udp_request(data: bytes) -> UdpRequest:
    """Parse a client → tracker packet (server side).

    The connection id is returned, not checked: that is the server's job.

    Raises:
        RemoteProtocolError: short, unknown action, wrong protocol id, or a bad length.
    """
    if len(data) < 16:
        raise RemoteProtocolError(f"UDP request shorter than 16 bytes ({len(data)})")
    conn_id, action, txid = _HEADER.unpack_from(data)
    if action == UdpAction.CONNECT:
        if conn_id != UDP_PROTOCOL_ID:
            raise RemoteProtocolError("connect request without the BEP 15 protocol id")
        return UdpConnectRequest(txid)
    if action == UdpAction.ANNOUNCE:
        (_, _, ih, pid, downloaded, left, uploaded, event, ip, key, numwant, port) = unpack_udp_announce(data)
        req = AnnounceRequest(
            info_hash=InfoHash(ih),
            peer_id=PeerId(pid),
            port=port,
            uploaded=uploaded,
            downloaded=downloaded,
            left=left,
            event=AnnounceEvent(event),
            ip=unpack_ip(ip.to_bytes(4, "big")) if ip else None,
            numwant=None if numwant < 0 else numwant,
            key=key,
        )
        return UdpAnnounceRequest(conn_id, txid, req)
    if action == UdpAction.SCRAPE:
        body = len(data) - 16
        if body == 0 or body % 20:
            raise RemoteProtocolError("UDP scrape body is not a whole number of 20-byte hashes")
        count = body // 20
        if count > MAX_UDP_SCRAPE_HASHES:
            raise RemoteProtocolError(f"UDP scrape of more than {MAX_UDP_SCRAPE_HASHES} hashes")
        hashes = tuple(InfoHash(bytes(data[16 + 20 * i : 36 + 20 * i])) for i in range(count))
        return UdpScrapeRequest(conn_id, txid, hashes)
    raise RemoteProtocolError(f"unknown UDP action {action}")


def encode_udp_response(packet: UdpResponse, *, ipv6: bool = False) -> bytes:
    """Encode a tracker → client packet. ``ipv6`` picks the 18-byte peer form of an
    announce response (the request arrived over IPv6); peers of the other family are
    left out.

    Raises:
        LocalProtocolError: a field is out of range.
    """
    _u32("transaction_id", packet.transaction_id)
    if isinstance(packet, UdpConnectResponse):
        if not 0 <= packet.connection_id < 2**64:
            raise LocalProtocolError("connection_id must fit in 64 bits")
        return _CONNECT_RESPONSE.pack(UdpAction.CONNECT, packet.transaction_id, packet.connection_id)
    if isinstance(packet, UdpAnnounceResponse):
        a = packet.announce
        for name, value in (
            ("interval", a.interval),
            ("complete", a.complete or 0),
            ("incomplete", a.incomplete or 0),
        ):
            _u32(name, value)
        v4, v6 = encode_compact_peers(a.peers)
        head = _ANNOUNCE_RESPONSE.pack(
            UdpAction.ANNOUNCE, packet.transaction_id, a.interval, a.incomplete or 0, a.complete or 0
        )
        return head + (v6 if ipv6 else v4)
    if isinstance(packet, UdpScrapeResponse):
        for s in packet.stats:
            for value in (s.complete, s.downloaded, s.incomplete):
                _u32("scrape count", value)
        return _ACTION_TXID.pack(UdpAction.SCRAPE, packet.transaction_id) + b"".join(
            _SCRAPE_ENTRY.pack(s.complete, s.downloaded, s.incomplete) for s in packet.stats
        )
    if isinstance(packet, UdpError):
        msg = packet.message.encode("utf-8", "replace")[:_MAX_UDP_ERROR]
        return _ACTION_TXID.pack(UdpAction.ERROR, packet.transaction_id) + msg
    raise LocalProtocolError(f"not a UDP response: {type(packet).__name__}")


def decode_udp_response(data: bytes, *, ipv6: bool = False) -> UdpResponse:
    """Parse a tracker → client packet (client side). ``ipv6``: the request went over
    IPv6, so announce peers are 18-byte entries.

    The caller matches ``transaction_id`` against what it sent.

    Raises:
        RemoteProtocolError: short, unknown action or a bad length.
    """
    if len(data) < 8:
        raise RemoteProtocolError(f"UDP response shorter than 8 bytes ({len(data)})")
    action, txid = _ACTION_TXID.unpack_from(data)
    if action == UdpAction.CONNECT:
        if len(data) < 16:
            raise RemoteProtocolError("UDP connect response shorter than 16 bytes")
        _, _, conn_id = _CONNECT_RESPONSE.unpack_from(data)
        return UdpConnectResponse(txid, conn_id)
    if action == UdpAction.ANNOUNCE:
        if len(data) < 20:
            raise RemoteProtocolError("UDP announce response shorter than 20 bytes")
        _, _, interval, leechers, seeders = _ANNOUNCE_RESPONSE.unpack_from(data)
        peers = decode_compact_peers(bytes(data[20:]), ipv6=ipv6)
        return UdpAnnounceResponse(
            txid, AnnounceResponse(interval=interval, peers=peers, complete=seeders, incomplete=leechers)
        )
    if action == UdpAction.SCRAPE:
        body = len(data) - 8
        if body % 12:
            raise RemoteProtocolError("UDP scrape response is not a whole number of 12-byte entries")
        stats = tuple(ScrapeStats(*_SCRAPE_ENTRY.unpack_from(data, 8 + 12 * i)) for i in range(body // 12))
        return UdpScrapeResponse(txid, stats)
    if action == UdpAction.ERROR:
        return UdpError(txid, bytes(data[8 : 8 + _MAX_UDP_ERROR]).decode("utf-8", "replace"))
    raise RemoteProtocolError(f"unknown UDP action {action}")
