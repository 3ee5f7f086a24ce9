"""Encryption settings of our client against itself, over real loopback TCP.

Every transfer is checked byte for byte, and each side's encryption counters say which path
the connection took (encrypted, fallen back to plaintext, refused).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.integration.swarm_helpers import make_payload, make_torrent, same_tree
from tests.polling import wait_until
from torrent import config
from torrent.config import Encryption
from torrent.engine.session import Session
from torrent.proto.metainfo import Metainfo
from torrent.proto.mse import CryptoMethod, HandshakeDone, Receiver

ROOT = Path(__file__).resolve().parents[2]
SIZE = 1_500_000


def settings(encryption: Encryption) -> config.Settings:
    return config.testing_settings().replace(encryption=encryption)


def payload(tmp_path: Path) -> tuple[Path, Metainfo]:
    content = make_payload(tmp_path / "seed", "enc.bin", SIZE, seed=5)
    return content, make_torrent(content, piece_length=32 * 1024)


def methods(session: Session) -> list[object]:
    return [
        p.transport.get_extra_info("mse_method") if p.transport is not None else None
        for t in session.torrents()
        for p in t.swarm.peers.values()
    ]


@pytest.mark.parametrize("seed_dials", [False, True], ids=["leecher-dials", "seed-dials"])
async def test_require_both_ways(tmp_path: Path, seed_dials: bool) -> None:
    content, meta = payload(tmp_path)
    async with (
        asyncio.timeout(30),
        Session(settings(Encryption.REQUIRE)) as seed_s,
        Session(settings(Encryption.REQUIRE)) as leech_s,
    ):
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        if seed_dials:
            leech = await leech_s.add_torrent(meta, tmp_path / "leech", seed=False)
            seed.add_peers([("127.0.0.1", leech_s.port)])
        else:
            leech = await leech_s.add_torrent(
                meta, tmp_path / "leech", seed=False, peers=[("127.0.0.1", seed_s.port)]
            )
        await wait_until(lambda: methods(leech_s) == [CryptoMethod.RC4], what="an RC4 connection")
        await leech.wait_complete()
        dialler, listener = (seed_s, leech_s) if seed_dials else (leech_s, seed_s)
        assert dialler.encryption_statistics().outgoing_encrypted >= 1
        assert listener.encryption_statistics().incoming_encrypted >= 1
        for s in (seed_s, leech_s):
            st = s.encryption_statistics()
            assert st.fallbacks_to_plaintext == 0
            assert st.plaintext_refused == 0
    assert same_tree(content, tmp_path / "leech" / "enc.bin")


async def test_prefer_falls_back_to_plaintext_against_a_peer_with_encryption_off(tmp_path: Path) -> None:
    content, meta = payload(tmp_path)
    async with (
        asyncio.timeout(30),
        Session(settings(Encryption.OFF)) as seed_s,
        Session(settings(Encryption.PREFER)) as leech_s,
    ):
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        leech = await leech_s.add_torrent(
            meta, tmp_path / "leech", seed=False, peers=[("127.0.0.1", seed_s.port)]
        )
        await leech.wait_complete()
        st = leech_s.encryption_statistics()
        assert st.outgoing_failed >= 1
        assert st.fallbacks_to_plaintext >= 1
        assert st.outgoing_encrypted == 0
        assert methods(leech_s) in ([], [None])
    assert same_tree(content, tmp_path / "leech" / "enc.bin")


async def test_prefer_dials_encrypted_and_accepts_plaintext(tmp_path: Path) -> None:
    content, meta = payload(tmp_path)
    async with (
        asyncio.timeout(30),
        Session(settings(Encryption.PREFER)) as seed_s,
        Session(settings(Encryption.PREFER)) as leech_s,
        Session(settings(Encryption.OFF)) as plain_s,
    ):
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        leech = await leech_s.add_torrent(
            meta, tmp_path / "leech", seed=False, peers=[("127.0.0.1", seed_s.port)]
        )
        plain = await plain_s.add_torrent(
            meta, tmp_path / "plain", seed=False, peers=[("127.0.0.1", seed_s.port)]
        )
        await asyncio.gather(leech.wait_complete(), plain.wait_complete())
        assert leech_s.encryption_statistics().outgoing_encrypted >= 1
        assert seed_s.encryption_statistics().incoming_encrypted >= 1
        assert plain_s.encryption_statistics().outgoing_encrypted == 0
    assert same_tree(content, tmp_path / "leech" / "enc.bin")
    assert same_tree(content, tmp_path / "plain" / "enc.bin")


async def test_require_refuses_plaintext_in_both_directions(tmp_path: Path) -> None:
    _, meta = payload(tmp_path)
    async with (
        asyncio.timeout(30),
        Session(settings(Encryption.REQUIRE)) as strict_s,
        Session(settings(Encryption.OFF)) as plain_s,
    ):
        strict = await strict_s.add_torrent(meta, tmp_path / "seed")
        await strict.wait_checked()
        # A plaintext leecher dials the strict seed: refused at its first bytes.
        plain = await plain_s.add_torrent(
            meta, tmp_path / "plain", seed=False, peers=[("127.0.0.1", strict_s.port)]
        )
        await wait_until(lambda: strict_s.encryption_statistics().plaintext_refused >= 1, what="a refusal")
        # The strict seed dials the plaintext leecher: the encrypted handshake fails.
        strict.add_peers([("127.0.0.1", plain_s.port)])
        await wait_until(lambda: strict_s.encryption_statistics().outgoing_failed >= 1, what="a failed dial")
        st = strict_s.encryption_statistics()
        assert st.outgoing_encrypted == 0
        assert st.fallbacks_to_plaintext == 0
        assert plain.statistics().downloaded_bytes == 0
        assert strict.statistics().uploaded_bytes == 0


async def test_cli_require_against_a_plaintext_only_seed_says_why_and_exits_1(tmp_path: Path) -> None:
    _, meta = payload(tmp_path)
    (tmp_path / "t.torrent").write_bytes(meta.to_bytes())
    async with asyncio.timeout(60), Session(settings(Encryption.OFF)) as seed_s:
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", "download", "--no-dht", "--no-lsd", "--no-port-mapping", str(tmp_path / "t.torrent"),
            "-o", str(tmp_path / "out"), "--port", "0", "--bind", "127.0.0.1", "--quiet",
            "--peer", f"127.0.0.1:{seed_s.port}", "--timeout", "3", "--encryption", "require",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
    assert proc.returncode == 1, err
    assert b"no peer accepted encryption within 3 s (--encryption require)" in err, err
    assert seed.statistics().uploaded_bytes == 0


async def test_our_handshake_rides_in_the_initial_payload_when_we_dial(tmp_path: Path) -> None:
    """A bare MSE receiver: the first thing it reads after the MSE handshake is IA, and IA
    is our 68-byte BitTorrent handshake for the torrent (no extra round trip)."""
    _content, meta = payload(tmp_path)
    got: asyncio.Future[HandshakeDone] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        receiver = Receiver([meta.info_hash], max_pad=0)
        while not got.done() and (data := await reader.read(4096)):
            receiver.receive_data(data)
            ev = receiver.next_event()
            writer.write(receiver.data_to_send())
            if isinstance(ev, HandshakeDone):
                got.set_result(ev)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, asyncio.timeout(20), Session(settings(Encryption.REQUIRE)) as ours:
        await ours.add_torrent(meta, tmp_path / "leech", seed=False, peers=[("127.0.0.1", port)])
        done = await got
    assert done.skey == meta.info_hash
    assert len(done.initial_payload) == 68
    assert done.initial_payload[:20] == b"\x13BitTorrent protocol"
    assert done.initial_payload[28:48] == meta.info_hash
    assert done.initial_payload[48:] == ours.peer_id
