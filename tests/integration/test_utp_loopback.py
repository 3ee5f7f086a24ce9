"""uTP over real loopback UDP sockets: our stream against itself, then two sessions.

Inside a loopback-only network namespace the tests set ``lo``'s MTU to 1500 first (``ip link
set lo mtu 1500``), so packets have internet sizes; when ``tc`` is there, one transfer also
runs under ``netem`` loss and delay. Outside such a namespace those parts are skipped (the MTU
of the host's ``lo`` is not ours to change); the transfers themselves run anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.swarm_helpers import make_payload, make_torrent, same_tree
from tests.ipv6 import needs_ipv6
from tests.polling import wait_until
from tests.utp_helpers import loopback_mtu
from torrent import config
from torrent.config import Encryption
from torrent.engine import session as session_module
from torrent.engine import utp_socket
from torrent.engine.session import Session
from torrent.engine.udp import UdpSocket
from torrent.engine.utp_socket import UtpSocketManager
from torrent.engine.utp_stream import UtpStream


@pytest.fixture
def mtu_1500() -> Iterator[bool]:
    """``lo`` at MTU 1500 inside a loopback-only namespace (True), else left alone (False)."""
    with loopback_mtu(1500) as done:
        yield done


class Sink(asyncio.Protocol):
    """Collects a stream's bytes; reads slowly when ``slow`` (pausing the transport)."""

    def __init__(self, *, slow: bool = False) -> None:
        self.data = bytearray()
        self.transport: Any = None
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.eof = False
        self.slow = slow
        self.paused_writing = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        if self.slow:
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(0.002, self.transport.resume_reading)

    def eof_received(self) -> bool | None:
        self.eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self) -> None:
        self.paused_writing += 1

    def resume_writing(self) -> None:
        pass


@contextlib.asynccontextmanager
async def utp_pair(
    host: str = "127.0.0.1",
) -> AsyncIterator[tuple[UtpSocketManager, UtpSocketManager, list[UtpStream]]]:
    accepted: list[UtpStream] = []
    a_udp = await UdpSocket.open(host, 0)
    b_udp = await UdpSocket.open(host, 0)
    a = UtpSocketManager(a_udp)
    b = UtpSocketManager(b_udp, on_accept=accepted.append)
    try:
        yield a, b, accepted
    finally:
        a.close()
        b.close()
        a_udp.close()
        b_udp.close()


async def send_all(stream: Any, data: bytes, sink: Sink, chunk: int = 256 * 1024) -> None:
    for i in range(0, len(data), chunk):
        stream.write(data[i : i + chunk])
        await wait_until(lambda: stream.get_write_buffer_size() < 2 << 20, timeout_s=60, interval_s=0.005)


def blob(n: int) -> bytes:
    out = bytearray()
    h = b"utp"
    while len(out) < n:
        h = hashlib.sha256(h).digest()
        out += h * 64
    return bytes(out[:n])


async def transfer(
    size: int, *, slow: bool = False, host: str = "127.0.0.1"
) -> tuple[UtpSocketManager, UtpSocketManager, Sink, Sink]:
    data = blob(size)
    async with utp_pair(host) as (a, b, accepted):
        client = Sink()
        await a.connect(client, (host, b.port))
        await wait_until(lambda: accepted, what="the accepted stream")
        server = Sink(slow=slow)
        accepted[0].set_protocol(server)
        server.connection_made(accepted[0])
        await send_all(client.transport, data, server)
        await wait_until(
            lambda: len(server.data) >= len(data), timeout_s=120, interval_s=0.01, what="all bytes"
        )
        assert bytes(server.data) == data
        client.transport.close()
        await wait_until(lambda: server.eof, what="the FIN")
        assert await asyncio.wait_for(client.lost, 10) is None
        assert await asyncio.wait_for(server.lost, 10) is None
        return a, b, client, server


async def test_stream_carries_bytes_both_ways_at_mtu_1500(mtu_1500: bool) -> None:
    async with asyncio.timeout(120):
        a, b, client, _ = await transfer(8 << 20)
    assert a.counters.dropped == 0
    assert b.counters.dropped == 0
    if sys.platform == "linux":
        assert a.gso  # windows of 64 full packets (93 KB) went out in GSO sends under 64 KiB
    assert client.paused_writing >= 1  # 8 MiB written faster than sent: back-pressure


@needs_ipv6
async def test_stream_carries_bytes_over_ipv6_loopback(mtu_1500: bool) -> None:
    async with asyncio.timeout(120):
        a, b, client, server = await transfer(4 << 20, host="::1")
    assert client.transport.get_extra_info("peername")[0] == "::1"
    assert server.transport.get_extra_info("sockname")[0] == "::1"
    assert a.counters.dropped == 0
    assert b.counters.dropped == 0


async def say_hello(
    a: UtpSocketManager, accepted: list[UtpStream], addr: tuple[str, int], host_seen: str
) -> None:
    """Dial ``addr``, send a few bytes over the new stream; both ends see ``host_seen``."""
    before = len(accepted)
    client = Sink()
    stream = await a.connect(client, addr)
    await wait_until(lambda: len(accepted) > before, what="the accepted stream")
    server = Sink()
    accepted[-1].set_protocol(server)
    server.connection_made(accepted[-1])
    stream.write(b"hello")
    await wait_until(lambda: bytes(server.data) == b"hello", what="the bytes")
    assert accepted[-1].get_extra_info("peername")[0] == host_seen
    assert stream.get_extra_info("sockname")[0] == host_seen


@needs_ipv6
async def test_one_manager_serves_both_families() -> None:
    """Dial and accept over IPv4 and IPv6 on one manager (the session's two UDP sockets)."""
    accepted: list[UtpStream] = []
    sockets = [await UdpSocket.open(h, 0) for h in ("127.0.0.1", "::1", "127.0.0.1", "::1")]
    a = UtpSocketManager(sockets[0])
    a.add_socket(sockets[1])
    b = UtpSocketManager(sockets[2], on_accept=accepted.append)
    b.add_socket(sockets[3])
    try:
        with pytest.raises(ValueError, match="IPv6"):
            a.add_socket(sockets[3])
        async with asyncio.timeout(30):
            for host, udp in (
                ("127.0.0.1", sockets[2]),
                ("::1", sockets[3]),
                ("::ffff:127.0.0.1", sockets[2]),
            ):
                await say_hello(a, accepted, (host, udp.port), "::1" if host == "::1" else "127.0.0.1")
            assert len(accepted) == 3
    finally:
        a.close()
        b.close()
        for udp in sockets:
            udp.close()


async def test_dialling_a_family_without_a_socket_fails_at_once() -> None:
    async with utp_pair() as (a, _, _):
        with pytest.raises(OSError, match="no uTP socket"):
            await a.connect(Sink(), ("::1", 6881))


@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("::1", marks=needs_ipv6)])
async def test_at_lo_mtu_1280_refused_datagrams_shrink_the_packets(host: str) -> None:
    """The don't-fragment bit is set: a datagram over lo's MTU is refused (EMSGSIZE), the
    connection's packets shrink to fit and the transfer completes."""
    with loopback_mtu(1280) as lowered:
        if not lowered:
            pytest.skip("lowering lo's MTU needs a loopback-only namespace")
        async with asyncio.timeout(120):
            a, _, client, _ = await transfer(4 << 20, host=host)
    limit = 1280 - (40 if ":" in host else 20) - 8
    assert a.counters.mtu_too_big >= 1
    assert limit - 16 <= client.transport.conn.packet_size <= limit


async def test_slow_reader_shrinks_the_window_and_still_gets_everything() -> None:
    async with asyncio.timeout(120):
        _, b, _, _ = await transfer(2 << 20, slow=True)
    assert b.counters.over_window == 0  # the sender kept to the window we advertised


class LossyRelay:
    """A UDP relay between a client and ``server``: drops ``loss`` of the datagrams each way
    and delays each by up to ``jitter_s`` (which reorders them). For where ``tc netem`` is not
    available; the sockets and the kernel path are real."""

    def __init__(self, server: tuple[str, int], *, loss: float, jitter_s: float, seed: int) -> None:
        import random

        self.server = server
        self.loss = loss
        self.jitter_s = jitter_s
        self.rng = random.Random(seed)
        self.client: Any = None
        self.dropped = 0
        self.front: Any = None
        self.back: Any = None

    async def start(self) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        relay = self

        class Front(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                relay.client = addr
                relay.forward(data, lambda d: relay.back.sendto(d))

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                if relay.client is not None:
                    relay.forward(data, lambda d: relay.front.sendto(d, relay.client))

        self.front, _ = await loop.create_datagram_endpoint(Front, local_addr=("127.0.0.1", 0))
        self.back, _ = await loop.create_datagram_endpoint(Back, remote_addr=self.server)
        host, port = self.front.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def forward(self, data: bytes, send: Any) -> None:
        if self.rng.random() < self.loss:
            self.dropped += 1
            return
        asyncio.get_running_loop().call_later(self.rng.random() * self.jitter_s, send, data)

    def close(self) -> None:
        for t in (self.front, self.back):
            if t is not None:
                t.close()


async def test_transfer_through_a_lossy_reordering_relay() -> None:
    data = blob(3 << 20)
    async with asyncio.timeout(120), utp_pair() as (a, b, accepted):
        relay = LossyRelay(("127.0.0.1", b.port), loss=0.03, jitter_s=0.004, seed=7)
        front = await relay.start()
        try:
            client = Sink()
            await a.connect(client, front)
            await wait_until(lambda: accepted, what="the accepted stream")
            server = Sink()
            accepted[0].set_protocol(server)
            server.connection_made(accepted[0])
            await send_all(client.transport, data, server)
            await wait_until(lambda: len(server.data) >= len(data), timeout_s=100, what="all bytes")
            assert bytes(server.data) == data
        finally:
            relay.close()
    assert relay.dropped > 0
    assert a.counters.fast_retransmits + a.counters.timeouts > 0


def garbage(rng: random.Random, cid: int) -> bytes:
    """A datagram with a uTP first byte (not SYN: floods have their own test) and connection
    id ``cid``, random after that."""
    head = bytes([rng.choice([0x01, 0x11, 0x21, 0x31]), rng.randrange(4)])
    return head + cid.to_bytes(2, "big") + rng.randbytes(rng.randrange(0, 60))


async def test_garbage_on_the_socket_never_raises_and_spares_other_addresses() -> None:
    rng = random.Random(13)
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    accepted: list[UtpStream] = []
    a_udp = await UdpSocket.open("127.0.0.1", 0)
    b_udp = await UdpSocket.open("127.0.0.1", 0)
    a = UtpSocketManager(a_udp)
    b = UtpSocketManager(b_udp, on_accept=accepted.append)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    target = ("127.0.0.1", b.port)
    try:
        async with asyncio.timeout(60):
            client = Sink()
            await a.connect(client, target)
            await wait_until(lambda: accepted, what="the accepted stream")
            server = Sink()
            accepted[0].set_protocol(server)
            server.connection_made(accepted[0])
            live_id = accepted[0].conn.recv_id
            # From another address, even with the live connection's id: never reaches it.
            for i in range(2000):
                other.sendto(garbage(rng, live_id if i % 2 else rng.randrange(0x10000)), target)
                if i % 100 == 0:
                    await asyncio.sleep(0)
            data = blob(1 << 20)
            await send_all(client.transport, data, server)
            await wait_until(lambda: len(server.data) >= len(data), timeout_s=30, what="all bytes")
            assert bytes(server.data) == data
            assert not accepted[0].is_closing()
            # From the peer's own address with its id: uTP cannot tell that from the peer (a
            # RESET or an ACK of unsent data may end it), but nothing raises, and a new
            # connection works afterwards.
            sock = a_udp.sock
            assert sock is not None
            for i in range(2000):
                sock.sendto(garbage(rng, live_id), target)
                if i % 100 == 0:
                    await asyncio.sleep(0)
            await asyncio.sleep(0.1)
            again = Sink()
            await a.connect(again, target)
            await wait_until(lambda: len(accepted) == 2, what="the second stream")
            assert errors == []
    finally:
        other.close()
        a.close()
        b.close()
        a_udp.close()
        b_udp.close()
        loop.set_exception_handler(None)
    assert b.counters.dropped > 0


async def test_dial_to_a_silent_port_times_out() -> None:
    async with utp_pair() as (a, _, _):
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await a.connect(Sink(), silent.getsockname())
        finally:
            silent.close()
        assert a.connections == 0


async def test_data_for_an_unknown_connection_is_answered_with_a_reset() -> None:
    async with utp_pair() as (_, b, _):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        probe.setblocking(False)
        try:
            loop = asyncio.get_running_loop()
            probe.sendto(bytes([0x01, 0, 0x12, 0x34]) + bytes(16) + b"data", ("127.0.0.1", b.port))
            reply = await asyncio.wait_for(loop.sock_recv(probe, 100), 5)
        finally:
            probe.close()
        assert reply[0] == 0x31
        assert b.counters.bad_connection == 1


async def test_a_syn_flood_fills_only_the_half_open_slots() -> None:
    async with utp_pair() as (_, b, accepted):
        flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flood.bind(("127.0.0.1", 0))
        try:
            for cid in range(200):
                flood.sendto(bytes([0x41, 0]) + cid.to_bytes(2, "big") + bytes(16), ("127.0.0.1", b.port))
            await wait_until(
                lambda: b.counters.syn_refused + len(accepted) == 200, what="every SYN accepted or refused"
            )
        finally:
            flood.close()
        assert len(accepted) == utp_socket.MAX_HALF_OPEN
        assert b.counters.syn_refused == 200 - utp_socket.MAX_HALF_OPEN
        # Closing a connection that never sent data resets it at once and frees its slot.
        for stream in accepted:
            stream.close()
        assert b.connections == 0


def utp_settings(**kw: Any) -> config.Settings:
    return config.testing_settings().replace(**kw)


def transports(session: Session) -> list[bool]:
    return [
        bool(p.transport.get_extra_info("utp"))
        for t in session.torrents()
        for p in t.swarm.peers.values()
        if p.transport is not None and p.peer_id is not None
    ]


@pytest.mark.parametrize("encryption", [Encryption.OFF, Encryption.REQUIRE])
async def test_sessions_transfer_over_utp(tmp_path: Path, mtu_1500: bool, encryption: Encryption) -> None:
    content = make_payload(tmp_path / "seed", "utp.bin", 3_000_000, seed=9)
    meta = make_torrent(content, piece_length=64 * 1024)
    async with (
        asyncio.timeout(60),
        Session(utp_settings(encryption=encryption)) as seed_s,
        Session(utp_settings(encryption=encryption)) as leech_s,
    ):
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        leech = await leech_s.add_torrent(
            meta, tmp_path / "leech", seed=False, peers=[("127.0.0.1", seed_s.port)]
        )
        await wait_until(lambda: transports(leech_s) == [True], what="a uTP connection")
        await leech.wait_complete()
        assert leech_s.dial_statistics().utp >= 1
        assert leech_s.dial_statistics().tcp_fallbacks == 0
        if encryption == Encryption.REQUIRE:
            assert leech_s.encryption_statistics().outgoing_encrypted >= 1
        stats = seed_s.utp_statistics()
        assert stats is not None
    assert same_tree(content, tmp_path / "leech" / "utp.bin")


async def test_a_session_with_no_torrent_running_accepts_utp(tmp_path: Path) -> None:
    """uTP is made by the first uTP datagram when no torrent made it before (a daemon
    of dormant seeds): that datagram, a SYN, is answered."""
    assert utp_socket.FIRST_BYTES == session_module.UTP_FIRST_BYTES
    async with asyncio.timeout(30), Session(utp_settings()) as session:
        assert session.utp_statistics() is not None  # on (and made by this look)
    async with asyncio.timeout(30), Session(utp_settings()) as session, utp_pair() as (dialer, _, _):
        client = Sink()
        await dialer.connect(client, ("127.0.0.1", session.port))  # the SYN was acknowledged
        stats = session.utp_statistics()
        assert stats is not None
    async with Session(utp_settings(utp_enabled=False)) as session:
        assert session.utp_statistics() is None


@needs_ipv6
async def test_dual_stack_sessions_transfer_over_utp_on_ipv6(tmp_path: Path, mtu_1500: bool) -> None:
    content = make_payload(tmp_path / "seed", "utp6.bin", 3_000_000, seed=16)
    meta = make_torrent(content, piece_length=64 * 1024)
    both = utp_settings(listen_interfaces=(("127.0.0.1", 0), ("::1", 0)))
    async with (
        asyncio.timeout(60),
        Session(both) as seed_s,
        Session(both) as leech_s,
    ):
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        leech = await leech_s.add_torrent(meta, tmp_path / "leech", seed=False, peers=[("::1", seed_s.port)])
        await wait_until(lambda: transports(leech_s) == [True], what="a uTP connection")
        await leech.wait_complete()
        assert [p.host for p in seed.peers()] == ["::1"]
        assert leech_s.dial_statistics().utp == 1
        assert leech_s.dial_statistics().tcp_fallbacks == 0
    assert same_tree(content, tmp_path / "leech" / "utp6.bin")


async def test_no_utp_peer_is_reached_over_tcp(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "tcp.bin", 500_000, seed=3)
    meta = make_torrent(content)
    async with (
        asyncio.timeout(60),
        Session(utp_settings(utp_enabled=False)) as seed_s,
        Session(utp_settings()) as leech_s,
    ):
        assert seed_s.utp_statistics() is None
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        leech = await leech_s.add_torrent(
            meta, tmp_path / "leech", seed=False, peers=[("127.0.0.1", seed_s.port)]
        )
        await leech.wait_complete()
        assert transports(leech_s) in ([False], [])
        assert leech_s.dial_statistics().tcp_fallbacks == 1
    assert same_tree(content, tmp_path / "leech" / "tcp.bin")


async def test_a_peer_pex_lists_without_utp_is_dialled_over_tcp_at_once(tmp_path: Path) -> None:
    """A TCP-only seed, reached by a middle peer after its uTP SYN went unanswered, is passed
    on by PEX without the uTP flag: the leecher dials it over TCP without waiting out a SYN
    (the middle peer's dial took ``utp_connect_timeout_s`` longer)."""
    content = make_payload(tmp_path / "seed", "pex.bin", 2_000_000, seed=12)
    meta = make_torrent(content, piece_length=64 * 1024)
    pex_on = utp_settings(
        pex_enabled=True, pex_interval_s=1.0, utp_connect_timeout_s=3.0, connect_timeout_s=10.0
    )
    async with (
        asyncio.timeout(60),
        Session(utp_settings(utp_enabled=False)) as seed_s,
        Session(pex_on.replace(max_download_bps=100_000)) as middle_s,
        Session(pex_on) as leech_s,
    ):
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        middle = await middle_s.add_torrent(meta, tmp_path / "middle", peers=[("127.0.0.1", seed_s.port)])
        await wait_until(lambda: middle.statistics().peers_connected == 1, what="the middle peer on the seed")
        assert middle_s.dial_statistics().tcp_fallbacks == 1
        leech = await leech_s.add_torrent(
            meta, tmp_path / "leech", seed=False, peers=[("127.0.0.1", middle_s.port)]
        )
        await wait_until(lambda: leech.swarm.pex_peers >= 1, what="the seed's address over PEX")
        told = asyncio.get_running_loop().time()
        await wait_until(lambda: leech_s.dial_statistics().tcp_first == 1, what="the TCP dial")
        await wait_until(lambda: ("127.0.0.1", seed_s.port) in leech.swarm.peers, what="the seed connected")
        # Well under the 3 s a uTP-first dial would have waited for its SYN.
        assert asyncio.get_running_loop().time() - told < 2.0
        await leech.wait_complete()
        dials = leech_s.dial_statistics()
        assert dials.tcp_fallbacks == 0
        assert dials.utp == 1  # the middle peer, over uTP
    assert same_tree(content, tmp_path / "leech" / "pex.bin")


async def test_a_peer_reached_over_utp_and_tcp_is_kept_once(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "both.bin", 2_000_000, seed=5)
    meta = make_torrent(content, piece_length=64 * 1024)
    async with (
        asyncio.timeout(60),
        Session(utp_settings(max_upload_bps=400_000)) as seed_s,
        Session(utp_settings()) as leech_s,
    ):
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        # The leecher dials the seed over uTP (an IP address); the seed dials the leecher by
        # name, which uTP does not dial, so over TCP: two connections between the same peers.
        leech = await leech_s.add_torrent(
            meta, tmp_path / "leech", seed=False, peers=[("127.0.0.1", seed_s.port)]
        )
        seed.add_peers([("localhost", leech_s.port)])
        await wait_until(lambda: seed_s.dial_statistics().tcp_fallbacks == 1, what="the seed's TCP dial")
        await wait_until(lambda: leech_s.dial_statistics().utp == 1, what="the leecher's uTP dial")

        def live(t: Any) -> int:
            return sum(1 for p in t.swarm.peers.values() if p.peer_id is not None and not p.closed)

        # Both streams opened (the dials above counted a made connection each); one is kept.
        await wait_until(lambda: live(seed) == 1 and live(leech) == 1, what="one connection each side")
        await leech.wait_complete()
    assert same_tree(content, tmp_path / "leech" / "both.bin")


@pytest.fixture
def netem(mtu_1500: bool) -> Iterator[None]:
    if not mtu_1500 or shutil.which("tc") is None:
        pytest.skip("tc netem needs tc and a loopback-only namespace")
    add = subprocess.run(
        ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "loss", "2%", "delay", "5ms", "2ms"],
        capture_output=True,
        text=True,
        check=False,
    )
    if add.returncode != 0:
        pytest.skip(f"tc netem: {add.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], capture_output=True, check=False)


@pytest.mark.slow
async def test_transfer_completes_under_netem_loss_and_delay(tmp_path: Path, netem: None) -> None:
    content = make_payload(tmp_path / "seed", "lossy.bin", 2_000_000, seed=4)
    meta = make_torrent(content, piece_length=64 * 1024)
    settings = utp_settings(utp_connect_timeout_s=2.0, connect_timeout_s=10.0, request_timeout_s=20.0)
    async with (
        asyncio.timeout(120),
        Session(settings) as seed_s,
        Session(settings) as leech_s,
    ):
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        leech = await leech_s.add_torrent(
            meta, tmp_path / "leech", seed=False, peers=[("127.0.0.1", seed_s.port)]
        )
        await leech.wait_complete()
        assert leech_s.dial_statistics().utp >= 1
        stats = seed_s.utp_statistics()
        assert stats is not None
        assert stats.fast_retransmits + stats.timeouts > 0  # netem did drop packets
    assert same_tree(content, tmp_path / "leech" / "lossy.bin")
