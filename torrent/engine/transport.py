"""The seam between a peer connection and whatever carries its bytes.

A :class:`~torrent.engine.peer.Peer` speaks the peer wire over a *byte stream*: an ordered,
reliable, bidirectional pipe of bytes. It neither knows nor asks what carries them. Two small
protocols meet at the seam, shaped after asyncio's transport/protocol pair so that asyncio's own
TCP transport (and uvloop's) already is one side:

* :class:`Transport`, what the stream offers the peer: ``write``/``writelines``,
  ``pause_reading``/``resume_reading`` (the download limit stops reading this way),
  ``set_write_buffer_limits`` (how much may queue before the peer is told to stop writing),
  ``is_closing``/``close``/``abort``, and ``get_extra_info("peername")`` for the address.
* :class:`StreamProtocol`, what the stream calls on the peer: ``connection_made``,
  ``data_received`` (bytes, in order, any chunking), ``eof_received``, ``connection_lost``, and
  the back-pressure pair ``pause_writing``/``resume_writing`` (called when the queued bytes cross
  the high and then the low water mark: the peer's upload stops reading blocks from disk while
  paused, so a slow peer cannot grow our memory).

How a stream is *opened* is a :data:`Connector`: given the peer to attach and an address, it
makes the connection, calls ``connection_made`` on the peer with its transport and returns that
transport. :func:`tcp_connect` is today's (``loop.create_connection``). Incoming connections
arrive already open: the listener calls ``Peer.connection_made`` and ``Peer.accept`` with the
transport, then hands its reads to the peer.

Where a new transport plugs in (see docs/ARCHITECTURE.md):

* **MSE/PE** (encrypted streams): a wrapper that is a :class:`Transport` to the peer (encrypting
  in ``write``) and a :class:`StreamProtocol` to the TCP transport below it (decrypting in
  ``data_received`` before passing the bytes up), with its own handshake before the first
  ``connection_made`` it forwards. Its connector dials TCP and then negotiates.
* **uTP** (:mod:`torrent.engine.utp_stream`): a stream per connection that implements
  :class:`Transport` over the UDP socket's congestion-controlled send window
  (``pause_writing`` while too much is unacknowledged), opened by
  :class:`~torrent.engine.utp_dial.UtpFirstConnector` (uTP, else TCP).

Either way ``Peer``, the wire protocol and the swarm stay as they are: the engine passes
``connect=`` when it creates an outgoing ``Peer``, or the listener hands the peer an accepted
transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, cast

__all__ = ["Connector", "StreamProtocol", "Transport", "peer_address", "tcp_connect"]

#: A buffer a transport accepts in ``write``.
Buffer = bytes | bytearray | memoryview


class Transport(Protocol):
    """The byte stream under one peer connection (asyncio's TCP transport satisfies it)."""

    def write(self, data: Buffer, /) -> None:
        """Queue ``data`` for sending; never blocks (back-pressure arrives via ``pause_writing``)."""

    def writelines(self, list_of_data: Iterable[Buffer], /) -> None:
        """Queue several buffers at once (one system call for many blocks where possible)."""

    def pause_reading(self) -> None:
        """Stop calling ``data_received`` until :meth:`resume_reading`."""

    def resume_reading(self) -> None:
        """Deliver received data again."""

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Queued bytes above ``high`` call ``pause_writing``; back under ``low``, ``resume_writing``."""

    def get_write_buffer_size(self) -> int:
        """Bytes queued and not yet handed to the network."""

    def is_closing(self) -> bool:
        """True once :meth:`close` or :meth:`abort` was called, or the stream was lost."""

    def close(self) -> None:
        """Send what is queued, then close; ``connection_lost`` follows."""

    def abort(self) -> None:
        """Close at once, dropping what is queued; ``connection_lost`` follows."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Transport details; ``"peername"`` is the remote ``(host, port, ...)``."""


class StreamProtocol(Protocol):
    """What a transport calls on the connection it carries (``Peer`` implements it)."""

    def connection_made(self, transport: Any) -> None: ...

    def data_received(self, data: bytes) -> None: ...

    def eof_received(self) -> bool | None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


#: Opens a stream to ``(host, port)`` for a protocol, calls its ``connection_made`` and returns
#: the transport. Raises ``OSError`` when the peer cannot be reached.
Connector = Callable[[asyncio.BaseProtocol, tuple[str, int]], Awaitable[Transport]]


async def tcp_connect(protocol: asyncio.BaseProtocol, addr: tuple[str, int]) -> Transport:
    """A plain TCP connection (BEP 3): ``loop.create_connection`` with ``protocol`` on it."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(lambda: protocol, addr[0], addr[1])
    # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
    return cast(Transport, transport)


def peer_address(transport: Transport) -> tuple[str, int] | None:
    """The remote ``(host, port)`` of ``transport``, or None when it does not say."""
    name = transport.get_extra_info("peername")
    if not name:
        return None
    return (str(name[0]), int(name[1]))
