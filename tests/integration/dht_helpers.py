"""A DHT of our own nodes on loopback, each on its own 127.0.0.x address (they all exist on lo)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from torrent.engine.dht_node import DhtNode
from torrent.proto.dht import DhtConfig

#: Short timeouts: a loopback answer takes well under a millisecond.
TEST_CONFIG = DhtConfig(query_timeout_s=2.0, query_slow_s=0.25)


def loopback_host(i: int) -> str:
    """The i-th test address: 127.0.1.1, 127.0.1.2, ... (away from 127.0.0.1)."""
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


@contextlib.asynccontextmanager
async def loopback_dht(count: int, *, config: DhtConfig = TEST_CONFIG) -> AsyncIterator[list[DhtNode]]:
    """``count`` nodes; the first is the bootstrap node of all the others, which join at once."""
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(DhtNode(loopback_host(0), 0, config=config))
        nodes = [first]
        for i in range(1, count):
            node = DhtNode(loopback_host(i), 0, bootstrap=[(loopback_host(0), first.port)], config=config)
            nodes.append(await stack.enter_async_context(node))
        await asyncio.gather(*(n.wait_bootstrapped() for n in nodes[1:]))
        # They all joined at once, so the early ones looked for their neighbours before
        # those existed: one more look around each node's own id (what its periodic
        # refresh would do within 15 minutes) lets the network settle.
        await asyncio.gather(*(n.find_node(n.node_id) for n in nodes))
        yield nodes


def k_closest(target: bytes, ids: list[bytes], k: int = 8) -> set[bytes]:
    t = int.from_bytes(target, "big")
    return set(sorted(ids, key=lambda i: int.from_bytes(i, "big") ^ t)[:k])
