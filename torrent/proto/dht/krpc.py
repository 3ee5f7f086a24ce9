"""KRPC, the DHT's message format (BEP 5), with BEP 32 (IPv6) and BEP 42 (``ip``) fields.

One bencoded dictionary per UDP datagram: a query (``y=q``: ``ping``, ``find_node``,
``get_peers``, ``announce_peer``), a response (``y=r``) or an error (``y=e``).
:func:`decode` turns a datagram into one of the frozen message classes below and
:func:`encode` does the reverse. Compact node info is 26 bytes (IPv4) or 38 bytes (IPv6,
``nodes6``); compact peer info is 6 or 18 bytes.

Rules the decoder holds to, whatever the bytes:

* It raises nothing but :class:`KrpcDecodeError` (a :class:`RemoteProtocolError`), whose
  ``reason`` is a short fixed word that callers count by, and whose ``tid``/``is_query``
  say whether a KRPC error reply can be sent (only ever to a query: answering a bad
  response could start a loop between two nodes).
* Every size is bounded: the datagram, the transaction id, the token, each list.

Left out: BEP 44 (``get``/``put``), BEP 51 (``sample_infohashes``), BEP 43 read-only
flags are ignored on input and never sent.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from torrent.errors import BencodeError, RemoteProtocolError
from torrent.proto import bencoding

#: A UDP endpoint as asyncio gives it: (host text, port).
Address: TypeAlias = tuple[str, int]

ID_LENGTH: Final = 20  # BEP 5: node ids and info hashes are 160 bits
NODE4_LENGTH: Final = 26  # BEP 5: 20-byte id + 4-byte IPv4 + 2-byte port
NODE6_LENGTH: Final = 38  # BEP 32: 20-byte id + 16-byte IPv6 + 2-byte port
PEER4_LENGTH: Final = 6
PEER6_LENGTH: Final = 18

#: Largest datagram we decode. Honest KRPC messages stay well under 1.5 KB; a get_peers
#: response with ``MAX_VALUES`` IPv6 peers and both node lists is about 2 KB.
MAX_PACKET_SIZE: Final = 4096
MAX_TID_LENGTH: Final = 16  # honest clients use 2 to 4 bytes
MAX_TOKEN_LENGTH: Final = 64  # honest clients use 4 to 20 bytes
MAX_NODES: Final = 32  # a response carries k = 8 per family; some clients send 16
MAX_VALUES: Final = 200
MAX_WANT: Final = 4
MAX_ERROR_MESSAGE: Final = 256

# BEP 5 error codes
ERROR_GENERIC: Final = 201
ERROR_SERVER: Final = 202
ERROR_PROTOCOL: Final = 203
ERROR_METHOD_UNKNOWN: Final = 204

WANT_V4: Final = b"n4"  # BEP 32
WANT_V6: Final = b"n6"


class KrpcDecodeError(RemoteProtocolError):
    """A datagram that is not a KRPC message we accept.

    Attributes:
        reason: a short fixed word for counters (``"bencode"``, ``"bad_id"``, ...).
        tid: the transaction id, when one could be read (a reply needs it).
        is_query: the datagram was a query (``y=q``): only those get an error reply.
        code: the BEP 5 error code to reply with (203, or 204 for an unknown method).
    """

    def __init__(
        self, reason: str, *, tid: bytes | None = None, is_query: bool = False, code: int = ERROR_PROTOCOL
    ) -> None:
        self.reason = reason
        self.tid = tid
        self.is_query = is_query
        self.code = code
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A DHT node: its 20-byte id and UDP endpoint."""

    id: bytes
    host: str
    port: int

    @property
    def address(self) -> Address:
        return (self.host, self.port)


@dataclass(frozen=True, slots=True)
class Ping:
    tid: bytes
    sender_id: bytes


@dataclass(frozen=True, slots=True)
class FindNode:
    tid: bytes
    sender_id: bytes
    target: bytes
    want: tuple[bytes, ...] = ()  # BEP 32: b"n4" and/or b"n6"; empty = the sender's family


@dataclass(frozen=True, slots=True)
class GetPeers:
    tid: bytes
    sender_id: bytes
    info_hash: bytes
    want: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class AnnouncePeer:
    tid: bytes
    sender_id: bytes
    info_hash: bytes
    port: int
    token: bytes
    implied_port: bool = False  # BEP 5: use the datagram's source port instead of ``port``


@dataclass(frozen=True, slots=True)
class Response:
    """Any ``y=r`` message: which fields matter depends on the query it answers."""

    tid: bytes
    sender_id: bytes
    nodes: tuple[NodeInfo, ...] = ()
    nodes6: tuple[NodeInfo, ...] = ()
    values: tuple[Address, ...] = ()
    token: bytes | None = None
    ip: Address | None = None  # BEP 42: the requester's address as the responder saw it


@dataclass(frozen=True, slots=True)
class Error:
    tid: bytes
    code: int
    message: str


Query: TypeAlias = Ping | FindNode | GetPeers | AnnouncePeer
Message: TypeAlias = Query | Response | Error

_METHODS: Final = {
    Ping: b"ping",
    FindNode: b"find_node",
    GetPeers: b"get_peers",
    AnnouncePeer: b"announce_peer",
}


# --- compact formats -------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def pack_host(host: str) -> bytes:
    """The 4 or 16 bytes of an IP address. Cached: answers name the same nodes over and
    over, and parsing the text is most of the cost of encoding an answer.

    Raises:
        ValueError: ``host`` is not an IP address.
    """
    return ipaddress.ip_address(host).packed


def pack_address(host: str, port: int) -> bytes:
    """Compact peer info: 4 or 16 address bytes then the port, big-endian (BEP 5, BEP 32)."""
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {port}")
    return pack_host(host) + port.to_bytes(2, "big")


def unpack_address(raw: bytes) -> Address:
    """The inverse of :func:`pack_address` for 6- or 18-byte strings.

    Raises:
        KrpcDecodeError: wrong length or port 0.
    """
    if len(raw) == PEER4_LENGTH:
        host = str(ipaddress.IPv4Address(raw[:4]))
    elif len(raw) == PEER6_LENGTH:
        host = str(ipaddress.IPv6Address(raw[:16]))
    else:
        raise KrpcDecodeError("bad_address")
    port = int.from_bytes(raw[-2:], "big")
    if port == 0:
        raise KrpcDecodeError("bad_port")
    return host, port


def encode_nodes(nodes: list[NodeInfo] | tuple[NodeInfo, ...]) -> bytes:
    """Compact node info of every node, concatenated (all of one address family)."""
    return b"".join(n.id + pack_address(n.host, n.port) for n in nodes)


def decode_nodes(raw: bytes, *, v6: bool = False) -> tuple[NodeInfo, ...]:
    """Split a ``nodes`` (26-byte entries) or ``nodes6`` (38-byte entries) string.

    Entries whose port is 0 are skipped (unreachable, never worth a query).

    Raises:
        KrpcDecodeError: the length is not a whole number of entries, or too many.
    """
    size = NODE6_LENGTH if v6 else NODE4_LENGTH
    if len(raw) % size:
        raise KrpcDecodeError("nodes6_length" if v6 else "nodes_length")
    if len(raw) // size > MAX_NODES:
        raise KrpcDecodeError("too_many_nodes")
    out = []
    for at in range(0, len(raw), size):
        port = int.from_bytes(raw[at + size - 2 : at + size], "big")
        if port == 0:
            continue
        addr = raw[at + ID_LENGTH : at + size - 2]
        host = str(ipaddress.IPv6Address(addr)) if v6 else str(ipaddress.IPv4Address(addr))
        out.append(NodeInfo(raw[at : at + ID_LENGTH], host, port))
    return tuple(out)


# --- encoding ---------------------------------------------------------------------------


def encode(message: Message) -> bytes:
    """Bencode one KRPC message.

    Raises:
        ValueError: a field is out of range (a bug on our side: our own messages are
            built from validated values).
    """
    out: dict[bytes, Any] = {b"t": message.tid}
    if isinstance(message, Response):
        r: dict[bytes, Any] = {b"id": message.sender_id}
        if message.nodes:
            r[b"nodes"] = encode_nodes(message.nodes)
        if message.nodes6:
            r[b"nodes6"] = encode_nodes(message.nodes6)
        if message.values:
            r[b"values"] = [pack_address(h, p) for h, p in message.values]
        if message.token is not None:
            r[b"token"] = message.token
        out[b"y"] = b"r"
        out[b"r"] = r
        if message.ip is not None:
            out[b"ip"] = pack_address(*message.ip)
    elif isinstance(message, Error):
        out[b"y"] = b"e"
        out[b"e"] = [message.code, message.message.encode("utf-8")]
    else:
        a: dict[bytes, Any] = {b"id": message.sender_id}
        if isinstance(message, FindNode):
            a[b"target"] = message.target
        elif isinstance(message, (GetPeers, AnnouncePeer)):
            a[b"info_hash"] = message.info_hash
        if isinstance(message, (FindNode, GetPeers)) and message.want:
            a[b"want"] = list(message.want)
        if isinstance(message, AnnouncePeer):
            if not 0 < message.port < 65536 and not message.implied_port:
                raise ValueError(f"port out of range: {message.port}")
            a[b"port"] = message.port
            a[b"token"] = message.token
            if message.implied_port:
                a[b"implied_port"] = 1
        out[b"y"] = b"q"
        out[b"q"] = _METHODS[type(message)]
        out[b"a"] = a
    return bencoding.encode(out)


# --- decoding ---------------------------------------------------------------------------


def decode(data: bytes) -> Message:
    """Decode one datagram.

    Raises:
        KrpcDecodeError: the datagram is not a well-formed KRPC message within our bounds.
    """
    if len(data) > MAX_PACKET_SIZE:
        raise KrpcDecodeError("oversized")
    if not data.startswith(b"d"):
        raise KrpcDecodeError("not_a_dict")
    try:
        top = bencoding.decode(data)
    except BencodeError:
        raise KrpcDecodeError("bencode") from None
    if not isinstance(top, dict):
        raise KrpcDecodeError("not_a_dict")
    tid = top.get(b"t")
    if not isinstance(tid, bytes) or len(tid) > MAX_TID_LENGTH:
        raise KrpcDecodeError("bad_tid")
    kind = top.get(b"y")
    if kind == b"q":
        return _decode_query(top, tid)
    if kind == b"r":
        return _decode_response(top, tid)
    if kind == b"e":
        return _decode_error(top, tid)
    raise KrpcDecodeError("bad_type", tid=tid)


def _id(value: object, reason: str, tid: bytes, *, is_query: bool) -> bytes:
    if not isinstance(value, bytes) or len(value) != ID_LENGTH:
        raise KrpcDecodeError(reason, tid=tid, is_query=is_query)
    return value


def _want(args: dict[bytes, Any], tid: bytes) -> tuple[bytes, ...]:
    want = args.get(b"want", [])
    if not isinstance(want, list) or len(want) > MAX_WANT:
        raise KrpcDecodeError("bad_want", tid=tid, is_query=True)
    if not all(isinstance(w, bytes) and len(w) <= 4 for w in want):
        raise KrpcDecodeError("bad_want", tid=tid, is_query=True)
    # unknown families are ignored, as BEP 32 asks
    return tuple(w for w in (WANT_V4, WANT_V6) if w in want)


def _decode_query(top: dict[bytes, Any], tid: bytes) -> Query:
    method = top.get(b"q")
    args = top.get(b"a")
    if not isinstance(method, bytes):
        raise KrpcDecodeError("bad_method", tid=tid, is_query=True)
    if not isinstance(args, dict):
        raise KrpcDecodeError("bad_args", tid=tid, is_query=True)
    sender = _id(args.get(b"id"), "bad_id", tid, is_query=True)
    if method == b"ping":
        return Ping(tid, sender)
    if method == b"find_node":
        target = _id(args.get(b"target"), "bad_target", tid, is_query=True)
        return FindNode(tid, sender, target, _want(args, tid))
    if method == b"get_peers":
        info_hash = _id(args.get(b"info_hash"), "bad_info_hash", tid, is_query=True)
        return GetPeers(tid, sender, info_hash, _want(args, tid))
    if method == b"announce_peer":
        info_hash = _id(args.get(b"info_hash"), "bad_info_hash", tid, is_query=True)
        token = args.get(b"token")
        if not isinstance(token, bytes) or len(token) > MAX_TOKEN_LENGTH:
            raise KrpcDecodeError("bad_token_field", tid=tid, is_query=True)
        implied = args.get(b"implied_port", 0)
        if type(implied) is not int:
            raise KrpcDecodeError("bad_implied_port", tid=tid, is_query=True)
        port = args.get(b"port", 0)
        if type(port) is not int or not 0 <= port < 65536 or (port == 0 and not implied):
            raise KrpcDecodeError("bad_port", tid=tid, is_query=True)
        return AnnouncePeer(tid, sender, info_hash, port, token, implied_port=bool(implied))
    raise KrpcDecodeError("unknown_method", tid=tid, is_query=True, code=ERROR_METHOD_UNKNOWN)


def _decode_response(top: dict[bytes, Any], tid: bytes) -> Response:
    r = top.get(b"r")
    if not isinstance(r, dict):
        raise KrpcDecodeError("bad_response", tid=tid)
    sender = _id(r.get(b"id"), "bad_id", tid, is_query=False)
    nodes: tuple[NodeInfo, ...] = ()
    nodes6: tuple[NodeInfo, ...] = ()
    if b"nodes" in r:
        if not isinstance(r[b"nodes"], bytes):
            raise KrpcDecodeError("nodes_length", tid=tid)
        nodes = _relabel(lambda: decode_nodes(r[b"nodes"]), tid)
    if b"nodes6" in r:
        if not isinstance(r[b"nodes6"], bytes):
            raise KrpcDecodeError("nodes6_length", tid=tid)
        nodes6 = _relabel(lambda: decode_nodes(r[b"nodes6"], v6=True), tid)
    values: tuple[Address, ...] = ()
    if b"values" in r:
        raw_values = r[b"values"]
        if not isinstance(raw_values, list) or len(raw_values) > MAX_VALUES:
            raise KrpcDecodeError("bad_values", tid=tid)
        out = []
        for v in raw_values:
            if not isinstance(v, bytes):
                raise KrpcDecodeError("bad_values", tid=tid)
            out.append(_relabel(lambda v=v: unpack_address(v), tid))
        values = tuple(out)
    token = r.get(b"token")
    if token is not None and (not isinstance(token, bytes) or len(token) > MAX_TOKEN_LENGTH):
        raise KrpcDecodeError("bad_token_field", tid=tid)
    ip: Address | None = None
    raw_ip = top.get(b"ip")
    if isinstance(raw_ip, bytes) and len(raw_ip) in (PEER4_LENGTH, PEER6_LENGTH):
        # BEP 42 makes this field advisory: a bad one is ignored, not fatal
        ip = unpack_address(raw_ip) if raw_ip[-2:] != b"\x00\x00" else None
    return Response(tid, sender, nodes, nodes6, values, token, ip)


def _relabel(call: Any, tid: bytes) -> Any:
    """Run ``call`` and give a raised decode error this message's transaction id."""
    try:
        return call()
    except KrpcDecodeError as exc:
        raise KrpcDecodeError(exc.reason, tid=tid) from None


def _decode_error(top: dict[bytes, Any], tid: bytes) -> Error:
    e = top.get(b"e")
    if not isinstance(e, list) or len(e) != 2:
        raise KrpcDecodeError("bad_error", tid=tid)
    code, message = e
    if type(code) is not int or not isinstance(message, bytes) or not -(2**31) <= code < 2**31:
        raise KrpcDecodeError("bad_error", tid=tid)
    return Error(tid, code, message[:MAX_ERROR_MESSAGE].decode("utf-8", "replace"))
