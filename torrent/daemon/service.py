"""The daemon's torrents: their records, the queue and every operation on them.

A :class:`Daemon` owns one :class:`~torrent.engine.session.Session` and a
:class:`~torrent.daemon.store.StateStore`. Only the torrents the queue lets run are
in the session; a stopped or queued torrent is a record and nothing else (no task, no
open file, no timer).

A complete torrent that seeds with no connection is *dormant*: the session knows its
info hash (an incoming peer naming it starts it at once, :meth:`Session.park`) and the
daemon starts it again when its next announce is due; otherwise it is a record, listed
as seeding. A seed goes dormant once its announce settled and it had no connection for
``park_idle_s``, without a ``stopped`` announce (it stays listed at its trackers).
Announces of dormant seeds are spread out: at most ``announces_per_s`` are scheduled
per second (a restart with 10,000 seeds does not burst 10,000 announces; one heap and
one task for all of them, :mod:`torrent.daemon.announces`).

Checking does not run the torrent either: :meth:`Session.check_torrent` hashes the data
(or trusts a clean resume state) on the session's disk pool and saves the resume state;
a complete torrent then goes dormant, an incomplete one waits for a download slot.
A restart trusts the stored completion of complete torrents: they are dormant seeds at
once, their data is looked at when they next run (the resume state's checks).

Queue rules (as Transmission's and qBittorrent's):

1. At most ``max_active_downloads`` incomplete torrents run at once, in queue order;
   a running download that made no progress for ``stall_s`` is *stalled* and does not
   hold a slot.
2. At most ``max_active_seeds`` complete torrents seed at once (None: all of them).
3. A torrent being checked holds neither kind of slot, but at most ``check_slots``
   are checked at once; the check itself hashes on every core. An incomplete torrent
   not yet checked in this run is checked whatever the download queue says (as
   Transmission verifies what it adds); afterwards it waits in the queue, its
   progress known. Dormant seeds hold seed slots. While torrents are being added in a
   burst (each within ``ADD_QUIET_S`` of the one before, the last within
   ``ADD_QUIET_S`` of now), no check starts: the adds are answered first, and the
   checks of a burst of adds all start once it ends (a check's work, its threads'
   included, was half of the daemon's CPU during a burst with 4 checks at once). A
   lone add is no burst: its check starts with the next pass. A burst longer than
   ``ADD_BURST_DEFER_S`` (a steady trickle of adds) does not hold the checks back for
   ever: from then on ``ADD_BURST_CHECK_SLOTS`` run.
4. ``start_now`` skips the queue; ``stop`` takes a torrent out of it until started.
5. The scheduler runs when something changed (an add, a stop, a check that ended, a
   completion) and once a second, never per torrent; changes that arrive together are
   served by one pass (at most one per ``SCHEDULE_MIN_GAP_S``, or per twice the last
   pass's duration: a pass walks every record, and at 10,000 torrents the passes would
   otherwise take the CPU from the checks they schedule).
6. An operation on a torrent (stop, remove, move, verify, file changes) holds its
   record's lock from stopping it to deciding what comes next; a pass leaves a held
   torrent alone and starts the others under their lock.
7. A torrent about to run (started, its check waiting or under way, or checked and
   not yet run) is *reachable*: the session knows its info hash as it knows a dormant
   seed's, and an incoming peer naming it starts it at once when a download and a
   seed slot are free (its connection is held while it starts, and a check under way
   ends first: the run trusts the state it saved). A peer that came between an add
   and its run was refused before (it connects once and gives up for a while).

Statistics (uploaded/downloaded totals) are folded into the records and written in one
batched transaction every ``stats_save_interval_s`` and when a torrent stops; what the
scheduler notices (completions, checks, errors) is written in one transaction per pass.
An operation asked for over RPC is its own transaction.

Alternative speed limits ("turtle mode") switch on and off by ``session-set``, and on a
schedule (``alt-speed-time-*``, local time): :mod:`torrent.daemon.alt_speed` switches them
at the schedule's boundaries (one wait per boundary, no polling), and a user's switch in
between holds until the next boundary, as Transmission's does. Adds that arrive together
are stored in one transaction (:mod:`torrent.daemon.add_group`).

Limits (Transmission's): a torrent's ``downloadLimit``/``uploadLimit`` (kB/s, when
``*Limited``) are its own token buckets under the session's; a seed whose ratio reaches
``seedRatioLimit`` (``seedRatioMode`` 1, or 0 with the session's ``seedRatioLimited``)
or that stayed idle ``seedIdleLimit`` minutes (``seedIdleMode`` 1, or 0 with the
session's ``idle-seeding-limit-enabled``) is stopped and reported finished (the reading of
the limits is :mod:`torrent.daemon.limits`; the file work, :mod:`torrent.daemon.content`).

A dormant seed that is stopped or removed announces ``stopped`` then (in the
background; it went dormant without one). One still dormant when the daemon exits does
not: 10,000 of them would be a burst of announces; its trackers drop it after their
interval.

A torrent with ``honorsSessionLimits`` false is under its own limits only, not the
session's (nor the alternative speed limits). Bandwidth groups (``group-set``, a
torrent's ``group``) are a pair of buckets between their torrents' and the session's;
they are kept in the settings table.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torrent.config import Settings
from torrent.daemon import content, network
from torrent.daemon import limits as limit_rules
from torrent.daemon.add_group import AddGroup
from torrent.daemon.alt_speed import AltSpeedSchedule
from torrent.daemon.announces import DormantAnnounces
from torrent.daemon.store import StateStore, StoredTorrent, Summary
from torrent.engine.bandwidth import RateLimiter
from torrent.engine.session import CheckResult, Session, Torrent
from torrent.engine.status import TorrentBrief, TorrentState
from torrent.errors import MetainfoError, TorrentError
from torrent.types import InfoHash

# Parsing metainfo and magnet links is imported where it is first needed: a restart of
# dormant seeds lists them from their stored summaries without parsing any.
if TYPE_CHECKING:
    from torrent.proto.metainfo import Metainfo
    from torrent.proto.metainfo_facts import MetainfoFacts

__all__ = ["BandwidthGroup", "Daemon", "DaemonConfig", "DaemonError", "Record", "Status"]

log = logging.getLogger(__name__)


#: The scheduler runs at most once per this many seconds (rule 5).
SCHEDULE_MIN_GAP_S = 0.02
#: Adds this close together are a burst; no check starts during one (rule 3) ...
ADD_QUIET_S = 0.1
#: ... for its first this many seconds; afterwards ``ADD_BURST_CHECK_SLOTS`` at once.
ADD_BURST_DEFER_S = 2.0
ADD_BURST_CHECK_SLOTS = 4


class DaemonError(TorrentError):
    """An operation the daemon refuses; the message is the RPC ``result``."""


class Status:
    """Transmission's ``status`` numbers (tr_torrent_activity)."""

    STOPPED = 0
    CHECK_WAIT = 1
    CHECK = 2
    DOWNLOAD_WAIT = 3
    DOWNLOAD = 4
    SEED_WAIT = 5
    SEED = 6


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """What the daemon itself (beyond the engine's :class:`Settings`) needs.

    Attributes:
        download_dir: where new torrents' data goes unless told otherwise.
        state_dir: the database and the settings file.
        watch_dir: a directory polled for ``.torrent`` files; None: no watch dir.
        max_active_downloads: downloads running at once (Transmission default 5).
        max_active_seeds: seeds running at once; None: no limit.
        stall_s: a download with no progress this long no longer holds a slot.
        check_slots: torrents hashed at once (each check uses every core).
        on_complete: a shell command run when a download completes.
        stats_save_interval_s: how often the statistics batch is written.
        park_idle_s: a seed with no connection this long (its announce settled) goes
            dormant.
        announces_per_s: announces of dormant seeds scheduled per second at most.
        clock: the local time now (the alternative speed schedule reads it).
    """

    download_dir: str
    state_dir: str
    watch_dir: str | None = None
    max_active_downloads: int = 5
    max_active_seeds: int | None = None
    stall_s: float = 600.0
    check_slots: int = 32
    on_complete: str | None = None
    stats_save_interval_s: float = 30.0
    park_idle_s: float = 2.0
    announces_per_s: float = 10.0
    clock: Callable[[], datetime.datetime] = datetime.datetime.now


def summarize(meta: Metainfo) -> Summary:
    """What the daemon keeps of ``meta`` while the torrent does not run."""
    from torrent.proto.metainfo_facts import MetainfoFacts

    return summary_of(MetainfoFacts.of(meta))


def summary_of(facts: MetainfoFacts) -> Summary:
    """What the daemon keeps of a torrent while it does not run, from what its add read."""
    return Summary(facts.total_length, facts.file_lengths, facts.trackers, facts.private, facts.v2_alias)


@dataclass(slots=True)
class Record:
    """One torrent of the daemon: its stored record and, while it runs, its engine handle.

    The metainfo is parsed when first needed (:attr:`meta`: to run or check the torrent,
    or for a field only it has) and dropped again when the torrent goes dormant; while
    it is not parsed, the stored summary answers for it.
    """

    stored: StoredTorrent
    #: The parsed metainfo, while needed (the store keeps the bytes).
    parsed: Metainfo | None = None
    #: Where :attr:`meta` reads the metainfo from (None: only ``parsed``).
    store: StateStore | None = None
    handle: Torrent | None = None
    #: Start ignoring the queue (``torrent-start-now``).
    force: bool = False
    #: A verify was asked for: waits for a check slot.
    verify_pending: bool = False
    #: Stopped before its first check in this run began (a burst of adds holds checks
    #: back, rule 3): it is checked all the same, as one under way would go on. The
    #: record's ``check_owed`` keeps that across a restart until a check has finished.
    check_owed: bool = False
    #: Dormant seed (see the module docstring): known to the session, not running.
    parked: bool = False
    #: About to run (rule 7): known to the session, an incoming peer starts it.
    reachable: bool = False
    #: When a dormant seed next runs to announce (monotonic; 0: never).
    next_announce: float = 0.0
    #: How far the running check is (None: no check running).
    checking: float | None = None
    check_task: asyncio.Task[None] | None = None
    #: Since when a running seed has had no connection (monotonic; 0: it has one).
    idle_since: float = 0.0
    #: When data last moved (monotonic), for the seed idle limit.
    active_at: float = 0.0
    #: Stopped by its seed ratio or idle limit.
    finished: bool = False
    fetching: bool = False
    #: Its data was checked in this run of the daemon (a new torrent is checked first,
    #: whatever the download queue says).
    checked: bool = False
    #: The metadata fetch of a magnet link, while it runs.
    fetch_task: asyncio.Task[None] | None = None
    #: When the download last made progress (monotonic) and how far it was.
    progress_at: float = 0.0
    progress_bytes: int = -1
    started_at: float = 0.0
    #: Payload moved by the current run, already folded into ``stored`` totals; once
    #: it ended, what the run moved in all (what its trackers counted since ``started``).
    folded_up: int = 0
    folded_down: int = 0
    #: ``torrent-get``'s ``pieces`` of an incomplete torrent that does not run, as its
    #: resume state gives them (None: not read since that last changed).
    pieces_b64: str | None = None
    _lock: asyncio.Lock | None = None

    def __post_init__(self) -> None:
        if self.parsed is not None and self.stored.summary is None:
            self.stored.summary = summarize(self.parsed)

    @property
    def meta(self) -> Metainfo | None:
        """The metainfo (None: a magnet link's is not known yet, or it is unreadable: then
        the torrent has an error)."""
        if self.parsed is None and self.stored.summary is not None and self.store is not None:
            raw = self.stored.metainfo  # an added torrent's, until first parsed
            if raw is None:
                raw = self.store.metainfo(self.id)
            self.stored.metainfo = None
            try:
                if raw is None:
                    raise MetainfoError("no metainfo stored")
                from torrent.proto.metainfo import Metainfo

                self.parsed = content.renamed(
                    content.slim(Metainfo.from_bytes(raw), fresh=True), self.stored.renames
                )
            except MetainfoError as exc:
                self.stored.error = f"stored metainfo unreadable: {exc}"
        return self.parsed

    @property
    def has_meta(self) -> bool:
        """Its metainfo is known (a magnet link's once fetched)."""
        return self.stored.summary is not None

    def wanted_bytes(self) -> int:
        """Bytes of the wanted files."""
        summary = self.stored.summary
        if summary is None:
            return 0
        wanted = self.stored.wanted
        if all(wanted):
            return summary.total_length
        return sum(n for n, w in zip(summary.file_lengths, wanted, strict=False) if w)

    @property
    def lock(self) -> asyncio.Lock:
        """Serializes the operations on this torrent (made on first use: most never need one)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    @property
    def busy(self) -> bool:
        """An operation (stop, verify, move, files...) is under way: the scheduler keeps
        its hands off until it ends (or it would start what the operation just stopped)."""
        return self._lock is not None and self._lock.locked()

    @property
    def id(self) -> int:
        return self.stored.id

    @property
    def info_hash(self) -> str:
        return self.stored.info_hash

    @property
    def complete(self) -> bool:
        """Every wanted piece was verified (as last known)."""
        if self.handle is not None and self.handle.state in (TorrentState.SEEDING, TorrentState.FINISHED):
            return True
        return self.stored.done_date > 0 and self.handle is None

    def status(self) -> int:
        h = self.handle
        if h is None:
            if self.checking is not None:
                return Status.CHECK
            if self.fetching:
                return Status.DOWNLOAD
            if self.verify_pending:
                return Status.CHECK_WAIT
            if self.stored.paused or self.stored.error:
                return Status.STOPPED
            if self.parked:
                return Status.SEED
            return Status.SEED_WAIT if self.stored.done_date else Status.DOWNLOAD_WAIT
        state = h.state
        if state is TorrentState.CHECKING:
            return Status.CHECK
        if state in (TorrentState.SEEDING, TorrentState.FINISHED):
            return Status.SEED
        if state in (TorrentState.STOPPED, TorrentState.ERROR):
            return Status.STOPPED
        return Status.DOWNLOAD

    def totals(self, brief: TorrentBrief | None = None) -> tuple[int, int]:
        """``(uploaded, downloaded)`` ever, this run included (``brief``: the handle's, if at hand)."""
        up, down = self.stored.uploaded, self.stored.downloaded
        if self.handle is not None:
            b = brief or self.handle.brief()
            up += b.uploaded_bytes - self.folded_up
            down += b.downloaded_bytes - self.folded_down
        return up, down


@dataclass(slots=True)
class _Slots:
    """Slots taken during one scheduler pass."""

    downloads: int
    seeds: int
    checks: int
    #: How many checks may run at once in this pass.
    check_limit: int


@dataclass(slots=True)
class BandwidthGroup:
    """A Transmission bandwidth group: the torrents in it share one pair of buckets,
    under the session's unless ``honorsSessionLimits`` is false (``group-set``; limits
    in kB/s of 1,000 bytes, applied while ``*-enabled``)."""

    name: str
    buckets: tuple[RateLimiter, RateLimiter]
    values: dict[str, Any]

    def entry(self) -> dict[str, Any]:
        """``group-get``'s description of it."""
        return {"name": self.name, **self.values}


#: ``group-set`` keys besides ``name``, with their JSON type and default.
GROUP_KEYS: dict[str, tuple[type, Any]] = {
    "honorsSessionLimits": (bool, True),
    "speed-limit-down-enabled": (bool, False),
    "speed-limit-down": (int, 0),
    "speed-limit-up-enabled": (bool, False),
    "speed-limit-up": (int, 0),
}

#: The settings-table key the groups are stored under.
GROUPS_SETTING = "bandwidth-groups"


def engine_priorities(stored: StoredTorrent) -> list[int]:
    """Transmission's wanted flag and -1/0/1 priority per file -> the engine's 0 (skip) or 1..3."""
    return [(p + 2) if w else 0 for w, p in zip(stored.wanted, stored.priorities, strict=True)]


class Daemon:
    """See the module docstring.

    Use as ``async with Daemon(config, settings) as daemon:``; entering opens the
    database, starts the session and puts every stored torrent back in its queue.
    """

    def __init__(self, config: DaemonConfig, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.max_active_downloads = config.max_active_downloads
        self.max_active_seeds = config.max_active_seeds
        self.download_dir = os.path.abspath(config.download_dir)
        self.stall_s = config.stall_s
        #: Session-wide limits as Transmission names them (KB/s, 1 KB = 1000 bytes). The
        #: engine settings' limits (``--max-down``/``--max-up``) are where they start; the
        #: stored settings then apply over them.
        self.session_limits: dict[str, Any] = {
            "speed-limit-down": _kbps(settings.max_download_bps, 100),
            "speed-limit-down-enabled": settings.max_download_bps > 0,
            "speed-limit-up": _kbps(settings.max_upload_bps, 100),
            "speed-limit-up-enabled": settings.max_upload_bps > 0,
            # Transmission's "turtle mode": these limits replace the ones above while enabled.
            "alt-speed-down": 50,
            "alt-speed-up": 50,
            "alt-speed-enabled": False,
            # ... and on this schedule (Transmission's defaults: 09:00-17:00, every day).
            "alt-speed-time-enabled": False,
            "alt-speed-time-begin": 540,
            "alt-speed-time-end": 1020,
            "alt-speed-time-day": 127,
            "seedRatioLimit": 2.0,
            "seedRatioLimited": False,
            "idle-seeding-limit": 30,
            "idle-seeding-limit-enabled": False,
        }
        #: Set by ``session-close`` (or a signal): the front end then leaves ``async with``.
        self.close_requested = asyncio.Event()
        self.store = StateStore(config.state_dir)
        # The network settings a ``session-set`` stored are where the session starts from.
        self.settings = network.startup_settings(settings, self.store.settings(), config.state_dir)
        self.session = Session(self.settings)
        self.state_dir = os.path.abspath(config.state_dir)
        #: Every torrent by id, in id order (a listing's order: ids only grow).
        self.records: dict[int, Record] = {}
        self.by_hash: dict[str, Record] = {}
        self.removed_ids: list[int] = []
        self.started_at = time.time()
        self.session_up = 0
        self.session_down = 0
        self._wake = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._next_stats_save = 0.0
        self._closing = False
        #: Records changed by the scheduler, written in one transaction per pass.
        self._dirty: dict[int, StoredTorrent] = {}
        #: When the dormant seeds announce (one heap, one task; slots spread at
        #: ``announces_per_s``).
        self._dormant_announces = DormantAnnounces(config.announces_per_s)
        #: How long the last scheduler pass took (s).
        self._pass_s = 0.0
        #: Ids of the torrents with a seed ratio or idle limit of their own (mode 1).
        self._own_seed_limits: set[int] = set()
        #: Tasks of the daemon's group besides the scheduler (fetches, hooks, check waiters).
        self._tasks: set[asyncio.Task[None]] = set()
        #: Bandwidth groups by name.
        self.groups: dict[str, BandwidthGroup] = {}
        #: Adds that arrive together are stored in one transaction.
        self._adds: AddGroup[Record] = AddGroup(self.store.commit, self._forget_unstored)
        #: Switches the alternative speed limits at the schedule's boundaries.
        self._alt_speed = AltSpeedSchedule(self.session_limits, config.clock, self._alt_speed_switched)
        #: Download directories as given to :meth:`add`, made absolute (:meth:`_abs_dir`).
        self._abs_dirs: dict[str, str] = {}
        #: When the last add came, and the first of its burst (monotonic; rule 3).
        self._last_add = self._burst_began = -ADD_BURST_DEFER_S
        #: Wakes the scheduler when a burst of adds ends (its deferred checks start).
        self._burst_end: asyncio.TimerHandle | None = None
        #: Set by the first scheduler pass: every stored torrent is where it belongs.
        self._ready = asyncio.Event()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
        if self._tg is None or self._closing:
            coro.close()
            return None
        task = self._tg.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Daemon:
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(self.store.close)
            await stack.enter_async_context(self.session)
            tg = await stack.enter_async_context(asyncio.TaskGroup())
            stack.push_async_callback(self._shutdown)
            self._tg = tg
            stored_settings = self.store.settings()
            groups = stored_settings.get(GROUPS_SETTING)
            for name, values in groups.items() if isinstance(groups, dict) else ():
                if isinstance(name, str) and name and isinstance(values, dict):
                    with contextlib.suppress(DaemonError):  # a hand-edited database: left out
                        self._set_group(name, values)
            self._load()
            self.apply_settings(stored_settings, persist=False)
            tg.create_task(self._scheduler_loop())
            tg.create_task(self._dormant_announces.run(self._announce_due))
            tg.create_task(self._alt_speed.run())
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        assert stack is not None, "the daemon was not entered"
        await stack.aclose()

    async def _shutdown(self) -> None:
        """Stop every torrent (``stopped`` announces, resume saved), save the totals, end the tasks."""
        self._closing = True
        running = [r for r in self.records.values() if r.handle is not None or r.check_task is not None]
        await asyncio.gather(*(self._stop_handle(r) for r in running), return_exceptions=True)
        self._dirty.update((r.id, r.stored) for r in running)
        self._flush()
        self._wake.set()  # the scheduler loop sees ``_closing`` and returns
        self._dormant_announces.stop()
        self._alt_speed.stop()
        if self._burst_end is not None:
            self._burst_end.cancel()
        for task in list(self._tasks):
            task.cancel()

    def _load(self) -> None:
        # In id order: ``records`` stays sorted by id (an added torrent's id is larger
        # than any before), which is the order of a listing.
        made = []
        for stored in sorted(self.store.load(), key=lambda t: t.id):
            if stored.metainfo is not None:  # a record from before summaries
                from torrent.proto.metainfo import Metainfo

                try:
                    stored.summary = summarize(Metainfo.from_bytes(stored.metainfo))
                    made.append(stored)
                except MetainfoError as exc:
                    stored.error = f"stored metainfo unreadable: {exc}"
                stored.metainfo = None
            r = Record(stored, store=self.store)
            # Added or stopped before its check, then a restart: the check is still owed.
            r.check_owed = stored.check_owed and r.has_meta
            self._index(r)
        if made:
            self.store.update_many(made)
        log.info("loaded %d torrents from %s", len(self.records), self.store.path)
        self.wake()

    def _index(self, r: Record) -> None:
        self.records[r.id] = r
        self.by_hash[r.info_hash] = r
        self._note_seed_limits(r)

    def _note_seed_limits(self, r: Record) -> None:
        if limit_rules.has_own_seed_limits(r.stored.limits):
            self._own_seed_limits.add(r.id)
        else:
            self._own_seed_limits.discard(r.id)

    def wake(self) -> None:
        """Run the scheduler soon."""
        self._wake.set()

    # ------------------------------------------------------------------ adding

    def _abs_dir(self, path: str) -> str:
        """``path`` made absolute and interned (the records of one directory share one
        string), remembered for the next add: a burst names the same directory each time.
        A relative path is made absolute each time (against the working directory then)."""
        known = self._abs_dirs.get(path)
        if known is not None:
            return known
        made = sys.intern(os.path.abspath(path))
        if os.path.isabs(path):
            if len(self._abs_dirs) >= 64:
                self._abs_dirs.clear()
            self._abs_dirs[path] = made
        return made

    def preload(self) -> None:
        """Import what an add and its check need (the metainfo and magnet parsers, the
        disk layer) now, while the daemon is idle, not with the first add of a burst (7
        ms). A restart of dormant seeds imports none of it before its first answers."""
        import torrent.disk.resume
        import torrent.disk.storage
        import torrent.proto.magnet
        import torrent.proto.metainfo
        import torrent.proto.metainfo_facts  # noqa: F401

    def add(
        self,
        *,
        metainfo: bytes | None = None,
        magnet: str | None = None,
        download_dir: str | None = None,
        paused: bool = False,
        files_wanted: Iterable[int] | None = None,
        files_unwanted: Iterable[int] | None = None,
        labels: Iterable[str] = (),
    ) -> tuple[Record, bool]:
        """Add a torrent from its metainfo bytes or a magnet link.

        Returns:
            ``(record, added)``; ``added`` is False when it was already there (a duplicate).

        Raises:
            MetainfoError: the metainfo or the magnet link is malformed.
        """
        from torrent.proto.metainfo_facts import MetainfoFacts

        # What the add needs of the metainfo, not its whole parse (which the check makes).
        facts: MetainfoFacts | None = None
        if metainfo is not None:
            facts = MetainfoFacts.from_bytes(metainfo)
            info_hash, name = facts.info_hash.hex(), facts.name
            mag = ""
        elif magnet is not None:
            from torrent.proto.magnet import Magnet

            parsed = Magnet.parse(magnet)
            info_hash, name, mag = parsed.info_hash.hex(), parsed.name or parsed.info_hash.hex(), magnet
        else:
            raise DaemonError("no torrent given (metainfo, filename or magnet)")
        existing = self.by_hash.get(info_hash)
        if existing is not None:
            return existing, False
        n = len(facts.file_lengths) if facts is not None else 0
        wanted = [True] * n
        for i in files_unwanted or ():
            if 0 <= i < n:
                wanted[i] = False
        if files_wanted is not None:
            for i in files_wanted:
                if 0 <= i < n:
                    wanted[i] = True
        stored = StoredTorrent(
            id=0,  # the store assigns it
            info_hash=info_hash,
            name=name,
            metainfo=metainfo,  # as given: what MetainfoFacts.from_bytes just read
            magnet=mag,
            download_dir=self._abs_dir(download_dir or self.download_dir),
            paused=paused,
            queue_position=len(self.records),
            priorities=[0] * n,
            wanted=wanted,
            labels=list(labels),
            added_date=int(time.time()),
        )
        if facts is not None:
            stored.summary = summary_of(facts)
            # Added stopped, it is checked all the same and stays stopped (as Transmission
            # does): its list shows what of it is already on the disk.
            stored.check_owed = paused
        self.store.insert_pending(stored)
        # No parse is kept (a plain torrent had none), its bytes are (until the check
        # parses them, without a read of the store): a burst of adds held a thousand
        # parsed torrents until their checks, and the daemon kept their memory afterwards
        # (3.6 KiB per torrent instead of 2.3).
        r = Record(stored, None, self.store)
        self._index(r)
        self._adds.join(r)
        if facts is not None and not paused:
            self._reach(r, facts.info_hash)
        r.check_owed = stored.check_owed
        now = time.monotonic()
        if now - self._last_add >= ADD_QUIET_S:
            self._burst_began = now  # a lone add, or the first of a burst
        self._last_add = now
        # Debug: the client that added it has the answer; 10,000 adds are not 10,000 lines.
        log.debug("added torrent %d %s (%s)", r.id, name, info_hash)
        if self._burst_end is None or now - self._burst_began >= ADD_BURST_DEFER_S:
            # Within a burst's first seconds a pass could start nothing for the adds
            # (rule 3): the pass when the burst ends (``_burst_end``) serves them all.
            self.wake()
        return r, True

    async def committed(self) -> None:
        """Wait until every torrent added so far is in the database (their group commit,
        :mod:`torrent.daemon.add_group`).

        Raises:
            DaemonError: the group could not be stored; its torrents were dropped.
        """
        failure = await self._adds.wait()
        if failure is not None:
            raise DaemonError(failure)

    def _forget_unstored(self, records: list[Record]) -> None:
        """Drop added torrents whose group commit failed (nothing of them was stored)."""
        for r in records:
            self.records.pop(r.id, None)
            self.by_hash.pop(r.info_hash, None)
            self._own_seed_limits.discard(r.id)

    # ------------------------------------------------------------------ the queue

    async def _scheduler_loop(self) -> None:
        while True:
            if self._ready.is_set():  # the first pass, right after the start, waits for nothing
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._wake.wait()
                if self._closing:
                    return
                # A pass walks every record: when thousands of checks end in a burst, one
                # pass per gap serves them all (and leaves at least two thirds of the time
                # to the checks and the RPC).
                await asyncio.sleep(max(SCHEDULE_MIN_GAP_S, 2 * self._pass_s))
            self._wake.clear()
            if self._closing:
                return
            began = time.perf_counter()
            await self.schedule()
            self._pass_s = time.perf_counter() - began
            self._ready.set()

    async def wait_ready(self) -> None:
        """Wait for the first scheduler pass after start: the stored torrents are then
        listed as they are (the complete ones seeding), the queue has started what it
        allows."""
        await self._ready.wait()

    def _announce_due(self, torrent_id: int, when: float) -> bool:
        """A dormant seed's announce came up: run it (False: the entry is stale, the seed
        woke, stopped or was rescheduled meanwhile)."""
        r = self.records.get(torrent_id)
        if r is None or not r.parked or r.next_announce != when:
            return False
        self._launch(r)
        return True

    def alt_speed_step(self) -> float | None:
        """Apply the alternative speed schedule's state if it changed since it was last
        applied; the seconds until its next boundary (None: the schedule is off or never
        changes). See :class:`~torrent.daemon.alt_speed.AltSpeedSchedule`."""
        return self._alt_speed.step()

    def _alt_speed_switched(self, on: bool) -> None:
        self._apply_session_rates()
        self.store.set_settings({"alt-speed-enabled": on})

    def _apply_session_rates(self) -> None:
        down_bps, up_bps = self.effective_rate_limits()
        self.session.set_rate_limits(download_bps=down_bps, upload_bps=up_bps)

    def _schedule_announce(self, r: Record, when: float) -> None:
        r.next_announce = when
        if when:
            self._dormant_announces.schedule(r.id, when)

    async def schedule(self) -> None:
        """Reap ended runs, notice completions, then start what the queue allows."""
        now = time.monotonic()
        for r in [r for r in self.records.values() if r.handle is not None]:
            if r.handle is not None and not r.busy:
                await self._observe(r, now)
        if now >= self._next_stats_save:
            self._next_stats_save = now + self.config.stats_save_interval_s
            self._save_stats()
        # Dormant seeds need nothing of a pass but their count (rule 2) and, with seed
        # limits, a look at their ratio: the walks below leave them out (at 10,000 seeds
        # a pass was most of the CPU while torrents were added and checked).
        active = [r for r in self.records.values() if not r.parked]
        await self._enforce_limits(now, active)
        slots = _Slots(
            *self._count_active(now, active, len(self.records) - len(active)), self._check_limit(now)
        )
        waiting = [r for r in active if r.handle is None and r.checking is None and not r.fetching]
        for r in sorted(waiting, key=lambda x: x.stored.queue_position):
            if r.handle is not None or r.fetching or r.stored.error or r.checking is not None or r.busy:
                continue
            if r.parked:
                continue  # the announce loop runs it when its announce is due
            if r.verify_pending or r.check_owed:
                if slots.checks < slots.check_limit:
                    slots.checks += 1
                    self._begin_check(r, recheck=r.verify_pending)
            elif not r.stored.paused:
                await self._queue_step(r, now, slots)
        self._flush()

    def _check_limit(self, now: float) -> int:
        """Checks at once: none, then fewer, during a burst of adds (rule 3)."""
        quiet_in = self._last_add + ADD_QUIET_S - now
        if quiet_in <= 0 or self._last_add == self._burst_began:  # no burst: a lone add
            return self.config.check_slots
        if self._burst_end is None:  # a pass when the burst ends starts what it held back
            self._burst_end = asyncio.get_running_loop().call_later(quiet_in, self._burst_ended)
        if now - self._burst_began < ADD_BURST_DEFER_S:
            return 0
        return min(self.config.check_slots, ADD_BURST_CHECK_SLOTS)

    def _burst_ended(self) -> None:
        quiet_in = self._last_add + ADD_QUIET_S - time.monotonic()
        if quiet_in > 0:
            # Adds kept coming: a pass now would start nothing for them (its walk of
            # every record was a few µs of each add of a long burst). Wait for the end
            # again; the adds themselves wake the scheduler once the burst is long.
            self._burst_end = asyncio.get_running_loop().call_later(quiet_in, self._burst_ended)
            return
        self._burst_end = None
        self.wake()

    async def _queue_step(self, r: Record, now: float, slots: _Slots) -> None:
        """Check, start or park one waiting torrent if its kind of slot is free."""
        if r.has_meta and not r.checked and not r.stored.done_date:
            # Not checked in this run: checked now, beside the downloads (it may turn out
            # complete); afterwards it takes a download slot or waits in the queue.
            if slots.checks < slots.check_limit:
                slots.checks += 1
                self._begin_check(r)
        elif r.force:
            await self._start_queued(r)
        elif r.stored.done_date:
            if self.max_active_seeds is None or slots.seeds < self.max_active_seeds:
                slots.seeds += 1
                self._park(r, now)
            else:
                self._unreach(r)  # waits in the queue (rule 7)
        elif slots.downloads < self.max_active_downloads:
            slots.downloads += 1
            await self._start_queued(r)
        else:
            self._unreach(r)

    async def _start_queued(self, r: Record) -> None:
        """Start ``r`` for the queue, unless an operation (stop, remove, move, verify...)
        holds it or it was removed while this pass awaited an earlier start: such an
        operation is between stopping the torrent and deciding what comes next, and a
        start from here would put a second copy in the session or revive a removed one."""
        if r.lock.locked() or self.records.get(r.id) is not r:
            return
        async with r.lock:
            await self._start(r)

    async def _enforce_limits(self, now: float, active: list[Record]) -> None:
        """Send back to the queue the torrents beyond the limits, last in queue order
        first: downloads when the download slots are full (rule 3 lets checks run beside
        the downloads), seeds (dormant or not) beyond the seed limit; stop the seeds that
        reached their ratio or idle limit. ``active``: the records but dormant seeds (which
        matter only with a seed limit)."""
        downloads: list[Record] = []
        seeds: list[Record] = []
        seeds_matter = self.max_active_seeds is not None or self._seed_limits_on()
        for r in self.records.values() if seeds_matter else active:
            h = r.handle
            if r.busy:
                continue
            if h is None:
                if r.parked:
                    seeds.append(r)
                continue
            if r.force or h.state is TorrentState.CHECKING:
                continue
            if r.complete:
                seeds.append(r)
            elif not self._stalled(r, now):
                downloads.append(r)
        extra: list[Record] = []
        if self._seed_limits_on():
            extra = [r for r in seeds if self._seed_limit_reached(r, now)]
        for r in extra:
            r.finished = True
            r.stored.paused = True
            log.info("torrent %d %s finished seeding (ratio or idle limit)", r.id, r.stored.name)
        seeds = [r for r in seeds if not r.finished]
        for group, limit in ((downloads, self.max_active_downloads), (seeds, self.max_active_seeds)):
            if limit is not None and len(group) > limit:
                group.sort(key=lambda x: x.stored.queue_position)
                extra.extend(group[limit:])
        for r in extra:
            async with r.lock:
                await self._stop_handle(r)
            self._mark(r)

    def _seed_limits_on(self) -> bool:
        """Whether any seed ratio or idle limit applies (the session's, or a torrent's own)."""
        lim = self.session_limits
        return bool(lim["seedRatioLimited"] or lim["idle-seeding-limit-enabled"] or self._own_seed_limits)

    def _seed_limit_reached(self, r: Record, now: float) -> bool:
        """Its seed ratio or idle limit (:mod:`torrent.daemon.limits`) is reached."""
        if not r.active_at:
            r.active_at = now  # seeding in this run since now
        up, down = r.totals()
        size = r.wanted_bytes()
        return limit_rules.seed_limit_reached(
            r.stored.limits,
            self.session_limits,
            uploaded=up,
            downloaded=down,
            size=size,
            idle_s=now - r.active_at,
        )

    def _count_active(self, now: float, active: list[Record], dormant: int) -> tuple[int, int, int]:
        """``(downloads, seeds, checks)`` holding a slot now (rules 1-4); ``active``: the
        records but the ``dormant`` seeds."""
        downloads = checks = 0
        seeds = dormant
        for r in active:
            if r.handle is None:
                if r.fetching:
                    downloads += 1
                elif r.parked:
                    seeds += 1
                elif r.checking is not None:
                    checks += 1
                continue
            state = r.handle.state
            if state is TorrentState.CHECKING:
                checks += 1
            elif r.complete:
                seeds += 1
            elif not self._stalled(r, now) and not r.force:
                downloads += 1
        return downloads, seeds, checks

    def _stalled(self, r: Record, now: float) -> bool:
        return r.progress_at > 0 and now - r.progress_at >= self.config.stall_s

    async def _observe(self, r: Record, now: float) -> None:
        """Follow one running torrent: its progress, its completion, its end; a seed
        with no connection goes dormant."""
        h = r.handle
        assert h is not None
        state = h.state
        if state is TorrentState.SEEDING and r.stored.done_date:
            b = h.brief()
            if b.download_rate_bps or b.upload_rate_bps:
                r.active_at = now
            if h.num_peers or not h.announce_settled:
                r.idle_since = 0.0
            elif not r.idle_since:
                r.idle_since = now
            elif now - r.idle_since >= self.config.park_idle_s:
                async with r.lock:  # an operation that comes meanwhile waits for the park
                    await self._stop_handle(r, park=True)
                self._mark(r)
            return
        if state in (TorrentState.STOPPED, TorrentState.ERROR):
            st = h.statistics()
            if st.error:
                r.stored.error = st.error
                log.warning("torrent %d %s stopped: %s", r.id, r.stored.name, st.error)
            await self._stop_handle(r)
            self._mark(r)
            return
        if state is TorrentState.CHECKING:
            return
        r.checked = True
        r.stored.check_owed = False  # stored with the record's next write
        b = h.brief()
        if b.done_bytes != r.progress_bytes:
            r.progress_bytes = b.done_bytes
            r.progress_at = now
        if state in (TorrentState.SEEDING, TorrentState.FINISHED) and not r.stored.done_date:
            r.stored.done_date = int(time.time())
            r.force = False
            r.active_at = now
            self._mark(r)
            self._run_hook(r)

    def _mark(self, r: Record) -> None:
        """Write this record with the scheduler's next batch."""
        self._dirty[r.id] = r.stored

    def _flush(self) -> None:
        if self._dirty:
            changed = [t for i, t in self._dirty.items() if i in self.records]
            self._dirty.clear()
            self.store.update_many(changed)

    def _park(self, r: Record, now: float, *, announce_at: float | None = None) -> None:
        """Make a complete torrent a dormant seed. When it has anyone to announce to, its
        next announce is ``announce_at``, or else the next free slot (announces spread at
        ``announces_per_s``)."""
        r.parked = True
        r.reachable = False  # the session's entry is the dormant seed's now
        r.idle_since = 0.0
        if r.store is not None:
            r.parsed = None  # parsed again from the store when it next runs
        self._known_to_session(r)
        r.next_announce = 0.0
        if not self._announces(r):
            return
        if announce_at is None:
            announce_at = self._dormant_announces.next_slot(now)
        self._schedule_announce(r, announce_at)

    def _announces(self, r: Record) -> bool:
        """It has trackers, or the DHT is on and it is not private."""
        summary = r.stored.summary
        if summary is None:
            return False
        return summary.trackers or (self.settings.dht_enabled and not summary.private)

    def _next_announce_after_run(self, r: Record, now: float) -> float:
        """When a seed that ran (and announced) announces again once dormant."""
        s = self.settings
        interval = s.default_announce_interval_s
        if self.settings.dht_enabled and r.stored.summary is not None and not r.stored.summary.private:
            interval = min(interval, s.dht_announce_interval_s)
        return now + interval

    def _known_to_session(self, r: Record, info_hash: InfoHash | None = None) -> None:
        """An incoming peer naming ``r`` (either of a hybrid's hashes) calls :meth:`_wanted`
        (``info_hash``: its own, when at hand)."""
        alias = r.stored.summary.v2_alias if r.stored.summary is not None else ""
        aliases = (InfoHash(bytes.fromhex(alias)),) if alias else ()
        ih = info_hash or InfoHash(bytes.fromhex(r.info_hash))
        self.session.park(ih, self._wanted, aliases=aliases)

    def _reach(self, r: Record, info_hash: InfoHash | None = None) -> None:
        """``r`` is about to run: an incoming peer starts it (rule 7)."""
        if not r.reachable and not r.parked and r.handle is None and not self._closing:
            r.reachable = True
            self._known_to_session(r, info_hash)

    def _unreach(self, r: Record) -> None:
        if r.reachable:
            r.reachable = False
            self.session.unpark(InfoHash(bytes.fromhex(r.info_hash)))

    def _wanted(self, info_hash: InfoHash) -> None:
        """An incoming peer asks for a dormant seed (run it now) or a torrent about to
        run (run it now if it may: rule 7). The session has forgotten it either way."""
        r = self.by_hash.get(info_hash.hex())
        if r is None or self._closing:
            return
        if r.parked:
            self._launch(r)
        elif r.reachable:
            r.reachable = False
            if self._may_start_early(r):
                self._launch(r, after=r.check_task)

    def _may_start_early(self, r: Record) -> bool:
        """A torrent about to run may start now, for a peer that asks for it (rule 7):
        nothing holds it, and whether it turns out complete or not, its slot is free."""
        if r.busy or r.handle is not None or r.stored.paused or r.stored.error or r.verify_pending:
            return False
        if r.force:
            return True
        active = [x for x in self.records.values() if not x.parked]
        downloads, seeds, _ = self._count_active(time.monotonic(), active, len(self.records) - len(active))
        seed_room = self.max_active_seeds is None or seeds < self.max_active_seeds
        return downloads < self.max_active_downloads and seed_room

    def _launch(self, r: Record, *, after: asyncio.Task[None] | None = None) -> bool:
        """Put the torrent into the session now (it must have its metainfo); ``after``:
        its check under way, which its start-up waits for."""
        if r.handle is not None:
            return True
        r.parked = r.reachable = False
        r.verify_pending = False
        try:
            meta = r.meta
            if meta is None:
                raise TorrentError(r.stored.error or "no metainfo")
            handle = self.session.add_torrent_nowait(
                meta,
                r.stored.download_dir,
                file_priorities=engine_priorities(r.stored),
                seed=True,
                after=after,
            )
        except TorrentError as exc:
            self.session.unpark(InfoHash(bytes.fromhex(r.info_hash)))
            r.stored.error = str(exc)
            self._mark(r)
            log.warning("torrent %d %s cannot start: %s", r.id, r.stored.name, exc)
            return False
        r.handle = handle
        self._apply_rate_limits(r)
        r.started_at = r.started_at or time.time()
        r.progress_at = time.monotonic()
        r.progress_bytes = -1
        r.idle_since = 0.0
        r.folded_up = r.folded_down = 0
        self._spawn(self._wake_when_checked(handle))
        return True

    def _apply_rate_limits(self, r: Record) -> None:
        """The torrent's own ``downloadLimit``/``uploadLimit`` (kB/s) when ``*Limited``,
        under its bandwidth group's buckets or else the session's; under neither when
        ``honorsSessionLimits`` is false."""
        if r.handle is not None:
            down, up = limit_rules.rate_limits_bps(r.stored.limits)
            parents: tuple[RateLimiter | None, RateLimiter | None] = (None, None)
            if r.stored.limits.get("honorsSessionLimits", True):
                group = self.groups.get(r.stored.limits.get("group", ""))
                parents = group.buckets if group is not None else self.session.rate_limiters
            r.handle.set_rate_limits(download_bps=down, upload_bps=up, parents=parents)

    def _begin_check(self, r: Record, *, recheck: bool = False) -> None:
        if not r.stored.paused:
            self._reach(r)  # it runs after the check if its slot is free
        r.verify_pending = r.check_owed = False
        r.checking = 0.0
        r.check_task = self._spawn(self._check(r, recheck=recheck))
        if r.check_task is None:
            r.checking = None

    async def _check(self, r: Record, *, recheck: bool) -> None:
        """Hash (or trust the resume state of) a torrent that is not running."""
        meta = r.meta

        def progress(done: int, total: int) -> None:
            r.checking = done / total if total else 1.0

        result: CheckResult | None = None
        try:
            if meta is None:
                raise TorrentError(r.stored.error or "no metainfo")
            result = await self.session.check_torrent(
                meta,
                r.stored.download_dir,
                file_priorities=engine_priorities(r.stored),
                recheck=recheck,
                progress=progress,
            )
        except TorrentError as exc:
            r.stored.error = str(exc)
            self._unreach(r)
            log.warning("torrent %d %s cannot be checked: %s", r.id, r.stored.name, exc)
        finally:
            r.checking = None
            r.check_task = None
            r.pieces_b64 = None  # the check saved the resume state
        if result is not None:
            r.checked = True
            r.stored.check_owed = False
            r.stored.have_bytes = result.done_bytes
            r.stored.files_done = result.files_done
            if result.complete:
                r.stored.done_date = r.stored.done_date or int(time.time())
                r.force = False
            else:
                r.stored.done_date = 0
        if r.stored.paused and r.id in self.records:
            # A restart does not check a stopped torrent again: what it has is listed
            # from this record, stored now (a kill -9 before the next pass keeps it).
            self.store.update(r.stored)
        else:
            self._mark(r)
        self.wake()

    async def _start(self, r: Record) -> None:
        """Put the torrent into the session (a magnet first fetches its metadata)."""
        r.verify_pending = False
        if not r.has_meta:
            if r.stored.magnet:
                r.fetching = True
                r.fetch_task = self._spawn(self._fetch(r))
            return
        self._launch(r)

    async def _wake_when_checked(self, handle: Torrent) -> None:
        await handle.wait_checked()
        self.wake()

    async def _fetch(self, r: Record) -> None:
        assert r.stored.magnet
        from torrent.proto.magnet import Magnet

        try:
            magnet = Magnet.parse(r.stored.magnet)
            meta = await self.session.fetch_metadata(magnet, peers=magnet.peers)
        except (TorrentError, OSError) as exc:
            r.stored.error = f"metadata: {exc}"
            self.store.update(r.stored)
            return
        finally:
            r.fetching = False
            r.fetch_task = None
        if r.id not in self.records:
            return
        r.parsed = content.slim(meta)
        r.stored.summary = summarize(meta)
        n = len(meta.info.files)
        r.stored.name = meta.info.name
        r.stored.wanted = [True] * n
        r.stored.priorities = [0] * n
        self.store.set_metainfo(r.id, meta.to_bytes())
        self.store.update(r.stored)
        self.wake()

    async def _stop_handle(self, r: Record, *, park: bool = False, keep_check: bool = False) -> None:
        """Take a running torrent out of the session and fold its totals into the record
        (a magnet link's metadata fetch and, unless ``keep_check``, a check are cancelled;
        a dormant seed is no longer dormant). ``park``: a running seed goes dormant
        instead (no ``stopped`` announce; its next announce is due after the usual
        interval)."""
        if r.fetch_task is not None:
            r.fetch_task.cancel()
            r.fetch_task = None
            r.fetching = False
        if r.check_task is not None and not keep_check:
            r.check_task.cancel()
            r.check_task = None
            r.checking = None
        if r.parked and not park:
            r.parked = False
            self.session.unpark(InfoHash(bytes.fromhex(r.info_hash)))
        self._unreach(r)
        h = r.handle
        if h is None:
            return
        up, down = r.totals()
        was_complete = h.state in (TorrentState.SEEDING, TorrentState.FINISHED)
        with contextlib.suppress(TorrentError):
            await self.session.remove_torrent(h.info_hash, announce=not park)
        r.stored.uploaded, r.stored.downloaded = up, down
        if was_complete and not r.stored.done_date:
            r.stored.done_date = int(time.time())  # completed since the last scheduler pass
        st = h.statistics()
        if h.state is not TorrentState.CHECKING or st.checked_fraction >= 1.0:
            r.stored.have_bytes = st.done_bytes
            r.stored.files_done = h.file_progress()
        self.session_up += st.uploaded_bytes
        self.session_down += st.downloaded_bytes
        r.folded_up, r.folded_down = st.uploaded_bytes, st.downloaded_bytes
        r.handle = None
        r.pieces_b64 = None  # the run saved the resume state
        r.fetching = False
        if park and r.stored.done_date and not r.stored.paused and not self._closing:
            now = time.monotonic()
            self._park(r, now, announce_at=self._next_announce_after_run(r, now))

    def _save_stats(self) -> None:
        rows = []
        for r in self.records.values():
            if r.handle is None:
                continue
            up, down = r.totals()
            st = r.handle.brief()
            r.stored.uploaded, r.stored.downloaded = up, down
            r.folded_up, r.folded_down = st.uploaded_bytes, st.downloaded_bytes
            rows.append((r.id, up, down))
        if rows:
            self.store.save_stats(rows)

    def _run_hook(self, r: Record) -> None:
        cmd = self.config.on_complete
        if not cmd:
            return
        env = dict(os.environ)
        env.update(
            TR_APP_VERSION="pytorrent",
            TR_TIME_LOCALTIME=time.ctime(),
            TR_TORRENT_DIR=r.stored.download_dir,
            TR_TORRENT_HASH=r.info_hash,
            TR_TORRENT_ID=str(r.id),
            TR_TORRENT_NAME=r.stored.name,
            TR_TORRENT_LABELS=",".join(r.stored.labels),
        )
        self._spawn(_run_command(cmd, env))

    # ------------------------------------------------------------------ operations

    def lookup(self, ids: Any) -> list[Record]:
        """Transmission's ``ids``: absent (all), a number, a hash, a list of both, ``recently-active``."""
        if ids is None:
            return list(self.records.values())  # in id order (see ``_load``)
        if ids == "recently-active":
            cutoff = time.time() - 60
            return [r for r in self.records.values() if r.handle is not None or r.stored.added_date >= cutoff]
        items = ids if isinstance(ids, list) else [ids]
        out: list[Record] = []
        for item in items:
            r: Record | None = None
            if isinstance(item, int) and not isinstance(item, bool):
                r = self.records.get(item)
            elif isinstance(item, str):
                r = self.by_hash.get(item.lower())
                if r is None and item.isdigit():
                    r = self.records.get(int(item))
            if r is not None and r not in out:
                out.append(r)
        return out

    async def start(self, records: Iterable[Record], *, now: bool = False) -> None:
        changed = []
        for r in records:
            r.stored.paused = False
            r.stored.error = ""
            r.force = now
            r.finished = False
            r.active_at = 0.0
            changed.append(r.stored)
        self.store.update_many(changed)
        await self.schedule()

    async def stop(self, records: Iterable[Record]) -> None:
        for r in records:
            async with r.lock:
                r.stored.paused = True
                r.force = False
                r.verify_pending = False
                # A check under way goes on (it does not run the torrent): a torrent
                # stopped right after it was added still shows what it has.
                dormant = r.parked
                await self._stop_handle(r, keep_check=True)
                if r.has_meta and not r.checked and not r.stored.done_date and r.check_task is None:
                    r.check_owed = r.stored.check_owed = True
                if dormant:
                    self._announce_stopped(r)
                self.store.update(r.stored)
        self.wake()

    def _announce_stopped(self, r: Record) -> None:
        """A dormant seed stops or goes: its trackers still list it (it went dormant
        without a ``stopped``), so it says ``stopped`` now, in the background."""
        meta = r.meta if r.stored.summary is not None and r.stored.summary.trackers else None
        if meta is not None:
            if r.store is not None:
                r.parsed = None  # not running: parsed again when needed
            self._spawn(self._send_stopped(meta, r.folded_up, r.folded_down))

    async def _send_stopped(self, meta: Metainfo, uploaded: int, downloaded: int) -> None:
        with contextlib.suppress(TorrentError):  # the session closed meanwhile
            await self.session.announce_stopped(meta, uploaded=uploaded, downloaded=downloaded)

    async def verify(self, records: Iterable[Record]) -> None:
        """Recheck every piece on disk (the resume state forgotten first, so a crash
        during the check cannot leave it trusted); afterwards the torrent goes back to
        what the queue says (a stopped one stays stopped)."""
        for r in records:
            if not r.has_meta:
                continue
            async with r.lock:
                r.verify_pending = True
                await self._stop_handle(r)
                await asyncio.to_thread(content.forget_resume, r.stored.download_dir, r.info_hash)
                r.stored.error = ""
        await self.schedule()

    def reannounce(self, records: Iterable[Record]) -> None:
        """Announce soon; a dormant seed runs for it."""
        for r in records:
            if r.handle is not None:
                r.handle.reannounce()
            elif r.parked:
                self._launch(r)

    async def remove(self, records: Iterable[Record], *, delete_data: bool = False) -> None:
        for r in list(records):
            async with r.lock:
                dormant = r.parked
                await self._stop_handle(r)
                if dormant:
                    self._announce_stopped(r)
                meta = r.meta if delete_data else None  # read before the record is deleted
                self.records.pop(r.id, None)
                self.by_hash.pop(r.info_hash, None)
                self._own_seed_limits.discard(r.id)
                self.store.delete(r.id)
                self.removed_ids.append(r.id)
                del self.removed_ids[:-1000]
                if delete_data:
                    await asyncio.to_thread(content.delete_data, meta, r.stored.download_dir, r.info_hash)
                else:
                    await asyncio.to_thread(content.forget_resume, r.stored.download_dir, r.info_hash)
                log.info(
                    "removed torrent %d %s%s", r.id, r.stored.name, " and its data" if delete_data else ""
                )
        self._renumber_queue()
        self.wake()

    async def set_location(self, records: Iterable[Record], location: str, *, move: bool) -> None:
        """Point the torrents at ``location``, moving their data there when ``move``.

        Raises:
            DaemonError: a move failed (the torrent keeps its old location and an error).
        """
        location = _absolute(location)
        failures: list[str] = []
        for r in records:
            async with r.lock:
                running = r.handle is not None
                await self._stop_handle(r)
                try:
                    if move and r.meta is not None:
                        await asyncio.to_thread(
                            content.move_data, r.meta, r.stored.download_dir, r.info_hash, location
                        )
                    r.stored.download_dir = location
                    r.stored.error = ""
                    r.pieces_b64 = None  # the resume state is the new location's
                except OSError as exc:
                    why = f"cannot move to {location}: {exc.strerror or exc}"
                    r.stored.error = why
                    failures.append(why)
                self.store.update(r.stored)
                if running and not r.stored.error:
                    await self._start(r)
        self.wake()
        if failures:
            raise DaemonError(failures[0])

    async def set_files(
        self,
        records: Iterable[Record],
        *,
        wanted: Iterable[int] | None = None,
        unwanted: Iterable[int] | None = None,
        priorities: Mapping[int, Iterable[int]] | None = None,
    ) -> None:
        """Change which files are wanted and their priorities; a running torrent restarts
        with the new selection (its verified pieces stay verified: resume state)."""
        for r in records:
            n = len(r.stored.wanted)
            before = (list(r.stored.wanted), list(r.stored.priorities))
            for flag, indices in ((True, wanted), (False, unwanted)):
                if indices is None:
                    continue
                chosen = list(indices) or list(range(n))  # an empty list means every file
                for i in chosen:
                    if 0 <= i < n:
                        r.stored.wanted[i] = flag
            for prio, indices in (priorities or {}).items():
                chosen = list(indices) or list(range(n))
                for i in chosen:
                    if 0 <= i < n:
                        r.stored.priorities[i] = prio
            if (r.stored.wanted, r.stored.priorities) == before:
                continue
            async with r.lock:
                running = r.handle is not None
                await self._stop_handle(r)
                if any(w and not wb for w, wb in zip(r.stored.wanted, before[0], strict=True)):
                    r.stored.done_date = 0  # a newly wanted file: not complete any more
                self.store.update(r.stored)
                if running:
                    await self._start(r)
        self.wake()

    async def rename_path(self, r: Record, path: str, name: str) -> None:
        """Rename the torrent's top file or directory (``path`` is its name), or a file or
        directory inside it (``top/dir/file``), to ``name``, on disk and in its listing,
        as Transmission's ``torrent-rename-path``; the info hash stays. A running torrent
        restarts (its resume state stays valid: a rename keeps sizes and mtimes).

        Raises:
            DaemonError: a bad name, no such path, the target exists, or the rename failed.
        """
        if not name or "/" in name or "\0" in name or name in (".", ".."):
            raise DaemonError(f"invalid name {name!r}")
        meta = r.meta
        if meta is None:
            raise DaemonError("the torrent's metadata is not known yet")
        async with r.lock:
            try:
                renames, old, new = content.plan_rename(meta.info, r.stored.renames, path, name)
            except ValueError as exc:
                raise DaemonError(str(exc)) from None
            running = r.handle is not None
            await self._stop_handle(r)
            try:
                await asyncio.to_thread(
                    content.rename_on_disk, os.path.join(r.stored.download_dir, *old), new
                )
            except OSError as exc:
                if running:
                    await self._start(r)
                raise DaemonError(f"cannot rename {path}: {exc.strerror or exc}") from None
            r.stored.renames = renames
            r.parsed = content.renamed(meta, renames)
            r.stored.name = r.parsed.info.name
            self.store.update(r.stored)
            if running:
                await self._start(r)
        self.wake()

    def set_labels(self, records: Iterable[Record], labels: list[str]) -> None:
        stored = [r.stored for r in records]
        for t in stored:
            t.labels = list(labels)
        self.store.update_many(stored)

    def set_limits(self, records: Iterable[Record], limits: dict[str, Any]) -> None:
        """Per-torrent limits as given (Transmission's names; see the module docstring);
        a ``group`` not known yet is made with no limits of its own, as Transmission does."""
        chosen = list(records)
        group = limits.get("group")
        if group and group not in self.groups:
            self.set_group({"name": group})
        for r in chosen:
            r.stored.limits.update(limits)
            self._note_seed_limits(r)
            self._apply_rate_limits(r)
        self.store.update_many([r.stored for r in chosen])
        self.wake()  # a seed limit may be reached now

    def set_group(self, values: dict[str, Any]) -> None:
        """``group-set``: make or change the bandwidth group ``values["name"]`` (the keys
        not given keep their values) and store every group.

        Raises:
            DaemonError: no name, or a value of the wrong type (nothing is changed).
        """
        name = values.get("name")
        if not isinstance(name, str) or not name:
            raise DaemonError("'name' must be a non-empty string")
        self._set_group(name, values)
        self.store.set_settings({GROUPS_SETTING: {g.name: g.values for g in self.groups.values()}})
        for r in self.records.values():
            if r.handle is not None and r.stored.limits.get("group") == name:
                self._apply_rate_limits(r)

    def _set_group(self, name: str, values: dict[str, Any]) -> None:
        old = self.groups.get(name)
        merged = dict(old.values) if old is not None else {k: d for k, (_, d) in GROUP_KEYS.items()}
        for key in GROUP_KEYS:
            if key in values:
                merged[key] = _group_value(key, values[key])
        session_down, session_up = self.session.rate_limiters
        honors = merged["honorsSessionLimits"]
        if old is None:
            old = BandwidthGroup(name, (RateLimiter(0), RateLimiter(0)), merged)
            self.groups[name] = old
        old.values = merged
        down, up = old.buckets
        down.parent, up.parent = (session_down, session_up) if honors else (None, None)
        down.set_rate(merged["speed-limit-down"] * 1000 if merged["speed-limit-down-enabled"] else 0)
        up.set_rate(merged["speed-limit-up"] * 1000 if merged["speed-limit-up-enabled"] else 0)

    def queue_move(self, records: Iterable[Record], where: str) -> None:
        """``top``, ``up``, ``down`` or ``bottom``, as Transmission's queue-move-* do."""
        order = sorted(self.records.values(), key=lambda x: x.stored.queue_position)
        chosen = [r for r in order if r in list(records)]
        if where == "top":
            order = chosen + [r for r in order if r not in chosen]
        elif where == "bottom":
            order = [r for r in order if r not in chosen] + chosen
        elif where == "up":
            for r in chosen:
                i = order.index(r)
                if i > 0 and order[i - 1] not in chosen:
                    order[i - 1], order[i] = order[i], order[i - 1]
        elif where == "down":
            for r in reversed(chosen):
                i = order.index(r)
                if i < len(order) - 1 and order[i + 1] not in chosen:
                    order[i + 1], order[i] = order[i], order[i + 1]
        self._renumber_queue(order)
        self.wake()

    def set_queue_position(self, r: Record, position: int) -> None:
        order = sorted(self.records.values(), key=lambda x: x.stored.queue_position)
        order.remove(r)
        order.insert(max(0, min(position, len(order))), r)
        self._renumber_queue(order)
        self.wake()

    def _renumber_queue(self, order: list[Record] | None = None) -> None:
        if order is None:
            order = sorted(self.records.values(), key=lambda x: x.stored.queue_position)
        changed = []
        for i, r in enumerate(order):
            if r.stored.queue_position != i:
                r.stored.queue_position = i
                changed.append(r.stored)
        if changed:
            self.store.update_many(changed)

    def request_close(self) -> None:
        """Ask the front end to shut the daemon down (``session-close``)."""
        self.close_requested.set()

    def effective_rate_limits(self) -> tuple[int, int]:
        """The session's ``(download, upload)`` limits in bytes/s now (0: none).

        With the alternative speed limits on, they apply in both directions whatever
        the normal limits' switches say (as Transmission does).
        """
        lim = self.session_limits
        if lim["alt-speed-enabled"]:
            return lim["alt-speed-down"] * 1000, lim["alt-speed-up"] * 1000
        return (
            lim["speed-limit-down"] * 1000 if lim["speed-limit-down-enabled"] else 0,
            lim["speed-limit-up"] * 1000 if lim["speed-limit-up-enabled"] else 0,
        )

    async def update_settings(self, values: dict[str, Any], *, persist: bool = True) -> None:
        """``session-set``, and a reload of the settings file: :meth:`apply_settings`, then
        the network keys (:mod:`torrent.daemon.network`) on the running session.

        Args:
            persist: store what changed (the settings file's values are not stored: the
                file is read again at each start).

        Raises:
            ValueError: a network value of the wrong type or out of range (nothing applied).
            DaemonError: any other value refused (nothing applied), or the network change
                failed (what applied before the failure stays applied, and is stored).
        """
        changes = network.parse(values)  # checked before anything applies, as apply_settings does
        self.apply_settings(values, persist=persist)
        done: dict[str, Any] = {}
        try:
            await network.apply(self.session, changes, done)
        except OSError as exc:
            raise DaemonError(f"network settings: {exc.strerror or exc}") from None
        finally:
            self.settings = self.session.settings  # the DHT switch decides dormant seeds' announces
            if done and persist:
                self.store.set_settings(done)

    def apply_settings(self, values: dict[str, Any], *, persist: bool = True) -> None:
        """Apply ``session-set`` arguments (Transmission's names); unknown keys are ignored.

        Raises:
            DaemonError: a value of the wrong type or out of range (nothing is applied).
        """
        changed = {key: _setting(key, values[key]) for key in SETTING_KEYS if key in values}
        if any(k in ALT_SPEED_TIME_KEYS and self.session_limits[k] != v for k, v in changed.items()):
            self._alt_speed.changed()  # a new schedule applies at once, then at its boundaries
        for key, value in changed.items():
            if key in self.session_limits:
                self.session_limits[key] = value
            elif key == "download-dir":
                self.download_dir = os.path.abspath(value)
            elif key == "download-queue-size":
                self.max_active_downloads = value
            elif key == "seed-queue-size":
                if self.max_active_seeds is not None:
                    self.max_active_seeds = value
            elif key == "seed-queue-enabled":
                self.max_active_seeds = (
                    int(values.get("seed-queue-size", self.max_active_seeds or 10)) if value else None
                )
            elif key == "queue-stalled-minutes":
                self.stall_s = value * 60.0
        self._apply_session_rates()
        if persist and changed:
            self.store.set_settings(changed)
        self.wake()


#: ``session-set`` keys the daemon applies, with their JSON type.
SETTING_KEYS: dict[str, type] = {
    "speed-limit-down": int,
    "speed-limit-down-enabled": bool,
    "speed-limit-up": int,
    "speed-limit-up-enabled": bool,
    "alt-speed-down": int,
    "alt-speed-up": int,
    "alt-speed-enabled": bool,
    "alt-speed-time-enabled": bool,
    "alt-speed-time-begin": int,
    "alt-speed-time-end": int,
    "alt-speed-time-day": int,
    "download-dir": str,
    "download-queue-size": int,
    "seed-queue-size": int,
    "seed-queue-enabled": bool,
    "queue-stalled-minutes": int,
    "seedRatioLimit": float,
    "seedRatioLimited": bool,
    "idle-seeding-limit": int,
    "idle-seeding-limit-enabled": bool,
}


#: The schedule's keys, and the largest value of each number.
ALT_SPEED_TIME_KEYS = (
    "alt-speed-time-enabled",
    "alt-speed-time-begin",
    "alt-speed-time-end",
    "alt-speed-time-day",
)
_SETTING_MAXIMA = {
    "alt-speed-time-begin": limit_rules.MINUTES_PER_DAY - 1,
    "alt-speed-time-end": limit_rules.MINUTES_PER_DAY - 1,
    "alt-speed-time-day": 127,
}


def _kbps(rate_bps: int, default: int) -> int:
    """A limit in bytes/s as Transmission's whole kB/s (at least 1), or ``default`` for none."""
    return max(1, round(rate_bps / 1000)) if rate_bps > 0 else default


def _setting(key: str, value: Any) -> Any:
    """A ``session-set`` value checked against its JSON type.

    Raises:
        DaemonError: a value of the wrong type or out of range.
    """
    kind = SETTING_KEYS[key]
    if kind is bool and not isinstance(value, bool):
        raise DaemonError(f"'{key}' must be true or false")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise DaemonError(f"'{key}' must be a non-negative integer")
    if kind is int and value > _SETTING_MAXIMA.get(key, value):
        raise DaemonError(f"'{key}' must be at most {_SETTING_MAXIMA[key]}")
    if kind is str and (not isinstance(value, str) or not value):
        raise DaemonError(f"'{key}' must be a non-empty string")
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise DaemonError(f"'{key}' must be a non-negative number")
        return float(value)
    return value


def _group_value(key: str, value: Any) -> Any:
    """A ``group-set`` value checked against its JSON type.

    Raises:
        DaemonError: a value of the wrong type or out of range.
    """
    if GROUP_KEYS[key][0] is bool:
        if not isinstance(value, bool):
            raise DaemonError(f"'{key}' must be true or false")
    elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DaemonError(f"'{key}' must be a non-negative integer")
    return value


def _absolute(path: str) -> str:
    return os.path.abspath(path)


async def _run_command(cmd: str, env: dict[str, str]) -> None:
    try:
        proc = await asyncio.create_subprocess_shell(cmd, env=env)
        code = await proc.wait()
    except OSError as exc:
        log.warning("completion command %r failed to start: %s", cmd, exc)
        return
    if code:
        log.warning("completion command %r exited with %d", cmd, code)
