"""The asyncio DHT node: a saved routing table replaces the routers, and a shared socket is demultiplexed."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from tests.integration.dht_helpers import TEST_CONFIG, loopback_dht, loopback_host
from torrent.engine.dht_node import DhtNode, _new_node_id, load_state, save_state
from torrent.proto.dht import krpc, routing
from torrent.proto.dht.krpc import NodeInfo


async def test_a_saved_table_lets_a_restarted_node_join_without_routers(tmp_path: Path) -> None:
    state = tmp_path / "dht.state"
    async with asyncio.timeout(20), loopback_dht(20) as nodes:
        async with DhtNode(
            "127.0.2.1", 0, bootstrap=[(nodes[0].host, nodes[0].port)], state_file=state, config=TEST_CONFIG
        ) as me:
            await me.wait_bootstrapped()
            first_id = me.node_id
            known = me.statistics().nodes
            assert known >= 8
        node_id, saved = load_state(state)
        assert node_id == first_id
        assert len(saved) == known
        nodes[0].protocol.tables[4].remove(first_id)  # forget us, to be sure nothing comes from there
        async with DhtNode("127.0.2.1", 0, state_file=state, config=TEST_CONFIG) as again:  # no routers
            await again.wait_bootstrapped()
            assert again.node_id == first_id
            assert again.statistics().good_nodes >= 8
            done = await again.find_node(nodes[5].node_id)
            assert done.closest[0].id == nodes[5].node_id


def test_state_files_round_trip_and_damage_is_harmless(tmp_path: Path) -> None:
    path = tmp_path / "state"
    nodes = [NodeInfo(bytes([i]) * 20, f"192.0.2.{i}", 6881 + i) for i in range(1, 60)]
    nodes.append(NodeInfo(b"\x66" * 20, "2001:db8::1", 6881))
    save_state(path, b"I" * 20, nodes)
    assert load_state(path) == (b"I" * 20, nodes)
    path.write_bytes(b"d2:id3:abc")
    assert load_state(path) == (None, [])
    assert load_state(tmp_path / "missing") == (None, [])


class Shared(asyncio.DatagramProtocol):
    """A socket owned by someone else (the client's listen port), handing the DHT its datagrams."""

    def __init__(self) -> None:
        self.dht: DhtNode | None = None
        self.others: list[bytes] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.dht is not None
        self.dht.datagram_received(data, addr)  # the DHT keeps what starts with b"d"
        if not data.startswith(b"d"):
            self.others.append(data)  # uTP, UDP tracker: someone else's


async def test_a_shared_socket_hands_over_datagrams_and_keeps_the_rest() -> None:
    loop = asyncio.get_running_loop()
    transport, shared = await loop.create_datagram_endpoint(Shared, local_addr=(loopback_host(300), 0))
    try:
        async with (
            asyncio.timeout(10),
            DhtNode(loopback_host(300), 0, transport=transport, config=TEST_CONFIG) as dht,
        ):
            shared.dht = dht
            port = transport.get_extra_info("sockname")[1]
            assert dht.port == port
            async with DhtNode(
                loopback_host(301), 0, bootstrap=[(loopback_host(300), port)], config=TEST_CONFIG
            ) as peer:
                await peer.wait_bootstrapped()
                assert peer.statistics().nodes == 1
                assert dht.statistics().nodes == 1
                utp_syn = bytes([0x41, 0]) + bytes(18)
                peer_transport = peer._transport
                assert peer_transport is not None
                peer_transport.sendto(utp_syn, (loopback_host(300), port))
                for _ in range(100):
                    if shared.others:
                        break
                    await asyncio.sleep(0.01)
                assert shared.others == [utp_syn]
                assert dht.statistics().dropped == {"not_krpc": 1}
        assert not transport.is_closing()  # not ours to close
    finally:
        transport.close()


async def test_statistics_are_a_frozen_snapshot() -> None:
    async with DhtNode("127.0.2.9", 0, config=TEST_CONFIG) as dht:
        stats = dht.statistics()
        with pytest.raises(dataclasses.FrozenInstanceError):
            stats.nodes = 5  # type: ignore[misc]
        assert stats.node_id == dht.node_id
        assert stats.queries_in == 0
        assert len(stats.node_id) == krpc.ID_LENGTH


async def test_closing_the_node_fails_pending_lookups_with_an_error() -> None:
    async with asyncio.timeout(10):
        node = DhtNode("127.0.2.10", 0, config=TEST_CONFIG)
        await node.__aenter__()
        node.protocol.tables[4].heard_response(NodeInfo(b"n" * 20, "127.0.2.11", 9), 0.0)  # nobody there
        lookup = asyncio.ensure_future(node.get_peers(b"x" * 20))
        await asyncio.sleep(0.05)
        await node.__aexit__(None, None, None)
        with pytest.raises(ConnectionAbortedError):
            await lookup


async def test_an_ipv6_dht_uses_nodes6() -> None:
    """BEP 32 end to end: nodes on ::1 learn each other from ``nodes6`` and find the closest."""
    config = dataclasses.replace(TEST_CONFIG, max_per_ip=100)  # ::1 is one address for all of them
    async with asyncio.timeout(20), contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(DhtNode("::1", 0, config=config))
        nodes = [first]
        for _ in range(15):
            nodes.append(
                await stack.enter_async_context(
                    DhtNode("::1", 0, bootstrap=[("::1", first.port)], config=config)
                )
            )
        await asyncio.gather(*(n.wait_bootstrapped() for n in nodes[1:]))
        await asyncio.gather(*(n.find_node(n.node_id) for n in nodes))
        assert all(n.statistics().nodes6 >= 8 and n.statistics().nodes == 0 for n in nodes)
        target = nodes[9].node_id
        done = await nodes[3].find_node(target)
        assert done.closest[0] == NodeInfo(target, "::1", nodes[9].port)
        info_hash = b"6" * 20
        assert (await nodes[4].announce(info_hash, 4242)).announced >= 6
        assert ("::1", 4242) in await nodes[12].get_peers(info_hash)


def test_a_node_bound_to_a_public_address_takes_a_bep42_id() -> None:
    assert routing.conforms(_new_node_id("203.0.113.7"), "203.0.113.7")
    assert len(_new_node_id("0.0.0.0")) == len(_new_node_id("127.0.0.1")) == 20
