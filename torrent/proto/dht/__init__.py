"""The Mainline DHT (BEP 5, with BEP 32 and BEP 42), sans-IO.

``krpc`` (the message codec), ``routing`` (the routing table and BEP 42 ids), ``lookup``
(iterative lookups), ``storage`` (announced peers, tokens, rate limits) and ``node`` (all
of them as one object that takes datagrams and ``now`` and gives datagrams and events).
The asyncio side is ``torrent.engine.dht_node``.
"""

from __future__ import annotations

from torrent.proto.dht.krpc import Address, KrpcDecodeError, NodeInfo
from torrent.proto.dht.node import DhtConfig, DhtProtocol, DhtStatistics, LookupDone

__all__ = [
    "Address",
    "DhtConfig",
    "DhtProtocol",
    "DhtStatistics",
    "KrpcDecodeError",
    "LookupDone",
    "NodeInfo",
]
