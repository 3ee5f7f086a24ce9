"""The uTP send path on real loopback sockets: the socket buffers the kernel granted, and runs
of full packets leaving in GSO sends (counted), ours to ours in one process."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.polling import wait_until
from torrent.engine.udp import UdpSocket
from torrent.engine.utp_socket import SOCKET_BUFFER, UtpSocketManager
from torrent.engine.utp_stream import UtpStream


class Sink(asyncio.Protocol):
    def __init__(self) -> None:
        self.got = bytearray()

    def data_received(self, data: bytes) -> None:
        self.got += data


def granted(limit_file: str) -> int:
    """What the kernel grants for ``SOCKET_BUFFER``: capped at its ``*mem_max``, doubled."""
    try:
        cap = int(Path(limit_file).read_text())
    except OSError:
        pytest.skip(f"no {limit_file}")
    return 2 * min(SOCKET_BUFFER, cap)


async def test_socket_buffers_are_what_the_kernel_granted() -> None:
    udp = await UdpSocket.open("127.0.0.1", 0)
    try:
        (port,) = UtpSocketManager(udp).ports
        assert udp.sock is not None
        assert port.rcvbuf == udp.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        if sys.platform == "linux":
            assert port.rcvbuf == granted("/proc/sys/net/core/rmem_max")
            assert port.sndbuf == granted("/proc/sys/net/core/wmem_max")
    finally:
        udp.close()


@pytest.mark.skipif(sys.platform != "linux", reason="UDP GSO is Linux's")
async def test_full_packets_leave_in_gso_runs() -> None:
    a, b = await UdpSocket.open("127.0.0.1", 0), await UdpSocket.open("127.0.0.1", 0)
    sink = Sink()

    def accept(stream: UtpStream) -> None:
        stream.set_protocol(sink)

    ma, mb = UtpSocketManager(a), UtpSocketManager(b, on_accept=accept)
    try:
        transport: Any = await ma.connect(asyncio.Protocol(), ("127.0.0.1", b.port))
        payload = bytes(range(256)) * 8192  # 2 MiB
        transport.write(payload)
        await wait_until(lambda: len(sink.got) == len(payload), timeout_s=30)
        assert bytes(sink.got) == payload
        (port,) = ma.ports
        assert port.gso_sends > 0
        assert port.gso_datagrams > 2 * port.gso_sends  # runs, not pairs
        assert b.gro_reads > 0  # and they arrived whole (loopback keeps a GSO send together)
    finally:
        ma.close()
        mb.close()
        a.close()
        b.close()
