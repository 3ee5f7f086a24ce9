"""Resume state: clean restarts, changed files, corrupt state, unclean shutdowns."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from tests.disk_helpers import Fixture, can_mount, make_torrent, tmpfs
from torrent.disk.diskio import DiskIO
from torrent.disk.resume import ResumeStore, start
from torrent.disk.storage import FileStorage
from torrent.errors import StorageError
from torrent.proto import bencoding

LAYOUT = [("a", 5000), ("b", 3000), ("pad", 192, True), ("c", 9000), ("empty", 0)]
PLEN = 1024


@pytest.fixture
def fx():
    return make_torrent(LAYOUT, PLEN)


def objects(fx, where: Path, **kw):
    storage = FileStorage(fx.info, where, info_hash=fx.info_hash, **kw)
    store = ResumeStore(fx.info, fx.info_hash, where)
    return storage, store, DiskIO(storage, journal=store)


async def download(disk: DiskIO, fx, pieces, verified: set[int]) -> None:
    for p in pieces:
        data = fx.piece(p)
        await asyncio.gather(*(disk.write(p, o, data[o : o + 256]) for o in range(0, len(data), 256)))
        if await disk.hash_piece(p):
            verified.add(p)


def test_the_state_holds_bep3_bitfields_and_rejects_bad_ones(tmp_path: Path, fx) -> None:
    storage, store, _disk = objects(fx, tmp_path)
    n = fx.info.num_pieces
    store.write_state(storage, {0, n - 1}, clean=True)
    raw = bencoding.decode(Path(store.path).read_bytes())
    expected = bytearray((n + 7) // 8)
    expected[0] |= 0x80
    expected[(n - 1) // 8] |= 0x80 >> ((n - 1) % 8)
    assert raw[b"verified"] == bytes(expected)  # piece 0 is the high bit of byte 0
    state, why = store.load()
    assert state is not None, why
    assert state.verified == {0, n - 1}, why
    for bad in (b"\x80", bytes(expected) + b"\x00"):  # wrong length
        raw[b"verified"] = bad
        Path(store.path).write_bytes(bencoding.encode(raw))
        assert store.load()[0] is None


async def test_fresh_start_with_nothing_on_disk_skips_the_recheck(tmp_path: Path, fx) -> None:
    _storage, store, disk = objects(fx, tmp_path)
    async with asyncio.timeout(20), disk:
        verified, plan = await start(store, disk)
        assert verified == set()
        assert plan.recheck == frozenset()
        assert not plan.full_recheck
        assert "nothing on disk yet" in plan.reason
        assert disk.statistics().bytes_hashed == 0
    assert os.path.exists(store.path), "begin() saved an unclean marker before any write"  # noqa: ASYNC240 (a stat)
    state, _ = store.load()
    assert state is not None
    assert not state.clean_shutdown


async def test_clean_restart_needs_no_recheck(tmp_path: Path, fx) -> None:
    storage, store, disk = objects(fx, tmp_path)
    async with asyncio.timeout(20), disk:
        verified, _ = await start(store, disk)
        await download(disk, fx, range(10), verified)
        await store.save(
            storage,
            verified,
            clean=True,
            flush=disk.flush,
            peers=[("127.0.0.1", 6881)],
            uploaded=5,
            downloaded=10240,
        )
    store.close()

    storage, store, disk = objects(fx, tmp_path)
    async with asyncio.timeout(20), disk:
        verified2, plan = await start(store, disk)
        assert plan.reason == "clean resume: no recheck"
        assert verified2 == set(range(10))
        assert plan.recheck == frozenset()
        assert disk.statistics().bytes_hashed == 0
        assert plan.state is not None
        assert plan.state.peers == [("127.0.0.1", 6881)]
        assert (plan.state.uploaded, plan.state.downloaded) == (5, 10240)
        # the rest of the download, then everything is there
        await download(disk, fx, range(10, fx.info.num_pieces), verified2)
        assert verified2 == set(range(fx.info.num_pieces))
        await store.save(storage, verified2, clean=True, flush=disk.flush)
    assert (tmp_path / "t" / "c").read_bytes() == fx.file_bytes(3)


async def test_changed_mtime_rechecks_that_files_pieces(tmp_path: Path, fx) -> None:
    storage, store, disk = objects(fx, tmp_path)
    async with asyncio.timeout(20), disk:
        verified, _ = await start(store, disk)
        await download(disk, fx, range(fx.info.num_pieces), verified)
        await store.save(storage, verified, clean=True, flush=disk.flush)
    # b covers payload 5000..8000: pieces 4..7. Touch it, and corrupt a byte of piece 6.
    b = tmp_path / "t" / "b"
    raw = bytearray(b.read_bytes())
    raw[6 * PLEN - 5000] ^= 1
    b.write_bytes(bytes(raw))
    os.utime(b, ns=(1, 1))
    storage, store, disk = objects(fx, tmp_path)
    async with asyncio.timeout(20), disk:
        plan = store.plan(storage)
        assert plan.recheck == frozenset(range(4, 8))
        assert plan.verified == frozenset(range(fx.info.num_pieces)) - plan.recheck
        verified, _ = await start(store, disk)
        assert verified == set(range(fx.info.num_pieces)) - {6}


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"garbage"),
        lambda p: p.write_bytes(p.read_bytes()[:-7]),
        lambda p: p.write_bytes(b""),
        lambda p: p.write_bytes(p.read_bytes().replace(b"7:version" + b"i1e", b"7:version" + b"i9e")),
        lambda p: p.write_bytes(bencoding.encode({b"format": b"pytorrent resume", b"version": 1})),
        lambda p: p.write_bytes(os.urandom(3000)),
    ],
    ids=["garbage", "truncated", "empty", "version", "missing-keys", "random"],
)
async def test_corrupt_state_is_ignored_with_a_warning(tmp_path: Path, fx, caplog, damage) -> None:
    storage, store, disk = objects(fx, tmp_path)
    async with asyncio.timeout(20), disk:
        verified, _ = await start(store, disk)
        await download(disk, fx, range(5), verified)
        await store.save(storage, verified, clean=True, flush=disk.flush)
    damage(Path(store.path))
    storage, store, disk = objects(fx, tmp_path)
    caplog.set_level(logging.WARNING, logger="torrent.disk.resume")
    async with asyncio.timeout(20), disk:
        verified, plan = await start(store, disk)
        assert plan.full_recheck
        assert plan.state is None
        assert verified == set(range(5)), "a full recheck finds exactly the good pieces"
    assert any("ignoring it" in r.getMessage() for r in caplog.records)


async def test_state_of_another_torrent_is_not_used(tmp_path: Path, fx) -> None:
    storage, store, disk = objects(fx, tmp_path)
    async with asyncio.timeout(20), disk:
        verified, _ = await start(store, disk)
        await download(disk, fx, range(3), verified)
        await store.save(storage, verified, clean=True)
    other = ResumeStore(fx.info, b"\x01" * 20, tmp_path)
    os.replace(store.path, other.path)
    state, why = other.load()
    assert state is None
    assert "another torrent" in why


async def test_unclean_shutdown_rechecks_only_what_was_written_since_the_save(tmp_path: Path, fx) -> None:
    storage, store, disk = objects(fx, tmp_path)
    async with asyncio.timeout(20), disk:
        verified, _ = await start(store, disk)
        await download(disk, fx, range(0, 6), verified)
        # piece 6 half written (dirty at the save), then saved unclean
        await disk.write(6, 0, fx.piece(6)[:512])
        await store.save(storage, verified, flush=disk.flush)
        # after the save: 7 and 8 completed, 9 half written; then the process "dies"
        await download(disk, fx, [7, 8], verified)
        await disk.write(9, 0, fx.piece(9)[:512])
    # no clean save: as after kill -9
    storage, store, disk = objects(fx, tmp_path)
    async with asyncio.timeout(20), disk:
        plan = store.plan(storage)
        assert plan.reason.startswith("unclean shutdown")
        assert plan.verified == frozenset(range(6))
        assert plan.recheck == frozenset({6, 7, 8, 9})
        verified, _ = await start(store, disk)
        assert verified == set(range(6)) | {7, 8}
        assert disk.statistics().bytes_hashed == 4 * PLEN


async def test_unclean_shutdown_and_a_file_changed_behind_our_back(tmp_path: Path, fx) -> None:
    storage, store, disk = objects(fx, tmp_path)
    async with asyncio.timeout(20), disk:
        verified, _ = await start(store, disk)
        await download(disk, fx, range(fx.info.num_pieces), verified)
        await store.save(storage, verified, flush=disk.flush)  # unclean: the run goes on
    # c (pieces 8..16) shrinks: its pieces must be rechecked even though they were saved.
    c = tmp_path / "t" / "c"
    c.write_bytes(c.read_bytes()[:4000])
    storage, store, disk = objects(fx, tmp_path)
    async with asyncio.timeout(20), disk:
        plan = store.plan(storage)
        assert plan.recheck == frozenset(range(8, 17))
        verified, _ = await start(store, disk)
    # c keeps payload 8192..12192: pieces 8-10 are whole, 11-16 are not.
    assert verified == set(range(11))


async def test_journal_records_survive_and_are_rotated_at_save(tmp_path: Path, fx) -> None:
    storage, store, disk = objects(fx, tmp_path)
    async with asyncio.timeout(20), disk:
        verified, _ = await start(store, disk)
        await disk.write(3, 0, b"x")
        await disk.write(3, 1, b"y")
        await disk.write(5, 0, b"z")
        assert store.read_journal() == {3, 5}
        assert os.path.getsize(store.journal_path) == 8, "one record per piece"  # noqa: ASYNC240 (a stat)
        await store.save(storage, verified)
        assert store.read_journal() == set(), "the saved state covers them now"
        state, _ = store.load()
        assert state is not None
        assert state.dirty == {3, 5}
        await disk.write(3, 2, b"w")  # already dirty in the saved state: no record
        await disk.write(4, 0, b"v")
        assert store.read_journal() == {4}
        await asyncio.to_thread(_append, store.journal_path, b"\x00\x00")  # a torn record
        assert store.read_journal() == {4}


def _append(path: str, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


async def test_failed_save_leaves_the_previous_state_intact(tmp_path: Path, fx) -> None:
    storage, store, disk = objects(fx, tmp_path)
    async with asyncio.timeout(20), disk:
        verified, _ = await start(store, disk)
        await download(disk, fx, range(4), verified)
        await store.save(storage, verified, flush=disk.flush)
        os.mkdir(store.path + ".tmp")  # the temp file cannot be created
        with pytest.raises(StorageError, match="cannot save resume state"):
            await store.save(storage, verified | {9}, clean=True)
        os.rmdir(store.path + ".tmp")
    state, _why = store.load()
    assert state is not None
    assert state.verified == set(range(4))
    assert not state.clean_shutdown


async def test_writes_to_verified_pieces_are_dropped(tmp_path: Path, fx) -> None:
    _storage, store, disk = objects(fx, tmp_path)
    async with asyncio.timeout(20), disk:
        verified, _ = await start(store, disk)
        await download(disk, fx, [2], verified)
        await disk.write(2, 0, b"evil")
        assert disk.statistics().writes_dropped == 1
        assert await disk.hash_piece(2)


async def _write_all_saving_every_third(
    fx: Fixture, storage: FileStorage, store: ResumeStore, disk: DiskIO, verified: set[int]
) -> None:
    """Write every piece, adding the good ones to ``verified`` and saving after every third."""
    for p in range(fx.info.num_pieces):
        if await disk.write_piece(p, fx.piece(p)):
            verified.add(p)
            if p % 3 == 2:
                await store.save(storage, verified, flush=disk.flush)


@pytest.mark.skipif(not can_mount(), reason="needs root to mount a tmpfs")
async def test_full_disk_stops_writes_and_keeps_resume_state() -> None:
    fx = make_torrent([("a", 600_000), ("b", 600_000)], 65536)
    with tmpfs("1m") as where:
        storage, store, disk = objects(fx, Path(where))
        async with asyncio.timeout(20), disk:
            verified, _ = await start(store, disk)
            with pytest.raises(StorageError) as e:
                await _write_all_saving_every_third(fx, storage, store, disk, verified)
            assert "no space left on device" in str(e.value)
            save_error: StorageError | None = None
            try:  # saving may fail as well on a full disk; the old state must survive
                await store.save(storage, verified, clean=True, flush=disk.flush)
            except StorageError as exc:
                save_error = exc
            if save_error is not None:
                assert "no space left" in str(save_error)
        state, _ = store.load()
        assert state is not None
        assert state.verified
        assert state.verified <= verified
        storage2 = FileStorage(fx.info, where, info_hash=fx.info_hash)
        for p in state.verified:
            assert storage2.read_piece(p) == fx.piece(p)
        storage2.close()


async def test_concurrent_saves_do_not_mix(tmp_path: Path, fx) -> None:
    storage, store, disk = objects(fx, tmp_path)
    async with asyncio.timeout(20), disk:
        verified, _ = await start(store, disk)
        await download(disk, fx, range(6), verified)
        await asyncio.gather(
            *(store.save(storage, set(range(k)), peers=[("10.0.0.1", 1000 + k)] * 50) for k in range(1, 7))
        )
    state, why = store.load()
    assert state is not None, why
    k = len(state.verified)
    assert state.verified == set(range(k))
    assert state.peers[0] == ("10.0.0.1", 1000 + k)
    assert not os.path.exists(store.path + ".tmp")  # noqa: ASYNC240 (a stat)


async def test_unclean_shutdown_does_not_hash_files_created_after_the_save(tmp_path: Path) -> None:
    fx = make_torrent([("a", 4096), ("b", 64 * 1024)], PLEN)
    storage = FileStorage(fx.info, tmp_path, info_hash=fx.info_hash)
    store = ResumeStore(fx.info, fx.info_hash, tmp_path)
    store.begin(storage, set())  # saved before the files exist (unclean: a run is under way)
    storage.allocate()
    storage.write_block(0, 0, fx.piece(0))  # not journaled: as if b were never touched
    store.close()
    plan = ResumeStore(fx.info, fx.info_hash, tmp_path).plan(
        FileStorage(fx.info, tmp_path, info_hash=fx.info_hash)
    )
    assert plan.reason.startswith("unclean")
    assert plan.recheck == frozenset()
