"""MSE/PE costs: RC4 stream throughput and handshakes per second, one core.

Usage: python bench/mse.py [--mib 256] [--handshakes 300] [--rounds 3]

* *RC4*: ``torrent.proto.mse.RC4Stream.encrypt`` (OpenSSL's RC4 through ``cryptography``) over
  ``--mib`` MiB fed in 16 KiB and 256 KiB chunks (a block, and the largest asyncio read). RC4
  decrypts with the same operation, so a connection pays this figure once per direction used.
  Reported as MB/s (wall clock) and CPU seconds per GiB (process time), best of ``--rounds``.
* *handshakes*: a whole Initiator/Receiver exchange in memory (both sides: four 768-bit
  modular exponentiations with 160-bit exponents, the hashes, the RC4 set-up with its 1024-byte
  discards, default random padding), as complete pairs per second; and the modular
  exponentiation alone, which dominates.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torrent.proto.mse import (
    DH_GENERATOR,
    DH_PRIME,
    HandshakeDone,
    Initiator,
    RC4Stream,
    Receiver,
)

GIB = 1 << 30
INFO_HASH = b"\x11" * 20


def rc4_run(total: int, chunk: int) -> tuple[float, float]:
    """(wall s, CPU s) to encrypt ``total`` bytes in ``chunk``-byte calls."""
    stream = RC4Stream(secrets.token_bytes(20), secrets.token_bytes(20))
    data = secrets.token_bytes(chunk)
    view = memoryview(data)
    n = total // chunk
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        stream.encrypt(view)
    return time.perf_counter() - wall, time.process_time() - cpu


def one_handshake() -> None:
    a = Initiator(INFO_HASH, initial_payload=b"\x13BitTorrent protocol" + bytes(48))
    b = Receiver([INFO_HASH])
    done_a = done_b = False
    while not (done_a and done_b):
        if data := a.data_to_send():  # b"" would mean EOF
            b.receive_data(data)
        if not done_b:
            done_b = isinstance(b.next_event(), HandshakeDone)
        if data := b.data_to_send():
            a.receive_data(data)
        if not done_a:
            done_a = isinstance(a.next_event(), HandshakeDone)


def handshakes_per_s(count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        one_handshake()
    return count / (time.perf_counter() - start)


def modexp_per_s(count: int) -> float:
    keys = [secrets.randbits(160) for _ in range(count)]
    start = time.perf_counter()
    for x in keys:
        pow(DH_GENERATOR, x, DH_PRIME)
    return count / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--handshakes", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    total = args.mib << 20

    print(f"RC4Stream.encrypt over {args.mib} MiB, best of {args.rounds}:")
    for chunk in (16 << 10, 256 << 10):
        runs = [rc4_run(total, chunk) for _ in range(args.rounds)]
        wall = min(w for w, _ in runs)
        cpu = min(c for _, c in runs)
        print(
            f"  {chunk >> 10:>3} KiB chunks: {total / wall / 1e6:7.1f} MB/s,"
            f" {cpu * GIB / total:5.2f} CPU s per GiB"
        )

    one_handshake()  # warm up
    pairs = max(handshakes_per_s(args.handshakes) for _ in range(args.rounds))
    modexp = max(modexp_per_s(args.handshakes * 4) for _ in range(args.rounds))
    print(f"handshakes (initiator + receiver in one process): {pairs:7.0f} pairs/s")
    print(f"768-bit modexp, 160-bit exponent (four per pair): {modexp:7.0f} /s")


if __name__ == "__main__":
    main()
