"""DiskIO: writes, hashing, recheck, read cache, back-pressure, journal hooks."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from tests.disk_helpers import make_torrent
from tests.polling import wait_until
from torrent.disk import diskio
from torrent.disk.diskio import DiskIO
from torrent.disk.storage import FileStorage
from torrent.errors import StorageError

LAYOUT = [("a", 5000), ("b", 3000), ("pad", 192, True), ("c", 9000)]  # 17192 bytes
PLEN = 1024


#: Jobs DiskIO drains its queue with here: one per core, two on one core.
_JOBS = max(2, os.cpu_count() or 1)


@pytest.fixture
def fx():
    return make_torrent(LAYOUT, PLEN)


async def write_everything(disk: DiskIO, fx, block: int = 256) -> None:
    jobs = []
    for p in range(fx.info.num_pieces):
        for off in range(0, fx.info.piece_size(p), block):
            jobs.append(disk.write(p, off, fx.piece(p)[off : off + block]))
    await asyncio.gather(*jobs)


class Counting:
    """Wraps a storage and counts (and optionally slows) calls, thread-safely."""

    def __init__(self, inner: FileStorage, delay_s: float = 0.0) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.reads = 0
        self.active = 0
        self.max_active = 0
        self.gate = threading.Event()
        self.gate.set()

    @property
    def info(self):
        return self.inner.info

    def _enter(self) -> None:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        self.gate.wait(10)
        if self.delay_s:
            time.sleep(self.delay_s)

    def _leave(self) -> None:
        with self.lock:
            self.active -= 1

    def write_block(self, piece, offset, data):
        self._enter()
        try:
            self.inner.write_block(piece, offset, data)
        finally:
            self._leave()

    def read_block(self, piece, offset, length):
        self._enter()
        try:
            with self.lock:
                self.reads += 1
            return self.inner.read_block(piece, offset, length)
        finally:
            self._leave()

    def read_piece(self, piece):
        return self.read_block(piece, 0, self.info.piece_size(piece))

    def allocate(self):
        self.inner.allocate()

    def file_stats(self):
        return self.inner.file_stats()

    def sync(self):
        self.inner.sync()

    def close(self):
        self.inner.close()


async def test_concurrent_writes_then_every_piece_hashes(tmp_path: Path, fx) -> None:
    async with asyncio.timeout(20), DiskIO(FileStorage(fx.info, tmp_path), max_queued=8) as disk:
        await disk.allocate()
        await write_everything(disk, fx)
        results = await asyncio.gather(*(disk.hash_piece(p) for p in range(fx.info.num_pieces)))
        assert all(results)
        st = disk.statistics()
        assert st.pieces_passed == fx.info.num_pieces
        assert st.bytes_written == len(fx.payload)
        assert st.queued == 0
    assert (tmp_path / "t" / "c").read_bytes() == fx.file_bytes(3)


async def test_hash_piece_fails_on_corruption_and_missing_file(tmp_path: Path, fx) -> None:
    async with asyncio.timeout(20), DiskIO(FileStorage(fx.info, tmp_path)) as disk:
        assert await disk.hash_piece(0) is False  # nothing on disk yet: missing file
        await write_everything(disk, fx)
        await disk.write(3, 10, b"\x00\x01")
        assert await disk.hash_piece(3) is False
        assert await disk.hash_piece(2) is True
        assert disk.statistics().pieces_failed == 2


async def test_write_piece_hashes_before_writing(tmp_path: Path, fx) -> None:
    async with asyncio.timeout(20), DiskIO(FileStorage(fx.info, tmp_path)) as disk:
        await disk.allocate()
        bad = bytearray(fx.piece(1))
        bad[5] ^= 0xFF
        assert await disk.write_piece(1, bytes(bad)) is False
        assert (tmp_path / "t" / "a").read_bytes()[1024:2048] == bytes(1024), "bad piece not written"
        assert await disk.write_piece(1, fx.piece(1)) is True
        assert (tmp_path / "t" / "a").read_bytes()[1024:2048] == fx.piece(1)
        last = fx.info.num_pieces - 1
        assert await disk.write_piece(last, fx.piece(last)) is True
        with pytest.raises(ValueError, match="piece 0 is 1024 bytes, got 5"):
            await disk.write_piece(0, b"short")


class Syncing(FileStorage):
    """Counts ``sync`` calls and can fail them."""

    syncs = 0
    fail = False

    def sync(self) -> None:
        self.syncs += 1
        if self.fail:
            raise StorageError("disk full on write-back")
        super().sync()


async def test_write_piece_flushes_ahead_every_so_many_bytes(
    tmp_path: Path, fx, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(diskio, "FLUSH_AHEAD_BYTES", 3 * PLEN)
    storage = Syncing(fx.info, tmp_path)
    async with asyncio.timeout(20), DiskIO(storage, threads=1) as disk:
        for p in range(7):
            assert await disk.write_piece(p, fx.piece(p))
        assert storage.syncs == 2  # after the 3rd and the 6th piece
        storage.fail = True  # best effort: the write still succeeds; flush() reports it
        for p in range(7, 10):
            assert await disk.write_piece(p, fx.piece(p))
        assert storage.syncs == 3
        with pytest.raises(StorageError, match="disk full"):
            await disk.flush()


async def test_check_finds_exactly_the_good_pieces(tmp_path: Path, fx) -> None:
    async with asyncio.timeout(20), DiskIO(FileStorage(fx.info, tmp_path)) as disk:
        await disk.allocate()
        await write_everything(disk, fx)
    # Corrupt piece 2 (in a), piece 5 (spans a|b) and truncate c so its last pieces fail.
    a = tmp_path / "t" / "a"
    raw = bytearray(a.read_bytes())
    raw[2 * PLEN + 7] ^= 1
    raw[4999] ^= 1
    a.write_bytes(bytes(raw))
    c = tmp_path / "t" / "c"
    c.write_bytes(c.read_bytes()[:5000])
    # c starts at payload 8192; its byte 5000 is payload 13192 -> piece 12 (partly kept).
    expected = set(range(fx.info.num_pieces)) - {2, 4} - set(range(12, fx.info.num_pieces))
    seen: list[tuple[int, int]] = []
    async with asyncio.timeout(20), DiskIO(FileStorage(fx.info, tmp_path)) as disk:
        good = await disk.check(progress=lambda d, t: seen.append((d, t)))
        assert good == expected
        assert seen[0] == (0, fx.info.num_pieces)
        assert seen[-1] == (fx.info.num_pieces,) * 2
        assert [d for d, _ in seen] == list(range(fx.info.num_pieces + 1))
        assert await disk.check([0, 2, 3]) == {0, 3}
        assert await disk.check([]) == set()


async def test_check_hashes_in_parallel_with_bounded_workers(tmp_path: Path, fx) -> None:
    inner = FileStorage(fx.info, tmp_path)
    inner.allocate()
    for p in range(fx.info.num_pieces):
        inner.write_block(p, 0, fx.piece(p))
    counting = Counting(inner, delay_s=0.01)
    async with asyncio.timeout(20), DiskIO(counting, threads=6) as disk:
        assert await disk.check() == set(range(fx.info.num_pieces))
    cores = min(6, __import__("os").cpu_count() or 1)
    assert counting.max_active == cores, "one piece per core at a time, no more"


async def test_the_queue_is_drained_by_one_job_per_core_at_a_time(tmp_path: Path, fx) -> None:
    counting = Counting(FileStorage(fx.info, tmp_path), delay_s=0.01)
    async with asyncio.timeout(20), DiskIO(counting, threads=2 * _JOBS + 4) as disk:
        writes = []
        for p in range(fx.info.num_pieces):  # one write per loop iteration: a kick each
            writes.append(asyncio.ensure_future(disk.write(p, 0, fx.piece(p)[:8])))
            await asyncio.sleep(0)
        await asyncio.gather(*writes)
    # The jobs already draining take what later iterations queue: more threads would only
    # contend (for the file and the interpreter).
    assert counting.max_active <= _JOBS


async def test_check_raises_storage_error_not_a_group(tmp_path: Path, fx) -> None:
    (tmp_path / "t" / "b").mkdir(parents=True)  # a directory where a file should be
    async with asyncio.timeout(20), DiskIO(FileStorage(fx.info, tmp_path)) as disk:
        with pytest.raises(StorageError, match="is a directory"):
            await disk.check()


async def test_back_pressure_bounds_queued_operations(tmp_path: Path, fx) -> None:
    counting = Counting(FileStorage(fx.info, tmp_path))
    counting.gate.clear()  # every storage call blocks until we open the gate
    async with asyncio.timeout(20), DiskIO(counting, threads=8, max_queued=3) as disk:
        writes = [asyncio.ensure_future(disk.write(p, 0, fx.piece(p)[:16])) for p in range(10)]
        await wait_until(lambda: disk.statistics().queued >= 3, timeout_s=10, what="three queued operations")
        assert disk.statistics().queued == 3, "only max_queued operations are accepted"
        assert 1 <= counting.active <= 3
        assert sum(w.done() for w in writes) == 0
        counting.gate.set()
        await asyncio.gather(*writes)
        assert counting.max_active <= 3
        assert disk.statistics().queued == 0
        assert all(
            (tmp_path / "t" / "a").read_bytes()[p * PLEN : p * PLEN + 16] == fx.piece(p)[:16]
            for p in range(4)
        )


class SlowPieceZero(Counting):
    """Writes to piece 0 block on the gate; everything else is immediate."""

    def write_block(self, piece, offset, data):
        if piece == 0:
            self._enter()
            self._leave()
        self.inner.write_block(piece, offset, data)

    def read_block(self, piece, offset, length):
        return self.inner.read_block(piece, offset, length)


async def test_a_slow_operation_does_not_hold_up_the_others(tmp_path: Path, fx) -> None:
    slow = SlowPieceZero(FileStorage(fx.info, tmp_path))
    slow.gate.clear()
    async with asyncio.timeout(20), DiskIO(slow, threads=4) as disk:
        stuck = asyncio.ensure_future(disk.write(0, 0, b"x"))
        others = [asyncio.ensure_future(disk.write(p, 0, fx.piece(p)[:8])) for p in range(1, 10)]
        await asyncio.wait_for(asyncio.gather(*others), 5)
        reads = await asyncio.wait_for(asyncio.gather(*(disk.read(p, 0, 8) for p in range(1, 10))), 5)
        assert reads == [fx.piece(p)[:8] for p in range(1, 10)]
        assert not stuck.done()
        slow.gate.set()
        await stuck


async def test_aclose_finishes_in_flight_writes(tmp_path: Path, fx) -> None:
    counting = Counting(FileStorage(fx.info, tmp_path), delay_s=0.05)
    disk = DiskIO(counting)
    async with asyncio.timeout(20):
        task = asyncio.ensure_future(disk.write(0, 0, fx.piece(0)))
        await asyncio.sleep(0.01)
        task.cancel()  # the caller gives up, the bytes still land
        await disk.aclose()
    assert (tmp_path / "t" / "a").read_bytes()[:PLEN] == fx.piece(0)
    with pytest.raises(StorageError, match="closed"):
        await disk.write(0, 0, b"x")


async def test_read_cache_whole_pieces(tmp_path: Path, fx) -> None:
    inner = FileStorage(fx.info, tmp_path)
    for p in range(fx.info.num_pieces):
        inner.write_block(p, 0, fx.piece(p))
    counting = Counting(inner)
    async with asyncio.timeout(20), DiskIO(counting, read_cache_bytes=4 * PLEN) as disk:
        blocks = await asyncio.gather(*(disk.read(1, off, 128) for off in range(0, PLEN, 128)))
        assert b"".join(blocks) == fx.piece(1)
        assert counting.reads == 1, "concurrent reads of one piece share one disk read"
        assert await disk.read(1, 0, 16) == fx.piece(1)[:16]
        assert counting.reads == 1
        # A write to the piece invalidates the cached copy.
        await disk.write(1, 0, b"ZZ")
        assert await disk.read(1, 0, 4) == b"ZZ" + fx.piece(1)[2:4]
        assert counting.reads == 2
        # The cache is bounded in bytes (4 pieces): reading 6 pieces evicts the oldest.
        for p in range(2, 8):
            await disk.read(p, 0, 1)
        st = disk.statistics()
        assert st.cache_bytes <= 4 * PLEN
        await disk.read(2, 0, 1)
        assert counting.reads == 2 + 6 + 1
        with pytest.raises(ValueError, match=r"range 1023\+2 is outside piece 0 of 1024 bytes"):
            await disk.read(0, PLEN - 1, 2)


async def test_read_cached_answers_only_from_the_cache_and_views_whole_pieces(tmp_path: Path, fx) -> None:
    inner = FileStorage(fx.info, tmp_path)
    for p in range(fx.info.num_pieces):
        inner.write_block(p, 0, fx.piece(p))
    counting = Counting(inner)
    async with asyncio.timeout(20), DiskIO(counting, read_cache_bytes=4 * PLEN) as disk:
        assert disk.read_cached(3, 128, 128) is None  # not read yet: no disk read either
        assert counting.reads == 0
        first = await disk.read(3, 0, 128)
        cached = disk.read_cached(3, 128, 128)
        assert isinstance(cached, memoryview)  # a view of the cached piece, not a copy
        assert bytes(cached) == fx.piece(3)[128:256]
        assert first == fx.piece(3)[:128]
        assert disk.read_cached(3, 0, PLEN) == fx.piece(3)
        assert counting.reads == 1
        assert disk.statistics().cache_hits == 2
        await disk.write(3, 0, b"Z")
        assert disk.read_cached(3, 0, 1) is None  # the write made the cached copy stale
        with pytest.raises(ValueError, match="outside piece"):
            disk.read_cached(3, PLEN, 1)


async def test_read_cache_blocks_for_large_pieces(tmp_path: Path, fx) -> None:
    inner = FileStorage(fx.info, tmp_path)
    for p in range(fx.info.num_pieces):
        inner.write_block(p, 0, fx.piece(p))
    counting = Counting(inner)
    async with asyncio.timeout(20), DiskIO(counting, read_cache_bytes=2 * PLEN) as disk:
        assert await disk.read(0, 256, 256) == fx.piece(0)[256:512]
        assert await disk.read(0, 256, 256) == fx.piece(0)[256:512]
        assert counting.reads == 1
        assert await disk.read(0, 0, 256) == fx.piece(0)[:256]
        assert counting.reads == 2
    async with asyncio.timeout(20), DiskIO(counting, read_cache_bytes=0) as disk:
        assert await disk.read(16, 0, 10) == fx.piece(16)[:10]


class Journal:
    def __init__(self, storage: FileStorage) -> None:
        self.storage = storage
        self.noted: list[int] = []

    def note_write(self, piece: int) -> None:
        # The record must exist before any byte of the piece is written.
        assert self.storage.read_block(piece, 0, 16) == bytes(16)
        self.noted.append(piece)


async def test_journal_told_once_before_first_write(tmp_path: Path, fx) -> None:
    storage = FileStorage(fx.info, tmp_path)
    storage.allocate()
    journal = Journal(storage)
    async with asyncio.timeout(20), DiskIO(storage, journal=journal, threads=1) as disk:
        await write_everything(disk, fx, block=16)
        assert await disk.write_piece(0, fx.piece(0))
        assert sorted(journal.noted) == list(range(fx.info.num_pieces))


async def test_a_reader_giving_up_does_not_fail_the_others(tmp_path: Path, fx) -> None:
    inner = FileStorage(fx.info, tmp_path)
    for p in range(fx.info.num_pieces):
        inner.write_block(p, 0, fx.piece(p))
    counting = Counting(inner)
    counting.gate.clear()
    async with asyncio.timeout(20), DiskIO(counting) as disk:
        first = asyncio.ensure_future(disk.read(2, 0, 100))
        second = asyncio.ensure_future(disk.read(2, 100, 100))
        await asyncio.sleep(0.05)
        first.cancel()  # its peer went away
        await asyncio.sleep(0.05)
        counting.gate.set()
        assert await second == fx.piece(2)[100:200]
        assert counting.reads == 1
        assert await disk.read(2, 0, 10) == fx.piece(2)[:10]
        assert counting.reads == 1, "the read was cached although its first reader left"


async def test_close_while_waiting_for_a_slot_raises_instead_of_hanging(tmp_path: Path, fx) -> None:
    counting = Counting(FileStorage(fx.info, tmp_path), delay_s=0.1)
    disk = DiskIO(counting, max_queued=1)
    async with asyncio.timeout(20):
        busy = asyncio.ensure_future(disk.write(0, 0, b"a"))
        waiting = asyncio.ensure_future(disk.write(1, 0, b"b"))
        await asyncio.sleep(0.01)
        await disk.aclose()
        await busy
        with pytest.raises(StorageError, match="closed"):
            await waiting
