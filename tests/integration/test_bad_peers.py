"""Peers that lie or stall: the download still completes, from the honest seed.

* a hostile peer answers every request at once with corrupted bytes: its pieces fail
  their hash, are fetched again from the honest seed, and it is banned;
* a silent peer accepts the connection and never says anything;
* a trickler handshakes, unchokes, then sends one byte a second.

The timers that drop the last two run on a manual clock in ``tests/unit/test_peer.py``.

The fake peers speak the protocol with ``torrent.proto.wire`` on asyncio streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from tests.integration.swarm_helpers import make_payload, make_torrent, same_tree
from tests.polling import wait_until
from torrent import config
from torrent.engine.session import Session
from torrent.proto import wire
from torrent.proto.metainfo import Metainfo
from torrent.proto.pieceset import PieceSet

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def fake_peer(handler: Handler) -> AsyncIterator[tuple[int, list[asyncio.Task[None]]]]:
    """A listening fake peer; each connection runs ``handler``. On exit every connection
    is closed, which ends its handler (no task is cancelled)."""
    tasks: list[asyncio.Task[None]] = []
    writers: list[asyncio.StreamWriter] = []

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        writers.append(w)
        try:
            await handler(r, w)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], tasks
    finally:
        server.close()
        for w in writers:
            w.close()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)


def protocol_for(meta: Metainfo) -> wire.PeerProtocol:
    return wire.PeerProtocol(
        info_hash=meta.info_hash,
        our_peer_id=b"-XX0001-" + b"h" * 12,
        piece_length=meta.info.piece_length,
        total_length=meta.info.total_length,
        fast_extension=False,
        extension_protocol=False,
    )


def hostile(meta: Metainfo) -> Handler:
    """Claims every piece and answers each request at once with garbage."""

    async def run(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        proto = protocol_for(meta)
        w.write(proto.send(wire.Handshake()))
        while True:
            data = await r.read(65536)
            proto.receive_data(data)
            if not data:
                return
            while (ev := proto.next_event()) is not wire.NEED_DATA:
                match ev:
                    case wire.Handshake():
                        w.write(proto.send(wire.Bitfield(PieceSet.full(proto.num_pieces))))
                        w.write(proto.send(wire.Unchoke()))
                    case wire.Interested() if proto.am_choking:
                        w.write(proto.send(wire.Unchoke()))
                    case wire.Request(index=i, begin=b, length=n):
                        w.write(proto.send(wire.Block(i, b, bytes([0x5A]) * n)))
                    case wire.ConnectionClosed():
                        return
            await w.drain()

    return run


def silent() -> Handler:
    async def run(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await r.read(65536):  # read everything, answer nothing, until closed
            pass

    return run


def trickler(meta: Metainfo) -> Handler:
    """Handshakes and unchokes, then answers requests one byte per second."""

    async def run(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        proto = protocol_for(meta)
        w.write(proto.send(wire.Handshake()))
        pending: list[bytes] = []
        while not pending:
            data = await r.read(65536)
            if not data:
                return
            proto.receive_data(data)
            while (ev := proto.next_event()) is not wire.NEED_DATA:
                match ev:
                    case wire.Handshake():
                        w.write(proto.send(wire.Bitfield(PieceSet.full(proto.num_pieces))))
                        w.write(proto.send(wire.Unchoke()))
                    case wire.Request(index=i, begin=b, length=n):
                        pending.append(proto.send(wire.Block(i, b, bytes(n))))
        stream = b"".join(pending)
        for byte in stream:
            if w.is_closing():
                return
            w.write(bytes([byte]))
            await w.drain()
            await asyncio.sleep(1.0)

    return run


async def test_hostile_peer_is_banned_and_its_pieces_refetched(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "data.bin", 1_000_000, seed=3)
    meta = make_torrent(content, piece_length=64 * 1024)
    async with asyncio.timeout(40), fake_peer(hostile(meta)) as (bad_port, _):
        slow = config.testing_settings().replace(max_upload_bps=500_000)
        async with Session(slow) as seed_s, Session(config.testing_settings()) as leech_s:
            seed = await seed_s.add_torrent(meta, tmp_path / "seed")
            await seed.swarm.wait_checked()
            leech = await leech_s.add_torrent(
                meta, tmp_path / "leech", seed=False, peers=[("127.0.0.1", bad_port)]
            )
            # Let the liar get its garbage in first.
            await wait_until(
                lambda: leech.statistics().hash_failures >= 1, timeout_s=30, what="a hash failure"
            )
            leech.add_peers([("127.0.0.1", seed_s.port)])
            await leech.wait_complete()
            st = leech.statistics()
            banned = leech.swarm.peer_list.is_banned(("127.0.0.1", bad_port))
    assert same_tree(content, tmp_path / "leech" / "data.bin")
    assert st.hash_failures >= 1
    assert banned


async def test_silent_and_trickling_peers_do_not_hold_up_the_download(tmp_path: Path) -> None:
    """The timeouts that drop such peers (handshake, request, no data) are tested on a manual
    clock in ``tests/unit/test_peer.py``; here the download just must not wait for them."""
    content = make_payload(tmp_path / "seed", "data.bin", 1_500_000, seed=4)
    meta = make_torrent(content, piece_length=64 * 1024)
    async with (
        asyncio.timeout(40),
        fake_peer(silent()) as (silent_port, _),
        fake_peer(trickler(meta)) as (trickle_port, _),
        Session(config.testing_settings()) as seed_s,
        Session(config.testing_settings()) as leech_s,
    ):
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.swarm.wait_checked()
        leech = await leech_s.add_torrent(
            meta,
            tmp_path / "leech",
            seed=False,
            peers=[("127.0.0.1", silent_port), ("127.0.0.1", trickle_port), ("127.0.0.1", seed_s.port)],
        )
        t0 = time.monotonic()
        await leech.wait_complete()
        took = time.monotonic() - t0
    assert same_tree(content, tmp_path / "leech" / "data.bin")
    assert took < 30
