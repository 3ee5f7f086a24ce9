"""The tracker service: everything about an announce or scrape that is not HTTP or UDP.

``TrackerService`` is what both transports (:mod:`tracker.app`, :mod:`tracker.udp`) hold:
the settings, the store (and its synchronous view when it has one), the allow-list,
and the counters. It turns a parsed :class:`~torrent.proto.tracker_codec.AnnounceRequest`
plus the address the request came from into a store :class:`~tracker.store.PeerAnnounce`
(address choice, ``numwant`` caps), and keeps the counters that ``/metrics``, the status
page and the access log read. The transports only parse, call it, and encode.

Metrics are written in the Prometheus text format by hand (:meth:`TrackerService.metrics_text`)
rather than with ``prometheus-client``: we export a dozen counters and gauges, the
format is a few lines, and plain integer attributes are the cheapest thing the hot
paths can bump (a client-library counter takes a lock per increment). It also keeps
the dependency list short.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torrent.proto.tracker_codec import AnnounceEvent, AnnounceRequest
from tracker.guard import ConnectionGuard
from tracker.settings import TrackerSettings
from tracker.store import AnnounceRejected, PeerAnnounce, PeerStore, StoreStats, SyncPeerStore, TrackerFull
from tracker.users import PrivateTracker

log = logging.getLogger("pytorrent.tracker")
access_log = logging.getLogger("pytorrent.tracker.access")

#: Failure reasons the tracker itself sends (the codec's parse errors come on top).
NOT_ALLOWED = "torrent not allowed"
STORE_UNAVAILABLE = "tracker store unavailable"
_EVENTS = tuple(AnnounceEvent)  # indexed by the BEP 15 number
#: Entries kept in the address → packed-bytes cache before it is cleared.
_IP_CACHE_MAX = 65536
#: Distinct client prefixes counted for the status page; later ones count as ``other``.
_CLIENTS_MAX = 256
#: Bytes of a peer id that name its client (Azureus style ``-lt0D60-``).
CLIENT_PREFIX_LEN = 8


class AllowList:
    """Info hashes a private tracker serves, read from a file of hex hashes (one a line,
    ``#`` comments). :meth:`reload` re-reads it; a bad file keeps the old list."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hashes: frozenset[bytes] = frozenset()
        self.reload()

    @staticmethod
    def parse(text: str) -> frozenset[bytes]:
        out = set()
        for number, line in enumerate(text.splitlines(), 1):
            word = line.split("#", 1)[0].strip()
            if not word:
                continue
            try:
                raw = bytes.fromhex(word)
            except ValueError:
                raw = b""
            if len(raw) != 20:
                raise ValueError(f"line {number}: not a 40-digit hex info hash: {word[:60]!r}")
            out.add(raw)
        return frozenset(out)

    def reload(self) -> bool:
        """Re-read the file; returns False (and logs) when it cannot be read or parsed."""
        try:
            hashes = self.parse(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            log.error(
                "allow-list %s not (re)loaded, keeping %d entries: %s", self.path, len(self.hashes), exc
            )
            return False
        self.hashes = hashes
        log.info("allow-list %s: %d info hashes", self.path, len(hashes))
        return True


@dataclass(slots=True)
class Counters:
    """Monotonic counters bumped by the front ends (exported on ``/metrics``)."""

    http_announces: int = 0
    udp_announces: int = 0
    http_scrapes: int = 0
    udp_scrapes: int = 0
    udp_connects: int = 0
    failures_bad_request: int = 0
    failures_not_allowed: int = 0
    failures_store_unavailable: int = 0
    failures_rejected: int = 0
    failures_full: int = 0  # a new swarm past max_swarms
    failures_private: int = 0  # refused by a private-mode rule (passkey, ratio, client...)
    failures_internal: int = 0
    udp_dropped_short: int = 0
    udp_dropped_malformed: int = 0
    udp_bad_connection_id: int = 0
    udp_dropped_busy: int = 0


class TrackerService:
    """The transport-independent part of one tracker process.

    Args:
        store: where swarms live. When it also implements :class:`SyncPeerStore`,
            :attr:`sync_store` is that same object and the transports take the fast path.
        settings: the tracker's settings.
        clock: wall-clock seconds for uptime and rates (tests may fake it).
    """

    def __init__(
        self, store: PeerStore, settings: TrackerSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        #: ``store`` when it can answer without awaiting, else ``None`` (decided once, here).
        self.sync_store: SyncPeerStore | None = store if isinstance(store, SyncPeerStore) else None
        self.settings = settings
        self.allow = AllowList(settings.allow_file) if settings.allow_file is not None else None
        self.counters = Counters()
        self.clock = clock
        self.started_at = clock()
        self._ip_cache: dict[str, bytes] = {}
        self._rate_window: deque[tuple[float, int]] = deque(maxlen=13)
        self._announces_at_last_log = 0
        #: announces left before the next access-log line (the transports' hot paths
        #: count it down themselves and call :meth:`log_access` at zero)
        self.log_countdown = settings.log_every
        self._last_log_at = self.started_at
        self.numwant_default = settings.numwant_default
        self.numwant_max = settings.numwant_max
        self.last_stats = StoreStats(0, 0, 0, 0)
        #: peer-id prefix (the client, e.g. ``-lt0D60-``) -> announces; shown on the
        #: status page. The prefix is chosen by the peer: it is shown escaped.
        self.clients: dict[bytes, int] = {}
        #: private mode (passkeys, rules, accounting); set by the server
        self.private: PrivateTracker | None = None
        #: the HTTP connection guard (set by the server; aiohttp's test server has none)
        self.guard: ConnectionGuard | None = None

    # ------------------------------------------------------------ announces

    def pack_address(self, ip: str) -> bytes | None:
        """Packed 4- or 16-byte address of ``ip`` (IPv4-mapped IPv6 becomes IPv4), or
        ``None`` if it is not an IP literal. Cached: the same clients come back."""
        packed = self._ip_cache.get(ip)
        if packed is None:
            try:
                addr = ipaddress.ip_address(ip.partition("%")[0])
            except ValueError:
                return None
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            packed = addr.packed
            if len(self._ip_cache) >= _IP_CACHE_MAX:
                self._ip_cache.clear()
            self._ip_cache[ip] = packed
        return packed

    def allowed(self, info_hash: bytes) -> bool:
        return self.allow is None or info_hash in self.allow.hashes

    def scrapable(self, info_hash: bytes) -> bool:
        """Whether a scrape may show ``info_hash``: allowed and, in private mode, registered."""
        private = self.private
        return self.allowed(info_hash) and (private is None or private.scrapable(info_hash))

    def peer_announce(
        self, req: AnnounceRequest, source: bytes, *, both_families: bool, want_peer_ids: bool
    ) -> PeerAnnounce:
        """The store's view of ``req``: the address chosen, ``numwant`` capped.

        ``source`` is the packed address the request came from. The ``ip``/``ipv6``
        parameters replace it only with ``accept_ip_param``.
        """
        addr = source
        if self.settings.accept_ip_param:
            for claimed in (req.ip, req.ipv6):
                if claimed is not None:
                    packed = self.pack_address(claimed)
                    if packed is not None:
                        addr = packed
                        break
        return self.raw_peer_announce(
            req.info_hash,
            req.peer_id,
            addr,
            req.port,
            req.key,
            req.left,
            req.event,
            -1 if req.numwant is None else req.numwant,
            both_families,
            want_peer_ids,
        )

    def raw_peer_announce(
        self,
        info_hash: bytes,
        peer_id: bytes,
        addr: bytes,
        port: int,
        key: int | None,
        left: int,
        event: int,
        numwant: int,
        both_families: bool,
        want_peer_ids: bool,
    ) -> PeerAnnounce:
        """:meth:`peer_announce` from raw fields (the UDP hot path); ``numwant`` < 0
        means the default."""
        if event == 3:  # stopped: no peers needed
            numwant = 0
        elif numwant < 0:
            numwant = self.numwant_default
        elif numwant > self.numwant_max:
            numwant = self.numwant_max
        return PeerAnnounce(
            info_hash,
            peer_id,
            addr + port.to_bytes(2, "big"),
            key,
            left == 0,
            _EVENTS[event],
            numwant,
            both_families,
            want_peer_ids,
        )

    def note_client(self, peer_id: bytes) -> None:
        """Count an announce under its client's peer-id prefix (a bounded table)."""
        prefix = peer_id[:CLIENT_PREFIX_LEN]
        clients = self.clients
        if prefix in clients:
            clients[prefix] += 1
        elif len(clients) < _CLIENTS_MAX:
            clients[prefix] = 1
        else:
            clients[b"other"] = clients.get(b"other", 0) + 1

    def top_clients(self, n: int) -> list[tuple[bytes, int]]:
        """The ``n`` prefixes with the most announces, most first."""
        return sorted(self.clients.items(), key=lambda kv: -kv[1])[:n]

    def note_rejected(self, exc: AnnounceRejected) -> None:
        """Count a refusal by the store (a full tracker apart from the rest)."""
        if isinstance(exc, TrackerFull):
            self.counters.failures_full += 1
        else:
            self.counters.failures_rejected += 1

    def note_announce(self) -> None:
        """Called once per announce answered; writes the access log every ``log_every``."""
        self.log_countdown -= 1
        if self.log_countdown <= 0:
            self.log_access()

    def log_access(self) -> None:
        """One access-log line: the announces since the last one, and totals."""
        self.log_countdown = self.settings.log_every
        c = self.counters
        total = c.http_announces + c.udp_announces
        now = self.clock()
        span = max(now - self._last_log_at, 1e-9)
        n = total - self._announces_at_last_log
        access_log.info(
            "%d announces in %.1fs (%.0f/s): http %d, udp %d total; scrapes %d; failures %d; udp dropped %d",
            n,
            span,
            n / span,
            c.http_announces,
            c.udp_announces,
            c.http_scrapes + c.udp_scrapes,
            self.failures(),
            c.udp_dropped_short + c.udp_dropped_malformed + c.udp_bad_connection_id + c.udp_dropped_busy,
        )
        self._announces_at_last_log = total
        self._last_log_at = now

    def failures(self) -> int:
        c = self.counters
        return (
            c.failures_bad_request
            + c.failures_not_allowed
            + c.failures_store_unavailable
            + c.failures_rejected
            + c.failures_full
            + c.failures_private
            + c.failures_internal
        )

    # ------------------------------------------------------------ housekeeping

    def tick(self) -> None:
        """Record a rate sample; the housekeeping task calls this every few seconds."""
        c = self.counters
        self._rate_window.append((self.clock(), c.http_announces + c.udp_announces))

    def announces_per_second(self) -> float:
        """Announce rate over the last minute or so (from :meth:`tick` samples)."""
        c = self.counters
        now, total = self.clock(), c.http_announces + c.udp_announces
        if not self._rate_window:
            span = now - self.started_at
            return total / span if span > 0 else 0.0
        t0, n0 = self._rate_window[0]
        return (total - n0) / (now - t0) if now > t0 else 0.0

    def uptime_s(self) -> float:
        return self.clock() - self.started_at

    # ------------------------------------------------------------ exports

    def metrics_text(self, stats: StoreStats) -> str:
        """Everything in the Prometheus text exposition format (version 0.0.4)."""
        c = self.counters
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lines.append(
                    f"{name}{labels} {value:g}" if isinstance(value, float) else f"{name}{labels} {value}"
                )

        metric(
            "pytorrent_tracker_announces_total",
            "counter",
            "Announces answered (including failures).",
            [('{transport="http"}', c.http_announces), ('{transport="udp"}', c.udp_announces)],
        )
        metric(
            "pytorrent_tracker_scrapes_total",
            "counter",
            "Scrapes answered.",
            [('{transport="http"}', c.http_scrapes), ('{transport="udp"}', c.udp_scrapes)],
        )
        metric(
            "pytorrent_tracker_udp_connects_total",
            "counter",
            "BEP 15 connect requests.",
            [("", c.udp_connects)],
        )
        metric(
            "pytorrent_tracker_failures_total",
            "counter",
            "Requests answered with a failure reason or UDP error.",
            [
                ('{reason="bad_request"}', c.failures_bad_request),
                ('{reason="not_allowed"}', c.failures_not_allowed),
                ('{reason="store_unavailable"}', c.failures_store_unavailable),
                ('{reason="rejected"}', c.failures_rejected),
                ('{reason="full"}', c.failures_full),
                ('{reason="private"}', c.failures_private),
                ('{reason="internal"}', c.failures_internal),
            ],
        )
        metric(
            "pytorrent_tracker_udp_bad_packets_total",
            "counter",
            "UDP packets dropped or refused.",
            [
                ('{reason="short"}', c.udp_dropped_short),
                ('{reason="malformed"}', c.udp_dropped_malformed),
                ('{reason="bad_connection_id"}', c.udp_bad_connection_id),
                ('{reason="busy"}', c.udp_dropped_busy),
            ],
        )
        guard = self.guard
        if guard is not None:
            g = guard.counters
            metric(
                "pytorrent_tracker_http_connections",
                "gauge",
                "HTTP connections open, and the cap.",
                [('{state="open"}', guard.open), ('{state="cap"}', guard.max_connections)],
            )
            metric(
                "pytorrent_tracker_http_refused_total",
                "counter",
                "HTTP connections or requests refused by the connection guard, by kind.",
                [
                    ('{reason="cap"}', g.refused_cap),
                    ('{reason="evicted"}', g.evicted),
                    ('{reason="slow_request"}', g.slow_request),
                    ('{reason="idle"}', g.idle),
                    ('{reason="body"}', g.body_refused),
                    ('{reason="bad_request"}', g.bad_request),
                ],
            )
        metric("pytorrent_tracker_swarms", "gauge", "Swarms with at least one peer.", [("", stats.swarms)])
        metric(
            "pytorrent_tracker_peers",
            "gauge",
            "Peers by state.",
            [('{state="seed"}', stats.seeds), ('{state="leecher"}', stats.peers - stats.seeds)],
        )
        metric(
            "pytorrent_tracker_downloads",
            "gauge",
            "Completed events counted, live swarms.",
            [("", stats.downloaded)],
        )
        metric(
            "pytorrent_tracker_uptime_seconds",
            "gauge",
            "Seconds since start.",
            [("", round(self.uptime_s(), 3))],
        )
        return "\n".join(lines) + "\n"
