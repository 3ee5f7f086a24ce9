"""DHT benchmark: lookups in a 200-node loopback DHT, memory per entry, queries answered per second.

Usage: python bench/dht.py [--nodes 200] [--lookups 200] [--seconds 3]

Three parts, all on loopback (each node its own 127.0.x.y address):

* *lookups*: ``--nodes`` of our nodes join through the first one; one node announces
  each of 20 info hashes; then ``--lookups`` get_peers lookups run one at a time from
  random nodes for those info hashes. Reported: hops (depth of the closest answering
  node; 1 = a node from our own table) and time to convergence, median and 95th
  percentile, and whether the announced peer was found.
* *memory* (tracemalloc): a peer store filled to its bounds (100,000 peers over 10,000
  info hashes), and a routing table filled from 100,000 random ids; bytes per entry.
* *queries per second* on one core: (a) ``DhtProtocol.receive_datagram`` alone, fed a
  mix of ping / find_node / get_peers / announce_peer datagrams (decode, table and store
  work, encode); (b) a ``DhtNode`` on a UDP socket answering a load generator that runs
  in another process (so the node's process has its core to itself).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import random
import socket
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torrent.engine.dht_node import DhtNode
from torrent.proto.dht import DhtConfig, DhtProtocol, krpc
from torrent.proto.dht.krpc import NodeInfo
from torrent.proto.dht.routing import RoutingTable
from torrent.proto.dht.storage import PeerStore

CONFIG = DhtConfig(query_timeout_s=2.0, query_slow_s=0.25)


def host(i: int) -> str:
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def bench_lookups(n: int, lookups: int) -> None:
    rng = random.Random(1)
    async with contextlib.AsyncExitStack() as stack:
        t0 = time.perf_counter()
        first = await stack.enter_async_context(DhtNode(host(0), 0, config=CONFIG))
        nodes = [first]
        for i in range(1, n):
            nodes.append(
                await stack.enter_async_context(
                    DhtNode(host(i), 0, bootstrap=[(host(0), first.port)], config=CONFIG)
                )
            )
        await asyncio.gather(*(x.wait_bootstrapped() for x in nodes[1:]))
        await asyncio.gather(*(x.find_node(x.node_id) for x in nodes))
        print(
            f"{n} nodes joined in {time.perf_counter() - t0:.1f} s; table sizes median {statistics.median(x.statistics().nodes for x in nodes)}"
        )
        hashes = [rng.randbytes(20) for _ in range(20)]
        announcers = [rng.choice(nodes) for _ in hashes]
        for ih, who in zip(hashes, announcers, strict=True):
            await who.announce(ih, 6881)
        hops: list[float] = []
        times: list[float] = []
        found = 0
        for i in range(lookups):
            who = rng.choice(nodes)
            ih = hashes[i % len(hashes)]
            t = time.perf_counter()
            done = await who.lookup_peers(ih)
            times.append((time.perf_counter() - t) * 1000)
            hops.append(done.hops)
            found += (announcers[i % len(hashes)].host, 6881) in done.peers
        print(
            f"get_peers lookups: {lookups}, peer found in {found}; hops median {statistics.median(hops):.0f}, "
            f"p95 {pct(hops, 95):.0f}; time median {statistics.median(times):.1f} ms, p95 {pct(times, 95):.1f} ms"
        )


def bench_memory() -> None:
    rng = random.Random(2)
    hashes = [rng.randbytes(20) for _ in range(10_000)]  # the info hashes are the announcers' bytes
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    store = PeerStore()
    for i in range(100_000):  # each peer made here, as a decoded datagram would make it
        store.add(
            hashes[i % len(hashes)],
            (f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", 6881 + i % 1000),
            float(i),
        )
    used = tracemalloc.get_traced_memory()[0] - base
    print(
        f"peer store: {len(store)} peers over {store.info_hash_count} info hashes, {used / len(store):.0f} bytes per peer"
    )
    del store
    base = tracemalloc.get_traced_memory()[0]
    table = RoutingTable(rng.randbytes(20), 0.0)
    for i in range(100_000):
        table.heard_response(
            NodeInfo(rng.randbytes(20), f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", 6881), 1.0
        )
    used = tracemalloc.get_traced_memory()[0] - base
    entries = len(table) + table.replacement_count()
    print(
        f"routing table: {len(table)} nodes + {table.replacement_count()} replacements in {len(table.buckets)} buckets, "
        f"{used / entries:.0f} bytes per entry (id, address and bookkeeping)"
    )
    tracemalloc.stop()


def query_mix(rng: random.Random, count: int) -> list[bytes]:
    out = []
    for i in range(count):
        tid = i.to_bytes(2, "big")
        kind = i % 4
        if kind == 0:
            out.append(krpc.encode(krpc.Ping(tid, rng.randbytes(20))))
        elif kind == 1:
            out.append(krpc.encode(krpc.FindNode(tid, rng.randbytes(20), rng.randbytes(20))))
        elif kind == 2:
            out.append(krpc.encode(krpc.GetPeers(tid, rng.randbytes(20), bytes([i % 50]) * 20)))
        else:
            out.append(
                krpc.encode(krpc.AnnouncePeer(tid, rng.randbytes(20), rng.randbytes(20), 6881, b"bad-tok"))
            )
    return out


def filled_node(rng: random.Random) -> DhtProtocol:
    dht = DhtProtocol(rng.randbytes(20), 0.0, config=DhtConfig(rate_per_ip_per_s=0), rng=rng)
    for i in range(5000):
        dht.tables[4].heard_response(NodeInfo(rng.randbytes(20), f"10.1.{i // 256}.{i % 256}", 6881), 0.0)
    for i in range(2000):
        dht.store.add(bytes([i % 50]) * 20, (f"10.2.{i // 256}.{i % 256}", 6881), 0.0)
    return dht


def bench_sans_io(seconds: float) -> None:
    rng = random.Random(3)
    dht = filled_node(rng)
    datagrams = query_mix(rng, 4000)
    addrs = [(f"10.3.{i // 256 % 256}.{i % 256}", 6881) for i in range(len(datagrams))]
    answered = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for data, addr in zip(datagrams, addrs, strict=True):
            dht.receive_datagram(data, addr, 1.0)
        answered += len(dht.datagrams_to_send())
    elapsed = time.perf_counter() - start
    print(
        f"sans-IO: {answered / elapsed:,.0f} queries answered per second "
        f"(ping/find_node/get_peers/announce_peer mix; table of {len(dht.tables[4])} nodes, {len(dht.store)} stored peers)"
    )


def _load(port: int, seconds: float, result: multiprocessing.Queue) -> None:
    """Load generator (its own process): keeps 64 queries in flight, counts answers."""
    rng = random.Random(4)
    datagrams = query_mix(rng, 1024)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.9.2", 0))
    sock.settimeout(0.2)
    target = ("127.0.9.1", port)
    answers = 0
    sent = 0
    for _ in range(64):
        sock.sendto(datagrams[sent % 1024], target)
        sent += 1
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            sock.recv(4096)
            answers += 1
        except TimeoutError:
            for _ in range(64):  # lost ones: refill the window
                sock.sendto(datagrams[sent % 1024], target)
                sent += 1
            continue
        sock.sendto(datagrams[sent % 1024], target)
        sent += 1
    result.put(answers / seconds)


async def bench_udp(seconds: float) -> None:
    async with DhtNode("127.0.9.1", 0, config=DhtConfig(rate_per_ip_per_s=0)) as node:
        rng = random.Random(5)
        for i in range(2000):
            node.protocol.tables[4].heard_response(
                NodeInfo(rng.randbytes(20), f"10.1.{i // 256}.{i % 256}", 6881), 0.0
            )
        ctx = multiprocessing.get_context("spawn")
        result: multiprocessing.Queue[float] = ctx.Queue()
        proc = ctx.Process(target=_load, args=(node.port, seconds, result))
        proc.start()
        rate = await asyncio.to_thread(result.get)
        await asyncio.to_thread(proc.join)
        print(f"UDP: {rate:,.0f} queries answered per second by one DhtNode (asyncio, default loop)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    asyncio.run(bench_lookups(args.nodes, args.lookups))
    bench_memory()
    bench_sans_io(args.seconds)
    asyncio.run(bench_udp(args.seconds))


if __name__ == "__main__":
    main()
