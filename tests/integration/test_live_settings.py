"""Settings a running session changes without restarting: the listen port, encryption,
the DHT, PEX and uTP (LSD has its own test in ``test_lsd.py``: it needs a namespace).

Everything stays on loopback: the DHT nodes bootstrap from a node of the test's.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from tests.integration.dht_helpers import TEST_CONFIG, loopback_host
from tests.integration.swarm_helpers import free_port, make_payload, make_torrent, our_tracker, same_tree
from tests.polling import wait_until
from torrent import config
from torrent.config import Encryption
from torrent.engine.dht_node import DhtNode, load_state
from torrent.engine.session import Session, Torrent
from torrent.errors import TorrentError
from torrent.proto import pex
from torrent.proto.metainfo import Metainfo


def _tasks_named(name: str) -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if not t.done() and name in repr(t.get_coro())]


def _extensions(torrent: Torrent) -> dict[str, int] | None:
    """What the one connected peer's extension handshake offered (None before it came)."""
    peers = [p for p in torrent.swarm.peers.values() if p.proto is not None and p.peer_id is not None]
    if len(peers) != 1 or peers[0].proto is None or peers[0].proto.peer_extension_handshake is None:
        return None
    return dict(peers[0].proto.peer_extensions)


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


async def test_listen_port_moves_tcp_and_udp_and_peers_find_the_new_one(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "port.bin", 200_000)
    settings = config.testing_settings().replace(seed_ratio=None)
    # A long interval: the seed's next announce is only the one the port change asks for.
    async with asyncio.timeout(30), our_tracker(interval_s=600) as tracker:
        meta = make_torrent(content, trackers=[tracker.urls()[0]])
        async with Session(settings) as seed_s, Session(settings) as leech_s:
            await _moves(tmp_path, content, meta, seed_s, leech_s)


async def _moves(tmp_path: Path, content: Path, meta: Metainfo, seed_s: Session, leech_s: Session) -> None:
    """The port moves; the tracker, and through it a new peer, learn the new one."""
    seed = await seed_s.add_torrent(meta, tmp_path / "seed")
    await seed.wait_checked()
    await wait_until(lambda: seed.last_announce() is not None, what="the seed announced")
    old = seed_s.port
    assert seed_s.utp_statistics() is not None
    new = free_port()
    changed_at = time.monotonic()
    await seed_s.set_listen_port(new)
    assert seed_s.port == new == seed_s.settings.listen_port

    def announced_since() -> bool:
        report = seed.last_announce()
        return report is not None and report.ok and report.age_s < time.monotonic() - changed_at

    await wait_until(announced_since, what="the seed announced again")
    assert [p for _, p in seed_s.listen_addresses] == [new]
    assert seed_s._udp is not None
    assert seed_s._udp.port == new
    assert _refused(old)
    # The leecher knows only the tracker: the seed told it the new port.
    leech = await leech_s.add_torrent(meta, tmp_path / "leech", seed=False)
    await leech.wait_complete()
    assert same_tree(content, tmp_path / "leech" / "port.bin")
    # A port that is taken: the error reaches the caller and nothing changes.
    with pytest.raises(OSError, match="in use"):
        await seed_s.set_listen_port(leech_s.port)
    assert seed_s.port == new
    assert not _refused(new)
    await seed_s.set_listen_port(0)  # any free port
    assert seed_s.port not in (0, new)
    assert not _refused(seed_s.port)


async def test_encryption_changes_for_new_connections(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "mse.bin", 800_000)
    meta = make_torrent(content)
    base = config.testing_settings().replace(seed_ratio=None, utp_enabled=False)
    plain = base.replace(encryption=Encryption.OFF)
    async with asyncio.timeout(30), Session(base.replace(encryption=Encryption.OFF)) as seed_s:
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        seed_s.set_encryption(Encryption.REQUIRE)
        assert seed_s.settings.encryption is Encryption.REQUIRE
        async with Session(plain) as refused_s:
            await refused_s.add_torrent(meta, tmp_path / "a", peers=[("127.0.0.1", seed_s.port)])
            await wait_until(
                lambda: seed_s.encryption_statistics().plaintext_refused >= 1, what="a plaintext peer refused"
            )
        # Slowed down (20 s for the whole), so that the peers stay connected while the
        # test looks at them; it leaves before the download ends.
        async with Session(base.replace(max_download_bps=40_000)) as leech_s:
            leech = await leech_s.add_torrent(meta, tmp_path / "b", peers=[("127.0.0.1", seed_s.port)])
            await wait_until(lambda: len(seed.peers()) == len(leech.peers()) == 1, what="an encrypted peer")
            assert [(p.encrypted, p.utp) for p in seed.peers()] == [(True, False)]
            assert [p.encrypted for p in leech.peers()] == [True]
        with pytest.raises(ValueError, match="sometimes"):
            seed_s.set_encryption("sometimes")  # type: ignore[arg-type]


async def test_dht_turns_on_and_off_without_leaking_tasks_or_sockets(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "dht.bin", 50_000)
    meta = make_torrent(content)
    state = tmp_path / "dht.state"
    async with DhtNode(loopback_host(0), 0, config=TEST_CONFIG) as router:
        settings = config.testing_settings().replace(
            utp_enabled=False,
            dht_bootstrap=((router.host, router.port),),
            dht_state_file=str(state),
        )
        async with asyncio.timeout(30), Session(settings) as session:
            torrent = await session.add_torrent(meta, tmp_path / "seed")
            await torrent.wait_checked()
            assert session.dht is None
            assert session._udp is None
            await session.set_dht_enabled(True)
            node = session.dht
            assert node is not None
            assert session.settings.dht_enabled
            assert torrent.swarm.dht_source is not None
            await wait_until(lambda: router.node_count >= 1, what="the router learned our node")
            await wait_until(lambda: len(_tasks_named("DhtSource.run")) == 1, what="the torrent's lookups")
            udp_port = node.port
            # The port moves: the node keeps its id and table and answers on the new socket.
            await session.set_listen_port(free_port())
            assert session.dht is node
            assert node.port == session.port != udp_port
            await wait_until(lambda: len(_tasks_named("DhtSource.run")) == 1, what="lookups again")
            await session.set_dht_enabled(False)
            assert session.dht is None
            assert not session.settings.dht_enabled
            assert torrent.swarm.dht_source is None
            assert session._udp is None
            await wait_until(lambda: not _tasks_named("DhtSource.run"), what="the lookups ended")
            assert load_state(state)[0] == node.node_id  # saved as it stopped
            await wait_until(lambda: _udp_free(session.port), what="the UDP port closed")
            await session.set_dht_enabled(True)
            assert session.dht is not None
            assert session.dht.node_id == node.node_id
        # Leaving the session stops a node it started while running.
        assert session.dht is None
        assert session._udp is None
        with pytest.raises(TorrentError):
            await session.set_dht_enabled(True)


async def test_pex_and_utp_follow_the_switch_for_new_connections(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "pex.bin", 400_000)
    meta = make_torrent(content)
    settings = config.testing_settings().replace(seed_ratio=None, pex_enabled=True)
    # Slowed down (20 s for the whole), so that the peers stay connected while the test
    # looks at them; the test leaves before the download ends.
    slow = settings.replace(max_download_bps=20_000)
    async with asyncio.timeout(30), Session(settings) as seed_s:
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        seed_s.set_pex_enabled(False)
        await seed_s.set_utp_enabled(False)
        assert seed.swarm.pex is None
        assert seed_s.utp_statistics() is None
        async with Session(slow) as leech_s:
            leech = await leech_s.add_torrent(meta, tmp_path / "a", peers=[("127.0.0.1", seed_s.port)])
            await wait_until(lambda: _extensions(leech) is not None, what="the seed's extension handshake")
            assert (pex.EXTENSION_NAME not in (_extensions(leech) or {}), [p.utp for p in leech.peers()]) == (
                True,
                [False],
            )
        seed_s.set_pex_enabled(True)
        await seed_s.set_utp_enabled(True)
        assert seed.swarm.pex is not None
        assert seed_s.utp_statistics() is not None
        async with Session(slow) as leech_s:
            leech = await leech_s.add_torrent(meta, tmp_path / "b", peers=[("127.0.0.1", seed_s.port)])
            await wait_until(lambda: _extensions(leech) is not None, what="the seed's extension handshake")
            assert (pex.EXTENSION_NAME in (_extensions(leech) or {}), [p.utp for p in leech.peers()]) == (
                True,
                [True],
            )
