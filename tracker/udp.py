"""The BEP 15 UDP tracker as an ``asyncio.DatagramProtocol``.

Connection ids are stateless and unforgeable: the first 8 bytes of a keyed BLAKE2b
of the client's IP address and the current 2-minute window. The port is left out on
purpose: libtorrent shares one connection id among all its sockets talking to a
tracker (a process-wide cache), and the IP is what the id protects against spoofing. The server accepts the
current and the previous window, so an id stays valid for at least 2 minutes (BEP 15:
"trackers should accept the connection ID until two minutes after it has been sent")
and at most 4, and no table of issued ids exists to fill up.

Bad packets never stop the server:

* shorter than 16 bytes, or a connect without the protocol magic: dropped, counted;
* unknown action, short announce, scrape with a bad length or more than 74 hashes,
  a wrong or expired connection id: answered with a BEP 15 error packet, counted.

Announce answers use the 6-byte peer form over IPv4 and the 18-byte form over IPv6
(an IPv4-mapped sender on a dual-stack socket counts as IPv4).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import struct
import time
from collections.abc import Callable, Coroutine
from typing import Any

from torrent.errors import RemoteProtocolError
from torrent.proto.tracker_codec import AnnounceEvent
from torrent.proto.tracker_codec_udp import (
    UDP_ANNOUNCE_SIZE,
    UDP_PROTOCOL_ID,
    UdpAction,
    UdpScrapeRequest,
    decode_udp_request,
    parse_udp_url_data,
    unpack_udp_announce,
)
from tracker.service import CLIENT_PREFIX_LEN, NOT_ALLOWED, STORE_UNAVAILABLE, TrackerService
from tracker.store import AnnounceRejected, AnnounceResult, PeerAnnounce, ReannounceStore, StoreUnavailable
from tracker.users import UDP_SCRAPE_REFUSED, Ticket, passkey_from_path

log = logging.getLogger("pytorrent.tracker.udp")

#: BEP 15: connection ids are valid for two minutes.
CONNECTION_ID_WINDOW_S = 120
#: Most store round trips (Redis) in flight at once; later packets are dropped.
MAX_PENDING = 4096

_HEADER = struct.Struct(">QII")
_CONNECT_RESPONSE = struct.Struct(">IIQ")
_ANNOUNCE_HEAD = struct.Struct(">IIIII")
_ACTION_TXID = struct.Struct(">II")
_SCRAPE_ENTRY = struct.Struct(">III")
_ERROR = int(UdpAction.ERROR)
#: A BEP 15 announce as ``tracker_codec_udp.unpack_udp_announce`` reads it; the hot path
#: (:meth:`UdpTracker._announce_fast`) unpacks it itself and leaves every packet it
#: does not like to the general path, which checks it with the codec.
_ANNOUNCE = struct.Struct(">QII20s20sQQQIIIi2s")
_INT64_MAX = (1 << 63) - 1
_EVENTS = tuple(AnnounceEvent)  # indexed by the BEP 15 number
_new_tuple = tuple.__new__
#: Sender addresses the hot path keeps an entry for before it starts again.
_HOSTS_MAX = 65536

#: Clients whose connection ids are cached before the cache is cleared.
_ID_CACHE_MAX = 100_000

Spawn = Callable[[Coroutine[Any, Any, None]], object]


class ConnectionIds:
    """Issues and checks BEP 15 connection ids without keeping state.

    Args:
        secret: the hash key; several processes that share clients must share it.
        clock: wall-clock seconds.
    """

    def __init__(self, secret: bytes | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret if secret is not None else os.urandom(32)
        if not 16 <= len(self._secret) <= 64:
            self._secret = hashlib.blake2b(self._secret, digest_size=32).digest()
        self._clock = clock
        # the two valid ids of recent clients, so a packet costs a dict lookup, not a hash
        self._cache: dict[str, tuple[int, int]] = {}
        self._cache_window = -1

    def _make(self, host: str, window: int) -> int:
        h = hashlib.blake2b(b"%s|%d" % (host.encode(), window), key=self._secret, digest_size=8)
        return int.from_bytes(h.digest(), "big")

    def _valid(self, host: str) -> tuple[int, int]:
        """(current id, previous window's id) for ``host``, cached per window."""
        window = int(self._clock()) // CONNECTION_ID_WINDOW_S
        if window != self._cache_window:
            self._cache.clear()
            self._cache_window = window
        ids = self._cache.get(host)
        if ids is None:
            ids = (self._make(host, window), self._make(host, window - 1))
            if len(self._cache) >= _ID_CACHE_MAX:
                self._cache.clear()
            self._cache[host] = ids
        return ids

    def issue(self, host: str) -> int:
        return self._valid(host)[0]

    def valid_until(self, host: str) -> tuple[int, int, float]:
        """The two ids :meth:`check` accepts from ``host`` now, and the :attr:`clock`
        time until which that holds (the end of the current window)."""
        now, previous = self._valid(host)
        return now, previous, (self._cache_window + 1) * CONNECTION_ID_WINDOW_S

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    def check(self, conn_id: int, host: str) -> bool:
        ids = self._cache.get(host)
        if ids is None or int(self._clock()) // CONNECTION_ID_WINDOW_S != self._cache_window:
            ids = self._valid(host)
        return conn_id == ids[0] or conn_id == ids[1]


class UdpTracker(asyncio.DatagramProtocol):
    """BEP 15 server over a :class:`TrackerService`.

    Args:
        service: the tracker service (store, settings, counters, allow-list).
        conn_ids: connection id issuer/checker.
        spawn: runs a coroutine as an owned task; needed only for stores without a
            synchronous view (Redis). Each such coroutine catches its own errors.
    """

    def __init__(
        self, service: TrackerService, conn_ids: ConnectionIds, *, spawn: Spawn | None = None
    ) -> None:
        self.service = service
        self.conn_ids = conn_ids
        self.spawn = spawn
        self.transport: asyncio.DatagramTransport | None = None
        sync = service.sync_store
        self._sync = sync.announce_nowait if sync is not None else None
        self._sync_scrape = sync.scrape_nowait if sync is not None else None
        self._reannounce = sync.reannounce_nowait if isinstance(sync, ReannounceStore) else None
        self._interval = service.settings.interval_s
        self._accept_ip = service.settings.accept_ip_param
        self._numwant_default = service.settings.numwant_default
        self._numwant_max = service.settings.numwant_max
        #: a public tracker over a synchronous store: announces take the hot path
        self._fast = sync is not None and service.private is None
        #: sender address -> (the two connection ids it may send, its packed address,
        #: until when the ids hold), for the hot path
        self._hosts: dict[str, tuple[int, int, bytes, float]] = {}
        self._id_clock = conn_ids.clock
        self.pending = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP socket error: %s", exc)

    def _error(self, txid: int, message: str, addr: Any) -> None:
        assert self.transport is not None
        self.transport.sendto(_ACTION_TXID.pack(_ERROR, txid) + message.encode(), addr)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            if not (self._fast and self._announce_fast(data, addr)):
                self._handle(data, addr)
        except Exception:  # a bug: log it and keep serving
            self.service.counters.failures_internal += 1
            log.exception("UDP packet from %s failed", addr[0])

    def _announce_fast(self, data: bytes, addr: Any) -> bool:
        """A well-formed announce with a valid connection id, answered start to end here
        (the commonest packet by far); False, with nothing counted or sent, for anything
        else: the general path (:meth:`_handle`) takes it, failures and all."""
        if len(data) < UDP_ANNOUNCE_SIZE:
            return False
        conn_id, action, txid, ih, pid, downloaded, left, uploaded, event, ip, key, numwant, port = (
            _ANNOUNCE.unpack_from(data)
        )
        if action != 1 or event > 3 or port == b"\0\0" or (downloaded | left | uploaded) > _INT64_MAX:
            return False
        host = addr[0]
        entry = self._hosts.get(host)
        if entry is None or self._id_clock() >= entry[3]:
            entry = self._host(host)
            if entry is None:
                return False
        service = self.service
        allow = service.allow
        if (
            (conn_id != entry[0] and conn_id != entry[1])
            or (ip and self._accept_ip)
            or (allow is not None and ih not in allow.hashes)
        ):
            return False
        source = entry[2]
        service.counters.udp_announces += 1
        service.log_countdown -= 1  # service.note_announce, inlined
        if service.log_countdown <= 0:
            service.log_access()
        clients = service.clients
        prefix = pid[:CLIENT_PREFIX_LEN]
        if prefix in clients:  # service.note_client, inlined for a client seen before
            clients[prefix] += 1
        else:
            service.note_client(pid)
        if event == 3:  # stopped: no peers needed
            numwant = 0
        elif numwant < 0:
            numwant = self._numwant_default
        elif numwant > self._numwant_max:
            numwant = self._numwant_max
        peer = source + port
        if not event and self._reannounce is not None:
            again = self._reannounce(ih, pid, peer, left == 0, numwant)
            if again is not None:  # the commonest announce: answered without the general store path
                self.transport.sendto(
                    _ANNOUNCE_HEAD.pack(1, txid, self._interval, again[1], again[0]) + again[2], addr
                )
                return True
        # PeerAnnounce(...) made directly (its __new__ is a Python-level call): the fields
        # in order, ending with tally and refuse_new
        pa = _new_tuple(
            PeerAnnounce,
            (ih, pid, peer, key, left == 0, _EVENTS[event], numwant, False, False, None, None),
        )
        try:
            res = self._sync(pa)  # type: ignore[misc]
        except AnnounceRejected as exc:
            service.note_rejected(exc)
            self._error(txid, exc.reason, addr)
            return True
        self.transport.sendto(  # type: ignore[union-attr]
            _ANNOUNCE_HEAD.pack(1, txid, self._interval, res.incomplete, res.complete)
            + (res.peers6 if len(source) == 16 else res.peers4),
            addr,
        )
        return True

    def _host(self, host: str) -> tuple[int, int, bytes, float] | None:
        """The hot path's entry for ``host`` (made afresh), or None if it is not an IP literal."""
        source = self.service.pack_address(host)
        if source is None:
            return None
        if len(self._hosts) >= _HOSTS_MAX:
            self._hosts.clear()
        now, previous, until = self.conn_ids.valid_until(host)
        entry = self._hosts[host] = (now, previous, source, until)
        return entry

    def _handle(self, data: bytes, addr: Any) -> None:
        counters = self.service.counters
        if len(data) < 16:
            counters.udp_dropped_short += 1
            return
        conn_id, action, txid = _HEADER.unpack_from(data)
        host = addr[0]
        if action == 0:
            if conn_id != UDP_PROTOCOL_ID:
                counters.udp_dropped_malformed += 1
                return
            counters.udp_connects += 1
            assert self.transport is not None
            self.transport.sendto(_CONNECT_RESPONSE.pack(0, txid, self.conn_ids.issue(host)), addr)
            return
        if action != 1 and action != 2:
            counters.udp_dropped_malformed += 1
            self._error(txid, "unknown action", addr)
            return
        if not self.conn_ids.check(conn_id, host):
            counters.udp_bad_connection_id += 1
            self._error(txid, "bad or expired connection id", addr)
            return
        if action == 2:
            try:
                packet = decode_udp_request(data)
            except RemoteProtocolError as exc:
                counters.udp_dropped_malformed += 1
                self._error(txid, str(exc), addr)
                return
            assert isinstance(packet, UdpScrapeRequest)
            self._scrape(packet, txid, addr)
            return
        self._announce(data, txid, addr, host)

    def _announce(self, data: bytes, txid: int, addr: Any, host: str) -> None:
        """An announce whose connection id checked out."""
        counters = self.service.counters
        try:
            _, _, ih, pid, downloaded, left, uploaded, event, ip, key, numwant, port = unpack_udp_announce(
                data
            )
        except RemoteProtocolError as exc:
            counters.udp_dropped_malformed += 1
            self._error(txid, str(exc), addr)
            return
        service = self.service
        counters.udp_announces += 1
        service.note_announce()
        service.note_client(pid)
        if port == 0:  # as over HTTP: nobody could connect to it
            counters.failures_bad_request += 1
            self._error(txid, "bad port", addr)
            return
        if service.allow is not None and ih not in service.allow.hashes:
            counters.failures_not_allowed += 1
            self._error(txid, NOT_ALLOWED, addr)
            return
        source = self._source(host, ip)
        if source is None:
            return
        ticket = None
        if service.private is not None:
            ticket = self._private_admit(data, ih, pid, downloaded, left, uploaded, event, source, txid, addr)
            if ticket is None:
                return
        pa = service.raw_peer_announce(ih, pid, source, port, key, left, event, numwant, False, False)
        if ticket is not None:
            pa = pa._replace(tally=ticket.tally, refuse_new=ticket.refuse_new)
        if self._sync is not None:
            try:
                res = self._sync(pa)
            except AnnounceRejected as exc:
                service.note_rejected(exc)
                self._error(txid, exc.reason, addr)
                return
            if ticket is not None and service.private is not None:
                service.private.settle(ticket, res.tally)
            self.transport.sendto(  # type: ignore[union-attr]
                _ANNOUNCE_HEAD.pack(1, txid, self._interval, res.incomplete, res.complete)
                + (res.peers6 if len(source) == 16 else res.peers4),
                addr,
            )
        elif self.pending < MAX_PENDING and self.spawn is not None:
            self.pending += 1
            self.spawn(self._announce_async(pa, txid, addr, ticket))
        else:
            counters.udp_dropped_busy += 1

    def _source(self, host: str, ip: int) -> bytes | None:
        """The packed address to list the peer at (``ip`` only with accept_ip_param)."""
        source = self.service.pack_address(host)
        if source is not None and ip and self._accept_ip and len(source) == 4:
            # BEP 15's ip field is IPv4; the answer's form must still match the socket's
            source = ip.to_bytes(4, "big")
        return source

    def _private_admit(
        self,
        data: bytes,
        ih: bytes,
        pid: bytes,
        downloaded: int,
        left: int,
        uploaded: int,
        event: int,
        source: bytes,
        txid: int,
        addr: Any,
    ) -> Ticket | None:
        """Private mode: check the passkey and rules; the announce's ticket, or None
        when refused (the error is sent)."""
        private = self.service.private
        assert private is not None
        try:  # BEP 41: the passkey rides in the URL data, path /<passkey>/announce
            url = parse_udp_url_data(data[UDP_ANNOUNCE_SIZE:])
        except RemoteProtocolError as exc:
            self.service.counters.udp_dropped_malformed += 1
            self._error(txid, str(exc), addr)
            return None
        verdict = private.admit(passkey_from_path(url.partition(b"?")[0]), ih, pid, left, event, source)
        if isinstance(verdict, str):
            self.service.counters.failures_private += 1
            self._error(txid, verdict, addr)
            return None
        return private.ticket(
            verdict, ih, pid, uploaded=uploaded, downloaded=downloaded, left=left, event=event, ip=source
        )

    def _send_announce(self, res: AnnounceResult, ipv6: bool, txid: int, addr: Any) -> None:
        assert self.transport is not None
        head = _ANNOUNCE_HEAD.pack(1, txid, self._interval, res.incomplete, res.complete)
        self.transport.sendto(head + (res.peers6 if ipv6 else res.peers4), addr)

    async def _announce_async(self, pa: PeerAnnounce, txid: int, addr: Any, ticket: Ticket | None) -> None:
        try:
            res = await self.service.store.announce(pa)
            if ticket is not None and self.service.private is not None:
                self.service.private.settle(ticket, res.tally)
        except StoreUnavailable:
            self.service.counters.failures_store_unavailable += 1
            self._error(txid, STORE_UNAVAILABLE, addr)
        except AnnounceRejected as exc:
            self.service.note_rejected(exc)
            self._error(txid, exc.reason, addr)
        except Exception:
            self.service.counters.failures_internal += 1
            log.exception("UDP announce failed")
        else:
            if self.transport is not None and not self.transport.is_closing():
                self._send_announce(res, len(pa.addr) == 18, txid, addr)
        finally:
            self.pending -= 1

    def _scrape(self, packet: UdpScrapeRequest, txid: int, addr: Any) -> None:
        service = self.service
        service.counters.udp_scrapes += 1
        hashes = packet.info_hashes
        if service.private is not None:  # a UDP scrape carries no passkey (BEP 41 is announce-only)
            service.counters.failures_private += 1
            self._error(txid, UDP_SCRAPE_REFUSED, addr)
            return
        if not any(service.allowed(ih) for ih in hashes):
            service.counters.failures_not_allowed += 1
            self._error(txid, NOT_ALLOWED, addr)
            return
        if self._sync_scrape is not None:
            self._send_scrape(self._sync_scrape(hashes), hashes, txid, addr)
        elif self.pending < MAX_PENDING and self.spawn is not None:
            self.pending += 1
            self.spawn(self._scrape_async(hashes, txid, addr))
        else:
            service.counters.udp_dropped_busy += 1

    def _send_scrape(self, stats: list[Any], hashes: tuple[bytes, ...], txid: int, addr: Any) -> None:
        assert self.transport is not None
        allowed = self.service.allowed
        body = b"".join(
            _SCRAPE_ENTRY.pack(s.complete, s.downloaded, s.incomplete) if allowed(ih) else bytes(12)
            for ih, s in zip(hashes, stats, strict=True)
        )
        self.transport.sendto(_ACTION_TXID.pack(2, txid) + body, addr)

    async def _scrape_async(self, hashes: tuple[bytes, ...], txid: int, addr: Any) -> None:
        try:
            stats = await self.service.store.scrape(hashes)
        except StoreUnavailable:
            self.service.counters.failures_store_unavailable += 1
            self._error(txid, STORE_UNAVAILABLE, addr)
        except Exception:
            self.service.counters.failures_internal += 1
            log.exception("UDP scrape failed")
        else:
            if self.transport is not None and not self.transport.is_closing():
                self._send_scrape(stats, hashes, txid, addr)
        finally:
            self.pending -= 1
