"""The daemon's Transmission RPC, in process, on loopback: protocol, operations, queue,
bad input, persistence, and a real transfer from one of our seeds."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.disk_helpers import can_mount, tmpfs
from tests.integration.daemon_helpers import RpcClient, running_daemon
from tests.integration.swarm_helpers import make_payload, make_torrent
from tests.polling import wait_until
from torrent import config
from torrent.daemon.rpc import MAX_BODY_BYTES, SESSION_HEADER, RpcConfig
from torrent.daemon.service import Status
from torrent.engine.session import Session
from torrent.proto.magnet import Magnet

pytestmark = pytest.mark.timeout(90)


async def test_handshake_auth_and_host_whitelist(tmp_path: Path) -> None:
    rpc = RpcConfig(username="alice", password="s3cret", host_whitelist=("my.box",))
    async with asyncio.timeout(30), running_daemon(tmp_path, rpc) as (_daemon, client):
        http, url = client.http, client.url
        good = {"Authorization": aiohttp.encode_basic_auth("alice", "s3cret")}
        async with http.post(url, json={"method": "session-get"}) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Basic")
        async with http.post(
            url,
            json={"method": "session-get"},
            headers={"Authorization": aiohttp.encode_basic_auth("alice", "wrong")},
        ) as resp:
            assert resp.status == 401
        async with http.post(url, json={"method": "session-get"}, headers=good) as resp:
            assert resp.status == 409
            sid = resp.headers[SESSION_HEADER]
        for path in (url, url + "/"):
            async with http.post(
                path, json={"method": "session-get"}, headers={**good, SESSION_HEADER: sid}
            ) as resp:
                assert resp.status == 200
                body = await resp.json()
                assert body["result"] == "success"
                assert body["arguments"]["rpc-version"] == 17
        headers = {**good, SESSION_HEADER: sid, "Host": "attacker.example"}
        async with http.post(url, json={"method": "session-get"}, headers=headers) as resp:
            assert resp.status == 421
        headers = {**good, SESSION_HEADER: sid, "Host": "my.box:9091"}
        async with http.post(url, json={"method": "session-get"}, headers=headers) as resp:
            assert resp.status == 200


async def test_bad_input_gets_error_results_and_the_daemon_keeps_serving(tmp_path: Path) -> None:
    async def not_found(_: web.Request) -> web.Response:
        return web.Response(status=404, text="no")

    app = web.Application()
    app.router.add_get("/missing.torrent", not_found)
    async with (
        asyncio.timeout(30),
        running_daemon(tmp_path) as (_daemon, client),
        TestServer(app, host="127.0.0.1") as web_server,
    ):
        status, body = await client.post(None, raw=b"{not json")
        assert (status, body["result"]) == (200, "malformed request: not JSON")
        status, body = await client.post(None, raw=b"[1, 2]")
        assert body["result"] == "malformed request: not a JSON object"
        status, body = await client.post({"method": "no-such-method", "tag": 3})
        assert body == {"result": "method name not recognized", "tag": 3}
        status, body = await client.post({"method": "torrent-get", "arguments": []})
        assert body["result"] == "arguments must be an object"
        assert (await client.result("torrent-get", fields="name")).startswith("'fields' must be")
        assert (await client.result("torrent-add", metainfo="!!!not base64!!!")).startswith(
            "invalid or corrupt torrent file"
        )
        garbage = base64.b64encode(b"d4:infoi3ee").decode()
        assert (await client.result("torrent-add", metainfo=garbage)).startswith(
            "invalid or corrupt torrent file"
        )
        assert (await client.result("torrent-add", filename="magnet:?xt=urn:btih:XYZ")).startswith(
            "invalid or corrupt torrent file"
        )
        url = str(web_server.make_url("/missing.torrent"))
        assert "http error 404" in await client.result("torrent-add", filename=url)
        assert (await client.result("torrent-add")).startswith("no torrent given")
        huge = (
            b'{"method": "torrent-add", "arguments": {"metainfo": "' + b"A" * (MAX_BODY_BYTES + 10) + b'"}}'
        )
        status, body = await client.post(None, raw=huge)
        assert status == 200
        assert body["result"].startswith("request larger than")
        assert (await client.result("torrent-set", ids=[1], **{"files-wanted": "all"})).startswith(
            "'files-wanted'"
        )
        assert (await client.result("session-set", **{"speed-limit-down": "fast"})).startswith(
            "'speed-limit-down'"
        )
        assert "not supported" in await client.result("blocklist-update")
        assert "exactly one torrent" in await client.result(
            "torrent-rename-path", ids=[1], path="a", name="b"
        )
        assert "must be strings" in await client.result("torrent-rename-path", path=1, name=None)
        # Still serving.
        assert (await client.call("session-get", fields=["version"]))["version"].startswith("pytorrent")
        assert await client.get(None, "id") == []


async def test_operations_on_a_complete_torrent(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    content = make_payload(downloads, "payload.bin", 200_000)
    meta = make_torrent(content, piece_length=16 * 1024)
    async with asyncio.timeout(60), running_daemon(tmp_path) as (daemon, client):
        tid = await client.add(meta, labels=["linux"])
        assert await client.add(meta) == tid  # the duplicate answer names the same torrent

        async def status() -> int:
            return int((await client.get([tid], "status"))[0]["status"])

        await _wait_status(client, tid, Status.SEED)
        [t] = await client.get(
            [tid], "percentDone", "hashString", "labels", "files", "fileStats", "wanted", "priorities"
        )
        assert t["percentDone"] == 1.0
        assert t["hashString"] == meta.info_hash.hex()
        assert t["labels"] == ["linux"]
        assert t["files"] == [{"name": "payload.bin", "length": 200_000, "bytesCompleted": 200_000}]
        assert t["wanted"] == [1]
        assert t["priorities"] == [0]
        table = (await client.call("torrent-get", ids=[tid], fields=["id", "name", "nope"], format="table"))[
            "torrents"
        ]
        assert table == [["id", "name"], [tid, "payload.bin"]]

        await client.call("torrent-stop", ids=[tid])
        assert await status() == Status.STOPPED
        assert daemon.session.torrents() == []  # a stopped torrent is only a record
        await client.call("torrent-start", ids=[meta.info_hash.hex()])
        await _wait_status(client, tid, Status.SEED)

        # Corrupt a piece on disk; a verify finds it.
        await client.call("torrent-stop", ids=[tid])
        await asyncio.to_thread(_corrupt, content, 20_000)
        await client.call("torrent-verify", ids=[tid])
        await wait_until(
            lambda: (
                daemon.records[tid].handle is None
                and not daemon.records[tid].verify_pending
                and daemon.records[tid].checking is None
            ),
            what="verify done",
        )
        [t] = await client.get([tid], "status", "percentDone", "leftUntilDone")
        assert t["status"] == Status.STOPPED  # verified while stopped: stays stopped
        assert t["percentDone"] < 1.0
        assert t["leftUntilDone"] == 16 * 1024

        await client.call("torrent-set", ids=[tid], labels=["a", "b"], downloadLimit=50, downloadLimited=True)
        [t] = await client.get([tid], "labels", "downloadLimit", "downloadLimited")
        assert t == {"labels": ["a", "b"], "downloadLimit": 50, "downloadLimited": True}

        moved = tmp_path / "moved"
        await client.call("torrent-set-location", ids=[tid], location=str(moved), move=True)
        assert (moved / "payload.bin").is_file()
        assert not content.exists()
        assert (await client.get([tid], "downloadDir"))[0]["downloadDir"] == str(moved)

        if can_mount():
            with tmpfs(read_only=True) as ro:
                result = await client.result("torrent-set-location", ids=[tid], location=ro, move=True)
                assert result.startswith(f"cannot move to {ro}")
                [t] = await client.get([tid], "error", "errorString", "downloadDir")
                assert t["error"] == 3
                assert t["errorString"] == result
                assert t["downloadDir"] == str(moved)
                assert (moved / "payload.bin").is_file()

        free = await client.call("free-space", path=str(tmp_path))
        assert free["size-bytes"] > 0
        assert (await client.result("free-space", path=str(tmp_path / "absent"))).endswith(
            "No such file or directory"
        )

        await client.call("torrent-remove", ids=[tid], **{"delete-local-data": True})
        assert not (moved / "payload.bin").exists()
        assert await client.get(None, "id") == []
        assert (await client.call("torrent-get", ids="recently-active", fields=["id"]))["removed"] == [tid]


async def test_session_settings_stats_port_test_and_close(tmp_path: Path) -> None:
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, client):
        await client.call(
            "session-set",
            **{"speed-limit-down": 120, "speed-limit-down-enabled": True, "download-queue-size": 2},
        )
        got = await client.call("session-get")
        assert got["speed-limit-down"] == 120
        assert got["speed-limit-down-enabled"] is True
        assert got["download-queue-size"] == 2
        assert got["peer-port"] == daemon.session.port
        assert got["session-id"] == client.session_id
        assert daemon.max_active_downloads == 2
        stats = await client.call("session-stats")
        assert stats["torrentCount"] == 0
        assert "cumulative-stats" in stats
        assert (await client.call("port-test"))["port-is-open"] is True
        async with client.http.get(client.url.replace("/transmission/rpc", "/metrics")) as resp:
            text = await resp.text()
        assert 'pytorrent_torrents{state="seed"} 0' in text
        await client.call("session-close")
        assert daemon.close_requested.is_set()
    # The settings persist in the state directory.
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, client):
        got = await client.call("session-get", fields=["speed-limit-down", "download-queue-size"])
        assert got == {"speed-limit-down": 120, "download-queue-size": 2}


async def test_queue_keeps_at_most_n_downloading_and_moves(tmp_path: Path) -> None:
    metas = [
        make_torrent(make_payload(tmp_path / "elsewhere", f"t{i}.bin", 50_000, seed=i)) for i in range(3)
    ]
    async with asyncio.timeout(30), running_daemon(tmp_path, max_active_downloads=1) as (daemon, client):
        ids = [await client.add(m) for m in metas]
        await wait_until(
            lambda: [daemon.records[i].status() for i in ids] == [4, 3, 3],
            what=f"one downloading {[daemon.records[i].status() for i in ids]}",
        )
        await client.call("queue-move-top", ids=[ids[2]])
        rows = await client.get(ids, "id", "queuePosition")
        assert [r["queuePosition"] for r in rows] == [1, 2, 0]
        await client.call("torrent-stop", ids=[ids[0]])
        await wait_until(
            lambda: [daemon.records[i].status() for i in ids] == [0, 3, 4], what="the top of the queue runs"
        )
        await client.call("torrent-start-now", ids=[ids[1]])
        await wait_until(
            lambda: daemon.records[ids[1]].status() == Status.DOWNLOAD, what="start-now skips the queue"
        )
        await client.call("queue-move-bottom", ids=[ids[2]])
        await client.call("queue-move-up", ids=[ids[0]])
        rows = await client.get(ids, "queuePosition")
        assert [r["queuePosition"] for r in rows] == [0, 1, 2]


async def test_a_stalled_download_gives_up_its_slot(tmp_path: Path) -> None:
    metas = [
        make_torrent(make_payload(tmp_path / "elsewhere", f"t{i}.bin", 50_000, seed=i)) for i in range(2)
    ]
    async with (
        asyncio.timeout(30),
        running_daemon(tmp_path, max_active_downloads=1, stall_s=1.0) as (daemon, client),
    ):
        ids = [await client.add(m) for m in metas]
        # No peer has either: the first stalls after a second, then the second starts too.
        await wait_until(
            lambda: [daemon.records[i].status() for i in ids] == [4, 4], timeout_s=10, what="both run"
        )


async def test_stopping_a_magnet_ends_its_metadata_fetch(tmp_path: Path) -> None:
    magnet = "magnet:?xt=urn:btih:" + "cd" * 20 + "&dn=nobody-has-it"
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, client):
        tid = (await client.call("torrent-add", filename=magnet))["torrent-added"]["id"]
        await wait_until(lambda: daemon.records[tid].fetch_task is not None, what="fetching")
        [t] = await client.get([tid], "name", "status", "metadataPercentComplete", "totalSize")
        assert t == {
            "name": "nobody-has-it",
            "status": Status.DOWNLOAD,
            "metadataPercentComplete": 0.0,
            "totalSize": 0,
        }
        await client.call("torrent-stop", ids=[tid])
        assert (await client.get([tid], "status"))[0]["status"] == Status.STOPPED
        await wait_until(lambda: not daemon.session._fetchers, what="the fetch ended")
        await client.call("torrent-start", ids=[tid])
        await wait_until(lambda: bool(daemon.session._fetchers), what="fetching again")
        await client.call("torrent-remove", ids=[tid])
        await wait_until(lambda: not daemon.session._fetchers, what="the fetch ended with the torrent")
        assert await client.get(None, "id") == []


async def test_records_survive_a_restart(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    done = make_torrent(make_payload(downloads, "done.bin", 100_000))
    todo = make_torrent(make_payload(tmp_path / "elsewhere", "todo.bin", 100_000, seed=2))
    async with asyncio.timeout(30), running_daemon(tmp_path) as (_daemon, client):
        a = await client.add(done, labels=["x"])
        b = await client.add(todo, paused=True)
        await _wait_status(client, a, Status.SEED)
        await client.call("torrent-set", ids=[b], **{"files-unwanted": [0]})
    async with asyncio.timeout(30), running_daemon(tmp_path) as (_daemon, client):
        rows = await client.get(None, "id", "name", "labels", "status", "wanted", "doneDate")
        assert [(r["id"], r["name"], r["labels"]) for r in rows] == [
            (a, "done.bin", ["x"]),
            (b, "todo.bin", []),
        ]
        assert rows[1]["status"] == Status.STOPPED
        assert rows[1]["wanted"] == [0]
        assert rows[0]["doneDate"] > 0
        await _wait_status(client, a, Status.SEED)
        c = await client.add(make_torrent(make_payload(tmp_path / "elsewhere", "new.bin", 1000, seed=3)))
        assert c > b  # ids are never reused


async def test_download_over_rpc_from_our_seed_with_completion_hook(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "greeting", {"a.bin": 300_000, "sub/b.bin": 123_457})
    meta = make_torrent(content, piece_length=32 * 1024)
    marker = tmp_path / "hook.txt"
    hook = f'echo "$TR_TORRENT_ID $TR_TORRENT_NAME $TR_TORRENT_HASH $TR_TORRENT_DIR" > {marker}'
    async with (
        asyncio.timeout(60),
        Session(config.testing_settings().replace(seed_ratio=None)) as seed_session,
        running_daemon(tmp_path, on_complete=hook) as (daemon, client),
    ):
        seed = await seed_session.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        # A magnet with the seed's address: the daemon fetches the metadata, then the data.
        magnet = Magnet(meta.info_hash, name="greeting", peers=(("127.0.0.1", seed_session.port),)).to_uri()
        out = await client.call("torrent-add", filename=magnet)
        tid = out["torrent-added"]["id"]
        await wait_until(lambda: daemon.records[tid].meta is not None, timeout_s=20, what="metadata")
        seed.add_peers([("127.0.0.1", daemon.session.port)])
        await _wait_status(client, tid, Status.SEED, timeout_s=40)
        await wait_until(lambda: daemon.records[tid].stored.done_date > 0, what="the completion is noted")
        [t] = await client.get([tid], "percentDone", "downloadedEver", "files", "doneDate", "name")
        assert t["percentDone"] == 1.0
        assert t["downloadedEver"] >= 423_457
        assert t["doneDate"] > 0
        assert [f["bytesCompleted"] for f in t["files"]] == [300_000, 123_457]
        downloaded = tmp_path / "downloads" / "greeting"
        assert (downloaded / "a.bin").read_bytes() == (content / "a.bin").read_bytes()
        assert (downloaded / "sub" / "b.bin").read_bytes() == (content / "sub" / "b.bin").read_bytes()
        await wait_until(marker.exists, what="the completion hook ran")
        await wait_until(lambda: marker.read_text().endswith("\n"), what="the hook's line")
        assert marker.read_text().split() == [
            str(tid),
            "greeting",
            meta.info_hash.hex(),
            str(tmp_path / "downloads"),
        ]


async def test_seed_idle_limits_stop_idle_seeds_unless_unlimited(tmp_path: Path) -> None:
    """transmission-remote 3.00 has no flag for the idle limit: set over RPC."""
    downloads = tmp_path / "downloads"
    metas = [make_torrent(make_payload(downloads, f"s{i}.bin", 30_000, seed=i)) for i in range(3)]
    async with asyncio.timeout(30), running_daemon(tmp_path) as (_daemon, client):
        a, b, c = [await client.add(m) for m in metas]
        for tid in (a, b, c):
            await _wait_status(client, tid, Status.SEED)
        await client.call("torrent-set", ids=[b], seedIdleMode=2)  # never stops for idleness
        await client.call("torrent-set", ids=[c], seedIdleMode=1, seedIdleLimit=0)  # its own: 0 min
        await _wait_status(client, c, Status.STOPPED)
        [t] = await client.get([c], "isFinished")
        assert t["isFinished"] is True
        assert (await client.get([a], "status"))[0]["status"] == Status.SEED  # the session's: off
        await client.call("session-set", **{"idle-seeding-limit-enabled": True, "idle-seeding-limit": 0})
        assert (await client.call("session-get"))["idle-seeding-limit-enabled"] is True
        await _wait_status(client, a, Status.STOPPED)
        rows = await client.get([a, b], "status", "isFinished")
        assert [(r["status"], r["isFinished"]) for r in rows] == [
            (Status.STOPPED, True),
            (Status.SEED, False),
        ]
        # Started again with an idle limit of 30 minutes: it seeds.
        await client.call("session-set", **{"idle-seeding-limit": 30})
        await client.call("torrent-start", ids=[a])
        await _wait_status(client, a, Status.SEED)
        assert (await client.get([a], "isFinished"))[0]["isFinished"] is False


async def test_rename_path_renames_on_disk_and_in_the_listing_and_survives_a_restart(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    content = make_payload(
        downloads, "album", {"one.bin": 40_000, "sub/two.bin": 30_000, "sub/three.bin": 20_000}
    )
    meta = make_torrent(content, piece_length=16 * 1024)
    async with asyncio.timeout(30), running_daemon(tmp_path) as (_daemon, client):
        tid = await client.add(meta)
        await _wait_status(client, tid, Status.SEED)
        out = await client.call("torrent-rename-path", ids=[tid], path="album/one.bin", name="first.bin")
        assert out == {"id": tid, "path": "album/one.bin", "name": "first.bin"}
        await client.call("torrent-rename-path", ids=[tid], path="album/sub", name="inner")
        await client.call("torrent-rename-path", ids=[tid], path="album", name="record")
        assert sorted(p.relative_to(downloads).as_posix() for p in downloads.rglob("*.bin")) == [
            "record/first.bin",
            "record/inner/three.bin",
            "record/inner/two.bin",
        ]
        [t] = await client.get([tid], "name", "files", "hashString", "status", "percentDone")
        assert t["name"] == "record"
        assert t["hashString"] == meta.info_hash.hex()
        assert [f["name"] for f in t["files"]] == [
            "record/first.bin",
            "record/inner/three.bin",
            "record/inner/two.bin",
        ]
        for path, name, why in (
            ("album/one.bin", "x", "no such path"),
            ("record/first.bin", "a/b", "invalid name"),
            ("record/first.bin", "..", "invalid name"),
            ("record/inner/two.bin", "three.bin", "File exists"),
        ):
            assert why in await client.result("torrent-rename-path", ids=[tid], path=path, name=name)
        assert "exactly one" in await client.result("torrent-rename-path", ids=[], path="record", name="y")
        single = await client.add(make_torrent(make_payload(downloads, "solo.bin", 10_000, seed=5)))
        await _wait_status(client, single, Status.SEED)
        await client.call("torrent-rename-path", ids=[single], path="solo.bin", name="alone.bin")
        assert (downloads / "alone.bin").is_file()
        assert not (downloads / "solo.bin").exists()
        [t] = await client.get([single], "name", "files")
        assert (t["name"], [f["name"] for f in t["files"]]) == ("alone.bin", ["alone.bin"])
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, client):
        [t] = await client.get([tid], "name", "files", "status", "percentDone")
        assert t["name"] == "record"
        assert [f["name"] for f in t["files"]] == [
            "record/first.bin",
            "record/inner/three.bin",
            "record/inner/two.bin",
        ]
        await client.call("torrent-verify", ids=[tid])  # the renamed files hold the right data
        await wait_until(
            lambda: daemon.records[tid].checked and daemon.records[tid].checking is None, what="verified"
        )
        await _wait_status(client, tid, Status.SEED)
        assert (await client.get([tid], "percentDone"))[0]["percentDone"] == 1.0
        # Removing with its data removes it where the renames put it.
        await client.call("torrent-remove", ids=[tid], **{"delete-local-data": True})
        await wait_until(lambda: not (downloads / "record").exists(), what="renamed content deleted")


def _corrupt(path: Path, at: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(at)
        fh.write(b"\0" * 100)


async def _wait_status(client: RpcClient, tid: int, status: int, *, timeout_s: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = None
    while loop.time() < deadline:
        [t] = await client.get([tid], "status", "errorString")
        last = t
        if t["status"] == status:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"torrent {tid} not in status {status} within {timeout_s} s: {json.dumps(last)}")


def test_cli_parser_knows_the_daemon() -> None:
    from cli.main import build_parser

    args = build_parser("daemon").parse_args(
        ["daemon", "--rpc-port", "0", "--max-active-downloads", "3", "--watch-dir", os.curdir]
    )
    assert (args.rpc_port, args.max_active_downloads, args.watch_dir) == (0, 3, os.curdir)


async def test_bandwidth_groups_limit_their_torrents_and_persist(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    content = make_payload(downloads, "grouped.bin", 400_000)
    meta = make_torrent(content, piece_length=32 * 1024)
    slow = {"name": "slow", "speed-limit-up-enabled": True, "speed-limit-up": 100}
    async with asyncio.timeout(60), running_daemon(tmp_path) as (daemon, client):
        assert "name" in await client.result("group-set", **{"speed-limit-up": 5})
        assert "non-negative" in await client.result("group-set", name="x", **{"speed-limit-up": -1})
        assert "true or false" in await client.result("group-set", name="x", honorsSessionLimits=1)
        assert (await client.call("group-get"))["group"] == []  # nothing made by a refused call
        await client.call("group-set", **slow)
        tid = await client.add(meta)
        await _wait_status(client, tid, Status.SEED)
        await client.call("torrent-set", ids=[tid], group="slow")
        assert (await client.get([tid], "group"))[0]["group"] == "slow"
        assert "group" in await client.result("torrent-set", ids=[tid], group=3)
        [group] = (await client.call("group-get", group="slow"))["group"]
        assert group == {
            "name": "slow",
            "honorsSessionLimits": True,
            "speed-limit-down-enabled": False,
            "speed-limit-down": 0,
            "speed-limit-up-enabled": True,
            "speed-limit-up": 100,
        }
        # 400 kB through the group's 100 kB/s bucket (half a second of burst): at least
        # 3.5 s; unlimited on loopback it takes a fraction of a second.
        async with Session(config.testing_settings()) as session:
            loop = asyncio.get_running_loop()
            start = loop.time()
            leecher = await session.add_torrent(
                meta, tmp_path / "leecher", peers=[("127.0.0.1", daemon.session.port)], seed=False
            )
            await leecher.wait_complete()
            elapsed = loop.time() - start
        assert elapsed >= 3.0, f"400 kB in {elapsed:.2f} s through a group's 100 kB/s"
        # A torrent set to a group not made yet makes it, with no limits of its own.
        await client.call("torrent-set", ids=[tid], group="new")
        assert [g["name"] for g in (await client.call("group-get"))["group"]] == ["slow", "new"]
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, client):
        [group] = (await client.call("group-get", group=["slow", "unknown"]))["group"]
        assert group["speed-limit-up"] == 100
        assert (await client.get([tid], "group"))[0]["group"] == "new"


async def test_adds_that_arrive_together_share_one_commit_and_are_answered_once_stored(
    tmp_path: Path,
) -> None:
    metas = [make_torrent(make_payload(tmp_path / "downloads", f"g{i}.bin", 1000, seed=i)) for i in range(8)]
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, client):
        commits: list[str] = []
        daemon.store._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
        other = sqlite3.connect(tmp_path / "state" / "state.sqlite3")
        records = [daemon.add(metainfo=m.to_bytes())[0] for m in metas]
        assert other.execute("SELECT COUNT(*) FROM torrents").fetchone()[0] == 0  # not answered yet
        await daemon.committed()
        assert other.execute("SELECT COUNT(*) FROM torrents").fetchone()[0] == 8
        assert commits[:1] == ["COMMIT"]
        assert daemon.store.pending == 0
        # Over RPC, concurrent adds are each answered, and stored by then.
        more = [
            make_torrent(make_payload(tmp_path / "downloads", f"h{i}.bin", 1000, seed=20 + i))
            for i in range(8)
        ]
        ids = await asyncio.gather(*(client.add(m) for m in more))
        assert other.execute("SELECT COUNT(*) FROM torrents").fetchone()[0] == 16
        assert sorted(ids) == list(range(records[-1].id + 1, records[-1].id + 9))
        other.close()


async def test_an_add_that_cannot_be_stored_is_an_error_and_not_listed(tmp_path: Path) -> None:
    meta = make_torrent(make_payload(tmp_path / "downloads", "full.bin", 1000))
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, client):
        real = daemon.store._db

        class FullDisk:
            def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
                if sql == "COMMIT":
                    raise sqlite3.OperationalError("database or disk is full")
                return real.execute(sql, *args)

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        daemon.store._db = FullDisk()  # type: ignore[assignment]
        result = await client.result("torrent-add", metainfo=base64.b64encode(meta.to_bytes()).decode())
        daemon.store._db = real
        assert result == "cannot store the torrent: database or disk is full"
        assert await client.get(None, "id") == []
        # Nothing left behind: the same torrent adds fine once the disk has room.
        tid = await client.add(meta)
        assert [t["id"] for t in await client.get(None, "id")] == [tid]


async def test_alternative_speed_limits_switch_at_the_schedules_boundaries(tmp_path: Path) -> None:
    now = [datetime.datetime(2024, 1, 1, 21, 59, 0)]  # a Monday
    schedule = {
        "alt-speed-time-enabled": True,
        "alt-speed-time-begin": 22 * 60,
        "alt-speed-time-end": 6 * 60,  # wraps midnight: Monday 22:00 to Tuesday 06:00
        "alt-speed-time-day": 1 << 1,  # Monday
    }

    async def alt_speed() -> bool:
        got = await client.call("session-get", fields=["alt-speed-enabled"])
        return bool(got["alt-speed-enabled"])

    async def at(when: datetime.datetime) -> None:
        now[0] = when
        daemon._alt_speed.wake.set()  # what the wait's timeout does at the boundary
        await asyncio.sleep(0.05)

    async with asyncio.timeout(30), running_daemon(tmp_path, clock=lambda: now[0]) as (daemon, client):
        await client.call("session-set", **{"alt-speed-down": 7, "alt-speed-up": 9, **schedule})
        got = await client.call("session-get")
        assert {k: got[k] for k in schedule} == schedule
        assert not await alt_speed()
        # One wait until the boundary (60 s away), not a check every minute.
        assert daemon.alt_speed_step() == pytest.approx(60.05)
        await at(datetime.datetime(2024, 1, 1, 22, 0, 0))
        await wait_until(lambda: daemon.session_limits["alt-speed-enabled"], what="on at 22:00")
        assert await alt_speed()
        assert daemon.effective_rate_limits() == (7000, 9000)
        # The next boundary is Tuesday 06:00, 8 hours on.
        assert daemon.alt_speed_step() == pytest.approx(8 * 3600 + 0.05)
        # Switched off by hand at 23:00: it stays off (the schedule acts at its boundaries).
        await at(datetime.datetime(2024, 1, 1, 23, 0, 0))
        await client.call("session-set", **{"alt-speed-enabled": False})
        await at(datetime.datetime(2024, 1, 2, 1, 0, 0))
        assert not await alt_speed()
        # On by hand after the window: it stays on until the next Monday 22:00 boundary,
        # which is the next one (Tuesday 06:00 passed: nothing to switch).
        await at(datetime.datetime(2024, 1, 2, 6, 0, 0))
        await client.call("session-set", **{"alt-speed-enabled": True})
        await at(datetime.datetime(2024, 1, 2, 22, 30, 0))
        assert await alt_speed()
        assert daemon.alt_speed_step() == pytest.approx((6 * 24 - 0.5) * 3600 + 0.05)
        # Off by the Monday window's end (after its begin switched it on, as it was).
        await at(datetime.datetime(2024, 1, 8, 22, 0, 0))
        await at(datetime.datetime(2024, 1, 9, 6, 0, 0))
        await wait_until(lambda: not daemon.session_limits["alt-speed-enabled"], what="off at 06:00")
        assert daemon.effective_rate_limits() == (0, 0)
        # A schedule turned off leaves the switch alone, and no wait is set.
        await client.call("session-set", **{"alt-speed-time-enabled": False})
        assert daemon.alt_speed_step() is None
        with pytest.raises(AssertionError, match="at most 1439"):
            await client.call("session-set", **{"alt-speed-time-begin": 1440})
    # Persisted, and a schedule turned on again applies at once (inside the window now).
    now[0] = datetime.datetime(2024, 1, 8, 23, 0, 0)
    async with asyncio.timeout(30), running_daemon(tmp_path, clock=lambda: now[0]) as (daemon, client):
        got = await client.call("session-get")
        assert {k: got[k] for k in schedule} == {**schedule, "alt-speed-time-enabled": False}
        await client.call("session-set", **{"alt-speed-time-enabled": True})
        await wait_until(lambda: daemon.session_limits["alt-speed-enabled"], what="on at once")
