"""Encrypted transfers between our client (``--encryption require``) and libtorrent / Transmission.

* libtorrent with encryption forced (``in_enc_policy`` = ``out_enc_policy`` = forced,
  ``allowed_enc_level`` = RC4) seeds to ``pytorrent download --encryption require``, and
  downloads from ``pytorrent seed --encryption require``; libtorrent's own peer list must
  report the connection as RC4-encrypted.
* A plaintext-only libtorrent seed (encryption disabled) and ``download --encryption require``:
  nothing is downloaded, the command exits 1 saying that no peer accepted encryption.
* Transmission 3.00 with ``encryption`` = required seeds to our leecher (which dials it: it does
  not dial 127.x peers itself), and lists the connection as encrypted.

Our side runs as the CLI (a subprocess, the flag as a user gives it) except against
Transmission, where our session's counters are read in process. Every download is compared
byte for byte with the original. libtorrent runs in this process (the settings ``lt_worker``
does not expose); no tracker is involved. Loopback-only network namespace, as every interop test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.swarm_helpers import make_payload, make_torrent
from tests.interop.conftest import StartPeer, need
from tests.interop.peers import TransmissionPeer, free_port
from tests.libtorrent_settings import lt_add, lt_listen_port, lt_session
from tests.polling import wait_until
from torrent.proto.metainfo import Metainfo

pytestmark = [
    pytest.mark.interop,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.timeout(240),
]

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
SIZE = 6 * MIB + 12345
TRANSMISSION_SIZE = 3 * MIB + 777  # it moves 7-8 MB/s encrypted


@pytest.fixture
def lt(loopback_only: None) -> Any:
    need("libtorrent")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import libtorrent

    return libtorrent


def forced_rc4(lt: Any) -> dict[str, object]:
    forced = int(lt.enc_policy.forced)
    return {"in_enc_policy": forced, "out_enc_policy": forced, "allowed_enc_level": int(lt.enc_level.rc4)}


def plaintext_only(lt: Any) -> dict[str, object]:
    disabled = int(lt.enc_policy.disabled)
    return {"in_enc_policy": disabled, "out_enc_policy": disabled}


@contextlib.contextmanager
def lt_peer(lt: Any, **settings: object) -> Iterator[Any]:
    """:func:`lt_session` that retries a peer that refused it soon (the notes: 60 s x failures
    otherwise)."""
    with lt_session(lt, min_reconnect_time=1, max_failcount=1000, **settings) as session:
        yield session


def rc4_connections(lt: Any, handle: Any) -> int:
    return sum(1 for p in handle.get_peer_info() if int(p.flags) & int(lt.peer_info.rc4_encrypted))


def payload(tmp_path: Path, size: int = SIZE) -> tuple[Path, Path, Metainfo]:
    content = make_payload(tmp_path / "seed", "enc.bin", size, seed=21)
    meta = make_torrent(content, piece_length=256 * 1024)
    torrent = tmp_path / "enc.torrent"
    torrent.write_bytes(meta.to_bytes())
    return content, torrent, meta


async def pytorrent(command: str, *args: str) -> asyncio.subprocess.Process:
    """``pytorrent COMMAND ARGS`` with the DHT and LSD off (nothing may leave loopback)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", command, "--no-dht", "--no-lsd", "--no-port-mapping", *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_forced_libtorrent_seeds_to_our_require_leecher(lt: Any, tmp_path: Path) -> None:
    content, torrent, _ = payload(tmp_path)
    async with asyncio.timeout(120):
        with lt_peer(lt, **forced_rc4(lt)) as session:
            port = await lt_listen_port(session)
            handle = lt_add(lt, session, torrent, content.parent)
            await wait_until(lambda: handle.status().is_seeding, timeout_s=30, what="libtorrent to seed")
            proc = await pytorrent(
                "download", str(torrent), "-o", str(tmp_path / "out"), "--port", "0", "--bind", "127.0.0.1",
                "--peer", f"127.0.0.1:{port}", "--no-seed", "--timeout", "30", "--quiet",
                "--encryption", "require",
            )  # fmt: skip
            seen_rc4 = 0
            communicate = asyncio.ensure_future(proc.communicate())
            while not communicate.done():
                seen_rc4 = max(seen_rc4, rc4_connections(lt, handle))
                await asyncio.sleep(0.05)
            _, err = communicate.result()
    assert proc.returncode == 0, err.decode(errors="replace")
    assert (tmp_path / "out" / "enc.bin").read_bytes() == content.read_bytes()
    assert seen_rc4 >= 1, "libtorrent never listed an RC4-encrypted connection"


async def test_forced_libtorrent_downloads_from_our_require_seed(lt: Any, tmp_path: Path) -> None:
    content, torrent, _ = payload(tmp_path)
    our_port = free_port()
    async with asyncio.timeout(120):
        proc = await pytorrent(
            "seed", str(torrent), str(content), "--port", str(our_port), "--bind", "127.0.0.1", "--json",
            "--encryption", "require",
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            while b'"checked"' not in (line := await proc.stdout.readline()):
                assert line, "our seed exited before it checked its data"
            with lt_peer(lt, **forced_rc4(lt)) as session:
                await lt_listen_port(session)
                handle = lt_add(lt, session, torrent, tmp_path / "leech")
                # Unthrottled, the 6 MiB can arrive between two looks at libtorrent's peer
                # list, and a finished libtorrent drops its connection to a seed at once.
                handle.set_download_limit(8 * MIB)
                handle.connect_peer(("127.0.0.1", our_port))
                seen_rc4 = 0

                def done() -> bool:
                    nonlocal seen_rc4
                    seen_rc4 = max(seen_rc4, rc4_connections(lt, handle))
                    return bool(handle.status().is_seeding)

                await wait_until(done, timeout_s=60, interval_s=0.05, what="libtorrent to finish")
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = await proc.communicate()
    assert proc.returncode == 130, err.decode(errors="replace")
    assert (tmp_path / "leech" / "enc.bin").read_bytes() == content.read_bytes()
    assert seen_rc4 >= 1, "libtorrent never listed an RC4-encrypted connection"


async def test_require_does_not_download_from_a_plaintext_only_libtorrent(lt: Any, tmp_path: Path) -> None:
    content, torrent, _ = payload(tmp_path, 1 * MIB)
    async with asyncio.timeout(60):
        with lt_peer(lt, **plaintext_only(lt)) as session:
            port = await lt_listen_port(session)
            handle = lt_add(lt, session, torrent, content.parent)
            await wait_until(lambda: handle.status().is_seeding, timeout_s=30, what="libtorrent to seed")
            proc = await pytorrent(
                "download", str(torrent), "-o", str(tmp_path / "out"), "--port", "0", "--bind", "127.0.0.1",
                "--peer", f"127.0.0.1:{port}", "--no-seed", "--timeout", "4", "--quiet",
                "--encryption", "require",
            )  # fmt: skip
            _, err = await proc.communicate()
            uploaded = handle.status().total_payload_upload
    text = err.decode(errors="replace")
    assert proc.returncode == 1, text
    assert "no peer accepted encryption within 4 s (--encryption require)" in text, text
    assert uploaded == 0


@contextlib.asynccontextmanager
async def our_session(encryption: str) -> AsyncIterator[Any]:
    from torrent.config import testing_settings
    from torrent.engine.session import Session

    async with Session(testing_settings().replace(encryption=encryption)) as session:
        yield session


async def test_transmission_requiring_encryption_seeds_to_us(start_peer: StartPeer, tmp_path: Path) -> None:
    content, torrent, meta = payload(tmp_path, TRANSMISSION_SIZE)
    async with asyncio.timeout(180):
        tr = await start_peer("transmission")
        assert isinstance(tr, TransmissionPeer)
        await tr.rpc("session-set", {"encryption": "required"})
        assert (await tr.rpc("session-get", {"fields": ["encryption"]}))["encryption"] == "required"
        ih = await tr.add(torrent, content.parent, seed=True)
        await tr.wait_seeding(ih, timeout_s=60)
        async with our_session("require") as ours:
            # Transmission does not dial 127.x peers; we dial it.
            t = await ours.add_torrent(
                meta, tmp_path / "out", seed=False, peers=[("127.0.0.1", tr.peer_port)]
            )
            encrypted_seen = False
            complete = asyncio.ensure_future(t.wait_complete())
            try:
                while not complete.done():
                    got = await tr.rpc("torrent-get", {"ids": [ih], "fields": ["peers"]})
                    peers = got["torrents"][0]["peers"]
                    encrypted_seen = encrypted_seen or any(p.get("isEncrypted") for p in peers)
                    await asyncio.wait([complete], timeout=0.2)
                await complete
            finally:
                complete.cancel()
            st = ours.encryption_statistics()
    assert (tmp_path / "out" / "enc.bin").read_bytes() == content.read_bytes()
    assert st.outgoing_encrypted >= 1, st
    assert st.fallbacks_to_plaintext == 0
    assert encrypted_seen, "Transmission never listed the connection as encrypted"
    print("transmission (required) -> us:", json.dumps(st.failures))
