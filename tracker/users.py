"""Private-tracker mode: users and passkeys, access rules and accounting, in SQLite.

``--private-users sqlite:///PATH`` turns it on. Clients announce to
``/<passkey>/announce`` (32 hex digits, the layout Ocelot and XBT use), or over UDP
with the passkey in the BEP 41 URL-data option (path ``/<passkey>/announce``).

Three parts:

* :class:`UserDb`: the database (the standard library's ``sqlite3`` in WAL mode, so
  ``pytorrent tracker-admin`` can write while trackers read). Synchronous; the
  tracker calls it through ``asyncio.to_thread`` so the event loop never waits on
  the file, and never once per announce.
* :class:`Accounting`: pure bookkeeping of upload/download deltas between successive
  announces of one peer (a counter that went backwards is a client restart: the new
  value is the delta; a rate above ``max_rate_bps`` is flagged and not counted),
  completions and seeding time, summed per (user, torrent) until the next flush.
* :class:`PrivateTracker`: what the transports ask on each announce (:meth:`admit`,
  then :meth:`record`), plus the task that flushes accounting every
  ``accounting_flush_s`` and rereads users and torrents when the database changed
  (``PRAGMA data_version``, polled) or on SIGHUP.

Rules :meth:`PrivateTracker.admit` applies, in order: a known, unrevoked passkey; a
registered torrent that is not deny-listed; the client's peer-id prefix allowed (and
not denied); for a leecher starting a download, the ratio floor; at most
``leech_ip_limit`` addresses leeching at once per user.

Passkeys never reach logs or metrics: failures name the rule, not the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import sqlite3
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("pytorrent.tracker")

__all__ = [
    "Accounting",
    "Delta",
    "PrivateRules",
    "PrivateTracker",
    "PrivateUser",
    "Tally",
    "Ticket",
    "UserDb",
    "UserRow",
    "new_passkey",
    "passkey_from_path",
]

SQLITE_SCHEME = "sqlite:///"
_PASSKEY = re.compile(r"[0-9a-f]{32}")

UNKNOWN_PASSKEY = "unknown or revoked passkey"
PASSKEY_REQUIRED = "this is a private tracker: announce to /<passkey>/announce"
NOT_REGISTERED = "torrent not registered with this tracker"
UDP_SCRAPE_REFUSED = "private tracker: scrape over HTTP at /<passkey>/scrape"
DENIED_TORRENT = "torrent not allowed"
DENIED_CLIENT = "client not allowed"
RATIO_TOO_LOW = "ratio below the floor: seed before starting new downloads"
TOO_MANY_IPS = "too many addresses leeching for this user"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users(
  id INTEGER PRIMARY KEY,
  name TEXT UNIQUE NOT NULL,
  passkey TEXT UNIQUE NOT NULL,
  revoked INTEGER NOT NULL DEFAULT 0,
  uploaded INTEGER NOT NULL DEFAULT 0,
  downloaded INTEGER NOT NULL DEFAULT 0,
  created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS torrents(
  info_hash BLOB PRIMARY KEY,
  freeleech INTEGER NOT NULL DEFAULT 0,
  denied INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS user_torrents(
  user_id INTEGER NOT NULL,
  info_hash BLOB NOT NULL,
  uploaded INTEGER NOT NULL DEFAULT 0,
  downloaded INTEGER NOT NULL DEFAULT 0,
  completed INTEGER NOT NULL DEFAULT 0,
  seed_time_s REAL NOT NULL DEFAULT 0,
  flagged INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(user_id, info_hash)
);
"""


def new_passkey() -> str:
    return secrets.token_hex(16)


def passkey_from_path(path: str | bytes) -> str | None:
    """``/<32 hex>/announce`` (or ``/scrape``) → the passkey; anything else → None."""
    if isinstance(path, bytes):
        path = path.decode("latin-1")
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[1] in ("announce", "scrape") and _PASSKEY.fullmatch(parts[0]):
        return parts[0]
    return None


@dataclass(frozen=True, slots=True)
class UserRow:
    """One user as ``tracker-admin user list`` shows it."""

    name: str
    passkey: str
    revoked: bool
    uploaded: int
    downloaded: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a tracker keeps in memory from the database."""

    users: dict[str, tuple[int, int, int]]  # passkey -> (id, uploaded, downloaded); live users only
    torrents: dict[bytes, tuple[bool, bool]]  # info hash -> (freeleech, denied)


@dataclass(slots=True)
class Delta:
    """Accounting of one (user, torrent) since the last flush."""

    uploaded: int = 0
    downloaded: int = 0
    completed: int = 0
    seed_time_s: float = 0.0
    flagged: int = 0


class UserDb:
    """The private-tracker database. Synchronous: the tracker runs it in a thread.

    Args:
        url: ``sqlite:///PATH`` (three slashes, then the path; a fourth for an
            absolute path).
    """

    def __init__(self, url: str) -> None:
        if not url.startswith(SQLITE_SCHEME):
            raise ValueError("--private-users must be sqlite:///PATH")
        self.path = Path(url[len(SQLITE_SCHEME) :])
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ admin

    def add_user(self, name: str) -> str:
        """Create ``name``; returns the new passkey. Raises ValueError if it exists."""
        key = new_passkey()
        try:
            self._db.execute(
                "INSERT INTO users(name, passkey, created) VALUES(?, ?, ?)", (name, key, time.time())
            )
        except sqlite3.IntegrityError:
            raise ValueError(f"user {name!r} exists") from None
        return key

    def _update(self, sql: str, args: tuple[Any, ...], name: str) -> None:
        if self._db.execute(sql, args).rowcount != 1:
            raise ValueError(f"no user {name!r}")

    def revoke(self, name: str) -> None:
        self._update("UPDATE users SET revoked = 1 WHERE name = ?", (name,), name)

    def rekey(self, name: str) -> str:
        """A new passkey for ``name`` (the old one stops working); also un-revokes."""
        key = new_passkey()
        self._update("UPDATE users SET passkey = ?, revoked = 0 WHERE name = ?", (key, name), name)
        return key

    def users(self) -> list[UserRow]:
        rows = self._db.execute(
            "SELECT name, passkey, revoked, uploaded, downloaded FROM users ORDER BY name"
        ).fetchall()
        return [UserRow(n, k, bool(r), u, d) for n, k, r, u, d in rows]

    def add_torrent(self, info_hash: bytes, *, freeleech: bool = False, denied: bool = False) -> None:
        self._db.execute(
            "INSERT INTO torrents(info_hash, freeleech, denied) VALUES(?, ?, ?) "
            "ON CONFLICT(info_hash) DO UPDATE SET freeleech = excluded.freeleech, denied = excluded.denied",
            (info_hash, int(freeleech), int(denied)),
        )

    def stats(self) -> list[dict[str, Any]]:
        """Per-user totals: bytes, completions, seeding time, torrents, flagged announces."""
        rows = self._db.execute(
            "SELECT u.name, u.revoked, u.uploaded, u.downloaded, "
            "COALESCE(SUM(t.completed), 0), COALESCE(SUM(t.seed_time_s), 0), COUNT(t.info_hash), "
            "COALESCE(SUM(t.flagged), 0) "
            "FROM users u LEFT JOIN user_torrents t ON t.user_id = u.id GROUP BY u.id ORDER BY u.name"
        ).fetchall()
        keys = (
            "name",
            "revoked",
            "uploaded",
            "downloaded",
            "completed",
            "seed_time_s",
            "torrents",
            "flagged",
        )
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def torrent_stats(self, name: str) -> dict[bytes, Delta]:
        rows = self._db.execute(
            "SELECT t.info_hash, t.uploaded, t.downloaded, t.completed, t.seed_time_s, t.flagged "
            "FROM user_torrents t JOIN users u ON u.id = t.user_id WHERE u.name = ?",
            (name,),
        ).fetchall()
        return {bytes(ih): Delta(u, d, c, s, f) for ih, u, d, c, s, f in rows}

    # ------------------------------------------------------------------ tracker

    def data_version(self) -> int:
        """Changes when another connection committed (``PRAGMA data_version``)."""
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def snapshot(self) -> Snapshot:
        users = {
            k: (i, u, d)
            for i, k, u, d in self._db.execute(
                "SELECT id, passkey, uploaded, downloaded FROM users WHERE revoked = 0"
            )
        }
        torrents = {
            bytes(ih): (bool(f), bool(d))
            for ih, f, d in self._db.execute("SELECT info_hash, freeleech, denied FROM torrents")
        }
        return Snapshot(users, torrents)

    def flush(self, deltas: dict[tuple[int, bytes], Delta]) -> None:
        """Add ``deltas`` to the per-torrent rows and the user totals, in one transaction."""
        if not deltas:
            return
        per_user: dict[int, list[int]] = {}
        for (uid, _), d in deltas.items():
            tot = per_user.setdefault(uid, [0, 0])
            tot[0] += d.uploaded
            tot[1] += d.downloaded
        with contextlib.closing(self._db.cursor()) as cur:
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.executemany(
                    "INSERT INTO user_torrents(user_id, info_hash, uploaded, downloaded, completed, "
                    "seed_time_s, flagged) VALUES(?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(user_id, info_hash) DO UPDATE SET "
                    "uploaded = uploaded + excluded.uploaded, downloaded = downloaded + excluded.downloaded, "
                    "completed = completed + excluded.completed, "
                    "seed_time_s = seed_time_s + excluded.seed_time_s, flagged = flagged + excluded.flagged",
                    [
                        (uid, ih, d.uploaded, d.downloaded, d.completed, d.seed_time_s, d.flagged)
                        for (uid, ih), d in deltas.items()
                    ],
                )
                cur.executemany(
                    "UPDATE users SET uploaded = uploaded + ?, downloaded = downloaded + ? WHERE id = ?",
                    [(u, d, uid) for uid, (u, d) in per_user.items()],
                )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise


#: A tally: the user id, the counters an announce reported, and when (wall clock, shared
#: by every tracker process). Kept by the store per (torrent, peer id): rule 6 there.
_TALLY = struct.Struct(">QqqQd")


@dataclass(frozen=True, slots=True)
class Tally:
    """A peer's accounting baseline: what its previous announce reported, and when."""

    user_id: int
    uploaded: int
    downloaded: int
    left: int
    at: float

    def pack(self) -> bytes:
        return _TALLY.pack(self.user_id, self.uploaded, self.downloaded, self.left, self.at)

    @classmethod
    def unpack(cls, raw: bytes | None) -> Tally | None:
        """``raw`` from the store; None when there is none or it is not one of ours."""
        if raw is None or len(raw) != _TALLY.size:
            return None
        return cls(*_TALLY.unpack(raw))


class Accounting:
    """Deltas between successive announces of a peer, summed per (user, torrent).

    The previous announce's counters (its :class:`Tally`) come from the store, which
    swaps them atomically with the announce: whichever tracker process or host the
    next announce reaches, it counts only what changed since the last one anywhere.

    Args:
        max_rate_bps: an upload or download rate above this between two announces is
            flagged and not counted (a client reporting absurd numbers).
        max_gap_s: seeding time between two announces counts at most this much (a peer
            silent for longer was probably not seeding all along).
    """

    def __init__(self, max_rate_bps: int, max_gap_s: float) -> None:
        self.max_rate_bps = max_rate_bps
        self.max_gap_s = max_gap_s
        self._pending: dict[tuple[int, bytes], Delta] = {}

    def record(
        self,
        user_id: int,
        info_hash: bytes,
        *,
        uploaded: int,
        downloaded: int,
        left: int,
        event: int,
        now: float,
        freeleech: bool,
        prev: Tally | None,
    ) -> tuple[int, int]:
        """Account one announce against ``prev`` (the peer's previous one, or None);
        returns the (uploaded, downloaded) bytes counted.

        ``event`` is BEP 15's number (0 none, 1 completed, 2 started, 3 stopped).
        """
        if prev is not None and prev.user_id != user_id:
            prev = None  # the peer id moved to another passkey: start over
        du = dd = 0
        seed_s = 0.0
        flagged = 0
        if prev is None:
            if event == 2:  # BEP 3: the counters start at zero with "started"
                du, dd = uploaded, downloaded
        else:
            du = uploaded - prev.uploaded if uploaded >= prev.uploaded else uploaded
            dd = downloaded - prev.downloaded if downloaded >= prev.downloaded else downloaded
            elapsed = max(now - prev.at, 0.0)
            if max(du, dd) > self.max_rate_bps * max(elapsed, 1.0):
                du = dd = 0
                flagged = 1
            if prev.left == 0 and left == 0:
                seed_s = min(elapsed, self.max_gap_s)
        if freeleech:
            dd = 0
        # ``completed`` once per download: a client sends it to each tracker it uses, and
        # the first one to arrive (on any process) left a tally with nothing left
        completed = event == 1 and (prev is None or prev.left > 0)
        if du or dd or seed_s or flagged or completed:
            d = self._pending.get((user_id, info_hash))
            if d is None:
                d = self._pending[(user_id, info_hash)] = Delta()
            d.uploaded += du
            d.downloaded += dd
            d.seed_time_s += seed_s
            d.flagged += flagged
            d.completed += completed
        return du, dd

    def take(self) -> dict[tuple[int, bytes], Delta]:
        """The deltas since the last call (the next flush)."""
        out, self._pending = self._pending, {}
        return out


@dataclass(frozen=True, slots=True)
class PrivateRules:
    """The private-mode knobs (see :class:`~tracker.settings.TrackerSettings`)."""

    ratio_floor: float = 0.0
    ratio_grace_bytes: int = 1 << 30
    max_rate_bps: int = 128 << 20
    leech_ip_limit: int = 3
    client_allow: tuple[str, ...] = ()
    client_deny: tuple[str, ...] = ()
    flush_s: float = 10.0
    poll_s: float = 2.0
    ttl_s: float = 3600.0


@dataclass(slots=True)
class PrivateUser:
    id: int
    uploaded: int
    downloaded: int
    #: address -> {info hash: last announce} of what the user leeches from there
    leeching: dict[bytes, dict[bytes, float]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Ticket:
    """An admitted private announce, from :meth:`PrivateTracker.ticket` to
    :meth:`PrivateTracker.settle` (the store's round trip in between)."""

    user: PrivateUser
    freeleech: bool
    info_hash: bytes
    peer_id: bytes
    uploaded: int
    downloaded: int
    left: int
    event: int
    ip: bytes
    tally: bytes
    refuse_new: str | None


class PrivateTracker:
    """Passkeys, access rules and accounting for one tracker process.

    Use as an async context manager: entering loads the database, leaving flushes
    what is pending. :meth:`run` (a task the server owns) flushes and reloads.
    """

    def __init__(self, url: str, rules: PrivateRules, *, clock: Callable[[], float] = time.time) -> None:
        self.db = UserDb(url)
        self.rules = rules
        self.accounting = Accounting(rules.max_rate_bps, rules.ttl_s)
        self._clock = clock
        self._users: dict[str, PrivateUser] = {}
        self._torrents: dict[bytes, tuple[bool, bool]] = {}
        self._by_id: dict[int, PrivateUser] = {}
        self._lock = asyncio.Lock()  # one thread at a time on the connection
        self._reload = asyncio.Event()
        self._version = -1
        self.flushes = 0

    async def __aenter__(self) -> PrivateTracker:
        await self.reload()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.flush()
        finally:
            self.db.close()

    # ------------------------------------------------------------------ background

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        async with self._lock:
            return await asyncio.to_thread(fn, *args)

    async def reload(self) -> None:
        snap: Snapshot = await self._in_thread(self.db.snapshot)
        self._version = await self._in_thread(self.db.data_version)
        old = self._by_id
        users = {}
        for key, (uid, up, down) in snap.users.items():
            prev = old.get(uid)
            users[key] = PrivateUser(uid, up, down, prev.leeching if prev is not None else {})
        self._users = users
        self._by_id = {u.id: u for u in users.values()}
        self._torrents = snap.torrents
        log.info("private mode: %d users, %d torrents", len(users), len(snap.torrents))

    def reload_soon(self) -> None:
        """SIGHUP: reread users and torrents now."""
        self._reload.set()

    async def flush(self) -> None:
        deltas = self.accounting.take()
        if deltas:
            await self._in_thread(self.db.flush, deltas)
            self.flushes += 1

    async def run(self) -> None:
        """Flush every ``flush_s``; reload on SIGHUP or when another process wrote."""
        r = self.rules
        next_flush = time.monotonic() + r.flush_s
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(r.poll_s):
                    await self._reload.wait()
            try:
                if time.monotonic() >= next_flush:
                    next_flush = time.monotonic() + r.flush_s
                    await self.flush()
                if self._reload.is_set() or await self._in_thread(self.db.data_version) != self._version:
                    self._reload.clear()
                    await self.reload()
            except sqlite3.Error as exc:
                log.warning("private mode: database: %s", exc)

    # ------------------------------------------------------------------ announces

    def check_passkey(self, passkey: str | None) -> str | None:
        """None for a live passkey, else the failure reason (scrapes)."""
        if passkey is None:
            return PASSKEY_REQUIRED
        return None if passkey in self._users else UNKNOWN_PASSKEY

    def scrapable(self, info_hash: bytes) -> bool:
        """Whether a scrape may show ``info_hash``: registered and not deny-listed.

        Unregistered hashes are left out of a scrape's ``files`` (as Ocelot and XBT do)
        rather than failing the whole request: a client scraping several torrents still
        gets the ones this tracker serves, and nothing is said about any other hash.
        """
        flags = self._torrents.get(info_hash)
        return flags is not None and not flags[1]

    def admit(
        self,
        passkey: str | None,
        info_hash: bytes,
        peer_id: bytes,
        left: int,
        event: int,
        ip: bytes,
    ) -> tuple[PrivateUser, bool] | str:
        """The user and the torrent's freeleech flag, or the failure reason."""
        if passkey is None:
            return PASSKEY_REQUIRED
        user = self._users.get(passkey)
        if user is None:
            return UNKNOWN_PASSKEY
        flags = self._torrents.get(info_hash)
        if flags is None:
            return NOT_REGISTERED
        freeleech, denied = flags
        if denied:
            return DENIED_TORRENT
        r = self.rules
        if r.client_allow or r.client_deny:
            pid = peer_id.decode("latin-1")
            if (r.client_allow and not pid.startswith(r.client_allow)) or (
                r.client_deny and pid.startswith(r.client_deny)
            ):
                return DENIED_CLIENT
        if left > 0 and event != 3:
            ips = user.leeching
            if ip not in ips and len(ips) >= r.leech_ip_limit:
                cutoff = self._clock() - r.ttl_s
                for addr in [a for a, swarms in ips.items() if max(swarms.values(), default=0) < cutoff]:
                    del ips[addr]
                if len(ips) >= r.leech_ip_limit:
                    return TOO_MANY_IPS
        return user, freeleech

    def ticket(
        self,
        admitted: tuple[PrivateUser, bool],
        info_hash: bytes,
        peer_id: bytes,
        *,
        uploaded: int,
        downloaded: int,
        left: int,
        event: int,
        ip: bytes,
    ) -> Ticket:
        """An admitted announce, ready for the store (its tally and ``refuse_new``) and,
        once the store has answered, for :meth:`settle`."""
        user, freeleech = admitted
        return Ticket(
            user, freeleech, info_hash, peer_id, uploaded, downloaded, left, event, ip,
            tally=self.tally(user, uploaded=uploaded, downloaded=downloaded, left=left),
            refuse_new=self.refuse_new(user, freeleech, left, event),
        )  # fmt: skip

    def settle(self, t: Ticket, prev: bytes | None) -> None:
        """Account ``t`` once the store accepted it; ``prev`` is the tally it gave back."""
        self.record(
            t.user, t.freeleech, t.info_hash, t.peer_id, uploaded=t.uploaded, downloaded=t.downloaded,
            left=t.left, event=t.event, ip=t.ip, prev=prev,
        )  # fmt: skip

    def refuse_new(self, user: PrivateUser, freeleech: bool, left: int, event: int) -> str | None:
        """The reason to refuse this announce if the store does not hold the peer yet
        (``PeerAnnounce.refuse_new``): a user below the ratio floor may go on with a
        download (on any tracker process), not start one."""
        r = self.rules
        if (
            left > 0
            and event != 3
            and r.ratio_floor > 0
            and not freeleech
            and user.downloaded >= r.ratio_grace_bytes
            and user.uploaded < r.ratio_floor * user.downloaded
        ):
            return RATIO_TOO_LOW
        return None

    def tally(self, user: PrivateUser, *, uploaded: int, downloaded: int, left: int) -> bytes:
        """The baseline this announce leaves in the store (``PeerAnnounce.tally``)."""
        return Tally(user.id, uploaded, downloaded, left, self._clock()).pack()

    def record(
        self,
        user: PrivateUser,
        freeleech: bool,
        info_hash: bytes,
        peer_id: bytes,
        *,
        uploaded: int,
        downloaded: int,
        left: int,
        event: int,
        ip: bytes,
        prev: bytes | None = None,
    ) -> None:
        """Account an announce the store accepted; ``prev`` is the tally the store gave
        back (the peer's previous announce, to whichever process it went)."""
        now = self._clock()
        du, dd = self.accounting.record(
            user.id,
            info_hash,
            uploaded=uploaded,
            downloaded=downloaded,
            left=left,
            event=event,
            now=now,
            freeleech=freeleech,
            prev=Tally.unpack(prev),
        )
        user.uploaded += du
        user.downloaded += dd
        if left > 0 and event != 3:
            swarms = user.leeching.get(ip)
            if swarms is None:
                swarms = user.leeching[ip] = {}
            swarms[info_hash] = now
        else:
            swarms = user.leeching.get(ip)
            if swarms is not None:
                swarms.pop(info_hash, None)
                if not swarms:
                    del user.leeching[ip]
