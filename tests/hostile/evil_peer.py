"""A scriptable evil peer: it completes the BitTorrent handshake, then misbehaves.

``EvilPeer(info_hash, script)`` listens on loopback; every connection reads our
handshake, answers with its own (same info hash, reserved bits with the extension
protocol and the fast extension set) and then runs ``script(reader, writer)``. It
records when each connection arrived, so a test can bound the reconnect rate.

The scripts are raw bytes on purpose: the point is to send what ``torrent.proto.wire``
would never produce.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from torrent.types import BLOCK_SIZE

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

PSTR = b"\x13BitTorrent protocol"
#: BEP 10 extension protocol (bit 20) and BEP 6 fast extension (bit 62).
RESERVED = b"\x00\x00\x00\x00\x00\x10\x00\x04"


def evil_peer_id() -> bytes:
    """A fresh peer id: two evil peers with one id would be one peer to the swarm."""
    return b"-EV0001-" + os.urandom(6).hex().encode()


def message(msg_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IB", 1 + len(payload), msg_id) + payload


async def hang_up(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """Handshake, then close at once."""


async def oversized_length(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """Announce a 4 GiB message."""
    w.write(b"\xff\xff\xff\xff\x07")
    await w.drain()
    await r.read(1 << 16)  # until we are dropped


def bitfield_of_size(n_bytes: int) -> Script:
    async def run(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(message(5, b"\xff" * n_bytes))
        await w.drain()
        while await r.read(1 << 16):
            pass

    return run


async def garbage_extended_handshake(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """BEP 10 extended handshake (message 20, id 0) whose payload is not bencoded."""
    w.write(message(20, b"\x00" + b"not bencoded at all"))
    await w.drain()
    while await r.read(1 << 16):
        pass


def unrequested_blocks(count: int) -> Script:
    """Claim every piece, unchoke, then send ``count`` blocks nobody asked for (at odd
    offsets, which no request of ours ever names)."""

    async def run(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(message(14))  # BEP 6 have all
        w.write(message(1))  # unchoke
        for i in range(count):
            w.write(message(7, struct.pack(">II", 0, 1 + i) + bytes(16384)))
        await w.drain()
        while await r.read(1 << 16):
            pass

    return run


def request_flood(count: int, answers: dict[str, int]) -> Script:
    """Say interested and send ``count`` requests (``count`` < 31,744) at once, for a seed
    to face; count
    the seed's answers in ``answers`` (``"block"``, ``"reject"``)."""

    async def run(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(message(15))  # BEP 6 have none
        w.write(message(2))  # interested
        # Distinct 1 KiB requests inside piece 0 (duplicates would simply be ignored).
        w.write(b"".join(message(6, struct.pack(">III", 0, i, 1024)) for i in range(count)))
        await w.drain()
        while True:
            (length,) = struct.unpack(">I", await r.readexactly(4))
            body = await r.readexactly(length)
            if body[:1] == b"\x07":
                answers["block"] = answers.get("block", 0) + 1
            elif body[:1] == b"\x10":
                answers["reject"] = answers.get("reject", 0) + 1

    return run


async def _unchoked_requests(
    r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> AsyncIterator[tuple[int, int, int]]:
    """Claim every piece (BEP 6 have all) and unchoke, then yield each request as
    (piece, offset, length); other messages are read and ignored."""
    w.write(message(14))  # BEP 6 have all
    w.write(message(1))  # unchoke
    await w.drain()
    while True:
        (length,) = struct.unpack(">I", await r.readexactly(4))
        body = await r.readexactly(length)
        if body[:1] == b"\x06":
            index, begin, n = struct.unpack(">III", body[1:13])
            yield index, begin, n


def stall_after_unchoke(requests: list[tuple[int, int]]) -> Script:
    """Claim every piece, unchoke, then read the requests (noted in ``requests`` as
    (piece, offset)) and never answer one."""

    async def run(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        async for index, begin, _ in _unchoked_requests(r, w):
            requests.append((index, begin))

    return run


async def dial(port: int, info_hash: bytes, script: Script) -> str:
    """Connect to our client at ``port`` as an evil peer: handshake, run ``script``,
    and return how it ended (``"closed by peer"`` or ``"script done"``)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(PSTR + RESERVED + info_hash + evil_peer_id())
        await r.readexactly(68)
        await script(r, w)
        return "closed by peer"
    except (ConnectionError, asyncio.IncompleteReadError):
        return "closed by peer"
    finally:
        w.close()


class EvilPeer:
    """A listening evil peer for one info hash; see the module docstring."""

    def __init__(self, info_hash: bytes, script: Script) -> None:
        self.info_hash = info_hash
        self.script = script
        #: ``time.monotonic()`` of each accepted connection, and of each one's end.
        self.arrivals: list[float] = []
        self.departures: list[float] = []
        self.port = 0
        self.peer_id = evil_peer_id()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def _on_conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.arrivals.append(time.monotonic())
        self._writers.append(w)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await r.readexactly(68)
            if head[:20] != PSTR or head[28:48] != self.info_hash:
                return
            w.write(PSTR + RESERVED + self.info_hash + self.peer_id)
            await w.drain()
            await self.script(r, w)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()
            self.departures.append(time.monotonic())
            self._tasks.discard(task)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[EvilPeer]:
        server = await asyncio.start_server(self._on_conn, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            for w in self._writers:
                w.close()
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=5)


def serving(payload: bytes, piece_length: int) -> Script:
    """Claim every piece, unchoke, and answer each request from ``payload`` (the bytes of
    the whole piece space, padding included): an honest seed of whatever it is given."""

    async def run(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        async for index, begin, n in _unchoked_requests(r, w):
            at = index * piece_length + begin
            w.write(message(7, struct.pack(">II", index, begin) + payload[at : at + n]))
            await w.drain()

    return run


def hash_request_flood(root: bytes, base: int, count: int, answers: dict[str, int]) -> Script:
    """Send ``count`` BEP 52 hash requests for two nodes of ``root``'s layer ``base`` at
    once, then count the answers (``"hashes"``, ``"reject"``) until there are ``count``."""

    async def run(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(message(15))  # BEP 6 have none
        w.write(b"".join(message(21, root + struct.pack(">IIII", base, 0, 2, 0)) for _ in range(count)))
        await w.drain()
        while answers.get("hashes", 0) + answers.get("reject", 0) < count:
            (length,) = struct.unpack(">I", await r.readexactly(4))
            body = await r.readexactly(length)
            if body[:1] == b"\x16":
                answers["hashes"] = answers.get("hashes", 0) + 1
            elif body[:1] == b"\x17":
                answers["reject"] = answers.get("reject", 0) + 1

    return run


def one_bad_block_per_piece(payload: bytes, piece_length: int) -> Script:
    """Claim every piece and unchoke; answer requests for block 1 of a piece with a
    corrupt block, and reject (BEP 6) every other request, which then goes elsewhere:
    each piece ends up with one block from this peer and the rest from others. BEP 52
    hash requests get a hash reject (a liar need not prove anything), so the asker turns
    to other peers at once."""

    async def run(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(message(14))  # BEP 6 have all
        w.write(message(1))  # unchoke
        await w.drain()
        while True:
            (length,) = struct.unpack(">I", await r.readexactly(4))
            body = await r.readexactly(length)
            if body[:1] == b"\x15":  # hash request: hash reject, same payload
                w.write(message(23, body[1:]))
            elif body[:1] == b"\x06":
                index, begin, n = struct.unpack(">III", body[1:13])
                if begin == BLOCK_SIZE:
                    at = index * piece_length + begin
                    block = bytes(b ^ 0xFF for b in payload[at : at + n])
                    w.write(message(7, struct.pack(">II", index, begin) + block))
                else:
                    w.write(message(16, struct.pack(">III", index, begin, n)))
            else:
                continue
            await w.drain()

    return run
