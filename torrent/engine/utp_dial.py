"""How outgoing connections are dialled when uTP is on: uTP first, then TCP, steered by
what is known of each address (:class:`UtpHints`).

libtorrent, qBittorrent and Transmission prefer uTP (many peers behind NATs answer only
there, and LEDBAT yields to the user's other traffic), so :class:`UtpFirstConnector` sends a
uTP SYN first and falls back to TCP when it is not answered within ``utp_timeout_s`` (a peer
that does not speak uTP never answers: UDP has no refusal we can rely on, since an unconnected
socket does not report ICMP errors). On loopback and a LAN a SYN is answered within
milliseconds; 2 s (libtorrent waits 3 s, its ``utp_connect_timeout``) covers an internet RTT
and one lost SYN, and keeps a TCP-only peer's dial short.

The reverse order (TCP first, uTP as the fallback) would never reach the peers uTP is for —
those whose TCP port is unreachable behind a NAT — before the TCP timeout, and would leave
every connection to a uTP-capable peer on TCP, out of LEDBAT's control.

What is known of an address changes the order (:class:`UtpHints`, one table per session):

* It speaks uTP — it connected to us over uTP, a uTP dial to it succeeded, or a peer's PEX
  message flagged it (BEP 11 ``0x04``): uTP first, even if an earlier SYN went unanswered.
* It does not — our SYN to it went unanswered: TCP at once (``tcp_known``), saving the
  ``utp_timeout_s`` wait on every redial.
* A PEX message listed it without the uTP flag: TCP at once (``tcp_first``), and uTP only if
  TCP fails (refused, or silent past its share of the connect budget: see below). The flag
  is hearsay (the sender's own connection to it is not uTP: the peer dialled the sender over
  TCP, or the sender's uTP dial to it failed), so it never overrides what we saw ourselves,
  and a failed TCP dial forgets it (the next dial is uTP first again).
  libtorrent takes only the positive flag; we take the negative one too because a dial to
  a TCP-only peer otherwise waits ``utp_timeout_s`` (2 s) of unanswered SYNs before TCP
  starts, while a peer that in fact speaks uTP loses nothing: TCP reaches it (the sender did).

Each attempt gets its own bounded share of the caller's connect budget (``budget_s``, the
whole dial's timeout): uTP first gets ``utp_timeout_s`` and TCP the rest; TCP first gets the
budget less ``utp_timeout_s`` (at least half of it), so a TCP dial that is silently dropped,
not refused, still leaves uTP its turn before the caller gives up.

A peer reached both ways (it dialled us over one, we dialled it over the other) is kept once:
the swarm closes the second connection with the same peer id (see ``Swarm``'s duplicate rule).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torrent.engine.transport import Connector, Transport, tcp_connect
from torrent.engine.utp_hints import UtpHints

if TYPE_CHECKING:  # uTP itself loads only when it is enabled (Session._utp_manager)
    from torrent.engine.utp_socket import UtpSocketManager

__all__ = ["DialCounters", "DialStats", "UtpFirstConnector", "UtpHints"]


@dataclass(frozen=True, slots=True)
class DialStats:
    """A snapshot of :class:`DialCounters`.

    Attributes:
        utp: outgoing connections made over uTP.
        tcp_fallbacks: dials whose SYN went unanswered, then made over TCP.
        tcp_known: dials that went straight to TCP (the address had not answered uTP before).
        tcp_first: dials that went to TCP first because a PEX message listed the address
            without the uTP flag.
    """

    utp: int
    tcp_fallbacks: int
    tcp_known: int
    tcp_first: int = 0


@dataclass(slots=True)
class DialCounters:
    """Outgoing connections by how they were made (see :class:`DialStats`)."""

    utp: int = 0
    tcp_fallbacks: int = 0
    tcp_known: int = 0
    tcp_first: int = 0

    def statistics(self) -> DialStats:
        return DialStats(self.utp, self.tcp_fallbacks, self.tcp_known, self.tcp_first)


class UtpFirstConnector:
    """A :data:`~torrent.engine.transport.Connector`: uTP, else TCP (see the module docstring).

    Args:
        utp: the session's uTP socket (its ``hints`` steer the order).
        utp_timeout_s: how long the SYN may go unanswered before TCP is tried.
        budget_s: the caller's timeout for the whole dial (``Settings.connect_timeout_s``):
            a TCP attempt made first is cut off in time for uTP to have its turn. None: the
            TCP attempt is not bounded here.
        fallback: the TCP dial.
        counters: where the outcomes are counted.
    """

    def __init__(
        self,
        utp: UtpSocketManager,
        *,
        utp_timeout_s: float,
        budget_s: float | None = None,
        fallback: Connector = tcp_connect,
        counters: DialCounters | None = None,
    ) -> None:
        self._utp = utp
        self._timeout_s = utp_timeout_s
        self._tcp_first_s = None if budget_s is None else max(budget_s - utp_timeout_s, budget_s / 2)
        self._fallback = fallback
        self.counters = counters or DialCounters()
        self.hints: UtpHints = utp.hints

    async def __call__(self, protocol: asyncio.BaseProtocol, addr: tuple[str, int]) -> Transport:
        key = (addr[0], int(addr[1]))
        known = self.hints.get(key)
        if known is False:
            if self.hints.observed(key):
                self.counters.tcp_known += 1
                return await self._fallback(protocol, addr)
            return await self._tcp_first(protocol, addr, key)
        try:
            async with asyncio.timeout(self._timeout_s):
                transport = await self._utp.connect(protocol, addr)
        except (OSError, TimeoutError):
            self.hints.learn(key, speaks_utp=False)
            self.counters.tcp_fallbacks += 1
            return await self._fallback(protocol, addr)
        self.counters.utp += 1
        return transport

    async def _tcp_first(
        self, protocol: asyncio.BaseProtocol, addr: tuple[str, int], key: tuple[str, int]
    ) -> Transport:
        """PEX said it does not speak uTP: TCP, within its share of the budget; if TCP fails
        or runs out of time, forget that and try uTP."""
        self.counters.tcp_first += 1
        try:
            async with asyncio.timeout(self._tcp_first_s):
                return await self._fallback(protocol, addr)
        except OSError:  # TimeoutError included
            self.hints.forget(key)
            async with asyncio.timeout(self._timeout_s):
                transport = await self._utp.connect(protocol, addr)
            self.counters.utp += 1
            return transport
