"""The peer wire's events: one frozen, slotted class per message, and the message ids.

Events are what :class:`~torrent.proto.wire.connection.PeerProtocol` returns from
``next_event()`` and takes in ``send()``; they are named after BEP 3's messages (``Block`` is the
spec's ``piece``), with BEP 6's and BEP 10's added. :data:`Event` is their union (match on it and
end with ``assert_never``). Nothing here parses or encodes: see :mod:`.codec`.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import FrozenInstanceError
from typing import Any, Final, Union

from torrent.proto.pieceset import PieceSet

__all__ = [
    "DHT_BIT",
    "EXTENDED_HANDSHAKE_ID",
    "EXTENSION_PROTOCOL_BIT",
    "FAST_EXTENSION_BIT",
    "NEED_DATA",
    "V2_UPGRADE_BIT",
    "AllowedFast",
    "Bitfield",
    "Block",
    "Cancel",
    "Choke",
    "ConnectionClosed",
    "Event",
    "ExtendedMessage",
    "ExtensionHandshake",
    "Handshake",
    "HashReject",
    "HashRequest",
    "Hashes",
    "Have",
    "HaveAll",
    "HaveNone",
    "Interested",
    "KeepAlive",
    "MessageId",
    "NeedData",
    "NotInterested",
    "Port",
    "RejectRequest",
    "Request",
    "SuggestPiece",
    "Unchoke",
    "UnrequestedBlock",
]

# Reserved bits of the handshake as (byte index, mask) into its 8 reserved bytes.
EXTENSION_PROTOCOL_BIT: Final = (5, 0x10)  # BEP 10: reserved[5] & 0x10
FAST_EXTENSION_BIT: Final = (7, 0x04)  # BEP 6: reserved[7] & 0x04
DHT_BIT: Final = (7, 0x01)  # BEP 5: reserved[7] & 0x01
#: BEP 52: on a hybrid torrent's v1 connection, the sender also speaks v2 and takes an
#: answer naming the truncated v2 hash as an upgrade of the connection to it.
V2_UPGRADE_BIT: Final = (7, 0x10)  # BEP 52: reserved[7] & 0x10


class MessageId(enum.IntEnum):
    """The id byte after the length prefix of every message except keep-alive."""

    # BEP 3
    CHOKE = 0
    UNCHOKE = 1
    INTERESTED = 2
    NOT_INTERESTED = 3
    HAVE = 4
    BITFIELD = 5
    REQUEST = 6
    PIECE = 7
    CANCEL = 8
    # BEP 5
    PORT = 9
    # BEP 6
    SUGGEST_PIECE = 0x0D
    HAVE_ALL = 0x0E
    HAVE_NONE = 0x0F
    REJECT_REQUEST = 0x10
    ALLOWED_FAST = 0x11
    # BEP 10
    EXTENDED = 20
    # BEP 52
    HASH_REQUEST = 21
    HASHES = 22
    HASH_REJECT = 23


#: Extended message id 0 is the extension handshake (BEP 10).
EXTENDED_HANDSHAKE_ID: Final = 0


_set = object.__setattr__


class _Event:
    """What ``@dataclass(frozen=True, slots=True)`` gives an event, written out once.

    Creating a dataclass compiles its methods (some 0.4 ms each, 10 ms for these events
    at every start of the client); a plain class statement costs a few microseconds.
    Each event lists its fields in ``__slots__`` and ``__match_args__`` (in order), sets
    them in ``__init__``, and names those that take part in equality and hashing in
    ``_key``; this base makes it frozen and gives it the dataclass's ``__eq__`` (same
    class, equal keys), ``__hash__``, ``__repr__``, and pickling and copying.
    """

    __slots__ = ()
    __match_args__: tuple[str, ...] = ()

    def _key(self) -> tuple[object, ...]:
        return ()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Event) and other.__class__ is self.__class__:
            return self._key() == other._key()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__match_args__)
        return f"{self.__class__.__qualname__}({inner})"

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __getstate__(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__match_args__)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        for name, value in zip(self.__match_args__, state, strict=True):
            _set(self, name, value)


class Handshake(_Event):
    """The BEP 3 handshake.

    Received handshakes have every field set. To send ours, pass ``Handshake()``: ``None`` fields
    are filled from the connection (our info hash, our peer id, our reserved bits); a field given
    explicitly must agree with the connection (reserved bytes may differ, e.g. to set bits we do
    not interpret).
    """

    __slots__ = ("info_hash", "peer_id", "reserved")
    __match_args__ = ("info_hash", "peer_id", "reserved")
    info_hash: bytes | None
    peer_id: bytes | None
    reserved: bytes | None

    def __init__(
        self, info_hash: bytes | None = None, peer_id: bytes | None = None, reserved: bytes | None = None
    ) -> None:
        _set(self, "info_hash", info_hash)
        _set(self, "peer_id", peer_id)
        _set(self, "reserved", reserved)

    def _key(self) -> tuple[object, ...]:
        return (self.info_hash, self.peer_id, self.reserved)

    def _bit(self, bit: tuple[int, int]) -> bool:
        return self.reserved is not None and bool(self.reserved[bit[0]] & bit[1])

    @property
    def extension_protocol(self) -> bool:
        """The sender supports the BEP 10 extension protocol."""
        return self._bit(EXTENSION_PROTOCOL_BIT)

    @property
    def fast_extension(self) -> bool:
        """The sender supports the BEP 6 fast extension."""
        return self._bit(FAST_EXTENSION_BIT)

    @property
    def dht(self) -> bool:
        """The sender runs a BEP 5 DHT node (it may send a ``port`` message)."""
        return self._bit(DHT_BIT)

    @property
    def v2_upgrade(self) -> bool:
        """The sender names a hybrid by its v1 hash and may be upgraded to v2 (BEP 52)."""
        return self._bit(V2_UPGRADE_BIT)


class KeepAlive(_Event):
    """A zero-length message (BEP 3): the peer is still there."""

    __slots__ = ()


class Request(_Event):
    """Ask for ``length`` bytes of piece ``index`` at offset ``begin`` (BEP 3).

    Also the value type of the request bookkeeping (``Choke.voided``, ``outstanding_requests``).
    """

    __slots__ = ("begin", "index", "length")
    __match_args__ = ("index", "begin", "length")
    index: int
    begin: int
    length: int

    def __init__(self, index: int, begin: int, length: int) -> None:
        _set(self, "index", index)
        _set(self, "begin", begin)
        _set(self, "length", length)

    def _key(self) -> tuple[object, ...]:
        return (self.index, self.begin, self.length)


class Choke(_Event):
    """The sender will not answer requests (BEP 3).

    ``voided`` is filled on a received choke without the fast extension: our requests that the
    choke cancelled implicitly, so the caller can hand those blocks back to the picker. With the
    fast extension it stays empty: every request gets its own :class:`RejectRequest` (BEP 6).
    It takes no part in equality.
    """

    __slots__ = ("voided",)
    __match_args__ = ("voided",)
    voided: tuple[Request, ...]

    def __init__(self, voided: tuple[Request, ...] = ()) -> None:
        _set(self, "voided", voided)


class Unchoke(_Event):
    """The sender will answer requests again (BEP 3)."""

    __slots__ = ()


class Interested(_Event):
    """The sender wants pieces we have (BEP 3)."""

    __slots__ = ()


class NotInterested(_Event):
    """The sender no longer wants anything from us (BEP 3)."""

    __slots__ = ()


class Have(_Event):
    """The sender has completed and verified piece ``index`` (BEP 3)."""

    __slots__ = ("index",)
    __match_args__ = ("index",)
    index: int

    def __init__(self, index: int) -> None:
        _set(self, "index", index)

    def _key(self) -> tuple[object, ...]:
        return (self.index,)


class Bitfield(_Event):
    """The sender's pieces, only as the first message after the handshake (BEP 3).

    On a received bitfield ``pieces`` is a copy the caller may keep and change.
    """

    __slots__ = ("pieces",)
    __match_args__ = ("pieces",)
    pieces: PieceSet

    def __init__(self, pieces: PieceSet) -> None:
        _set(self, "pieces", pieces)

    def _key(self) -> tuple[object, ...]:
        return (self.pieces,)


class Block(_Event):
    """BEP 3's ``piece`` message: ``data`` for piece ``index`` at offset ``begin``.

    A received ``Block`` always answers one of our outstanding requests. ``data`` is a read-only
    memoryview into the received bytes: not copied when the message lies inside one read, copied
    once when it straddles reads (plus one gathering copy for reads under 4 KiB). Keep it as long
    as needed; it pins only the read it points into.
    """

    __slots__ = ("begin", "data", "index")
    __match_args__ = ("index", "begin", "data")
    index: int
    begin: int
    data: bytes | memoryview

    def __init__(self, index: int, begin: int, data: bytes | memoryview) -> None:
        _set(self, "index", index)
        _set(self, "begin", begin)
        _set(self, "data", data)

    def _key(self) -> tuple[object, ...]:
        return (self.index, self.begin, self.data)

    @property
    def length(self) -> int:
        return len(self.data)

    def request(self) -> Request:
        """The request this block answers."""
        return Request(self.index, self.begin, len(self.data))


class UnrequestedBlock(_Event):
    """A well-formed ``piece`` message that answers no outstanding request of ours.

    It happens legitimately after we cancel (the block was already on the wire) and after a
    choke voided our requests; it also comes from broken or hostile peers. It is not an error: the
    caller may count it (libtorrent calls such bytes *redundant*) and may still use the data if
    the block is still missing. Index, offset and length were checked against the torrent.
    """

    __slots__ = ("begin", "data", "index")
    __match_args__ = ("index", "begin", "data")
    index: int
    begin: int
    data: bytes | memoryview

    def __init__(self, index: int, begin: int, data: bytes | memoryview) -> None:
        _set(self, "index", index)
        _set(self, "begin", begin)
        _set(self, "data", data)

    def _key(self) -> tuple[object, ...]:
        return (self.index, self.begin, self.data)


class Cancel(_Event):
    """Withdraw an earlier request (BEP 3).

    Received only for requests still pending with us (a cancel for anything else is dropped).
    With the fast extension the protocol also queues the :class:`RejectRequest` that BEP 6
    requires in answer (see :meth:`PeerProtocol.data_to_send`).
    """

    __slots__ = ("begin", "index", "length")
    __match_args__ = ("index", "begin", "length")
    index: int
    begin: int
    length: int

    def __init__(self, index: int, begin: int, length: int) -> None:
        _set(self, "index", index)
        _set(self, "begin", begin)
        _set(self, "length", length)

    def _key(self) -> tuple[object, ...]:
        return (self.index, self.begin, self.length)


class Port(_Event):
    """The sender's DHT node listens on UDP ``port`` (BEP 5)."""

    __slots__ = ("port",)
    __match_args__ = ("port",)
    port: int

    def __init__(self, port: int) -> None:
        _set(self, "port", port)

    def _key(self) -> tuple[object, ...]:
        return (self.port,)


class HaveAll(_Event):
    """The sender is a seed: every piece (BEP 6; replaces the bitfield)."""

    __slots__ = ()


class HaveNone(_Event):
    """The sender has no pieces (BEP 6; replaces the bitfield)."""

    __slots__ = ()


class SuggestPiece(_Event):
    """The sender suggests we download piece ``index`` (BEP 6; advisory)."""

    __slots__ = ("index",)
    __match_args__ = ("index",)
    index: int

    def __init__(self, index: int) -> None:
        _set(self, "index", index)

    def _key(self) -> tuple[object, ...]:
        return (self.index,)


class RejectRequest(_Event):
    """The sender will not serve this request (BEP 6). Received ones remove it from our queue.

    ``withdrawn`` is set on a received reject that answers a request we had already cancelled
    (BEP 6 still answers it exactly once): its block was handed elsewhere when we cancelled, so
    there is nothing to give back. It takes no part in equality.
    """

    __slots__ = ("begin", "index", "length", "withdrawn")
    __match_args__ = ("index", "begin", "length", "withdrawn")
    index: int
    begin: int
    length: int
    withdrawn: bool

    def __init__(self, index: int, begin: int, length: int, withdrawn: bool = False) -> None:
        _set(self, "index", index)
        _set(self, "begin", begin)
        _set(self, "length", length)
        _set(self, "withdrawn", withdrawn)

    def _key(self) -> tuple[object, ...]:
        return (self.index, self.begin, self.length)


class AllowedFast(_Event):
    """We may request piece ``index`` even while choked (BEP 6)."""

    __slots__ = ("index",)
    __match_args__ = ("index",)
    index: int

    def __init__(self, index: int) -> None:
        _set(self, "index", index)

    def _key(self) -> tuple[object, ...]:
        return (self.index,)


class HashRequest(_Event):
    """Ask for ``length`` nodes of one file's merkle tree (BEP 52 ``hash request``).

    Attributes:
        pieces_root: the file's root (32 bytes).
        base_layer: the layer of the nodes asked for, counted from the leaves (0); the
            piece layer is ``log2(piece_length / 16 KiB)``.
        index: the first node's index in that layer, a multiple of ``length``.
        length: how many nodes: a power of two (at least 2, unless the layer is shorter).
        proof_layers: how many ancestor layers of uncles to add, so the nodes can be
            checked against the root.
    """

    __slots__ = ("base_layer", "index", "length", "pieces_root", "proof_layers")
    __match_args__ = ("pieces_root", "base_layer", "index", "length", "proof_layers")
    pieces_root: bytes
    base_layer: int
    index: int
    length: int
    proof_layers: int

    def __init__(
        self, pieces_root: bytes, base_layer: int, index: int, length: int, proof_layers: int
    ) -> None:
        _set(self, "pieces_root", pieces_root)
        _set(self, "base_layer", base_layer)
        _set(self, "index", index)
        _set(self, "length", length)
        _set(self, "proof_layers", proof_layers)

    def _key(self) -> tuple[object, ...]:
        return (self.pieces_root, self.base_layer, self.index, self.length, self.proof_layers)


class Hashes(_Event):
    """The answer to a :class:`HashRequest` (BEP 52 ``hashes``): the same five fields,
    then the ``length`` nodes and the uncles from the run's subtree up."""

    __slots__ = ("base_layer", "hashes", "index", "length", "pieces_root", "proof_layers")
    __match_args__ = ("pieces_root", "base_layer", "index", "length", "proof_layers", "hashes")
    pieces_root: bytes
    base_layer: int
    index: int
    length: int
    proof_layers: int
    hashes: tuple[bytes, ...]

    def __init__(
        self,
        pieces_root: bytes,
        base_layer: int,
        index: int,
        length: int,
        proof_layers: int,
        hashes: tuple[bytes, ...],
    ) -> None:
        _set(self, "pieces_root", pieces_root)
        _set(self, "base_layer", base_layer)
        _set(self, "index", index)
        _set(self, "length", length)
        _set(self, "proof_layers", proof_layers)
        _set(self, "hashes", hashes)

    def _key(self) -> tuple[object, ...]:
        return (self.pieces_root, self.base_layer, self.index, self.length, self.proof_layers, self.hashes)

    @property
    def request(self) -> HashRequest:
        return HashRequest(self.pieces_root, self.base_layer, self.index, self.length, self.proof_layers)


class HashReject(_Event):
    """The sender will not answer this :class:`HashRequest` (BEP 52 ``hash reject``)."""

    __slots__ = ("base_layer", "index", "length", "pieces_root", "proof_layers")
    __match_args__ = ("pieces_root", "base_layer", "index", "length", "proof_layers")
    pieces_root: bytes
    base_layer: int
    index: int
    length: int
    proof_layers: int

    def __init__(
        self, pieces_root: bytes, base_layer: int, index: int, length: int, proof_layers: int
    ) -> None:
        _set(self, "pieces_root", pieces_root)
        _set(self, "base_layer", base_layer)
        _set(self, "index", index)
        _set(self, "length", length)
        _set(self, "proof_layers", proof_layers)

    def _key(self) -> tuple[object, ...]:
        return (self.pieces_root, self.base_layer, self.index, self.length, self.proof_layers)

    @property
    def request(self) -> HashRequest:
        return HashRequest(self.pieces_root, self.base_layer, self.index, self.length, self.proof_layers)


class ExtensionHandshake(_Event):
    """The BEP 10 extension handshake: extended message id 0, a bencoded dict.

    ``fields`` has bytes keys when received. To send ours, leave out ``m``: the protocol fills it
    in from the extensions the connection registered. Left out, ``fields`` is a new empty dict.
    """

    __slots__ = ("fields",)
    __match_args__ = ("fields",)
    fields: Mapping[bytes | str, Any]

    def __init__(self, fields: Mapping[bytes | str, Any] | None = None) -> None:
        _set(self, "fields", {} if fields is None else fields)

    def _key(self) -> tuple[object, ...]:
        return (self.fields,)

    def _get(self, key: str) -> Any:
        if key in self.fields:
            return self.fields[key]
        return self.fields.get(key.encode())

    @property
    def extensions(self) -> dict[str, int]:
        """The ``m`` dict as ``name -> extended id`` (entries that are not ``str -> int`` dropped)."""
        m = self._get("m")
        out: dict[str, int] = {}
        if isinstance(m, dict):
            for name, ext_id in m.items():
                if isinstance(name, bytes):
                    try:
                        name = name.decode("utf-8")
                    except UnicodeDecodeError:
                        continue
                if isinstance(name, str) and isinstance(ext_id, int) and 0 <= ext_id <= 255:
                    out[name] = ext_id
        return out

    @property
    def client(self) -> str | None:
        """The ``v`` string: client name and version."""
        v = self._get("v")
        if isinstance(v, bytes):
            return v.decode("utf-8", "replace")
        return v if isinstance(v, str) else None

    @property
    def listen_port(self) -> int | None:
        """``p``: the TCP port the sender listens on."""
        p = self._get("p")
        return p if isinstance(p, int) and 0 < p < 65536 else None

    @property
    def reqq(self) -> int | None:
        """``reqq``: how many outstanding requests the sender accepts."""
        q = self._get("reqq")
        return q if isinstance(q, int) and q > 0 else None

    @property
    def metadata_size(self) -> int | None:
        """``metadata_size`` (BEP 9): bytes of the info dict."""
        size = self._get("metadata_size")
        return size if isinstance(size, int) and size > 0 else None

    def _address(self, key: str, sizes: tuple[int, ...]) -> str | None:
        raw = self._get(key)
        if not isinstance(raw, bytes) or len(raw) not in sizes:
            return None
        return str(ipaddress.ip_address(raw))

    @property
    def yourip(self) -> str | None:
        """``yourip``: the address the sender sees us at (4 or 16 bytes; else None)."""
        return self._address("yourip", (4, 16))

    @property
    def ipv4(self) -> str | None:
        """``ipv4``: the sender's own IPv4 address (4 bytes; else None)."""
        return self._address("ipv4", (4,))

    @property
    def ipv6(self) -> str | None:
        """``ipv6``: the sender's own IPv6 address (16 bytes; else None)."""
        return self._address("ipv6", (16,))


class ExtendedMessage(_Event):
    """A BEP 10 extended message other than the handshake, routed by extension name.

    Received: ``name`` is the name *we* registered for the id the peer used; ``payload`` is the
    raw bytes after the extended id (e.g. a ``ut_metadata`` dict plus trailing data).
    Sent: the protocol looks up the id the *peer* assigned to ``name``.
    """

    __slots__ = ("name", "payload")
    __match_args__ = ("name", "payload")
    name: str
    payload: bytes

    def __init__(self, name: str, payload: bytes) -> None:
        _set(self, "name", name)
        _set(self, "payload", payload)

    def _key(self) -> tuple[object, ...]:
        return (self.name, self.payload)


class ConnectionClosed(_Event):
    """The peer closed its side of the connection (``receive_data(b"")``) after whole messages."""

    __slots__ = ()


Event = Union[
    Handshake,
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have,
    Bitfield,
    Request,
    Block,
    UnrequestedBlock,
    Cancel,
    Port,
    HaveAll,
    HaveNone,
    SuggestPiece,
    RejectRequest,
    AllowedFast,
    HashRequest,
    Hashes,
    HashReject,
    ExtensionHandshake,
    ExtendedMessage,
    ConnectionClosed,
]


class NeedData:
    """Type of :data:`NEED_DATA`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by :meth:`PeerProtocol.next_event` when no whole event is buffered.
NEED_DATA: Final = NeedData()
