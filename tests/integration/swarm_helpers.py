"""Helpers for the client's integration tests: payloads, torrents and a tiny tracker.

``make_payload`` writes random files, ``make_torrent`` builds their metainfo in memory
(BEP 3 layout), ``our_tracker`` runs our tracker in process on loopback.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
from collections.abc import Sequence
from pathlib import Path

from torrent.proto import bencoding
from torrent.proto.metainfo import Metainfo
from tracker.server import TrackerServer
from tracker.settings import TrackerSettings


def make_payload(root: Path, name: str, files: dict[str, int] | int, *, seed: int = 1) -> Path:
    """Random bytes: a single file ``root/name`` (``files`` an int) or a directory."""
    rng = random.Random(seed)
    if isinstance(files, int):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(files))
        return path
    top = root / name
    for rel, size in files.items():
        p = top / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(size))
    return top


def make_torrent(content: Path, *, piece_length: int = 32 * 1024, trackers: Sequence[str] = ()) -> Metainfo:
    """Metainfo for ``content`` (a file or a directory, files in sorted order)."""
    if content.is_file():
        data = content.read_bytes()
        info: dict[bytes, object] = {b"length": len(data)}
        blobs = [data]
    else:
        entries = sorted(p for p in content.rglob("*") if p.is_file())
        blobs = [p.read_bytes() for p in entries]
        info = {
            b"files": [
                {b"length": len(b), b"path": [part.encode() for part in p.relative_to(content).parts]}
                for p, b in zip(entries, blobs, strict=True)
            ]
        }
    payload = b"".join(blobs)
    info[b"name"] = content.name.encode()
    info[b"piece length"] = piece_length
    info[b"pieces"] = b"".join(
        hashlib.sha1(payload[i : i + piece_length]).digest() for i in range(0, len(payload), piece_length)
    )
    top: dict[bytes, object] = {b"info": info}
    if trackers:
        top[b"announce"] = trackers[0].encode()
        top[b"announce-list"] = [[t.encode()] for t in trackers]
    return Metainfo.from_bytes(bencoding.encode(top))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def same_tree(a: Path, b: Path) -> bool:
    """Files under ``a`` and ``b`` are byte-identical (or both single files are)."""
    if a.is_file():
        return b.is_file() and a.read_bytes() == b.read_bytes()
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return fa == fb and all((a / p).read_bytes() == (b / p).read_bytes() for p in fa)


def our_tracker(*, interval_s: int = 2) -> TrackerServer:
    """Our tracker (HTTP and UDP) on 127.0.0.1, free ports, short intervals for tests.

    ``async with our_tracker() as t:`` then ``t.urls()`` gives the http and udp URLs.
    """
    return TrackerServer(
        TrackerSettings(host="127.0.0.1", port=0, udp_port=0, interval_s=interval_s, min_interval_s=1)
    )


def only_loopback() -> bool:
    """True inside a network namespace that has nothing but ``lo``."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def env_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"
