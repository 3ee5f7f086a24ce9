"""NAT-PMP (RFC 6886) and PCP (RFC 6887) packets, sans-IO: port mapping on a home router.

Both speak UDP to the gateway's port 5351. A client asks for a *mapping*: "forward
external port E of protocol P to my internal port I for L seconds", renews it before L
runs out, and deletes it with a lifetime of 0.

NAT-PMP (version 0), network byte order:

* external address request ``00 00``; answer ``00 80 result(2) epoch(4) address(4)``;
* map request ``00 op 0000 internal(2) suggested-external(2) lifetime(4)`` with op 1 for
  UDP and 2 for TCP; answer ``00 op+128 result(2) epoch(4) internal(2) external(2)
  lifetime(4)``.

PCP (version 2) wraps the same idea in a 24-byte header (version, opcode with the response
bit, requested lifetime, our address as 16 bytes: IPv4 as ``::ffff:a.b.c.d``) followed by
the MAP opcode's 36 bytes (a 12-byte nonce that ties renewals and the delete to the
mapping, protocol number, internal port, suggested external port and address). The
answer repeats it with the assigned external port and address and a result code. A
NAT-PMP-only gateway answers a PCP request with a version-0 packet carrying result 1
("unsupported version"): :func:`decode` returns that as a :class:`MappingError` whose
``unsupported_version`` is true, so the caller can fall back.

Only what a BitTorrent client needs is here: MAP (and NAT-PMP's external address). PCP's
PEER and ANNOUNCE opcodes and options are not built; options in answers are ignored.
Everything received is checked: a packet of the wrong size, version or opcode raises
``RemoteProtocolError`` (never anything else).
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

from torrent.errors import RemoteProtocolError

__all__ = [
    "PORT",
    "ExternalAddress",
    "Mapping",
    "MappingError",
    "Protocol",
    "decode",
    "encode_external_address_request",
    "encode_natpmp_map",
    "encode_pcp_map",
    "retry_delays",
]

#: The gateway's NAT-PMP/PCP port (RFC 6886 §3.1, RFC 6887 §19.1).
PORT = 5351
NATPMP_VERSION = 0
PCP_VERSION = 2
#: PCP opcode MAP (RFC 6887 §19.2) and the response bit of the opcode byte.
PCP_OPCODE_MAP = 1
_RESPONSE = 0x80
#: A PCP answer is at most 1100 bytes (RFC 6887 §7).
MAX_PACKET = 1100
#: RFC 6886 §3.1: first retransmission after 250 ms, doubling, nine tries in all.
FIRST_RETRY_S = 0.25


class Protocol(enum.IntEnum):
    """IANA protocol numbers (what PCP carries); NAT-PMP maps them to opcodes 1 and 2."""

    TCP = 6
    UDP = 17

    @property
    def natpmp_opcode(self) -> int:
        return 2 if self is Protocol.TCP else 1


@dataclass(frozen=True, slots=True)
class ExternalAddress:
    """NAT-PMP's answer to the external address request."""

    address: str
    epoch_s: int


@dataclass(frozen=True, slots=True)
class Mapping:
    """A granted (or, with ``lifetime_s == 0``, deleted) mapping.

    ``external_address`` is only known with PCP (NAT-PMP answers it separately).
    ``nonce`` is PCP's (empty for NAT-PMP).
    """

    protocol: Protocol
    internal_port: int
    external_port: int
    lifetime_s: int
    epoch_s: int
    external_address: str | None = None
    nonce: bytes = b""
    pcp: bool = False


@dataclass(frozen=True, slots=True)
class MappingError:
    """The gateway refused: its result code and what the RFC calls it."""

    code: int
    reason: str
    pcp: bool

    @property
    def unsupported_version(self) -> bool:
        """A gateway of the other protocol version (fall back to NAT-PMP)."""
        return self.code == 1


_NATPMP_RESULTS = {
    0: "success",
    1: "unsupported version",
    2: "not authorized or refused",
    3: "network failure",
    4: "out of resources",
    5: "unsupported opcode",
}
_PCP_RESULTS = {
    0: "success",
    1: "unsupported version",
    2: "not authorized",
    3: "malformed request",
    4: "unsupported opcode",
    5: "unsupported option",
    6: "malformed option",
    7: "network failure",
    8: "no resources",
    9: "unsupported protocol",
    10: "user exceeded quota",
    11: "cannot provide external",
    12: "address mismatch",
    13: "excessive remote peers",
}


def _check_port(port: int, name: str) -> None:
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"{name} {port} is not a port number")


def _check_lifetime(lifetime_s: int) -> None:
    if not 0 <= lifetime_s <= 0xFFFFFFFF:
        raise ValueError(f"lifetime {lifetime_s} does not fit in 32 bits")


def encode_external_address_request() -> bytes:
    """NAT-PMP's "what is my external address?" (RFC 6886 §3.2)."""
    return bytes((NATPMP_VERSION, 0))


def encode_natpmp_map(protocol: Protocol, internal_port: int, external_port: int, lifetime_s: int) -> bytes:
    """A NAT-PMP map request (RFC 6886 §3.3); ``lifetime_s = 0`` (with external port 0)
    deletes the mapping of ``internal_port``."""
    _check_port(internal_port, "internal port")
    _check_port(external_port, "external port")
    _check_lifetime(lifetime_s)
    return struct.pack(
        "!BBHHHI", NATPMP_VERSION, protocol.natpmp_opcode, 0, internal_port, external_port, lifetime_s
    )


def _ip16(address: str) -> bytes:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv4Address):
        return b"\x00" * 10 + b"\xff\xff" + ip.packed
    return ip.packed


def encode_pcp_map(
    protocol: Protocol,
    internal_port: int,
    external_port: int,
    lifetime_s: int,
    *,
    client_address: str,
    nonce: bytes,
    suggested_address: str | None = None,
) -> bytes:
    """A PCP MAP request (RFC 6887 §11.1). ``client_address`` is our address as the
    gateway sees it (the source of the packet: the gateway checks it); ``nonce`` is 12
    bytes, the same for the renewals and the delete (``lifetime_s = 0``)."""
    _check_port(internal_port, "internal port")
    _check_port(external_port, "external port")
    _check_lifetime(lifetime_s)
    if len(nonce) != 12:
        raise ValueError("a PCP mapping nonce is 12 bytes")
    client = _ip16(client_address)
    if suggested_address is None:
        # "All zeros" of the client's family: no preference (RFC 6887 §11.1).
        suggested = _ip16("0.0.0.0") if client.startswith(b"\x00" * 10 + b"\xff\xff") else bytes(16)
    else:
        suggested = _ip16(suggested_address)
    header = struct.pack("!BBHI", PCP_VERSION, PCP_OPCODE_MAP, 0, lifetime_s) + client
    body = nonce + struct.pack("!B3xHH", protocol, internal_port, external_port) + suggested
    return header + body


def _address(raw: bytes) -> str:
    ip = ipaddress.IPv6Address(raw)
    return str(ip.ipv4_mapped if ip.ipv4_mapped is not None else ip)


def _decode_natpmp(data: bytes) -> ExternalAddress | Mapping | MappingError:
    opcode = data[1]
    if len(data) < 8 or not opcode & _RESPONSE:
        raise RemoteProtocolError("NAT-PMP: not an answer")
    result, epoch = struct.unpack_from("!HI", data, 2)
    if result:
        return MappingError(result, _NATPMP_RESULTS.get(result, f"result {result}"), pcp=False)
    op = opcode & ~_RESPONSE
    if op == 0:
        if len(data) != 12:
            raise RemoteProtocolError(f"NAT-PMP: external address answer of {len(data)} bytes")
        return ExternalAddress(str(ipaddress.IPv4Address(data[8:12])), epoch)
    if op in (1, 2):
        if len(data) != 16:
            raise RemoteProtocolError(f"NAT-PMP: map answer of {len(data)} bytes")
        internal, external, lifetime = struct.unpack_from("!HHI", data, 8)
        return Mapping(Protocol.TCP if op == 2 else Protocol.UDP, internal, external, lifetime, epoch)
    raise RemoteProtocolError(f"NAT-PMP: unknown opcode {op}")


def _decode_pcp(data: bytes) -> Mapping | MappingError:
    if len(data) < 24 or len(data) > MAX_PACKET or len(data) % 4:
        raise RemoteProtocolError(f"PCP: answer of {len(data)} bytes")
    opcode, result, lifetime, epoch = struct.unpack_from("!BxBII", data, 1)
    if not opcode & _RESPONSE:
        raise RemoteProtocolError("PCP: not an answer")
    if result:
        return MappingError(result, _PCP_RESULTS.get(result, f"result {result}"), pcp=True)
    if opcode & ~_RESPONSE != PCP_OPCODE_MAP:
        raise RemoteProtocolError(f"PCP: unexpected opcode {opcode & ~_RESPONSE}")
    if len(data) < 60:
        raise RemoteProtocolError(f"PCP: MAP answer of {len(data)} bytes")
    nonce = bytes(data[24:36])
    proto, internal, external = struct.unpack_from("!B3xHH", data, 36)
    if proto not in (Protocol.TCP, Protocol.UDP):
        raise RemoteProtocolError(f"PCP: protocol {proto} was never asked for")
    return Mapping(
        Protocol(proto), internal, external, lifetime, epoch, _address(bytes(data[44:60])), nonce, pcp=True
    )


def decode(data: bytes) -> ExternalAddress | Mapping | MappingError:
    """An answer from the gateway (either protocol, told apart by the version byte).

    Returns:
        The external address (NAT-PMP), the mapping granted, or the gateway's refusal.

    Raises:
        RemoteProtocolError: not a well-formed answer.
    """
    if len(data) < 2:
        raise RemoteProtocolError("NAT-PMP/PCP: packet too short")
    if data[0] == NATPMP_VERSION:
        return _decode_natpmp(data)
    if data[0] == PCP_VERSION:
        return _decode_pcp(data)
    raise RemoteProtocolError(f"NAT-PMP/PCP: unknown version {data[0]}")


def retry_delays(tries: int = 9) -> list[float]:
    """RFC 6886 §3.1 (and RFC 6887 §8.1.1's start): wait 250 ms for the first answer, then
    double the wait before each retransmission."""
    return [FIRST_RETRY_S * 2**i for i in range(tries)]
