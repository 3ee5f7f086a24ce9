"""Fixtures for the interoperability tests: isolation, client presence, started peers.

- ``loopback_only``: a test that starts a third-party client runs only inside a network
  namespace where ``lo`` is the sole interface, so nothing it does can leave the machine.
  Elsewhere it skips, naming how to get one; under ``CI=true`` it fails instead.
- ``need(key)``: a missing client skips the test naming the package to install; under
  ``CI=true`` it fails (CI installs every client, so a missing one is a broken CI).
- ``start_peer``: starts clients from ``peers.py`` and stops every one of them when the
  test ends, passed or failed; their log tails are printed (pytest shows them on failure).
  A session finalizer also kills, by process group, any client process still alive.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.interop.ours import OurPeer, OurTracker
from tests.interop.peers import CLIENTS, PEER_CLASSES, OpenTracker, Peer, TrackerProcess, kill_leftovers

ROOT = Path(__file__).resolve().parents[2]

UNSHARE_HINT = (
    "run `make test` as root, or from the repository root: "
    "unshare --net -- sh -c 'ip link set lo up && exec python -m pytest -q tests/interop'"
)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> None:
    """Skip with ``reason``, except under ``CI=true`` where the test fails with it."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def isolation_problem() -> str:
    """Why this process may not start third-party peers ("" when it may)."""
    names = sorted(name for _, name in socket.if_nameindex())
    if names != ["lo"]:
        return f"not in a loopback-only network namespace (interfaces: {', '.join(names)})"
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
    except OSError as exc:
        return f"loopback is not up in this network namespace ({exc})"
    return ""


def need(key: str) -> None:
    """Skip (or, under CI, fail) the calling test when client ``key`` is not installed."""
    why = CLIENTS[key].missing()
    if why:
        skip_or_fail(why)


@pytest.fixture
def loopback_only() -> None:
    why = isolation_problem()
    if why:
        skip_or_fail(f"{why}: third-party clients run only in an isolated namespace; {UNSHARE_HINT}")


@pytest.fixture(scope="session", autouse=True)
def _stop_leftover_clients() -> Iterator[None]:
    yield
    left = kill_leftovers()
    if left:
        print(f"interop: killed leftover client process groups {left}", file=sys.stderr)


StartTracker = Callable[..., Awaitable[TrackerProcess]]


@pytest.fixture
async def start_tracker(loopback_only: None, tmp_path: Path) -> AsyncIterator[StartTracker]:
    """``await start_tracker([info_hash_hex, ...], interval_s=5)`` -> a running tracker.

    Our tracker unless ``INTEROP_TRACKER=opentracker`` (the reference, to tell a harness
    problem from a tracker problem). Stopped by PID after the test.
    """
    started: list[TrackerProcess] = []

    async def start(info_hashes: list[str], *, interval_s: int = 5) -> TrackerProcess:
        tracker: TrackerProcess
        workdir = tmp_path / f"tracker-{len(started)}"
        if os.environ.get("INTEROP_TRACKER") == "opentracker":
            need("opentracker")
            tracker = OpenTracker(workdir)
        else:
            tracker = OurTracker(workdir, interval_s=interval_s)
        started.append(tracker)
        await tracker.start(info_hashes)
        return tracker

    try:
        yield start
    finally:
        for tracker in reversed(started):
            with contextlib.suppress(Exception):
                print(tracker.describe_failure())
            with contextlib.suppress(Exception):
                await tracker.stop()


StartPeer = Callable[..., Awaitable[Peer]]


@pytest.fixture
async def start_peer(
    loopback_only: None, tmp_path: Path, start_tracker: StartTracker
) -> AsyncIterator[StartPeer]:
    """``await start_peer("transmission")`` -> a started :class:`Peer`, stopped after the test.

    ``host`` (libtorrent, aria2, rTorrent, CTorrent and ours; ``::1`` for Transmission
    too) puts the client on another loopback address.
    Depends on ``start_tracker`` so that trackers outlive the clients: their ``stopped``
    announces then get an answer instead of a timeout at shutdown.
    """
    started: list[Peer] = []

    async def start(key: str, host: str = "127.0.0.1") -> Peer:
        if key == "pytorrent":
            peer: Peer = OurPeer(tmp_path / f"pytorrent-{len(started)}")
        else:
            need(key)
            peer = PEER_CLASSES[key](tmp_path / f"{key}-{len(started)}")
        if host != peer.host:
            # Transmission listens on 127.0.0.1 and ::1 at once; the others take the address.
            if key not in ("libtorrent", "aria2", "pytorrent", "rtorrent", "ctorrent") and not (
                key == "transmission" and host == "::1"
            ):
                raise ValueError(f"{key} runs on 127.0.0.1 only in this harness")
            peer.host = host
        started.append(peer)
        await peer.start()
        return peer

    try:
        yield start
    finally:
        for peer in reversed(started):
            with contextlib.suppress(Exception):
                await peer.stop()
            with contextlib.suppress(Exception):
                print(f"--- {peer.name} (port {peer.peer_port})\n{peer.describe_failure()}")
