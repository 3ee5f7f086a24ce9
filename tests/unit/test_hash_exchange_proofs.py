"""HashExchange's per-block proofs on fake peers: a v2 magnet's piece whose layer is not
known is proven by the leaf hashes under it, asked again elsewhere after a reject or a
lie, released by its layer when that comes first, and blamed from its proven leaves."""

from __future__ import annotations

import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_hash_exchange_blame import FakePeer, FakeProto
from torrent.create import create
from torrent.engine import hash_exchange
from torrent.engine.hash_exchange import HashExchange
from torrent.proto import merkle, ut_metadata, wire
from torrent.proto.metainfo import Info
from torrent.proto.pieceset import PieceSet
from torrent.types import BLOCK_SIZE

PIECE = 64 * 1024
LENGTH = 300_000  # five pieces: a layer 8 wide, a tree of 32 leaves


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.payload = os.urandom(LENGTH)
        (tmp_path / "f").write_bytes(self.payload)
        meta = create(tmp_path / "f", piece_length=PIECE, torrent_format="v2")
        assert meta.info_hash_v2 is not None
        self.v2_hash = meta.info_hash_v2[:20]
        self.layers = dict(meta.info.piece_layers)
        # What a magnet link gives: the info dict without its piece layers.
        self.info: Info = ut_metadata.metainfo_from_info(meta.info_bytes).info
        assert self.info.missing_piece_layers
        self.tree = merkle.MerkleTree(merkle.block_hashes(self.payload), 32)
        self.proven: list[int] = []
        self.bans: list[tuple[Any, str]] = []
        self.blamed: list[tuple[int, frozenset[int] | None]] = []
        self.spawned: list[Coroutine[Any, Any, None]] = []
        # Any: the peers here are fakes with only what HashExchange reads.
        self.exchange: Any = HashExchange(
            self.info,
            ban=lambda who, why: self.bans.append((who, why)),
            wire_hash_v2=self.v2_hash,
            spawn=self._spawn,
            on_blamed=lambda index, bad: self.blamed.append((index, bad)),
            on_proven=self.proven.append,
        )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> bool:
        self.spawned.append(coro)
        return True

    def peer(self, port: int, pieces: PieceSet | None = None) -> FakePeer:
        return FakePeer(("127.0.0.1", port), FakeProto(self.v2_hash, pieces or PieceSet.full(5)))

    def answer(self, request: wire.HashRequest, *, lie: bool = False) -> wire.Hashes:
        run = (request.base_layer, request.index, request.length, request.proof_layers)
        hashes = merkle.proof(self.tree, *run)
        if lie:
            hashes[1] = bytes(32)
        return wire.Hashes(request.pieces_root, *run, tuple(hashes))


def _proof_requests(peer: FakePeer) -> list[wire.HashRequest]:
    return [ev for ev in peer.sent if isinstance(ev, wire.HashRequest) and ev.base_layer == 0]


def test_a_piece_is_proven_by_the_leaves_under_it(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    ex = s.exchange
    assert ex.ready  # blocks are requested before the layers are known
    assert ex.needs_proof(1)
    alice = s.peer(1)
    ex.prove(1, [alice])
    (request,) = _proof_requests(alice)
    # Piece 1's four leaves, and every uncle up to the root (the tree is five layers tall).
    assert (request.base_layer, request.index, request.length, request.proof_layers) == (0, 4, 4, 4)
    assert not ex.on_hashes(alice, s.answer(request))
    assert s.proven == [1]
    assert ex.pieces_proven == 1
    assert s.info.piece_hash_v2(1) == s.layers[request.pieces_root][32:64]
    assert not ex.needs_proof(1)
    assert ex.needs_proof(2)


def test_a_reject_sends_the_run_to_another_peer_and_a_lie_closes_its_sender(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    ex = s.exchange
    alice, bob, carol = s.peer(1), s.peer(2), s.peer(3, PieceSet(5))  # carol has nothing
    ex.prove(3, [alice, bob, carol])
    (request,) = _proof_requests(alice)
    assert not _proof_requests(bob)
    ex.on_reject(
        alice, wire.HashReject(request.pieces_root, 0, request.index, request.length, request.proof_layers)
    )
    ex.tick([alice, bob, carol])
    assert len(_proof_requests(bob)) == 1
    assert len(_proof_requests(alice)) == 1  # not again so soon
    assert not _proof_requests(carol)  # never a peer without the piece
    assert not ex.on_hashes(bob, s.answer(request, lie=True))
    assert "bad leaf hashes" in bob.closed
    assert s.proven == []
    for _ in range(hash_exchange.PROOF_RETRY_TICKS):
        ex.tick([alice, bob])
    (_, again) = _proof_requests(alice)  # a reject may mean "busy": asked again later
    assert again == request
    assert len(_proof_requests(bob)) == 1  # the liar never again
    ex.on_hashes(alice, s.answer(again))
    assert s.proven == [3]


def test_a_layer_that_comes_first_releases_its_held_pieces(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    ex = s.exchange
    alice = s.peer(1)
    ex.prove(2, [])  # nobody to ask yet
    ex.prove(4, [])
    ex.ask(alice)  # its handshake: the layer run first, then the proofs
    (layer_run,) = [ev for ev in alice.sent if ev.base_layer == 2]
    assert len(_proof_requests(alice)) == hash_exchange.PROOFS_PER_PEER
    assert ex.on_hashes(alice, s.answer(layer_run))  # every layer is known now
    assert sorted(s.proven) == [2, 4]
    assert ex.pieces_proven == 0
    assert dict(s.info.piece_layers) == s.layers
    # The proofs' late answers change nothing.
    for request in _proof_requests(alice):
        assert not ex.on_hashes(alice, s.answer(request))
    assert sorted(s.proven) == [2, 4]
    assert not alice.closed


def test_every_piece_proven_makes_the_layer_and_ends_the_fetch(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    ex = s.exchange
    peers = [s.peer(port) for port in range(1, 4)]
    for index in range(5):
        ex.prove(index, peers)
    done = [ex.on_hashes(p, s.answer(r)) for p in peers for r in _proof_requests(p)]
    assert done == [False] * 4 + [True]
    assert sorted(s.proven) == [0, 1, 2, 3, 4]
    assert dict(s.info.piece_layers) == s.layers
    assert not ex.needs_proof(0)


async def test_a_proven_piece_that_fails_is_blamed_from_its_leaves_without_asking(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    ex = s.exchange
    alice, bob = s.peer(1), s.peer(2)
    ex.prove(1, [alice])
    (request,) = _proof_requests(alice)
    ex.on_hashes(alice, s.answer(request))
    good = s.payload[PIECE : 2 * PIECE]
    bad = bytearray(good)
    bad[2 * BLOCK_SIZE + 5] ^= 1
    senders = {0: alice.addr, BLOCK_SIZE: alice.addr, 2 * BLOCK_SIZE: bob.addr, 3 * BLOCK_SIZE: alice.addr}
    sent = len(alice.sent), len(bob.sent)
    assert ex.on_piece_failed(1, bad, senders, [alice, bob])
    assert (len(alice.sent), len(bob.sent)) == sent  # nobody asked
    assert s.blamed == []  # not before the owner holds the piece
    (coro,) = s.spawned
    await coro
    assert [who for who, _ in s.bans] == [bob.addr]
    assert "block 2 of piece 1" in s.bans[0][1]
    assert s.blamed == [(1, frozenset({2 * BLOCK_SIZE}))]


@pytest.mark.parametrize("with_owner", [True, False])
def test_without_an_owner_to_tell_blocks_wait_for_the_layers(tmp_path: Path, with_owner: bool) -> None:
    s = Setup(tmp_path)
    ex: Any = HashExchange(s.info, on_proven=s.proven.append if with_owner else None)
    assert ex.ready is with_owner
    assert ex.needs_proof(0) is with_owner
