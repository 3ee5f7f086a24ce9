"""The tracker's settings: one frozen dataclass, filled once from the command line."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    """Every knob of ``pytorrent tracker``, with its default.

    Attributes:
        host: address the HTTP and UDP sockets bind to (``0.0.0.0``, ``::``, ``127.0.0.1``...).
        port: HTTP port; 0 picks a free one (tests).
        udp_port: BEP 15 port; ``None`` means the same number as ``port``; ``-1`` turns UDP off.
        interval_s: ``interval`` sent to clients.
        min_interval_s: ``min interval`` sent to clients.
        peer_ttl_s: a peer that has not announced for this long is gone; ``None`` means
            2 x ``interval_s``.
        numwant_default: peers returned when the client does not say ``numwant``.
        numwant_max: the cap on ``numwant``.
        allow_file: when set, only the info hashes listed there (hex, one a line) are
            tracked; re-read on SIGHUP.
        store: ``memory``, a ``redis://`` URL, or ``redis-cluster://HOST:PORT[,HOST:PORT...]``.
        workers: tracker processes sharing the port (SO_REUSEPORT); more than one needs Redis.
        reuse_port: bind with SO_REUSEPORT (set for every worker when ``workers > 1``).
        full_scrape: answer ``/scrape`` without ``info_hash`` with every swarm.
        full_scrape_max: at most this many swarms in a full scrape.
        accept_ip_param: track a peer at the ``ip``/``ipv6`` it names instead of the
            address its request came from. Off by default: it lets anyone point a swarm
            at a third party.
        log_every: one access-log line per this many announces.
        udp_secret: key for UDP connection ids; random per start when ``None``. Set it
            (the same on every host) when several hosts share one Redis.
        redis_timeout_s: how long a Redis round trip may take before the announce fails.
        private_users: ``sqlite:///PATH``: private mode (passkeys, accounting, access
            rules; see ``tracker.users``). ``None``: a public tracker.
        ratio_floor: private mode: a user whose upload/download ratio is below this
            (after ``ratio_grace_bytes`` downloaded) may not start new downloads; 0 is off.
        ratio_grace_bytes: bytes a user may download before the ratio floor applies.
        max_rate_bps: private mode: a reported rate above this between two announces
            is flagged and not counted.
        leech_ip_limit: private mode: addresses one user may leech from at once.
        client_allow: private mode: when set, only peer ids starting with one of these.
        client_deny: private mode: peer-id prefixes refused (e.g. ``-XL`` for Xunlei).
        accounting_flush_s: private mode: seconds between accounting writes.
        users_poll_s: private mode: seconds between checks for database changes.
        max_connections: HTTP connections open at once; lowered to the open-file limit
            less a reserve (see ``tracker.guard``). Past it the connection that has waited
            longest for its request is evicted, or the newcomer is reset.
        header_timeout_s: seconds an HTTP connection has to send a complete request head
            after opening or after its previous answer.
        body_timeout_s: seconds spent reading a request body (never used) before closing.
        max_swarms: swarms tracked at once; an announce that would start one more is
            refused with a failure reason (about 1 GB of RAM at the default, see README).
    """

    host: str = "0.0.0.0"
    port: int = 6969
    udp_port: int | None = None
    interval_s: int = 1800
    min_interval_s: int = 900
    peer_ttl_s: int | None = None
    numwant_default: int = 50
    numwant_max: int = 200
    allow_file: Path | None = None
    store: str = "memory"
    workers: int = 1
    reuse_port: bool = False
    full_scrape: bool = False
    full_scrape_max: int = 10_000
    accept_ip_param: bool = False
    log_every: int = 10_000
    udp_secret: bytes | None = None
    redis_timeout_s: float = 2.0
    private_users: str | None = None
    ratio_floor: float = 0.0
    ratio_grace_bytes: int = 1 << 30
    max_rate_bps: int = 128 << 20
    leech_ip_limit: int = 3
    client_allow: tuple[str, ...] = ()
    client_deny: tuple[str, ...] = ()
    accounting_flush_s: float = 10.0
    users_poll_s: float = 2.0
    max_connections: int = 8192
    header_timeout_s: float = 5.0
    body_timeout_s: float = 5.0
    max_swarms: int = 1_000_000

    @property
    def ttl_s(self) -> int:
        return self.peer_ttl_s if self.peer_ttl_s is not None else 2 * self.interval_s

    @property
    def udp_enabled(self) -> bool:
        return self.udp_port != -1

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that makes no sense."""
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port {self.port} is not a port number")
        if self.udp_port is not None and not -1 <= self.udp_port <= 65535:
            raise ValueError(f"--udp-port {self.udp_port} is not a port number")
        if self.interval_s < 1 or self.min_interval_s < 0 or self.min_interval_s > self.interval_s:
            raise ValueError("--interval must be >= 1 and --min-interval between 0 and --interval")
        if self.ttl_s < 1:
            raise ValueError("--peer-ttl must be at least 1 second")
        if not 0 <= self.numwant_default <= self.numwant_max or self.numwant_max > 10_000:
            raise ValueError("--numwant-default must be between 0 and --numwant-max (at most 10000)")
        if self.store.startswith("redis-cluster://"):
            _check_cluster_url(self.store)
        elif self.store != "memory" and not self.store.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("--store must be 'memory', a redis:// URL or redis-cluster://HOST:PORT[,...]")
        if self.workers < 1:
            raise ValueError("--workers must be at least 1")
        if self.workers > 1 and self.store == "memory":
            raise ValueError("--workers > 1 needs a shared store: --store redis://...")
        if self.workers > 1 and (self.port == 0 or self.udp_port == 0):
            raise ValueError("--workers > 1 needs fixed ports (not 0)")
        if self.private_users is not None and not self.private_users.startswith("sqlite:///"):
            raise ValueError("--private-users must be sqlite:///PATH")
        if self.ratio_floor < 0 or self.leech_ip_limit < 1 or self.max_rate_bps < 1:
            raise ValueError("--ratio-floor must be >= 0, --leech-ips and --max-rate >= 1")
        if self.log_every < 1:
            raise ValueError("--log-every must be at least 1")
        self._validate_bounds()

    def _validate_bounds(self) -> None:
        """The limits that protect the tracker from hostile clients."""
        if self.max_connections < 1 or self.max_swarms < 1:
            raise ValueError("--max-connections and --max-swarms must be at least 1")
        if not 0 < self.header_timeout_s <= 3600 or not 0 < self.body_timeout_s <= 3600:
            raise ValueError("--header-timeout and --body-timeout must be between 0 and 3600 seconds")

    def describe(self) -> list[str]:
        """``name=value`` for every setting, for the start-up log (the secret is hidden)."""
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "udp_secret":
                value = "(random)" if value is None else "(set)"
            elif f.name == "store" and "@" in str(value):
                scheme, _, rest = str(value).partition("://")
                value = f"{scheme}://***@{rest.rpartition('@')[2]}"
            out.append(f"{f.name}={value}")
        out.append(f"effective peer_ttl_s={self.ttl_s}")
        return out


def _check_cluster_url(url: str) -> None:
    """The same check as ``tracker.store_redis_cluster.parse_cluster_url``, without importing redis."""
    rest = url[len("redis-cluster://") :].rstrip("/").rpartition("@")[2]
    for part in rest.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--store redis-cluster://...: {part!r} is not HOST:PORT")
