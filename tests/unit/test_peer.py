"""``Peer`` over an in-memory byte stream: no sockets, a manual clock, the far end played by hand.

The local ``Peer`` runs exactly as over TCP (``run_outgoing`` with a connector that opens a
``MemoryTransport``); the remote side is a sans-IO ``PeerProtocol``. Timers read a
``ManualClock`` and ``tick(now)`` is called by hand, so timeouts take no time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.polling import wait_until
from tests.transport_helpers import MemoryTransport, Remote, memory_connector
from torrent import config
from torrent.config import Settings
from torrent.engine.bandwidth import RateLimiter
from torrent.engine.clock import ManualClock
from torrent.engine.peer import REFILL_MIN_BLOCKS, Peer, PieceFlags
from torrent.proto import wire
from torrent.proto.pieceset import PieceSet
from torrent.types import BLOCK_SIZE, InfoHash, PeerId
from torrent.version import CLIENT_NAME

INFO_HASH = InfoHash(b"\x42" * 20)
OUR_ID = PeerId(b"-PT0100-" + b"o" * 12)
THEIR_ID = PeerId(b"-XX0001-" + b"t" * 12)
PIECE = 2 * BLOCK_SIZE
NUM_PIECES = 32
TOTAL = NUM_PIECES * PIECE


def block_data(index: int, begin: int, length: int) -> bytes:
    return bytes([(index * 7 + begin // BLOCK_SIZE) % 251]) * length


@dataclass
class Host:
    """A ``PeerHost`` that records what the peer tells it and has every piece to upload."""

    info_hash: InfoHash = INFO_HASH
    num_pieces: int = NUM_PIECES
    piece_length: int | None = PIECE
    total_length: int | None = TOTAL
    hybrid_hashes: tuple[InfoHash, InfoHash] | None = None
    to_pick: list[tuple[int, int, int]] = field(default_factory=list)
    ready: int = 0
    has_calls: list[list[int] | None] = field(default_factory=list)
    blocks: list[tuple[int, int, bytes]] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)  # blocks per on_peer_blocks call
    dropped: list[tuple[int, int, int]] = field(default_factory=list)
    reads: int = 0
    closed: int = 0
    hash_messages: list[wire.Event] = field(default_factory=list)
    unchoke_on_ready: bool = False
    #: When set, disk reads wait for it (a slow disk).
    disk: asyncio.Event | None = None

    def on_peer_ready(self, peer: Peer) -> None:
        self.ready += 1
        peer.send(wire.HaveAll())
        if self.unchoke_on_ready:
            peer.set_choking(False)

    def on_peer_has(self, peer: Peer, indices: list[int] | None) -> None:
        self.has_calls.append(indices)
        peer.set_interested(True)
        peer.fill_pipeline()

    def on_peer_block(self, peer: Peer, index: int, begin: int, data: Any) -> None:
        self.blocks.append((index, begin, bytes(data)))

    def on_peer_blocks(self, peer: Peer, blocks: list[tuple[int, int, Any]]) -> None:
        self.batches.append(len(blocks))
        for index, begin, data in blocks:
            self.on_peer_block(peer, index, begin, data)

    def on_peer_unchoked(self, peer: Peer) -> None:
        pass

    def pick_blocks(self, peer: Peer, n: int) -> list[tuple[int, int, int]]:
        picks, self.to_pick = self.to_pick[:n], self.to_pick[n:]
        return picks

    def on_requests_dropped(self, peer: Peer, blocks: list[tuple[int, int, int]]) -> None:
        self.dropped.extend(blocks)

    def may_upload(self, peer: Peer, index: int, begin: int, length: int) -> bool:
        return not peer.am_choking

    def cached_block(self, index: int, begin: int, length: int) -> bytes | None:
        return None  # every read goes through read_block (counted, and held by ``disk``)

    async def read_block(self, index: int, begin: int, length: int) -> bytes:
        self.reads += 1
        if self.disk is not None:
            await self.disk.wait()
        return block_data(index, begin, length)

    def prefetch(self, index: int) -> None:
        pass

    def extension_fields(self) -> dict[str, Any]:
        return {"p": 6881}

    def on_extension_handshake(self, peer: Peer, ev: wire.ExtensionHandshake) -> None:
        pass

    def on_metadata_message(self, peer: Peer, payload: bytes) -> None:
        pass

    @property
    def pex_enabled(self) -> bool:
        return False

    def on_pex_message(self, peer: Peer, payload: bytes) -> None:
        pass

    def on_peer_interest_changed(self, peer: Peer) -> None:
        pass

    def on_peer_closed(self, peer: Peer) -> None:
        self.closed += 1

    def on_hash_request(self, peer: Peer, ev: wire.HashRequest) -> None:
        self.hash_messages.append(ev)

    def on_hashes(self, peer: Peer, ev: wire.Hashes) -> None:
        self.hash_messages.append(ev)

    def on_hash_reject(self, peer: Peer, ev: wire.HashReject) -> None:
        self.hash_messages.append(ev)


@dataclass
class Link:
    peer: Peer
    host: Host
    transport: MemoryTransport
    remote: Remote
    clock: ManualClock
    run: asyncio.Task[None]

    def tick(self, seconds: float) -> None:
        self.peer.tick(self.clock.advance(seconds))


async def wait_for(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    """Let the loop run until ``condition()`` holds (bounded)."""
    await wait_until(condition, timeout_s=timeout_s, interval_s=0)


@pytest.fixture
async def link() -> AsyncIterator[Callable[..., Any]]:
    runs: list[asyncio.Task[None]] = []

    async def make(settings: Settings | None = None, host: Host | None = None, **remote_kw: Any) -> Link:
        clock = ManualClock()
        made: list[MemoryTransport] = []
        host = host or Host()
        peer = Peer(
            host,
            ("192.0.2.7", 6881),
            settings=settings or config.testing_settings(),
            our_peer_id=OUR_ID,
            down_limit=RateLimiter(0),
            up_limit=RateLimiter(0),
            clock=clock,
            connect=memory_connector(made),
        )
        run = asyncio.create_task(peer.run_outgoing())
        runs.append(run)
        await wait_for(lambda: bool(made))
        remote = wire.PeerProtocol(
            info_hash=INFO_HASH, our_peer_id=THEIR_ID, piece_length=PIECE, total_length=TOTAL, **remote_kw
        )
        return Link(peer, host, made[0], Remote(made[0], remote), clock, run)

    yield make
    for run in runs:
        if not run.done():
            run.cancel()
        await asyncio.gather(run, return_exceptions=True)


async def handshaken(make: Callable[..., Any], **kw: Any) -> Link:
    """Both handshakes exchanged; the local peer has sent HaveAll."""
    ln: Link = await make(**kw)
    assert ln.remote.receive() == [wire.Handshake(INFO_HASH, OUR_ID, ln.remote.proto.our_reserved)]
    ln.remote.send(wire.Handshake())
    return ln


async def test_handshakes_over_a_memory_stream(link: Callable[..., Any]) -> None:
    ln = await handshaken(link)
    assert ln.host.ready == 1
    assert ln.peer.peer_id == THEIR_ID
    assert ln.peer.proto is not None
    events = ln.remote.receive()
    assert events[0] == wire.HaveAll()
    ext = events[1]
    assert isinstance(ext, wire.ExtensionHandshake)
    assert ext.client == CLIENT_NAME
    assert ext.listen_port == 6881
    assert "ut_metadata" in ext.extensions


async def test_state_reads_through_to_the_protocol(link: Callable[..., Any]) -> None:
    ln = await handshaken(link)
    peer, proto = ln.peer, ln.peer.proto
    assert proto is not None
    assert peer.am_choking
    assert not peer.am_interested
    assert peer.peer_choking
    assert not peer.peer_interested
    ln.remote.send(wire.HaveNone(), wire.Have(3), wire.Interested(), wire.Unchoke())
    assert ln.host.has_calls == [[3]]  # the first "have none" changes nothing; the have does
    assert list(peer.has) == [int(i == 3) for i in range(NUM_PIECES)]
    assert peer.num_have == 1
    assert not peer.is_seed
    assert peer.peer_interested
    assert not peer.peer_choking
    assert peer.am_interested
    assert peer.peer_interested is proto.peer_interested
    assert peer.am_interested is proto.am_interested
    # A late piece set (aria2 sends them; the far end's own protocol would refuse to send it).
    ln.transport.protocol.data_received(wire.encode(wire.Bitfield(PieceSet.full(NUM_PIECES))))
    assert ln.host.has_calls[-1] is None
    assert peer.is_seed
    assert peer.num_have == NUM_PIECES


async def test_a_request_is_answered(link: Callable[..., Any]) -> None:
    ln = await handshaken(link, host=Host(unchoke_on_ready=True))
    assert wire.Unchoke() in ln.remote.receive()
    ln.remote.send(wire.HaveNone(), wire.Interested(), wire.Request(5, BLOCK_SIZE, BLOCK_SIZE))
    got: list[wire.Event] = []

    def answered() -> bool:
        got.extend(ln.remote.receive())
        return bool(got)

    await wait_for(answered)
    assert got == [wire.Block(5, BLOCK_SIZE, block_data(5, BLOCK_SIZE, BLOCK_SIZE))]
    assert ln.peer.up.total == BLOCK_SIZE


async def test_blocks_arrive_and_requests_are_refilled(link: Callable[..., Any]) -> None:
    host = Host(to_pick=[(0, 0, BLOCK_SIZE), (0, BLOCK_SIZE, BLOCK_SIZE), (1, 0, BLOCK_SIZE)])
    ln = await handshaken(link, settings=config.testing_settings().replace(pipeline_min=2), host=host)
    ln.remote.receive()
    ln.remote.send(wire.HaveAll(), wire.Unchoke())
    requests = [ev for ev in ln.remote.receive() if isinstance(ev, wire.Request)]
    assert requests == [wire.Request(0, 0, BLOCK_SIZE), wire.Request(0, BLOCK_SIZE, BLOCK_SIZE)]
    assert len(ln.peer.outstanding) == 2
    ln.remote.send(wire.Block(0, 0, b"a" * BLOCK_SIZE))
    assert host.blocks == [(0, 0, b"a" * BLOCK_SIZE)]
    assert ln.peer.down.total == BLOCK_SIZE
    # One block in, one more request out (the slow start lets the pipeline grow meanwhile).
    assert [ev for ev in ln.remote.receive() if isinstance(ev, wire.Request)] == [
        wire.Request(1, 0, BLOCK_SIZE)
    ]


async def test_the_blocks_of_one_read_reach_the_host_together(link: Callable[..., Any]) -> None:
    picks = [(0, 0, BLOCK_SIZE), (0, BLOCK_SIZE, BLOCK_SIZE), (1, 0, BLOCK_SIZE), (1, BLOCK_SIZE, BLOCK_SIZE)]
    host = Host(to_pick=list(picks))
    ln = await handshaken(link, settings=config.testing_settings().replace(pipeline_min=4), host=host)
    ln.remote.receive()
    ln.remote.send(wire.HaveAll(), wire.Unchoke())
    assert [ev for ev in ln.remote.receive() if isinstance(ev, wire.Request)] == [
        wire.Request(*p) for p in picks
    ]
    data = [bytes([i]) * BLOCK_SIZE for i in range(4)]
    # Another event splits a run: the blocks before it are handed over first.
    ln.remote.send(wire.Block(0, 0, data[0]), wire.Block(0, BLOCK_SIZE, data[1]), wire.KeepAlive())
    ln.remote.send(wire.Block(1, 0, data[2]))
    assert host.batches == [2, 1]
    assert host.blocks == [(0, 0, data[0]), (0, BLOCK_SIZE, data[1]), (1, 0, data[2])]
    # Blocks ahead of garbage in the same read still arrive; then the connection closes.
    garbage = b"\x00\x00\x00\x05\x04\x00\x00\x01\x00"  # have 256: out of range
    ln.transport.protocol.data_received(ln.remote.proto.send(wire.Block(1, BLOCK_SIZE, data[3])) + garbage)
    assert host.blocks[-1] == (1, BLOCK_SIZE, data[3])
    await asyncio.wait_for(ln.run, 2)
    assert "out of range" in ln.peer.close_reason


async def test_a_deep_pipeline_is_topped_up_once_enough_slots_are_free(link: Callable[..., Any]) -> None:
    depth = 48  # the torrent has 64 blocks
    free = min(REFILL_MIN_BLOCKS, depth // 4)
    picks = [(i // 2, (i % 2) * BLOCK_SIZE, BLOCK_SIZE) for i in range(depth + free)]
    host = Host(to_pick=list(picks))
    # min = max: the slow start (one more slot per block received) does not move the depth.
    settings = config.testing_settings().replace(pipeline_min=depth, pipeline_max=depth)
    ln = await handshaken(link, settings=settings, host=host)
    ln.remote.receive()
    ln.remote.send(wire.HaveAll(), wire.Unchoke())
    assert len([ev for ev in ln.remote.receive() if isinstance(ev, wire.Request)]) == depth
    blocks = [wire.Block(i, b, bytes(n)) for i, b, n in picks[:free]]
    ln.remote.send(*blocks[:-1])  # one slot short of a refill: nothing asked
    assert not [ev for ev in ln.remote.receive() if isinstance(ev, wire.Request)]
    ln.remote.send(blocks[-1])  # now the free slots are asked for in one refill
    requests = [ev for ev in ln.remote.receive() if isinstance(ev, wire.Request)]
    assert requests == [wire.Request(*p) for p in picks[depth:]]
    assert len(ln.peer.outstanding) == depth


async def test_a_queued_message_goes_out_with_the_next_write_or_by_itself(link: Callable[..., Any]) -> None:
    host = Host(to_pick=[(0, 0, BLOCK_SIZE), (0, BLOCK_SIZE, BLOCK_SIZE), (1, 0, BLOCK_SIZE)])
    ln = await handshaken(link, settings=config.testing_settings().replace(pipeline_min=2), host=host)
    ln.remote.send(wire.HaveAll(), wire.Unchoke())
    ln.remote.receive()
    writes: list[bytes] = []
    write = ln.transport.write

    def counted(data: Any) -> None:
        writes.append(bytes(data))
        write(data)

    ln.transport.write = counted  # type: ignore[method-assign]
    ln.peer.queue(wire.Have(3))
    assert not writes  # held for the next write...
    for _ in range(3):  # ...also once the loop has run: requests are outstanding, so a
        await asyncio.sleep(0)  # refill comes with the next block
    assert not writes
    ln.remote.send(wire.Block(0, 0, bytes(BLOCK_SIZE)))  # ...which the refill makes
    assert len(writes) == 1
    assert ln.remote.receive() == [wire.Have(3), wire.Request(1, 0, BLOCK_SIZE)]
    ln.peer.queue(wire.Have(4))
    ln.peer.queue(wire.Have(5))
    # No refill follows (the peer sends nothing more): both go in one write, within the hold.
    await wait_for(lambda: len(writes) == 2)
    assert ln.remote.receive() == [wire.Have(4), wire.Have(5)]
    await asyncio.sleep(0)
    assert len(writes) == 2
    ln.remote.send(wire.Block(0, BLOCK_SIZE, bytes(BLOCK_SIZE)), wire.Block(1, 0, bytes(BLOCK_SIZE)))
    await wait_for(lambda: ln.peer.proto is not None and not ln.peer.proto.num_outstanding())
    writes.clear()
    ln.peer.queue(wire.Have(6))  # nothing asked of this peer: no refill to wait for
    for _ in range(3):
        await asyncio.sleep(0)
    assert writes == [wire.encode(wire.Have(6))]


async def test_back_pressure_pauses_the_upload(link: Callable[..., Any]) -> None:
    settings = config.testing_settings().replace(send_buffer_high_bytes=3 * BLOCK_SIZE)
    ln = await handshaken(link, settings=settings, host=Host(unchoke_on_ready=True))
    ln.remote.receive()
    wanted = [wire.Request(i, b, BLOCK_SIZE) for i in range(NUM_PIECES) for b in (0, BLOCK_SIZE)]
    ln.remote.send(wire.HaveNone(), wire.Interested(), *wanted)
    await wait_for(lambda: ln.transport.writing_paused)
    reads_when_paused = ln.host.reads
    assert reads_when_paused < len(wanted)
    # Paused, the upload reads nothing more from disk however long the loop runs.
    for _ in range(50):
        await asyncio.sleep(0)
    assert ln.host.reads == reads_when_paused
    assert ln.transport.writing_paused
    # The network drains the buffer: writing resumes, and every request is answered.
    blocks: list[wire.Event] = []

    def all_answered() -> bool:
        blocks.extend(ln.remote.receive())
        return len(blocks) >= len(wanted)

    await wait_for(all_answered)
    assert [(b.index, b.begin) for b in blocks if isinstance(b, wire.Block)] == [
        (r.index, r.begin) for r in wanted
    ]
    assert ln.host.reads == len(wanted)


async def test_cancels_withdraw_queued_and_in_flight_requests(link: Callable[..., Any]) -> None:
    disk = asyncio.Event()
    ln = await handshaken(link, host=Host(unchoke_on_ready=True, disk=disk))
    ln.remote.receive()
    ln.remote.send(
        wire.HaveNone(), wire.Interested(), wire.Request(0, 0, BLOCK_SIZE), wire.Request(1, 0, BLOCK_SIZE)
    )
    await wait_for(lambda: ln.host.reads == 1)  # (0, 0) is being read from a slow disk
    ln.remote.send(wire.Cancel(0, 0, BLOCK_SIZE), wire.Cancel(1, 0, BLOCK_SIZE))
    disk.set()
    await wait_for(lambda: ln.peer.proto is not None and ln.peer.proto.next_peer_request() is None)
    for _ in range(20):
        await asyncio.sleep(0)
    # BEP 6: each cancelled request still gets exactly one answer, a reject; no block is sent.
    assert ln.remote.receive() == [wire.RejectRequest(0, 0, BLOCK_SIZE), wire.RejectRequest(1, 0, BLOCK_SIZE)]
    assert ln.host.reads == 1  # the queued request was never read


async def test_close_ends_the_run_and_hands_requests_back(link: Callable[..., Any]) -> None:
    ln = await handshaken(link, host=Host(to_pick=[(2, 0, BLOCK_SIZE), (2, BLOCK_SIZE, BLOCK_SIZE)]))
    ln.remote.send(wire.HaveAll(), wire.Unchoke())
    assert len(ln.peer.outstanding) == 2
    ln.peer.close("bye")
    await asyncio.wait_for(ln.run, 2)
    assert ln.transport.closing
    assert ln.peer.closed
    assert ln.peer.close_reason == "bye"
    assert sorted(ln.host.dropped) == [(2, 0, BLOCK_SIZE), (2, BLOCK_SIZE, BLOCK_SIZE)]
    assert ln.host.closed == 1


async def test_garbage_from_the_peer_closes_the_connection(link: Callable[..., Any]) -> None:
    ln = await handshaken(link)
    ln.transport.protocol.data_received(b"\x00\x00\x00\x05\x04\x00\x00\x01\x00")  # have 256: out of range
    await asyncio.wait_for(ln.run, 2)
    assert "out of range" in ln.peer.close_reason
    assert ln.host.closed == 1


# -- timers on the manual clock ----------------------------------------------------------------


async def test_a_silent_peer_times_out_in_the_handshake(link: Callable[..., Any]) -> None:
    ln: Link = await link()
    ln.tick(config.testing_settings().handshake_timeout_s)
    assert not ln.peer.closed
    ln.tick(0.5)
    await asyncio.wait_for(ln.run, 2)
    assert ln.peer.close_reason == "handshake timeout"


async def test_a_trickling_peer_is_snubbed_then_dropped(link: Callable[..., Any]) -> None:
    s = config.testing_settings()
    picks = [(i, b, BLOCK_SIZE) for i in range(NUM_PIECES) for b in (0, BLOCK_SIZE)]
    ln = await handshaken(link, host=Host(to_pick=picks))
    ln.remote.send(wire.HaveAll(), wire.Unchoke())
    first = set(ln.peer.outstanding)
    assert len(first) == s.pipeline_min
    assert not ln.peer.snubbed
    ln.remote.receive()
    # Requests time out: cancelled, handed back, the peer snubbed (a pipeline of one).
    ln.tick(s.request_timeout_s + 0.5)
    assert ln.peer.snubbed
    assert ln.peer.strikes == 1
    assert ln.peer.pipeline_depth() == 1
    assert {wire.Request(*d) for d in ln.host.dropped} == first
    sent = ln.remote.receive()
    assert {wire.Request(c.index, c.begin, c.length) for c in sent if isinstance(c, wire.Cancel)} == first
    # Answering the cancels (BEP 6 rejects) does not hand the blocks back a second time.
    ln.remote.flush()
    assert len(ln.host.dropped) == len(first)
    # Still no payload: dropped once ``peer_timeout_s`` has passed since we started waiting.
    ln.tick(s.peer_timeout_s - s.request_timeout_s - 1.0)  # 7.5 s since the requests went out
    assert not ln.peer.closed
    ln.tick(1.0)
    await asyncio.wait_for(ln.run, 2)
    assert ln.peer.close_reason.startswith("no data for 8 s although requests were outstanding")


async def test_a_block_clears_the_snub(link: Callable[..., Any]) -> None:
    s = config.testing_settings()
    ln = await handshaken(link, host=Host(to_pick=[(0, 0, BLOCK_SIZE), (0, BLOCK_SIZE, BLOCK_SIZE)]))
    ln.remote.send(wire.HaveAll(), wire.Unchoke())
    ln.remote.receive()
    ln.clock.advance(s.snub_timeout_s)
    assert ln.peer.snubbed
    assert ln.peer.pipeline_depth() == 1
    ln.remote.send(wire.Block(0, 0, b"x" * BLOCK_SIZE))
    assert not ln.peer.snubbed
    assert ln.peer.strikes == 0


async def test_keepalive_then_idle_timeout(link: Callable[..., Any]) -> None:
    s = config.testing_settings()
    ln = await handshaken(link)
    ln.remote.receive()
    ln.tick(s.keepalive_interval_s + 1)
    assert ln.remote.receive() == [wire.KeepAlive()]
    assert not ln.peer.closed
    ln.tick(s.idle_timeout_s - s.keepalive_interval_s)
    await asyncio.wait_for(ln.run, 2)
    assert ln.peer.close_reason == "idle timeout"


def test_piece_flags_view_a_piece_set_as_one_entry_per_piece() -> None:
    pieces = PieceSet.from_indexes([1, 4], 6)
    flags = PieceFlags(pieces)
    assert len(flags) == 6
    assert list(flags) == [0, 1, 0, 0, 1, 0]
    assert bytes(flags) == b"\0\1\0\0\1\0"
    assert flags[1] == 1
    assert flags[2] == 0
    assert flags[-2] == 1
    assert flags[3:5] == b"\0\1"
    with pytest.raises(IndexError):
        flags[6]
    pieces.add(5)  # a view, not a copy
    assert flags[5] == 1
    assert sum(flags) == 3


async def test_our_handshake_goes_first_when_the_peer_speaks_before_the_connect_returns() -> None:
    """The far end writes its handshake the moment it accepts, before ``run_outgoing``
    resumes after the connect: our handshake must still be the first thing we write (what
    the peer said waits), and it is written once."""
    clock = ManualClock()
    made: list[MemoryTransport] = []
    theirs = wire.PeerProtocol(
        info_hash=INFO_HASH, our_peer_id=THEIR_ID, piece_length=PIECE, total_length=TOTAL
    )
    their_handshake = theirs.send(wire.Handshake())

    async def eager(protocol: asyncio.BaseProtocol, addr: tuple[str, int]) -> Any:
        transport = await memory_connector(made)(protocol, addr)
        protocol.data_received(their_handshake)  # type: ignore[attr-defined]
        return transport

    host = Host()
    peer = Peer(
        host, ("192.0.2.7", 6881), settings=config.testing_settings(), our_peer_id=OUR_ID,
        down_limit=RateLimiter(0), up_limit=RateLimiter(0), clock=clock, connect=eager,
    )  # fmt: skip
    run = asyncio.create_task(peer.run_outgoing())
    try:
        await wait_for(lambda: host.ready == 1)
        theirs.receive_data(made[0].take())
        events = []
        while (ev := theirs.next_event()) is not wire.NEED_DATA:
            events.append(ev)
        assert isinstance(events[0], wire.Handshake)
        assert events[0].peer_id == OUR_ID
        assert not any(isinstance(ev, wire.Handshake) for ev in events[1:])
        assert wire.HaveAll() in events
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
