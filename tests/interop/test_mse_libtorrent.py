"""Our MSE/PE handshake against libtorrent's, in both roles, over real loopback TCP.

libtorrent (PyPI bindings) runs with encryption forced (``in_enc_policy`` / ``out_enc_policy``
= forced) so it refuses any plaintext BitTorrent handshake, and with ``allowed_enc_level``
choosing RC4, plaintext or both. Each test runs one libtorrent session in this process: the
reason ``lt_worker.py`` gives for a process per session (libtorrent's process-wide cache of UDP
tracker connection ids) does not arise, as no tracker is involved and the test needs the
settings the worker does not expose.

* Our initiator dials a libtorrent seed, sends the BitTorrent handshake as IA, reads
  libtorrent's handshake back through the payload stream, then asks for one block and checks
  its SHA-1 against the metainfo (the block is a whole 16 KiB piece).
* A libtorrent leecher dials a listener in the test that runs our receiver and then serves the
  torrent's pieces through the negotiated stream; libtorrent must finish with the right bytes.

In both, libtorrent's own peer list must report the connection with the negotiated method.
DHT, LSD, UPnP, NAT-PMP are off and the tests run only in a loopback-only network namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import struct
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.swarm_helpers import make_payload, make_torrent
from tests.interop.conftest import need
from tests.libtorrent_settings import lt_add, lt_listen_port, lt_session
from tests.polling import wait_until
from torrent.proto.metainfo import Metainfo
from torrent.proto.mse import (
    CryptoMethod,
    HandshakeDone,
    Initiator,
    PayloadStream,
    Receiver,
)
from torrent.proto.wire import encode_handshake

pytestmark = [pytest.mark.interop, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

PIECE = 16 * 1024  # one block is one piece, so a block's SHA-1 is in the metainfo
PAYLOAD_SIZE = 5 * PIECE + 1234
OTHER_HASH = b"\xee" * 20  # a torrent the listener also serves, tried before the right one
CHOKE, UNCHOKE, INTERESTED, HAVE, BITFIELD, REQUEST, PIECE_MSG = 0, 1, 2, 4, 5, 6, 7
RC4 = CryptoMethod.RC4
PLAIN = CryptoMethod.PLAINTEXT


@pytest.fixture
def lt(loopback_only: None) -> Any:
    need("libtorrent")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import libtorrent

    return libtorrent


async def wait_until_seeding(handle: Any, timeout_s: float) -> None:
    await wait_until(lambda: handle.status().is_seeding, timeout_s=timeout_s, interval_s=0.05, what="seeding")


def lt_flags(lt: Any, handle: Any) -> list[int]:
    return [int(p.flags) for p in handle.get_peer_info()]


def method_flag(lt: Any, method: CryptoMethod) -> int:
    return int(lt.peer_info.rc4_encrypted if method is RC4 else lt.peer_info.plaintext_encrypted)


def level(lt: Any, methods: CryptoMethod) -> int:
    return int({RC4: lt.enc_level.rc4, PLAIN: lt.enc_level.plaintext}.get(methods, lt.enc_level.both))


def torrent_files(tmp_path: Path) -> tuple[Path, Path, Metainfo]:
    content = make_payload(tmp_path / "seed", "mse.bin", PAYLOAD_SIZE, seed=12)
    meta = make_torrent(content, piece_length=PIECE)
    path = tmp_path / "mse.torrent"
    path.write_bytes(meta.to_bytes())
    return content, path, meta


class Link:
    """One TCP connection after the MSE handshake: framed BitTorrent messages through ``stream``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.stream: PayloadStream | None = None
        self.buf = bytearray()

    async def handshake(self, machine: Initiator | Receiver) -> HandshakeDone:
        self.writer.write(machine.data_to_send())
        while not isinstance(ev := machine.next_event(), HandshakeDone):
            self.writer.write(machine.data_to_send())
            machine.receive_data(await self.reader.read(65536))
        self.writer.write(machine.data_to_send())
        self.stream = machine.stream()
        self.buf += ev.remainder
        return ev

    def send(self, data: bytes) -> None:
        assert self.stream is not None
        self.writer.write(self.stream.encrypt(data))

    async def read_exactly(self, n: int) -> bytes:
        assert self.stream is not None
        while len(self.buf) < n:
            chunk = await self.reader.read(65536)
            if not chunk:
                raise EOFError(f"connection closed with {len(self.buf)} of {n} bytes buffered")
            self.buf += self.stream.decrypt(chunk)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def message(self) -> tuple[int, bytes] | None:
        (length,) = struct.unpack(">I", await self.read_exactly(4))
        if length == 0:
            return None  # keep-alive
        body = await self.read_exactly(length)
        return body[0], body[1:]


def message(msg_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IB", len(payload) + 1, msg_id) + payload


# -- our initiator, libtorrent receiving -----------------------------------------------------------


@pytest.mark.parametrize(
    ("their_levels", "we_provide", "prefer_rc4", "expected"),
    [
        (RC4, RC4, False, RC4),
        (RC4 | PLAIN, PLAIN, False, PLAIN),
        (RC4 | PLAIN, RC4 | PLAIN, True, RC4),
    ],
    ids=["rc4", "plaintext", "both-prefer-rc4"],
)
async def test_our_initiator_downloads_a_block_from_a_forced_libtorrent_seed(
    lt: Any,
    tmp_path: Path,
    their_levels: CryptoMethod,
    we_provide: CryptoMethod,
    prefer_rc4: bool,
    expected: CryptoMethod,
) -> None:
    content, torrent, meta = torrent_files(tmp_path)
    ih = meta.info_hash
    forced = int(lt.enc_policy.forced)
    settings = {
        "in_enc_policy": forced,
        "out_enc_policy": forced,
        "allowed_enc_level": level(lt, their_levels),
        "prefer_rc4": prefer_rc4,
    }
    async with asyncio.timeout(60):
        with lt_session(lt, **settings) as session:
            port = await lt_listen_port(session)
            handle = lt_add(lt, session, torrent, content.parent)
            await wait_until_seeding(handle, 30)

            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                link = Link(reader, writer)
                our_id = b"-PT0001-" + os.urandom(6).hex().encode()
                ia = encode_handshake(ih, our_id)
                done = await link.handshake(Initiator(ih, initial_payload=ia, provide=we_provide))
                assert done.method is expected
                assert done.skey == ih

                theirs = await link.read_exactly(68)
                assert theirs[:20] == b"\x13BitTorrent protocol"
                assert theirs[28:48] == ih

                link.send(message(INTERESTED))
                have: bytes | None = None
                block: bytes | None = None
                while block is None:
                    msg = await link.message()
                    if msg is None:
                        continue
                    mid, body = msg
                    if mid == BITFIELD:
                        have = body
                    elif mid == UNCHOKE:
                        link.send(message(REQUEST, struct.pack(">III", 1, 0, PIECE)))
                    elif mid == PIECE_MSG:
                        assert struct.unpack(">II", body[:8]) == (1, 0)
                        block = body[8:]
                assert have is not None, "the seed sent no bitfield"
                assert have[0] & 0x40, "the seed's bitfield lacks piece 1"
                assert hashlib.sha1(block).digest() == meta.info.piece_hash(1)
                assert block == content.read_bytes()[PIECE : 2 * PIECE]
                # libtorrent itself counts this connection as encrypted with that method.
                assert any(f & method_flag(lt, expected) for f in lt_flags(lt, handle)), lt_flags(lt, handle)
            finally:
                writer.close()


async def test_a_forced_libtorrent_seed_refuses_a_plaintext_handshake(lt: Any, tmp_path: Path) -> None:
    """The control for the test above: the same seed drops a peer that does not encrypt."""
    content, torrent, meta = torrent_files(tmp_path)
    forced = int(lt.enc_policy.forced)
    settings = {"in_enc_policy": forced, "out_enc_policy": forced, "allowed_enc_level": level(lt, RC4)}
    async with asyncio.timeout(60):
        with lt_session(lt, **settings) as session:
            port = await lt_listen_port(session)
            handle = lt_add(lt, session, torrent, content.parent)
            await wait_until_seeding(handle, 30)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(encode_handshake(meta.info_hash, b"-PT0001-plaintext123"))
                answer = await asyncio.wait_for(reader.read(68), 10)
            except ConnectionResetError:
                answer = b""
            finally:
                writer.close()
    assert answer == b""


# -- libtorrent initiating, our receiver -----------------------------------------------------------


@contextlib.asynccontextmanager
async def our_seed(
    content: bytes, meta: Metainfo, allowed: CryptoMethod, prefer: CryptoMethod
) -> AsyncIterator[tuple[int, list[Any], asyncio.Event]]:
    """A listener that runs our receiver, then serves ``content`` to whoever asks.

    Yields the port, a list that gets, per connection, the :class:`HandshakeDone` (or the
    exception that ended it), and an event: the seed says what it has only once that is set,
    so the test can look at the connection before the download ends it.
    """
    seen: list[Any] = []
    go = asyncio.Event()
    num_pieces = meta.info.num_pieces

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = Link(reader, writer)
        try:
            done = await link.handshake(
                Receiver([OTHER_HASH, meta.info_hash], allowed=allowed, prefer=prefer)
            )
            seen.append(done)
            link.send(encode_handshake(meta.info_hash, b"-PT0001-mseseed00001"))
            await go.wait()
            bitfield = bytearray((num_pieces + 7) // 8)
            for i in range(num_pieces):
                bitfield[i // 8] |= 0x80 >> (i % 8)
            link.send(message(BITFIELD, bytes(bitfield)) + message(UNCHOKE))
            while True:
                msg = await link.message()
                if msg is not None and msg[0] == REQUEST:
                    index, begin, length = struct.unpack(">III", msg[1])
                    start = index * PIECE + begin
                    link.send(message(PIECE_MSG, msg[1][:8] + content[start : start + length]))
        except (EOFError, ConnectionError) as exc:
            if not seen:
                seen.append(exc)
        except Exception as exc:
            seen.append(exc)
            raise
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], seen, go
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()


@pytest.mark.parametrize(
    ("their_levels", "we_prefer", "method"),
    [(RC4, PLAIN, RC4), (PLAIN, RC4, PLAIN), (RC4 | PLAIN, RC4, RC4), (RC4 | PLAIN, PLAIN, PLAIN)],
    ids=["rc4", "plaintext", "both-we-prefer-rc4", "both-we-prefer-plaintext"],
)
async def test_libtorrent_initiator_downloads_through_our_receiver(
    lt: Any, tmp_path: Path, their_levels: CryptoMethod, we_prefer: CryptoMethod, method: CryptoMethod
) -> None:
    content, torrent, meta = torrent_files(tmp_path)
    forced = int(lt.enc_policy.forced)
    settings = {
        "in_enc_policy": forced,
        "out_enc_policy": forced,
        "allowed_enc_level": level(lt, their_levels),
    }
    data = content.read_bytes()
    async with (
        asyncio.timeout(60),
        our_seed(data, meta, allowed=RC4 | PLAIN, prefer=we_prefer) as (port, seen, go),
    ):
        with lt_session(lt, **settings) as session:
            await lt_listen_port(session)
            handle = lt_add(lt, session, torrent, tmp_path / "leech")
            handle.connect_peer(("127.0.0.1", port))
            try:
                # libtorrent itself counts the connection as encrypted with that method.
                await wait_until(
                    lambda: any(f & method_flag(lt, method) for f in lt_flags(lt, handle)),
                    timeout_s=20,
                    interval_s=0.02,
                    what=f"libtorrent to count the connection as {method}",
                )
                go.set()
                await wait_until_seeding(handle, 45)
            finally:
                print("our side saw:", seen, "libtorrent's peer flags:", lt_flags(lt, handle))
    done = seen[0]
    assert isinstance(done, HandshakeDone), done
    assert done.method is method
    assert done.skey == meta.info_hash
    # libtorrent sends its BitTorrent handshake as the initial payload.
    assert done.initial_payload[:20] == b"\x13BitTorrent protocol"
    assert done.initial_payload[28:48] == meta.info_hash
    assert (tmp_path / "leech" / "mse.bin").read_bytes() == data
