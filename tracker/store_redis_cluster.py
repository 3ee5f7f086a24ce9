"""``RedisClusterStore``: swarms sharded over a Redis Cluster, with failover.

The same Lua scripts and key layout as :class:`~tracker.store_redis.RedisStore`, run
through redis-py's asyncio cluster client (it maps slots to masters and follows
``MOVED``/``ASK`` redirects). What changes is where the keys live:

* Every info hash falls in one of ``buckets`` buckets (its first two bytes, masked),
  and every key of a swarm starts with ``P{bNNN}``: a hash tag, so Redis puts all of a
  swarm's keys, and its bucket's swarm index, in one slot. The announce script
  touches only that slot, so an announce stays one round trip to one master.
* A scrape groups its info hashes by bucket and runs one script per bucket, all at
  once (each goes to the master owning that bucket's slot). Statistics and the
  idle-swarm sweep visit the buckets the same way, a slice per housekeeping run.

Failover: when a master dies, calls for its slots fail with a connection error; the
client then rereads the slot map and retries once, and if that fails too the announce
fails with ``tracker store unavailable``. Once a replica has been promoted (the
cluster's ``cluster-node-timeout`` plus an election, a few seconds) the reread map
points at it and service resumes without a restart. Masters keep serving their own
slots meanwhile when the servers run with ``cluster-require-full-coverage no``.

A tracker's state is soft: peers held on a shard whose writes were lost (the promoted
replica lags its master a little) are back with their next announce.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.maint_notifications import MaintNotificationsConfig

from tracker.store import MAX_SWARMS
from tracker.store_redis import RedisStore

__all__ = ["CLUSTER_SCHEME", "RedisClusterStore", "parse_cluster_url"]

CLUSTER_SCHEME = "redis-cluster://"

#: Buckets by default: enough that the slots of a few hundred masters each get
#: some, few enough that a sweep over all of them stays cheap.
DEFAULT_BUCKETS = 1024


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """``redis-cluster://[user:password@]HOST:PORT[,HOST:PORT...]`` → nodes, user, password.

    Raises:
        ValueError: not such a URL.
    """
    if not url.startswith(CLUSTER_SCHEME):
        raise ValueError(f"not a {CLUSTER_SCHEME} URL")
    rest = url[len(CLUSTER_SCHEME) :].rstrip("/")
    user = password = None
    if "@" in rest:
        cred, rest = rest.rsplit("@", 1)
        name, _, secret = cred.partition(":")
        user, password = name or None, secret or None
    nodes = []
    for part in rest.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{part!r} is not HOST:PORT")
        nodes.append((host.strip("[]"), int(port)))
    return nodes, user, password


class RedisClusterStore(RedisStore):
    """A :class:`~tracker.store.PeerStore` on a Redis Cluster.

    Args:
        url: ``redis-cluster://HOST:PORT[,HOST:PORT...]``; any reachable node will do,
            the rest of the cluster is discovered.
        ttl_s: seconds after its last announce that a peer expires.
        timeout_s: connect and command timeout per node.
        prefix: prepended to every key.
        clock: wall-clock seconds; every process sharing the cluster must agree on it.
        buckets: how many hash-tag buckets the info hashes are spread over (a power
            of two); every tracker sharing the cluster must use the same number.
        max_connections: connections per node this process may open.
        max_swarms: swarms held at once, enforced per bucket (``max_swarms / buckets``
            each, rounded up).
    """

    # While the cluster client rereads the slot map (after a node failed, or while a
    # new cluster converges), it closes connections that other announces are using at
    # that moment; those calls fail with these (a closed transport) instead of a
    # ConnectionError. Such a call is tried once more, then answered as an outage.
    _client_faults = (RuntimeError, AttributeError)

    def __init__(
        self,
        url: str,
        ttl_s: int,
        *,
        timeout_s: float = 2.0,
        prefix: bytes = b"pt:",
        clock: Callable[[], float] = time.time,
        buckets: int = DEFAULT_BUCKETS,
        max_connections: int = 512,
        max_swarms: int = MAX_SWARMS,
    ) -> None:
        if buckets < 1 or buckets & (buckets - 1) or buckets > 1 << 16:
            raise ValueError("buckets must be a power of two up to 65536")
        nodes, user, password = parse_cluster_url(url)
        client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            username=user,
            password=password,
            # one retry (after rereading the slot map) on a connection error or a
            # redirect storm, then the caller answers "tracker store unavailable"
            retry=Retry(NoBackoff(), 1),
            require_full_coverage=False,
            # a MOVED patches that slot only; the default also rebuilds the whole map
            # every 5th MOVED, closing connections other announces are using
            reinitialize_steps=0,
            max_connections=max_connections,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=0,
            decode_responses=False,
            # no maintenance-notification handshake on each new connection: a round
            # trip saved, and the client's handshake races with other calls that
            # share the node while it connects
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
        self._setup(client, ttl_s, [prefix + b"{b%04x}" % n for n in range(buckets)], clock, max_swarms)
