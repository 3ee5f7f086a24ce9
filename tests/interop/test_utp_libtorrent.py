"""uTP against libtorrent (PyPI bindings 2.1.1), with libtorrent's TCP switched off both ways.

* A libtorrent seed that speaks uTP only (``enable_incoming_tcp`` / ``enable_outgoing_tcp``
  off) serves our leecher with its default uTP and encryption settings: our dial goes uTP first
  and must not fall back to TCP.
* Our seed serves a uTP-only libtorrent leecher that dials us.
* Both again over ``::1``: libtorrent listens on ``[::1]`` and we on both families.
* A Transmission 3.00 seed with ``utp-enabled`` serves our leecher; Transmission cannot turn
  TCP off, so our side checks that the connection it used is a uTP stream.

Each transfer is checked byte for byte, and libtorrent's own peer list must say the connection
is a uTP socket. ``lo`` is set to MTU 1500 inside the namespace, so packets have internet
sizes. DHT, LSD, UPnP and NAT-PMP are off; the tests run only in a loopback-only namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.swarm_helpers import make_payload, make_torrent, same_tree
from tests.interop.conftest import need
from tests.interop.peers import TransmissionPeer
from tests.libtorrent_settings import loopback_settings, lt_add, lt_listen_port, lt_session
from tests.polling import wait_until
from tests.utp_helpers import loopback_mtu
from torrent import config
from torrent.engine.session import Session
from torrent.proto.metainfo import Metainfo

pytestmark = [pytest.mark.interop, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

SIZE = 6_000_000

#: libtorrent speaking uTP only.
UTP_ONLY: dict[str, object] = {
    "enable_incoming_tcp": False,
    "enable_outgoing_tcp": False,
    "enable_incoming_utp": True,
    "enable_outgoing_utp": True,
}


@pytest.fixture
def lt(loopback_only: None) -> Iterator[Any]:
    need("libtorrent")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import libtorrent

    with loopback_mtu(1500):
        yield libtorrent


def files(tmp_path: Path) -> tuple[Path, Path]:
    content = make_payload(tmp_path / "seed", "utp.bin", SIZE, seed=29)
    meta = make_torrent(content, piece_length=256 * 1024)
    torrent = tmp_path / "utp.torrent"
    torrent.write_bytes(meta.to_bytes())
    return content, torrent


def lt_utp_peers(lt: Any, handle: Any) -> list[bool]:
    """For each of libtorrent's peers: is it a uTP socket? The bindings do not export
    ``peer_info::utp_socket``; it is the flag bit after ``i2p_socket`` (bits 16, 17)."""
    utp_socket = int(lt.peer_info.i2p_socket) << 1
    return [bool(int(p.flags) & utp_socket) for p in handle.get_peer_info()]


async def test_libtorrent_utp_only_seed_to_our_default_leecher(lt: Any, tmp_path: Path) -> None:
    content, torrent = files(tmp_path)
    meta = Metainfo.from_bytes(torrent.read_bytes())
    async with asyncio.timeout(120):
        with lt_session(lt, **UTP_ONLY) as lt_s:
            port = await lt_listen_port(lt_s)
            handle = lt_add(lt, lt_s, torrent, content.parent)
            await wait_until(lambda: handle.status().is_seeding, timeout_s=30, what="libtorrent seeding")
            async with Session(config.testing_settings()) as ours:
                leech = await ours.add_torrent(
                    meta, tmp_path / "leech", seed=False, peers=[("127.0.0.1", port)]
                )
                await leech.wait_complete()
                assert ours.dial_statistics().utp >= 1
                assert ours.dial_statistics().tcp_fallbacks == 0
                assert lt_utp_peers(lt, handle) in ([True], [])
    assert same_tree(content, tmp_path / "leech" / "utp.bin")


async def test_our_seed_to_a_libtorrent_utp_only_leecher(lt: Any, tmp_path: Path) -> None:
    content, torrent = files(tmp_path)
    meta = Metainfo.from_bytes(torrent.read_bytes())
    async with asyncio.timeout(120), Session(config.testing_settings()) as ours:
        seed = await ours.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        with lt_session(lt, **UTP_ONLY) as lt_s:
            handle = lt_add(lt, lt_s, torrent, tmp_path / "lt")
            handle.connect_peer(("127.0.0.1", ours.port))
            await wait_until(lambda: any(lt_utp_peers(lt, handle)), timeout_s=30, what="a uTP connection")
            await wait_until(
                lambda: handle.status().is_seeding, timeout_s=90, interval_s=0.1, what="libtorrent complete"
            )
        stats = ours.utp_statistics()
        assert stats is not None
        assert stats.malformed + stats.bad_type + stats.bad_version == 0
    assert same_tree(content, tmp_path / "lt" / "utp.bin")


@contextlib.contextmanager
def lt_utp_session_v6(lt: Any) -> Iterator[Any]:
    """A uTP-only libtorrent session listening on ``[::1]`` only."""
    session = lt.session(loopback_settings("::1", 0, **UTP_ONLY))
    try:
        yield session
    finally:
        session.pause()
        del session


DUAL_STACK = config.testing_settings().replace(listen_interfaces=(("127.0.0.1", 0), ("::1", 0)))


async def test_libtorrent_utp_only_seed_to_our_leecher_over_ipv6(lt: Any, tmp_path: Path) -> None:
    content, torrent = files(tmp_path)
    meta = Metainfo.from_bytes(torrent.read_bytes())
    async with asyncio.timeout(120):
        with lt_utp_session_v6(lt) as lt_s:
            port = await lt_listen_port(lt_s)
            handle = lt_add(lt, lt_s, torrent, content.parent)
            await wait_until(lambda: handle.status().is_seeding, timeout_s=30, what="libtorrent seeding")
            async with Session(DUAL_STACK) as ours:
                leech = await ours.add_torrent(meta, tmp_path / "leech", seed=False, peers=[("::1", port)])
                await leech.wait_complete()
                assert ours.dial_statistics().utp >= 1
                assert ours.dial_statistics().tcp_fallbacks == 0
                assert {p.host for p in leech.peers()} <= {"::1"}
                assert lt_utp_peers(lt, handle) in ([True], [])
    assert same_tree(content, tmp_path / "leech" / "utp.bin")


async def test_our_seed_to_a_libtorrent_utp_only_leecher_over_ipv6(lt: Any, tmp_path: Path) -> None:
    content, torrent = files(tmp_path)
    meta = Metainfo.from_bytes(torrent.read_bytes())
    async with asyncio.timeout(120), Session(DUAL_STACK) as ours:
        seed = await ours.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        with lt_utp_session_v6(lt) as lt_s:
            handle = lt_add(lt, lt_s, torrent, tmp_path / "lt")
            handle.connect_peer(("::1", ours.port))
            await wait_until(lambda: any(lt_utp_peers(lt, handle)), timeout_s=30, what="a uTP connection")
            await wait_until(lambda: [p.host for p in seed.peers()] == ["::1"], what="our peer on ::1")
            await wait_until(
                lambda: handle.status().is_seeding, timeout_s=90, interval_s=0.1, what="libtorrent complete"
            )
        stats = ours.utp_statistics()
        assert stats is not None
        assert stats.malformed + stats.bad_type + stats.bad_version == 0
    assert same_tree(content, tmp_path / "lt" / "utp.bin")


class TransmissionUtp(TransmissionPeer):
    utp = True


async def test_transmission_seed_to_our_leecher_over_utp(loopback_only: None, tmp_path: Path) -> None:
    need("transmission")
    content, torrent = files(tmp_path)
    meta = Metainfo.from_bytes(torrent.read_bytes())
    with loopback_mtu(1500):
        async with asyncio.timeout(150), TransmissionUtp(tmp_path / "transmission") as tr:
            ih = await tr.add(torrent, content.parent, seed=True)
            await tr.wait_seeding(ih, timeout_s=60)
            async with Session(config.testing_settings()) as ours:
                leech = await ours.add_torrent(
                    meta, tmp_path / "leech", seed=False, peers=[("127.0.0.1", tr.peer_port)]
                )
                await wait_until(
                    lambda: any(
                        p.transport is not None and p.transport.get_extra_info("utp")
                        for p in leech.swarm.peers.values()
                    ),
                    timeout_s=30,
                    what="a uTP connection to Transmission",
                )
                await leech.wait_complete()
                assert ours.dial_statistics().utp >= 1
                assert ours.dial_statistics().tcp_fallbacks == 0
    assert same_tree(content, tmp_path / "leech" / "utp.bin")
