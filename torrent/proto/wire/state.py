"""The connection's phases and the table of legal transitions, for both directions.

Rules (one machine covers our side and the peer's; each direction has its own phase):

1. The handshake comes first and only once.
2. Bitfield / HaveAll / HaveNone only as the first message after the handshake (BEP 3, BEP 6).
   Keep-alives, extended messages (the BEP 10 handshake is usually sent before the bitfield)
   and port do not count as "the first message": clients send them before their bitfield.
3. Anything missing from :data:`TRANSITIONS` is a violation; its wording is in :data:`VIOLATIONS`.

Two exceptions live in :class:`~torrent.proto.wire.connection.PeerProtocol` because they depend
on more than the phase: a late piece set from the peer is tolerated (aria2 sends them), and with
BEP 6 our own first message after the handshake must be a piece set.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["TRANSITIONS", "VIOLATIONS", "Kind", "Phase"]


class Phase(enum.Enum):
    """Where one direction of the connection is (ours and the peer's are tracked apart)."""

    HANDSHAKE = "handshake"  # nothing yet: the handshake must come first
    OPENING = "opening"  # handshake done; the piece-set message (bitfield/have all/have none) may come
    ACTIVE = "active"  # past the first message: a piece-set message is now a violation
    CLOSED = "closed"  # end of stream
    ERROR = "error"  # a violation happened; nothing more is parsed


class Kind(enum.Enum):
    """What a message means to the state machine."""

    HANDSHAKE = "handshake"
    PIECE_SET = "piece set"  # Bitfield, HaveAll, HaveNone
    NEUTRAL = "neutral"  # KeepAlive, Port, extended: may precede the piece-set message
    OTHER = "other"  # everything else: ends the window for a piece-set message
    CLOSE = "close"


#: Legal (phase, kind) -> next phase, for both directions (see the rules above).
TRANSITIONS: Final[dict[tuple[Phase, Kind], Phase]] = {
    (Phase.HANDSHAKE, Kind.HANDSHAKE): Phase.OPENING,
    (Phase.HANDSHAKE, Kind.CLOSE): Phase.CLOSED,
    (Phase.OPENING, Kind.PIECE_SET): Phase.ACTIVE,
    (Phase.OPENING, Kind.NEUTRAL): Phase.OPENING,
    (Phase.OPENING, Kind.OTHER): Phase.ACTIVE,
    (Phase.OPENING, Kind.CLOSE): Phase.CLOSED,
    (Phase.ACTIVE, Kind.NEUTRAL): Phase.ACTIVE,
    (Phase.ACTIVE, Kind.OTHER): Phase.ACTIVE,
    (Phase.ACTIVE, Kind.CLOSE): Phase.CLOSED,
}
#: How each illegal pair that has a specific wording is reported.
VIOLATIONS: Final[dict[tuple[Phase, Kind], str]] = {
    (Phase.HANDSHAKE, Kind.PIECE_SET): "{name} before the handshake",
    (Phase.HANDSHAKE, Kind.NEUTRAL): "{name} before the handshake",
    (Phase.HANDSHAKE, Kind.OTHER): "{name} before the handshake",
    (Phase.OPENING, Kind.HANDSHAKE): "a second handshake",
    (Phase.ACTIVE, Kind.HANDSHAKE): "a second handshake",
    (Phase.ACTIVE, Kind.PIECE_SET): "{name} is only allowed as the first message after the handshake",
}
