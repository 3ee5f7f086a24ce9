"""Hypothesis over the port mapping codecs: random bytes raise only RemoteProtocolError,
and answers built field by field decode to those fields."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given
from hypothesis import strategies as st

from torrent.errors import RemoteProtocolError
from torrent.proto import natpmp, upnp
from torrent.proto.natpmp import Mapping, Protocol

ports = st.integers(0, 0xFFFF)
lifetimes = st.integers(0, 0xFFFFFFFF)
protocols = st.sampled_from([Protocol.TCP, Protocol.UDP])


@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_else(data: bytes) -> None:
    for decode in (natpmp.decode, upnp.decode_search_response, upnp.decode_action_response):
        try:
            decode(data)
        except RemoteProtocolError:
            pass
    try:
        upnp.parse_description(data, "http://10.0.0.1/")
    except RemoteProtocolError:
        pass


@given(st.sampled_from([0, 2]), st.binary(max_size=80))
def test_random_bodies_after_a_valid_version_byte(version: int, rest: bytes) -> None:
    try:
        natpmp.decode(bytes([version, 0x80 | (rest[:1] or b"\x01")[0]]) + rest)
    except RemoteProtocolError:
        pass


@given(protocols, ports, ports, lifetimes, st.integers(0, 0xFFFFFFFF))
def test_natpmp_map_answer_round_trip(
    proto: Protocol, internal: int, external: int, life: int, epoch: int
) -> None:
    request = natpmp.encode_natpmp_map(proto, internal, external, life)
    answer = struct.pack("!BBHIHHI", 0, request[1] | 0x80, 0, epoch, internal, external, life)
    assert natpmp.decode(answer) == Mapping(proto, internal, external, life, epoch)


@given(protocols, ports, ports, lifetimes, st.binary(min_size=12, max_size=12), st.ip_addresses(v=4))
def test_pcp_request_fields_come_back_in_an_answer(
    proto: Protocol, internal: int, external: int, life: int, nonce: bytes, client: ipaddress.IPv4Address
) -> None:
    request = natpmp.encode_pcp_map(proto, internal, external, life, client_address=str(client), nonce=nonce)
    assert len(request) == 60
    # The gateway's answer: response bit, result 0 in byte 3, our body back with an address.
    answer = bytearray(request)
    answer[1] |= 0x80
    answer[2:4] = b"\x00\x00"
    answer[8:24] = bytes(16)
    answer[44:60] = b"\x00" * 10 + b"\xff\xff" + client.packed
    got = natpmp.decode(bytes(answer))
    assert got == Mapping(proto, internal, external, life, 0, str(client), nonce, pcp=True)


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=40))
def test_soap_arguments_survive_escaping(value: str) -> None:
    body, _ = upnp.encode_action("urn:x:service:T:1", "Act", [("Arg", value)])
    # The router's answer echoes the argument the same way.
    echoed = body.replace(b"<u:Act ", b"<u:ActResponse ").replace(b"</u:Act>", b"</u:ActResponse>")
    result = upnp.decode_action_response(echoed)
    assert isinstance(result, upnp.ActionResult)
    assert result.values["Arg"] == value.strip()
