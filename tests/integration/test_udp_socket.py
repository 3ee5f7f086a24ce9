"""The session's UDP socket on loopback: datagrams routed by first byte with their senders as
``recvfrom`` gives them, more than one ``recvmmsg`` worth read in order, GRO runs cut back into
the datagrams they were sent as, and sends queued in order while the socket buffer is full."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from typing import Any

import pytest

from tests.ipv6 import needs_ipv6
from tests.polling import wait_until
from torrent.engine import udp as udp_module
from torrent.engine.udp import DatagramSender, UdpSocket
from torrent.engine.udp_mmsg import VLEN

UDP_SEGMENT = 103  # Linux GSO, the sender's side


@pytest.fixture(params=["recvmmsg", "recvmsg_into"])
def reads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each reading test runs with batched reads, and with the one-at-a-time fallback (what a
    C library without ``recvmmsg`` gets)."""
    if request.param == "recvmsg_into":
        monkeypatch.setattr(udp_module, "open_reader", lambda sock: None)
    return str(request.param)


class Collect:
    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.senders: list[Any] = []
        self.batches = 0

    def __call__(self, data: bytes, addr: Any) -> None:
        assert type(data) is bytes
        self.got.append(data)
        self.senders.append(addr)

    def drained(self) -> None:
        self.batches += 1


async def test_datagrams_go_to_the_handler_of_their_first_byte(reads: str) -> None:
    udp = await UdpSocket.open("127.0.0.1", 0)
    a, d = Collect(), Collect()
    udp.route(b"\x01\x11", a)
    udp.route(b"d", d)
    udp.on_drained(a.drained)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for data in (b"\x01one", b"d2:xx", b"\x11three", b"zz-nobody", b"\x01" + bytes(1400)):
            sender.sendto(data, ("127.0.0.1", udp.port))
        await wait_until(lambda: len(a.got) == 3 and len(d.got) == 1 and udp.unclaimed == 1)
        assert a.got == [b"\x01one", b"\x11three", b"\x01" + bytes(1400)]
        assert d.got == [b"d2:xx"]
        assert a.batches >= 1
    finally:
        sender.close()
        udp.close()


@pytest.mark.skipif(sys.platform != "linux", reason="UDP GSO/GRO are Linux's")
async def test_a_gso_run_arrives_as_the_datagrams_it_was_sent_as(reads: str) -> None:
    udp = await UdpSocket.open("127.0.0.1", 0)
    assert udp.gro
    got = Collect()
    udp.route(bytes(range(256)), got)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    segments = [bytes([i]) * 1000 for i in range(1, 6)] + [b"\x09" * 300]  # the last one shorter
    try:
        sender.sendmsg(
            [b"".join(segments)],
            [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", 1000))],
            0,
            ("127.0.0.1", udp.port),
        )
        sender.sendto(b"\x0alone", ("127.0.0.1", udp.port))
        await wait_until(lambda: len(got.got) == 7)
        assert got.got == [*segments, b"\x0alone"]
        assert udp.gro_reads == 1  # loopback keeps the GSO send whole: one read
        assert udp.gro_datagrams == 6
    finally:
        sender.close()
        udp.close()


class FullOnce(socket.socket):
    """A socket whose buffer is full for its first ``full`` sends."""

    full = 3

    def sendto(self, *args: Any) -> int:
        if self.full:
            self.full -= 1
            raise BlockingIOError
        return super().sendto(*args)


async def test_sends_wait_in_order_while_the_socket_buffer_is_full() -> None:
    loop = asyncio.get_running_loop()
    udp = await UdpSocket.open("127.0.0.1", 0)
    got = Collect()
    udp.route(b"x", got)
    sock = FullOnce(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    owner = UdpSocket()
    sender = DatagramSender(loop, sock, owner)
    try:
        for i in range(5):
            sender.sendto(b"x%d" % i, ("127.0.0.1", udp.port))
        assert sender.get_write_buffer_size() == 10  # all five wait behind the first refusal
        await wait_until(lambda: len(got.got) == 5)
        assert got.got == [b"x0", b"x1", b"x2", b"x3", b"x4"]
        assert sender.get_write_buffer_size() == 0
        sender.abort()
        assert sender.is_closing()
        sender.sendto(b"x9", ("127.0.0.1", udp.port))  # dropped, as after a close
        assert sender.get_write_buffer_size() == 0
    finally:
        sock.close()
        udp.close()


async def test_closing_frees_the_port_at_once() -> None:
    udp = await UdpSocket.open("127.0.0.1", 0)
    port = udp.port
    udp.close()
    again = await UdpSocket.open("127.0.0.1", port)
    assert again.port == port
    again.close()


async def test_a_queue_longer_than_one_read_arrives_whole_in_order_with_its_sender(reads: str) -> None:
    udp = await UdpSocket.open("127.0.0.1", 0)
    got = Collect()
    udp.route(b"x", got)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    count = 5 * VLEN + 3
    try:
        for i in range(count):  # queued before the loop looks: several reads' worth
            sender.sendto(b"x%05d" % i + bytes(i % 1400), ("127.0.0.1", udp.port))
        await wait_until(lambda: len(got.got) == count)
        assert got.got == [b"x%05d" % i + bytes(i % 1400) for i in range(count)]
        assert set(got.senders) == {sender.getsockname()}
    finally:
        sender.close()
        udp.close()


@needs_ipv6
async def test_an_ipv6_sender_is_given_as_recvfrom_gives_it(reads: str) -> None:
    udp = await UdpSocket.open("::1", 0)
    got = Collect()
    udp.route(b"x", got)
    sender = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sender.bind(("::1", 0))
    probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    probe.bind(("::1", 0))
    try:
        sender.sendto(b"x1", ("::1", udp.port))
        sender.sendto(b"x2", probe.getsockname()[:2])
        _, expected = probe.recvfrom(100)  # the same sender, as the socket module reports it
        await wait_until(lambda: len(got.got) == 1)
        assert got.senders == [expected]
        assert len(expected) == 4
    finally:
        sender.close()
        probe.close()
        udp.close()
