"""Slowloris and connection floods against our HTTP tracker: slow and idle connections are
closed on time, the connection cap evicts what waits longest (or resets the newcomer), and
honest announces are answered all through the flood. Parse errors, over-long requests and
bodies get a bencoded failure reason, not aiohttp's plain-text page."""

from __future__ import annotations

import asyncio
import re
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote_from_bytes

import pytest

from tests.polling import wait_until, wait_until_blocking
from torrent.proto import bencoding
from tracker.server import TrackerServer
from tracker.settings import TrackerSettings

ROOT = Path(__file__).resolve().parents[2]
IH = bytes(range(60, 80))
HEAD = b"GET /announce?info_hash="  # the start of a request that never ends


def announce_path(n: int) -> str:
    pid = b"-HS0001-" + n.to_bytes(12, "big")
    return (
        f"/announce?info_hash={quote_from_bytes(IH, safe='')}&peer_id={quote_from_bytes(pid, safe='')}"
        f"&port={7000 + n % 1000}&left=1&compact=1"
    )


async def raw_request(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


def body_of(response: bytes) -> dict[bytes, object]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].split(b" ")[1] == b"200", head
    decoded: dict[bytes, object] = bencoding.decode(body)
    return decoded


async def honest_announce(port: int, n: int) -> dict[bytes, object]:
    request = f"GET {announce_path(n)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    return body_of(await raw_request(port, request))


@pytest.fixture
async def tracker() -> AsyncIterator[TrackerServer]:
    settings = TrackerSettings(
        host="127.0.0.1", port=0, udp_port=-1, max_connections=40, header_timeout_s=1.0, body_timeout_s=1.0
    )
    async with TrackerServer(settings) as srv:
        yield srv


async def open_slow(
    port: int, n: int, data: bytes
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    out = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if data:
            writer.write(data)
        out.append((reader, writer))
    return out


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    try:
        return await reader.read(100) == b""
    except ConnectionError:
        return True


async def test_slow_and_idle_connections_are_closed_and_counted(tracker: TrackerServer) -> None:
    guard = tracker.guard
    assert guard is not None
    slow = await open_slow(tracker.http_port, 10, HEAD)
    idle = await open_slow(tracker.http_port, 10, b"")
    started = time.monotonic()
    try:
        async with asyncio.timeout(5):
            closed = await asyncio.gather(*(closed_by_peer(r) for r, _ in slow + idle))
        assert all(closed)
        # closed for the header timeout (1 s), not aiohttp's keep-alive backstop (2 s)
        assert time.monotonic() - started < 1.9
        assert (guard.counters.slow_request, guard.counters.idle) == (10, 10)
        assert guard.open == 0
    finally:
        for _, w in slow + idle:
            w.close()


async def test_a_trickled_request_is_closed_even_though_bytes_keep_coming(tracker: TrackerServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", tracker.http_port)
    try:
        started = time.monotonic()
        for ch in HEAD:
            writer.write(bytes([ch]))
            await asyncio.sleep(0.1)
            if reader.at_eof() or writer.is_closing():
                break
        assert await closed_by_peer(reader)
        assert time.monotonic() - started < 2.5
    finally:
        writer.close()


async def test_honest_announces_are_answered_through_a_flood_at_the_cap(tracker: TrackerServer) -> None:
    guard = tracker.guard
    assert guard is not None
    flood = await open_slow(tracker.http_port, 100, HEAD)  # 2.5x the cap of 40
    try:
        await wait_until(lambda: guard.open <= guard.max_connections, timeout_s=5)
        await asyncio.sleep(guard.evict_after_s + 0.05)  # the flood is now "old"
        for n in range(30):
            answer = await honest_announce(tracker.http_port, n)
            assert b"failure reason" not in answer
        # one eviction makes room; the flood cannot take it back (its tail was reset)
        assert guard.counters.evicted >= 1
        assert guard.counters.refused_cap > 0  # the flood's own tail was reset at accept
        metrics = (
            await raw_request(
                tracker.http_port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
        ).decode()
        assert re.search(r'pytorrent_tracker_http_refused_total\{reason="evicted"\} [1-9]', metrics)
        assert re.search(r'pytorrent_tracker_http_refused_total\{reason="cap"\} [1-9]', metrics)
        status = await raw_request(
            tracker.http_port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        c = guard.counters
        assert f"<td>{c.refused_cap} / {c.evicted} / ".encode() in status
    finally:
        for _, w in flood:
            w.close()


@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        (b"GET /announce?" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n", b"request too long"),
        (b"GET /announce HTTP/1.1\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n", b"request too long"),
        (b"\x16\x03\x01 not http at all\r\n\r\n", b"malformed HTTP request"),
        (
            f"GET {announce_path(1)} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".encode(),
            b"a tracker request has no body",
        ),
    ],
    ids=["long-query", "long-header", "not-http", "body"],
)
async def test_bad_requests_get_a_bencoded_failure(
    tracker: TrackerServer, request_bytes: bytes, reason: bytes
) -> None:
    answer = body_of(await raw_request(tracker.http_port, request_bytes))
    assert answer == {b"failure reason": reason}
    assert tracker.guard is not None
    counters = tracker.guard.counters
    assert counters.bad_request + counters.body_refused == 1


def _limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def test_the_tracker_under_ulimit_1024_serves_through_1000_slow_connections() -> None:
    """The issue's case: ``ulimit -n 1024`` and ~1,000 half-sent requests made every honest
    announce fail. Now the cap (1024 less a reserve) holds, and newcomers evict the flood."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "tracker", "--host", "127.0.0.1", "--port", str(port), "--no-udp",
         "--header-timeout", "60"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_limit_files,
    )  # fmt: skip
    flood: list[socket.socket] = []
    try:
        wait_until_blocking(lambda: _reachable(port), timeout_s=15)
        for _ in range(1000):
            s = socket.socket()
            flood.append(s)
            try:
                s.connect(("127.0.0.1", port))
                s.sendall(HEAD)
            except OSError:
                pass  # reset at the cap
        time.sleep(1.2)  # older than the eviction age
        for n in range(20):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{announce_path(n)}", timeout=5) as resp:
                assert b"failure reason" not in resp.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        cap = re.search(r'pytorrent_tracker_http_connections\{state="cap"\} (\d+)', metrics)
        assert cap is not None
        assert int(cap.group(1)) == 1024 - 64
        assert re.search(r'pytorrent_tracker_http_refused_total\{reason="evicted"\} [1-9]', metrics)
        assert proc.poll() is None
    finally:
        for s in flood:
            s.close()
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "HTTP connection cap (960) reached" in err.decode()


def _reachable(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1):
            return True
    except OSError:
        return False
