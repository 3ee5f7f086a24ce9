"""The daemon at scale, in process on loopback: dormant seeds (no swarm, no task of their
own) that wake for an incoming peer, a restart that lists seeds without touching their
data, and the announces of many seeds spread over time instead of bursted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.integration.daemon_helpers import running_daemon
from tests.integration.swarm_helpers import make_payload, make_torrent
from tests.polling import wait_until
from torrent import config
from torrent.create import create
from torrent.daemon.service import Daemon, Record, Status
from torrent.disk.storage import state_path
from torrent.engine.session import CheckResult, Session
from torrent.engine.status import TorrentState
from torrent.proto import bencoding
from torrent.types import InfoHash

pytestmark = pytest.mark.timeout(90)


async def test_a_dormant_seed_wakes_for_an_incoming_peer_then_sleeps_again(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    meta = make_torrent(make_payload(downloads, "payload.bin", 300_000))
    async with (
        asyncio.timeout(60),
        running_daemon(tmp_path, park_idle_s=0.5) as (daemon, client),
        # A refused connection would be retried only after a minute: the one that wakes
        # the seed must be served.
        Session(
            config.testing_settings().replace(retry_backoff_s=60.0, retry_backoff_max_s=60.0)
        ) as leecher_session,
    ):
        tid = await client.add(meta)
        await wait_until(lambda: daemon.records[tid].parked, what="the seed is dormant")
        [t] = await client.get([tid], "status", "percentDone")
        assert (t["status"], t["percentDone"]) == (Status.SEED, 1.0)
        assert daemon.session.torrents() == []  # no swarm: a dict entry in the session
        stats = await client.call("session-stats")
        assert (stats["activeTorrentCount"], stats["pausedTorrentCount"]) == (1, 0)

        leecher = await leecher_session.add_torrent(
            meta, tmp_path / "leecher", peers=[("127.0.0.1", daemon.session.port)]
        )
        async with asyncio.timeout(20):
            await leecher.wait_complete()
        assert (tmp_path / "leecher" / "payload.bin").read_bytes() == (downloads / "payload.bin").read_bytes()
        await leecher_session.remove_torrent(meta.info_hash)
        # Its peer gone, the seed goes dormant again, its upload counted.
        await wait_until(lambda: daemon.records[tid].parked, timeout_s=20, what="dormant again")
        [t] = await client.get([tid], "status", "uploadedEver")
        assert t["status"] == Status.SEED
        assert t["uploadedEver"] >= 300_000


def _plain_handshake(info_hash: bytes) -> bytes:
    return b"\x13BitTorrent protocol" + bytes(8) + info_hash + b"-XX0001-" + b"x" * 12


async def _handshake(port: int, info_hash: bytes) -> bytes:
    """The info hash of the answer to a plaintext handshake naming ``info_hash`` (b"": hung up)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(_plain_handshake(info_hash))
        return (await r.readexactly(68))[28:48]
    except (asyncio.IncompleteReadError, ConnectionError):
        return b""
    finally:
        w.close()


async def test_a_dormant_hybrid_seed_wakes_for_a_peer_naming_its_truncated_v2_hash(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    content = make_payload(downloads, "multi", {"a.bin": 70_000, "b/c.bin": 40_000})
    meta = create(content, piece_length=32 * 1024, torrent_format="hybrid")
    assert meta.info_hash_v2 is not None
    alias = meta.info_hash_v2[:20]
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, client):
        tid = await client.add(meta)
        await wait_until(lambda: daemon.records[tid].parked, what="the seed is dormant")
        assert daemon.records[tid].parsed is None  # dormant: its metainfo is not kept parsed
        assert await _handshake(daemon.session.port, alias) == alias  # answered: it runs again
        assert daemon.records[tid].handle is not None
        await client.call("torrent-remove", ids=[tid])
        assert await _handshake(daemon.session.port, alias) == b""


async def test_a_seed_woken_by_a_peer_that_hangs_up_at_once_sleeps_again(tmp_path: Path) -> None:
    """The connection that wakes a dormant seed is held while the seed reads its resume
    state; one that is gone by then is not left counted as a peer."""
    downloads = tmp_path / "downloads"
    meta = make_torrent(make_payload(downloads, "payload.bin", 100_000))
    async with asyncio.timeout(30), running_daemon(tmp_path, park_idle_s=0.5) as (daemon, client):
        tid = await client.add(meta)
        await wait_until(lambda: daemon.records[tid].parked, what="the seed is dormant")
        _r, w = await asyncio.open_connection("127.0.0.1", daemon.session.port)
        w.write(_plain_handshake(meta.info_hash))
        await w.drain()
        w.close()  # before any answer
        await w.wait_closed()
        await wait_until(lambda: daemon.records[tid].handle is not None, what="woken")
        await wait_until(lambda: daemon.records[tid].parked, timeout_s=15, what="dormant again")


async def test_a_restart_lists_complete_torrents_seeding_without_reading_them(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    metas = [make_torrent(make_payload(downloads, f"f{i}.bin", 50_000, seed=i)) for i in range(5)]
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, client):
        ids = [await client.add(m) for m in metas]
        await wait_until(lambda: all(daemon.records[i].parked for i in ids), what="all dormant")
    resume_files = [state_path(str(downloads), m.info_hash, "resume") for m in metas]
    stamps = [os.stat(p).st_mtime_ns for p in resume_files]
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, client):
        await wait_until(lambda: all(daemon.records[i].parked for i in ids), what="all dormant")
        rows = await client.get(None, "id", "status", "percentDone")
        assert [(r["status"], r["percentDone"]) for r in rows] == [(Status.SEED, 1.0)] * 5
        assert all(daemon.records[i].checking is None and daemon.records[i].checked is False for i in ids)
        assert daemon.session.torrents() == []
        assert all(daemon.records[i].parsed is None for i in ids)  # listed from the summaries
    assert [os.stat(p).st_mtime_ns for p in resume_files] == stamps  # nothing read or rewritten


@contextlib.asynccontextmanager
async def _tracker(on_announce: Callable[[Mapping[str, str]], object]) -> AsyncIterator[str]:
    """An HTTP tracker on loopback that answers every announce with no peers and hands its
    query to ``on_announce``; yields the announce URL."""

    async def announce(request: web.Request) -> web.Response:
        on_announce(request.query)
        return web.Response(body=bencoding.encode({b"interval": 1800, b"peers": b""}))

    app = web.Application()
    app.router.add_get("/announce", announce)
    tracker = TestServer(app, host="127.0.0.1")
    await tracker.start_server()
    try:
        yield str(tracker.make_url("/announce"))
    finally:
        await tracker.close()


async def test_announces_of_many_seeds_are_spread_out(tmp_path: Path) -> None:
    """30 seeds with a tracker, at most 10 announce slots a second: the first announces
    take about 3 s, and no more than a slot's worth start in any half second. (The
    tracker sees them with each one's start-up and HTTP round trip added: on a busy
    machine those bunch a few together, which the daemon does not decide.)"""
    seen: list[float] = []
    started: list[float] = []
    downloads = tmp_path / "downloads"
    async with _tracker(lambda _: seen.append(time.monotonic())) as url:
        metas = [
            make_torrent(make_payload(downloads, f"f{i}.bin", 20_000, seed=i), trackers=[url])
            for i in range(30)
        ]
        async with asyncio.timeout(60), running_daemon(tmp_path, announces_per_s=10.0) as (daemon, client):
            launch = daemon._launch

            def recorded(r: Record, *, after: asyncio.Task[None] | None = None) -> bool:
                if r.parked:  # a dormant seed runs for its announce
                    started.append(time.monotonic())
                return launch(r, after=after)

            daemon._launch = recorded  # type: ignore[method-assign]
            for m in metas:
                await client.add(m)
            await wait_until(lambda: len(seen) >= 30, timeout_s=30, what="every seed announced")
            span = max(seen) - min(seen)
            assert span >= 2.0, f"30 announces within {span:.2f} s: bursted"
            assert len(started) >= 30
            for t in started:
                assert sum(1 for u in started if t <= u < t + 0.5) <= 5
            # Each went dormant after its announce; the next is half an hour away.
            await wait_until(lambda: all(r.parked for r in daemon.records.values()), what="all dormant")
            assert all(r.next_announce > time.monotonic() + 1000 for r in daemon.records.values())


async def test_a_dormant_seed_stopped_or_removed_announces_stopped(tmp_path: Path) -> None:
    events: list[tuple[str, str]] = []
    downloads = tmp_path / "downloads"
    async with _tracker(lambda q: events.append((q.get("event", ""), q.get("left", "")))) as url:
        metas = [
            make_torrent(make_payload(downloads, f"s{i}.bin", 20_000, seed=i), trackers=[url])
            for i in range(2)
        ]
        async with asyncio.timeout(60), running_daemon(tmp_path, park_idle_s=0.3) as (daemon, client):
            ids = [await client.add(m) for m in metas]
            await wait_until(lambda: len(events) == 2, what="both announced")
            await wait_until(lambda: all(daemon.records[i].parked for i in ids), what="both dormant")
            assert [e for e, _ in events if e == "stopped"] == []  # dormant: still listed
            await client.call("torrent-stop", ids=[ids[0]])
            await wait_until(lambda: ("stopped", "0") in events, what="a stopped announce")
            await client.call("torrent-remove", ids=[ids[1]])
            await wait_until(lambda: events.count(("stopped", "0")) == 2, what="another stopped announce")


async def test_a_scheduler_pass_inside_an_operation_does_not_start_the_torrent_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operation stops a torrent and starts it again (here -G, files unwanted); a
    scheduler pass that ran while it awaited the stop used to start the torrent itself,
    and the operation's own start then failed with "already in the session"."""
    meta = make_torrent(make_payload(tmp_path / "elsewhere", "album", {"a.bin": 40_000, "b.bin": 40_000}))
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, client):
        tid = await client.add(meta)  # no data: a download, running
        await wait_until(lambda: daemon.records[tid].handle is not None, what="running")
        remove = daemon.session.remove_torrent

        async def remove_with_a_pass_meanwhile(info_hash: InfoHash, *, announce: bool = True) -> None:
            await remove(info_hash, announce=announce)
            await daemon.schedule()  # the scheduler's timer fires in the gap

        monkeypatch.setattr(daemon.session, "remove_torrent", remove_with_a_pass_meanwhile)
        await client.call("torrent-set", ids=[tid], **{"files-unwanted": [1]})
        [t] = await client.get([tid], "error", "errorString", "wanted")
        assert (t["error"], t["errorString"], t["wanted"]) == (0, "", [1, 0])
        assert [h.info_hash for h in daemon.session.torrents()] == [meta.info_hash]
        assert daemon.records[tid].handle is daemon.session.torrents()[0]


def _gate_checks(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """The daemon's checks wait until the returned event is set."""
    gate = asyncio.Event()
    check = daemon.session.check_torrent

    async def gated_check(*args: Any, **kwargs: Any) -> CheckResult:
        await gate.wait()
        return await check(*args, **kwargs)

    monkeypatch.setattr(daemon.session, "check_torrent", gated_check)
    return gate


async def test_a_torrent_stopped_during_its_first_check_shows_what_it_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta = make_torrent(make_payload(tmp_path / "downloads", "f.bin", 50_000))
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, client):
        gate = _gate_checks(daemon, monkeypatch)
        tid = await client.add(meta)
        await wait_until(lambda: daemon.records[tid].checking is not None, what="checking")
        await client.call("torrent-stop", ids=[tid])
        gate.set()
        await wait_until(lambda: daemon.records[tid].checking is None, what="check over")
        [t] = await client.get([tid], "status", "percentDone")
        assert (t["status"], t["percentDone"]) == (Status.STOPPED, 1.0)
        assert daemon.session.torrents() == []


async def test_records_from_before_summaries_are_summarized_once_at_load(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    meta = make_torrent(make_payload(downloads, "old.bin", 50_000), trackers=["http://127.0.0.1:9/announce"])
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, client):
        tid = await client.add(meta)
        await wait_until(lambda: daemon.records[tid].parked, what="dormant")
    # As a database of schema 2 left it: no summary.
    with sqlite3.connect(tmp_path / "state" / "state.sqlite3") as db:
        db.execute("UPDATE torrents SET summary = ''")
    db.close()
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, client):
        await wait_until(lambda: daemon.records[tid].parked, what="dormant")
        [t] = await client.get([tid], "totalSize", "sizeWhenDone", "status", "percentDone")
        assert t == {"totalSize": 50_000, "sizeWhenDone": 50_000, "status": Status.SEED, "percentDone": 1.0}
        r = daemon.records[tid]
        assert r.stored.summary is not None
        assert r.stored.summary.trackers
        assert r.stored.metainfo is None  # summarized, the bytes not kept
        assert r.parsed is None
    with sqlite3.connect(tmp_path / "state" / "state.sqlite3") as db:
        assert db.execute("SELECT summary FROM torrents").fetchone()[0] != ""  # written back
    db.close()


async def test_checks_wait_for_a_burst_of_adds_but_not_for_a_steady_trickle(tmp_path: Path) -> None:
    """No check starts while adds arrive close together (their answers come first), yet
    a trickle that never pauses does not hold the checks back for ever."""
    from torrent.daemon.service import ADD_BURST_DEFER_S, ADD_QUIET_S

    downloads = tmp_path / "downloads"
    metas = [make_torrent(make_payload(downloads, f"t{i}.bin", 20_000, seed=i)) for i in range(200)]
    async with asyncio.timeout(60), running_daemon(tmp_path) as (daemon, _):
        # The burst counts from its first add: the test's clock starts before it.
        began = last = time.monotonic()
        daemon.add(metainfo=metas[0].to_bytes())  # alone so far: its check may start
        await asyncio.sleep(ADD_QUIET_S / 4)
        # The second add makes a burst: its own check waits.
        second, _added = daemon.add(metainfo=metas[1].to_bytes())
        longest_gap = time.monotonic() - last
        seen: float | None = None
        for meta in metas[2:]:
            await asyncio.sleep(ADD_QUIET_S / 4)
            now = time.monotonic()
            longest_gap, last = max(longest_gap, now - last), now
            daemon.add(metainfo=meta.to_bytes())
            await daemon.committed()
            if second.checking is not None or second.checked:
                seen = time.monotonic()  # its check began before this
                break
        assert seen is not None, "the checks waited for the whole trickle of adds"
        if longest_gap < ADD_QUIET_S:  # one burst throughout (a loaded machine may pause it)
            assert seen - began >= ADD_BURST_DEFER_S, "a check ran early in the burst"
        await wait_until(lambda: second.checked, what="the second add checked")


async def test_a_lone_add_is_checked_by_the_next_pass_and_a_burst_is_not(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    metas = [make_torrent(make_payload(downloads, f"t{i}.bin", 20_000, seed=i)) for i in range(3)]
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, _):
        lone, _added = daemon.add(metainfo=metas[0].to_bytes())
        await daemon.schedule()
        assert lone.checking is not None or lone.checked, "a lone add's check waited"
        await wait_until(lambda: lone.parked, what="the lone add seeds")
        burst = [daemon.add(metainfo=m.to_bytes())[0] for m in metas[1:]]
        await daemon.schedule()
        assert all(r.checking is None and not r.checked for r in burst), "a check started in a burst"
        await wait_until(lambda: all(r.parked for r in burst), what="the burst's torrents seed")


def _leecher_settings() -> config.Settings:
    """A refused connection is retried only after a minute: the first one must be served."""
    return config.testing_settings().replace(retry_backoff_s=60.0, retry_backoff_max_s=60.0)


async def test_a_peer_for_a_torrent_whose_check_a_burst_holds_starts_it(tmp_path: Path) -> None:
    """Adds keep coming (a burst: no check starts), and a peer asks for one of them: it
    runs at once, checking its data itself, and serves the peer."""
    downloads = tmp_path / "downloads"
    meta = make_torrent(make_payload(downloads, "wanted.bin", 300_000))
    fillers = [make_torrent(make_payload(downloads, f"f{i}.bin", 20_000, seed=i)) for i in range(60)]
    async with (
        asyncio.timeout(60),
        running_daemon(tmp_path) as (daemon, _),
        Session(_leecher_settings()) as leecher_session,
    ):
        r, _added = daemon.add(metainfo=meta.to_bytes())
        daemon.add(metainfo=fillers[0].to_bytes())
        await daemon.committed()

        async def trickle() -> None:  # adds 20 ms apart: one burst all along
            for filler in fillers[1:]:
                await asyncio.sleep(0.02)
                daemon.add(metainfo=filler.to_bytes())

        adding = asyncio.create_task(trickle())
        leecher = await leecher_session.add_torrent(
            meta, tmp_path / "leecher", peers=[("127.0.0.1", daemon.session.port)]
        )
        await wait_until(lambda: r.handle is not None, what="started by the peer")
        assert not adding.done(), "it started only once the burst was over"
        async with asyncio.timeout(20):
            await leecher.wait_complete()
        await adding
    assert (tmp_path / "leecher" / "wanted.bin").read_bytes() == (downloads / "wanted.bin").read_bytes()


async def test_a_peer_for_a_torrent_being_checked_is_held_until_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run a peer starts waits for the check under way (no second check beside it),
    and the peer's connection is held meanwhile, then served."""
    downloads = tmp_path / "downloads"
    meta = make_torrent(make_payload(downloads, "wanted.bin", 300_000))
    async with (
        asyncio.timeout(60),
        running_daemon(tmp_path) as (daemon, client),
        Session(_leecher_settings()) as leecher_session,
    ):
        gate = _gate_checks(daemon, monkeypatch)
        tid = await client.add(meta)
        r = daemon.records[tid]
        await wait_until(lambda: r.checking is not None, what="checking")
        assert await _handshake(daemon.session.port, meta.info_hash) == meta.info_hash  # held, answered
        assert r.handle is not None
        leecher = await leecher_session.add_torrent(
            meta, tmp_path / "leecher", peers=[("127.0.0.1", daemon.session.port)]
        )
        await asyncio.sleep(0.3)  # what must not happen: a start-up (a second check) beside the first
        assert (r.handle.state, r.checking) == (TorrentState.CHECKING, 0.0)
        gate.set()
        async with asyncio.timeout(20):
            await leecher.wait_complete()
        await wait_until(lambda: r.checked, what="the daemon's check ended")
    assert (tmp_path / "leecher" / "wanted.bin").read_bytes() == (downloads / "wanted.bin").read_bytes()


async def test_an_added_torrent_keeps_no_parsed_metainfo_until_its_check(tmp_path: Path) -> None:
    """The parse of an add checks the torrent and is dropped (its bytes wait for the
    check): a burst of adds does not hold a thousand parsed torrents until their checks
    (their memory stayed with the daemon afterwards). The record is stored with its
    summary at once."""
    downloads = tmp_path / "downloads"
    metas = [make_torrent(make_payload(downloads, f"t{i}.bin", 20_000, seed=i)) for i in range(3)]
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, _):
        added = [daemon.add(metainfo=m.to_bytes())[0] for m in metas]
        await daemon.committed()
        assert all(r.parsed is None for r in added)
        with sqlite3.connect(tmp_path / "state" / "state.sqlite3") as db:
            summaries = [row[0] for row in db.execute("SELECT summary FROM torrents ORDER BY id")]
        db.close()
        assert all(summaries), summaries
        await wait_until(lambda: all(r.parked for r in added), what="checked and seeding")
        assert all(r.stored.have_bytes == 20_000 for r in added)
        assert all(r.stored.metainfo is None and r.parsed is None for r in added)  # dormant: neither
