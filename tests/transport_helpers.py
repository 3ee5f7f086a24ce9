"""A byte stream in memory for running a ``Peer`` without sockets, and the far end to drive it.

:class:`MemoryTransport` implements ``torrent.engine.transport.Transport``: what the peer writes
queues in ``buffered`` until the test *delivers* it (:meth:`MemoryTransport.take`), and the
write-buffer limits call ``pause_writing``/``resume_writing`` on the peer exactly as a TCP
transport would when the network does not keep up. :class:`Remote` is the other end: a sans-IO
``PeerProtocol`` the test drives by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, cast

from torrent.engine.transport import StreamProtocol, Transport
from torrent.proto import wire

Buffer = bytes | bytearray | memoryview


class MemoryTransport:
    """A :class:`Transport` whose network is the test."""

    def __init__(self, protocol: StreamProtocol, peername: tuple[str, int] = ("192.0.2.7", 6881)) -> None:
        self.protocol = protocol
        self.peername = peername
        self.buffered = bytearray()  # written by the peer, not yet delivered
        self.high = 64 * 1024
        self.low = 16 * 1024
        self.reading = True
        self.writing_paused = False
        self.closing = False
        self.aborted = False
        self.writelines_calls = 0

    # -- Transport -------------------------------------------------------------------------------

    def write(self, data: Buffer, /) -> None:
        if self.closing:
            return
        self.buffered += data
        if not self.writing_paused and len(self.buffered) > self.high:
            self.writing_paused = True
            self.protocol.pause_writing()

    def writelines(self, list_of_data: Iterable[Buffer], /) -> None:
        self.writelines_calls += 1
        for data in list_of_data:
            self.write(data)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high = 64 * 1024 if high is None else high
        self.low = self.high // 4 if low is None else low

    def get_write_buffer_size(self) -> int:
        return len(self.buffered)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self._lose()

    def abort(self) -> None:
        self.aborted = True
        self._lose()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peername if name == "peername" else default

    # -- the test's side ---------------------------------------------------------------------------

    def _lose(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def take(self) -> bytes:
        """Deliver everything written so far (the network drained the buffer)."""
        out = bytes(self.buffered)
        self.buffered.clear()
        if self.writing_paused and len(self.buffered) <= self.low:
            self.writing_paused = False
            self.protocol.resume_writing()
        return out


class Remote:
    """The far end of a :class:`MemoryTransport`: a sans-IO protocol the test plays by hand."""

    def __init__(self, transport: MemoryTransport, proto: wire.PeerProtocol) -> None:
        self.transport = transport
        self.proto = proto

    def receive(self) -> list[wire.Event]:
        """Deliver what the local peer wrote and return the events it makes here."""
        data = self.transport.take()
        if not data:
            return []  # nothing written (an empty read would mean the end of the stream)
        self.proto.receive_data(data)
        events: list[wire.Event] = []
        while (ev := self.proto.next_event()) is not wire.NEED_DATA:
            events.append(cast(wire.Event, ev))
        return events

    def send(self, *events: wire.Event) -> None:
        """Encode ``events`` here and hand their bytes to the local peer in one read."""
        data = b"".join(self.proto.send(ev) for ev in events)
        self.transport.protocol.data_received(data)

    def flush(self) -> None:
        """Hand the local peer what the far end's protocol queued by itself (BEP 6 rejects)."""
        data = self.proto.data_to_send()
        if data:
            self.transport.protocol.data_received(data)


def memory_connector(made: list[MemoryTransport]) -> Any:
    """A ``Connector`` that opens a :class:`MemoryTransport` and appends it to ``made``."""

    async def connect(protocol: asyncio.BaseProtocol, addr: tuple[str, int]) -> Transport:
        transport = MemoryTransport(protocol, peername=addr)  # type: ignore[arg-type]
        protocol.connection_made(transport)  # type: ignore[arg-type]
        made.append(transport)
        return transport

    return connect
