"""ut_pex (BEP 11): the codec and what each peer is told."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torrent import config
from torrent.engine.peer_exchange import PeerExchange
from torrent.errors import RemoteProtocolError
from torrent.proto import bencoding, pex
from torrent.proto.mse import CryptoMethod
from torrent.proto.pex import PexFlags, PexMessage, PexSender


def test_round_trip_with_flags_and_both_families() -> None:
    msg = PexMessage(
        added=(
            (("10.0.0.1", 6881), PexFlags.SEED | PexFlags.REACHABLE),
            (("2001:db8::1", 51413), PexFlags.UTP),
        ),
        dropped=(("10.0.0.2", 1), ("2001:db8::2", 2)),
    )
    assert pex.decode(pex.encode(msg)) == msg


def test_wire_layout_is_the_beps() -> None:
    raw = bencoding.decode(pex.encode(PexMessage(added=((("1.2.3.4", 0x1A2B), PexFlags.SEED),))))
    assert raw[b"added"] == bytes([1, 2, 3, 4, 0x1A, 0x2B])
    assert raw[b"added.f"] == b"\x02"
    assert raw[b"dropped"] == raw[b"added6"] == raw[b"dropped6"] == b""


def test_libtorrent_style_message_without_flags_or_v6() -> None:
    payload = bencoding.encode({b"added": bytes([127, 0, 0, 1, 0, 80]) * 2 + b"\x01", b"dropped": b""})
    msg = pex.decode(payload)
    assert msg.added == ((("127.0.0.1", 80), PexFlags.NONE), (("127.0.0.1", 80), PexFlags.NONE))


@pytest.mark.parametrize(
    "payload",
    [
        b"not bencoded",
        bencoding.encode([1, 2]),
        bencoding.encode({b"added": 5}),
        bencoding.encode({b"dropped6": [b"x"]}),
    ],
)
def test_malformed_messages_are_protocol_errors(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        pex.decode(payload)


def test_hostile_sizes_are_bounded_and_port_zero_skipped() -> None:
    many = b"".join(bytes([10, 0, i // 256, i % 256, 0, 1]) for i in range(5000))
    msg = pex.decode(bencoding.encode({b"added": many, b"dropped": bytes([1, 1, 1, 1, 0, 0])}))
    assert len(msg.added) == pex.MAX_ACCEPTED
    assert msg.dropped == ()


@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_else(data: bytes) -> None:
    try:
        pex.decode(data)
    except RemoteProtocolError:
        pass


def test_sender_sends_the_difference_at_most_once_an_interval() -> None:
    s = PexSender(interval_s=60)
    a, b, c = ("10.0.0.1", 1), ("10.0.0.2", 2), ("10.0.0.3", 3)
    first = s.message({a: PexFlags.NONE, b: PexFlags.SEED}, now=0)
    assert first is not None
    assert dict(first.added) == {a: PexFlags.NONE, b: PexFlags.SEED}
    assert s.message({a: PexFlags.NONE, c: PexFlags.NONE}, now=59) is None  # not due yet
    second = s.message({a: PexFlags.NONE, c: PexFlags.NONE}, now=60)
    assert second is not None
    assert second.added == ((c, PexFlags.NONE),)
    assert second.dropped == (b,)
    assert s.message({a: PexFlags.NONE, c: PexFlags.NONE}, now=500) is None  # nothing changed


def test_sender_caps_added_per_message() -> None:
    s = PexSender(interval_s=60)
    swarm = {(f"10.0.{i // 256}.{i % 256}", 6881): PexFlags.NONE for i in range(120)}
    sizes = []
    for now in (0, 60, 120, 180):
        m = s.message(swarm, now=now)
        sizes.append(0 if m is None else len(m.added))
    assert sizes == [50, 50, 20, 0]


class _Transport:
    def __init__(self, method: object) -> None:
        self.method = method

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.method if name == "mse_method" else default


def test_exchange_flags_encrypted_peers_and_seeds() -> None:
    """``added.f``: 0x01 for a peer that speaks MSE with us, 0x02 for a seed, 0x10 for one we
    dialled (it accepts connections)."""

    def peer(host: str, *, mse: bool, seed: bool) -> Any:
        method = CryptoMethod.RC4 if mse else None
        return SimpleNamespace(
            addr=(host, 6881), peer_id=b"x" * 20, closed=False, outgoing=True, is_seed=seed,
            transport=_Transport(method),
        )  # fmt: skip

    peers = {
        p.addr: p for p in (peer("10.0.0.1", mse=True, seed=False), peer("10.0.0.2", mse=False, seed=True))
    }
    view = PeerExchange(config.testing_settings(), peers=peers, on_peers=lambda _a: None)._view()
    assert view == {
        ("10.0.0.1", 6881): pex.PexFlags.ENCRYPTION | pex.PexFlags.REACHABLE,
        ("10.0.0.2", 6881): pex.PexFlags.SEED | pex.PexFlags.REACHABLE,
    }
