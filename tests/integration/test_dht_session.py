"""The DHT inside the client: sessions of ours find each other through a loopback DHT node.

Every node here is on loopback: the sessions bootstrap from a :class:`DhtNode` of the
test's (the "router", on 127.0.1.1), never from the public routers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.integration.dht_helpers import TEST_CONFIG, loopback_host
from tests.integration.swarm_helpers import make_payload, make_torrent, same_tree
from tests.polling import wait_until
from torrent import config
from torrent.config import Settings
from torrent.engine.dht_node import DhtNode, load_state
from torrent.engine.session import Session
from torrent.proto import bencoding
from torrent.proto.magnet import Magnet
from torrent.proto.metainfo import Metainfo


class WatchedNode(DhtNode):
    """A DHT node that counts the get_peers and announce_peer queries it gets, per info hash."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lookups_seen: Counter[bytes] = Counter()
        self.announces_seen: Counter[bytes] = Counter()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        with contextlib.suppress(Exception):  # hostile or odd datagrams are the node's business
            msg = bencoding.decode(data)
            args = msg.get(b"a", {})
            if msg.get(b"y") == b"q" and isinstance(args, dict):
                ih = args.get(b"info_hash", b"")
                if msg.get(b"q") == b"get_peers":
                    self.lookups_seen[ih] += 1
                elif msg.get(b"q") == b"announce_peer":
                    self.announces_seen[ih] += 1
        super().datagram_received(data, addr)


@contextlib.asynccontextmanager
async def router() -> AsyncIterator[WatchedNode]:
    node = WatchedNode(loopback_host(0), 0, config=TEST_CONFIG)
    async with node:
        yield node


def dht_settings(node: DhtNode, **changes: Any) -> Settings:
    return config.testing_settings().replace(
        **{"dht_enabled": True, "dht_bootstrap": ((node.host, node.port),), **changes}
    )


async def test_two_sessions_find_each_other_through_the_dht(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "dht.bin", 400_000)
    meta = make_torrent(content)  # no tracker at all
    async with asyncio.timeout(40), router() as r:
        async with Session(dht_settings(r)) as seed_s, Session(dht_settings(r)) as leech_s:
            assert seed_s.dht is not None
            assert leech_s.dht is not None
            assert seed_s.dht.port == seed_s.port  # one port number for TCP and UDP
            seed = await seed_s.add_torrent(meta, tmp_path / "seed")
            await seed.wait_checked()
            leech = await leech_s.add_torrent(meta, tmp_path / "leech", seed=False)
            await leech.wait_complete()
            st = leech.statistics()
            assert st.dht_peers >= 1
            assert st.dht_nodes >= 1
            assert leech_s.dht.statistics().queries_out > 0
        assert r.announces_seen[meta.info_hash] >= 1  # the seed announced itself
    assert same_tree(content, tmp_path / "leech" / "dht.bin")


async def test_a_magnet_with_neither_tr_nor_x_pe_works_through_the_dht(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "m.bin", 300_000)
    meta = make_torrent(content)
    magnet = Magnet(info_hash=meta.info_hash, name="m.bin")
    assert not magnet.trackers
    assert not magnet.peers
    async with (
        asyncio.timeout(40),
        router() as r,
        Session(dht_settings(r)) as seed_s,
        Session(dht_settings(r)) as leech_s,
    ):
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        fetched = await leech_s.fetch_metadata(magnet)
        assert fetched.info_bytes == meta.info_bytes
        leech = await leech_s.add_torrent(fetched, tmp_path / "leech", seed=False)
        await leech.wait_complete()
    assert same_tree(content, tmp_path / "leech" / "m.bin")


async def test_a_private_torrent_is_never_looked_up_nor_announced(tmp_path: Path) -> None:
    """The packets at the only DHT node the session knows: the public torrent's info hash
    is looked up and announced there, the private one's never."""
    public = make_payload(tmp_path / "data", "pub.bin", 100_000)
    meta = make_torrent(public)
    secret = make_payload(tmp_path / "data", "priv.bin", 100_000)
    private = _private_torrent(make_torrent(secret))
    assert private.info.private
    assert not meta.info.private
    async with asyncio.timeout(30), router() as r:
        async with Session(dht_settings(r)) as s:
            priv = await s.add_torrent(private, tmp_path / "data")
            pub = await s.add_torrent(meta, tmp_path / "data")
            # Two rounds of the public torrent (dht_retry_interval_s apart): the private
            # one had as long to show up.
            await wait_until(
                lambda: r.announces_seen[meta.info_hash] >= 2, timeout_s=20, what="two public announces"
            )
            assert priv.statistics().dht_peers == 0
            assert priv.statistics().dht_nodes == 0
            assert pub.statistics().dht_nodes >= 1
        assert r.lookups_seen[private.info_hash] == 0
        assert r.announces_seen[private.info_hash] == 0
        assert r.lookups_seen[meta.info_hash] >= 2


def _private_torrent(meta: Metainfo) -> Metainfo:
    info = bencoding.decode(meta.info_bytes)
    info[b"private"] = 1
    return Metainfo.from_bytes(bencoding.encode({b"info": info}))


async def test_the_routing_table_is_saved_on_exit_and_used_at_the_next_start(tmp_path: Path) -> None:
    state = tmp_path / "state" / "dht.state"
    async with asyncio.timeout(30), router() as r:
        async with Session(dht_settings(r, dht_state_file=str(state))) as s:
            assert s.dht is not None
            await s.dht.wait_bootstrapped()
            first_id = s.dht.node_id
        node_id, nodes = load_state(state)
        assert node_id == first_id
        assert (r.host, r.port) in {(n.host, n.port) for n in nodes}
        # No bootstrap list this time: the saved table alone gets the node back in.
        async with Session(dht_settings(r, dht_state_file=str(state), dht_bootstrap=())) as s:
            assert s.dht is not None
            assert s.dht.node_id == first_id
            await s.dht.wait_bootstrapped()
            assert s.dht.node_count >= 1
            done = await s.dht.find_node(r.node_id)
            assert r.node_id in {n.id for n in done.closest}


async def test_the_dht_is_off_in_testing_settings_and_on_by_default() -> None:
    assert not config.testing_settings().dht_enabled
    assert config.testing_settings().dht_bootstrap == ()
    assert Settings().dht_enabled
    assert ("router.bittorrent.com", 6881) in Settings().dht_bootstrap
    async with asyncio.timeout(10), Session(config.testing_settings()) as s:
        assert s.dht is None
