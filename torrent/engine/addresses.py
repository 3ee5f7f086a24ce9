"""Our own addresses, per family: where peers can reach us, and what the outside sees.

BEP 7 lets a client tell a tracker its address of the *other* family (``ipv6=`` in an
announce sent over IPv4, ``ipv4=`` over IPv6), and BEP 10's handshake carries ``ipv4``,
``ipv6`` (ours) and ``yourip`` (the address we see the peer at). :class:`OurAddresses`
holds what the session knows for those fields:

* ``ipv4`` / ``ipv6``: a global unicast address of that family we listen on. A listener
  bound to one address gives it; a wildcard listener (``0.0.0.0``, ``::``) gives the source
  address the kernel would pick towards a global destination (:func:`route_source`: a
  connected UDP socket, which sends nothing). Loopback, link-local and private addresses
  are never advertised: they mean nothing to a tracker or a remote peer.
* ``external_ipv4``: what the router said through port mapping, or else what at least
  :data:`MIN_VOTES` peers agree on in their ``yourip``.

Nothing here is trusted for a decision that matters: it feeds hints only.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["MIN_VOTES", "OurAddresses", "canonical_host", "global_address", "route_source"]

#: Distinct ``yourip`` reports needed before a peer-reported address is believed.
MIN_VOTES = 2
#: Votes kept at most (one per reporting peer address; older ones are not aged out, the
#: table is simply bounded).
MAX_VOTERS = 256

#: Route probes: documentation addresses (RFC 5737, RFC 3849). ``connect`` on a UDP socket
#: only looks the route up; no packet is sent to them.
_PROBE = {4: "192.0.2.1", 6: "2001:db8::1"}


def canonical_host(host: str) -> str:
    """One spelling per address: IPv4-mapped IPv6 (``::ffff:1.2.3.4``) becomes IPv4, IPv6
    is compressed and lower case; a name is returned as given."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def global_address(host: str) -> str | None:
    """``host`` in canonical form when it is a global unicast address, else None."""
    try:
        ip = ipaddress.ip_address(canonical_host(host))
    except ValueError:
        return None
    return str(ip) if ip.is_global and not ip.is_multicast else None


def route_source(family: int) -> str | None:
    """The local address the kernel would send from towards the global internet of
    ``family`` (4 or 6), or None without such a route. Sends nothing."""
    af = socket.AF_INET6 if family == 6 else socket.AF_INET
    with contextlib.suppress(OSError), socket.socket(af, socket.SOCK_DGRAM) as sock:
        sock.connect((_PROBE[family], 9))
        return str(sock.getsockname()[0])
    return None


@dataclass(slots=True)
class OurAddresses:
    """See the module docstring. ``learn_listeners`` fills ``ipv4``/``ipv6``."""

    ipv4: str | None = None
    ipv6: str | None = None
    #: The external IPv4 address the router reported (port mapping).
    mapped_ipv4: str | None = None
    _votes: dict[str, str] = field(default_factory=dict)

    def learn_listeners(self, hosts: list[str]) -> None:
        """Our listen addresses (wildcards allowed): keep a global one per family."""
        for host in hosts:
            ip = canonical_host(host)
            family = 6 if ":" in ip else 4
            if ip in ("0.0.0.0", "::"):
                found = route_source(family)
                ip = found if found is not None else ip
            addr = global_address(ip)
            if addr is None:
                continue
            if family == 6 and self.ipv6 is None:
                self.ipv6 = addr
            elif family == 4 and self.ipv4 is None:
                self.ipv4 = addr

    def vote(self, voter: str, reported: str) -> None:
        """Peer ``voter`` says it sees us at ``reported`` (BEP 10 ``yourip``)."""
        addr = global_address(reported)
        if addr is None or ":" in addr:
            return
        if voter in self._votes or len(self._votes) < MAX_VOTERS:
            self._votes[voter] = addr

    @property
    def external_ipv4(self) -> str | None:
        """The router's answer, else the address most peers report (at least ``MIN_VOTES``)."""
        if self.mapped_ipv4 is not None:
            return self.mapped_ipv4
        if not self._votes:
            return None
        addr, n = Counter(self._votes.values()).most_common(1)[0]
        return addr if n >= MIN_VOTES else None

    def announce_hints(self, *, external: bool = False) -> dict[str, str]:
        """BEP 7's ``ipv4=``/``ipv6=``: our address of each family we know. A tracker takes
        the one of the family it did not see the announce arrive over (the other is the
        source address it sees anyway). The external IPv4 address (router, peers) is
        told only with ``external`` (``Settings.announce_external_ip``)."""
        out = {}
        v4 = self.ipv4 or (self.external_ipv4 if external else None)
        if v4:
            out["ipv4"] = v4
        if self.ipv6:
            out["ipv6"] = self.ipv6
        return out
