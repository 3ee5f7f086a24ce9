"""Peer wire codec throughput: payload MB/s decoding a stream of 16 KiB piece messages, one core.

Usage: python bench/wire.py [--mib 64] [--rounds 3]

A seed's stream of ``piece`` messages (16 KiB blocks of 1 MiB pieces) is fed to
``torrent.proto.wire.PeerProtocol`` in reads of 16, 64 and 256 KiB (asyncio reads up to 256 KiB at a
time), and every ``Block`` event is taken off the protocol. Two figures per read size:

* *decode*: every block was requested beforehand (not timed); timed are ``receive_data`` and
  ``next_event``, including matching each block against the outstanding requests.
* *pipelined*: what a downloading connection does: 64 requests in flight, each received block
  answered by ``send(Request)`` for the next one, so request encoding and both halves of the
  bookkeeping are timed too.

References in the same run: copying the stream once (``bytes(read)``, the memcpy ceiling of
anything that touches every byte), and a textbook pure-Python decoder that slices messages off
the front of a ``bytes`` buffer (what small clients such as eliasson/pieces do).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torrent.proto.wire import (
    NEED_DATA,
    Block,
    Handshake,
    HaveAll,
    HaveNone,
    PeerProtocol,
    Request,
    Unchoke,
    encode,
)
from torrent.types import BLOCK_SIZE

PIECE = 1 << 20
INFO_HASH = b"\x11" * 20
PIPELINE = 64


def make_stream(total: int) -> tuple[bytes, list[tuple[int, int]]]:
    payload = bytes(range(256)) * (BLOCK_SIZE // 256)
    blocks = [(off // PIECE, off % PIECE) for off in range(0, total, BLOCK_SIZE)]
    return b"".join(encode(Block(i, b, payload)) for i, b in blocks), blocks


def connected(total: int) -> PeerProtocol:
    """A leecher whose peer (a seed) has handshaken, said have-all and unchoked it."""
    us = PeerProtocol(info_hash=INFO_HASH, our_peer_id=b"A" * 20, piece_length=PIECE, total_length=total)
    seed = PeerProtocol(info_hash=INFO_HASH, our_peer_id=b"B" * 20, piece_length=PIECE, total_length=total)
    seed.receive_data(us.send(Handshake()))
    seed.next_event()
    us.receive_data(seed.send(Handshake()) + seed.send(HaveAll()) + seed.send(Unchoke()))
    while us.next_event() is not NEED_DATA:
        pass
    us.send(HaveNone())
    return us


def split(stream: bytes, read: int) -> list[bytes]:
    return [stream[i : i + read] for i in range(0, len(stream), read)]


def run_decode(total: int, reads: list[bytes], blocks: list[tuple[int, int]]) -> float:
    proto = connected(total)
    for index, begin in blocks:
        proto.send(Request(index, begin, BLOCK_SIZE))
    received = 0
    receive, next_event = proto.receive_data, proto.next_event
    t0 = time.perf_counter()
    for chunk in reads:
        receive(chunk)
        while (event := next_event()) is not NEED_DATA:
            received += len(event.data)  # type: ignore[union-attr]
    elapsed = time.perf_counter() - t0
    assert received == total, (received, total)
    assert proto.num_outstanding() == 0, (received, total)
    return elapsed


def run_pipelined(total: int, reads: list[bytes], blocks: list[tuple[int, int]]) -> float:
    proto = connected(total)
    for index, begin in blocks[:PIPELINE]:
        proto.send(Request(index, begin, BLOCK_SIZE))
    next_request = PIPELINE
    received = 0
    receive, next_event, send = proto.receive_data, proto.next_event, proto.send
    t0 = time.perf_counter()
    for chunk in reads:
        receive(chunk)
        while (event := next_event()) is not NEED_DATA:
            if type(event) is not Block:
                raise AssertionError(f"unexpected {event!r}")
            received += len(event.data)
            if next_request < len(blocks):
                index, begin = blocks[next_request]
                send(Request(index, begin, BLOCK_SIZE))
                next_request += 1
    elapsed = time.perf_counter() - t0
    assert received == total
    assert proto.num_outstanding() == 0
    return elapsed


def run_memcpy(total: int, reads: list[bytes], blocks: list[tuple[int, int]]) -> float:
    t0 = time.perf_counter()
    for chunk in reads:
        bytearray(chunk)
    return time.perf_counter() - t0


def run_naive(total: int, reads: list[bytes], blocks: list[tuple[int, int]]) -> float:
    """A textbook decoder: append to a bytes buffer, slice each whole message off the front."""
    unpack = struct.Struct(">IBII").unpack_from
    received = 0
    buf = b""
    t0 = time.perf_counter()
    for chunk in reads:
        buf += chunk
        while len(buf) >= 4:
            length = int.from_bytes(buf[:4], "big")
            if len(buf) < 4 + length:
                break
            message, buf = buf[4 : 4 + length], buf[4 + length :]
            if message[0] == 7:
                _, _, _index, _begin = unpack(b"\x00\x00\x00\x00" + message[:9])
                received += len(message[9:])
    elapsed = time.perf_counter() - t0
    assert received == total
    return elapsed


def best(fn: Callable[[int, list[bytes], list[tuple[int, int]]], float], rounds: int, *args: object) -> float:
    times = []
    for _ in range(rounds):
        gc.collect()
        times.append(fn(*args))  # type: ignore[arg-type]
    return min(times) if rounds < 3 else statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=64, help="payload per round in MiB (default 64)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure; the median is shown")
    args = parser.parse_args(argv)
    total = args.mib * (1 << 20)
    stream, blocks = make_stream(total)
    print(
        f"stream: {len(blocks)} piece messages, {total / 1e6:.0f} MB of payload; median of {args.rounds} rounds"
    )
    print(
        f"{'read size':>10} | {'decode':>12} | {'pipelined':>12} | {'memcpy ref':>12} | {'naive ref':>12} | vs naive"
    )
    for read in (16 * 1024, 64 * 1024, 256 * 1024):
        reads = split(stream, read)
        figures = []
        for fn, rounds in (
            (run_decode, args.rounds),
            (run_pipelined, args.rounds),
            (run_memcpy, args.rounds),
            (run_naive, 1),
        ):
            seconds = best(fn, rounds, total, reads, blocks)
            figures.append(total / seconds / 1e6)
        decode, pipelined, memcpy, naive = figures
        print(
            f"{read // 1024:>7} KiB | {decode:>7,.0f} MB/s | {pipelined:>7,.0f} MB/s | {memcpy:>7,.0f} MB/s |"
            f" {naive:>7,.0f} MB/s | {decode / naive:.1f}x"
        )
    per_block_us = 1e6 * BLOCK_SIZE / (pipelined * 1e6)
    print(f"pipelined at 256 KiB reads: {per_block_us:.2f} us per 16 KiB block, request and decode together")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
