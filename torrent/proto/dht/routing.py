"""The DHT routing table (BEP 5) with BEP 42 node-id checks; one table per address family (BEP 32).

Rules and invariants:

1. Ids are 160-bit integers; distance is XOR. The table is a list of buckets that cover
   the id space without gaps, sorted by their low end. Each holds at most ``k`` nodes.
2. A full bucket splits only if its range holds our own id (BEP 5), so the table keeps
   fine detail near us and a coarse picture far away.
3. A node is *good* if it answered one of our queries in the last 15 minutes, or ever
   answered and sent us a query in the last 15 minutes; *bad* after ``MAX_FAILURES``
   queries in a row went unanswered; *questionable* otherwise (BEP 5). A node that only
   ever queried us (never answered) is *unconfirmed*: questionable, and first to go.
4. A new node that finds its bucket full takes the place of a bad node, else of an
   unconfirmed one; a BEP 42 conforming newcomer also displaces a non-conforming node.
   Otherwise it waits in the bucket's replacement cache (at most ``k``) and the table
   asks the caller to ping the least recently seen questionable node: when that fails
   (or any node fails a query) while a replacement that once answered waits, the best
   replacement takes its slot at once; with no such replacement the node stays, and
   only turns bad after ``MAX_FAILURES`` (answers leave out a node whose last query
   failed, and a node that answers takes its place).
5. At most ``max_per_ip`` nodes share one IP address (a cheap defence against one
   host filling the table with made-up ids).
6. A bucket that has not changed in 15 minutes is due a refresh: a find_node for a
   random id in its range.

BEP 32: a table holds one address family; the node keeps one table per family.
BEP 42: :func:`node_id_for_ip` makes a conforming id, :func:`conforms` checks one; local
addresses are exempt. With ``enforce_node_id`` the table refuses non-conforming nodes.
"""

from __future__ import annotations

import bisect
import heapq
import ipaddress
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from torrent.proto.dht.krpc import ID_LENGTH, NodeInfo

K: Final = 8  # BEP 5: bucket size
ID_BITS: Final = 160
ID_SPACE: Final = 1 << ID_BITS
GOOD_FOR_S: Final = 15 * 60  # BEP 5: activity in the last 15 minutes keeps a node good
REFRESH_AFTER_S: Final = 15 * 60  # BEP 5: refresh a bucket unchanged for 15 minutes
MAX_FAILURES: Final = 2  # unanswered queries in a row that make a node bad


# --- BEP 42 -----------------------------------------------------------------------------


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C: Final = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum BEP 42 hashes addresses with."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


_V4_MASK: Final = bytes([0x03, 0x0F, 0x3F, 0xFF])
_V6_MASK: Final = bytes([0x01, 0x03, 0x07, 0x0F, 0x1F, 0x3F, 0x7F, 0xFF])
_EXEMPT_V4: Final = tuple(
    ipaddress.IPv4Network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8")
)


def _id_crc(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, r: int) -> int:
    mask = _V4_MASK if ip.version == 4 else _V6_MASK
    masked = bytearray(a & m for a, m in zip(ip.packed, mask, strict=False))
    masked[0] |= (r & 0x07) << 5
    return crc32c(bytes(masked))


def is_exempt(host: str) -> bool:
    """BEP 42 does not apply to local addresses (private, link-local, loopback)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if ip.version == 4:
        return any(ip in net for net in _EXEMPT_V4)
    return ip.is_loopback or ip.is_link_local or ip.is_private


def node_id_for_ip(host: str, rng: random.Random) -> bytes:
    """A node id conforming to BEP 42 for the external address ``host``.

    The first 21 bits come from CRC-32C of the masked address, the last byte is the
    random value the CRC was salted with; the rest is random.
    """
    rand = rng.getrandbits(8)
    crc = _id_crc(ipaddress.ip_address(host), rand)
    middle = rng.getrandbits(8 * 16).to_bytes(16, "big")
    third = ((crc >> 8) & 0xF8) | rng.getrandbits(3)
    return bytes([crc >> 24, (crc >> 16) & 0xFF, third]) + middle + bytes([rand])


def conforms(node_id: bytes, host: str) -> bool:
    """Whether ``node_id`` is one BEP 42 allows for ``host`` (always true for local ones)."""
    if is_exempt(host):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if len(node_id) != ID_LENGTH:
        return False
    crc = _id_crc(ip, node_id[19])
    return (
        node_id[0] == crc >> 24
        and node_id[1] == (crc >> 16) & 0xFF
        and node_id[2] & 0xF8 == (crc >> 8) & 0xF8
    )


# --- the table --------------------------------------------------------------------------


def distance(a: bytes, b: bytes) -> int:
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


@dataclass(slots=True)
class Entry:
    """What the table knows of one node."""

    info: NodeInfo
    id_int: int
    conforming: bool
    last_response: float | None = None  # when it last answered one of our queries
    last_query: float | None = None  # when it last sent us a query
    failures: int = 0  # our queries in a row it did not answer

    def state(self, now: float) -> str:
        """``"good"``, ``"questionable"`` or ``"bad"`` (BEP 5)."""
        if self.failures >= MAX_FAILURES:
            return "bad"
        if self.last_response is not None and (
            now - self.last_response < GOOD_FOR_S
            or (self.last_query is not None and now - self.last_query < GOOD_FOR_S)
        ):
            return "good"
        return "questionable"

    def last_seen(self) -> float:
        return max(self.last_response or 0.0, self.last_query or 0.0)


@dataclass(slots=True)
class Bucket:
    lo: int  # inclusive
    hi: int  # exclusive
    last_changed: float
    nodes: list[Entry] = field(default_factory=list)
    replacements: list[Entry] = field(default_factory=list)

    def covers(self, id_int: int) -> bool:
        return self.lo <= id_int < self.hi


class RoutingTable:
    """k-buckets around ``own_id`` for one address family.

    Args:
        own_id: our 20-byte node id.
        now: the time the table starts (buckets are "changed" at creation).
        k: bucket size.
        max_per_ip: how many nodes may share one IP address.
        enforce_node_id: refuse nodes whose id does not conform to BEP 42.
    """

    def __init__(
        self, own_id: bytes, now: float, *, k: int = K, max_per_ip: int = 1, enforce_node_id: bool = False
    ) -> None:
        if len(own_id) != ID_LENGTH:
            raise ValueError("node id must be 20 bytes")
        self.own_id = own_id
        self.own_int = int.from_bytes(own_id, "big")
        self.k = k
        self.max_per_ip = max_per_ip
        self.enforce_node_id = enforce_node_id
        self.buckets: list[Bucket] = [Bucket(0, ID_SPACE, now)]
        self._los: list[int] = [0]
        self._by_id: dict[bytes, Entry] = {}
        self._by_addr: dict[tuple[str, int], Entry] = {}
        self._per_ip: dict[str, int] = {}

    # -- queries on the table --

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Entry]:
        for b in self.buckets:
            yield from b.nodes

    def replacement_count(self) -> int:
        return sum(len(b.replacements) for b in self.buckets)

    def get(self, node_id: bytes) -> Entry | None:
        return self._by_id.get(node_id)

    def by_address(self, addr: tuple[str, int]) -> Entry | None:
        return self._by_addr.get(addr)

    def bucket_for(self, id_int: int) -> Bucket:
        return self.buckets[bisect.bisect_right(self._los, id_int) - 1]

    def closest(self, target: bytes, n: int | None = None, *, now: float | None = None) -> list[NodeInfo]:
        """The ``n`` (default k) nodes closest to ``target``; with ``now``, nodes that failed are skipped."""
        t = int.from_bytes(target, "big")
        entries = (e for e in self._by_id.values() if now is None or e.failures == 0)
        best = heapq.nsmallest(n or self.k, entries, key=lambda e: e.id_int ^ t)
        return [e.info for e in best]

    def good_count(self, now: float) -> int:
        return sum(1 for e in self._by_id.values() if e.state(now) == "good")

    # -- learning about nodes --

    def heard_response(self, node: NodeInfo, now: float) -> NodeInfo | None:
        """``node`` answered one of our queries.

        Returns:
            A questionable node the caller should ping (see rule 4), or None.
        """
        entry = self._by_id.get(node.id)
        if entry is not None and entry.info.address == node.address:
            entry.last_response = now
            entry.failures = 0
            self.bucket_for(entry.id_int).last_changed = now
            return None
        return self._insert(node, now, confirmed=True)

    def heard_query(self, node: NodeInfo, now: float) -> NodeInfo | None:
        """``node`` sent us a query: refresh it, or add it as unconfirmed where there is room."""
        entry = self._by_id.get(node.id)
        if entry is not None and entry.info.address == node.address:
            entry.last_query = now
            return None
        return self._insert(node, now, confirmed=False)

    def failed(self, addr: tuple[str, int], now: float) -> NodeInfo | None:
        """A query to ``addr`` went unanswered.

        Returns:
            A replacement the caller should ping (one that never answered us yet): if it
            answers, it takes the failed node's slot.
        """
        entry = self._by_addr.get(addr)
        if entry is None:
            return None
        entry.failures += 1
        bucket = self.bucket_for(entry.id_int)
        if any(r.last_response is not None for r in bucket.replacements):
            # a node known to answer is waiting: it takes the slot at once (as libtorrent does)
            self._remove(entry, bucket)
            self._promote(bucket, now)
            return None
        if bucket.replacements:
            return max(bucket.replacements, key=lambda r: (r.conforming, r.last_seen())).info
        return None

    def remove(self, node_id: bytes) -> None:
        entry = self._by_id.get(node_id)
        if entry is not None:
            self._remove(entry, self.bucket_for(entry.id_int))

    # -- maintenance --

    def to_ping(self, now: float) -> list[NodeInfo]:
        """Questionable nodes of full buckets that have replacements waiting."""
        out = []
        for b in self.buckets:
            if b.replacements and len(b.nodes) >= self.k:
                stale = [e for e in b.nodes if e.state(now) == "questionable"]
                if stale:
                    out.append(min(stale, key=Entry.last_seen).info)
        return out

    def refresh_targets(self, now: float, rng: random.Random) -> list[bytes]:
        """A random id in each bucket unchanged for ``REFRESH_AFTER_S``; marks them changed."""
        out = []
        for b in self.buckets:
            if now - b.last_changed >= REFRESH_AFTER_S:
                b.last_changed = now
                out.append(self.random_id_in(b, rng))
        return out

    def next_refresh(self) -> float:
        return min(b.last_changed for b in self.buckets) + REFRESH_AFTER_S

    @staticmethod
    def random_id_in(bucket: Bucket, rng: random.Random) -> bytes:
        return (bucket.lo + rng.randrange(bucket.hi - bucket.lo)).to_bytes(ID_LENGTH, "big")

    # -- internals --

    def _insert(self, node: NodeInfo, now: float, *, confirmed: bool) -> NodeInfo | None:
        if node.id == self.own_id or len(node.id) != ID_LENGTH:
            return None
        ok = conforms(node.id, node.host)
        if self.enforce_node_id and not ok:
            return None
        same_id = self._by_id.get(node.id)
        if same_id is not None:
            # the id is known at another address: keep the one we know unless it stopped
            # answering and this one answered (a node that moved); never two entries
            if not (confirmed and same_id.failures):
                return None
            self._remove(same_id, self.bucket_for(same_id.id_int))
        old = self._by_addr.get(node.address)
        if old is not None:
            if not confirmed:
                return None  # the address already has an id; only an answer may change it
            self._remove(old, self.bucket_for(old.id_int))
        entry = Entry(node, int.from_bytes(node.id, "big"), ok)
        if confirmed:
            entry.last_response = now
        else:
            entry.last_query = now
        while True:
            bucket = self.bucket_for(entry.id_int)
            if len(bucket.nodes) < self.k:
                if self._per_ip.get(node.host, 0) >= self.max_per_ip:
                    return None
                self._add(entry, bucket, now)
                return None
            if bucket.covers(self.own_int) and bucket.hi - bucket.lo > 1:
                self._split(bucket)
                continue
            break
        if not confirmed:
            # an unconfirmed node waits as a replacement but never pushes anyone out
            self._add_replacement(bucket, entry)
            return None
        victim = self._victim(bucket, now, entry)
        if victim is not None and self._per_ip.get(node.host, 0) < self.max_per_ip:
            self._remove(victim, bucket)
            self._add(entry, bucket, now)
            return None
        self._add_replacement(bucket, entry)
        stale = [e for e in bucket.nodes if e.state(now) == "questionable"]
        return min(stale, key=Entry.last_seen).info if stale else None

    def _victim(self, bucket: Bucket, now: float, newcomer: Entry) -> Entry | None:
        failing = [e for e in bucket.nodes if e.failures]
        if failing:
            return max(failing, key=lambda e: e.failures)
        unconfirmed = [e for e in bucket.nodes if e.last_response is None]
        if unconfirmed:
            return min(unconfirmed, key=Entry.last_seen)
        if newcomer.conforming:  # BEP 42: prefer nodes whose id matches their address
            rogue = [e for e in bucket.nodes if not e.conforming]
            if rogue:
                return min(rogue, key=Entry.last_seen)
        return None

    def _add(self, entry: Entry, bucket: Bucket, now: float) -> None:
        bucket.nodes.append(entry)
        bucket.last_changed = now
        self._by_id[entry.info.id] = entry
        self._by_addr[entry.info.address] = entry
        self._per_ip[entry.info.host] = self._per_ip.get(entry.info.host, 0) + 1
        bucket.replacements = [r for r in bucket.replacements if r.info.id != entry.info.id]

    def _remove(self, entry: Entry, bucket: Bucket) -> None:
        bucket.nodes.remove(entry)
        del self._by_id[entry.info.id]
        self._by_addr.pop(entry.info.address, None)
        left = self._per_ip[entry.info.host] - 1
        if left:
            self._per_ip[entry.info.host] = left
        else:
            del self._per_ip[entry.info.host]

    def _add_replacement(self, bucket: Bucket, entry: Entry) -> None:
        reps = [
            r
            for r in bucket.replacements
            if r.info.id != entry.info.id and r.info.address != entry.info.address
        ]
        reps.append(entry)
        if len(reps) > self.k:
            # drop the least useful: unconfirmed before confirmed, non-conforming first, oldest first
            reps.sort(key=lambda r: (r.last_response is not None, r.conforming, r.last_seen()))
            reps = reps[len(reps) - self.k :]
        bucket.replacements = reps

    def _promote(self, bucket: Bucket, now: float) -> None:
        candidates = sorted(
            bucket.replacements,
            key=lambda r: (r.last_response is not None, r.conforming, r.last_seen()),
            reverse=True,
        )
        for r in candidates:
            if r.info.id not in self._by_id and self._per_ip.get(r.info.host, 0) < self.max_per_ip:
                bucket.replacements.remove(r)
                self._add(r, bucket, now)
                return

    def _split(self, bucket: Bucket) -> None:
        mid = (bucket.lo + bucket.hi) // 2
        low = Bucket(bucket.lo, mid, bucket.last_changed)
        high = Bucket(mid, bucket.hi, bucket.last_changed)
        for e in bucket.nodes:
            (low if e.id_int < mid else high).nodes.append(e)
        for e in bucket.replacements:
            (low if e.id_int < mid else high).replacements.append(e)
        i = self.buckets.index(bucket)
        self.buckets[i : i + 1] = [low, high]
        self._los[i : i + 1] = [low.lo, high.lo]
