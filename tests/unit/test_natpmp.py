"""NAT-PMP (RFC 6886) and PCP (RFC 6887) packets with literal bytes."""

from __future__ import annotations

import pytest

from torrent.errors import RemoteProtocolError
from torrent.proto import natpmp
from torrent.proto.natpmp import ExternalAddress, Mapping, MappingError, Protocol

NONCE = bytes(range(1, 13))


def test_external_address_request_is_two_zero_bytes() -> None:
    assert natpmp.encode_external_address_request() == b"\x00\x00"


def test_natpmp_map_request_bytes() -> None:
    # version 0, opcode 2 (TCP), reserved, internal 6881, suggested 6881, lifetime 3600
    assert natpmp.encode_natpmp_map(Protocol.TCP, 6881, 6881, 3600) == bytes.fromhex(
        "0002 0000 1ae1 1ae1 00000e10"
    )
    # opcode 1 is UDP; a delete has lifetime 0 and external port 0
    assert natpmp.encode_natpmp_map(Protocol.UDP, 6881, 0, 0) == bytes.fromhex("0001 0000 1ae1 0000 00000000")


def test_natpmp_answers_decode() -> None:
    # what miniupnpd sent in our runs: external address 11.22.33.44, epoch 0x2985
    assert natpmp.decode(bytes.fromhex("0080 0000 00002985 0b16212c")) == ExternalAddress(
        "11.22.33.44", 0x2985
    )
    assert natpmp.decode(bytes.fromhex("0082 0000 00002985 1ae1 1ae2 00000e10")) == Mapping(
        Protocol.TCP, 6881, 6882, 3600, 0x2985
    )
    assert natpmp.decode(bytes.fromhex("0081 0000 00000001 1ae1 1ae1 00000000")).protocol is Protocol.UDP  # type: ignore[union-attr]


def test_natpmp_refusals_carry_the_result_code() -> None:
    refused = natpmp.decode(bytes.fromhex("0082 0003 00002985 1ae1 1ae1 00000e10"))
    assert refused == MappingError(3, "network failure", pcp=False)
    # a NAT-PMP-only gateway answering a PCP request: version 0, "unsupported version"
    old = natpmp.decode(bytes.fromhex("0081 0001 00000000"))
    assert isinstance(old, MappingError)
    assert old.unsupported_version


def test_pcp_map_request_bytes() -> None:
    packet = natpmp.encode_pcp_map(Protocol.TCP, 6881, 6881, 7200, client_address="192.168.1.20", nonce=NONCE)
    assert packet == (
        bytes.fromhex("02 01 0000 00001c20")  # version 2, MAP, reserved, lifetime
        + bytes.fromhex("00000000000000000000ffff c0a80114")  # client address, IPv4-mapped
        + NONCE
        + bytes.fromhex("06 000000 1ae1 1ae1")  # TCP, reserved, internal, suggested external
        + bytes.fromhex("00000000000000000000ffff 00000000")  # no preferred address (IPv4 zeros)
    )
    assert len(packet) == 60


def _pcp_answer(result: int, lifetime: int, proto: int = 6, external: str = "0b16212c") -> bytes:
    return (
        bytes.fromhex("02 81 00") + bytes([result]) + lifetime.to_bytes(4, "big") + bytes.fromhex("00000100")
        + bytes(12)
        + NONCE
        + bytes([proto]) + bytes(3) + bytes.fromhex("1ae1 1ae3")
        + bytes.fromhex("00000000000000000000ffff") + bytes.fromhex(external)
    )  # fmt: skip


def test_pcp_answer_decodes_with_address_and_nonce() -> None:
    assert natpmp.decode(_pcp_answer(0, 120)) == Mapping(
        Protocol.TCP, 6881, 6883, 120, 0x100, "11.22.33.44", NONCE, pcp=True
    )
    assert natpmp.decode(_pcp_answer(2, 0)) == MappingError(2, "not authorized", pcp=True)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\x01\x80",  # unknown version
        bytes.fromhex("0002 0000 1ae1 1ae1 00000e10"),  # a request, not an answer
        bytes.fromhex("0080 0000 00002985 0b16"),  # short external address
        bytes.fromhex("0082 0000 00002985 1ae1 1ae2"),  # short map answer
        bytes.fromhex("0090 0000 00002985 1ae1 1ae2 00000000"),  # unknown opcode
        _pcp_answer(0, 120)[:40],  # short PCP
        _pcp_answer(0, 120, proto=1),  # a protocol we never asked for
        bytes.fromhex("02 01 0000") + bytes(56),  # a PCP request
    ],
)
def test_malformed_answers_raise_remote_errors(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        natpmp.decode(data)


def test_bad_arguments_are_local_errors() -> None:
    with pytest.raises(ValueError, match="port"):
        natpmp.encode_natpmp_map(Protocol.TCP, 70000, 1, 1)
    with pytest.raises(ValueError, match="nonce"):
        natpmp.encode_pcp_map(Protocol.TCP, 1, 1, 1, client_address="10.0.0.1", nonce=b"short")


def test_retransmission_schedule_doubles_from_250_ms() -> None:
    assert natpmp.retry_delays(4) == [0.25, 0.5, 1.0, 2.0]
