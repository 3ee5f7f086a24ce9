"""Peer exchange (BEP 11): our leecher knows one peer, and reaches the others through it.

In each test the leecher is given a single address, that of a peer with no data of its
own whose download is limited (it gets a small part of the torrent meanwhile); the only
seed is known to that middle peer alone (and the seed never learns of the leecher: its PEX
is off and it has no tracker). So the download completes only if the middle peer's
``ut_pex`` told the leecher about the seed and the leecher dialled it.
The middle peer is ours in one test and libtorrent (PyPI, in process) in the other.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.integration.swarm_helpers import make_payload, make_torrent, same_tree
from tests.interop.conftest import isolation_problem, skip_or_fail
from tests.libtorrent_settings import loopback_settings
from tests.polling import wait_until
from torrent import config
from torrent.engine.session import Session
from torrent.proto import bencoding
from torrent.proto.metainfo import Metainfo

PEX_ON = config.testing_settings().replace(pex_enabled=True, pex_interval_s=1.0)
#: The middle peer's download rate: slow enough that it has little of the 4 MB to give when
#: the leecher completes, fast enough that handshakes pass at once.
MIDDLE_RATE = 100_000


async def test_our_leecher_finds_the_seed_through_our_peer(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "pex.bin", 4_000_000)
    meta = make_torrent(content, piece_length=64 * 1024)
    async with (
        asyncio.timeout(40),
        Session(config.testing_settings()) as seed_s,  # PEX off: never learns of the leecher
        Session(PEX_ON.replace(max_download_bps=MIDDLE_RATE)) as middle_s,
        Session(PEX_ON) as leech_s,
    ):
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        middle = await middle_s.add_torrent(meta, tmp_path / "middle", peers=[("127.0.0.1", seed_s.port)])
        await wait_until(lambda: middle.statistics().peers_connected == 1, what="the middle peer on the seed")
        leech = await leech_s.add_torrent(
            meta, tmp_path / "leech", seed=False, peers=[("127.0.0.1", middle_s.port)]
        )
        await leech.wait_complete()
        assert leech.swarm.pex_peers >= 1
        assert middle.statistics().done_bytes < meta.info.total_length // 2
    assert same_tree(content, tmp_path / "leech" / "pex.bin")


async def test_a_private_torrent_exchanges_no_peers(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "priv.bin", 200_000)
    info = bencoding.decode(make_torrent(content).info_bytes)
    info[b"private"] = 1
    meta = Metainfo.from_bytes(bencoding.encode({b"info": info}))
    async with (
        asyncio.timeout(30),
        # The seed and the middle peer upload slowly, so each one connection lasts seconds:
        # 200 kB at full speed on loopback can come and go between two polls.
        Session(config.testing_settings().replace(max_upload_bps=100_000)) as seed_s,
        Session(PEX_ON.replace(max_upload_bps=100_000)) as middle_s,
        Session(PEX_ON) as leech_s,
    ):
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        middle = await middle_s.add_torrent(meta, tmp_path / "middle", peers=[("127.0.0.1", seed_s.port)])
        await wait_until(lambda: middle.statistics().peers_connected == 1, what="the middle peer on the seed")
        leech = await leech_s.add_torrent(meta, tmp_path / "leech", peers=[("127.0.0.1", middle_s.port)])
        await wait_until(
            lambda: leech.statistics().peers_connected == 1, what="the leecher on the middle peer"
        )
        # Taken now: once both are complete, two seeds hang up on each other.
        peer = next(iter(leech.swarm.peers.values()))
        # The middle peer downloads everything from the seed meanwhile, and the leecher
        # from it: by then, with PEX, the leecher would long have been told of the seed.
        await leech.wait_complete()
        assert not middle.swarm.pex_enabled
        assert leech.swarm.pex_peers == 0
        assert ("127.0.0.1", seed_s.port) not in leech.swarm.peers
        assert peer.proto is not None
        assert "ut_pex" not in peer.proto.peer_extensions


@pytest.fixture
def lt() -> Any:
    why = isolation_problem()
    if why:
        skip_or_fail(f"{why}: libtorrent runs only in a loopback-only network namespace (make test as root)")
    try:
        import libtorrent
    except ImportError:
        skip_or_fail("libtorrent (PyPI) is not installed")
    return libtorrent


@pytest.mark.interop
async def test_our_leecher_finds_the_seed_through_libtorrent(lt: Any, tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "ltpex.bin", 4_000_000)
    meta = make_torrent(content, piece_length=64 * 1024)
    torrent = tmp_path / "t.torrent"
    torrent.write_bytes(bencoding.encode({b"info": bencoding.decode(meta.info_bytes)}))
    ses = lt.session(loopback_settings("127.0.0.2", outgoing_interfaces="127.0.0.2", alert_mask=0))
    try:
        async with (
            asyncio.timeout(100),
            # Plaintext on our side: with MSE on both of our connections to libtorrent 2.1.1
            # (RC4 on both, as its peer flags show), its ut_pex to our leecher lists the
            # leecher's own listen address and never our seed, though it lists the seed
            # when either connection is plaintext. Not understood yet (issue #11/#12 notes).
            Session(config.testing_settings().replace(encryption=config.Encryption.OFF)) as seed_s,
            Session(PEX_ON.replace(encryption=config.Encryption.OFF)) as leech_s,
        ):
            seed = await seed_s.add_torrent(meta, tmp_path / "seed")
            await seed.wait_checked()
            atp = lt.add_torrent_params()
            atp.ti = lt.torrent_info(str(torrent))
            atp.save_path = str(tmp_path / "lt")
            atp.flags &= ~lt.torrent_flags.auto_managed
            atp.flags &= ~lt.torrent_flags.paused
            handle = ses.add_torrent(atp)
            handle.set_download_limit(MIDDLE_RATE)
            handle.connect_peer(("127.0.0.1", seed_s.port))  # libtorrent dials the seed: "reachable"
            await wait_until(
                lambda: handle.status().num_peers >= 1, timeout_s=20, what="libtorrent on the seed"
            )
            leech = await leech_s.add_torrent(
                meta, tmp_path / "leech", seed=False, peers=[("127.0.0.2", ses.listen_port())]
            )
            seed_addr = ("127.0.0.1", seed_s.port)
            # libtorrent's first ut_pex goes out once the connection is up and it has two
            # peers; the seed's address can come from nowhere else.
            await wait_until(
                lambda: seed_addr in leech.swarm.peer_list, timeout_s=60, what="PEX from libtorrent"
            )
            await leech.wait_complete()
            assert leech.swarm.pex_peers >= 1
            assert handle.status().total_wanted_done < meta.info.total_length // 2
    finally:
        ses.pause()
    assert same_tree(content, tmp_path / "leech" / "ltpex.bin")
