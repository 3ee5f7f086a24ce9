"""``RedisStore``: swarms in Redis, so several tracker processes (or hosts) share them.

With ``store_redis_cluster`` the only modules that import ``redis``. Every announce is one
round trip: a Lua script (sent once, then run by its SHA) expires, updates, counts and
samples atomically on the server.

Layout per swarm (``P`` is the swarm's bucket prefix, ``ih`` the raw 20-byte info
hash). On one server there is one bucket and ``P`` is the key prefix; on a cluster
(:mod:`tracker.store_redis_cluster`) ``P`` adds a hash tag naming the bucket, so that a
swarm's keys and its bucket's index share a slot:

* ``P ih :l4`` / ``:s4`` / ``:l6`` / ``:s6``: sorted sets of peer ids (leechers and
  seeds per address family) scored by the time of their last announce. Expiry is
  ``ZRANGEBYSCORE -inf (now - ttl)`` at the start of each announce: O(log n) when
  nothing is due.
* ``P ih :p``: hash from family byte + peer id to ``flags(1) key(8 hex or -) address``.
* ``P ih :d``: the completed count.
* ``P ih :t``: private mode: hash from peer id to its accounting baseline (rule 6 of
  :mod:`tracker.store`), removed with the peer.
* ``P swarms``: the bucket's sorted set of info hashes scored by last activity;
  :meth:`collect` deletes the keys of swarms idle for longer than the ttl (all their
  peers expired). Scrapes, statistics and collection run one script per bucket.

The same rules as :class:`~tracker.store.MemoryStore` hold (see its module doc); the
sample is ``ZRANDMEMBER`` per set, split across sets in proportion to their sizes.
When Redis cannot be reached within ``timeout_s`` every call raises
:class:`~tracker.store.StoreUnavailable`; the client reconnects by itself once Redis
is back.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)

from torrent.proto.tracker_codec import AnnounceEvent, ScrapeStats
from tracker.store import (
    MAX_SWARMS,
    AnnounceRejected,
    AnnounceResult,
    PeerAnnounce,
    StoreStats,
    StoreUnavailable,
    TrackerFull,
)

__all__ = ["RedisStore"]

#: Replies that mean "the store cannot answer now", not "a script has a bug": in a
#: cluster, a redirect or a shard down that outlived the client's one retry, or a
#: write that reached a demoted master.
_OUTAGE_REPLIES = (AskError, ClusterDownError, ClusterError, TryAgainError, ReadOnlyError)
#: Failures to reach the store at all.
_LINK_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)


def _is_outage(exc: Exception, client_faults: tuple[type[Exception], ...] = ()) -> bool:
    """Is ``exc`` an outage (StoreUnavailable) rather than a bug (any other ResponseError)?"""
    if isinstance(exc, _OUTAGE_REPLIES + client_faults):
        return True
    return isinstance(exc, _LINK_ERRORS) and not isinstance(exc, ResponseError)


def _unavailable(exc: Exception) -> StoreUnavailable:
    return StoreUnavailable(f"{type(exc).__name__}: {exc}")


# KEYS: 1 my leechers, 2 my seeds, 3 other leechers, 4 other seeds, 5 peer hash,
#       6 downloaded counter, 7 swarm index, 8 tallies (private mode's baselines)
# ARGV: 1 peer id, 2 address, 3 key ('' = none), 4 is seed, 5 event (0-3 as BEP 15),
#       6 numwant, 7 now, 8 ttl, 9 both families, 10 want ids, 11 info hash,
#       12 my family byte, 13 other family byte, 14 random seed, 15 most swarms in
#       this bucket, 16 '+' tally ('' = none), 17 refuse a new peer ('1')
_ANNOUNCE_LUA = r"""
math.randomseed(tonumber(ARGV[14]))
local now = tonumber(ARGV[7])
local cutoff = now - tonumber(ARGV[8])
local fams = {ARGV[12], ARGV[12], ARGV[13], ARGV[13]}
for i = 1, 4 do
  local old = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', '(' .. cutoff, 'LIMIT', 0, 2000)
  for _, pid in ipairs(old) do
    redis.call('ZREM', KEYS[i], pid)
    redis.call('HDEL', KEYS[5], fams[i] .. pid)
    redis.call('HDEL', KEYS[8], pid)
  end
end
local pid, addr, key = ARGV[1], ARGV[2], ARGV[3]
local field = ARGV[12] .. pid
local event = tonumber(ARGV[5])
local flags = 0
local rec = redis.call('HGET', KEYS[5], field)
if rec then
  flags = tonumber(string.sub(rec, 1, 1))
  local oldkey = string.sub(rec, 2, 9)
  if string.sub(rec, 10) ~= addr and flags % 2 == 1 and oldkey ~= key then
    return {'rejected'}
  end
  if flags % 2 == 1 then key = oldkey end
end
if not rec and event ~= 3 then
  if ARGV[17] == '1' then return {'refused'} end
  if not redis.call('ZSCORE', KEYS[7], ARGV[11])
      and redis.call('ZCARD', KEYS[7]) >= tonumber(ARGV[15]) then
    return {'full'}
  end
end
local tally = false
if ARGV[16] ~= '' then
  tally = redis.call('HGET', KEYS[8], pid)
  if event == 3 then
    redis.call('HDEL', KEYS[8], pid)
  else
    redis.call('HSET', KEYS[8], pid, string.sub(ARGV[16], 2))
  end
end
local function counts()
  return redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[4]),
         redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[3]),
         tonumber(redis.call('GET', KEYS[6]) or '0')
end
if event == 3 then
  if rec then
    redis.call('ZREM', KEYS[1], pid)
    redis.call('ZREM', KEYS[2], pid)
    redis.call('HDEL', KEYS[5], field)
  end
  local c, i, d = counts()
  if c + i == 0 then
    -- the last peer left: drop the swarm now rather than a ttl later
    redis.call('ZREM', KEYS[7], ARGV[11])
    redis.call('DEL', KEYS[6], KEYS[8])
  end
  return {'ok', c, i, d, '', '', {}, tally}
end
if ARGV[4] == '1' then
  redis.call('ZREM', KEYS[1], pid)
  redis.call('ZADD', KEYS[2], now, pid)
else
  redis.call('ZREM', KEYS[2], pid)
  redis.call('ZADD', KEYS[1], now, pid)
end
if not rec and key ~= '' then flags = 1 end
if key == '' then key = '--------' end
if event == 1 and flags < 2 then
  flags = flags + 2
  redis.call('INCR', KEYS[6])
end
redis.call('HSET', KEYS[5], field, tostring(flags) .. key .. addr)
redis.call('ZADD', KEYS[7], now, ARGV[11])
local c, i, d = counts()
local k = tonumber(ARGV[6])
local sets = {}
if ARGV[4] == '1' then sets = {1} else sets = {1, 2} end
if ARGV[9] == '1' then
  if ARGV[4] == '1' then sets = {1, 3} else sets = {1, 2, 3, 4} end
end
local sizes, total = {}, 0
for n, s in ipairs(sets) do
  local size = redis.call('ZCARD', KEYS[s])
  if s <= 2 and redis.call('ZSCORE', KEYS[s], pid) then size = size - 1 end
  sizes[n] = size
  total = total + size
end
local picked = {}
if k > 0 and total > 0 then
  -- how many of the k come from each set: k draws without replacement over the union
  -- (a multivariate hypergeometric draw), so the sample is uniform over all sets
  local wants = {}
  for n = 1, #sets do wants[n] = 0 end
  if total <= k then
    for n = 1, #sets do wants[n] = sizes[n] end
  else
    local rest = {}
    for n = 1, #sets do rest[n] = sizes[n] end
    local remaining = total
    for _ = 1, k do
      local r = math.random(remaining)
      local n = 1
      while r > rest[n] do r = r - rest[n]; n = n + 1 end
      wants[n] = wants[n] + 1
      rest[n] = rest[n] - 1
      remaining = remaining - 1
    end
  end
  for n, s in ipairs(sets) do
    local want = wants[n]
    if want > 0 then
      local fam = fams[s]
      -- ZRANDMEMBER may return small sets in set order, so drop the surplus entry at
      -- random rather than the last one (that would starve the newest peers)
      local got = redis.call('ZRANDMEMBER', KEYS[s], want + 1)
      local cand = {}
      for _, p in ipairs(got) do
        if not (s <= 2 and p == pid) then cand[#cand + 1] = p end
      end
      while #cand > want do
        local r = math.random(#cand)
        cand[r] = cand[#cand]
        cand[#cand] = nil
      end
      for _, p in ipairs(cand) do picked[#picked + 1] = {fam, p} end
    end
  end
end
local p4, p6, ids = {}, {}, {}
if #picked > 0 then
  local fields = {}
  for n, e in ipairs(picked) do fields[n] = e[1] .. e[2] end
  local recs = redis.call('HMGET', KEYS[5], unpack(fields))
  for n, r in ipairs(recs) do
    if r then
      local a = string.sub(r, 10)
      if #a == 6 then p4[#p4 + 1] = a else p6[#p6 + 1] = a end
      if ARGV[10] == '1' then ids[#ids + 1] = picked[n][2] end
    end
  end
end
return {'ok', c, i, d, table.concat(p4), table.concat(p6), ids, tally}
"""

# KEYS: 1 the bucket's swarm index (routes the call; the other keys are built from
#       ARGV so one call scrapes many swarms of one bucket)
# ARGV: 1 bucket prefix, 2 cutoff, 3.. info hashes
_SCRAPE_LUA = r"""
local out = {}
for n = 3, #ARGV do
  local base = ARGV[1] .. ARGV[n]
  local c = redis.call('ZCOUNT', base .. ':s4', ARGV[2], '+inf') + redis.call('ZCOUNT', base .. ':s6', ARGV[2], '+inf')
  local i = redis.call('ZCOUNT', base .. ':l4', ARGV[2], '+inf') + redis.call('ZCOUNT', base .. ':l6', ARGV[2], '+inf')
  local d = tonumber(redis.call('GET', base .. ':d') or '0')
  out[#out + 1] = {c, d, i}
end
return out
"""

# KEYS: 1 the bucket's swarm index; ARGV: 1 bucket prefix, 2 cutoff, 3 limit
_STATS_LUA = r"""
local hashes = redis.call('ZRANGEBYSCORE', ARGV[1] .. 'swarms', ARGV[2], '+inf', 'LIMIT', 0, tonumber(ARGV[3]))
local swarms, peers, seeds, done = 0, 0, 0, 0
for _, ih in ipairs(hashes) do
  local base = ARGV[1] .. ih
  local s = redis.call('ZCOUNT', base .. ':s4', ARGV[2], '+inf') + redis.call('ZCOUNT', base .. ':s6', ARGV[2], '+inf')
  local l = redis.call('ZCOUNT', base .. ':l4', ARGV[2], '+inf') + redis.call('ZCOUNT', base .. ':l6', ARGV[2], '+inf')
  if s + l > 0 then swarms = swarms + 1 end
  peers = peers + s + l
  seeds = seeds + s
  done = done + tonumber(redis.call('GET', base .. ':d') or '0')
end
return {swarms, peers, seeds, done}
"""

# KEYS: 1 the bucket's swarm index; ARGV: 1 bucket prefix, 2 cutoff, 3 limit
_COLLECT_LUA = r"""
local idle = redis.call('ZRANGEBYSCORE', ARGV[1] .. 'swarms', '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local removed = 0
for _, ih in ipairs(idle) do
  local base = ARGV[1] .. ih
  for _, suffix in ipairs({':l4', ':s4', ':l6', ':s6'}) do
    removed = removed + redis.call('ZCARD', base .. suffix)
  end
  redis.call('DEL', base .. ':l4', base .. ':s4', base .. ':l6', base .. ':s6', base .. ':p', base .. ':d',
             base .. ':t')
  redis.call('ZREM', ARGV[1] .. 'swarms', ih)
end
return removed
"""

#: Swarms a status/metrics snapshot looks at, at most (it runs on the Redis server).
STATS_SWARM_LIMIT = 10_000

#: Buckets handled at once by the calls that visit every bucket (stats, collect, full
#: scrape).
BUCKET_CONCURRENCY = 64

_T = TypeVar("_T")


class RedisStore:
    """A :class:`~tracker.store.PeerStore` in Redis.

    Args:
        url: ``redis://host:port/db`` (or ``unix://``).
        ttl_s: seconds after its last announce that a peer expires.
        timeout_s: connect and command timeout; past it the call raises StoreUnavailable.
        prefix: prepended to every key (lets several trackers share one Redis).
        clock: wall-clock seconds; every process sharing the Redis must agree on it.
        max_swarms: swarms held at once (counting those idle but not yet collected); an
            announce starting one more raises :class:`~tracker.store.TrackerFull`.
    """

    #: Errors the client library raises from a call cut short by its own reconnect
    #: logic (none for one server; see the cluster store).
    _client_faults: tuple[type[Exception], ...] = ()

    def __init__(
        self,
        url: str,
        ttl_s: int,
        *,
        timeout_s: float = 2.0,
        prefix: bytes = b"pt:",
        clock: Callable[[], float] = time.time,
        max_swarms: int = MAX_SWARMS,
    ) -> None:
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
            health_check_interval=0,
            decode_responses=False,
        )
        self._setup(client, ttl_s, [prefix], clock, max_swarms)

    def _setup(
        self,
        client: Any,
        ttl_s: int,
        bucket_prefixes: list[bytes],
        clock: Callable[[], float],
        max_swarms: int,
    ) -> None:
        """Shared by the one-server and the cluster constructors.

        ``bucket_prefixes`` has one entry per bucket (a power of two); a swarm's keys
        and its bucket's swarm index start with its bucket's prefix, so one Lua call
        only ever touches one bucket (one cluster slot).
        """
        assert len(bucket_prefixes) & (len(bucket_prefixes) - 1) == 0
        self.ttl_s = int(ttl_s)
        self.prefix = bucket_prefixes[0]
        self._buckets = bucket_prefixes
        self._mask = len(bucket_prefixes) - 1
        # each bucket enforces its share (buckets fill evenly: the bucket is a hash)
        self._bucket_max_swarms = max(1, -(-max_swarms // len(bucket_prefixes)))
        self._clock = clock
        self._rng = random.Random()
        self._redis = client
        self._announce = client.register_script(_ANNOUNCE_LUA)
        self._scrape = client.register_script(_SCRAPE_LUA)
        self._stats = client.register_script(_STATS_LUA)
        self._collect = client.register_script(_COLLECT_LUA)

    def _now(self) -> float:
        return round(self._clock(), 3)

    def _bucket(self, info_hash: bytes) -> int:
        return int.from_bytes(info_hash[:2], "big") & self._mask

    async def _call(self, script: Any, keys: list[bytes], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except self._client_faults:
            pass  # cut short by the client's own reconnect, not by the store: once more
        except Exception as exc:
            if _is_outage(exc, self._client_faults):
                raise _unavailable(exc) from None
            raise  # a bug in a script: not an outage
        try:
            return await script(keys=keys, args=args)
        except Exception as exc:
            if _is_outage(exc, self._client_faults):
                raise _unavailable(exc) from None
            raise

    async def _each(self, calls: Sequence[Coroutine[Any, Any, _T]]) -> list[_T]:
        """Await ``calls`` concurrently (they target different buckets, so shards)."""
        if len(calls) == 1:
            return [await calls[0]]
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(c) for c in calls]
        except ExceptionGroup as eg:
            first = eg.exceptions[0]
            if isinstance(first, StoreUnavailable):
                raise first from None
            raise
        return [t.result() for t in tasks]

    async def announce(self, a: PeerAnnounce) -> AnnounceResult:
        bucket = self._buckets[self._bucket(a.info_hash)]
        base = bucket + a.info_hash
        mine, other = (b"4", b"6") if len(a.addr) == 6 else (b"6", b"4")
        keys = [
            base + b":l" + mine,
            base + b":s" + mine,
            base + b":l" + other,
            base + b":s" + other,
            base + b":p",
            base + b":d",
            bucket + b"swarms",
            base + b":t",
        ]
        args = [
            a.peer_id,
            a.addr,
            b"" if a.key is None else b"%08x" % a.key,
            b"1" if a.is_seed else b"0",
            int(a.event),
            a.numwant,
            self._now(),
            self.ttl_s,
            b"1" if a.both_families else b"0",
            b"1" if a.want_peer_ids else b"0",
            a.info_hash,
            mine,
            other,
            self._rng.randrange(1 << 31),
            self._bucket_max_swarms,
            b"" if a.tally is None else b"+" + a.tally,  # '+': an empty tally is still one
            b"0" if a.refuse_new is None else b"1",
        ]
        reply = await self._call(self._announce, keys, args)
        status = reply[0]
        if status != b"ok":
            if status == b"rejected":
                raise AnnounceRejected("peer id already in use from another address (key mismatch)")
            if status == b"full":
                raise TrackerFull
            raise AnnounceRejected(a.refuse_new or "refused")
        _, complete, incomplete, downloaded, p4, p6, ids, tally = reply
        if a.event is AnnounceEvent.STOPPED:
            return AnnounceResult(complete, incomplete, downloaded, tally=tally)
        return AnnounceResult(complete, incomplete, downloaded, p4 or b"", p6 or b"", tuple(ids), tally)

    async def scrape(self, info_hashes: Sequence[bytes]) -> list[ScrapeStats]:
        if not info_hashes:
            return []
        cutoff = self._now() - self.ttl_s
        groups: dict[int, list[int]] = {}
        for n, ih in enumerate(info_hashes):
            groups.setdefault(self._bucket(ih), []).append(n)
        calls = []
        for b, members in groups.items():
            prefix = self._buckets[b]
            hashes = [info_hashes[n] for n in members]
            calls.append(self._call(self._scrape, [prefix + b"swarms"], [prefix, cutoff, *hashes]))
        out: list[ScrapeStats] = [ScrapeStats(0, 0, 0)] * len(info_hashes)
        for members, reply in zip(groups.values(), await self._each(calls), strict=True):
            for n, (c, d, i) in zip(members, reply, strict=True):
                out[n] = ScrapeStats(complete=c, downloaded=d, incomplete=i)
        return out

    async def _active(self, bucket: bytes, cutoff: float, limit: int) -> list[bytes]:
        try:
            found = await self._redis.zrangebyscore(bucket + b"swarms", cutoff, "+inf", start=0, num=limit)
        except Exception as exc:
            if _is_outage(exc, self._client_faults):
                raise _unavailable(exc) from None
            raise
        return [bytes(h) for h in found if isinstance(h, bytes)]

    async def full_scrape(self, limit: int) -> dict[bytes, ScrapeStats]:
        cutoff = self._now() - self.ttl_s
        hashes: list[bytes] = []
        for i in range(0, len(self._buckets), BUCKET_CONCURRENCY):
            chunk = self._buckets[i : i + BUCKET_CONCURRENCY]
            for found in await self._each([self._active(b, cutoff, limit) for b in chunk]):
                hashes.extend(found)
            if len(hashes) >= limit:
                break
        hashes = hashes[:limit]
        out: dict[bytes, ScrapeStats] = {}
        for i in range(0, len(hashes), 500):
            chunk = hashes[i : i + 500]
            out.update(zip(chunk, await self.scrape(chunk), strict=True))
        return out

    async def statistics(self) -> StoreStats:
        cutoff = self._now() - self.ttl_s
        limit = max(1, STATS_SWARM_LIMIT // len(self._buckets))
        swarms = peers = seeds = done = 0
        for i in range(0, len(self._buckets), BUCKET_CONCURRENCY):
            chunk = self._buckets[i : i + BUCKET_CONCURRENCY]
            calls = [self._call(self._stats, [b + b"swarms"], [b, cutoff, limit]) for b in chunk]
            for s, p, sd, d in await self._each(calls):
                swarms, peers, seeds, done = swarms + s, peers + p, seeds + sd, done + d
        return StoreStats(swarms=swarms, peers=peers, seeds=seeds, downloaded=done)

    async def collect(self) -> int:
        """Delete the keys of swarms idle for longer than the ttl, bucket by bucket.

        Each bucket costs one script call, O(log n) when nothing is due.
        """
        cutoff = self._now() - self.ttl_s
        removed = 0
        for i in range(0, len(self._buckets), BUCKET_CONCURRENCY):
            chunk = self._buckets[i : i + BUCKET_CONCURRENCY]
            calls = [self._call(self._collect, [b + b"swarms"], [b, cutoff, 1000]) for b in chunk]
            removed += sum(int(r) for r in await self._each(calls))
        return removed

    async def ping(self) -> None:
        """Check Redis answers.

        Raises:
            StoreUnavailable: it does not.
        """
        try:
            await self._redis.ping()
        except Exception as exc:
            if _is_outage(exc, self._client_faults):
                raise _unavailable(exc) from None
            raise

    async def aclose(self) -> None:
        await self._redis.aclose()
