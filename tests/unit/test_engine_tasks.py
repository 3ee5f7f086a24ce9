"""The engine's spawning rule and the swarm's memory budget, without sockets.

A refused spawn must close its coroutine (no "never awaited" warning), whether the owner
is stopping or its task group is already aborting. Over ``max_pieces_in_flight`` the
swarm only continues pieces it is assembling (the picker's ``start_new=False``).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import warnings
from pathlib import Path
from typing import Any, cast

import pytest

from tests.integration.swarm_helpers import make_payload, make_torrent
from torrent import config
from torrent.disk.storage import FileStorage
from torrent.engine.bandwidth import RateLimiter
from torrent.engine.host import SwarmContext, spawn
from torrent.engine.peer import Peer
from torrent.engine.status import TorrentState
from torrent.engine.swarm import Swarm
from torrent.types import BLOCK_SIZE, PeerId


async def _work(log: list[str]) -> None:
    log.append("ran")


def _no_unawaited_warning(caught: list[warnings.WarningMessage]) -> None:
    gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]


async def test_spawn_starts_the_task_in_the_group() -> None:
    log: list[str] = []
    async with asyncio.TaskGroup() as tg:
        assert spawn(tg, _work(log), stopping=False) is not None
    assert log == ["ran"]


async def test_a_refused_spawn_closes_its_coroutine() -> None:
    log: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        coro = _work(log)
        assert spawn(None, coro, stopping=False) is None  # no group (not running, or gone)
        assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
        async with asyncio.TaskGroup() as tg:
            assert spawn(tg, _work(log), stopping=True) is None
        del coro
        _no_unawaited_warning(caught)
    assert log == []


async def test_a_spawn_into_an_aborting_group_is_refused() -> None:
    log: list[str] = []

    async def fail() -> None:
        raise ValueError("a sibling fails")

    late: list[bool] = []
    group: asyncio.TaskGroup | None = None

    async def sleeper() -> None:
        try:
            await asyncio.sleep(10)
        finally:  # runs while the group aborts
            late.append(spawn(group, _work(log), stopping=False) is not None)

    async def run_group() -> None:
        nonlocal group
        async with asyncio.TaskGroup() as group:
            group.create_task(sleeper())
            await asyncio.sleep(0)
            group.create_task(fail())

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ExceptionGroup):
            await run_group()
        _no_unawaited_warning(caught)
    assert late == [False]
    assert log == []


def _context(settings: config.Settings) -> SwarmContext:
    """What a swarm with no trackers and no session around it needs."""
    return SwarmContext(
        settings=settings,
        peer_id=PeerId(b"-PT0000-" + b"x" * 12),
        port=lambda: 0,
        http=cast(Any, None),  # no trackers: never used
        down_limit=RateLimiter(0),
        up_limit=RateLimiter(0),
        half_open=asyncio.Semaphore(1),
        peer_slots=lambda: 10,
    )


class _FakePeer:
    """What Swarm.pick_blocks and on_peer_block read of a peer."""

    def __init__(self) -> None:
        self.addr = ("10.0.0.1", 6881)
        self.am_interested = True

    def num_outstanding(self) -> int:
        return 0

    def set_interested(self, interested: bool) -> None:
        self.am_interested = interested


async def test_over_the_memory_budget_only_pieces_in_memory_are_continued(tmp_path: Path) -> None:
    content = make_payload(tmp_path, "x.bin", 8 * 4 * BLOCK_SIZE)
    meta = make_torrent(content, piece_length=4 * BLOCK_SIZE)  # 8 pieces of 4 blocks
    settings = config.testing_settings().replace(max_pieces_in_flight=2)
    ctx = _context(settings)
    swarm = Swarm(meta, FileStorage(meta.info, tmp_path / "out"), ctx)
    peer = cast(Peer, _FakePeer())
    swarm.picker.on_peer_have_all(peer.addr)
    started: set[int] = set()
    for _ in range(2):  # one block each of two pieces: both are in memory now
        others = [i for i in range(meta.info.num_pieces) if i not in started]
        [(index, begin, length)] = swarm.picker.pick(peer.addr, 1, restrict_to=others)
        swarm.on_peer_block(peer, index, begin, b"\0" * length)
        started.add(index)
    assert swarm.picker.statistics().pieces_downloading == 2
    picks = swarm.pick_blocks(peer, 20)
    assert picks
    assert {index for index, _, _ in picks} <= started, (picks, started)
    assert swarm.picker.statistics().pieces_downloading == 2


class _PipelinedPeer(_FakePeer):
    """A peer that unchokes us with a request pipeline of ``depth`` blocks."""

    def __init__(self, addr: tuple[str, int], depth: int) -> None:
        super().__init__()
        self.addr = addr
        self.peer_choking = False
        self.depth = depth

    def pipeline_depth(self) -> int:
        return self.depth

    def fill_pipeline(self) -> None:
        pass


async def test_pieces_in_memory_follow_the_peers_pipelines(tmp_path: Path) -> None:
    content = make_payload(tmp_path, "x.bin", 64 * 4 * BLOCK_SIZE)
    meta = make_torrent(content, piece_length=4 * BLOCK_SIZE)  # 64 pieces of 4 blocks
    ctx = _context(config.testing_settings().replace(max_pieces_in_flight=40))
    swarm = Swarm(meta, FileStorage(meta.info, tmp_path / "out"), ctx)

    def allowed_with(*depths: int) -> int:
        swarm.peers.clear()
        for i, depth in enumerate(depths):
            peer = _PipelinedPeer(("10.0.0.1", 7000 + i), depth)
            swarm.peers[cast(Any, peer.addr)] = cast(Peer, peer)
        swarm._size_pieces_in_flight()  # what each tick and each finished piece does
        count = 0
        while swarm.may_start_pieces():  # count the room by filling it
            swarm._partial[1000 + count] = cast(Any, None)
            count += 1
        for i in range(count):
            del swarm._partial[1000 + i]
        return count

    slow, fast = allowed_with(4), allowed_with(64)
    assert slow < fast  # 4 blocks span one piece; 64 blocks span 16
    assert fast == 16 + 1 + 2  # the pipeline's pieces, the piece in progress, verification
    assert allowed_with(64, 64, 64) == 40  # capped by max_pieces_in_flight
    assert allowed_with() == 4  # nobody sending: the floor


class _CancellingPeer(_PipelinedPeer):
    """A peer the swarm knows, recording the cancels it is told to send."""

    def __init__(self, addr: tuple[str, int]) -> None:
        super().__init__(addr, depth=4)
        self.cancels: list[tuple[int, int, int]] = []

    def cancel(self, index: int, begin: int, length: int) -> None:
        self.cancels.append((index, begin, length))


def _swarm_with_two_peers(tmp_path: Path, name: str) -> tuple[Swarm, Peer, _CancellingPeer, bytes]:
    path = make_payload(tmp_path, f"{name}.bin", 3 * 2 * BLOCK_SIZE)  # the same bytes each time
    meta = make_torrent(path, piece_length=2 * BLOCK_SIZE)  # 3 pieces of 2 blocks
    swarm = Swarm(meta, FileStorage(meta.info, tmp_path / name), _context(config.testing_settings()))
    swarm.state = TorrentState.DOWNLOADING  # as after the start-up check
    a, b = _CancellingPeer(("10.0.0.1", 1)), _CancellingPeer(("10.0.0.2", 2))
    for peer in (a, b):
        swarm.peers[cast(Any, peer.addr)] = cast(Peer, peer)
        swarm.picker.on_peer_have_all(peer.addr)
    # Every block asked of a, then (endgame) the last piece's blocks of b as well.
    assert len(swarm.picker.pick(a.addr, 6, now=0.0)) == 6
    assert swarm.picker.in_endgame
    assert swarm.picker.pick(b.addr, 2, now=0.0, restrict_to=[2])
    return swarm, cast(Peer, a), b, path.read_bytes()


async def test_the_blocks_of_one_read_do_what_each_block_does_alone(tmp_path: Path) -> None:
    """``on_peer_blocks`` (the inlined commonest case) leaves the swarm as ``on_peer_block``
    called for each block does: new blocks, a duplicate, an unexpected one, a completed piece,
    an endgame duplicate cancelled at the other peer, the state and the byte counts."""
    blocks: list[tuple[int, int, Any]] = []
    one, one_a, one_b, content = _swarm_with_two_peers(tmp_path, "one")
    for index, begin in [(0, 0), (1, 0), (0, 0), (0, 3), (2, BLOCK_SIZE), (0, BLOCK_SIZE)]:
        at = index * 2 * BLOCK_SIZE + begin
        blocks.append((index, begin, memoryview(content[at : at + BLOCK_SIZE])))
    for index, begin, data in blocks:
        one.on_peer_block(one_a, index, begin, data)
    batch, batch_a, batch_b, _ = _swarm_with_two_peers(tmp_path, "batch")
    batch.on_peer_blocks(batch_a, blocks)

    for swarm, other in ((one, one_b), (batch, batch_b)):
        assert other.cancels == [(2, BLOCK_SIZE, BLOCK_SIZE)]
        assert swarm.downloaded_bytes == 6 * BLOCK_SIZE
        assert swarm.wasted_bytes == 2 * BLOCK_SIZE  # the duplicate and the unexpected one
        assert swarm.state is TorrentState.ENDGAME
    assert batch.picker.statistics() == one.picker.statistics()
    assert sorted(batch._partial) == sorted(one._partial) == [1, 2]  # 0 went to verification
    for index in (1, 2):
        assert batch._partial[index].buf == one._partial[index].buf
        assert batch._partial[index].sources == one._partial[index].sources
    assert one._partial[1].sources == {0: one_a.addr}
    assert one._partial[2].sources == {BLOCK_SIZE: one_a.addr}
