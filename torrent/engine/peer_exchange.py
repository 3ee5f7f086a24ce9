"""One torrent's side of peer exchange (BEP 11, ``ut_pex``): the glue between its peers and
:mod:`torrent.proto.pex`.

* Each connected peer whose extension handshake offers ``ut_pex`` gets a
  :class:`~torrent.proto.pex.PexSender`; once a second (the swarm's tick) those that are
  due are sent what changed in our list of connected peers since their last message.
* The list we give: peers we dialled (flag ``reachable``), and incoming peers under the
  listen port their handshake gave (``p``); an incoming peer without one is left out, as
  its address is not one anybody can dial. Seeds carry the ``seed`` flag, peers connected
  over uTP the ``utp`` flag (BEP 29 support, 0x04). A peer is never told about itself.
* What a peer tells us goes to ``on_peers``: the torrent's peer list, with the same
  admission as a tracker's peers. A message that does not parse is ignored. With uTP on,
  each added peer's ``utp`` flag goes to the session's :class:`~torrent.engine.utp_socket.UtpHints`
  as hearsay (set: it speaks uTP; clear among other flags: it does not; no flags at all,
  which BEP 11 allows a sender to leave out: nothing), which orders our dial to it.

The swarm creates one only when PEX is on and the torrent is not private (BEP 27), and
only then offers ``ut_pex`` in its handshakes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from torrent.config import Settings
from torrent.engine.peer import Peer, PeerAddr
from torrent.engine.utp_hints import UtpHints
from torrent.errors import RemoteProtocolError
from torrent.proto import pex, wire

__all__ = ["PeerExchange"]

log = logging.getLogger(__name__)

#: Distinct addresses remembered for the "found through PEX" count.
MAX_REMEMBERED = 10_000


class PeerExchange:
    """See the module docstring.

    Args:
        settings: ``pex_interval_s``.
        peers: the torrent's connections by address (read, never changed).
        on_peers: receives the addresses peers told us about.
        utp_hints: where the ``utp`` flags of those addresses go (None: uTP is off).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        peers: Mapping[PeerAddr, Peer],
        on_peers: Callable[[list[PeerAddr]], None],
        utp_hints: UtpHints | None = None,
    ) -> None:
        #: Where the ``utp`` flags go (None: uTP is off); follows uTP turned on or off.
        self.utp_hints = utp_hints
        self._interval_s = settings.pex_interval_s
        self._peers = peers
        self._on_peers = on_peers
        self._senders: dict[Peer, pex.PexSender] = {}
        self._listen_ports: dict[Peer, int] = {}
        self._found: set[PeerAddr] = set()
        #: ``ut_pex`` messages that did not parse.
        self.malformed = 0

    @property
    def found(self) -> int:
        """Distinct addresses peers told us about."""
        return len(self._found)

    def on_extension_handshake(self, peer: Peer, ev: wire.ExtensionHandshake) -> None:
        if ev.listen_port is not None:
            self._listen_ports[peer] = ev.listen_port
        if pex.EXTENSION_NAME in ev.extensions:
            self._senders.setdefault(peer, pex.PexSender(self._interval_s))

    def on_message(self, peer: Peer, payload: bytes) -> None:
        try:
            msg = pex.decode(payload)
        except RemoteProtocolError as exc:
            self.malformed += 1
            log.debug("ignoring a bad ut_pex message from %s: %s", peer.addr, exc)
            return
        # Our own address may come back too: the handshake's peer id catches it (and bans it).
        addrs = [a for a, _ in msg.added if a not in self._peers]
        hints = self.utp_hints
        if hints is not None:
            for a, flags in msg.added:
                if flags:
                    hints.learn(a, speaks_utp=bool(flags & pex.PexFlags.UTP), observed=False)
        for a in addrs:
            if len(self._found) < MAX_REMEMBERED:
                self._found.add(a)
        if addrs:
            self._on_peers(addrs)

    def forget(self, peer: Peer) -> None:
        """``peer`` closed."""
        self._senders.pop(peer, None)
        self._listen_ports.pop(peer, None)

    def _view(self) -> dict[PeerAddr, pex.PexFlags]:
        out: dict[PeerAddr, pex.PexFlags] = {}
        for p in self._peers.values():
            if p.peer_id is None or p.closed:
                continue
            if p.outgoing:
                addr, flags = p.addr, pex.PexFlags.REACHABLE
            elif (port := self._listen_ports.get(p)) is not None:
                addr, flags = (p.addr[0], port), pex.PexFlags.NONE
            else:
                continue
            if p.is_seed:
                flags |= pex.PexFlags.SEED
            if p.transport is not None and p.transport.get_extra_info("mse_method") is not None:
                # It speaks MSE with us: others may dial it encrypted first (BEP 11 0x01).
                flags |= pex.PexFlags.ENCRYPTION
            if p.transport is not None and p.transport.get_extra_info("utp"):
                flags |= pex.PexFlags.UTP
            out[addr] = flags
        return out

    def tick(self, now: float) -> None:
        """Send each ``ut_pex`` peer that is due what changed since its last message."""
        if not any(s.due(now) for s in self._senders.values()):
            return
        view = self._view()
        for peer, sender in list(self._senders.items()):
            if peer.closed or peer.proto is None:
                continue
            own = {peer.addr, (peer.addr[0], self._listen_ports.get(peer, 0))}
            msg = sender.message({a: f for a, f in view.items() if a not in own}, now)
            if msg is not None:
                peer.send(wire.ExtendedMessage(pex.EXTENSION_NAME, pex.encode(msg)))
