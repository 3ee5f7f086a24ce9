"""HashExchange's v2 blame on fake peers: who is asked for a failed piece's leaf hashes,
what a worthless answer costs its sender, and who is banned by a good one."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torrent.create import create
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
