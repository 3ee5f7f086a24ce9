"""How outgoing connections are dialled when uTP is on: uTP first, then TCP.

libtorrent, qBittorrent and Transmission prefer uTP (many peers behind NATs answer only
there, and LEDBAT yields to the user's other traffic), so :class:`UtpFirstConnector` sends a
uTP SYN first and falls back to TCP when it is not answered within ``utp_timeout_s`` (a peer
that does not speak uTP never answers: UDP has no refusal we can rely on, since an unconnected
socket does not report ICMP errors). The address is then remembered as TCP-only for this
torrent, so a redial goes straight to TCP. On loopback and a LAN a SYN is answered within
milliseconds; 2 s (libtorrent waits 3 s, its ``utp_connect_timeout``) covers an internet RTT
and one lost SYN, and keeps a TCP-only peer's dial short.

The reverse order (TCP first, uTP as the fallback) would never reach the peers uTP is for —
those whose TCP port is unreachable behind a NAT — before the TCP timeout, and would leave
every connection to a uTP-capable peer on TCP, out of LEDBAT's control.

A peer reached both ways (it dialled us over one, we dialled it over the other) is kept once:
the swarm closes the second connection with the same peer id (see ``Swarm``'s duplicate rule).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from torrent.engine.transport import Connector, Transport, tcp_connect
from torrent.engine.utp_socket import UtpSocketManager

__all__ = ["DialCounters", "DialStats", "UtpFirstConnector"]


@dataclass(frozen=True, slots=True)
class DialStats:
    """A snapshot of :class:`DialCounters`.

    Attributes:
        utp: outgoing connections made over uTP.
        tcp_fallbacks: dials whose SYN went unanswered, then made over TCP.
        tcp_known: dials that went straight to TCP (the address had not answered uTP before).
    """

    utp: int
    tcp_fallbacks: int
    tcp_known: int


@dataclass(slots=True)
class DialCounters:
    """Outgoing connections by how they were made (see :class:`DialStats`)."""

    utp: int = 0
    tcp_fallbacks: int = 0
    tcp_known: int = 0

    def statistics(self) -> DialStats:
        return DialStats(self.utp, self.tcp_fallbacks, self.tcp_known)


class UtpFirstConnector:
    """A :data:`~torrent.engine.transport.Connector`: uTP, else TCP (see the module docstring).

    Args:
        utp: the session's uTP socket.
        utp_timeout_s: how long the SYN may go unanswered before TCP is tried.
        fallback: the TCP dial.
        counters: where the outcomes are counted.
    """

    def __init__(
        self,
        utp: UtpSocketManager,
        *,
        utp_timeout_s: float,
        fallback: Connector = tcp_connect,
        counters: DialCounters | None = None,
    ) -> None:
        self._utp = utp
        self._timeout_s = utp_timeout_s
        self._fallback = fallback
        self.counters = counters or DialCounters()
        #: Addresses that did not answer over uTP: dialled over TCP from now on.
        self.tcp_only: set[tuple[str, int]] = set()

    async def __call__(self, protocol: asyncio.BaseProtocol, addr: tuple[str, int]) -> Transport:
        key = (addr[0], int(addr[1]))
        if key in self.tcp_only:
            self.counters.tcp_known += 1
            return await self._fallback(protocol, addr)
        try:
            async with asyncio.timeout(self._timeout_s):
                transport = await self._utp.connect(protocol, addr)
        except (OSError, TimeoutError):
            self.tcp_only.add(key)
            self.counters.tcp_fallbacks += 1
            return await self._fallback(protocol, addr)
        self.counters.utp += 1
        return transport
