"""``torrent-get``'s fields: what each Transmission field reads of a torrent, and the
JSON of a whole listing built in one go.

A listing of thousands of torrents is mostly torrents that do not run (dormant seeds,
stopped or queued torrents): their fields come from the stored record alone. So each
field has up to two getters:

* ``view``: reads a :class:`View` of the torrent, which takes the running torrent's
  figures once (``Torrent.brief()``, its statistics only when a field needs them);
* ``idle``: reads the :class:`~torrent.daemon.service.Record` of a torrent that does not
  run, with no view built (None: such a field needs the view anyway).

:class:`Listing` compiles a field list once per request: the getters in order and a
row template (``%d`` for an integer, ``%r`` for a float, JSON text for the rest), so a
row is one tuple and one ``%`` and no per-torrent dictionary is built before encoding.
``tests/unit/test_daemon_fields.py`` checks that both getters agree and that the text is
the JSON that ``json.dumps`` would write.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from torrent.daemon.service import Record, Status
from torrent.daemon.store import Summary
from torrent.engine.status import AnnounceReport, TorrentStats

if TYPE_CHECKING:
    from torrent.proto.metainfo import Metainfo

__all__ = ["FIELDS", "Field", "Listing", "View"]


class View:
    """What the field getters read of one record, computed once per torrent."""

    __slots__ = ("_size_when_done", "_stats", "_totals", "b", "now", "r", "status")

    def __init__(self, r: Record, now: float) -> None:
        self.r = r
        self.now = now
        # The brief is cheap; the full statistics only for the fields that need them.
        self.b = r.handle.brief() if r.handle is not None else None
        self._stats: TorrentStats | None = None
        self.status = r.status()
        self._totals: tuple[int, int] | None = None
        self._size_when_done = -1

    @property
    def stats(self) -> TorrentStats | None:
        if self._stats is None and self.r.handle is not None:
            self._stats = self.r.handle.statistics()
        return self._stats

    @property
    def totals(self) -> tuple[int, int]:
        if self._totals is None:
            self._totals = self.r.totals(self.b)
        return self._totals

    @property
    def meta(self) -> Metainfo | None:
        """The metainfo, parsed if it was not (only the fields that need more than the
        record's summary read it)."""
        return self.r.meta

    @property
    def size_when_done(self) -> int:
        if self._size_when_done < 0:
            self._size_when_done = self._wanted_bytes()
        return self._size_when_done

    def _wanted_bytes(self) -> int:
        if self.b is not None:
            return self.b.wanted_bytes
        return self.r.wanted_bytes()

    @property
    def done(self) -> int:
        if self.b is not None:
            return self.b.done_bytes
        return (
            self.size_when_done
            if self.r.stored.done_date
            else min(self.r.stored.have_bytes, self.size_when_done)
        )

    @property
    def left(self) -> int:
        return self.size_when_done - self.done

    def percent(self) -> float:
        if self.b is None and self.r.stored.done_date:
            return 1.0  # not running and complete: the common case at scale
        size = self.size_when_done
        return self.done / size if size else (1.0 if self.r.stored.done_date else 0.0)

    def eta(self) -> int:
        if self.b is None and self.r.stored.done_date:
            return -1  # nothing left
        left = self.left
        if left == 0:
            return -1
        if self.b is None or self.b.download_rate_bps <= 0:
            return -2
        return int(left / self.b.download_rate_bps)

    def error(self) -> int:
        if self.r.stored.error:
            return 3
        if self.b is not None and self.b.tracker_message:
            return 1
        return 0

    def error_string(self) -> str:
        if self.r.stored.error:
            return self.r.stored.error
        return self.b.tracker_message if self.b is not None else ""

    def ratio(self) -> float:
        up, down = self.totals
        base = down or self.done
        if base == 0:
            return -1.0
        return up / base

    def files(self) -> list[dict[str, Any]]:
        if self.meta is None:
            return []
        info = self.meta.info
        if self.r.handle is not None:
            progress = self.r.handle.file_progress()
        elif self.r.stored.done_date:
            progress = [f.length if w else 0 for f, w in zip(info.files, self.r.stored.wanted, strict=False)]
        elif len(self.r.stored.files_done) == len(info.files):
            progress = list(self.r.stored.files_done)
        else:
            progress = [0] * len(info.files)
        return [
            {
                "name": f"{info.name}/{f.path_str}" if info.multi_file else f.path_str,
                "length": f.length,
                "bytesCompleted": done,
            }
            for f, done in zip(info.files, progress, strict=True)
        ]

    def file_stats(self) -> list[dict[str, Any]]:
        files = self.files()
        return [
            {"bytesCompleted": f["bytesCompleted"], "wanted": w, "priority": p}
            for f, w, p in zip(files, self.r.stored.wanted, self.r.stored.priorities, strict=False)
        ]

    def peers(self) -> list[dict[str, Any]]:
        if self.r.handle is None:
            return []
        return [
            {
                "address": p.host,
                "port": p.port,
                "clientName": p.client,
                "clientIsChoked": p.peer_choking,
                "clientIsInterested": p.am_interested,
                "peerIsChoked": p.am_choking,
                "peerIsInterested": p.peer_interested,
                "isDownloadingFrom": p.down_rate_bps > 0,
                "isUploadingTo": p.up_rate_bps > 0,
                "isEncrypted": p.encrypted,
                "isIncoming": p.incoming,
                "isUTP": p.utp,
                "progress": p.progress,
                "rateToClient": int(p.down_rate_bps),
                "rateToPeer": int(p.up_rate_bps),
                "flagStr": ("D" if p.down_rate_bps > 0 else "")
                + ("U" if p.up_rate_bps > 0 else "")
                + ("E" if p.encrypted else "")
                + ("I" if p.incoming else "")
                + ("T" if p.utp else ""),
            }
            for p in self.r.handle.peers()
        ]

    def trackers(self) -> list[dict[str, Any]]:
        if self.meta is None:
            return []
        out, n = [], 0
        for tier, urls in enumerate(self.meta.announce_list):
            for url in urls:
                out.append({"announce": url, "id": n, "scrape": "", "tier": tier, "sitename": _sitename(url)})
                n += 1
        return out

    def tracker_stats(self) -> list[dict[str, Any]]:
        report = self.r.handle.last_announce() if self.r.handle is not None else None
        running = self.r.handle is not None
        return [_tracker_stat(t, report, running, self.now) for t in self.trackers()]


def _tracker_stat(
    t: dict[str, Any], report: AnnounceReport | None, running: bool, now: float
) -> dict[str, Any]:
    """One ``trackerStats`` entry from the torrent's last announce.

    The engine walks the tiers until a tracker answers (BEP 12) and reports that walk:
    the tracker that answered carries its figures; when every tracker failed, each
    carries the failure. A tracker the walk did not reach has not announced.
    """
    answered = report is not None and report.ok and report.url == t["announce"]
    failed = report is not None and not report.ok
    counts: dict[str, int] = {"downloadCount": -1, "leecherCount": -1, "seederCount": -1}
    if answered and report is not None:
        for key, value in (
            ("downloadCount", report.downloaded),
            ("leecherCount", report.leechers),
            ("seederCount", report.seeders),
        ):
            if value is not None:
                counts[key] = value
    result = ""
    if report is not None and (answered or failed):
        result = report.message or "Success"
    return {
        **t,
        **counts,
        "host": t["announce"],
        "lastAnnounceResult": result,
        "lastAnnounceSucceeded": answered,
        "hasAnnounced": answered or failed,
        "announceState": 1 if running else 0,
        "isBackup": False,
        "lastAnnouncePeerCount": report.peers if answered and report is not None else 0,
        "lastAnnounceTime": int(now - report.age_s) if report is not None and (answered or failed) else 0,
        "nextAnnounceTime": int(now + report.next_in_s) if report is not None and running else 0,
        "lastScrapeResult": "",
        "lastScrapeSucceeded": False,
        "lastScrapeTime": 0,
        "scrapeState": 0,
        "hasScraped": False,
    }


def _sitename(url: str) -> str:
    host = url.split("//", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    parts = host.split(".")
    return parts[-2] if len(parts) >= 2 else host


def _peers_count(v: View, direction: str) -> int:
    if v.r.handle is None:
        return 0
    peers = v.r.handle.peers()
    if direction == "down":
        return sum(1 for p in peers if p.down_rate_bps > 0)
    return sum(1 for p in peers if p.up_rate_bps > 0)


def _pieces_b64(v: View) -> str:
    """Transmission's ``pieces``: a bitfield of the verified pieces (BEP 3 order), in base64.

    A stopped torrent's pieces are not kept in memory: all set when it was complete,
    else those its resume state lists as verified (what its last run or check saved; read
    once, then kept on the record until its resume state changes).
    """
    if v.meta is None:
        return ""
    n = v.meta.info.num_pieces
    if v.r.handle is not None:
        return _bitfield_b64(n, v.r.handle.have_pieces())
    if v.r.stored.done_date > 0:
        return _bitfield_b64(n, range(n))
    if v.r.pieces_b64 is None:
        verified = _resume_verified(v.meta, v.r.stored.download_dir)
        v.r.pieces_b64 = _bitfield_b64(n, (i for i in verified if 0 <= i < n))
    return v.r.pieces_b64


def _resume_verified(meta: Metainfo, download_dir: str) -> Iterable[int]:
    """The pieces a stopped torrent's resume state lists as verified (none without one).

    The disk layer is imported here, by the first listing that needs it: a daemon
    restarting with dormant seeds lists them all without it.
    """
    from torrent.disk.resume import ResumeStore

    state, _ = ResumeStore(meta.info, meta.info_hash, download_dir).load()
    return state.verified if state is not None else ()


def _bitfield_b64(n: int, have: Iterable[int]) -> str:
    bits = bytearray(math.ceil(n / 8))
    for i in have:
        bits[i // 8] |= 0x80 >> (i % 8)
    return base64.b64encode(bytes(bits)).decode()


# --------------------------------------------------------------------- idle getters
# A torrent that does not run: no brief, no statistics, no peers.


_idle_size_when_done = Record.wanted_bytes


def _idle_done(r: Record) -> int:
    size = _idle_size_when_done(r)
    return size if r.stored.done_date else min(r.stored.have_bytes, size)


def _idle_left(r: Record) -> int:
    if r.stored.done_date:
        return 0
    size = _idle_size_when_done(r)
    return size - min(r.stored.have_bytes, size)


def _idle_percent(r: Record) -> float:
    if r.stored.done_date:
        return 1.0
    size = _idle_size_when_done(r)
    return min(r.stored.have_bytes, size) / size if size else 0.0


def _idle_eta(r: Record) -> int:
    return -1 if r.stored.done_date or not _idle_left(r) else -2


def _idle_ratio(r: Record) -> float:
    base = r.stored.downloaded or _idle_done(r)
    return r.stored.uploaded / base if base else -1.0


class _Constant:
    """An idle getter whose value is the same for every torrent: a listing writes it into
    its row template once instead of calling a getter per torrent."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __call__(self, _: object) -> Any:
        return self.value


_zero = _Constant(0)


# --------------------------------------------------------------------- the fields


@dataclass(frozen=True, slots=True)
class Field:
    """One ``torrent-get`` field: its JSON kind and its getters (see the module docstring).

    ``kind``: ``i`` an int, ``f`` a float, ``s`` a string, ``b`` a bool, ``j`` any JSON value.
    """

    kind: str
    view: Callable[[View], Any]
    idle: Callable[[Record], Any] | None = None


def _record(kind: str, get: Callable[[Record], Any]) -> Field:
    """A field read from the record alone, whether the torrent runs or not."""
    return Field(kind, lambda v: get(v.r), get)


def _const(kind: str, value: Any) -> Field:
    return Field(kind, lambda v: value, _Constant(value))


def _limit(key: str, default: Any) -> Field:
    return _record("j", lambda r: r.stored.limits.get(key, default))


def _summary(kind: str, get: Callable[[Summary], Any], default: Any) -> Field:
    """A field of the metainfo's summary (``default`` while a magnet link's is unknown)."""
    return _record(kind, lambda r: get(r.stored.summary) if r.stored.summary is not None else default)


def _meta(kind: str, get: Callable[[Metainfo], Any], default: Any) -> Field:
    """A field of the metainfo (``default`` while a magnet link's is unknown)."""
    return _record(kind, lambda r: get(r.meta) if r.meta is not None else default)


FIELDS: dict[str, Field] = {
    "activityDate": Field(
        "i",
        lambda v: (
            int(v.now)
            if v.stats is not None and (v.stats.download_rate_bps or v.stats.upload_rate_bps)
            else v.r.stored.done_date
        ),
        attrgetter("stored.done_date"),
    ),
    "addedDate": _record("i", attrgetter("stored.added_date")),
    "bandwidthPriority": _limit("bandwidthPriority", 0),
    "comment": _meta("s", lambda m: m.comment, ""),
    "corruptEver": Field("i", lambda v: v.stats.wasted_bytes if v.stats else 0, _zero),
    "creator": _meta("s", lambda m: m.created_by, ""),
    "dateCreated": _meta("i", lambda m: m.creation_date or 0, 0),
    "desiredAvailable": Field("i", lambda v: v.left if v.stats and v.stats.seeds_connected else 0, _zero),
    "doneDate": _record("i", attrgetter("stored.done_date")),
    "downloadDir": _record("s", attrgetter("stored.download_dir")),
    "downloadedEver": Field("i", lambda v: v.totals[1], attrgetter("stored.downloaded")),
    "downloadLimit": _limit("downloadLimit", 100),
    "downloadLimited": _limit("downloadLimited", False),
    "editDate": _const("i", 0),
    "error": Field("i", View.error, lambda r: 3 if r.stored.error else 0),
    "errorString": Field("s", View.error_string, attrgetter("stored.error")),
    "eta": Field("i", View.eta, _idle_eta),
    "etaIdle": _const("i", -1),
    "file-count": _summary("i", lambda s: len(s.file_lengths), 0),
    "files": Field("j", View.files),
    "fileStats": Field("j", View.file_stats),
    "group": _record("s", lambda r: r.stored.limits.get("group", "")),
    "hashString": _record("s", attrgetter("stored.info_hash")),
    "haveUnchecked": _const("i", 0),
    "haveValid": Field("i", lambda v: v.done, _idle_done),
    "honorsSessionLimits": _limit("honorsSessionLimits", True),
    "id": _record("i", attrgetter("stored.id")),
    "isFinished": _record("b", attrgetter("finished")),
    "isPrivate": _summary("b", lambda s: s.private, False),
    "isStalled": _const("b", False),
    "labels": _record("j", lambda r: list(r.stored.labels)),
    "leftUntilDone": Field("i", lambda v: v.left, _idle_left),
    "magnetLink": _record("s", lambda r: r.stored.magnet or f"magnet:?xt=urn:btih:{r.info_hash}"),
    "manualAnnounceTime": _const("i", -1),
    "maxConnectedPeers": _const("i", 50),
    "metadataPercentComplete": _record("f", lambda r: 1.0 if r.has_meta else 0.0),
    "name": _record("s", attrgetter("stored.name")),
    "peer-limit": _limit("peer-limit", 50),
    "peers": Field("j", View.peers, _Constant([])),
    "peersConnected": Field("i", lambda v: v.stats.peers_connected if v.stats else 0, _zero),
    "peersFrom": Field(
        "j",
        lambda v: {
            "fromCache": 0,
            "fromDht": 0,
            "fromIncoming": 0,
            "fromLpd": 0,
            "fromLtep": 0,
            "fromPex": 0,
            "fromTracker": v.stats.peers_connected if v.stats else 0,
        },
    ),
    "peersGettingFromUs": Field("i", lambda v: _peers_count(v, "up"), _zero),
    "peersSendingToUs": Field("i", lambda v: _peers_count(v, "down"), _zero),
    "percentComplete": Field("f", View.percent, _idle_percent),
    "percentDone": Field("f", View.percent, _idle_percent),
    "pieces": Field("s", _pieces_b64),
    "pieceCount": _meta("i", lambda m: m.info.num_pieces, 0),
    "pieceSize": _meta("i", lambda m: m.info.piece_length, 0),
    "priorities": _record("j", lambda r: list(r.stored.priorities)),
    "primary-mime-type": _const("s", "application/octet-stream"),
    "queuePosition": _record("i", attrgetter("stored.queue_position")),
    "rateDownload": Field("i", lambda v: int(v.b.download_rate_bps) if v.b else 0, _zero),
    "rateUpload": Field("i", lambda v: int(v.b.upload_rate_bps) if v.b else 0, _zero),
    "recheckProgress": Field(
        "f",
        lambda v: (
            v.r.checking
            if v.r.checking is not None
            else v.stats.checked_fraction
            if v.stats and v.status == Status.CHECK
            else 0.0
        ),
        lambda r: r.checking if r.checking is not None else 0.0,
    ),
    "secondsDownloading": _const("i", 0),
    "secondsSeeding": Field(
        "i", lambda v: int(v.now - v.r.started_at) if v.status == Status.SEED and v.r.started_at else 0
    ),
    "seedIdleLimit": _limit("seedIdleLimit", 30),
    "seedIdleMode": _limit("seedIdleMode", 0),
    "seedRatioLimit": _limit("seedRatioLimit", 2.0),
    "seedRatioMode": _limit("seedRatioMode", 0),
    "sizeWhenDone": Field("i", lambda v: v.size_when_done, _idle_size_when_done),
    "startDate": _record("i", lambda r: int(r.started_at)),
    "status": Field("i", lambda v: v.status, Record.status),
    "torrentFile": _const("s", ""),
    "totalSize": _summary("i", lambda s: s.total_length, 0),
    "trackers": Field("j", View.trackers),
    "trackerStats": Field("j", View.tracker_stats),
    "uploadedEver": Field("i", lambda v: v.totals[0], attrgetter("stored.uploaded")),
    "uploadLimit": _limit("uploadLimit", 100),
    "uploadLimited": _limit("uploadLimited", False),
    "uploadRatio": Field("f", View.ratio, _idle_ratio),
    "wanted": _record("j", lambda r: [int(w) for w in r.stored.wanted]),
    "webseeds": _meta("j", lambda m: list(m.url_list), []),
    "webseedsSendingToUs": _const("i", 0),
}


# --------------------------------------------------------------------- the JSON


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


_BOOLS = ("false", "true")

#: How a value of each kind goes into a row: its ``%`` conversion, and what turns the
#: getter's value into what that conversion takes (None: the value as it is).
_KINDS: dict[str, tuple[str, Callable[[Any], Any] | None]] = {
    "i": ("%d", None),
    "f": ("%r", None),
    "s": ("%s", encode_basestring_ascii),
    "b": ("%s", lambda x: _BOOLS[bool(x)]),
    "j": ("%s", _dumps),
}


def _encoded(get: Callable[[Any], Any], convert: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    if convert is None:
        return get
    return lambda x: convert(get(x))


_Column = Callable[[list[Record]], Iterator[Any]]


def _column(get: Callable[[Record], Any], convert: Callable[[Any], Any] | None) -> _Column:
    """The values of one field over many idle torrents (a lazy ``map``: C loops only)."""
    if convert is None:
        return lambda records: map(get, records)
    return lambda records: map(convert, map(get, records))


class Listing:
    """One ``torrent-get`` field list, compiled (unknown names are left out, as
    Transmission does).

    Torrents that do not run are listed column by column: each field's getter is
    ``map``-ped over all of them, ``zip`` makes the rows and the row template's ``%``
    formats them, so no Python loop runs per torrent beyond the getters themselves
    (and none for a field of one value for all, written into the template).

    Args:
        names: the field names asked for.
        table: Transmission's ``table`` format (a header row of names, then a list of
            values per torrent) instead of an object per torrent.
    """

    def __init__(self, names: Iterable[str], *, table: bool = False) -> None:
        self.names = [n for n in names if n in FIELDS]
        self.table = table
        fields = [FIELDS[n] for n in self.names]
        kinds = [_KINDS[f.kind] for f in fields]
        self._view = [_encoded(f.view, conv) for f, (_, conv) in zip(fields, kinds, strict=True)]
        self._view_row = self._template([spec for spec, _ in kinds])
        self._idle: list[_Column] | None = None
        self._idle_row = ""
        if all(f.idle is not None for f in fields):
            specs: list[str] = []
            self._idle = []
            for f, (spec, conv) in zip(fields, kinds, strict=True):
                if isinstance(f.idle, _Constant):
                    specs.append(_dumps(f.idle.value).replace("%", "%%"))
                elif f.idle is not None:
                    specs.append(spec)
                    self._idle.append(_column(f.idle, conv))
            self._idle_row = self._template(specs)

    def _template(self, specs: list[str]) -> str:
        if self.table:
            return "[" + ",".join(specs) + "]"
        pairs = zip(self.names, specs, strict=True)
        return "{" + ",".join(f"{encode_basestring_ascii(n)}:{spec}" for n, spec in pairs) + "}"

    def json(self, records: Iterable[Record], now: float) -> str:
        """The JSON text of the ``torrents`` list for ``records`` (``now``: wall-clock time)."""
        records = list(records)
        if self._idle is None:
            rows = [self._row(r, now) for r in records]
        else:
            idle = [r for r in records if r.handle is None]
            rows = self._idle_rows(idle, self._idle)
            if len(idle) < len(records):  # some run: their rows come from views
                it = iter(rows)
                rows = [next(it) if r.handle is None else self._row(r, now) for r in records]
        if self.table:
            rows.insert(0, _dumps(self.names))
        return "[" + ",".join(rows) + "]"

    def _idle_rows(self, records: list[Record], columns: list[_Column]) -> list[str]:
        if not columns:  # every field has one value for all
            return [self._idle_row % ()] * len(records)
        return list(map(self._idle_row.__mod__, zip(*[column(records) for column in columns], strict=True)))

    def _row(self, r: Record, now: float) -> str:
        v = View(r, now)
        return self._view_row % tuple([get(v) for get in self._view])
