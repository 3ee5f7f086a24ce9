"""IPv4 + IPv6 at once, without sockets: listen settings and flags, our own addresses,
BEP 7 announce hints, BEP 10 address fields, the peer list's spelling of addresses."""

from __future__ import annotations

import argparse

import pytest

from cli.cmd_download import build_settings, parse_listen
from cli.main import build_parser
from torrent import config
from torrent.config import Settings
from torrent.engine.addresses import OurAddresses, canonical_host, global_address
from torrent.engine.peer_list import PeerList
from torrent.proto import wire
from torrent.proto.tracker_codec import AnnounceRequest, build_announce_query, parse_announce_query
from torrent.types import InfoHash, PeerId


def test_listen_addresses_default_is_dual_stack_on_one_port() -> None:
    assert Settings().listen_addresses() == (("0.0.0.0", 6881), ("::", 0))
    assert Settings(listen_host="127.0.0.1", listen_port=7000).listen_addresses() == (("127.0.0.1", 7000),)
    explicit = Settings(listen_interfaces=(("::1", 0), ("127.0.0.1", 0)))
    assert explicit.listen_addresses() == (("::1", 0), ("127.0.0.1", 0))
    assert config.testing_settings().listen_addresses() == (("127.0.0.1", 0),)


def test_settings_refuse_bad_listen_addresses_and_leases() -> None:
    with pytest.raises(ValueError, match="listen_interfaces"):
        Settings(listen_interfaces=(("", 1),)).validate()
    with pytest.raises(ValueError, match="listen_interfaces"):
        Settings(listen_interfaces=(("::", 70000),)).validate()
    with pytest.raises(ValueError, match="port_mapping_lease_s"):
        Settings(port_mapping_lease_s=1).validate()


def test_port_mapping_is_on_by_default_and_off_for_tests() -> None:
    assert Settings().port_mapping
    assert not config.testing_settings().port_mapping


def test_parse_listen() -> None:
    assert parse_listen("0.0.0.0:6881,[::]:6881") == (("0.0.0.0", 6881), ("::", 6881))
    assert parse_listen(" [::1]:0 ") == (("::1", 0),)
    for bad in ("", "::1:6881", "host", "1.2.3.4:99999", "[::1]:x"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_listen(bad)


def test_flags_reach_the_settings() -> None:
    args = build_parser("download").parse_args(
        ["download", "x.torrent", "--listen", "127.0.0.1:0,[::1]:0", "--no-port-mapping"]
    )
    s = build_settings(args)
    assert s.listen_interfaces == (("127.0.0.1", 0), ("::1", 0))
    assert not s.port_mapping
    plain = build_settings(build_parser("download").parse_args(["download", "x.torrent"]))
    assert plain.port_mapping
    assert plain.listen_addresses() == (("0.0.0.0", 6881), ("::", 0))


def test_canonical_and_global_addresses() -> None:
    assert canonical_host("::ffff:10.0.0.1") == "10.0.0.1"
    assert canonical_host("2001:DB8:0:0::1") == "2001:db8::1"
    assert canonical_host("tracker.example") == "tracker.example"
    assert global_address("127.0.0.1") is None
    assert global_address("192.168.1.2") is None
    assert global_address("fe80::1") is None
    assert global_address("11.22.33.44") == "11.22.33.44"
    assert global_address("2a00:1450::1") == "2a00:1450::1"


def test_our_addresses_hints_and_votes() -> None:
    book = OurAddresses()
    book.learn_listeners(["127.0.0.1", "::1", "2a00:1450::5", "11.22.33.44"])
    assert (book.ipv4, book.ipv6) == ("11.22.33.44", "2a00:1450::5")
    assert book.announce_hints() == {"ipv4": "11.22.33.44", "ipv6": "2a00:1450::5"}
    votes = OurAddresses()
    votes.vote("10.0.0.2", "81.2.3.4")
    assert votes.external_ipv4 is None  # one voice is not enough
    votes.vote("10.0.0.3", "81.2.3.4")
    votes.vote("10.0.0.4", "192.168.0.9")  # private: ignored
    assert votes.external_ipv4 == "81.2.3.4"
    votes.mapped_ipv4 = "11.22.33.44"  # the router's word wins
    assert votes.external_ipv4 == "11.22.33.44"
    assert votes.announce_hints() == {}  # the external address only when asked for
    assert votes.announce_hints(external=True) == {"ipv4": "11.22.33.44"}


def test_bep7_parameters_in_the_announce_query() -> None:
    req = AnnounceRequest(
        info_hash=InfoHash(b"\x01" * 20), peer_id=PeerId(b"-PT0100-" + b"a" * 12), port=6881,
        ipv4="11.22.33.44", ipv6="2a00:1450::5",
    )  # fmt: skip
    query = build_announce_query(req)
    assert "&ipv6=2a00%3A1450%3A%3A5" in query
    assert "&ipv4=11.22.33.44" in query
    back = parse_announce_query(query)
    assert (back.ipv4, back.ipv6) == ("11.22.33.44", "2a00:1450::5")


def test_bep10_address_fields_decode() -> None:
    hs = wire.ExtensionHandshake(
        {b"yourip": bytes([11, 22, 33, 44]), b"ipv6": bytes(15) + b"\x01", b"ipv4": b"\x0a\x00\x00\x01"}
    )
    assert (hs.yourip, hs.ipv6, hs.ipv4) == ("11.22.33.44", "::1", "10.0.0.1")
    odd = wire.ExtensionHandshake({b"yourip": b"abc", b"ipv6": b"\x00" * 4, b"ipv4": "1.2.3.4"})
    assert (odd.yourip, odd.ipv6, odd.ipv4) == (None, None, None)


def test_peer_list_keeps_one_spelling_per_address() -> None:
    peers = PeerList(config.testing_settings())
    assert peers.add(("::ffff:127.0.0.1", 6881))
    assert not peers.add(("127.0.0.1", 6881))
    assert peers.add(("::1", 6881))  # the other family: its own entry until the peer id is known
    assert peers.add(("0:0::1", 6882))
    assert not peers.add(("::0001", 6882))
    assert len(peers) == 3


def test_the_daemon_takes_listen_and_no_port_mapping_too() -> None:
    args = build_parser("daemon").parse_args(["daemon", "--listen", "[::]:6881", "--no-port-mapping"])
    assert args.listen == (("::", 6881),)
    assert args.no_port_mapping
