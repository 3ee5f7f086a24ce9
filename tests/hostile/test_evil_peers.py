"""Evil peers against a downloading torrent: bounded reconnects, bans with a reason.

Before, a peer that completed the handshake and hung up was redialled without delay
(about 2,000 connections a second); every failure now grows the back-off and
protocol violations ban the address.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from pathlib import Path

import pytest

from tests.hostile import evil_peer as ep
from tests.integration.swarm_helpers import make_payload, make_torrent
from tests.integration.test_magnet_peers import MetadataPeer, _many_files_torrent
from tests.polling import wait_until
from torrent import config
from torrent.engine.session import Session
from torrent.engine.status import TorrentEventKind
from torrent.proto.magnet import Magnet

ROOT = Path(__file__).resolve().parents[2]

BACKOFF_S = 0.2


def settings() -> config.Settings:
    # Plaintext only: with ``prefer`` each attempt is two connections (MSE, then the
    # plaintext fallback), which would blur the count of attempts.
    return config.testing_settings().replace(retry_backoff_s=BACKOFF_S, encryption="off")


async def test_a_peer_that_hangs_up_after_the_handshake_is_redialled_with_growing_gaps(
    tmp_path: Path,
) -> None:
    meta = make_torrent(make_payload(tmp_path / "src", "p.bin", 100_000))
    s_ = settings()
    async with ep.EvilPeer(meta.info_hash, ep.hang_up).running() as evil, Session(s_) as s:
        await s.add_torrent(meta, tmp_path / "out", peers=[("127.0.0.1", evil.port)])
        await wait_until(
            lambda: len(evil.arrivals) >= s_.max_failures, timeout_s=30, what="the dials up to max_failures"
        )
    times = evil.arrivals
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Each gap is the back-off after the n-th failure: at least 75 % of BACKOFF_S * 2**n.
    for n, gap in enumerate(gaps[: s_.max_failures - 1]):
        assert gap >= 0.75 * BACKOFF_S * 2**n - 0.05, gaps
    # The storm was ~2,000 connections a second; now a handful over seconds.
    assert len(times) <= s_.max_failures + 1, gaps


@pytest.mark.parametrize(
    ("script", "violation"),
    [
        (ep.oversized_length, "4294967295"),
        (ep.bitfield_of_size(1000), "bitfield"),
    ],
)
async def test_protocol_violations_ban_the_address_with_the_reason(
    tmp_path: Path, script: ep.Script, violation: str
) -> None:
    meta = make_torrent(make_payload(tmp_path / "src", "p.bin", 100_000))
    s_ = settings()
    async with ep.EvilPeer(meta.info_hash, script).running() as evil, Session(s_) as s:
        t = await s.add_torrent(meta, tmp_path / "out", peers=[("127.0.0.1", evil.port)])
        events = t.events()
        t.add_peers([("127.0.0.1", evil.port)])
        async with asyncio.timeout(20):
            async for ev in events:
                if ev.kind is TorrentEventKind.PEER_BANNED:
                    break
        assert f"127.0.0.1:{evil.port} banned" in ev.message
        assert "protocol violation" in ev.message
        assert violation in ev.message.lower()
        assert len(evil.arrivals) == s_.max_violations


async def test_garbage_extended_handshake_and_unrequested_blocks_end_only_that_connection(
    tmp_path: Path,
) -> None:
    meta = make_torrent(make_payload(tmp_path / "src", "p.bin", 100_000))
    s_ = settings()
    async with (
        ep.EvilPeer(meta.info_hash, ep.garbage_extended_handshake).running() as garbage,
        ep.EvilPeer(meta.info_hash, ep.unrequested_blocks(50)).running() as pusher,
        Session(s_) as s,
    ):
        t = await s.add_torrent(
            meta, tmp_path / "out", peers=[("127.0.0.1", garbage.port), ("127.0.0.1", pusher.port)]
        )
        await wait_until(lambda: t.statistics().banned_peers >= 1, timeout_s=20, what="a ban")
        st = t.statistics()
        assert st.last_ban.startswith(
            f"127.0.0.1:{garbage.port}: 2 protocol violations, the last: extension handshake"
        )
        assert len(garbage.arrivals) == s_.max_violations
        # Unrequested blocks are dropped, neither stored nor held against the pusher.
        assert st.banned_peers == 1
        assert st.pieces_done == 0
        assert len(pusher.arrivals) == 1


async def test_ten_thousand_requests_are_bounded_and_an_honest_peer_still_downloads(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "p.bin", 200_000, seed=5)
    meta = make_torrent(content)
    answers: dict[str, int] = {}
    async with Session(settings()) as seed_s, Session(settings()) as leech_s:
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        flood = asyncio.create_task(ep.dial(seed_s.port, meta.info_hash, ep.request_flood(10_000, answers)))
        await wait_until(
            lambda: answers.get("block", 0) + answers.get("reject", 0) >= 10_000,
            timeout_s=30,
            what="every request answered",
        )
        leech = await leech_s.add_torrent(meta, tmp_path / "out", peers=[("127.0.0.1", seed_s.port)])
        async with asyncio.timeout(30):
            await leech.wait_complete()
        flood.cancel()
    # Every request got an answer; only about max_incoming_requests were served (the
    # queue's bound), the rest were rejected (BEP 6) at once.
    limit = settings().max_incoming_requests
    assert answers.get("block", 0) + answers.get("reject", 0) == 10_000, answers
    assert answers.get("block", 0) <= 2 * limit, answers
    assert (tmp_path / "out" / "p.bin").read_bytes() == content.read_bytes()


async def test_a_peer_that_unchokes_then_never_answers_is_dropped_and_the_honest_seed_serves(
    tmp_path: Path,
) -> None:
    """Its requests time out and go to the honest seed; the staller is snubbed, then closed
    once it has carried no payload for ``peer_timeout_s``."""
    content = make_payload(tmp_path / "seed", "p.bin", 600_000, seed=9)
    meta = make_torrent(content)
    requests: list[tuple[int, int]] = []
    s_ = settings().replace(request_timeout_s=1.0, snub_timeout_s=1.0, peer_timeout_s=2.0)
    async with (
        ep.EvilPeer(meta.info_hash, ep.stall_after_unchoke(requests)).running() as staller,
        Session(settings().replace(max_upload_bps=150_000)) as seed_s,
        Session(s_) as leech_s,
    ):
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        # the staller first, alone for a moment: it gets the first requests
        leech = await leech_s.add_torrent(meta, tmp_path / "out", peers=[("127.0.0.1", staller.port)])
        await wait_until(lambda: len(requests) > 0, timeout_s=10, what="requests to the staller")
        leech.add_peers([("127.0.0.1", seed_s.port)])
        async with asyncio.timeout(30):
            await leech.wait_complete()
        completed_at = time.monotonic()
    # the staller was dropped for carrying nothing, well before the download was done
    assert staller.departures
    assert staller.departures[0] < completed_at - 1.0
    assert (tmp_path / "out" / "p.bin").read_bytes() == content.read_bytes()
    # what was asked of the staller was asked again of the seed (it holds every block)
    assert seed.statistics().uploaded_bytes >= meta.info.total_length


async def test_metadata_with_the_wrong_hash_from_the_only_peer_ends_in_one_line(tmp_path: Path) -> None:
    """A magnet whose only peer serves an info dict that does not hash to the info hash:
    nothing is written, and ``download`` exits 1 with one line once its timeout is up."""
    _content, meta = _many_files_torrent(tmp_path)
    bad = bytearray(meta.info_bytes)
    bad[100] ^= 0xFF
    async with MetadataPeer(meta, bytes(bad), name=b"l") as liar:
        link = Magnet(meta.info_hash, peers=(liar.addr,)).to_uri()
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", "download", "--no-dht", "--no-lsd", "--no-port-mapping", "--quiet", link,
            "-o", str(tmp_path / "out"), "--port", "0", "--bind", "127.0.0.1", "--timeout", "4",
            "--encryption", "off",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(30):
            _out, err = await proc.communicate()
        elapsed = time.monotonic() - started
    assert liar.served >= 1  # its pieces were taken, then failed the info-hash check
    assert proc.returncode == 1
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].endswith(
        "no metadata within 4 s: 1 copy of the metadata failed the hash check (1 peer banned)"
    ), lines
    assert elapsed < 15
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
