"""What a torrent reports: its state, its events and a statistics snapshot.

``TorrentState`` and ``TorrentEventKind`` are string enums, so their members compare equal
to (and print, and serialise to JSON as) the plain strings they replace. An
:class:`EventBus` fans a torrent's events out to every ``Torrent.events()`` iterator,
dropping the oldest event of a subscriber that falls behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import NamedTuple

from torrent.types import InfoHash

__all__ = [
    "AnnounceReport",
    "EventBus",
    "PeerStats",
    "TorrentBrief",
    "TorrentEvent",
    "TorrentEventKind",
    "TorrentState",
    "TorrentStats",
]

#: Events a subscriber may fall behind by before the oldest are dropped.
MAX_QUEUED_EVENTS = 1000


class TorrentState(enum.StrEnum):
    """Where a torrent is; ``stopped`` and ``error`` end it."""

    CHECKING = "checking"  # reading the resume state, hashing what is on disk
    DOWNLOADING = "downloading"
    ENDGAME = "endgame"  # every missing block is requested at least once
    SEEDING = "seeding"  # complete, uploading until the seed ratio or time limit
    FINISHED = "finished"  # complete, and done seeding (or told not to seed)
    STOPPED = "stopped"
    ERROR = "error"  # stopped by a disk error; ``TorrentStats.error`` says which


class TorrentEventKind(enum.StrEnum):
    """The kinds of :class:`TorrentEvent`."""

    #: A magnet link's metadata is being fetched, or arrived (BEP 9). Front ends emit it
    #: around ``Session.fetch_metadata``: no torrent exists yet to emit it.
    METADATA = "metadata"
    CHECKED = "checked"  # the start-up check is done; the message counts verified pieces
    STATE = "state"  # the state changed; the message is the new TorrentState
    PIECE = "piece"  # a piece failed its hash check
    COMPLETED = "completed"  # every wanted piece is verified
    FINISHED = "finished"  # the seed ratio or time limit was reached
    TRACKER_WARNING = "tracker_warning"
    TRACKER_ERROR = "tracker_error"
    PEER_BANNED = "peer_banned"  # a peer or a web seed (its URL) is banned for this torrent
    WEB_SEED_WARNING = "web_seed_warning"  # a web seed failed and backs off (BEP 19)
    ERROR = "error"
    STOPPED = "stopped"  # the last event of a torrent


@dataclass(frozen=True, slots=True)
class TorrentStats:
    """A snapshot of one torrent (``Torrent.statistics()``).

    Attributes:
        wanted_bytes: size of the selected files' pieces (the whole torrent by default).
        done_bytes: verified bytes of those pieces.
        downloaded_bytes / uploaded_bytes: payload moved this run.
        checked_fraction: progress of the hash check (1.0 once done).
        eta_s: seconds to completion at the current rate, None when unknown.
        last_ban: the most recent ban, ``"HOST:PORT: why"`` ("" when none).
    """

    info_hash: InfoHash
    name: str
    state: TorrentState
    wanted_bytes: int
    done_bytes: int
    total_bytes: int
    pieces_done: int
    pieces_wanted: int
    downloaded_bytes: int
    uploaded_bytes: int
    download_rate_bps: float
    upload_rate_bps: float
    peers_connected: int
    peers_known: int
    seeds_connected: int
    checked_fraction: float
    eta_s: float | None
    error: str
    tracker_message: str
    wasted_bytes: int
    hash_failures: int
    banned_peers: int
    #: Nodes in the session's DHT routing table (0 with the DHT off or for a private torrent).
    dht_nodes: int = 0
    #: Distinct peer addresses the DHT gave this torrent.
    dht_peers: int = 0
    #: Our external IPv4 address as the router (port mapping) or peers (``yourip``) report
    #: it; None while unknown.
    external_ip: str | None = None
    #: Web seeds neither banned nor backing off / every web seed of the torrent.
    web_seeds_active: int = 0
    web_seeds_total: int = 0
    last_ban: str = ""

    @property
    def progress(self) -> float:
        return self.done_bytes / self.wanted_bytes if self.wanted_bytes else 1.0


class TorrentBrief(NamedTuple):
    """The few figures a list of thousands of torrents shows (``Torrent.brief()``).

    A tuple, not a :class:`TorrentStats`: it costs a tenth as much to build, which is
    what a front end listing 10,000 torrents many times a minute pays for.
    """

    state: TorrentState
    done_bytes: int
    wanted_bytes: int
    download_rate_bps: float
    upload_rate_bps: float
    downloaded_bytes: int
    uploaded_bytes: int
    error: str
    tracker_message: str


@dataclass(frozen=True, slots=True)
class AnnounceReport:
    """How a torrent's last announce went (``Torrent.last_announce()``).

    Attributes:
        url: the tracker that answered ("" when every tracker failed).
        ok: a tracker answered.
        message: why every tracker failed, or the answering tracker's warning ("" if none).
        peers: addresses in the answer.
        seeders / leechers / downloaded: the swarm counts the tracker sent (None if not sent).
        age_s: seconds since the announce.
        next_in_s: seconds until the next regular announce (0 when it is due).
    """

    url: str
    ok: bool
    message: str
    peers: int
    seeders: int | None
    leechers: int | None
    downloaded: int | None
    age_s: float
    next_in_s: float


@dataclass(frozen=True, slots=True)
class PeerStats:
    """A snapshot of one connected peer (``Torrent.peers()``).

    Attributes:
        client: the extension handshake's ``v`` (BEP 10), else the peer id's printable part.
        progress: the fraction of the torrent's pieces the peer has.
        down_rate_bps / up_rate_bps: payload rate from / to the peer.
        encrypted: the stream is RC4-encrypted (MSE); False for plaintext, including an
            MSE handshake that chose the plaintext method.
        utp: the connection runs over uTP (BEP 29), not TCP.
    """

    host: str
    port: int
    client: str
    progress: float
    down_rate_bps: float
    up_rate_bps: float
    incoming: bool
    am_choking: bool
    am_interested: bool
    peer_choking: bool
    peer_interested: bool
    encrypted: bool = False
    utp: bool = False


@dataclass(frozen=True, slots=True)
class TorrentEvent:
    """Something that happened to a torrent (``Torrent.events()``)."""

    kind: TorrentEventKind
    info_hash: InfoHash
    name: str
    message: str = ""


class EventBus:
    """One torrent's events, fanned out to every subscriber until :meth:`close`."""

    def __init__(self, info_hash: InfoHash, name: str) -> None:
        self._info_hash = info_hash
        self._name = name
        self._subscribers: list[asyncio.Queue[TorrentEvent | None]] = []

    def emit(self, kind: TorrentEventKind, message: str = "") -> None:
        ev = TorrentEvent(kind, self._info_hash, self._name, message)
        for q in self._subscribers:
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(ev)

    async def subscribe(self) -> AsyncIterator[TorrentEvent]:
        """Every event from now on, until :meth:`close`."""
        queue: asyncio.Queue[TorrentEvent | None] = asyncio.Queue(maxsize=MAX_QUEUED_EVENTS)
        self._subscribers.append(queue)
        try:
            while True:
                ev = await queue.get()
                if ev is None:
                    return
                yield ev
        finally:
            self._subscribers.remove(queue)

    def close(self) -> None:
        """End every subscriber's iteration (after the events already queued)."""
        for q in self._subscribers:
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(None)
