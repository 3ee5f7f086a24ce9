"""torrent.proto.magnet: BEP 9 / BEP 53 magnet links, both ways."""

from __future__ import annotations

import base64

import pytest

from torrent.errors import MetainfoError
from torrent.proto.magnet import Magnet

IH = bytes(range(20))
HEX = IH.hex()
B32 = base64.b32encode(IH).decode()


def test_hex_and_base32_give_the_same_hash() -> None:
    assert Magnet.parse(f"magnet:?xt=urn:btih:{HEX}").info_hash == IH
    assert Magnet.parse(f"magnet:?xt=urn:btih:{HEX.upper()}").info_hash == IH
    assert Magnet.parse(f"magnet:?xt=urn:btih:{B32}").info_hash == IH
    assert Magnet.parse(f"magnet:?xt=urn:btih:{B32.lower()}").info_hash == IH


def test_every_parameter() -> None:
    uri = (
        f"magnet:?xt=urn:btih:{HEX}&dn=My%20File+Name&tr=http%3A%2F%2Fa%2Fann&tr=udp://b:80"
        "&tr=http%3A%2F%2Fa%2Fann&ws=http%3A%2F%2Fws%2Ff&x.pe=10.0.0.1:6881&x.pe=[::1]:51413"
        "&so=0,2,4-6&unknown=ignored"
    )
    m = Magnet.parse(uri)
    assert m.name == "My File Name"
    assert m.trackers == ("http://a/ann", "udp://b:80")  # duplicates dropped, order kept
    assert m.web_seeds == ("http://ws/f",)
    assert m.peers == (("10.0.0.1", 6881), ("::1", 51413))
    assert m.select_only == (0, 2, 4, 5, 6)


def test_round_trip() -> None:
    m = Magnet(
        info_hash=IH,
        name="a b/ü",
        trackers=("http://t/a?x=1&y=2", "udp://u:1"),
        web_seeds=("http://w/",),
        peers=(("1.2.3.4", 5), ("::1", 6)),
        select_only=(0, 1, 2, 5, 7, 8),
    )
    uri = m.to_uri()
    assert uri.startswith(f"magnet:?xt=urn:btih:{HEX}&dn=")
    assert "so=0-2,5,7-8" in uri
    assert Magnet.parse(uri) == m


def test_minimal() -> None:
    m = Magnet.parse(f"magnet:?xt=urn:btih:{HEX}")
    assert (m.name, m.trackers, m.web_seeds, m.peers, m.select_only) == ("", (), (), (), ())
    assert m.to_uri() == f"magnet:?xt=urn:btih:{HEX}"


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("http://example.com/?xt=urn:btih:" + HEX, "not a magnet"),
        ("magnet:?dn=x", "xt"),
        ("magnet:?xt=urn:btih:" + HEX[:-1], "40 hex or 32 base32"),
        ("magnet:?xt=urn:btih:" + "zz" * 20, "hex"),
        ("magnet:?xt=urn:btih:" + "1" * 32, "base32"),
        ("magnet:?xt=urn:btmh:1114" + "00" * 32, "SHA-256"),
        ("magnet:?xt=urn:btmh:1220" + "00" * 31, "64 hex"),
        ("magnet:?xt=urn:btmh:1220" + "zz" * 32, "hex"),
        (f"magnet:?xt=urn:btih:{HEX}&x.pe=nohost", "host:port"),
        (f"magnet:?xt=urn:btih:{HEX}&x.pe=h:0", "port"),
        (f"magnet:?xt=urn:btih:{HEX}&x.pe=h:70000", "port"),
        (f"magnet:?xt=urn:btih:{HEX}&so=a", "index"),
        (f"magnet:?xt=urn:btih:{HEX}&so=5-2", "backwards"),
        (f"magnet:?xt=urn:btih:{HEX}&so=0-99999999", "more than"),
        ("magnet:?xt=urn:btih:" + HEX + "&" + "a" * 70_000, "longer"),
    ],
)
def test_errors_are_metainfo_errors(uri: str, needle: str) -> None:
    with pytest.raises(MetainfoError, match=needle):
        Magnet.parse(uri)


def test_non_text_is_refused() -> None:
    with pytest.raises(MetainfoError):
        Magnet.parse(b"magnet:?xt=urn:btih:" + HEX.encode())  # type: ignore[arg-type]


V2 = "ab" * 32


def test_v2_only_link_names_the_torrent_by_the_truncated_hash() -> None:
    m = Magnet.parse(f"magnet:?xt=urn:btmh:1220{V2}&dn=x")
    assert m.v2_only
    assert m.info_hash_v1 is None
    assert m.info_hash_v2 == bytes.fromhex(V2)
    assert m.info_hash == bytes.fromhex(V2)[:20]
    assert m.to_uri() == f"magnet:?xt=urn:btmh:1220{V2}&dn=x"
    assert Magnet.parse(m.to_uri()) == m


def test_hybrid_link_carries_both_hashes() -> None:
    m = Magnet.parse(f"magnet:?xt=urn:btmh:1220{V2.upper()}&xt=urn:btih:{HEX}")
    assert not m.v2_only
    assert m.info_hash == bytes.fromhex(HEX)
    assert m.info_hash_v2 == bytes.fromhex(V2)
    assert m.to_uri() == f"magnet:?xt=urn:btih:{HEX}&xt=urn:btmh:1220{V2}"
