"""``Settings``: every knob of the client in one frozen dataclass.

One value per knob, each with its default and the reason for it, as libtorrent's
``settings_pack`` and anacrolix's ``ClientConfig`` do. The CLI builds one ``Settings``
from its flags, the library passes it down; no module reads globals or the environment
on its own (docs/ARCHITECTURE.md, "One source of truth per concept"). Change a copy with :func:`dataclasses.replace`.

Units are in the names: ``*_s`` seconds, ``*_bps`` bytes per second, ``*_bytes`` bytes.
A rate limit of 0 means unlimited.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from torrent import version

#: Azureus-style client prefix of our peer ids (BEP 20): ``-PT0100-`` (for 0.1.0) + 12 random
#: bytes; derived from the version in :mod:`torrent.version`.
PEER_ID_PREFIX = version.PEER_ID_PREFIX

#: The well-known public DHT routers (what libtorrent, Transmission and qBittorrent use to
#: join the Mainline DHT the first time; a saved routing table makes them unnecessary).
DEFAULT_DHT_ROUTERS: tuple[tuple[str, int], ...] = (
    ("router.bittorrent.com", 6881),
    ("router.utorrent.com", 6881),
    ("dht.transmissionbt.com", 6881),
    ("dht.libtorrent.org", 25401),
)


class Encryption(enum.StrEnum):
    """How peer connections use Message Stream Encryption (MSE/PE); the CLI's ``--encryption``.

    The members compare equal to their strings (``"require"``, ``"prefer"``, ``"off"``).
    """

    #: Never send nor accept a plaintext BitTorrent handshake: every connection is MSE with
    #: RC4 (libtorrent ``pe_forced`` with ``allowed_enc_level = pe_rc4``).
    REQUIRE = "require"
    #: Dial with MSE first and, when the peer refuses it, again in plaintext on a new
    #: connection; accept both (libtorrent ``pe_enabled``).
    PREFER = "prefer"
    #: Plaintext only: never encrypt, and answer only plaintext handshakes (an MSE one is
    #: dropped as the garbage it is to a plaintext peer; libtorrent ``pe_disabled``).
    OFF = "off"


@dataclass(frozen=True, slots=True)
class Settings:
    """Client configuration. Every field has a default; see each comment for why."""

    # --- network -------------------------------------------------------------------
    #: Address the listening socket binds. "0.0.0.0" accepts from anywhere, and then
    #: ``::`` is listened on too (see :meth:`listen_addresses`); tests and the demo use
    #: "127.0.0.1".
    listen_host: str = "0.0.0.0"
    #: Listening port; 0 picks a free one (read it back from ``Session.port``).
    #: 6881 is BitTorrent's traditional first port.
    listen_port: int = 6881
    #: Every address to listen on, as (host, port), when ``listen_host``/``listen_port``
    #: are not enough (``--listen 0.0.0.0:6881,[::]:6881``, libtorrent's
    #: ``listen_interfaces``). Port 0 after the first entry means "the first one's port",
    #: so both families share one number (the one announced). Empty: derived, see
    #: :meth:`listen_addresses`.
    listen_interfaces: tuple[tuple[str, int], ...] = ()
    #: Address we tell trackers, when it differs from what they see (``ip=``). None: omit.
    announce_ip: str | None = None
    #: Map the listen port (TCP and UDP) on the home router: NAT-PMP (RFC 6886) or PCP
    #: (RFC 6887), else UPnP IGD. On by default as in libtorrent, Transmission and
    #: qBittorrent: behind a router nobody could connect to us otherwise.
    port_mapping: bool = True
    #: Lease asked for each mapping; it is renewed when half of it has passed
    #: (RFC 6886 recommends an hour, and renewing at half the lifetime).
    port_mapping_lease_s: int = 3600
    #: Tell trackers the external address the router reported (``ip=``, and BEP 7's
    #: ``ipv4=``), unless ``announce_ip`` says otherwise. Off by default: most trackers take the source
    #: address, and a wrong hint could hide us.
    announce_external_ip: bool = False
    #: Message Stream Encryption (see :class:`Encryption`). ``prefer`` reaches peers that
    #: require encryption and peers that do not speak it; the MSE handshake costs one
    #: round trip and 96-608 bytes each way, RC4 well under a CPU second per GiB.
    encryption: Encryption = Encryption.PREFER

    # --- peers ---------------------------------------------------------------------
    #: Connected peers per torrent (libtorrent ``connections_limit`` is global 200; a
    #: torrent rarely gains from more than ~50).
    max_peers_per_torrent: int = 50
    #: Connected peers over the whole session.
    max_peers_total: int = 200
    #: Outgoing connection attempts in flight at once (libtorrent ``half_open_limit``
    #: used to be 8 on Windows XP; a few tens is harmless elsewhere).
    half_open_limit: int = 20
    #: Seconds a TCP connect may take before we give up on that address.
    connect_timeout_s: float = 10.0
    #: Seconds a peer has to complete the handshake once connected.
    handshake_timeout_s: float = 10.0
    #: Incoming connections still waiting for their handshake, session-wide; past it the
    #: newest is closed at once, so idle connections cannot pile up for
    #: ``handshake_timeout_s`` each (a few tens covers a busy torrent's arrivals).
    max_pending_incoming: int = 32
    #: Of those, from one address: a flood from one host cannot take the room of others.
    max_pending_incoming_per_ip: int = 4
    #: Known (not connected) peers kept per torrent; more are dropped, oldest first.
    max_known_peers: int = 1000
    #: After the n-th failed attempt wait ``retry_backoff_s * 2**(n-1)`` (at most
    #: ``retry_backoff_max_s``, jittered down by up to a quarter) before trying again.
    retry_backoff_s: float = 15.0
    retry_backoff_max_s: float = 600.0
    #: Give up on an address after this many consecutive failures.
    max_failures: int = 5
    #: A connection that ends sooner than this without carrying payload counts as a
    #: failed attempt (a peer that handshakes and hangs up must not be redialled at once).
    short_connection_s: float = 30.0
    #: Ban an address at its n-th protocol violation (an oversized or malformed message).
    max_violations: int = 2
    #: Number of peers the tracker is asked for (``numwant``).
    numwant: int = 50

    # --- the wire ------------------------------------------------------------------
    #: BEP 3 says peers send a keep-alive every two minutes of silence.
    keepalive_interval_s: float = 120.0
    #: Drop a peer that sent nothing at all for this long (libtorrent ``inactivity_timeout``
    #: is 600 s; 3 missed keep-alives is plenty).
    idle_timeout_s: float = 180.0
    #: A request unanswered for this long is cancelled and its block given to another
    #: peer (libtorrent ``request_timeout`` is 60 s; blocks are small, 20 s is generous).
    request_timeout_s: float = 20.0
    #: A peer that sends us no payload for this long while we wait on it is *snubbed*:
    #: its pipeline shrinks to one request (libtorrent ``snub`` logic).
    snub_timeout_s: float = 30.0
    #: Drop a peer that sent no payload for this long while we waited on it (requests
    #: outstanding or timed out): it stalls or trickles (libtorrent ``peer_timeout`` 120 s).
    peer_timeout_s: float = 60.0
    #: Seconds of a peer's measured rate kept in requests (libtorrent
    #: ``request_queue_time`` default 3 s): depth = rate * queue_time / BLOCK_SIZE.
    request_queue_time_s: float = 3.0
    #: Lower bound of the request pipeline: enough to fill the pipe before a rate is known.
    pipeline_min: int = 4
    #: Upper bound of the request pipeline (libtorrent ``max_out_request_queue`` 500).
    pipeline_max: int = 500
    #: Requests from one peer we accept before dropping further ones (libtorrent
    #: ``max_allowed_in_request_queue`` is 2000; 500 keeps memory small).
    max_incoming_requests: int = 500
    #: Bytes queued in a peer's transport before we stop reading from disk for it:
    #: write back-pressure, so a slow peer cannot grow our memory.
    send_buffer_high_bytes: int = 1 << 20
    # No receive-side twin: a peer's reads are parsed as they arrive, so at most one incomplete
    # message waits (bounded by the wire's frame limits); the download limit pauses reading.

    # --- choking (BEP 3) -----------------------------------------------------------
    #: The choker re-ranks peers every 10 s (BEP 3: "every ten seconds").
    choke_interval_s: float = 10.0
    #: The optimistic unchoke rotates every 30 s (BEP 3: "every 30 seconds").
    optimistic_interval_s: float = 30.0
    #: Regular unchoke slots per torrent (BEP 3 suggests 4), plus one optimistic.
    unchoke_slots: int = 4

    # --- rates ---------------------------------------------------------------------
    #: Session-wide upload limit in bytes/s; 0 = unlimited.
    max_upload_bps: int = 0
    #: Session-wide download limit in bytes/s; 0 = unlimited.
    max_download_bps: int = 0

    # --- storage & resume ----------------------------------------------------------
    #: Resume state is saved at least this often while downloading (and on completion
    #: and exit).
    resume_save_interval_s: float = 30.0
    #: Most pieces that may be assembled or awaiting verification at once, bounding
    #: memory (each holds up to a piece of received blocks). Below this bound the number
    #: follows the peers' request pipelines, which follow their measured rates.
    max_pieces_in_flight: int = 64
    #: Whole verified pieces are written past the page cache (``O_DIRECT``), which costs
    #: far less CPU than copying them into it; file systems that refuse it are written
    #: through the cache anyway. False writes everything through the cache, as for a
    #: network file system or data that will be read back at once.
    direct_writes: bool = True

    # --- trackers ------------------------------------------------------------------
    #: Used when a tracker gives no interval (BEP 3 trackers always do; be patient).
    default_announce_interval_s: float = 1800.0
    #: Never re-announce more often than this, whatever the tracker says.
    min_announce_interval_s: float = 5.0
    #: Seconds one HTTP announce may take.
    tracker_timeout_s: float = 15.0
    #: The ``stopped`` announce on shutdown must not hold up exit.
    stopped_announce_timeout_s: float = 2.0
    #: First retry delay after a failed announce; doubled each failure up to ``..._max``.
    announce_retry_s: float = 15.0
    announce_retry_max_s: float = 900.0

    # --- peer discovery without a tracker (DHT, BEP 5) ------------------------------
    #: Join the Mainline DHT on the listen port (UDP) and use it for every non-private
    #: torrent (BEP 27: a ``private`` torrent never touches the DHT).
    dht_enabled: bool = True
    #: Nodes to join through when the saved routing table gives none (host, port).
    dht_bootstrap: tuple[tuple[str, int], ...] = DEFAULT_DHT_ROUTERS
    #: Where the routing table is loaded from at start and saved to on exit; None: nowhere
    #: (the CLI puts it in the download directory's ``.pytorrent/``).
    dht_state_file: str | None = None
    #: A torrent asks the DHT for peers (and announces itself) this often: libtorrent's
    #: ``dht_announce_interval`` is 15 minutes, as are BEP 5's token and refresh periods.
    dht_announce_interval_s: float = 900.0
    #: ...and this often while it knows fewer than ``dht_few_peers`` peers.
    dht_retry_interval_s: float = 60.0
    dht_few_peers: int = 10

    # --- uTP (BEP 29) -----------------------------------------------------------------
    #: Speak uTP on the listen port (UDP, shared with the DHT): accept uTP connections and
    #: dial uTP first, falling back to TCP (``--no-utp`` turns both off; TCP only then).
    utp_enabled: bool = True
    #: A uTP SYN unanswered this long: dial the peer over TCP instead, and remember it.
    utp_connect_timeout_s: float = 2.0
    #: The receive window each uTP connection advertises (libtorrent: its receive buffer).
    utp_recv_buffer_bytes: int = 1 << 20

    # --- peer exchange (BEP 11) -------------------------------------------------------
    #: Exchange peer lists (``ut_pex``) with connected peers; never for a private torrent.
    pex_enabled: bool = True
    #: BEP 11: at most one ``ut_pex`` message per peer per minute.
    pex_interval_s: float = 60.0

    # --- local service discovery (BEP 14) -------------------------------------------
    #: Multicast our torrents on the local network (239.192.152.143:6771) and take the
    #: peers that announce them there; never for a private torrent.
    lsd_enabled: bool = True
    #: BEP 14 / libtorrent: each torrent is announced at most every 5 minutes.
    lsd_interval_s: float = 300.0

    # --- web seeds (BEP 19) ---------------------------------------------------------
    #: Use the torrent's ``url-list`` web seeds (and a magnet's ``ws=``); False ignores
    #: them (``--no-web-seeds``). ``web_seeds`` is added to every torrent either way.
    use_web_seeds: bool = True
    #: Web seeds added to every torrent (``--web-seed URL``, repeatable).
    web_seeds: tuple[str, ...] = ()
    #: Requests in flight per web seed (libtorrent uses one connection per web seed).
    web_seed_connections: int = 2
    #: Bytes one web seed request asks for at most (rounded to blocks; at least a piece
    #: when runs are long). Bytes in flight per web seed: this times the connections.
    web_seed_request_bytes: int = 4 << 20
    #: Seconds to connect and get the response headers.
    web_seed_timeout_s: float = 20.0
    #: A web seed sending less than this many bytes/s over ``web_seed_slow_window_s`` is
    #: dropped and backs off (a trickle must not hold pieces hostage).
    web_seed_min_rate_bps: int = 1024
    web_seed_slow_window_s: float = 30.0
    #: First back-off after a failure, doubled each time up to ``..._max`` (libtorrent
    #: retries an unreachable web seed after 30 s); ``Retry-After`` is honoured.
    web_seed_retry_s: float = 30.0
    web_seed_retry_max_s: float = 900.0
    #: Redirects followed per request (a loop ends here).
    web_seed_max_redirects: int = 5
    #: While connected peers deliver at least this rate, web seeds are asked only for
    #: pieces no connected peer has.
    web_seed_peer_rate_bps: int = 1 << 20

    # --- seeding -------------------------------------------------------------------
    #: Stop seeding when uploaded / size reaches this ratio (aria2 ``--seed-ratio`` 1.0).
    #: None: no ratio limit.
    seed_ratio: float | None = 1.0
    #: Stop seeding after this many seconds of seeding. None: no time limit.
    seed_time_s: float | None = None

    def replace(self, **changes: object) -> Settings:
        """A copy with ``changes`` applied (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def listen_addresses(self) -> tuple[tuple[str, int], ...]:
        """Where the session listens: ``listen_interfaces`` when given; else
        ``listen_host`` on ``listen_port``, and when that host is ``0.0.0.0`` also ``::``
        on the same port (dual stack, libtorrent's default ``0.0.0.0:6881,[::]:6881``; two
        sockets, the IPv6 one ``IPV6_V6ONLY``)."""
        if self.listen_interfaces:
            return self.listen_interfaces
        if self.listen_host == "0.0.0.0":
            return (("0.0.0.0", self.listen_port), ("::", 0))
        return ((self.listen_host, self.listen_port),)

    def _validate_network(self) -> None:
        for host, port in self.listen_interfaces:
            if not host or not 0 <= port <= 65535:
                raise ValueError(f"listen_interfaces: {host}:{port} is not an address to listen on")
        if self.port_mapping_lease_s < 2:
            raise ValueError("port_mapping_lease_s must be at least 2")

    def validate(self) -> Settings:
        """Check ranges; returns ``self``. Raises ``ValueError`` naming the bad knob."""
        if not 0 <= self.listen_port <= 65535:
            raise ValueError(f"listen_port {self.listen_port} is not a port number")
        self._validate_network()
        for name in (
            "max_peers_per_torrent",
            "max_peers_total",
            "half_open_limit",
            "max_pending_incoming",
            "max_pending_incoming_per_ip",
            "unchoke_slots",
            "web_seed_connections",
            "web_seed_request_bytes",
            "max_violations",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 1 <= self.pipeline_min <= self.pipeline_max:
            raise ValueError("pipeline_min must be between 1 and pipeline_max")
        for name in ("max_upload_bps", "max_download_bps", "retry_backoff_s", "short_connection_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for host, port in self.dht_bootstrap:
            if not host or not 0 < port <= 65535:
                raise ValueError(f"dht_bootstrap: {host}:{port} is not a node address")
        if self.utp_connect_timeout_s <= 0 or self.utp_recv_buffer_bytes < 4096:
            raise ValueError("utp_connect_timeout_s must be positive and utp_recv_buffer_bytes at least 4096")
        if self.dht_retry_interval_s <= 0 or self.dht_announce_interval_s <= 0:
            raise ValueError("the DHT announce intervals must be positive")
        if self.retry_backoff_max_s < self.retry_backoff_s:
            raise ValueError("retry_backoff_max_s must be at least retry_backoff_s")
        if self.seed_ratio is not None and self.seed_ratio < 0:
            raise ValueError("seed_ratio must not be negative")
        if self.encryption not in tuple(Encryption):
            raise ValueError(f"encryption must be one of {', '.join(Encryption)}, not {self.encryption!r}")
        return self


def testing_settings() -> Settings:
    """Settings for tests and the demo: loopback, a free port, short timers.

    Mirrors anacrolix's ``TestingConfig``: nothing here may reach outside the machine, so
    the DHT is off and has no public routers (a test that wants it turns it on and points
    ``dht_bootstrap`` at a loopback node). PEX is off too, so a test sees exactly the peers
    it hands out (a PEX test turns it on), LSD is off (it would multicast), and so is port
    mapping (it would look for a router).
    """
    return Settings(
        listen_host="127.0.0.1",
        listen_port=0,
        connect_timeout_s=3.0,
        handshake_timeout_s=3.0,
        utp_connect_timeout_s=1.0,
        retry_backoff_s=0.5,
        request_timeout_s=4.0,
        snub_timeout_s=4.0,
        peer_timeout_s=8.0,
        choke_interval_s=2.0,
        optimistic_interval_s=6.0,
        min_announce_interval_s=0.5,
        announce_retry_s=0.5,
        tracker_timeout_s=3.0,
        stopped_announce_timeout_s=1.0,
        dht_enabled=False,
        dht_bootstrap=(),
        pex_enabled=False,
        lsd_enabled=False,
        port_mapping=False,
        dht_retry_interval_s=2.0,
        web_seed_timeout_s=3.0,
        web_seed_slow_window_s=1.0,
        web_seed_retry_s=0.2,
        web_seed_retry_max_s=2.0,
    )
