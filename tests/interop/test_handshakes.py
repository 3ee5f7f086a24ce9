"""Handshakes with each client: BEP 3, the fast extension (BEP 6), the extension protocol (BEP 10).

Each client seeds a small torrent; the test connects to it as a plain peer that advertises
both extensions in its reserved bits and sends a BEP 10 handshake, then reads what the
client answers for a bounded time. It asserts that the client echoes the info hash, that
a client setting the extension-protocol bit sends a BEP 10 handshake with an ``m``
dictionary, and that a client setting the fast bit opens with ``Have All``, ``Have None``
or a bitfield (BEP 6), which for a seed must say it has every piece.

What each client advertises (reserved bits, peer id prefix, ``v``, the ``m`` keys,
``reqq``) is printed and, when ``INTEROP_HANDSHAKE_LOG`` names a file, appended to it as
one JSON object per line (``report.py`` puts them in the README).
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.interop.conftest import StartPeer, need
from tests.interop.peers import LOOPBACK, make_payload
from torrent.disk.torrent_file import read_metainfo
from torrent.proto import bencoding

pytestmark = [pytest.mark.interop, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

PROTOCOL = b"\x13BitTorrent protocol"
EXTENDED = 20  # BEP 10 message id
HAVE_ALL, HAVE_NONE, BITFIELD = 0x0E, 0x0F, 5
MAX_MESSAGE = 1 << 20


def reserved_flags(reserved: bytes) -> list[str]:
    names = []
    if reserved[5] & 0x10:
        names.append("extension protocol (BEP 10)")
    if reserved[7] & 0x04:
        names.append("fast (BEP 6)")
    if reserved[7] & 0x01:
        names.append("DHT (BEP 5)")
    if reserved[7] & 0x10:
        names.append("NAT traversal")
    if reserved[7] & 0x08:
        names.append("v2 upgrade (BEP 52)")
    return names


async def read_message(reader: asyncio.StreamReader) -> tuple[int, bytes] | None:
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    if length > MAX_MESSAGE:
        raise AssertionError(f"message of {length} bytes")
    if length == 0:
        return None  # keep-alive
    body = await reader.readexactly(length)
    return body[0], body[1:]


def _text(v: Any) -> Any:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


async def _mktorrent(top: Path, torrent: Path) -> None:
    argv = ["mktorrent", "-l", "15", "-a", f"http://{LOOPBACK}:9/announce", "-o", str(torrent), str(top)]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, argv, out, err)


async def _bittorrent_handshake(
    port: int, ours: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Send our handshake and read theirs (68 bytes)."""
    # qBittorrent reports a torrent as seeding a moment before its session takes
    # connections for it (they are reset): try the BitTorrent handshake a few times.
    for attempt in range(6):
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        try:
            writer.write(ours)
            await writer.drain()
            hs = await asyncio.wait_for(reader.readexactly(68), 10)
            break
        except (ConnectionResetError, asyncio.IncompleteReadError):
            writer.close()
            if attempt == 5:
                raise
            await asyncio.sleep(1)
    return reader, writer, hs


async def _read_opening(
    reader: asyncio.StreamReader, wants_ext: bool, seen: list[str]
) -> tuple[dict[bytes, Any] | None, tuple[int, bytes] | None]:
    """Read (for a bounded time) until their BEP 10 handshake, if they want one, and their
    first piece-set message have arrived; every message id read goes into ``seen``."""
    ext: dict[bytes, Any] | None = None
    first_have: tuple[int, bytes] | None = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 8
    while (wants_ext and ext is None) or first_have is None:
        left = deadline - loop.time()
        if left <= 0:
            break
        try:
            msg = await asyncio.wait_for(read_message(reader), left)
        except (TimeoutError, asyncio.IncompleteReadError):
            break
        if msg is None:
            seen.append("keep-alive")
            continue
        mid, payload = msg
        seen.append(str(mid))
        if mid == EXTENDED and payload[:1] == b"\x00":
            ext = bencoding.decode(payload[1:])
        elif mid in (HAVE_ALL, HAVE_NONE, BITFIELD) and first_have is None:
            first_have = (mid, payload)
    return ext, first_have


async def _linger(reader: asyncio.StreamReader, seen: list[str]) -> None:
    """Keep listening briefly: a second piece-set message (aria2 sends two) shows here."""
    loop = asyncio.get_running_loop()
    linger_until = loop.time() + 0.5
    while (left := linger_until - loop.time()) > 0:
        try:
            msg = await asyncio.wait_for(read_message(reader), left)
        except (TimeoutError, asyncio.IncompleteReadError):
            break
        seen.append("keep-alive" if msg is None else str(msg[0]))


def _record(
    client: str,
    their_reserved: bytes,
    their_id: bytes,
    ext: dict[bytes, Any] | None,
    first_have: tuple[int, bytes] | None,
    seen: list[str],
) -> dict[str, Any]:
    """What the client advertised, as one JSON object of the handshake log."""
    return {
        "client": client,
        "reserved": their_reserved.hex(),
        "reserved_flags": reserved_flags(their_reserved),
        "peer_id_prefix": their_id[:8].decode("latin-1"),
        "v": _text(ext.get(b"v")) if ext else None,
        "m": sorted(_text(k) for k in (ext.get(b"m") or {})) if ext else None,
        "reqq": ext.get(b"reqq") if ext else None,
        "opening": {HAVE_ALL: "have_all", HAVE_NONE: "have_none", BITFIELD: "bitfield"}.get(first_have[0])
        if first_have
        else None,
        "messages": seen[:12],
        "piece_set_messages": sum(1 for m in seen if m in (str(HAVE_ALL), str(HAVE_NONE), str(BITFIELD))),
    }


def _append_line(path: str, line: str) -> None:
    with open(path, "a") as fh:
        fh.write(line + "\n")


@pytest.mark.parametrize("client", ["libtorrent", "transmission", "aria2", "qbittorrent"])
async def test_handshake(client: str, start_peer: StartPeer, tmp_path: Path) -> None:
    need("mktorrent")
    top = make_payload(tmp_path / "data", "hs", {"one.bin": 200_000, "two/two.bin": 70_000})
    torrent = tmp_path / "hs.torrent"
    await _mktorrent(top, torrent)
    meta = read_metainfo(torrent)
    async with asyncio.timeout(60):
        peer = await start_peer(client)
        ih = await peer.add(torrent, tmp_path / "data", seed=True)
        await peer.wait_seeding(ih, timeout_s=30)

        reserved = bytearray(8)
        reserved[5] |= 0x10
        reserved[7] |= 0x04
        our_id = b"-PT0001-" + os.urandom(6).hex().encode()
        reader, writer, hs = await _bittorrent_handshake(
            peer.peer_port, PROTOCOL + bytes(reserved) + meta.info_hash + our_id
        )
        try:
            assert hs[:20] == PROTOCOL
            their_reserved, their_ih, their_id = hs[20:28], hs[28:48], hs[48:68]
            assert their_ih == meta.info_hash
            # Our BEP 10 handshake goes only after theirs has arrived: aria2 1.36 drops a
            # connection whose extended handshake reaches it before it has answered the
            # BitTorrent handshake (libtorrent also waits for the peer's handshake).
            ours = bencoding.encode({b"m": {b"ut_metadata": 3}, b"v": b"pytorrent interop", b"reqq": 250})
            writer.write(struct.pack(">IBB", len(ours) + 2, EXTENDED, 0) + ours)
            await writer.drain()

            seen: list[str] = []
            wants_ext = bool(their_reserved[5] & 0x10)
            ext, first_have = await _read_opening(reader, wants_ext, seen)
            await _linger(reader, seen)
        finally:
            writer.close()

    record = _record(client, their_reserved, their_id, ext, first_have, seen)
    print(json.dumps(record))
    if log := os.environ.get("INTEROP_HANDSHAKE_LOG"):
        await asyncio.to_thread(_append_line, log, json.dumps(record))

    if wants_ext:
        assert ext is not None, f"{client} set the extension bit but sent no BEP 10 handshake ({seen})"
        assert isinstance(ext.get(b"m"), dict)
    assert first_have is not None, f"{client} never said which pieces it has ({seen})"
    mid, payload = first_have
    if their_reserved[7] & 0x04:
        assert mid in (HAVE_ALL, BITFIELD), f"{client} is a seed but opened with message {mid}"
    else:
        assert mid == BITFIELD
    if mid == BITFIELD:
        n = meta.info.num_pieces
        bits = int.from_bytes(payload, "big") >> (len(payload) * 8 - n)
        assert bits == (1 << n) - 1, f"{client} is a seed but its bitfield lacks pieces"
