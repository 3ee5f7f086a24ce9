"""Sans-IO peer wire protocol: bytes in → events out, events in → bytes out, one object per connection.

Covers BEP 3 (handshake and every message), BEP 52 (hash request, hashes, hash reject), BEP 6 (fast extension: have all, have none, suggest
piece, reject request, allowed fast, and the changed choke/cancel semantics), BEP 10 (extension
protocol: the extension handshake and routing of extended message ids to names) and the BEP 5
``port`` message and reserved bit. It does no I/O and reads no clock: the caller passes ``now``
(seconds, any monotonic origin) where time matters. Left out: message stream encryption (MSE/PE),
the contents of ``ut_*`` extension messages (passed through as bytes; :mod:`torrent.proto.ut_metadata` parses BEP 9's).

A connection opened from a magnet link starts before the torrent's geometry is known: create it
with ``piece_length=None, total_length=None``. Until :meth:`PeerProtocol.set_geometry` is called,
the peer's bitfield / have / have all / have none are accepted and remembered (bounded by
:data:`MAX_UNKNOWN_BITFIELD`), its requests are refused, and we may send no request, have or
bitfield (only the extension messages, keep-alives and :class:`HaveNone`).

Usage (one :class:`PeerProtocol` per connection, whatever carries its bytes)::

    proto = PeerProtocol(info_hash=ih, our_peer_id=pid, piece_length=plen, total_length=size)
    out = proto.send(Handshake(), now=clock())          # info hash, peer id, reserved bits filled in
    proto.receive_data(chunk, now=clock())              # b"" means EOF
    while (ev := proto.next_event()) is not NEED_DATA:
        match ev:
            case Handshake():         out += proto.send(Bitfield(our_pieces))   # or HaveAll/HaveNone
            case Block(index=i, begin=b, data=d): ...   # d is a memoryview: hand it to the disk writer
            case Choke(voided=lost): ...                # requests the choke voided (without BEP 6)
            case ConnectionClosed(): ...
    out += proto.data_to_send()                         # automatic BEP 6 rejects, usually empty
    writer.write(out)

Incoming connections (how a listener learns the info hash): the initiator's handshake arrives
first, and the session needs its info hash to pick the torrent before it can build the
:class:`PeerProtocol` (which needs that torrent's geometry). Buffer the first bytes of the
connection and call :func:`peek_info_hash` on them: it returns ``None`` until 48 bytes are there,
raises :class:`RemoteProtocolError` as soon as the bytes cannot be a BitTorrent handshake, and
otherwise returns the info hash without consuming anything. Then create the ``PeerProtocol`` for
that torrent, feed it *all* the bytes buffered so far (the handshake included) with
``receive_data``, and answer with ``send(Handshake())``. Both directions therefore drive the same
object the same way; only who sends the handshake first differs.

Policies worth knowing (details on :class:`PeerProtocol`):

* Bitfield / HaveAll / HaveNone only as the first message after the handshake; keep-alives,
  ``port`` and extended messages may come before it (libtorrent sends its BEP 10 handshake
  first). With BEP 6 negotiated, *our* first such message is required before anything else.
* A block answering no outstanding request is an :class:`UnrequestedBlock` event, not an error.
  Unknown message ids, and extended ids we never assigned, are skipped (``ignored_messages``).
* Peer requests we may not serve (we choke it, a piece we never announced, queue full) never
  become events: without BEP 6 they are dropped, with it rejected through :meth:`data_to_send`.
  After a slow disk read, check :meth:`PeerProtocol.is_requested_by_peer` before ``send(Block)``:
  a cancel or a choke may have withdrawn the request meanwhile.
* The clock: pass the same monotonic ``now`` to ``receive_data``/``send``/the queries; rates,
  activity times and the snub timer start at the first one seen.
* Piece sets are :class:`torrent.proto.pieceset.PieceSet` (a bitfield with set semantics).

Layout (after h11's split of its connection):

* :mod:`.events`: the events (frozen, slotted classes), :data:`Event` (their union), :class:`MessageId`.
* :mod:`.codec`: the handshake, stateless :func:`encode`, and :class:`FrameBuffer` /
  :class:`InPlaceFrameBuffer` (framing).
* :mod:`.state`: the phases and the table of legal transitions, for both directions.
* :mod:`.limits`: the frame-length table and the caps on what a peer may make us remember.
* :mod:`.rate`: :class:`RateMeter`, the one byte-rate meter.
* :mod:`.connection`: :class:`PeerProtocol`, which ties them together and holds the state.

Public API:

* :class:`PeerProtocol` -- ``receive_data(data, now=)`` or, reading straight into the
  protocol's buffer, ``get_buffer()`` then ``buffer_updated(nbytes, now=)``; ``next_event()``
  (an event or :data:`NEED_DATA`), ``send(event, now=) -> bytes``,
  ``send_requests(blocks, now) -> (bytes, refused)`` (a pipeline refill),
  ``data_to_send() -> bytes``, the state
  attributes listed on the class, ``statistics(now)``, ``is_snubbed(now)``,
  ``download_rate_bps(now)``/``upload_rate_bps(now)`` (and their ``download_meter``/
  ``upload_meter``), ``num_outstanding()``, ``outstanding_requests``/``peer_requests``,
  ``is_requested_by_peer(request)``, ``next_peer_request()``/``refuse_peer_request(request)``
  (the upload queue), ``expire_requests(now, timeout_s)``/``strikes``/``waiting_since`` (request
  timeouts and the snub timer), ``piece_size(i)``.
* Events (frozen, slotted): :class:`Handshake`, :class:`KeepAlive`, :class:`Choke`,
  :class:`Unchoke`, :class:`Interested`, :class:`NotInterested`, :class:`Have`,
  :class:`Bitfield`, :class:`Request`, :class:`Block`, :class:`Cancel`, :class:`Port`,
  :class:`HaveAll`, :class:`HaveNone`, :class:`SuggestPiece`, :class:`RejectRequest`,
  :class:`AllowedFast`, :class:`ExtensionHandshake`, :class:`ExtendedMessage`, BEP 52's
  :class:`HashRequest`, :class:`Hashes` and :class:`HashReject` (a ``hashes`` or
  ``hash reject`` must answer a request we sent; one asking for more than 512 nodes is
  rejected for us; at most 64 of ours in flight); receive-only:
  :class:`UnrequestedBlock`, :class:`ConnectionClosed`.
* :func:`peek_info_hash`, :func:`encode_handshake`, :func:`parse_handshake`, :func:`encode`
  (stateless encoding of one message), :class:`MessageId`, :class:`FrameBuffer`,
  :class:`RateMeter`, :class:`ConnectionStats`.

Errors: a peer that breaks the protocol makes ``next_event`` raise :class:`RemoteProtocolError`
(naming the violation) after the connection has moved to its error state; drop that peer. Calling
``send`` with something the protocol forbids raises :class:`LocalProtocolError`: a bug on our side.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torrent.proto.wire.codec import (
        HANDSHAKE_LENGTH,
        PROTOCOL_NAME,
        FrameBuffer,
        InPlaceFrameBuffer,
        encode,
        encode_handshake,
        parse_handshake,
        peek_info_hash,
        peek_v2_upgrade,
    )
    from torrent.proto.wire.connection import ConnectionStats, PeerProtocol
    from torrent.proto.wire.events import (
        NEED_DATA,
        AllowedFast,
        Bitfield,
        Block,
        Cancel,
        Choke,
        ConnectionClosed,
        Event,
        ExtendedMessage,
        ExtensionHandshake,
        Handshake,
        Hashes,
        HashReject,
        HashRequest,
        Have,
        HaveAll,
        HaveNone,
        Interested,
        KeepAlive,
        MessageId,
        NotInterested,
        Port,
        RejectRequest,
        Request,
        SuggestPiece,
        Unchoke,
        UnrequestedBlock,
    )
    from torrent.proto.wire.limits import MAX_EXTENDED_PAYLOAD, MAX_UNKNOWN_BITFIELD
    from torrent.proto.wire.rate import RateMeter
    from torrent.proto.wire.state import Phase

#: Where each name of the API lives. The package imports a module when one of its names
#: is first used: a client that only needs :class:`RateMeter` (a daemon restarting with
#: dormant seeds) does not pay for the protocol and its events.
_HOMES = {
    **dict.fromkeys(
        (
            "HANDSHAKE_LENGTH",
            "PROTOCOL_NAME",
            "FrameBuffer",
            "InPlaceFrameBuffer",
            "encode",
            "encode_handshake",
            "parse_handshake",
            "peek_info_hash",
            "peek_v2_upgrade",
        ),
        "codec",
    ),
    **dict.fromkeys(("ConnectionStats", "PeerProtocol"), "connection"),
    **dict.fromkeys(
        (
            "NEED_DATA",
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
            "Hashes",
            "HashReject",
            "HashRequest",
            "Have",
            "HaveAll",
            "HaveNone",
            "Interested",
            "KeepAlive",
            "MessageId",
            "NotInterested",
            "Port",
            "RejectRequest",
            "Request",
            "SuggestPiece",
            "Unchoke",
            "UnrequestedBlock",
        ),
        "events",
    ),
    **dict.fromkeys(("MAX_EXTENDED_PAYLOAD", "MAX_UNKNOWN_BITFIELD"), "limits"),
    "RateMeter": "rate",
    "Phase": "state",
}


if not TYPE_CHECKING:  # the type checker sees the imports above, and flags any other name

    def __getattr__(name: str) -> Any:
        home = _HOMES.get(name)
        if home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
        globals()[name] = value  # the next lookup is a plain global
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *_HOMES})


__all__ = [
    "HANDSHAKE_LENGTH",
    "MAX_EXTENDED_PAYLOAD",
    "MAX_UNKNOWN_BITFIELD",
    "NEED_DATA",
    "PROTOCOL_NAME",
    "AllowedFast",
    "Bitfield",
    "Block",
    "Cancel",
    "Choke",
    "ConnectionClosed",
    "ConnectionStats",
    "Event",
    "ExtendedMessage",
    "ExtensionHandshake",
    "FrameBuffer",
    "Handshake",
    "HashReject",
    "HashRequest",
    "Hashes",
    "Have",
    "HaveAll",
    "HaveNone",
    "InPlaceFrameBuffer",
    "Interested",
    "KeepAlive",
    "MessageId",
    "NotInterested",
    "PeerProtocol",
    "Phase",
    "Port",
    "RateMeter",
    "RejectRequest",
    "Request",
    "SuggestPiece",
    "Unchoke",
    "UnrequestedBlock",
    "encode",
    "encode_handshake",
    "parse_handshake",
    "peek_info_hash",
    "peek_v2_upgrade",
]
