"""Port mapping on the home router: asyncio around :mod:`torrent.proto.natpmp` and
:mod:`torrent.proto.upnp`.

Behind a NAT nobody can connect to us unless the router forwards our listen port. The
session runs one :class:`PortMapper` when ``Settings.port_mapping`` is on (and it listens
somewhere a router could forward to, i.e. not only on loopback):

1. The gateway is the default route's next hop (``/proc/net/route``). It is asked, on UDP
   port 5351, with PCP (RFC 6887) first; a NAT-PMP-only gateway answers "unsupported
   version" and is asked again with NAT-PMP (RFC 6886), whose external address request
   also tells us the router's public address. Requests are retransmitted after 250 ms,
   500 ms, 1 s, 2 s (RFC 6886 §3.1's start).
2. Without an answer, UPnP IGD: an SSDP ``M-SEARCH`` multicast from our LAN address, the
   device description over HTTP (the session's HTTP client), then SOAP
   ``GetExternalIPAddress`` and ``AddPortMapping`` (a router that only takes permanent
   leases, error 725, gets lease 0).
3. The TCP listen port and the UDP port (DHT, uTP) are mapped to the same external numbers
   when the router agrees; each mapping is renewed when half its lease has passed; on
   exit (:meth:`PortMapper.close`) every mapping is deleted (lifetime 0 /
   ``DeletePortMapping``) within a short bound.
4. The external address goes to ``on_external`` (the session's :class:`OurAddresses`:
   BEP 10 ``ipv4``, and the tracker ``ip=`` hint when ``announce_external_ip`` is set).

Every failure is one informative log line and never stops the session. IPv6 needs no
NAT; opening an IPv6 pinhole (PCP with an IPv6 client address, UPnP
``WANIPv6FirewallControl``) is not done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torrent.engine.clock import SYSTEM_CLOCK, Clock
from torrent.engine.http_client import HttpClient
from torrent.errors import RemoteProtocolError
from torrent.proto import natpmp, upnp
from torrent.proto.natpmp import Protocol

__all__ = ["MappingInfo", "PortMapper", "PortMappingStats", "default_gateway"]

log = logging.getLogger(__name__)

#: How mappings are described on the router (UPnP shows it in its table).
DESCRIPTION = "pytorrent"
#: Retransmissions of a NAT-PMP/PCP request (0.25 + 0.5 + 1 + 2 s of waiting).
TRIES = 4
#: Seconds to wait for SSDP answers, and for each HTTP exchange with a UPnP router.
SSDP_WAIT_S = 3.0
HTTP_TIMEOUT_S = 5.0
#: Seconds the deletes at exit may take in all.
CLOSE_TIMEOUT_S = 2.0
#: After a failed renewal, try again this much later (the lease may still run).
RETRY_S = 60.0
#: The renewal loop wakes at least this often.
RENEW_CHECK_MAX_S = 3600.0

_RTF_UP = 0x1
_RTF_GATEWAY = 0x2


def default_gateway(route_file: str = "/proc/net/route") -> str | None:
    """The IPv4 default route's gateway (Linux), or None."""
    try:
        with open(route_file, encoding="ascii") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 4 or fields[1] != "00000000":
            continue
        flags = int(fields[3], 16)
        if flags & _RTF_UP and flags & _RTF_GATEWAY:
            return socket.inet_ntoa(struct.pack("<I", int(fields[2], 16)))
    return None


def local_address_towards(host: str) -> str | None:
    """Our address on the link towards ``host`` (a connected UDP socket; sends nothing)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, 9))
        return str(sock.getsockname()[0])
    return None


@dataclass(frozen=True, slots=True)
class MappingInfo:
    """One mapping the router granted."""

    protocol: str
    internal_port: int
    external_port: int
    lease_s: int


@dataclass(frozen=True, slots=True)
class PortMappingStats:
    """What port mapping achieved: ``method`` is "pcp", "natpmp", "upnp" or "" (none)."""

    method: str
    external_address: str | None
    mappings: tuple[MappingInfo, ...]
    renewals: int
    error: str


@dataclass(slots=True)
class _Mapping:
    protocol: Protocol
    internal_port: int
    external_port: int = 0
    lease_s: int = 0
    renew_at: float = 0.0
    nonce: bytes = field(default_factory=lambda: os.urandom(12))


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue(maxsize=64)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        log.debug("port mapping socket: %s", exc)


class PortMapper:
    """See the module docstring.

    Args:
        tcp_port: our TCP listen port.
        udp_port: our UDP port (None: nothing to map on UDP).
        lease_s: the lease asked for; renewed at half of what is granted.
        http: the HTTP client UPnP talks through.
        on_external: receives the router's external IPv4 address.
        gateway: the NAT-PMP/PCP gateway; None: the default route's.
        methods: what to try, in order (tests pick one).
        ssdp_group: where the SSDP search goes (tests may aim it at a router directly).
        clock: when leases are due for renewal.
    """

    def __init__(
        self,
        *,
        tcp_port: Callable[[], int],
        udp_port: Callable[[], int | None],
        lease_s: int,
        http: HttpClient,
        on_external: Callable[[str], None] = lambda _ip: None,
        gateway: str | None = None,
        methods: tuple[str, ...] = ("pcp", "natpmp", "upnp"),
        ssdp_group: tuple[str, int] = (upnp.SSDP_GROUP, upnp.SSDP_PORT),
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._tcp_port = tcp_port
        self._udp_port = udp_port
        self._lease_s = lease_s
        self._http = http
        self._on_external = on_external
        self._gateway = gateway
        self._methods = methods
        self._ssdp_group = ssdp_group
        self._mappings: list[_Mapping] = []
        self._method = ""
        self._external: str | None = None
        self._local: str | None = None
        self._igd: upnp.Gateway | None = None
        self._renewals = 0
        self._error = ""
        self._gateway_used: str | None = None
        self._clock = clock
        #: Set once the first attempt is over (mapped or failed).
        self.ready = asyncio.Event()

    def statistics(self) -> PortMappingStats:
        return PortMappingStats(
            self._method,
            self._external,
            tuple(
                MappingInfo(m.protocol.name, m.internal_port, m.external_port, m.lease_s)
                for m in self._mappings
                if m.external_port
            ),
            self._renewals,
            self._error,
        )

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Map the ports, then renew them until cancelled. Failures are logged, not raised."""
        self._mappings = [_Mapping(Protocol.TCP, self._tcp_port())]
        udp = self._udp_port()
        if udp:
            self._mappings.append(_Mapping(Protocol.UDP, udp))
        try:
            await self._start()
        finally:
            self.ready.set()
        if not self._method:
            return
        while True:
            now = self._clock.monotonic()
            due = min((m.renew_at for m in self._mappings if m.external_port), default=now + RETRY_S)
            # A permanent UPnP lease is never due: look again now and then all the same.
            await asyncio.sleep(min(max(0.0, due - now), RENEW_CHECK_MAX_S))
            await self._renew_due()

    @property
    def mapped(self) -> bool:
        return any(m.external_port for m in self._mappings)

    async def _start(self) -> None:
        gateway = self._gateway or default_gateway()
        tried: list[str] = []
        for method in self._methods:
            try:
                if method in ("pcp", "natpmp") and gateway is not None:
                    ok = await self._start_pmp(gateway, pcp=method == "pcp")
                elif method == "upnp":
                    ok = await self._start_upnp()
                else:
                    continue
            except (OSError, RemoteProtocolError, TimeoutError) as exc:
                tried.append(f"{method}: {exc or type(exc).__name__}")
                continue
            if ok:
                self._method = method
                self._error = ""
                ports = ", ".join(
                    f"{m.protocol.name} {m.internal_port}->{m.external_port}" for m in self._mappings
                )
                log.info(
                    "port mapping (%s): %s, external address %s", method, ports, self._external or "unknown"
                )
                return
            tried.append(f"{method}: {self._error}")
        where = f"gateway {gateway}" if gateway else "no default gateway"
        self._error = "; ".join(tried) or "nothing to try"
        log.warning("port mapping failed (%s): %s", where, self._error)

    async def _renew_due(self) -> None:
        now = self._clock.monotonic()
        for m in self._mappings:
            if not m.external_port or m.renew_at > now:
                continue
            try:
                ok = await self._map(m, self._lease_s)
            except (OSError, RemoteProtocolError, TimeoutError) as exc:
                ok, self._error = False, str(exc) or type(exc).__name__
            if ok:
                self._renewals += 1
            else:
                log.warning(
                    "port mapping: renewing %s %d failed: %s", m.protocol.name, m.internal_port, self._error
                )
                m.renew_at = now + RETRY_S

    async def close(self) -> None:
        """Delete every mapping (bounded by ``CLOSE_TIMEOUT_S``); errors are logged."""
        mapped = [m for m in self._mappings if m.external_port]
        if not mapped or not self._method:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                for m in mapped:
                    await self._map(m, 0)
                    m.external_port = 0
        except (OSError, RemoteProtocolError, TimeoutError) as exc:
            log.info("port mapping: removing the mappings failed: %s", exc or type(exc).__name__)

    async def _map(self, m: _Mapping, lease_s: int) -> bool:
        if self._method == "upnp" or (not self._method and self._igd is not None):
            return await self._map_upnp(m, lease_s)
        assert self._gateway_used is not None
        return await self._map_pmp(self._gateway_used, m, lease_s, pcp=self._method == "pcp")

    # ------------------------------------------------------------------ NAT-PMP / PCP

    async def _start_pmp(self, gateway: str, *, pcp: bool) -> bool:
        self._gateway_used = gateway
        self._local = local_address_towards(gateway)
        if not pcp:
            answer = await self._exchange(gateway, natpmp.encode_external_address_request(), 0)
            if isinstance(answer, natpmp.ExternalAddress):
                self._set_external(answer.address)
            elif isinstance(answer, natpmp.MappingError):
                self._error = f"external address: {answer.reason}"
                return False
        # What the router granted stays mapped (and is deleted at exit) even if the rest fails.
        granted = [await self._map_pmp(gateway, m, self._lease_s, pcp=pcp) for m in self._mappings]
        return any(granted)

    async def _map_pmp(self, gateway: str, m: _Mapping, lease_s: int, *, pcp: bool) -> bool:
        external = m.external_port or m.internal_port
        if pcp:
            packet = natpmp.encode_pcp_map(
                m.protocol,
                m.internal_port,
                external,
                lease_s,
                client_address=self._local or "0.0.0.0",
                nonce=m.nonce,
            )
        else:
            packet = natpmp.encode_natpmp_map(
                m.protocol, m.internal_port, external if lease_s else 0, lease_s
            )
        answer = await self._exchange(gateway, packet, m.protocol.natpmp_opcode if not pcp else -1)
        if isinstance(answer, natpmp.MappingError):
            self._error = (
                f"{'PCP' if pcp else 'NAT-PMP'} {m.protocol.name} {m.internal_port}: {answer.reason}"
            )
            return False
        if not isinstance(answer, natpmp.Mapping):
            self._error = "unexpected answer"
            return False
        if lease_s:
            m.external_port, m.lease_s = answer.external_port, answer.lifetime_s
            m.renew_at = self._clock.monotonic() + max(answer.lifetime_s / 2, 1.0)
            if answer.external_address is not None and answer.external_address not in ("0.0.0.0", "::"):
                self._set_external(answer.external_address)
        return True

    async def _exchange(
        self, gateway: str, packet: bytes, natpmp_op: int
    ) -> natpmp.ExternalAddress | natpmp.Mapping | natpmp.MappingError:
        """Send ``packet`` to the gateway until an answer to it arrives (retransmitting)."""
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(_Datagrams, remote_addr=(gateway, natpmp.PORT))
        try:
            for wait_s in natpmp.retry_delays(TRIES):
                transport.sendto(packet)
                deadline = loop.time() + wait_s
                while (left := deadline - loop.time()) > 0:
                    try:
                        async with asyncio.timeout(left):
                            data, _addr = await proto.queue.get()
                    except TimeoutError:
                        break
                    try:
                        answer = natpmp.decode(data)
                    except RemoteProtocolError:
                        continue
                    if _answers(answer, packet, natpmp_op):
                        return answer
            raise TimeoutError(f"no answer from {gateway}:{natpmp.PORT}")
        finally:
            transport.close()

    def _set_external(self, address: str) -> None:
        if address != self._external:
            self._external = address
            self._on_external(address)

    # ------------------------------------------------------------------ UPnP IGD

    async def _start_upnp(self) -> bool:
        found = await self._search()
        if found is None:
            self._error = "no UPnP router answered the SSDP search"
            return False
        location, local = found
        self._local = local
        description = await self._http_body("GET", location, upnp.MAX_DESCRIPTION + 1)
        self._igd = upnp.parse_description(description, location)
        result = await self._soap(upnp.get_external_ip_address(self._igd.service_type))
        if isinstance(result, upnp.ActionResult) and result.values.get("NewExternalIPAddress"):
            self._set_external(result.values["NewExternalIPAddress"])
        granted = [await self._map_upnp(m, self._lease_s) for m in self._mappings]
        return any(granted)

    async def _search(self) -> tuple[str, str] | None:
        """Multicast the SSDP search from our LAN address: (description URL, that address)."""
        gateway = self._gateway or default_gateway()
        local = local_address_towards(gateway or self._ssdp_group[0]) or "0.0.0.0"
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            sock.bind((local, 0))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(local))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(_Datagrams, sock=sock)
        try:
            transport.sendto(upnp.encode_search(), self._ssdp_group)
            deadline = loop.time() + SSDP_WAIT_S
            while (left := deadline - loop.time()) > 0:
                try:
                    async with asyncio.timeout(left):
                        data, _addr = await proto.queue.get()
                except TimeoutError:
                    return None
                with contextlib.suppress(RemoteProtocolError):
                    answer = upnp.decode_search_response(data)
                    return answer.location, local
            return None
        finally:
            transport.close()

    async def _soap(self, request: tuple[bytes, str]) -> upnp.ActionResult | upnp.SoapFault:
        assert self._igd is not None
        body, action = request
        headers = {"Content-Type": 'text/xml; charset="utf-8"', "SOAPAction": action}
        data = await self._http_body(
            "POST", self._igd.control_url, upnp.MAX_SOAP_RESPONSE + 1, data=body, headers=headers
        )
        return upnp.decode_action_response(data)

    async def _http_body(self, method: str, url: str, limit: int, **kwargs: Any) -> bytes:
        """At most ``limit`` bytes of the answer to one UPnP HTTP request; an HTTP
        failure is raised as a ``ConnectionError`` (only UPnP speaks HTTP, so only it
        loads aiohttp: see :mod:`torrent.engine.http_client`)."""
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
        try:
            async with self._http.session().request(method, url, timeout=timeout, **kwargs) as resp:
                return await resp.content.read(limit)
        except aiohttp.ClientError as exc:
            raise ConnectionError(f"{method} {url}: {exc or type(exc).__name__}") from None

    async def _map_upnp(self, m: _Mapping, lease_s: int) -> bool:
        igd = self._igd
        assert igd is not None
        external = m.external_port or m.internal_port
        if not lease_s:
            await self._soap(
                upnp.delete_port_mapping(igd.service_type, external_port=external, protocol=m.protocol.name)
            )
            return True
        for lease in (lease_s, 0):
            result = await self._soap(
                upnp.add_port_mapping(
                    igd.service_type,
                    external_port=external,
                    protocol=m.protocol.name,
                    internal_port=m.internal_port,
                    internal_client=self._local or "",
                    description=f"{DESCRIPTION} {m.protocol.name} {m.internal_port}",
                    lease_s=lease,
                )
            )
            if isinstance(result, upnp.ActionResult):
                m.external_port, m.lease_s = external, lease
                # A permanent lease (0) needs no renewal; it is deleted at exit.
                m.renew_at = self._clock.monotonic() + (lease / 2 if lease else float("inf"))
                return True
            if result.code != upnp.ONLY_PERMANENT_LEASES:
                self._error = (
                    f"UPnP AddPortMapping {m.protocol.name} {external}: {result.code} {result.description}"
                )
                return False
        return False


def _answers(
    answer: natpmp.ExternalAddress | natpmp.Mapping | natpmp.MappingError, packet: bytes, op: int
) -> bool:
    """Is ``answer`` the reply to ``packet``? (A stray announcement is not.)"""
    if isinstance(answer, natpmp.MappingError):
        return True  # a refusal of what we just sent (or of its version)
    if isinstance(answer, natpmp.ExternalAddress):
        return op == 0
    if answer.pcp:
        return answer.nonce == packet[24:36]
    return op == answer.protocol.natpmp_opcode and answer.internal_port == int.from_bytes(packet[4:6], "big")
