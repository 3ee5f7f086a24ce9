"""What every owner of peer connections shares: the session's context, the spawning rule,
and default (no-op) answers to the peer callbacks.

A :class:`~torrent.engine.swarm.Swarm` (a torrent with metadata) and a
:class:`~torrent.engine.metadata_fetch.MetadataFetcher` (a magnet link before it) both
host peers: they subclass :class:`PeerHostBase` and override the callbacks they care
about; :class:`~torrent.engine.peer.Peer` sees either through its ``PeerHost`` protocol.

Spawning (see docs/ARCHITECTURE.md, "Shutdown"): every task a host starts goes through
:meth:`PeerHostBase.spawn`, which refuses once the host is stopping and *closes* the
coroutine it refuses. A peer callback may run while the host's task group is aborting
(a block arrives between the stop and the group's exit); ``create_task`` would raise
there and leave the coroutine un-awaited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torrent.config import Settings
from torrent.engine.addresses import OurAddresses
from torrent.engine.bandwidth import RateLimiter
from torrent.engine.clock import SYSTEM_CLOCK, Clock
from torrent.engine.http_client import HttpClient
from torrent.engine.mse_stream import EncryptionCounters
from torrent.engine.peer import Peer
from torrent.engine.utp_dial import DialCounters
from torrent.errors import StorageError
from torrent.proto import wire
from torrent.types import InfoHash, PeerId

if TYPE_CHECKING:  # the DHT's and uTP's modules load only when they are enabled (Session)
    from torrent.engine.dht_node import DhtNode
    from torrent.engine.utp_socket import UtpSocketManager

__all__ = ["PeerHostBase", "SwarmContext", "spawn"]


@dataclass(slots=True)
class SwarmContext:
    """What the session shares with each of its torrents.

    Attributes:
        port: our listening port (known once the session is entered).
        half_open: outgoing connection attempts in flight, session-wide.
        peer_slots: free connection slots, session-wide.
        clock: the time source of every timer decision.
        encryption: the session's MSE handshake counters.
        dht: the session's DHT node, None when the DHT is off.
        utp: the session's uTP socket, None when uTP is off.
        utp_dials: how outgoing connections were made (uTP, or TCP after uTP failed).
        disk_executor: the thread pool every torrent's disk I/O shares (None: each its own).
        addresses: our own addresses (BEP 7 announce hints, BEP 10 ``ipv4``/``ipv6``).
    """

    settings: Settings
    peer_id: PeerId
    port: Callable[[], int]
    http: HttpClient
    down_limit: RateLimiter
    up_limit: RateLimiter
    half_open: asyncio.Semaphore
    peer_slots: Callable[[], int]
    clock: Clock = SYSTEM_CLOCK
    encryption: EncryptionCounters = field(default_factory=EncryptionCounters)
    dht: DhtNode | None = None
    utp: UtpSocketManager | None = None
    utp_dials: DialCounters = field(default_factory=DialCounters)
    disk_executor: ThreadPoolExecutor | None = None
    addresses: OurAddresses = field(default_factory=OurAddresses)


def spawn(
    tg: asyncio.TaskGroup | None, coro: Coroutine[Any, Any, None], *, stopping: bool
) -> asyncio.Task[None] | None:
    """Start ``coro`` in ``tg`` unless the owner is stopping or the group is gone or
    aborting; a refused coroutine is closed, so it never warns "never awaited".

    Returns:
        The task, or None when it was refused.
    """
    if tg is None or stopping:
        coro.close()
        return None
    try:
        return tg.create_task(coro)
    except RuntimeError:  # the group is shutting down (a sibling failed)
        coro.close()
        return None


class PeerHostBase:
    """A ``PeerHost`` whose callbacks do nothing, with the spawning rule.

    Subclasses set ``_tg`` to their task group while it runs and call :meth:`halt` when
    a stop is requested.
    """

    info_hash: InfoHash
    num_pieces: int = 0  # 0 while the metadata is not known (a magnet link)
    piece_length: int | None = None
    hybrid_hashes: tuple[InfoHash, InfoHash] | None = None
    total_length: int | None = None

    def __init__(self) -> None:
        self._tg: asyncio.TaskGroup | None = None
        self._stopping = False

    @property
    def stopping(self) -> bool:
        """A stop was requested: no new task, no new connection."""
        return self._stopping

    def halt(self) -> None:
        """Refuse every spawn from now on."""
        self._stopping = True

    def spawn(self, coro: Coroutine[Any, Any, None]) -> bool:
        """Run ``coro`` in the host's task group; False when refused (see :func:`spawn`)."""
        return spawn(self._tg, coro, stopping=self._stopping) is not None

    # PeerHost callbacks: see torrent.engine.peer.PeerHost.

    def on_peer_ready(self, peer: Peer) -> None:
        pass

    def on_peer_has(self, peer: Peer, indices: list[int] | None) -> None:
        pass

    def on_peer_block(self, peer: Peer, index: int, begin: int, data: Any) -> None:
        pass

    def on_peer_blocks(self, peer: Peer, blocks: list[tuple[int, int, Any]]) -> None:
        for index, begin, data in blocks:
            self.on_peer_block(peer, index, begin, data)

    def on_peer_unchoked(self, peer: Peer) -> None:
        pass

    def pick_blocks(self, peer: Peer, n: int) -> list[tuple[int, int, int]]:
        return []

    def on_requests_dropped(self, peer: Peer, blocks: list[tuple[int, int, int]]) -> None:
        pass

    def may_upload(self, peer: Peer, index: int, begin: int, length: int) -> bool:
        return False

    def on_hash_request(self, peer: Peer, ev: wire.HashRequest) -> None:
        # BEP 52: every hash request gets an answer; without the metadata it is a reject.
        peer.send(wire.HashReject(ev.pieces_root, ev.base_layer, ev.index, ev.length, ev.proof_layers))

    def on_hashes(self, peer: Peer, ev: wire.Hashes) -> None:
        pass

    def on_hash_reject(self, peer: Peer, ev: wire.HashReject) -> None:
        pass

    def read_block(self, index: int, begin: int, length: int) -> Awaitable[bytes | memoryview]:
        return _no_data()

    def cached_block(self, index: int, begin: int, length: int) -> bytes | memoryview | None:
        return None

    def prefetch(self, index: int) -> None:
        pass

    def extension_fields(self) -> dict[str, Any]:
        return {}

    def on_extension_handshake(self, peer: Peer, ev: wire.ExtensionHandshake) -> None:
        pass

    @property
    def pex_enabled(self) -> bool:
        return False

    def on_metadata_message(self, peer: Peer, payload: bytes) -> None:
        pass

    def on_pex_message(self, peer: Peer, payload: bytes) -> None:
        pass

    def on_peer_interest_changed(self, peer: Peer) -> None:
        pass

    def on_peer_closed(self, peer: Peer) -> None:
        pass


async def _no_data() -> bytes:
    raise StorageError("no data to serve")
