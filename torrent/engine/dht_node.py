"""The DHT node on a UDP socket: asyncio around :class:`torrent.proto.dht.DhtProtocol`.

All the protocol lives in ``torrent.proto.dht`` (see docs/ARCHITECTURE.md for the split);
this module only moves datagrams, keeps one timer, and turns lookups into awaitables.

    async with DhtNode("0.0.0.0", 6881, bootstrap=[("192.0.2.1", 6881)]) as node:
        peers = await node.get_peers(info_hash)
        await node.announce(info_hash, 6881)
        print(node.statistics())

:meth:`DhtNode.datagram_received` is the single entry point for incoming datagrams. By
default the node binds its own socket; given ``transport=``, it sends through a socket
someone else owns (the client's listen port, shared with uTP and UDP trackers), whose
reader hands it every datagram: the node keeps those that start with ``b"d"`` (a bencoded
dict: uTP headers start with a version nibble of 1, BEP 15 packets with a 64-bit id or a
32-bit action) and ignores the rest.

The routing table can be saved to and loaded from a file the caller names (bencoded:
our id and compact node lists), so a restart does not need the bootstrap routers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import random
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torrent.errors import BencodeError
from torrent.proto import bencoding
from torrent.proto.dht import krpc, routing
from torrent.proto.dht.krpc import Address, KrpcDecodeError, NodeInfo
from torrent.proto.dht.node import DhtConfig, DhtProtocol, DhtStatistics, LookupDone

__all__ = ["DhtNode", "load_state", "save_state"]

log = logging.getLogger(__name__)

#: Socket receive buffer asked for (the kernel may cap it): a burst of queries waits there.
RECEIVE_BUFFER = 1 << 20
#: Seconds a bootstrap router's name may take to resolve.
RESOLVE_TIMEOUT_S = 5.0


def _normalise(addr: Any) -> Address:
    """asyncio's (host, port[, flow, scope]) to (host, port); IPv4-mapped IPv6 back to IPv4."""
    host, port = addr[0], addr[1]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return str(host), int(port)


def _new_node_id(host: str) -> bytes:
    """A BEP 42 id when we are bound to a public address (our external one), else random.

    Behind a NAT or on a wildcard address the external address is not known at start;
    the node starts with a random id and takes a conforming one once enough of the nodes
    that answer it agree on its external address (``DhtProtocol.change_id``).
    """
    try:
        bound = ipaddress.ip_address(host)
    except ValueError:
        return os.urandom(krpc.ID_LENGTH)
    if bound.is_unspecified or routing.is_exempt(host):
        return os.urandom(krpc.ID_LENGTH)
    return routing.node_id_for_ip(host, random.SystemRandom())


def save_state(path: Path, node_id: bytes, nodes: Sequence[NodeInfo]) -> None:
    """Write our id and ``nodes`` to ``path`` atomically (temporary file, then rename)."""
    v4 = [n for n in nodes if ":" not in n.host]
    v6 = [n for n in nodes if ":" in n.host]
    data = bencoding.encode(
        {b"id": node_id, b"nodes": krpc.encode_nodes(v4), b"nodes6": krpc.encode_nodes(v6)}
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def load_state(path: Path) -> tuple[bytes | None, list[NodeInfo]]:
    """Read what :func:`save_state` wrote; a missing or damaged file gives ``(None, [])``."""
    try:
        top = bencoding.decode(path.read_bytes())
        node_id = top[b"id"]
        if not isinstance(node_id, bytes) or len(node_id) != krpc.ID_LENGTH:
            return None, []
        # a saved table holds up to 160 buckets of k nodes per family: no packet bounds here
        nodes = _decode_saved(top.get(b"nodes", b""), krpc.NODE4_LENGTH)
        nodes += _decode_saved(top.get(b"nodes6", b""), krpc.NODE6_LENGTH)
        return node_id, nodes
    except (OSError, BencodeError, KrpcDecodeError, KeyError, TypeError):
        return None, []


def _decode_saved(raw: object, size: int) -> list[NodeInfo]:
    if not isinstance(raw, bytes):
        return []
    out: list[NodeInfo] = []
    for at in range(0, len(raw) - len(raw) % size, size * krpc.MAX_NODES):
        out += krpc.decode_nodes(raw[at : at + size * krpc.MAX_NODES], v6=size == krpc.NODE6_LENGTH)
    return out


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, node: DhtNode) -> None:
        self.node = node

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.node.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.node.send_errors += 1  # e.g. ICMP port unreachable from a node that went away


class DhtNode:
    """One DHT node on one UDP socket.

    Args:
        host: address to bind (an IPv6 one makes the node speak IPv6, BEP 32).
        port: UDP port; 0 picks a free one (read :attr:`port` after entering).
        bootstrap: (host, port) pairs to join through; host names are resolved once.
        node_id: our id; by default the saved one, else random.
        state_file: where the routing table is loaded from on entry and saved to on exit.
        config: protocol knobs (its ``families`` is set from ``host``).
        transport: send through this socket instead of binding one; its owner must call
            :meth:`datagram_received` for what it receives.
        transport6: a second, IPv6 socket beside ``transport`` (an IPv4 one): the node
            then takes part in both DHTs with one id and one routing table per family
            (BEP 32), and datagrams go out through the socket of their address's family.
    """

    def __init__(
        self,
        host: str = "0.0.0.0",
        port: int = 0,
        *,
        bootstrap: Sequence[tuple[str, int]] = (),
        node_id: bytes | None = None,
        state_file: Path | None = None,
        config: DhtConfig | None = None,
        transport: asyncio.DatagramTransport | None = None,
        transport6: asyncio.DatagramTransport | None = None,
    ) -> None:
        self.host = host
        self._port = port
        self.bootstrap_addresses = list(bootstrap)
        self._node_id = node_id
        self.state_file = state_file
        family = 6 if ":" in host else 4
        families = (4, 6) if transport6 is not None and transport is not None else (family,)
        self.config = dataclasses.replace(config or DhtConfig(), families=families)
        self._transport = transport
        self._transport6 = transport6
        self._owns_transport = transport is None
        self._protocol: DhtProtocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._waiters: dict[int, asyncio.Future[LookupDone]] = {}
        self._bootstrap_id: int | None = None
        self._bootstrapped = asyncio.Event()
        self.not_krpc = 0
        self.send_errors = 0

    # --- lifetime -------------------------------------------------------------------

    async def __aenter__(self) -> DhtNode:
        loop = self._loop = asyncio.get_running_loop()
        saved: list[NodeInfo] = []
        if self.state_file is not None:
            saved_id, saved = await asyncio.to_thread(load_state, self.state_file)
            if self._node_id is None:
                self._node_id = saved_id
        node_id = self._node_id or _new_node_id(self.host)
        self._protocol = DhtProtocol(node_id, loop.time(), config=self.config)
        if self._transport is None:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            self._transport, _ = await loop.create_datagram_endpoint(
                lambda: _Endpoint(self), local_addr=(self.host, self._port), family=family
            )
            sock = self._transport.get_extra_info("socket")
            with contextlib.suppress(OSError):  # room for bursts: the kernel drops what does not fit
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        try:
            routers = await self._resolve(self.bootstrap_addresses)
            self._bootstrap_id = self._protocol.bootstrap(routers, loop.time(), nodes=saved)
            self._flush()
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._close()

    async def _close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for fut in self._waiters.values():
            if not fut.done():
                # an error, not a cancellation: the waiter's task was not cancelled
                fut.set_exception(ConnectionAbortedError("the DHT node was closed"))
        self._waiters.clear()
        try:
            if self.state_file is not None and self._protocol is not None:
                try:
                    await asyncio.to_thread(
                        save_state, self.state_file, self._protocol.node_id, self._protocol.nodes()
                    )
                except OSError as exc:  # a full or read-only disk must not break the exit
                    log.warning("cannot save the DHT routing table to %s: %s", self.state_file, exc)
        finally:
            if self._owns_transport and self._transport is not None:
                self._transport.close()
            self._transport = None
            self._transport6 = None

    async def _resolve(self, addresses: Sequence[tuple[str, int]]) -> list[Address]:
        """Router names to addresses, all at once and within ``RESOLVE_TIMEOUT_S`` (a
        machine without a network must not hold up the start); what fails is skipped."""
        loop = self._loop
        assert loop is not None
        families = self.config.families
        family = (
            socket.AF_UNSPEC if len(families) > 1 else socket.AF_INET6 if 6 in families else socket.AF_INET
        )

        async def one(host: str, port: int) -> list[Address]:
            try:
                ipaddress.ip_address(host)
                return [(host, port)]
            except ValueError:
                pass
            try:
                async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                    infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
            except (OSError, TimeoutError):
                return []  # an unresolvable router is skipped; the others may do
            # one address per family we speak (the first the resolver gives)
            firsts = {info[0]: info for info in reversed(infos)}
            return [_normalise(info[4]) for info in firsts.values()]

        found = await asyncio.gather(*(one(h, p) for h, p in addresses))
        return [a for addrs in found for a in addrs]

    def rebind(
        self, transport: asyncio.DatagramTransport, transport6: asyncio.DatagramTransport | None = None
    ) -> None:
        """Send through these sockets from now on (the session moved its UDP port); the
        routing table, the node id and the lookups in flight stay. Only for a node given
        its sockets (``transport``), never one that bound its own."""
        if self._owns_transport:
            raise RuntimeError("this DHT node owns its socket")
        self._transport = transport
        self._transport6 = transport6

    # --- the socket side ------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """Hand over one datagram received on the socket (ours or a shared one)."""
        if self._protocol is None or self._loop is None:
            return
        if not data.startswith(b"d"):
            self.not_krpc += 1  # uTP or a UDP tracker's packet on a shared socket
            return
        self._protocol.receive_datagram(data, _normalise(addr), self._loop.time())
        self._flush()

    def _flush(self) -> None:
        proto, loop = self._protocol, self._loop
        if proto is None or loop is None:
            return
        transport, transport6 = self._transport, self._transport6
        for data, addr in proto.datagrams_to_send():
            out = transport6 if transport6 is not None and ":" in addr[0] else transport
            if out is not None:
                out.sendto(data, addr)
        while (ev := proto.next_event()) is not None:
            if ev.lookup_id == self._bootstrap_id:
                self._bootstrapped.set()
            fut = self._waiters.pop(ev.lookup_id, None)
            if fut is not None and not fut.done():
                fut.set_result(ev)
        deadline = proto.next_timeout()
        if deadline is not None and deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._protocol is None or self._loop is None:
            return
        self._protocol.tick(self._loop.time())
        self._flush()

    # --- the caller's side ----------------------------------------------------------

    @property
    def port(self) -> int:
        """The UDP port we listen on."""
        if self._transport is None:
            return self._port
        return int(self._transport.get_extra_info("sockname")[1])

    @property
    def node_id(self) -> bytes:
        if self._protocol is None:
            raise RuntimeError("DhtNode not started: use `async with`")
        return self._protocol.node_id

    @property
    def protocol(self) -> DhtProtocol:
        if self._protocol is None:
            raise RuntimeError("DhtNode not started: use `async with`")
        return self._protocol

    @property
    def node_count(self) -> int:
        """Nodes in the routing tables (cheap; 0 before the node is started)."""
        if self._protocol is None:
            return 0
        return sum(len(t) for t in self._protocol.tables.values())

    async def wait_bootstrapped(self) -> None:
        """Wait until joining (the find_node for our own id) has converged."""
        await self._bootstrapped.wait()

    async def _wait(self, lookup_id: int) -> LookupDone:
        assert self._loop is not None
        fut: asyncio.Future[LookupDone] = self._loop.create_future()
        self._waiters[lookup_id] = fut
        self._flush()
        return await fut

    async def find_node(self, target: bytes) -> LookupDone:
        """Run an iterative find_node for ``target``.

        Raises:
            ConnectionAbortedError: the node was closed before the lookup finished (as
                do the other lookups below).
        """
        assert self._loop is not None
        return await self._wait(self.protocol.find_node(target, self._loop.time()))

    async def get_peers(self, info_hash: bytes) -> list[Address]:
        """Peers of ``info_hash`` found by an iterative get_peers."""
        return list((await self.lookup_peers(info_hash)).peers)

    async def lookup_peers(self, info_hash: bytes) -> LookupDone:
        """Like :meth:`get_peers`, with the whole result (closest nodes, hops, time)."""
        assert self._loop is not None
        return await self._wait(self.protocol.get_peers(info_hash, self._loop.time()))

    async def announce(self, info_hash: bytes, port: int, *, implied_port: bool = False) -> LookupDone:
        """get_peers for ``info_hash``, then announce_peer ``port`` to the closest nodes.

        Returns:
            the lookup's result; ``announced`` counts the nodes that accepted.
        """
        assert self._loop is not None
        lookup_id = self.protocol.get_peers(
            info_hash, self._loop.time(), announce_port=port, implied_port=implied_port
        )
        return await self._wait(lookup_id)

    def adopt_external_address(self, host: str) -> bool:
        """Our external address is ``host`` (the router said so): take a BEP 42 id for it
        unless ours already conforms (or the address is a local one). True when the id
        changed; the node then re-joins with the nodes it knew."""
        proto, loop = self._protocol, self._loop
        if proto is None or loop is None or routing.conforms(proto.node_id, host):
            return False
        self._bootstrap_id = proto.change_node_id(
            routing.node_id_for_ip(host, random.SystemRandom()), loop.time()
        )
        self._flush()
        log.info("DHT node id changed to conform to BEP 42 for %s", host)
        return True

    def statistics(self) -> DhtStatistics:
        """A frozen snapshot of the node's counters and sizes."""
        assert self._loop is not None
        stats = self.protocol.statistics(self._loop.time())
        dropped = dict(stats.dropped)
        if self.not_krpc:
            dropped["not_krpc"] = self.not_krpc
        if self.send_errors:
            dropped["send_errors"] = self.send_errors
        return dataclasses.replace(stats, dropped=dropped)

    def save(self, path: Path) -> None:
        """Save the routing table now (synchronous; a few kilobytes)."""
        save_state(path, self.protocol.node_id, self.protocol.nodes())
