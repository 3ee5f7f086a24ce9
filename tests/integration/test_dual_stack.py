"""IPv4 and IPv6 at once: two listening sockets, transfers over ``::1``, a swarm whose
peers exist on one family only, the same peer seen on both families, and our tracker
answering IPv6 announces with ``peers6`` (BEP 7).

Everything runs on loopback (``127.0.0.1`` and ``::1``); a machine without IPv6 skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.dht_helpers import TEST_CONFIG
from tests.integration.swarm_helpers import make_payload, make_torrent, same_tree
from tests.ipv6 import needs_ipv6
from tests.polling import wait_until
from torrent import config
from torrent.engine.addresses import OurAddresses
from torrent.engine.dht_node import DhtNode
from torrent.engine.session import Session
from torrent.engine.udp import UdpSocket
from torrent.proto import bencoding
from torrent.proto.tracker_codec import decode_compact_peers
from tracker.server import TrackerServer
from tracker.settings import TrackerSettings

pytestmark = needs_ipv6


def _settings(*interfaces: tuple[str, int]) -> config.Settings:
    return config.testing_settings().replace(listen_interfaces=interfaces)


async def test_both_families_listen_on_one_port_number() -> None:
    async with asyncio.timeout(10), Session(_settings(("127.0.0.1", 0), ("::1", 0))) as s:
        addresses = s.listen_addresses
        assert sorted(h for h, _ in addresses) == ["127.0.0.1", "::1"]
        assert {p for _, p in addresses} == {s.port}
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            _r, w = await asyncio.open_connection(host, s.port, family=family)
            w.close()


async def test_default_settings_listen_dual_stack() -> None:
    """``0.0.0.0`` implies ``::`` too (libtorrent's default), on the same port; the IPv6
    socket is IPv6-only, so the two do not collide."""
    settings = config.testing_settings().replace(listen_host="0.0.0.0")
    assert settings.listen_addresses() == (("0.0.0.0", 0), ("::", 0))
    async with asyncio.timeout(10), Session(settings) as s:
        assert sorted(h for h, _ in s.listen_addresses) == ["0.0.0.0", "::"]
        v6 = next(sock for server in s._servers for sock in server.sockets if sock.family == socket.AF_INET6)
        assert v6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1


@pytest.mark.parametrize("seed_on_v6", [True, False], ids=["seed-v6-only", "leech-v6-only"])
async def test_transfer_over_ipv6_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed_on_v6: bool
) -> None:
    content = make_payload(tmp_path / "seed", "six.bin", 400_000)
    meta = make_torrent(content)
    v6 = _settings(("::1", 0))
    both = _settings(("127.0.0.1", 0), ("::1", 0))
    # BEP 10 ``yourip``: each side tells the other where it sees it. Recorded as it arrives:
    # the connection itself may be gone by the time the test looks (the leecher completes
    # and lets the seed go).
    heard: list[tuple[str, str]] = []
    vote = OurAddresses.vote

    def record(self: OurAddresses, voter: str, reported: str) -> None:
        heard.append((voter, reported))
        vote(self, voter, reported)

    monkeypatch.setattr(OurAddresses, "vote", record)
    async with (
        asyncio.timeout(30),
        Session(v6 if seed_on_v6 else both) as seed_s,
        Session(both if seed_on_v6 else v6) as leech_s,
    ):
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        leech = await leech_s.add_torrent(meta, tmp_path / "leech", seed=False, peers=[("::1", seed_s.port)])
        await leech.wait_complete()
        # both ends connected over ::1 and saw each other there
        await wait_until(lambda: heard.count(("::1", "::1")) >= 2, what="yourip both ways")
    assert same_tree(content, tmp_path / "leech" / "six.bin")


async def test_swarm_where_some_peers_exist_only_on_ipv6(tmp_path: Path) -> None:
    """A seed on ``::1`` only, a middle peer on both families, a leecher on ``127.0.0.1``
    only: the leecher can only get the data through the middle peer."""
    content = make_payload(tmp_path / "seed", "relay.bin", 600_000)
    meta = make_torrent(content)
    async with (
        asyncio.timeout(40),
        Session(_settings(("::1", 0))) as seed_s,
        Session(_settings(("127.0.0.1", 0), ("::1", 0))) as mid_s,
        Session(_settings(("127.0.0.1", 0))) as v4_s,
    ):
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        mid = await mid_s.add_torrent(meta, tmp_path / "mid", peers=[("::1", seed_s.port)])
        leech = await v4_s.add_torrent(
            meta, tmp_path / "leech", seed=False, peers=[("127.0.0.1", mid_s.port)]
        )
        await asyncio.gather(mid.wait_complete(), leech.wait_complete())
        assert leech.statistics().downloaded_bytes >= 600_000
        # Every byte reached the middle peer over IPv6: the leecher had only what it had.
        assert seed.statistics().uploaded_bytes >= 600_000
    assert same_tree(content, tmp_path / "leech" / "relay.bin")


async def test_a_peer_known_on_both_families_gets_one_connection(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "once.bin", 300_000)
    meta = make_torrent(content)
    both = _settings(("127.0.0.1", 0), ("::1", 0))
    async with asyncio.timeout(30), Session(both) as seed_s, Session(both) as leech_s:
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        # Also the IPv4-mapped spelling: the same address as 127.0.0.1, one entry.
        peers = [("127.0.0.1", seed_s.port), ("::1", seed_s.port), ("::ffff:127.0.0.1", seed_s.port)]
        leech = await leech_s.add_torrent(meta, tmp_path / "leech", peers=peers)
        await leech.wait_complete()
        assert leech.statistics().peers_known == 2
        await wait_until(lambda: len(leech.peers()) == 1, what="one connection to the seed")
        assert len(seed.peers()) == 1


async def test_our_tracker_answers_ipv6_announces_with_peers6() -> None:
    """An announce over IPv6 is listed in ``peers6`` (18 bytes per peer); one over IPv4 in
    ``peers``; each family's peers are handed to both (BEP 7)."""
    settings = TrackerSettings(host="::1", port=0, udp_port=0, interval_s=60, min_interval_s=1)
    server = TrackerServer(settings)
    async with asyncio.timeout(10), server as t, aiohttp.ClientSession() as http:
        url = t.urls()[0]
        assert url.startswith("http://[::1]:")
        ih = "%AB" * 20

        async def announce(peer_id: str, port: int, left: int) -> dict[bytes, object]:
            query = f"?info_hash={ih}&peer_id={peer_id}&port={port}&left={left}&compact=1"
            async with http.get(url + query) as resp:
                decoded = bencoding.decode(await resp.read())
                assert isinstance(decoded, dict)
                return decoded

        await announce("A" * 20, 7001, 0)
        second = await announce("B" * 20, 7002, 1)
        raw6 = second[b"peers6"]
        assert isinstance(raw6, bytes)
        assert len(raw6) == 18
        assert [(p.ip, p.port) for p in decode_compact_peers(raw6, ipv6=True)] == [("::1", 7001)]
        assert second.get(b"peers", b"") == b""
        assert second[b"external ip"] == socket.inet_pton(socket.AF_INET6, "::1")


@contextlib.asynccontextmanager
async def _dual_router() -> AsyncIterator[DhtNode]:
    """A DHT node of the test's on 127.0.0.1 and ::1 (one port number), storing announces."""
    udp4 = await UdpSocket.open("127.0.0.1", 0)
    udp6 = await UdpSocket.open("::1", udp4.port)
    node = DhtNode(
        "127.0.0.1", udp4.port, config=TEST_CONFIG, transport=udp4.transport, transport6=udp6.transport
    )
    for udp in (udp4, udp6):
        udp.route(b"d", node.datagram_received)
    try:
        async with node:
            yield node
    finally:
        udp4.close()
        udp6.close()


async def test_a_dual_stack_session_joins_both_dhts(tmp_path: Path) -> None:
    """BEP 32: a session on both families runs one DHT node on two UDP sockets (one table
    per family) and announces on both; a leecher on IPv4 only and one on IPv6 only each
    find the seed through their family's DHT."""
    content = make_payload(tmp_path / "seed", "dht46.bin", 300_000)
    meta = make_torrent(content)  # no tracker
    dht = {"dht_enabled": True, "dht_retry_interval_s": 1.0}
    async with asyncio.timeout(40), _dual_router() as router:
        port = router.port
        both = (("127.0.0.1", port), ("::1", port))
        seed_settings = _settings(("127.0.0.1", 0), ("::1", 0)).replace(**dht, dht_bootstrap=both)
        v4 = _settings(("127.0.0.1", 0)).replace(**dht, dht_bootstrap=both[:1])
        v6 = _settings(("::1", 0)).replace(**dht, dht_bootstrap=both[1:])
        async with Session(seed_settings) as seed_s, Session(v4) as s4, Session(v6) as s6:
            assert seed_s.dht is not None
            assert seed_s.dht.config.families == (4, 6)
            seed = await seed_s.add_torrent(meta, tmp_path / "seed")
            await seed.wait_checked()
            leech4 = await s4.add_torrent(meta, tmp_path / "leech4", seed=False)
            leech6 = await s6.add_torrent(meta, tmp_path / "leech6", seed=False)
            await asyncio.gather(leech4.wait_complete(), leech6.wait_complete())
            tables = seed_s.dht.protocol.tables
            assert len(tables[4]) >= 1
            assert len(tables[6]) >= 1
    assert same_tree(content, tmp_path / "leech4" / "dht46.bin")
    assert same_tree(content, tmp_path / "leech6" / "dht46.bin")


async def _announces_with(
    tmp_path: Path, settings: config.Settings, *, ipv6: str | None, mapped: str | None
) -> str:
    """The query string of the first announce a session sends with these addresses known."""
    from aiohttp import web

    seen: asyncio.Queue[str] = asyncio.Queue()

    async def announce(request: web.Request) -> web.Response:
        seen.put_nowait(request.raw_path.partition("?")[2])
        return web.Response(body=b"d8:intervali60e5:peers0:e")

    app = web.Application()
    app.router.add_get("/announce", announce)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        content = make_payload(tmp_path / "seed", "hint.bin", 50_000)
        meta = make_torrent(content, trackers=[f"http://127.0.0.1:{port}/announce"])
        async with asyncio.timeout(10), Session(settings) as s:
            s.addresses.ipv6 = ipv6
            s.addresses.mapped_ipv4 = mapped
            await s.add_torrent(meta, tmp_path / "seed")
            return await seen.get()
    finally:
        await runner.cleanup()


async def test_announces_carry_bep7_hints_and_the_external_ip_only_when_asked(tmp_path: Path) -> None:
    base = config.testing_settings()
    plain = await _announces_with(tmp_path / "a", base, ipv6=None, mapped=None)
    assert "ipv6=" not in plain
    assert "ipv4=" not in plain
    assert "&ip=" not in plain
    hinted = await _announces_with(tmp_path / "b", base, ipv6="2a00:1450::5", mapped="11.22.33.44")
    assert "&ipv6=2a00%3A1450%3A%3A5" in hinted
    # the router's address is not told unless configured
    assert "ipv4=" not in hinted
    assert "&ip=" not in hinted
    claimed = await _announces_with(
        tmp_path / "c", base.replace(announce_external_ip=True), ipv6=None, mapped="11.22.33.44"
    )
    assert "&ip=11.22.33.44" in claimed
    assert "&ipv4=11.22.33.44" in claimed


async def test_pex_hands_out_ipv6_peers(tmp_path: Path) -> None:
    """BEP 11 ``added6``: the leecher is given only the middle peer's IPv4 address and
    learns the seed's ``::1`` address from the middle peer's ``ut_pex``."""
    content = make_payload(tmp_path / "seed", "pex6.bin", 2_000_000)
    meta = make_torrent(content, piece_length=64 * 1024)
    pex_on = {"pex_enabled": True, "pex_interval_s": 1.0}
    both = _settings(("127.0.0.1", 0), ("::1", 0))
    async with (
        asyncio.timeout(40),
        Session(_settings(("::1", 0))) as seed_s,
        Session(both.replace(**pex_on, max_download_bps=100_000)) as middle_s,
        Session(both.replace(**pex_on)) as leech_s,
    ):
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        middle = await middle_s.add_torrent(meta, tmp_path / "middle", peers=[("::1", seed_s.port)])
        await wait_until(lambda: middle.statistics().peers_connected == 1, what="the middle peer on the seed")
        leech = await leech_s.add_torrent(
            meta, tmp_path / "leech", seed=False, peers=[("127.0.0.1", middle_s.port)]
        )
        await wait_until(lambda: ("::1", seed_s.port) in leech.swarm.peer_list, what="the seed's ::1 via PEX")
        await leech.wait_complete()
        assert leech.swarm.pex_peers >= 1
    assert same_tree(content, tmp_path / "leech" / "pex6.bin")
