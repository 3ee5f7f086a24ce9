"""The uTP stream on the transport seam, driven by hand (no sockets): delivery, loss, writes."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.utp_helpers import connected_pair
from torrent.engine.utp_stream import UtpStream
from torrent.proto.utp import UtpConnection


class Echo:
    """Writes back what it receives (a peer answering a handshake), records the loss."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.got = bytearray()
        self.lost: list[Exception | None] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.got += data
        self.transport.write(b"answer")

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


def stream_for(conn: UtpConnection, sent: list[bytes]) -> UtpStream:
    def send(c: UtpConnection, addr: tuple[str, int]) -> None:
        sent.extend(c.outgoing)
        c.outgoing.clear()

    return UtpStream(conn, ("127.0.0.1", 1), send=send, now=lambda: 0.0, forget=lambda s: None)


async def test_bytes_that_arrived_with_a_reset_are_delivered_and_the_answer_dropped() -> None:
    a, b, _ = connected_pair()
    a.receive(b.outgoing.pop(), 0.0)
    sent: list[bytes] = []
    stream = stream_for(b, sent)
    echo = Echo()
    stream.set_protocol(echo)
    echo.connection_made(stream)
    a.write(b"hello")
    a.flush(0.0)
    b.receive(a.outgoing.pop(), 0.0)
    a.reset(0.0)
    b.receive(a.outgoing.pop(), 0.0)  # the RESET closes b before its bytes were delivered
    assert b.closed
    stream.after_receive()  # delivers "hello"; the echo's write must not raise
    assert bytes(echo.got) == b"hello"
    assert len(echo.lost) == 1
    assert isinstance(echo.lost[0], ConnectionResetError)
    assert stream.is_closing()
    stream.writelines([b"late"])  # and later writes are dropped too
    assert sent == []


async def test_pause_reading_holds_bytes_and_shrinks_the_window() -> None:
    a, b, _ = connected_pair(recv_buffer=100_000)
    a.receive(b.outgoing.pop(), 0.0)
    stream = stream_for(b, [])
    echo = Echo()
    stream.set_protocol(echo)
    echo.connection_made(stream)
    stream.pause_reading()
    a.ledbat.cwnd = 100_000.0
    a.write(b"z" * 3000)
    a.flush(0.0)
    payload = sum(len(d) - 20 for d in a.outgoing)  # a short tail waits for the ACK (Nagle)
    assert payload > 2000
    for d in a.outgoing:
        b.receive(d, 0.0)
    a.outgoing.clear()
    stream.after_receive()
    assert echo.got == bytearray()
    assert b.window == 100_000 - payload
    stream.resume_reading()
    await asyncio.sleep(0)  # delivery is scheduled, not done inside resume_reading
    assert len(echo.got) == payload
    assert b.window == 100_000
