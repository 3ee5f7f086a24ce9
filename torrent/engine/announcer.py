"""The announce loop of one torrent (BEP 3 events, BEP 12 tiers), shared by the swarm and
the magnet metadata fetch.

* The first announce carries ``started``; once one succeeded, the next carry no event
  until :meth:`Announcer.completed` queues ``completed`` (BEP 3). :meth:`Announcer.stop`
  sends ``stopped`` under ``stopped_announce_timeout_s``, and only when a ``started``
  went out.
* After a success the loop waits the tracker's ``interval`` (at least its
  ``min interval`` and our ``min_announce_interval_s``; capped by ``max_interval_s``,
  e.g. a metadata fetch that wants peers soon). After a failure it retries from
  ``announce_retry_s``, doubling up to ``announce_retry_max_s``.
* Woken early (:meth:`Announcer.wake`), it still keeps the minimum interval.
* A torrent named by several hashes (a BEP 52 hybrid: its v1 hash and its v2 hash
  truncated to 20 bytes, as libtorrent announces it) gets one announce per hash in each
  round, sent together, each with its own event: a peer that announced under either
  hash finds us, and the peers of every answer go to the same torrent. A round counts
  as a success when one of them is answered; a hash the trackers refuse (one that lists
  only the other) is logged, not reported as the torrent's error.

Peers from every response go to ``on_peers``; warnings and errors to ``on_message``;
how the last announce went to :meth:`Announcer.report`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence

from torrent.config import Settings
from torrent.engine.host import SwarmContext
from torrent.engine.peer import PeerAddr
from torrent.engine.status import AnnounceReport
from torrent.engine.tracker_client import (
    AnnounceEvent,
    AnnounceOutcome,
    AnnounceRequest,
    AnnounceResponse,
    TrackerClient,
    TrackerTiers,
    make_tracker,
)
from torrent.errors import TrackerError
from torrent.types import InfoHash

__all__ = ["MAX_TRACKER_INTERVAL_S", "Announcer", "announce_delay"]

log = logging.getLogger(__name__)


def _clients(urls: Sequence[str], ctx: SwarmContext, skipped: list[str]) -> list[TrackerClient]:
    """Clients for the URLs of one tier; an unusable URL (malformed, unknown scheme, no
    port) is skipped, as a tracker that never answers would be, and why goes to
    ``skipped``."""
    out = []
    for url in urls:
        try:
            out.append(make_tracker(url, ctx.http, timeout_s=ctx.settings.tracker_timeout_s))
        except TrackerError as exc:
            log.debug("skipping tracker %r: %s", url, exc)
            skipped.append(f"skipped tracker {exc.reason}")
    return out


#: The longest wait between announces whatever the tracker says (a hostile or broken
#: tracker's ``interval`` of 10**18 must not silence it for good).
MAX_TRACKER_INTERVAL_S = 4 * 3600.0


def announce_delay(
    resp: AnnounceResponse, s: Settings, max_interval_s: float | None = None
) -> tuple[float, float]:
    """``(delay, min_gap)`` after a successful announce: the tracker's ``interval`` (its
    default when zero or missing), at least its ``min interval`` and our
    ``min_announce_interval_s`` (a negative value counts as none), at most
    ``max_interval_s`` and :data:`MAX_TRACKER_INTERVAL_S`."""
    min_gap = min(max(resp.min_interval or 0, s.min_announce_interval_s), MAX_TRACKER_INTERVAL_S)
    interval = float(resp.interval) if resp.interval and resp.interval > 0 else s.default_announce_interval_s
    interval = min(interval, MAX_TRACKER_INTERVAL_S)
    if max_interval_s is not None:
        interval = min(interval, max_interval_s)
    return max(interval, min_gap), min_gap


class Announcer:
    """Announces one torrent to its trackers.

    Args:
        tiers: announce URLs, one list per BEP 12 tier (unsupported schemes are skipped).
        ctx: the session's HTTP client and settings.
        request: builds the request for an event (the owner knows ``left`` and totals).
        on_peers: addresses from a response.
        on_message: ``(is_error, text)`` for a tracker warning or failure.
        max_interval_s: re-announce at least this often.
        info_hashes: every hash the torrent is announced under (the request's own
            ``info_hash`` is replaced by each in turn); empty: the request's alone.
    """

    def __init__(
        self,
        tiers: Sequence[Sequence[str]],
        ctx: SwarmContext,
        *,
        request: Callable[[AnnounceEvent], AnnounceRequest],
        on_peers: Callable[[list[PeerAddr]], None],
        on_message: Callable[[bool, str], None] | None = None,
        max_interval_s: float | None = None,
        info_hashes: Sequence[InfoHash] = (),
    ) -> None:
        s = ctx.settings
        self._settings = s
        self._clock = ctx.clock
        #: Why unusable announce URLs were left out (reported once when ``run`` starts).
        self.skipped: list[str] = []
        self._trackers = TrackerTiers([_clients(tier, ctx, self.skipped) for tier in tiers])
        self._request = request
        self._on_peers = on_peers
        self._on_message = on_message
        self._max_interval_s = max_interval_s
        self._wake = asyncio.Event()
        # The event the next announce of each hash carries (None: the request's own hash).
        self._events: dict[InfoHash | None, AnnounceEvent] = dict.fromkeys(
            tuple(dict.fromkeys(info_hashes)) or (None,), AnnounceEvent.STARTED
        )
        #: The last tracker warning or failure ("" after a clean response).
        self.message = ""
        #: The last announce: (report with age 0 and next 0, when, next due) on the clock.
        self._last: tuple[AnnounceReport, float, float] | None = None

    def __bool__(self) -> bool:
        return bool(self._trackers)

    @property
    def event(self) -> AnnounceEvent:
        """The event the next announce carries: ``started`` until one hash's announce
        was answered (a tracker may list only one of a hybrid's hashes)."""
        return next(
            (e for e in self._events.values() if e is not AnnounceEvent.STARTED), AnnounceEvent.STARTED
        )

    @event.setter
    def event(self, event: AnnounceEvent) -> None:
        for h in self._events:
            self._events[h] = event

    def wake(self) -> None:
        """Announce soon (still keeping the minimum interval)."""
        self._wake.set()

    def completed(self, *, downloaded: bool) -> None:
        """The download completed: announce ``completed`` (BEP 3) when we downloaded
        anything this run (a torrent complete from the start announced none)."""
        self.event = AnnounceEvent.COMPLETED if downloaded else AnnounceEvent.NONE
        self._wake.set()

    def _report(self, is_error: bool, text: str) -> None:
        self.message = text
        if self._on_message is not None:
            self._on_message(is_error, text)

    async def run(self) -> None:
        """Announce until cancelled (returns at once without trackers)."""
        for reason in self.skipped:
            self._report(True, reason)
        if not self._trackers:
            return
        s = self._settings
        retry = s.announce_retry_s
        min_gap = s.min_announce_interval_s
        while True:
            # Cleared before the announce, not after: a wake() while it is in flight (the
            # listen port changed, the download completed) still brings the next one forward.
            self._wake.clear()
            answers, failures = await self._announce_round()
            if not answers:
                reason = failures[0].reason
                self._report(True, reason)
                delay = retry
                retry = min(retry * 2, s.announce_retry_max_s)
                self._remember(AnnounceReport("", False, reason, 0, None, None, None, 0.0, 0.0), delay)
            else:
                retry = s.announce_retry_s
                delay, min_gap = self._on_answers(answers)
            await self._sleep(delay, min_gap)

    async def _announce_round(
        self,
    ) -> tuple[list[tuple[InfoHash | None, AnnounceOutcome]], list[TrackerError]]:
        """One announce per hash, together; the answers (in hash order) and the failures."""
        hashes = list(self._events)
        if len(hashes) == 1:
            results = [await self._announce_one(hashes[0])]
        else:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._announce_one(h)) for h in hashes]
            results = [t.result() for t in tasks]
        answers = [(h, r) for h, r in zip(hashes, results, strict=True) if not isinstance(r, TrackerError)]
        failures = [r for r in results if isinstance(r, TrackerError)]
        if answers and failures:
            log.debug("announce: %s", "; ".join(f.reason for f in failures))
        return answers, failures

    async def _announce_one(self, h: InfoHash | None) -> AnnounceOutcome | TrackerError:
        event = self._events[h]
        req = self._request(event)
        if h is not None:
            req = dataclasses.replace(req, info_hash=h)
        try:
            outcome = await self._trackers.announce(req)
        except TrackerError as exc:
            return exc
        if self._events[h] is event:
            self._events[h] = AnnounceEvent.NONE
        return outcome

    def _on_answers(self, answers: list[tuple[InfoHash | None, AnnounceOutcome]]) -> tuple[float, float]:
        """Peers and messages of a round's answers; returns ``(delay, min_gap)``."""
        s = self._settings
        first = answers[0][1]
        warning = next((o.response.warning_message for _, o in answers if o.response.warning_message), "")
        if warning:
            self._report(False, warning)
        else:
            self.message = ""
        peers = list(dict.fromkeys((p.ip, p.port) for _, o in answers for p in o.response.peers if p.port))
        self._on_peers(peers)
        gaps = [announce_delay(o.response, s, self._max_interval_s) for _, o in answers]
        min_gap = max(g for _, g in gaps)
        delay = max(min(d for d, _ in gaps), min_gap)
        resp = first.response
        report = AnnounceReport(
            first.url,
            True,
            warning,
            len(peers),
            resp.complete,
            resp.incomplete,
            resp.downloaded,
            0.0,
            0.0,
        )
        self._remember(report, delay)
        return delay, min_gap

    def _remember(self, report: AnnounceReport, delay: float) -> None:
        now = self._clock.monotonic()
        self._last = (report, now, now + delay)

    def report(self) -> AnnounceReport | None:
        """How the last announce went (None before the first one ended)."""
        if self._last is None:
            return None
        report, at, due = self._last
        now = self._clock.monotonic()
        return dataclasses.replace(report, age_s=now - at, next_in_s=max(0.0, due - now))

    async def _sleep(self, delay: float, min_gap: float) -> None:
        try:
            async with asyncio.timeout(delay):
                await self._wake.wait()
            # Woken early (completed, or we need peers): still respect the min interval.
            await asyncio.sleep(min_gap)
        except TimeoutError:
            pass

    async def stop(self) -> None:
        """Send ``stopped`` for each hash a ``started`` went out for, under a short timeout."""
        announced = [h for h, e in self._events.items() if e is not AnnounceEvent.STARTED]
        if not self._trackers or not announced:
            return  # never announced: nothing to stop
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settings.stopped_announce_timeout_s), asyncio.TaskGroup() as tg:
                for h in announced:
                    tg.create_task(self._stopped(h))

    async def _stopped(self, h: InfoHash | None) -> None:
        req = self._request(AnnounceEvent.STOPPED)
        with contextlib.suppress(TrackerError):
            await self._trackers.announce(req if h is None else dataclasses.replace(req, info_hash=h))

    async def aclose(self) -> None:
        await self._trackers.close()
