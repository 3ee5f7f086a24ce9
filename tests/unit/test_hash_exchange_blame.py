"""HashExchange's v2 blame on fake peers: who is asked for a failed piece's leaf hashes,
what a worthless answer costs its sender, and who is banned by a good one."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torrent.create import create
from torrent.engine import hash_exchange
from torrent.engine.hash_exchange import HashExchange
from torrent.proto import merkle, wire
from torrent.proto.pieceset import PieceSet
from torrent.types import BLOCK_SIZE

PIECE = 64 * 1024


@dataclass
class FakeProto:
    info_hash: bytes
    peer_pieces: PieceSet
    hash_requests_outstanding: int = 0


@dataclass
class FakePeer:
    addr: tuple[str, int]
    proto: FakeProto
    peer_id: bytes | None = b"-FK0001-000000000000"
    sent: list[Any] = field(default_factory=list)
    closed: str = ""

    def send(self, ev: Any) -> None:
        self.sent.append(ev)

    def close(self, why: str) -> None:
        self.closed = why


def test_a_failed_piece_asks_for_its_leaves_and_bans_only_the_refuted_sender(tmp_path: Path) -> None:
    payload = os.urandom(300_000)
    (tmp_path / "f").write_bytes(payload)
    meta = create(tmp_path / "f", piece_length=PIECE, torrent_format="v2")
    assert meta.info_hash_v2 is not None
    v2_hash = meta.info_hash_v2[:20]
    bans: list[tuple[Any, str]] = []
    # Any: the peers here are fakes with only what HashExchange reads.
    exchange: Any = HashExchange(
        meta.info, ban=lambda who, why: bans.append((who, why)), wire_hash_v2=v2_hash
    )
    n = meta.info.num_pieces
    has_all = PieceSet.full(n)

    def peer(port: int, *, ih: bytes = v2_hash, pieces: PieceSet = has_all) -> FakePeer:
        return FakePeer(("127.0.0.1", port), FakeProto(ih, pieces))

    alice, bob, carol = peer(1), peer(2), peer(3)
    on_v1 = peer(4, ih=meta.info_hash if meta.info_hash != v2_hash else b"\x01" * 20)
    without = peer(5, pieces=PieceSet(n))
    good = payload[PIECE : 2 * PIECE]
    bad = bytearray(good)
    bad[2 * BLOCK_SIZE + 9] ^= 1
    senders = {0: alice.addr, BLOCK_SIZE: bob.addr, 2 * BLOCK_SIZE: bob.addr, 3 * BLOCK_SIZE: alice.addr}

    assert exchange.on_piece_failed(1, bad, senders, [alice, bob, on_v1, without, carol])
    # Asked: carol first (she sent nothing of it), then the senders; never a peer on another
    # hash or one without the piece.
    assert [p for p in (carol, alice, bob, on_v1, without) if p.sent] == [carol, alice, bob]
    (request,) = carol.sent
    assert (request.base_layer, request.index, request.length, request.proof_layers) == (0, 4, 4, 0)
    leaves = merkle.block_hashes(good)

    def answer(hashes: list[bytes]) -> wire.Hashes:
        return wire.Hashes(request.pieces_root, 0, request.index, request.length, 0, tuple(hashes))

    # Leaves that do not prove the piece's node: the answer's sender goes, nobody is banned.
    forged = list(leaves)
    forged[2] = merkle.block_hashes(bytes(bad[2 * BLOCK_SIZE : 3 * BLOCK_SIZE]))[0]
    assert not exchange.on_hashes(carol, answer(forged))
    assert "do not prove piece 1" in carol.closed
    assert bans == []
    # The true leaves: bob sent block 2, which they refute; alice sent only good blocks.
    assert not exchange.on_hashes(alice, answer(leaves))
    assert [who for who, _ in bans] == [bob.addr]
    assert "block 2 of piece 1" in bans[0][1]
    # A late answer to the same run changes nothing.
    assert not exchange.on_hashes(bob, answer(leaves))
    assert len(bans) == 1
    assert not alice.closed
    assert not bob.closed


def test_no_leaf_request_for_v1_torrents_or_unknown_nodes(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(os.urandom(100_000))
    meta = create(tmp_path / "f", piece_length=PIECE)
    exchange: Any = HashExchange(meta.info, ban=lambda who, why: None, wire_hash_v2=None)
    p = FakePeer(("127.0.0.1", 1), FakeProto(meta.info_hash, PieceSet.full(meta.info.num_pieces)))
    assert not exchange.on_piece_failed(0, bytes(PIECE), {0: p.addr}, [p])
    assert p.sent == []


def test_the_owner_learns_the_bad_blocks_or_that_no_leaves_will_come(tmp_path: Path) -> None:
    payload = os.urandom(300_000)
    (tmp_path / "f").write_bytes(payload)
    meta = create(tmp_path / "f", piece_length=PIECE, torrent_format="v2")
    assert meta.info_hash_v2 is not None
    v2_hash = meta.info_hash_v2[:20]
    told: list[tuple[int, frozenset[int] | None]] = []
    exchange: Any = HashExchange(
        meta.info,
        ban=lambda who, why: None,
        wire_hash_v2=v2_hash,
        on_blamed=lambda index, bad: told.append((index, bad)),
    )
    has_all = PieceSet.full(meta.info.num_pieces)
    alice, bob = (FakePeer(("127.0.0.1", port), FakeProto(v2_hash, has_all)) for port in (1, 2))
    senders = {b * BLOCK_SIZE: alice.addr for b in range(PIECE // BLOCK_SIZE)}

    def fail(index: int) -> wire.HashRequest:
        bad = bytearray(payload[index * PIECE : (index + 1) * PIECE])
        bad[BLOCK_SIZE + 1] ^= 1
        for p in (alice, bob):
            p.sent.clear()
        assert exchange.on_piece_failed(index, bad, senders, [alice, bob])
        request = alice.sent[0]
        assert isinstance(request, wire.HashRequest)
        assert bob.sent == [request]
        return request

    def reject(peer: FakePeer, r: wire.HashRequest) -> None:
        exchange.on_reject(peer, wire.HashReject(r.pieces_root, 0, r.index, r.length, 0))

    # Every peer asked rejects: nobody will say.
    r = fail(0)
    reject(alice, r)
    assert told == []
    reject(bob, r)
    assert told == [(0, None)]
    # One rejects, the other leaves: the same.
    r = fail(1)
    reject(alice, r)
    exchange.on_peer_closed(bob)
    assert told[-1] == (1, None)
    # Nobody answers within LEAF_WAIT_TICKS ticks.
    fail(2)
    for _ in range(hash_exchange.LEAF_WAIT_TICKS - 1):
        exchange.tick()
    assert len(told) == 2
    exchange.tick()
    assert told[-1] == (2, None)
    # The true leaves: block 1 was bad.
    r = fail(3)
    leaves = merkle.block_hashes(payload[3 * PIECE : 4 * PIECE])
    exchange.on_hashes(bob, wire.Hashes(r.pieces_root, 0, r.index, r.length, 0, tuple(leaves)))
    assert told[3] == (3, frozenset({BLOCK_SIZE}))
    # The other peer's late reject changes nothing.
    reject(alice, r)
    assert len(told) == 4
