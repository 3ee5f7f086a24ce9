"""The daemon's state: one SQLite database (standard library) in the state directory.

Why SQLite and not a file per torrent: a restart reads every record in one query (a
file per torrent costs an ``open`` and a parse each, 10,000 of them); a change is one
small transaction instead of a ``write``/``fsync``/``rename`` of a whole file; and the
statistics of every torrent are saved in one batched transaction.

Durability: WAL mode with ``synchronous=NORMAL``. A committed transaction survives the
process being killed (kill -9): the WAL is written before ``commit`` returns; only a
power loss may lose the last transactions, never corrupt the database. The payload's
verified pieces are not kept here: they are the engine's resume state
(:mod:`torrent.disk.resume`), next to the data.

Each change (remove, a setting, a torrent's field) is its own transaction;
statistics (uploaded/downloaded totals, activity) are written in batches by
:meth:`StateStore.save_stats`. Adds may be *grouped*: :meth:`StateStore.insert_pending`
gives a record its id at once and :meth:`StateStore.commit` stores the group in one
transaction (the daemon stores the adds that arrived together in one transaction, and
answers each only once it is stored). Any other write or read stores the open group first.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["StateStore", "StoredTorrent", "Summary"]

SCHEMA_VERSION = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS torrents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    info_hash TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    metainfo BLOB,
    magnet TEXT NOT NULL DEFAULT '',
    download_dir TEXT NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    queue_position INTEGER NOT NULL,
    priorities TEXT NOT NULL DEFAULT '[]',
    wanted TEXT NOT NULL DEFAULT '[]',
    labels TEXT NOT NULL DEFAULT '[]',
    limits TEXT NOT NULL DEFAULT '{}',
    added_date INTEGER NOT NULL,
    done_date INTEGER NOT NULL DEFAULT 0,
    uploaded INTEGER NOT NULL DEFAULT 0,
    downloaded INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    have_bytes INTEGER NOT NULL DEFAULT 0,
    files_done TEXT NOT NULL DEFAULT '[]',
    renames TEXT NOT NULL DEFAULT '{}',
    summary TEXT NOT NULL DEFAULT '',
    check_owed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Summary(NamedTuple):
    """What the daemon reads of a torrent's metainfo while the torrent does not run
    (listing, queueing, dormant seeding), so the metainfo itself is parsed only when the
    torrent runs, is checked or a client asks for its details."""

    total_length: int
    file_lengths: tuple[int, ...]
    #: It has trackers to announce to.
    trackers: bool
    private: bool
    #: A hybrid torrent's truncated v2 info hash (hex; BEP 52), which peers may name too.
    v2_alias: str = ""


@dataclass(slots=True)
class StoredTorrent:
    """One torrent's persistent record (what a restart needs)."""

    id: int
    info_hash: str  # hex
    name: str
    #: The .torrent's bytes as inserted (the daemon keeps an added torrent's until it
    #: first parses them); None while a magnet's metadata is unknown, and as loaded
    #: (:meth:`StateStore.metainfo` reads them) unless the summary is missing.
    metainfo: bytes | None
    magnet: str
    download_dir: str
    paused: bool
    queue_position: int
    priorities: list[int] = field(default_factory=list)  # Transmission's -1/0/1 per file
    wanted: list[bool] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    limits: dict[str, Any] = field(default_factory=dict)
    added_date: int = 0
    done_date: int = 0
    uploaded: int = 0
    downloaded: int = 0
    error: str = ""
    #: Verified bytes of the wanted pieces, and per file, when the torrent last stopped.
    have_bytes: int = 0
    files_done: list[int] = field(default_factory=list)
    #: ``torrent-rename-path`` results: ``{"name": top name, "paths": {file index: [parts]}}``
    #: (the info hash and the metainfo stay as they are).
    renames: dict[str, Any] = field(default_factory=dict)
    #: None while a magnet link's metadata is unknown.
    summary: Summary | None = None
    #: Its data is to be checked though it stays stopped (added stopped, or stopped
    #: before its first check): a restart checks it, until a check has finished.
    check_owed: bool = False


_COLUMNS = (
    "id, info_hash, name, metainfo, magnet, download_dir, paused, queue_position, priorities, "
    "wanted, labels, limits, added_date, done_date, uploaded, downloaded, error, have_bytes, files_done, renames, summary, "
    "check_owed"
)

_INSERT = (
    f"INSERT INTO torrents ({_COLUMNS.removeprefix('id, ')}) "
    f"VALUES ({', '.join('?' * len(_COLUMNS.split(', ')[1:]))})"
)

_INSERT_WITH_ID = f"INSERT INTO torrents ({_COLUMNS}) VALUES ({', '.join('?' * len(_COLUMNS.split(', ')))})"


class StateStore:
    """The database of one daemon; not thread-safe (the event loop owns it).

    Args:
        directory: the state directory (created if missing); the file is ``state.sqlite3``.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(os.fspath(directory), "state.sqlite3")
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # The records are read once, at start: a small page cache is enough (the default
        # 2 MiB would be most of the daemon's memory per torrent at 1,000 torrents).
        self._db.execute("PRAGMA cache_size=-256")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(torrents)")}
        if "renames" not in columns:  # a database of schema 1
            self._db.execute("ALTER TABLE torrents ADD COLUMN renames TEXT NOT NULL DEFAULT '{}'")
        if "summary" not in columns:  # schema 2: summaries are made at the next load
            self._db.execute("ALTER TABLE torrents ADD COLUMN summary TEXT NOT NULL DEFAULT ''")
        if "check_owed" not in columns:  # schema 3
            self._db.execute("ALTER TABLE torrents ADD COLUMN check_owed INTEGER NOT NULL DEFAULT 0")
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION:d}")
        #: Rows of the open group (:meth:`insert_pending`), stored by :meth:`commit`.
        self._group: list[tuple[Any, ...]] = []
        #: The id the next grouped record gets (None: read from the database when needed).
        self._next_id: int | None = None
        #: Why the group failed when another write committed it (:meth:`commit` raises it).
        self._group_failure: sqlite3.Error | None = None

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.commit()
        self._db.close()

    # --- torrents ---------------------------------------------------------------------

    def load(self) -> list[StoredTorrent]:
        """Every record, in queue order, in one query; the metainfo bytes only of a record
        with no summary yet (a database of schema 2), the others read by :meth:`metainfo`."""
        self._commit_open()
        columns = _COLUMNS.replace("metainfo", "CASE WHEN summary = '' THEN metainfo END")
        rows = self._db.execute(f"SELECT {columns} FROM torrents ORDER BY queue_position, id").fetchall()
        lists = _ListReader()
        summaries = _summaries([row[20] for row in rows])
        return [_record(row, lists, summary) for row, summary in zip(rows, summaries, strict=True)]

    def metainfo(self, torrent_id: int) -> bytes | None:
        """A torrent's metainfo bytes (None: unknown, a magnet link's)."""
        self._commit_open()  # a record of the open group is read once stored
        row = self._db.execute("SELECT metainfo FROM torrents WHERE id=?", (torrent_id,)).fetchone()
        return None if row is None else row[0]

    def insert(self, t: StoredTorrent) -> int:
        """Store a new record; sets and returns its id (never one used before, removed or not)."""
        self._commit_open()
        values = _row(t)[1:]
        # One statement: its own transaction (autocommit), no BEGIN/COMMIT round trips.
        cur = self._db.execute(_INSERT, values)
        assert cur.lastrowid is not None
        t.id = cur.lastrowid
        self._next_id = None  # read again when next needed
        return t.id

    def insert_pending(self, t: StoredTorrent) -> int:
        """Add a new record to the open group (:meth:`commit` stores the group in one
        transaction; the record is durable once it returned). Sets and returns its id,
        never one used before: the next after every id stored or pending."""
        if self._next_id is None:
            self._commit_open()
            row = self._db.execute(
                "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name='torrents'), 0), "
                "COALESCE((SELECT MAX(id) FROM torrents), 0))"
            ).fetchone()
            self._next_id = int(row[0]) + 1
        t.id = self._next_id
        self._next_id += 1
        self._group.append(_row(t))  # the values now: the caller may change ``t`` afterwards
        return t.id

    @property
    def pending(self) -> int:
        """Records waiting for :meth:`commit`."""
        return len(self._group)

    def commit(self) -> None:
        """Store the group of :meth:`insert_pending` (nothing to do if another write did).

        Raises:
            sqlite3.Error: the group was not stored (rolled back), whether now or when
                another write tried to store it.
        """
        self._commit_open()
        failure, self._group_failure = self._group_failure, None
        if failure is not None:
            raise failure

    def _commit_open(self) -> None:
        """Store the open group in one transaction, or keep its error for :meth:`commit`."""
        if not self._group:
            return
        rows, self._group = self._group, []
        try:
            with _Transaction(self._db):
                self._db.executemany(_INSERT_WITH_ID, rows)
        except sqlite3.Error as exc:
            self._group_failure = exc

    def update(self, t: StoredTorrent) -> None:
        """Write every field of ``t`` (one transaction)."""
        self.update_many([t])

    def update_many(self, records: Iterable[StoredTorrent]) -> None:
        """Write every field of each record but its metainfo (:meth:`set_metainfo`), all
        in one transaction."""
        with self._transaction():
            self._db.executemany(
                "UPDATE torrents SET info_hash=?, name=?, magnet=?, download_dir=?, paused=?, "
                "queue_position=?, priorities=?, wanted=?, labels=?, limits=?, added_date=?, done_date=?, "
                "uploaded=?, downloaded=?, error=?, have_bytes=?, files_done=?, renames=?, summary=?, check_owed=? "
                "WHERE id=?",
                [(*row[1:3], *row[4:], t.id) for row, t in ((_row(t), t) for t in records)],
            )

    def set_metainfo(self, torrent_id: int, metainfo: bytes) -> None:
        """Store the metainfo a magnet link's fetch found (the record keeps none in memory)."""
        with self._transaction():
            self._db.execute("UPDATE torrents SET metainfo=? WHERE id=?", (metainfo, torrent_id))

    def save_stats(self, stats: Iterable[tuple[int, int, int]]) -> None:
        """``(id, uploaded, downloaded)`` of many torrents in one transaction (the batch)."""
        with self._transaction():
            self._db.executemany(
                "UPDATE torrents SET uploaded=?, downloaded=? WHERE id=?", [(u, d, i) for i, u, d in stats]
            )

    def delete(self, torrent_id: int) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM torrents WHERE id=?", (torrent_id,))

    # --- settings ---------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM settings")}

    def set_settings(self, values: dict[str, Any]) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                [(k, json.dumps(v)) for k, v in values.items()],
            )

    # --- plumbing ---------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        self._commit_open()
        return _Transaction(self._db)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an exception)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self._db.execute("ROLLBACK")
            return
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):  # a failed COMMIT may leave it open
                self._db.execute("ROLLBACK")
            raise


def _row(t: StoredTorrent) -> tuple[Any, ...]:
    return (
        t.id,
        t.info_hash,
        t.name,
        t.metainfo,
        t.magnet,
        t.download_dir,
        int(t.paused),
        t.queue_position,
        _list_text(t.priorities),
        _list_text([int(w) for w in t.wanted]),
        json.dumps(t.labels) if t.labels else "[]",
        json.dumps(t.limits) if t.limits else "{}",
        t.added_date,
        t.done_date,
        t.uploaded,
        t.downloaded,
        t.error,
        t.have_bytes,
        _list_text(t.files_done),
        json.dumps(t.renames) if t.renames else "{}",
        "" if t.summary is None else _summary_text(t.summary),
        int(t.check_owed),
    )


def _summary_text(summary: Summary) -> str:
    """``json.dumps(summary)``, written directly for the usual one (a few files, flags
    that are bools, a hex alias or none): json.dumps of a tuple took 3 µs of each add."""
    total, lengths, trackers, private, alias = summary
    if (
        len(lengths) > 4
        or type(trackers) is not bool
        or type(private) is not bool
        or (alias and not (alias.isascii() and alias.isalnum()))
    ):
        return json.dumps(summary)
    flags = ("false", "true")
    return f'[{total}, [{", ".join(map(str, lengths))}], {flags[trackers]}, {flags[private]}, "{alias}"]'


#: The JSON texts of short lists of small numbers (most records' priorities, wanted
#: flags and file progress: ``[0]``, ``[1]``), each made once.
_LIST_TEXTS: dict[tuple[int, ...], str] = {}


def _list_text(values: list[int]) -> str:
    """``json.dumps(values)`` for a list of ints, from :data:`_LIST_TEXTS` when short."""
    if len(values) > 4:
        return json.dumps(values)
    key = tuple(values)
    text = _LIST_TEXTS.get(key)
    if text is None:
        text = json.dumps(values)
        if len(_LIST_TEXTS) < 1024 and all(-2 <= v <= 2 for v in values):
            _LIST_TEXTS[key] = text
    return text


class _ListReader:
    """Reads the JSON lists of many records (of numbers, booleans or strings, not nested):
    each text once, a copy for each record. Most records share theirs (``[0]``, ``[1]``,
    ``[]``): a restart with 10,000 records parses a few texts, not 40,000."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[str, list[Any]] = {}

    def __call__(self, text: str) -> list[Any]:
        got = self._seen.get(text)
        if got is None:
            got = self._seen[text] = json.loads(text)
        return got.copy()


def _dict(text: str) -> dict[str, Any]:
    return {} if text == "{}" else dict(json.loads(text))


def _record(row: tuple[Any, ...], read_list: _ListReader, summary: Summary | None) -> StoredTorrent:
    return StoredTorrent(
        id=row[0],
        info_hash=row[1],
        name=row[2],
        metainfo=row[3],
        magnet=row[4],
        download_dir=sys.intern(row[5]),  # one string for the many torrents in a directory
        paused=bool(row[6]),
        queue_position=row[7],
        priorities=read_list(row[8]),
        wanted=[bool(w) for w in read_list(row[9])],
        labels=read_list(row[10]),
        limits=_dict(row[11]),
        added_date=row[12],
        done_date=row[13],
        uploaded=row[14],
        downloaded=row[15],
        error=row[16],
        have_bytes=row[17],
        files_done=read_list(row[18]),
        renames=_dict(row[19]),
        summary=summary,
        check_owed=bool(row[21]),
    )


def _summaries(texts: list[str]) -> list[Summary | None]:
    """The records' summaries, parsed as one JSON text: one call instead of one per record
    (a third of the time of loading 1,000 records went to those calls)."""
    try:
        parsed = json.loads("[" + ",".join(text or "null" for text in texts) + "]")
    except ValueError:
        parsed = None
    if not isinstance(parsed, list) or len(parsed) != len(texts):
        return [_summary(text) for text in texts]  # one is not a list: fail as before
    out: list[Summary | None] = []
    for p in parsed:
        if p is None:
            out.append(None)
        else:
            total, lengths, trackers, private, alias = p
            out.append(Summary(total, tuple(lengths), trackers, private, alias))
    return out


def _summary(text: str) -> Summary | None:
    if not text:
        return None
    total, lengths, trackers, private, alias = json.loads(text)
    return Summary(total, tuple(lengths), trackers, private, alias)
