"""Shared helpers for the peer wire tests: a torrent geometry and a pair of connected protocols."""

from __future__ import annotations

from typing import Any

from torrent.proto.wire import NEED_DATA, Event, Handshake, PeerProtocol

INFO_HASH = bytes(range(1, 21))
PEER_A = b"-PT0001-aaaaaaaaaaaa"
PEER_B = b"-XX0001-bbbbbbbbbbbb"
# Ten pieces of 32 KiB (two blocks each), the last one 10000 bytes: 9 * 32768 + 10000.
PIECE_LENGTH = 32768
TOTAL_LENGTH = 9 * PIECE_LENGTH + 10000
NUM_PIECES = 10


def make(our_peer_id: bytes = PEER_A, **kwargs: Any) -> PeerProtocol:
    kwargs.setdefault("piece_length", PIECE_LENGTH)
    kwargs.setdefault("total_length", TOTAL_LENGTH)
    return PeerProtocol(info_hash=INFO_HASH, our_peer_id=our_peer_id, **kwargs)


def drain(proto: PeerProtocol) -> list[Event]:
    out: list[Event] = []
    while (event := proto.next_event()) is not NEED_DATA:
        out.append(event)  # type: ignore[arg-type]
        if len(out) > 10_000:
            raise AssertionError("runaway event stream")
    return out


def feed(proto: PeerProtocol, data: bytes, chunk: int | None = None, now: float | None = None) -> list[Event]:
    """Feed ``data`` (in pieces of ``chunk`` bytes, draining after each) and collect the events."""
    if chunk is None:
        proto.receive_data(data, now=now)
        return drain(proto)
    events: list[Event] = []
    for i in range(0, len(data), chunk):
        proto.receive_data(data[i : i + chunk], now=now)
        events.extend(drain(proto))
    return events


class Pair:
    """Two protocol objects joined by a fake link (h11's ConnectionPair idea).

    ``send(side, event)`` encodes on one side and delivers to the other, returning what the other
    side parsed. ``a`` initiates; both handshakes are exchanged by :meth:`handshake`.
    """

    def __init__(
        self, a_kwargs: dict[str, Any] | None = None, b_kwargs: dict[str, Any] | None = None
    ) -> None:
        self.a = make(PEER_A, **(a_kwargs or {}))
        self.b = make(PEER_B, **(b_kwargs or {}))

    def other(self, proto: PeerProtocol) -> PeerProtocol:
        return self.b if proto is self.a else self.a

    def send(self, proto: PeerProtocol, event: Event, now: float | None = None) -> list[Event]:
        data = proto.send(event, now=now)
        return feed(self.other(proto), data, now=now)

    def flush(self, proto: PeerProtocol) -> list[Event]:
        """Deliver what ``proto`` queued by itself (data_to_send) to the other side."""
        return feed(self.other(proto), proto.data_to_send())

    def handshake(self) -> None:
        got_b = self.send(self.a, Handshake())
        got_a = self.send(self.b, Handshake())
        assert [type(e) for e in got_b] == [Handshake]
        assert [type(e) for e in got_a] == [Handshake]


def connected(
    our_kwargs: dict[str, Any] | None = None, peer_reserved: bytes = b"\x00\x00\x00\x00\x00\x10\x00\x05"
) -> PeerProtocol:
    """Our protocol with both handshakes done; the peer's handshake is hand-written bytes."""
    proto = make(**(our_kwargs or {}))
    proto.send(Handshake())
    events = feed(proto, b"\x13BitTorrent protocol" + peer_reserved + INFO_HASH + PEER_B)
    assert [type(e) for e in events] == [Handshake]
    return proto
