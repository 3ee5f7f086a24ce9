"""Hostile DHT traffic on loopback: a flood of malformed and abusive KRPC keeps within bounds and honest queries are answered."""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

from torrent.engine.dht_node import DhtNode
from torrent.proto.dht import DhtConfig, krpc

FLOOD_S = 3.0
ATTACKERS = 40
BOUNDS = DhtConfig(max_peers=200, max_info_hashes=100)  # small, so the flood reaches them


class Socket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue(maxsize=10_000)
        self.transport: asyncio.DatagramTransport

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.received.full():
            self.received.put_nowait(data)


async def udp(host: str) -> Socket:
    _, sock = await asyncio.get_running_loop().create_datagram_endpoint(Socket, local_addr=(host, 0))
    return sock


def abuse(rng: random.Random, token: bytes) -> list[bytes]:
    """One batch of what an attacker sends: valid-looking queries from made-up ids, and junk."""
    fake = rng.randbytes
    batch = [
        krpc.encode(krpc.GetPeers(fake(2), fake(20), fake(20))),  # random hashes, thousands of ids
        krpc.encode(krpc.FindNode(fake(2), fake(20), fake(20))),
        krpc.encode(
            krpc.AnnouncePeer(fake(2), fake(20), fake(20), rng.randrange(1, 65536), fake(8))
        ),  # bad token
        krpc.encode(
            krpc.AnnouncePeer(fake(2), fake(20), fake(20), rng.randrange(1, 65536), token)
        ),  # good token
        krpc.encode(
            krpc.AnnouncePeer(
                fake(2), fake(20), bytes([rng.randrange(8)]) * 20, rng.randrange(1, 65536), token
            )
        ),
        krpc.encode(
            krpc.Response(fake(2), fake(20), nodes=(krpc.NodeInfo(fake(20), "192.0.2.1", 1),))
        ),  # unasked
        b"d1:ad2:id20:" + fake(20) + b"e1:q4:vote1:t2:aa1:y1:qe",  # unknown method
        b"d1:rd2:id20:" + fake(20) + b"5:nodes25:" + fake(25) + b"e1:t2:aa1:y1:re",  # bad compact nodes
        b"d" + fake(rng.randrange(1, 300)),  # garbage
        b"d" + b"1:x" * 1500 + b"e",  # oversized
        b"l" + fake(40),  # not a dict: not even KRPC (uTP or a tracker on a shared socket)
    ]
    return batch


async def test_flood_keeps_bounds_and_honest_queries_are_answered() -> None:
    async with asyncio.timeout(40), DhtNode("127.0.3.1", 0, config=BOUNDS) as victim:
        target = ("127.0.3.1", victim.port)
        attackers = [await udp(f"127.0.4.{i + 1}") for i in range(ATTACKERS)]
        honest = await udp("127.0.5.1")
        tokens = []
        for i, sock in enumerate(attackers):  # each attacker IP gets a real token first
            sock.transport.sendto(
                krpc.encode(krpc.GetPeers(b"t%d" % i, os.urandom(20), os.urandom(20))), target
            )
            answer = krpc.decode(await sock.received.get())
            assert isinstance(answer, krpc.Response)
            assert answer.token is not None
            tokens.append(answer.token)

        stop = time.monotonic() + FLOOD_S
        sent = 0

        async def attack(sock: Socket, token: bytes, seed: int) -> None:
            nonlocal sent
            rng = random.Random(seed)
            while time.monotonic() < stop:
                for data in abuse(rng, token):
                    sock.transport.sendto(data, target)
                    sent += 1
                while not sock.received.empty():
                    sock.received.get_nowait()
                await asyncio.sleep(0.08)  # about 5,000 datagrams a second in all

        latencies: list[float] = []
        retries: list[int] = []

        async def ask_honestly() -> None:
            # like a real client: a query unanswered after 0.5 s is sent again, up to 3 times
            n = 0
            my_id = os.urandom(20)
            while time.monotonic() < stop:
                n += 1
                tid = n.to_bytes(2, "big")
                asked = time.monotonic()
                for attempt in range(3):
                    honest.transport.sendto(krpc.encode(krpc.GetPeers(tid, my_id, os.urandom(20))), target)
                    try:
                        async with asyncio.timeout(0.5):
                            while (answer := krpc.decode(await honest.received.get())).tid != tid:
                                pass
                        break
                    except TimeoutError:
                        retries.append(attempt)
                else:
                    raise AssertionError(f"honest query {n} unanswered three times")
                assert isinstance(answer, krpc.Response)
                assert answer.sender_id == victim.node_id
                latencies.append(time.monotonic() - asked)
                await asyncio.sleep(0.05)

        await asyncio.gather(
            ask_honestly(), *(attack(s, t, i) for i, (s, t) in enumerate(zip(attackers, tokens, strict=True)))
        )

        stats = victim.statistics()
        proto = victim.protocol
        print(
            f"flood: {sent} datagrams; honest answers: {len(latencies)}, resent {len(retries)}, slowest {max(latencies) * 1000:.1f} ms; {stats}"
        )
        assert sent > 10_000
        assert stats.stored_info_hashes == 100  # the info-hash bound was reached (peers: unit tests)
        assert len(latencies) >= FLOOD_S / 0.2  # every honest query was answered, throughout
        assert len(retries) <= 0.1 * len(latencies)  # (when the kernel drops some, a resend gets through)
        # the bounds held
        assert stats.stored_peers <= 200
        assert stats.stored_info_hashes <= 100
        assert proto.store.evicted > 0  # the flood did reach them
        assert stats.nodes <= ATTACKERS + 1  # one per IP, whatever the ids
        assert stats.replacements <= 8 * stats.buckets
        assert stats.rate_limited_ips <= proto.limiter.max_tracked
        assert len(proto._tx) <= 8 * stats.buckets  # pings of questionable nodes at most
        # and every kind of abuse was seen and counted
        for reason in (
            "rate_limited",
            "bad_token",
            "unknown_method",
            "nodes_length",
            "bencode",
            "oversized",
            "not_krpc",
        ):
            assert stats.dropped.get(reason, 0) > 0, reason
        assert stats.dropped["unexpected_answer"] > 0

        # after the flood: the victim still answers and its store serves honest announces
        honest.transport.sendto(krpc.encode(krpc.Ping(b"zz", os.urandom(20))), target)
        async with asyncio.timeout(2):
            assert krpc.decode(await honest.received.get()).tid == b"zz"
        for sock in [*attackers, honest]:
            sock.transport.close()
