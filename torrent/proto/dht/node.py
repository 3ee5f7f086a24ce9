"""A whole Mainline DHT node (BEP 5, with BEP 32 and BEP 42) as one sans-IO object.

:class:`DhtProtocol` owns the routing tables, the peer store, the running lookups and
the outstanding transactions. It does no I/O and reads no clock:

    dht = DhtProtocol(node_id, now)
    dht.bootstrap([("192.0.2.1", 6881)], now)
    dht.receive_datagram(data, (host, port), now)        # any datagram that starts with b"d"
    for data, addr in dht.datagrams_to_send(): sock.sendto(data, addr)
    while (ev := dht.next_event()) is not None: ...      # LookupDone
    deadline = dht.next_timeout()                        # call dht.tick(now) then

Rules and invariants:

1. Every query we send has a transaction (tid, address, deadline). A response counts
   only if its tid is outstanding *and* it comes from the address the query went to.
   A transaction that reaches its deadline is a failure: the table counts it against
   the node and the lookup moves on.
2. Queries we receive are rate-limited per source IP before any work is done for them.
   A malformed query with a readable tid gets a KRPC error (203, or 204 for an unknown
   method); any other malformed datagram is dropped. Every drop is counted by reason.
3. Our answers carry ``ip`` (BEP 42: the requester's address as we see it); the ``ip``
   of answers we get is a vote for our external address, which ``statistics`` reports.
4. At most ``max_lookups`` lookups run at once; more wait their turn in order.
   While the routing table is empty, joining through the bootstrap addresses is tried
   again after 10 s, then 20 s, 40 s, ... up to ``REJOIN_MAX_S`` between attempts.
5. A get_peers lookup started with ``announce_port`` announces to the k closest nodes
   that gave a token once it converges, and finishes when those announces are answered
   or timed out.

6. BEP 42: once ``EXTERNAL_IP_QUORUM`` distinct responders agree on our external
   address (and it leads the vote) and our id does not conform to it, we take a
   conforming id (:meth:`change_node_id`): the tables are rebuilt around it and we join
   again, so the nodes near the new id learn of us. A local address (private,
   loopback) never changes the id.

BEP 32: one routing table per address family; ``want`` (``n4``/``n6``) picks which
family's nodes an answer carries; ``families`` says which ones we can reach.
Left out: BEP 44 storage, BEP 51 sampling, BEP 43 read-only mode.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from torrent.proto.dht import krpc, routing
from torrent.proto.dht.krpc import Address, NodeInfo
from torrent.proto.dht.lookup import Lookup
from torrent.proto.dht.routing import RoutingTable
from torrent.proto.dht.storage import PeerStore, RateLimiter, TokenIssuer

MAINTENANCE_EVERY_S: Final = 10.0
REJOIN_MAX_S: Final = 300.0  # longest wait between attempts to join while the table is empty
#: Distinct responders that must report the same external address before our id follows it.
EXTERNAL_IP_QUORUM: Final = 10
#: Candidate external addresses (and voters per candidate) remembered at once.
MAX_IP_CANDIDATES: Final = 64


@dataclass(frozen=True, slots=True)
class DhtConfig:
    """Knobs of one node; every default is what a node on the Internet should use."""

    k: int = 8  # BEP 5 bucket size and lookup width
    alpha: int = 3  # parallel queries per lookup
    query_timeout_s: float = 4.0  # a query unanswered this long has failed
    query_slow_s: float = 1.0  # ... and stops holding up its lookup after this long
    max_lookups: int = 32  # running at once; more are queued
    rate_per_ip_per_s: float = 20.0  # queries one IP may send us; 0 turns the limit off
    rate_burst: float = 40.0
    max_per_ip: int = 1  # routing-table nodes that may share an IP
    enforce_node_id: bool = False  # BEP 42: refuse non-conforming node ids outright
    max_peers: int = 100_000  # stored announces, all info hashes together
    max_info_hashes: int = 10_000
    max_peers_per_info_hash: int = 500
    max_stored_per_ip: int = 200  # announces one IP may have stored, all info hashes together
    peer_ttl_s: float = 30 * 60
    token_rotate_s: float = 5 * 60  # a token stays valid for one to two rotations
    max_values: int = 50  # peers in one get_peers answer
    families: tuple[int, ...] = (4,)  # address families we can send to (BEP 32)


@dataclass(frozen=True, slots=True)
class LookupDone:
    """A lookup (find_node, or get_peers and maybe announce_peer) has finished.

    Attributes:
        lookup_id: what the starting call returned.
        kind: ``"find_node"`` or ``"get_peers"``.
        target: the id or info hash looked up.
        peers: peers found (get_peers).
        closest: the k closest nodes that answered, nearest first.
        hops: depth of the closest answering node (1 = a seed).
        queries: queries the lookup sent.
        elapsed_s: time from start to convergence.
        announced: announce_peer queries answered without error.
    """

    lookup_id: int
    kind: str
    target: bytes
    peers: tuple[Address, ...]
    closest: tuple[NodeInfo, ...]
    hops: int
    queries: int
    elapsed_s: float
    announced: int = 0


@dataclass(frozen=True, slots=True)
class DhtStatistics:
    node_id: bytes
    nodes: int  # IPv4 routing table
    nodes6: int  # IPv6 routing table
    good_nodes: int
    replacements: int
    buckets: int
    stored_peers: int
    stored_info_hashes: int
    queries_in: int
    queries_out: int
    responses_in: int
    errors_in: int
    timeouts: int
    lookups_running: int
    lookups_queued: int
    rate_limited_ips: int
    external_ip: str | None
    dropped: dict[str, int] = field(default_factory=dict)  # by reason
    id_changes: int = 0  # BEP 42: times our id was changed to conform to our external address


@dataclass(slots=True)
class _Transaction:
    address: Address
    method: str  # "ping", "find_node", "get_peers", "announce_peer"
    node_id: bytes | None  # the id we expect to answer, when known
    lookup_id: int | None
    deadline: float


@dataclass(slots=True)
class _Running:
    lookup: Lookup
    internal: bool  # table maintenance: no event
    announce_port: int | None = None
    implied_port: bool = False
    announcing: int = 0  # announce_peer queries still pending
    announced: int = 0
    converged: bool = False


def _family(host: str) -> int:
    return 6 if ":" in host else 4


class DhtProtocol:
    """One DHT node, sans-IO. See the module docstring for the rules.

    Args:
        node_id: our 20-byte id.
        now: the current time, in the caller's clock (any monotonic seconds).
        config: the knobs.
        rng: randomness for transaction ids, tokens, sampling and refresh targets;
            the system's when None.
    """

    def __init__(
        self, node_id: bytes, now: float, *, config: DhtConfig | None = None, rng: random.Random | None = None
    ) -> None:
        if len(node_id) != krpc.ID_LENGTH:
            raise ValueError("node id must be 20 bytes")
        self.node_id = node_id
        self.config = config = config or DhtConfig()
        self._rng = rng or random.SystemRandom()
        self.tables = {
            fam: RoutingTable(
                node_id, now, k=config.k, max_per_ip=config.max_per_ip, enforce_node_id=config.enforce_node_id
            )
            for fam in (4, 6)
        }
        self.store = PeerStore(
            max_peers=config.max_peers,
            max_info_hashes=config.max_info_hashes,
            max_per_swarm=config.max_peers_per_info_hash,
            max_per_ip=config.max_stored_per_ip,
            peer_ttl_s=config.peer_ttl_s,
        )
        self.tokens = TokenIssuer(self._rng, now, rotate_s=config.token_rotate_s)
        self.limiter = RateLimiter(config.rate_per_ip_per_s, config.rate_burst)
        self._out: list[tuple[bytes, Address]] = []
        self._events: deque[LookupDone] = deque()
        self._tx: dict[bytes, _Transaction] = {}
        self._deadlines: list[tuple[float, bytes]] = []  # heap; stale entries skipped
        self._next_tid = self._rng.getrandbits(16)
        self._lookups: dict[int, _Running] = {}
        self._queued: deque[tuple[int, _Running]] = deque()
        self._next_lookup_id = 1
        self._pinging: set[Address] = set()
        self._bootstraps: set[int] = set()
        self._routers: list[Address] = []
        self._rejoin_after_s = MAINTENANCE_EVERY_S
        self._next_rejoin = now
        self._next_maintenance = now + MAINTENANCE_EVERY_S
        self._ip_votes: dict[str, set[str]] = {}  # candidate external address -> who said so
        self._id_changes = 0
        self.counters = {"queries_in": 0, "queries_out": 0, "responses_in": 0, "errors_in": 0, "timeouts": 0}
        self.dropped: dict[str, int] = {}
        want = []
        if 4 in config.families:
            want.append(krpc.WANT_V4)
        if 6 in config.families:
            want.append(krpc.WANT_V6)
        self._want = tuple(want) if len(want) > 1 else ()

    # --- the caller's side ----------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Take the datagrams waiting to go out (each with its destination)."""
        out, self._out = self._out, []
        return out

    def next_event(self) -> LookupDone | None:
        return self._events.popleft() if self._events else None

    def next_timeout(self) -> float | None:
        """The time at which :meth:`tick` next has work to do."""
        times = [self._next_maintenance]
        while self._deadlines and self._deadlines[0][1] not in self._tx:
            heapq.heappop(self._deadlines)
        if self._deadlines:
            times.append(self._deadlines[0][0])
        for run in self._lookups.values():
            d = run.lookup.next_deadline()
            if d is not None:
                times.append(d)
        return min(times)

    def bootstrap(
        self, addresses: list[Address], now: float, *, nodes: list[NodeInfo] | tuple[NodeInfo, ...] = ()
    ) -> int:
        """Join the DHT: a find_node for our own id, starting from ``addresses`` (ids unknown)
        and ``nodes`` (e.g. a saved routing table); when it finishes, each bucket is refreshed.

        Returns:
            the lookup id (its :class:`LookupDone` comes like any other).
        """
        self._routers = [(h, p) for h, p in addresses if _family(h) in self.config.families]
        self._rejoin_after_s = MAINTENANCE_EVERY_S
        self._next_rejoin = now + self._rejoin_after_s
        return self._join(now, list(nodes), internal=False)

    def change_node_id(self, node_id: bytes, now: float, *, internal: bool = False) -> int:
        """Take a new id (BEP 42: one derived from an external address learnt since the
        start, from the router or from the nodes' votes, rule 6). The routing tables are
        rebuilt around it, and the nodes they held seed a re-join (a find_node for the new
        id), through which they come back as they answer. Stored peers, tokens and running
        lookups are kept.

        Args:
            internal: the node's own decision: the re-join emits no :class:`LookupDone`.

        Returns:
            the re-join's lookup id.

        Raises:
            ValueError: not a 20-byte id.
        """
        if len(node_id) != krpc.ID_LENGTH:
            raise ValueError("node id must be 20 bytes")
        known = self.nodes()
        config = self.config
        self.node_id = node_id
        self._id_changes += 1
        self.tables = {
            fam: RoutingTable(
                node_id, now, k=config.k, max_per_ip=config.max_per_ip, enforce_node_id=config.enforce_node_id
            )
            for fam in (4, 6)
        }
        return self._join(now, known, internal=internal)

    def _join(self, now: float, nodes: list[NodeInfo], *, internal: bool) -> int:
        seeds = [NodeInfo(b"", h, p) for h, p in self._routers]
        seeds += [n for n in nodes if _family(n.host) in self.config.families]
        seeds += self._closest(self.node_id, self.config.k)
        return self._start(self._lookup(self.node_id, seeds, now), now, internal=internal, bootstrap=True)

    def find_node(self, target: bytes, now: float) -> int:
        """Start an iterative find_node; returns its lookup id."""
        return self._start(self._lookup(target, self._closest(target, self.config.k), now), now)

    def get_peers(
        self, info_hash: bytes, now: float, *, announce_port: int | None = None, implied_port: bool = False
    ) -> int:
        """Start an iterative get_peers; with ``announce_port``, announce_peer afterwards (rule 5).

        Args:
            implied_port: ask the nodes to store the source port of our datagram instead
                of ``announce_port`` (BEP 5; right when we sit behind a NAT that keeps the
                UDP and TCP mappings alike, e.g. uTP on the shared port).
        """
        if len(info_hash) != krpc.ID_LENGTH:
            raise ValueError("info hash must be 20 bytes")
        seeds = self._closest(info_hash, self.config.k)
        lookup = self._lookup(info_hash, seeds, now, get_peers=True)
        return self._start(lookup, now, announce_port=announce_port, implied_port=implied_port)

    def nodes(self) -> list[NodeInfo]:
        """Every node of both tables that is not bad (what is worth saving)."""
        return [e.info for t in self.tables.values() for e in t if e.failures == 0]

    def statistics(self, now: float) -> DhtStatistics:
        return DhtStatistics(
            node_id=self.node_id,
            nodes=len(self.tables[4]),
            nodes6=len(self.tables[6]),
            good_nodes=sum(t.good_count(now) for t in self.tables.values()),
            replacements=sum(t.replacement_count() for t in self.tables.values()),
            buckets=sum(len(t.buckets) for t in self.tables.values()),
            stored_peers=len(self.store),
            stored_info_hashes=self.store.info_hash_count,
            queries_in=self.counters["queries_in"],
            queries_out=self.counters["queries_out"],
            responses_in=self.counters["responses_in"],
            errors_in=self.counters["errors_in"],
            timeouts=self.counters["timeouts"],
            lookups_running=len(self._lookups),
            lookups_queued=len(self._queued),
            rate_limited_ips=len(self.limiter),
            external_ip=self._external_ip(),
            dropped=dict(self.dropped),
            id_changes=self._id_changes,
        )

    # --- input ----------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Handle one datagram from ``addr``; never raises on its content (rule 2)."""
        try:
            msg = krpc.decode(data)
        except krpc.KrpcDecodeError as exc:
            self._drop(exc.reason)
            if exc.is_query and exc.tid is not None and self.limiter.allow(addr[0], now):
                self._send(krpc.Error(exc.tid, exc.code, exc.reason.replace("_", " ")), addr)
            return
        if isinstance(msg, krpc.Response):
            self._on_response(msg, addr, now)
        elif isinstance(msg, krpc.Error):
            self._on_error(msg, addr, now)
        else:
            self._on_query(msg, addr, now)

    def tick(self, now: float) -> None:
        """Run what is due: transaction timeouts, slow lookups, table maintenance."""
        while self._deadlines and self._deadlines[0][0] <= now:
            _, tid = heapq.heappop(self._deadlines)
            tx = self._tx.get(tid)
            if tx is None or tx.deadline > now:
                continue
            del self._tx[tid]
            self.counters["timeouts"] += 1
            self._failed(tx, now)
        for lookup_id, run in list(self._lookups.items()):
            run.lookup.tick(now)  # the transactions' own deadlines count the failures
            self._pump(lookup_id, run, now)
        if now >= self._next_maintenance:
            self._next_maintenance = now + MAINTENANCE_EVERY_S
            self._maintain(now)

    # --- queries to us --------------------------------------------------------------

    def _on_query(self, q: krpc.Query, addr: Address, now: float) -> None:
        host, port = addr
        if not self.limiter.allow(host, now):
            self._drop("rate_limited")
            return
        self.counters["queries_in"] += 1
        fam = _family(host)
        if q.sender_id != self.node_id and fam in self.config.families:
            ping = self.tables[fam].heard_query(NodeInfo(q.sender_id, host, port), now)
            if ping is not None:
                self._ping(ping, now)
        if isinstance(q, krpc.Ping):
            self._reply(krpc.Response(q.tid, self.node_id, ip=addr), addr)
        elif isinstance(q, krpc.FindNode):
            nodes, nodes6 = self._answer_nodes(q.target, q.want, addr)
            self._reply(krpc.Response(q.tid, self.node_id, nodes, nodes6, ip=addr), addr)
        elif isinstance(q, krpc.GetPeers):
            nodes, nodes6 = self._answer_nodes(q.info_hash, q.want, addr)
            values = self.store.get(q.info_hash, now, self._rng, limit=self.config.max_values, v6=fam == 6)
            token = self.tokens.issue(host, now)
            self._reply(
                krpc.Response(q.tid, self.node_id, nodes, nodes6, tuple(values), token, ip=addr), addr
            )
        else:
            if not self.tokens.valid(q.token, host, now):
                self._drop("bad_token")
                self._send(krpc.Error(q.tid, krpc.ERROR_PROTOCOL, "bad token"), addr)
                return
            peer_port = port if q.implied_port else q.port
            if not self.store.add(q.info_hash, (host, peer_port), now):
                self._drop("store_full_for_ip")  # answered all the same: nothing to learn from it
            self._reply(krpc.Response(q.tid, self.node_id, ip=addr), addr)

    def _answer_nodes(
        self, target: bytes, want: tuple[bytes, ...], requester: Address
    ) -> tuple[tuple[NodeInfo, ...], tuple[NodeInfo, ...]]:
        """The k closest nodes of each family asked for (its own by default), never the requester."""
        want = want or (krpc.WANT_V6 if _family(requester[0]) == 6 else krpc.WANT_V4,)
        k = self.config.k

        def closest(fam: int) -> tuple[NodeInfo, ...]:
            found = self.tables[fam].closest(target, k + 1, now=0.0)
            return tuple([n for n in found if n.address != requester][:k])

        return (closest(4) if krpc.WANT_V4 in want else ()), (closest(6) if krpc.WANT_V6 in want else ())

    def _reply(self, msg: krpc.Response, addr: Address) -> None:
        try:
            self._send(msg, addr)
        except ValueError:
            # the requester's own address cannot go in ``ip`` (e.g. port 0): answer without it
            self._send(
                krpc.Response(msg.tid, msg.sender_id, msg.nodes, msg.nodes6, msg.values, msg.token), addr
            )

    # --- answers to us --------------------------------------------------------------

    def _take_tx(self, tid: bytes, addr: Address) -> _Transaction | None:
        tx = self._tx.get(tid)
        if tx is None or tx.address != addr:
            self._drop("unexpected_answer")
            return None
        del self._tx[tid]
        return tx

    def _on_response(self, r: krpc.Response, addr: Address, now: float) -> None:
        tx = self._take_tx(r.tid, addr)
        if tx is None:
            return
        self.counters["responses_in"] += 1
        self._pinging.discard(addr)
        fam = _family(addr[0])
        if tx.node_id and tx.node_id != r.sender_id:
            self._drop("id_mismatch")
            self.tables[fam].remove(tx.node_id)
            self._failed(tx, now, count_in_table=False)
            return
        if r.ip is not None:
            self._vote(r.ip[0], addr[0], now)
        if r.sender_id != self.node_id:
            ping = self.tables[fam].heard_response(NodeInfo(r.sender_id, *addr), now)
            if ping is not None:
                self._ping(ping, now)
        lookup_id = tx.lookup_id
        run = self._lookups.get(lookup_id) if lookup_id is not None else None
        if run is None or lookup_id is None:
            return
        if tx.method == "announce_peer":
            run.announced += 1
            self._announce_answered(lookup_id, run, now)
            return
        nodes: list[NodeInfo] = []
        if 4 in self.config.families:
            nodes += r.nodes
        if 6 in self.config.families:
            nodes += r.nodes6
        nodes = [n for n in nodes if n.id != self.node_id]  # we are no candidate of our own lookups
        run.lookup.on_response(addr, r.sender_id, nodes, now, token=r.token, values=r.values)
        self._pump(lookup_id, run, now)

    def _on_error(self, e: krpc.Error, addr: Address, now: float) -> None:
        tx = self._take_tx(e.tid, addr)
        if tx is None:
            return
        self.counters["errors_in"] += 1
        self._pinging.discard(addr)
        # the node is alive but refused: the lookup or announce cannot use it
        self._failed(tx, now, count_in_table=False)

    def _failed(self, tx: _Transaction, now: float, *, count_in_table: bool = True) -> None:
        if count_in_table:
            self._table_failed(tx.address, now)
        self._pinging.discard(tx.address)
        run = self._lookups.get(tx.lookup_id) if tx.lookup_id is not None else None
        if run is None or tx.lookup_id is None:
            return
        if tx.method == "announce_peer":
            self._announce_answered(tx.lookup_id, run, now)
        else:
            run.lookup.on_failure(tx.address, now)
            self._pump(tx.lookup_id, run, now)

    def _table_failed(self, address: Address, now: float) -> None:
        candidate = self.tables[_family(address[0])].failed(address, now)
        if candidate is not None:
            self._ping(candidate, now)

    def _external_ip(self) -> str | None:
        votes = self._ip_votes
        return max(votes, key=lambda host: len(votes[host])) if votes else None

    def _vote(self, host: str, voter: str, now: float) -> None:
        """``voter`` says our address is ``host`` (rule 6)."""
        voters = self._ip_votes.get(host)
        if voters is None:
            if len(self._ip_votes) >= MAX_IP_CANDIDATES:
                self._ip_votes.clear()  # bounded; a real majority rebuilds quickly
            voters = self._ip_votes[host] = set()
        if len(voters) >= MAX_IP_CANDIDATES:
            return
        voters.add(voter)
        if (
            len(voters) >= EXTERNAL_IP_QUORUM
            and _family(host) in self.config.families
            and self._external_ip() == host
            and not routing.conforms(self.node_id, host)
        ):
            self.change_node_id(routing.node_id_for_ip(host, self._rng), now, internal=True)

    # --- lookups --------------------------------------------------------------------

    def _lookup(self, target: bytes, seeds: list[NodeInfo], now: float, *, get_peers: bool = False) -> Lookup:
        c = self.config
        return Lookup(
            target,
            seeds,
            now,
            get_peers=get_peers,
            k=c.k,
            alpha=c.alpha,
            slow_s=c.query_slow_s,
            timeout_s=c.query_timeout_s,
        )

    def _closest(self, target: bytes, n: int) -> list[NodeInfo]:
        out: list[NodeInfo] = []
        for fam in self.config.families:
            out += self.tables[fam].closest(target, n, now=0.0)
        return out

    def _start(
        self,
        lookup: Lookup,
        now: float,
        *,
        internal: bool = False,
        bootstrap: bool = False,
        announce_port: int | None = None,
        implied_port: bool = False,
    ) -> int:
        lookup_id = self._next_lookup_id
        self._next_lookup_id += 1
        run = _Running(lookup, internal, announce_port, implied_port)
        if bootstrap:
            self._bootstraps.add(lookup_id)
        if len(self._lookups) >= self.config.max_lookups:
            self._queued.append((lookup_id, run))
        else:
            self._lookups[lookup_id] = run
            lookup.started_at = now
            self._pump(lookup_id, run, now)
        return lookup_id

    def _pump(self, lookup_id: int, run: _Running, now: float) -> None:
        lookup = run.lookup
        if run.converged:
            return
        method = "get_peers" if lookup.get_peers else "find_node"
        for cand in lookup.next_queries(now):
            if lookup.get_peers:
                q: krpc.Query = krpc.GetPeers(self._tid(), self.node_id, lookup.target, self._want)
            else:
                q = krpc.FindNode(self._tid(), self.node_id, lookup.target, self._want)
            self._query(q, method, cand.address, cand.id, lookup_id, now)
        lookup.check_done(now)
        if lookup.done:
            run.converged = True
            self._converged(lookup_id, run, now)

    def _converged(self, lookup_id: int, run: _Running, now: float) -> None:
        if run.announce_port is not None:
            for node, token in run.lookup.closest():
                if token is None:
                    continue
                q = krpc.AnnouncePeer(
                    self._tid(),
                    self.node_id,
                    run.lookup.target,
                    run.announce_port,
                    token,
                    implied_port=run.implied_port,
                )
                self._query(q, "announce_peer", node.address, node.id, lookup_id, now)
                run.announcing += 1
            if run.announcing:
                return
        self._finish(lookup_id, run, now)

    def _announce_answered(self, lookup_id: int, run: _Running, now: float) -> None:
        run.announcing -= 1
        if run.announcing <= 0:
            self._finish(lookup_id, run, now)

    def _finish(self, lookup_id: int, run: _Running, now: float) -> None:
        if self._lookups.pop(lookup_id, None) is None:
            return
        lookup = run.lookup
        if not run.internal:
            self._events.append(
                LookupDone(
                    lookup_id=lookup_id,
                    kind="get_peers" if lookup.get_peers else "find_node",
                    target=lookup.target,
                    peers=tuple(lookup.peers),
                    closest=tuple(n for n, _ in lookup.closest()),
                    hops=lookup.hops,
                    queries=lookup.queries_sent,
                    elapsed_s=(lookup.finished_at or now) - lookup.started_at,
                    announced=run.announced,
                )
            )
        if lookup_id in self._bootstraps:
            self._bootstraps.discard(lookup_id)
            self._refresh_all(now)
        while self._queued and len(self._lookups) < self.config.max_lookups:
            next_id, next_run = self._queued.popleft()
            self._lookups[next_id] = next_run
            next_run.lookup.started_at = now
            # seeds were chosen when it was queued; the table has learned since
            for node in self._closest(next_run.lookup.target, self.config.k):
                next_run.lookup.add_seed(node)
            self._pump(next_id, next_run, now)

    # --- maintenance ----------------------------------------------------------------

    def _refresh_all(self, now: float) -> None:
        """After joining: a find_node into each bucket but our own (fills the far buckets)."""
        for fam in self.config.families:
            table = self.tables[fam]
            for bucket in table.buckets:
                if not bucket.covers(table.own_int):
                    bucket.last_changed = now
                    target = table.random_id_in(bucket, self._rng)
                    self._start(
                        self._lookup(target, self._closest(target, self.config.k), now), now, internal=True
                    )

    def _maintain(self, now: float) -> None:
        self.store.expire(now)
        if (
            self._routers
            and now >= self._next_rejoin
            and not any(len(self.tables[f]) for f in self.config.families)
        ):
            # nobody answered our joining (routers down, network not up yet): try again,
            # waiting twice as long each time, up to REJOIN_MAX_S
            self._rejoin_after_s = min(2 * self._rejoin_after_s, REJOIN_MAX_S)
            self._next_rejoin = now + self._rejoin_after_s
            self._join(now, [], internal=True)
        for fam in self.config.families:
            table = self.tables[fam]
            for node in table.to_ping(now):
                self._ping(node, now)
            for target in table.refresh_targets(now, self._rng):
                self._start(
                    self._lookup(target, self._closest(target, self.config.k), now), now, internal=True
                )

    def _ping(self, node: NodeInfo, now: float) -> None:
        if node.address in self._pinging:
            return
        self._pinging.add(node.address)
        self._query(krpc.Ping(self._tid(), self.node_id), "ping", node.address, node.id, None, now)

    # --- output ---------------------------------------------------------------------

    def _tid(self) -> bytes:
        for _ in range(1 << 16):
            self._next_tid = (self._next_tid + 1) & 0xFFFF
            tid = self._next_tid.to_bytes(2, "big")
            if tid not in self._tx:
                return tid
        raise RuntimeError("65536 transactions outstanding")  # unreachable: lookups are bounded

    def _query(
        self,
        q: krpc.Query,
        method: str,
        addr: Address,
        node_id: bytes | None,
        lookup_id: int | None,
        now: float,
    ) -> None:
        deadline = now + self.config.query_timeout_s
        self._tx[q.tid] = _Transaction(addr, method, node_id or None, lookup_id, deadline)
        heapq.heappush(self._deadlines, (deadline, q.tid))
        self.counters["queries_out"] += 1
        self._send(q, addr)

    def _send(self, msg: krpc.Message, addr: Address) -> None:
        self._out.append((krpc.encode(msg), addr))

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
