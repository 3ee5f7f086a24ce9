"""The daemon's network settings over the RPC (applied live, kept across a restart), the
per-peer ``isEncrypted``/``isUTP`` flags, and a stopped torrent's pieces map.

Everything is on loopback; the DHT, when a test turns it on, bootstraps from nowhere.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

from tests.integration.daemon_helpers import running_daemon
from tests.integration.swarm_helpers import free_port, make_payload, make_torrent
from tests.polling import wait_until
from torrent import config
from torrent.config import Encryption
from torrent.daemon import fields
from torrent.engine.dht_node import load_state
from torrent.engine.session import Session
from torrent.proto.metainfo import Metainfo

NETWORK = ["peer-port", "encryption", "dht-enabled", "pex-enabled", "lpd-enabled", "utp-enabled"]


async def test_network_settings_apply_live_persist_and_bad_values_change_nothing(tmp_path: Path) -> None:
    port = free_port()
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, client):
        got = await client.call("session-get", fields=NETWORK)
        assert got == {
            "peer-port": daemon.session.port,
            "encryption": "preferred",
            "dht-enabled": False,
            "pex-enabled": False,
            "lpd-enabled": False,
            "utp-enabled": True,
        }
        # Each bad value is refused, and nothing of the call applies (not even its good keys).
        for bad in ({"peer-port": 70_000}, {"encryption": "always"}, {"dht-enabled": "yes"}):
            result = await client.result("session-set", **bad, **{"speed-limit-down": 7})
            assert result.startswith("invalid argument"), result
        assert (await client.call("session-get", fields=["speed-limit-down"]))["speed-limit-down"] == 100
        await client.call(
            "session-set",
            **{"peer-port": port, "encryption": "required", "pex-enabled": True, "utp-enabled": False},
        )
        assert daemon.session.port == port
        assert daemon.session.settings.encryption is Encryption.REQUIRE
        assert daemon.session.settings.pex_enabled
        assert daemon.session.utp_statistics() is None
        got = await client.call("session-get", fields=NETWORK)
        assert got == {
            "peer-port": port,
            "encryption": "required",
            "dht-enabled": False,
            "pex-enabled": True,
            "lpd-enabled": False,
            "utp-enabled": False,
        }
        # The DHT on and off again (it bootstraps from nowhere: testing settings).
        await client.call("session-set", **{"dht-enabled": True})
        assert daemon.session.dht is not None
        assert daemon.settings.dht_enabled
        node_id = daemon.session.dht.node_id
        await client.call("session-set", **{"dht-enabled": False, "encryption": "tolerated"})
        assert daemon.session.dht is None
        # Its table was saved in the state directory, for the next time it is on.
        assert load_state(tmp_path / "state" / "dht.state")[0] == node_id
        # A port another socket holds: an error result, and the daemon keeps its port.
        taken = Session(config.testing_settings())
        async with taken:
            result = await client.result("session-set", **{"peer-port": taken.port})
            assert "in use" in result
            assert daemon.session.port == port
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, client):
        assert daemon.session.port == port  # the stored settings are where the session starts
        got = await client.call("session-get", fields=NETWORK)
        assert got == {
            "peer-port": port,
            "encryption": "tolerated",
            "dht-enabled": False,
            "pex-enabled": True,
            "lpd-enabled": False,
            "utp-enabled": False,
        }


async def test_peers_report_encryption_and_utp(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "flags.bin", 1_200_000)
    meta = make_torrent(content)
    # A slow seed keeps the connection open while the test looks at it.
    seed_settings = config.testing_settings().replace(seed_ratio=None, max_upload_bps=60_000)
    async with (
        asyncio.timeout(40),
        Session(seed_settings) as seed_session,
        running_daemon(tmp_path) as (daemon, client),
    ):
        seed = await seed_session.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        # "preferred" offers both methods and the seed picks plaintext (isEncrypted false):
        # "required" offers RC4 only.
        await client.call("session-set", encryption="required")
        tid = await client.add(meta)
        await wait_until(lambda: daemon.records[tid].handle is not None, what="the torrent runs")
        handle = daemon.records[tid].handle
        assert handle is not None
        handle.add_peers([("127.0.0.1", seed_session.port)])
        peers: list[dict[str, object]] = []

        async def one_peer() -> bool:
            [t] = await client.get([tid], "peers")
            peers[:] = t["peers"]
            return len(peers) == 1

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while not await one_peer():
            assert loop.time() < deadline, "no peer listed"
            await asyncio.sleep(0.1)
        [p] = peers
        # The connection is RC4 over uTP.
        assert (p["isEncrypted"], p["isUTP"], p["isIncoming"]) == (True, True, False)
        assert "E" in str(p["flagStr"])
        assert "T" in str(p["flagStr"])


def _on_disk_but_one_piece(tmp_path: Path, damaged: int) -> Metainfo:
    """A torrent of 8 pieces whose data is in the daemon's download directory, piece
    ``damaged`` corrupt."""
    content = make_payload(tmp_path / "downloads", "there.bin", 8 * 32 * 1024)
    meta = make_torrent(content, piece_length=32 * 1024)
    data = bytearray(content.read_bytes())
    data[damaged * 32 * 1024] ^= 0xFF
    content.write_bytes(bytes(data))
    return meta


async def test_a_torrent_added_stopped_is_checked_and_stays_stopped(tmp_path: Path) -> None:
    """As in Transmission: the data already on the disk shows at once, nothing runs."""
    meta = _on_disk_but_one_piece(tmp_path, 3)
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, client):
        tid = await client.add(meta, paused=True)
        await wait_until(
            lambda: daemon.records[tid].checked and daemon.records[tid].check_task is None, what="checked"
        )
        [t] = await client.get([tid], "status", "percentDone", "peersConnected")
        assert t == {"status": 0, "percentDone": 0.875, "peersConnected": 0}
        assert daemon.records[tid].handle is None  # checked, not started


async def test_the_check_of_a_torrent_added_stopped_survives_a_restart(tmp_path: Path) -> None:
    """Stopped before its check began (no check slot, as in a long burst of adds): the
    next run checks it, and it still stays stopped."""
    meta = _on_disk_but_one_piece(tmp_path, 5)
    async with asyncio.timeout(30):
        async with running_daemon(tmp_path, check_slots=0) as (daemon, client):
            tid = await client.add(meta, paused=True)
            await daemon.committed()
            assert not daemon.records[tid].checked
        async with running_daemon(tmp_path) as (daemon, client):
            await wait_until(
                lambda: daemon.records[tid].checked and daemon.records[tid].check_task is None, what="checked"
            )
            [t] = await client.get([tid], "status", "percentDone")
            assert t == {"status": 0, "percentDone": 0.875}
            assert daemon.records[tid].handle is None
        async with running_daemon(tmp_path) as (daemon, client):  # checked once: not again
            await daemon.committed()
            assert not daemon.records[tid].check_owed
            [t] = await client.get([tid], "percentDone")
            assert t == {"percentDone": 0.875}


async def test_a_stopped_incomplete_torrent_shows_its_verified_pieces(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    content = make_payload(downloads, "half.bin", 8 * 32 * 1024)
    meta = make_torrent(content, piece_length=32 * 1024)
    data = bytearray(content.read_bytes())
    for piece in (1, 6):  # damaged
        data[piece * 32 * 1024 + 100] ^= 0xFF
    content.write_bytes(bytes(data))
    async with asyncio.timeout(30), running_daemon(tmp_path) as (daemon, client):
        tid = await client.add(meta, paused=True)
        await client.call("torrent-verify", ids=[tid])
        await wait_until(
            lambda: daemon.records[tid].checked and daemon.records[tid].check_task is None, what="checked"
        )
        [t] = await client.get([tid], "pieces", "pieceCount", "status", "percentDone")
        assert t["status"] == 0  # stopped
        assert t["percentDone"] == 0.75
        assert base64.b64decode(t["pieces"]) == bytes([0b10111101])
        # Read once, not per request: kept until the resume state changes.
        reads: list[object] = []
        read = fields._resume_verified

        def counted(meta: Any, download_dir: str) -> Any:
            reads.append(meta)
            return read(meta, download_dir)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(fields, "_resume_verified", counted)  # what torrent-get reads with
            for _ in range(3):
                [t] = await client.get([tid], "pieces")
                assert base64.b64decode(t["pieces"]) == bytes([0b10111101])
            assert reads == []
            # Repaired and verified again: the new state is read (once).
            data[1 * 32 * 1024 + 100] ^= 0xFF
            content.write_bytes(bytes(data))
            await client.call("torrent-verify", ids=[tid])
            await wait_until(lambda: daemon.records[tid].check_task is None, what="checked again")
            await wait_until(lambda: daemon.records[tid].checking is None, what="check ended")
            for _ in range(2):
                [t] = await client.get([tid], "pieces")
                assert base64.b64decode(t["pieces"]) == bytes([0b11111101])
            assert len(reads) == 1
