"""Where the tracker keeps its swarms: the ``PeerStore`` Protocol and ``MemoryStore``.

``MemoryStore`` also implements the optional :class:`SyncPeerStore` Protocol (answers
without a coroutine), which the transports use as their fast path.

The store never sees HTTP or UDP: transports hand it a :class:`PeerAnnounce` (the
peer's packed address already chosen) and get back counts and packed peer strings.

Rules every store keeps (the contract test in ``tests/integration`` checks them):

1. A peer is identified by (info hash, address family, peer id). IPv4 and IPv6
   entries of one client are separate peers, as in opentracker.
2. A known peer announcing from a new address keeps its entry only when it proves
   itself with the same ``key`` it registered with; a peer that registered no key
   is simply moved (nothing to check).
3. ``stopped`` removes the peer; ``completed`` adds one to the swarm's download count
   once per peer entry.
4. A peer that has not announced for ``ttl_s`` seconds is gone from lists and counts.
5. The peer list is a random sample of the swarm in which every candidate is equally
   likely, without the requester; a seed gets only leechers. At most ``numwant`` entries.
6. Private mode: an announce's ``tally`` (the peer's accounting baseline) replaces the
   one kept for (info hash, peer id), whatever the address family, and the answer
   carries the one it replaced, so the next announce, to any tracker process sharing
   the store, counts only what changed since. ``stopped`` removes it, and it expires
   with the peer. ``refuse_new`` refuses a peer the swarm does not hold yet.

``MemoryStore`` layout (about 130 bytes a peer, see ``bench/tracker.py``): each swarm
holds one table per address family. A table keeps parallel arrays indexed by slot:
packed addresses (6 or 18 bytes a slot in one ``bytearray``), last-seen seconds, key
and flags (three words a slot of one ``array('I')``), and the peer id; past 8 peers a
dict maps peer id → slot (below that a scan of the ids is as fast).
Leechers occupy slots ``[0, n_leech)`` and seeds the rest, so "only leechers" is a
prefix. Removal swaps the last slot in.

Sampling is O(1) in the swarm size: each region (leechers, seeds) is kept a random
permutation (a new peer goes to a random slot of its region, removal swaps the last
slot in, and one returning announce in eight, ``RESHUFFLE``, moves the peer to a
fresh random slot), and an answer is a circular window of ``numwant`` slots at a
uniformly random start, cut out of the address array with one to three slices. Every
candidate is equally likely to be in an answer whatever the order (the chi-square
test in ``tests/unit/test_tracker_store.py`` checks it); the order only decides which
peers tend to be handed out together, and the reshuffles keep changing that.
What this gives up against ``random.sample`` is independence between two answers
served close together, which costs ~20 µs per announce at numwant 50 and bought
nothing a client can see. (opentracker's answer, too, is a strided walk of its
address-sorted peer list from a random offset.) Moving the peer on every announce
cost a swap of three arrays each time, about a tenth of a UDP announce.

The commonest announce, a known peer coming back with no event from the same address
in the same state, has its own path, :meth:`MemoryStore.reannounce_nowait`: no
``PeerAnnounce`` or ``AnnounceResult``, no method calls on the tables, the answer cut
straight out of the address array. It declines (``None``, nothing changed) anything
else, and the general path answers exactly as it would have (same random draws).

Expiry never scans every swarm: each swarm knows the earliest moment one of its peers
can expire (``purge_at`` = oldest last-seen + ttl). An announce or scrape of a swarm
past that moment purges it first, and :meth:`MemoryStore.collect` (called every few
seconds) pops due swarms from a heap, so idle swarms are freed too.
"""

from __future__ import annotations

import heapq
import random
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

from torrent.errors import TrackerError
from torrent.proto.tracker_codec import AnnounceEvent, ScrapeStats

__all__ = [
    "AnnounceRejected",
    "AnnounceResult",
    "MemoryStore",
    "PeerAnnounce",
    "PeerStore",
    "ReannounceStore",
    "StoreStats",
    "StoreUnavailable",
    "SyncPeerStore",
    "TrackerFull",
]


class StoreUnavailable(TrackerError):
    """The shared store (Redis) cannot be reached; the announce fails, the tracker lives on."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("tracker store unavailable")
        self.detail = detail


class AnnounceRejected(TrackerError):
    """The store refused this announce (e.g. a peer id registered from another address)."""


class TrackerFull(AnnounceRejected):
    """The announce would start a swarm past ``max_swarms``."""

    def __init__(self) -> None:
        super().__init__(TRACKER_FULL)


#: Failure reason of :class:`TrackerFull`.
TRACKER_FULL = "tracker full: no new torrents for now"
#: Default ``max_swarms`` (see the tracker settings).
MAX_SWARMS = 1_000_000


class PeerAnnounce(NamedTuple):
    """One announce as the store sees it.

    A ``NamedTuple`` rather than a frozen dataclass: it is built on every announce and
    constructs about four times faster, with the same immutability.

    Attributes:
        info_hash: 20 bytes.
        peer_id: 20 bytes.
        addr: the peer's packed address and port: 6 bytes (IPv4) or 18 (IPv6).
        key: the client's 32-bit ``key``, if it sent one.
        is_seed: ``left == 0``.
        event: the announce event.
        numwant: peers wanted, already capped by the tracker.
        both_families: return IPv4 and IPv6 peers (HTTP); else only the requester's
            family (a UDP answer has room for one form).
        want_peer_ids: also return the peer ids (the HTTP dict form).
        tally: private mode: the peer's accounting baseline to keep (opaque bytes,
            rule 6); ``None`` in a public tracker.
        refuse_new: private mode: when set, refuse the announce with this reason if the
            peer is not in the swarm yet (a user below the ratio floor may go on with a
            download, not start one).
    """

    info_hash: bytes
    peer_id: bytes
    addr: bytes
    key: int | None
    is_seed: bool
    event: AnnounceEvent
    numwant: int
    both_families: bool = True
    want_peer_ids: bool = False
    tally: bytes | None = None
    refuse_new: str | None = None


class AnnounceResult(NamedTuple):
    """Counts after the announce plus the sampled peers (a ``NamedTuple`` for speed).

    ``peers4``/``peers6`` are concatenated compact entries; ``peer_ids`` (when asked
    for) lists the ids of ``peers4`` entries, then of ``peers6`` entries. ``tally`` is
    the peer's previous accounting baseline (when the announce carried one; rule 6).
    """

    complete: int
    incomplete: int
    downloaded: int
    peers4: bytes = b""
    peers6: bytes = b""
    peer_ids: tuple[bytes, ...] = ()
    tally: bytes | None = None


#: ``AnnounceResult(*fields)`` without the Python-level call of a NamedTuple's ``__new__``.
_result = tuple.__new__


@dataclass(frozen=True, slots=True)
class StoreStats:
    """A snapshot for the status page and ``/metrics``."""

    swarms: int
    peers: int
    seeds: int
    downloaded: int


@runtime_checkable
class PeerStore(Protocol):
    """What the transports need from a store (memory or Redis)."""

    async def announce(self, a: PeerAnnounce) -> AnnounceResult:
        """Record ``a`` and return counts and a peer sample.

        Raises:
            StoreUnavailable: the backing store cannot be reached.
            AnnounceRejected: the store refuses this peer.
        """
        ...

    async def scrape(self, info_hashes: Sequence[bytes]) -> list[ScrapeStats]:
        """Counts for each hash, in order (zeros for unknown swarms)."""
        ...

    async def full_scrape(self, limit: int) -> dict[bytes, ScrapeStats]:
        """Counts for up to ``limit`` swarms."""
        ...

    async def statistics(self) -> StoreStats: ...

    async def collect(self) -> int:
        """Expire what is due; returns the number of peers removed."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class SyncPeerStore(Protocol):
    """A store that can also answer without awaiting (one that lives in this process).

    Optional: the transports check for it once, when they are assembled, and then call
    these directly on their hot path instead of awaiting (HTTP) or spawning a task per
    packet (UDP). A store that must do I/O (Redis) simply does not implement it.
    """

    def announce_nowait(self, a: PeerAnnounce) -> AnnounceResult:
        """:meth:`PeerStore.announce` without the coroutine; raises what it raises."""
        ...

    def scrape_nowait(self, info_hashes: Sequence[bytes]) -> list[ScrapeStats]:
        """:meth:`PeerStore.scrape` without the coroutine."""
        ...


@runtime_checkable
class ReannounceStore(Protocol):
    """A :class:`SyncPeerStore` with a cheaper path for the commonest announce (optional:
    the UDP transport checks for it once; see :meth:`MemoryStore.reannounce_nowait`)."""

    def reannounce_nowait(
        self, ih: bytes, pid: bytes, addr: bytes, is_seed: bool, numwant: int
    ) -> tuple[int, int, bytes | bytearray] | None:
        """(complete, incomplete, compact peers) for a known peer announcing again with no
        event, from the same address and in the same state; ``None`` (nothing changed) for
        anything else."""
        ...


#: A source of uniform floats in [0, 1).
Rand = Callable[[], float]

_HAS_KEY = 1
_COUNTED = 2
#: Peers a table holds before it keeps a peer id -> slot dict.
_SMALL = 8
#: Share of returning announces that move the peer to a fresh random slot (module doc).
RESHUFFLE = 0.125


class _Table:
    """One address family of one swarm: parallel arrays indexed by slot (see module doc)."""

    __slots__ = ("addrs", "index", "meta", "n_leech", "pids", "stride")

    def __init__(self, stride: int) -> None:
        self.stride = stride
        #: peer id -> slot, once the table holds more than ``_SMALL`` peers (below
        #: that a scan of ``pids`` is as fast and a one-peer swarm saves the dict)
        self.index: dict[bytes, int] | None = None
        self.pids: list[bytes] = []
        self.addrs = bytearray()
        #: three words a slot: last seen, key, flags (one array, not three: a swarm of
        #: one peer is the commonest kind, and each array object costs ~64 bytes)
        self.meta = array("I")
        self.n_leech = 0

    def __len__(self) -> int:
        return len(self.pids)

    def slot_of(self, pid: bytes) -> int | None:
        index = self.index
        if index is not None:
            return index.get(pid)
        try:
            return self.pids.index(pid)
        except ValueError:
            return None

    def _swap(self, i: int, j: int) -> None:
        if i == j:
            return
        s = self.stride
        pids, addrs, meta = self.pids, self.addrs, self.meta
        pi, pj = pids[i], pids[j]
        pids[i], pids[j] = pj, pi
        index = self.index
        if index is not None:
            index[pi] = j
            index[pj] = i
        a, b = i * s, j * s
        ai = addrs[a : a + s]
        addrs[a : a + s] = addrs[b : b + s]
        addrs[b : b + s] = ai
        a, b = 3 * i, 3 * j
        mi = meta[a : a + 3]
        meta[a : a + 3] = meta[b : b + 3]
        meta[b : b + 3] = mi

    def add(self, pid: bytes, addr: bytes, now: int, key: int | None, is_seed: bool, rand: Rand) -> int:
        """Append a peer at a random place of its region (leechers or seeds); returns its slot."""
        slot = len(self.pids)
        self.pids.append(pid)
        if self.index is not None:
            self.index[pid] = slot
        elif slot >= _SMALL:
            self.index = {p: n for n, p in enumerate(self.pids)}
        self.addrs += addr
        self.meta.extend((now, key or 0, 0 if key is None else _HAS_KEY))
        if not is_seed:
            self._swap(slot, self.n_leech)
            slot = self.n_leech
            self.n_leech += 1
        return self.reshuffle(slot, rand)

    def reshuffle(self, slot: int, rand: Rand) -> int:
        """Swap ``slot`` with a uniformly random slot of its region; returns its new slot.

        Done on every announce, this keeps each region a random permutation (an
        inside-out Fisher-Yates step on insert, a fresh random place on every return).
        """
        if slot < self.n_leech:
            j = int(rand() * self.n_leech)
        else:
            j = self.n_leech + int(rand() * (len(self.pids) - self.n_leech))
        self._swap(slot, j)
        return j

    def readdress(self, slot: int, a: PeerAnnounce) -> None:
        """A known peer announces from a new address: it moves there only with the
        ``key`` it registered (rule 2); a ``stopped`` announce does not move it.

        Raises:
            AnnounceRejected: the peer registered a key and ``a`` does not carry it.
        """
        meta = self.meta
        if meta[3 * slot + 2] & _HAS_KEY and a.key != meta[3 * slot + 1]:
            raise AnnounceRejected("peer id already in use from another address (key mismatch)")
        if a.event is not AnnounceEvent.STOPPED:
            s = self.stride
            self.addrs[slot * s : slot * s + s] = a.addr

    def set_seed(self, slot: int, is_seed: bool) -> int:
        """Move ``slot`` across the leecher/seed boundary if needed; returns its new slot."""
        if is_seed and slot < self.n_leech:
            self.n_leech -= 1
            self._swap(slot, self.n_leech)
            return self.n_leech
        if not is_seed and slot >= self.n_leech:
            self._swap(slot, self.n_leech)
            self.n_leech += 1
            return self.n_leech - 1
        return slot

    def remove(self, slot: int) -> None:
        if slot < self.n_leech:
            self.n_leech -= 1
            self._swap(slot, self.n_leech)
            slot = self.n_leech
        last = len(self.pids) - 1
        self._swap(slot, last)
        gone = self.pids.pop()
        if self.index is not None:
            del self.index[gone]
        del self.addrs[last * self.stride :]
        del self.meta[3 * last :]

    def purge(self, cutoff: int) -> tuple[int, int]:
        """Remove peers last seen before ``cutoff``; returns (removed, oldest survivor's seen)."""
        removed = 0
        meta = self.meta
        slot = len(self.pids) - 1
        while slot >= 0:
            if meta[3 * slot] < cutoff:
                self.remove(slot)
                removed += 1
                # the slot now holds an entry moved from a higher slot (already
                # checked) or from the leecher boundary (checked when we get there)
                if slot < len(self.pids) and meta[3 * slot] < cutoff:
                    continue
            slot -= 1
        return removed, min(meta[0::3]) if meta else -1

    def available(self, for_seed: bool, me: int) -> tuple[int, int, int]:
        """(end of the candidate prefix, requester's slot inside it or -1, candidates)."""
        n = self.n_leech if for_seed else len(self.pids)
        skip = me if 0 <= me < n else -1
        return n, skip, n - (skip >= 0)

    def window(self, n: int, skip: int, k: int, rand: Rand) -> list[tuple[int, int]]:
        """Slot ranges of ``k`` candidates: a circular window of ``[0, n)`` at a random
        start, without ``skip``. Every candidate is equally likely to be in it."""
        if n - (skip >= 0) <= k:
            start, end = 0, n
        else:
            start = int(rand() * n)
            end = start + k
            if skip >= 0 and (start <= skip < end or skip + n < end):
                end += 1
        return self.cut(n, skip, start, end)

    @staticmethod
    def cut(n: int, skip: int, start: int, end: int) -> list[tuple[int, int]]:
        """Slot ranges of the circular window ``[start, end)`` of ``[0, n)`` without ``skip``."""
        ranges = [(start, end)] if end <= n else [(start, n), (0, end - n)]
        if skip < 0:
            return ranges
        out = []
        for a, b in ranges:
            if a <= skip < b:
                if a < skip:
                    out.append((a, skip))
                if skip + 1 < b:
                    out.append((skip + 1, b))
            else:
                out.append((a, b))
        return out

    def take(self, ranges: list[tuple[int, int]]) -> bytes:
        s, addrs = self.stride, self.addrs
        if len(ranges) == 1:
            a, b = ranges[0]
            return bytes(addrs[a * s : b * s])
        return b"".join([addrs[a * s : b * s] for a, b in ranges])

    def ids(self, ranges: list[tuple[int, int]]) -> tuple[bytes, ...]:
        out: list[bytes] = []
        for a, b in ranges:
            out.extend(self.pids[a:b])
        return tuple(out)


class _Swarm:
    __slots__ = ("downloaded", "purge_at", "t4", "t6", "tallies")

    def __init__(self, purge_at: int) -> None:
        self.t4 = _Table(6)
        self.t6: _Table | None = None
        self.downloaded = 0
        self.purge_at = purge_at
        #: private mode: peer id -> (accounting baseline, last seen); None until needed
        self.tallies: dict[bytes, tuple[bytes, int]] | None = None

    def counts(self) -> tuple[int, int]:
        """(seeds, leechers)"""
        t4, t6 = self.t4, self.t6
        seeds = len(t4) - t4.n_leech
        leech = t4.n_leech
        if t6 is not None:
            seeds += len(t6) - t6.n_leech
            leech += t6.n_leech
        return seeds, leech

    def empty(self) -> bool:
        return not self.t4.pids and (self.t6 is None or not self.t6.pids)


class MemoryStore:
    """The embedded store: one process, everything in RAM (see the module doc).

    Args:
        ttl_s: seconds after its last announce that a peer expires.
        clock: a monotonic clock in seconds (tests pass a fake one).
        rng: the random source for peer samples.
        max_swarms: swarms held at once; an announce starting one more raises
            :class:`TrackerFull`.
    """

    def __init__(
        self,
        ttl_s: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        max_swarms: int = MAX_SWARMS,
    ) -> None:
        self.ttl_s = int(ttl_s)
        self.max_swarms = max_swarms
        self._clock = clock
        self._epoch = clock()
        self._rand: Rand = (rng or random.Random()).random
        self._swarms: dict[bytes, _Swarm] = {}
        self._due: list[tuple[int, bytes]] = []

    def _now(self) -> int:
        return int(self._clock() - self._epoch)

    # ------------------------------------------------------------ expiry

    def _purge(self, ih: bytes, sw: _Swarm, now: int) -> int:
        cutoff = now - self.ttl_s
        if sw.tallies:
            for pid in [p for p, (_, seen) in sw.tallies.items() if seen < cutoff]:
                del sw.tallies[pid]
        removed, oldest = sw.t4.purge(cutoff)
        if sw.t6 is not None:
            r6, o6 = sw.t6.purge(cutoff)
            removed += r6
            if o6 >= 0 and (oldest < 0 or o6 < oldest):
                oldest = o6
        if oldest >= 0:
            sw.purge_at = oldest + self.ttl_s
            heapq.heappush(self._due, (sw.purge_at, ih))
        else:
            sw.purge_at = now + self.ttl_s
        return removed

    def collect_nowait(self) -> int:
        """Purge every swarm whose ``purge_at`` has passed; free empty ones."""
        now = self._now()
        due = self._due
        removed = 0
        while due and due[0][0] < now:
            at, ih = heapq.heappop(due)
            sw = self._swarms.get(ih)
            if sw is None or sw.purge_at != at:
                continue  # stale heap entry: the swarm was purged or freed since
            removed += self._purge(ih, sw, now)
            if sw.empty():
                del self._swarms[ih]
        return removed

    async def collect(self) -> int:
        return self.collect_nowait()

    # ------------------------------------------------------------ announce

    def announce_nowait(self, a: PeerAnnounce) -> AnnounceResult:
        """:meth:`announce` without the coroutine (the UDP and HTTP fast paths use it)."""
        if a.tally is not None or a.refuse_new is not None:
            return self._announce_private(a)
        # The calls of the commonest case (a known peer, same address, same state) are
        # inlined here: this runs once per announce, HTTP or UDP.
        now = int(self._clock() - self._epoch)
        ih = a.info_hash
        sw = self._swarms.get(ih)
        if sw is None:
            if a.event is AnnounceEvent.STOPPED:
                return AnnounceResult(0, 0, 0)
            sw = self._new_swarm(ih, now)
        elif now > sw.purge_at:
            self._purge(ih, sw, now)
        addr = a.addr
        if len(addr) == 6:
            table = sw.t4
        else:
            if sw.t6 is None:
                sw.t6 = _Table(18)
            table = sw.t6
        pid = a.peer_id
        index = table.index
        slot = index.get(pid) if index is not None else table.slot_of(pid)
        if slot is not None:
            s = table.stride
            if table.addrs[slot * s : slot * s + s] != addr:
                table.readdress(slot, a)
        if a.event is AnnounceEvent.STOPPED:
            return self._stop(ih, sw, table, slot)
        rand = self._rand
        if slot is None:
            slot = table.add(pid, addr, now, a.key, a.is_seed, rand)
        else:
            table.meta[3 * slot] = now
            if (slot < table.n_leech) == a.is_seed:
                slot = table.set_seed(slot, a.is_seed)
            slot = table.reshuffle(slot, rand) if rand() < RESHUFFLE else slot
        if a.event is AnnounceEvent.COMPLETED and not table.meta[3 * slot + 2] & _COUNTED:
            table.meta[3 * slot + 2] |= _COUNTED
            sw.downloaded += 1
        if sw.t6 is None:
            leech = table.n_leech
            seeds = len(table.pids) - leech
        else:
            seeds, leech = sw.counts()
        if a.numwant <= 0:
            return AnnounceResult(seeds, leech, sw.downloaded)
        return self._answer(sw, table, slot, a, seeds, leech)

    def reannounce_nowait(
        self, ih: bytes, pid: bytes, addr: bytes, is_seed: bool, numwant: int
    ) -> tuple[int, int, bytes | bytearray] | None:
        """The commonest announce, at the least cost: a peer the swarm holds, announcing
        with no event from the address it is listed at, still a seed or still a leecher.

        Returns (complete, incomplete, compact peers of ``addr``'s family only), what
        :meth:`announce_nowait` answers to such an announce with ``both_families`` off,
        but without building a :class:`PeerAnnounce` or an :class:`AnnounceResult`, and
        with the peers cut straight out of the address array. Any other announce gets
        ``None`` and nothing changes: the caller then goes through :meth:`announce_nowait`.
        """
        sw = self._swarms.get(ih)
        if sw is None:
            return None
        now = int(self._clock() - self._epoch)
        if now > sw.purge_at:
            return None
        s = len(addr)
        table = sw.t4 if s == 6 else sw.t6
        if table is None:
            return None
        index = table.index
        slot = index.get(pid) if index is not None else table.slot_of(pid)
        if slot is None:
            return None
        addrs = table.addrs
        o = slot * s
        n_leech = table.n_leech
        if addrs[o : o + s] != addr or (slot < n_leech) == is_seed:
            return None
        table.meta[3 * slot] = now
        rand = self._rand
        if rand() < RESHUFFLE:
            slot = table.reshuffle(slot, rand)
            o = slot * s
        total = len(table.pids)
        if sw.t6 is None:
            seeds, leech = total - n_leech, n_leech
        else:
            seeds, leech = sw.counts()
        if numwant <= 0:
            return seeds, leech, b""
        # _Table.window and take, inlined: the candidates are slots [0, n) without the
        # requester's; a circular window of them at a random start, in one to three slices
        n = n_leech if is_seed else total
        mine = slot < n
        if n - mine <= numwant:
            return seeds, leech, addrs[:o] + addrs[o + s : n * s] if mine else addrs[: n * s]
        start = int(rand() * n)
        end = start + numwant
        if mine and (start <= slot < end or slot + n < end):
            end += 1  # the window holds the requester: one slot more, the requester cut out
            if end <= n:
                peers = addrs[start * s : o] + addrs[o + s : end * s]
            elif slot >= start:
                peers = addrs[start * s : o] + addrs[o + s : n * s] + addrs[: (end - n) * s]
            else:
                peers = addrs[start * s : n * s] + addrs[:o] + addrs[o + s : (end - n) * s]
        elif end <= n:
            peers = addrs[start * s : end * s]
        else:
            peers = addrs[start * s : n * s] + addrs[: (end - n) * s]
        return seeds, leech, peers

    def _answer(
        self, sw: _Swarm, table: _Table, slot: int, a: PeerAnnounce, seeds: int, leech: int
    ) -> AnnounceResult:
        """The counts and a sample of peers for ``a``, whose slot in ``table`` is ``slot``."""
        other = sw.t6 if table is sw.t4 else sw.t4
        if not a.both_families or other is None or not other.pids:
            n = table.n_leech if a.is_seed else len(table.pids)
            ranges = table.window(n, slot if slot < n else -1, a.numwant, self._rand)
            peers = table.take(ranges)
            ids = table.ids(ranges) if a.want_peer_ids else ()
            # a tuple made directly: the NamedTuple constructor is a Python-level call
            if table.stride == 6:
                return _result(AnnounceResult, (seeds, leech, sw.downloaded, peers, b"", ids, None))
            return _result(AnnounceResult, (seeds, leech, sw.downloaded, b"", peers, ids, None))
        t4, t6 = (table, other) if table.stride == 6 else (other, table)
        p4, p6, ids = self._sample_two(t4, t6, table, a.is_seed, slot, a.numwant, a.want_peer_ids)
        return AnnounceResult(seeds, leech, sw.downloaded, p4, p6, ids)

    def _new_swarm(self, ih: bytes, now: int) -> _Swarm:
        if len(self._swarms) >= self.max_swarms:
            raise TrackerFull
        sw = self._swarms[ih] = _Swarm(now + self.ttl_s)
        heapq.heappush(self._due, (sw.purge_at, ih))
        return sw

    def _announce_private(self, a: PeerAnnounce) -> AnnounceResult:
        """Rule 6 around :meth:`announce_nowait`: refuse a new peer, swap the tally (read before,
        written after, so a refused announce changes nothing)."""
        ih, pid = a.info_hash, a.peer_id
        sw = self._swarms.get(ih)
        if sw is not None and self._now() > sw.purge_at:
            self._purge(ih, sw, self._now())  # an expired peer's tally is no baseline
        stopping = a.event is AnnounceEvent.STOPPED
        if a.refuse_new is not None and not stopping:
            table = None if sw is None else sw.t4 if len(a.addr) == 6 else sw.t6
            if table is None or table.slot_of(pid) is None:
                raise AnnounceRejected(a.refuse_new)
        prev = sw.tallies.get(pid) if sw is not None and sw.tallies else None
        res = self.announce_nowait(a._replace(tally=None, refuse_new=None))
        if a.tally is None:
            return res
        sw = self._swarms.get(ih)  # freed when the last peer stopped
        if sw is not None:
            if stopping:
                if sw.tallies:
                    sw.tallies.pop(pid, None)
            else:
                if sw.tallies is None:
                    sw.tallies = {}
                sw.tallies[pid] = (a.tally, self._now())
        return res._replace(tally=None if prev is None else prev[0])

    def _stop(self, ih: bytes, sw: _Swarm, table: _Table, slot: int | None) -> AnnounceResult:
        """A ``stopped`` announce: the peer (if known) leaves; an empty swarm is freed."""
        if slot is not None:
            table.remove(slot)
        seeds, leech = sw.counts()
        if sw.empty():
            del self._swarms[ih]  # its heap entry goes stale
        return AnnounceResult(seeds, leech, sw.downloaded)

    def _sample_two(
        self, t4: _Table, t6: _Table, mine: _Table, for_seed: bool, me: int, k: int, want_ids: bool
    ) -> tuple[bytes, bytes, tuple[bytes, ...]]:
        n4, skip4, a4 = t4.available(for_seed, me if mine is t4 else -1)
        n6, skip6, a6 = t6.available(for_seed, me if mine is t6 else -1)
        if a4 + a6 <= k:
            k4, k6 = a4, a6
        else:
            # split k in proportion to the candidates, rounding at random so that the
            # expected share of each family is exact
            k4 = min(a4, max(k - a6, int(k * a4 / (a4 + a6) + self._rand())))
            k6 = k - k4
        r4 = t4.window(n4, skip4, k4, self._rand) if k4 else []
        r6 = t6.window(n6, skip6, k6, self._rand) if k6 else []
        ids = t4.ids(r4) + t6.ids(r6) if want_ids else ()
        return t4.take(r4), t6.take(r6), ids

    async def announce(self, a: PeerAnnounce) -> AnnounceResult:
        return self.announce_nowait(a)

    # ------------------------------------------------------------ scrape and stats

    def scrape_nowait(self, info_hashes: Sequence[bytes]) -> list[ScrapeStats]:
        now = self._now()
        out = []
        for ih in info_hashes:
            sw = self._swarms.get(ih)
            if sw is None:
                out.append(ScrapeStats())
                continue
            if now > sw.purge_at:
                self._purge(ih, sw, now)
                if sw.empty():  # its last peer expired: free it now, not at the next sweep
                    del self._swarms[ih]
            seeds, leech = sw.counts()
            out.append(ScrapeStats(complete=seeds, downloaded=sw.downloaded, incomplete=leech))
        return out

    async def scrape(self, info_hashes: Sequence[bytes]) -> list[ScrapeStats]:
        return self.scrape_nowait(info_hashes)

    async def full_scrape(self, limit: int) -> dict[bytes, ScrapeStats]:
        hashes = [ih for ih, _ in zip(self._swarms, range(limit), strict=False)]
        return dict(zip(hashes, self.scrape_nowait(hashes), strict=True))

    def statistics_nowait(self) -> StoreStats:
        peers = seeds = downloaded = 0
        for sw in self._swarms.values():
            s, leech = sw.counts()
            seeds += s
            peers += s + leech
            downloaded += sw.downloaded
        return StoreStats(swarms=len(self._swarms), peers=peers, seeds=seeds, downloaded=downloaded)

    async def statistics(self) -> StoreStats:
        return self.statistics_nowait()

    async def aclose(self) -> None:
        self._swarms.clear()
        self._due.clear()
