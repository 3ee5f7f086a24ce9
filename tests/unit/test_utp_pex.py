"""PEX (BEP 11) marks the peers we reach over uTP with the ``utp`` flag (0x04)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from torrent.config import Settings
from torrent.engine.peer import Peer
from torrent.engine.peer_exchange import PeerExchange
from torrent.proto import pex, wire


@dataclass
class FakeTransport:
    utp: bool

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return True if name == "utp" and self.utp else default


@dataclass(eq=False)
class FakePeer:
    addr: tuple[str, int]
    transport: FakeTransport
    peer_id: bytes | None = b"x" * 20
    closed: bool = False
    outgoing: bool = True
    is_seed: bool = False
    proto: object = True
    sent: list[wire.ExtendedMessage] = field(default_factory=list)

    def send(self, ev: wire.ExtendedMessage) -> None:
        self.sent.append(ev)


def test_utp_peers_carry_the_utp_flag() -> None:
    over_utp = FakePeer(("10.0.0.1", 6881), FakeTransport(utp=True), is_seed=True)
    over_tcp = FakePeer(("10.0.0.2", 6881), FakeTransport(utp=False))
    listener = FakePeer(("10.0.0.3", 6881), FakeTransport(utp=True))
    peers = {p.addr: cast(Peer, p) for p in (over_utp, over_tcp, listener)}
    px = PeerExchange(Settings(), peers=peers, on_peers=lambda addrs: None)
    px.on_extension_handshake(cast(Peer, listener), wire.ExtensionHandshake({b"m": {b"ut_pex": 1}}))
    px.tick(0.0)
    (msg,) = listener.sent
    flags = dict(pex.decode(msg.payload).added)
    F = pex.PexFlags
    assert flags[("10.0.0.1", 6881)] == F.REACHABLE | F.SEED | F.UTP
    assert flags[("10.0.0.2", 6881)] == F.REACHABLE
