"""HashServer (through the HashExchange that holds it) answering hash requests below the piece layer
from the piece data, on fake peers: what it answers, what it rejects, and its bounds."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from torrent.create import create
from torrent.engine import hash_exchange as hx
from torrent.engine import hash_serving as hs
from torrent.proto import merkle, wire
from torrent.proto.metainfo import Metainfo
from torrent.types import BLOCK_SIZE

PIECE = 64 * 1024


@dataclass
class FakePeer:
    addr: tuple[str, int] = ("127.0.0.1", 1)
    sent: list[Any] = field(default_factory=list)
    closed: bool = False

    def send(self, ev: Any) -> None:
        self.sent.append(ev)


class Host:
    """What the swarm hands HashExchange: pieces we have, their bytes, a task group."""

    def __init__(self, meta: Metainfo, payload: bytes, have: set[int]) -> None:
        self.meta = meta
        self.payload = bytearray(payload)
        self.have = have
        self.reads: list[int] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def read(self, index: int, length: int) -> bytes:
        self.reads.append(index)
        at = index * self.meta.info.piece_length
        return bytes(self.payload[at : at + length])

    def spawn(self, coro: Coroutine[Any, Any, None]) -> bool:
        self.tasks.append(asyncio.get_running_loop().create_task(coro))
        return True

    def exchange(self) -> Any:
        # Any: the peers here are fakes with only what HashExchange reads.
        exchange: Any = hx.HashExchange(
            self.meta.info, have=self.have.__contains__, read=self.read, spawn=self.spawn
        )
        return exchange

    async def settle(self) -> None:
        while self.tasks:
            await self.tasks.pop()


def _torrent(tmp_path: Path, size: int) -> tuple[Metainfo, bytes]:
    payload = os.urandom(size)
    (tmp_path / "f").write_bytes(payload)
    return create(tmp_path / "f", piece_length=PIECE, torrent_format="v2"), payload


def _height(meta: Metainfo, size: int) -> int:
    return merkle.log2(merkle.next_pow2(-(-size // BLOCK_SIZE)))


async def test_leaf_runs_are_answered_from_disk_and_prove_the_root(tmp_path: Path) -> None:
    size = 5 * PIECE + 1_000
    meta, payload = _torrent(tmp_path, size)
    host = Host(meta, payload, set(range(meta.info.num_pieces)))
    exchange, peer = host.exchange(), FakePeer()
    root = meta.info.files[0].pieces_root
    height = _height(meta, size)
    # One piece's four leaves with every uncle; then a run of 8 leaves spanning two pieces.
    for index, length in ((4, 4), (8, 8), (20, 4)):
        exchange.on_request(peer, wire.HashRequest(root, 0, index, length, height - 1))
        await host.settle()
        (answer,) = peer.sent
        peer.sent.clear()
        assert isinstance(answer, wire.Hashes)
        nodes, uncles = answer.hashes[:length], answer.hashes[length:]
        leaves = merkle.block_hashes(payload[index * BLOCK_SIZE : (index + length) * BLOCK_SIZE])
        assert list(nodes) == leaves + [merkle.ZERO_HASH] * (length - len(leaves))  # pads past the end
        assert merkle.verify_proof(root, height, 0, index, nodes, uncles)
    # The same piece again: from the cache, at once, without reading the disk.
    reads = len(host.reads)
    exchange.on_request(peer, wire.HashRequest(root, 0, 4, 4, 0))
    assert isinstance(peer.sent[0], wire.Hashes)
    assert len(host.reads) == reads


async def test_what_cannot_be_served_is_rejected(tmp_path: Path) -> None:
    size = 80 * PIECE
    meta, payload = _torrent(tmp_path, size)
    host = Host(meta, payload, set(range(meta.info.num_pieces)) - {3})
    exchange, peer = host.exchange(), FakePeer()
    root = meta.info.files[0].pieces_root

    async def rejected(req: wire.HashRequest) -> bool:
        exchange.on_request(peer, req)
        await host.settle()
        (reply,) = peer.sent
        peer.sent.clear()
        return isinstance(reply, wire.HashReject) and reply.index == req.index

    assert await rejected(wire.HashRequest(root, 0, 12, 4, 0))  # piece 3: we lack it
    assert await rejected(wire.HashRequest(root, 0, 0, 512, 0))  # 32 pieces: over MAX_LEAF_READ
    assert await rejected(wire.HashRequest(root, 0, 5, 4, 0))  # not aligned on its length
    assert await rejected(wire.HashRequest(os.urandom(32), 0, 0, 4, 0))  # no such file
    # Data that no longer matches its piece's node on disk is not served.
    host.payload[5 * PIECE] ^= 1
    assert await rejected(wire.HashRequest(root, 0, 20, 4, 0))
    assert not await rejected(wire.HashRequest(root, 0, 24, 4, 0))


async def test_leaf_jobs_are_bounded_per_peer(tmp_path: Path) -> None:
    size = 20 * PIECE
    meta, payload = _torrent(tmp_path, size)
    host = Host(meta, payload, set(range(meta.info.num_pieces)))
    exchange, peer = host.exchange(), FakePeer()
    root = meta.info.files[0].pieces_root
    for k in range(hs.LEAF_JOBS_PER_PEER + 1):
        exchange.on_request(peer, wire.HashRequest(root, 0, 4 * k, 4, 0))
    # Every piece needs a read: the one over the bound is rejected before any is done.
    assert [type(e) for e in peer.sent] == [wire.HashReject]
    assert peer.sent[0].index == 4 * hs.LEAF_JOBS_PER_PEER
    await host.settle()
    assert [type(e) for e in peer.sent[1:]] == [wire.Hashes] * hs.LEAF_JOBS_PER_PEER


@pytest.mark.parametrize("size", [1_000, 3 * BLOCK_SIZE + 5])
async def test_a_file_of_one_piece_serves_its_leaves(tmp_path: Path, size: int) -> None:
    meta, payload = _torrent(tmp_path, size)
    host = Host(meta, payload, {0})
    exchange, peer = host.exchange(), FakePeer()
    root = meta.info.files[0].pieces_root
    height = _height(meta, size)
    if height == 0:
        exchange.on_request(peer, wire.HashRequest(root, 0, 0, 1, 0))  # the root is never sent
        await host.settle()
        assert isinstance(peer.sent[0], wire.HashReject)
        return
    width = 1 << height
    exchange.on_request(peer, wire.HashRequest(root, 0, 0, width, 0))
    await host.settle()
    (answer,) = peer.sent
    assert isinstance(answer, wire.Hashes)
    assert merkle.verify_proof(root, height, 0, 0, answer.hashes, ())
