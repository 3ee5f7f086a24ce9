"""Announcing to trackers: HTTP and UDP (BEP 15), grouped in BEP 12 tiers.

* :class:`HttpTracker` sends ``GET <announce>?<query>`` through the session's
  :class:`~torrent.engine.http_client.HttpClient` (plain HTTP by its own GET, without
  loading aiohttp; ``https`` by aiohttp), follows redirects itself, and decodes the
  bencoded answer (compact, dict and ``peers6`` lists; ``failure reason`` raises
  :class:`TrackerError`, ``warning message`` is passed on).
* :class:`UdpTracker` speaks BEP 15: connect, then announce, retransmitting after
  ``15 * 2**n`` seconds (n = 0, 1, ...), and reuses a connection id for one minute.
  BEP 15 lets n grow to 8 (an hour); we give up after ``max_retries`` retransmissions so
  the next tracker of the tier gets its turn.
* :class:`TrackerTiers` implements BEP 12: each tier is shuffled once; trackers of a
  tier are tried in order, a tracker that answers moves to the front of its tier, and
  the next tier is only tried when every tracker of the previous one failed. Walks may
  run at once (a hybrid announces its two hashes together).

The byte formats live in :mod:`torrent.proto.tracker_codec`; this module only does I/O.
Left out: scrape from the client, BEP 41 UDP options, tracker-side DNS caching.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urljoin, urlsplit

from torrent.engine.http_client import REDIRECT_STATUSES, BodyTooLarge, HttpClient, HttpError, wire_url
from torrent.errors import ProtocolError, TrackerError
from torrent.proto import tracker_codec as codec
from torrent.proto.tracker_codec import AnnounceEvent, AnnounceRequest, AnnounceResponse

if TYPE_CHECKING:  # BEP 15's codec loads with the first UDP tracker (UdpTracker)
    from torrent.proto import tracker_codec_udp as udp_codec

__all__ = [
    "AnnounceEvent",
    "AnnounceRequest",
    "AnnounceResponse",
    "HttpTracker",
    "TrackerClient",
    "TrackerTiers",
    "UdpTracker",
    "make_tracker",
    "wire_url",
]

#: Largest HTTP announce response we read (a few thousand peers fit easily).
MAX_HTTP_RESPONSE = 1 << 20
#: BEP 15: "a connection ID can be used for multiple requests ... for one minute".
UDP_CONNECTION_ID_TTL_S = 60.0
#: BEP 15 base retransmission timeout: 15 * 2**n seconds.
UDP_RETRY_BASE_S = 15.0
#: Redirects followed for one announce (HTTP 301, 302, 303, 307, 308).
MAX_HTTP_REDIRECTS = 5

#: Shuffles the tiers when the caller gives no ``rng`` (seeding a fresh one per torrent
#: costs more than the shuffle).
_SHUFFLE_RNG = random.Random()


class TrackerClient(Protocol):
    """One tracker URL."""

    url: str

    async def announce(self, req: AnnounceRequest) -> AnnounceResponse:
        """Announce ``req``.

        Raises:
            TrackerError: the tracker refused (``failure reason``), could not be reached,
                or answered garbage.
        """
        ...

    async def close(self) -> None: ...


class HttpTracker:
    """An ``http://`` or ``https://`` tracker (through :class:`HttpClient`: plain HTTP by
    our own GET, ``https`` by aiohttp)."""

    def __init__(self, url: str, http: HttpClient, *, timeout_s: float = 15.0) -> None:
        self.url = url
        self._http = http
        self._timeout_s = timeout_s
        # The ``tracker id`` of each info hash's last answer (a hybrid is announced under two).
        self._tracker_ids: dict[bytes, bytes] = {}

    async def announce(self, req: AnnounceRequest) -> AnnounceResponse:
        tracker_id = self._tracker_ids.get(req.info_hash)
        if tracker_id is not None and req.tracker_id is None:
            req = _replace_tracker_id(req, tracker_id)
        try:
            async with asyncio.timeout(self._timeout_s):
                body = await self._get(codec.announce_url(self.url, req))
        except TimeoutError:
            raise TrackerError(f"{self.url}: no answer within {self._timeout_s:g} s") from None
        except BodyTooLarge:
            raise TrackerError(
                f"{self.url}: response too large (more than {MAX_HTTP_RESPONSE} bytes)"
            ) from None
        except HttpError as exc:
            raise TrackerError(f"{self.url}: {exc}") from None
        except OSError as exc:
            raise TrackerError(f"{self.url}: {exc.strerror or exc}") from None
        try:
            out = codec.decode_announce_response(body)
        except TrackerError as exc:
            raise TrackerError(f"{self.url}: {exc.reason}") from None
        except ProtocolError as exc:
            raise TrackerError(f"{self.url}: bad response: {exc}") from None
        if out.tracker_id is not None:
            self._tracker_ids[req.info_hash] = out.tracker_id
        return out

    async def _get(self, url: str) -> bytes:
        """GET ``url`` and return the body, following redirects ourselves: a client library
        would re-quote a redirect's ``Location`` and so undo the encoding of the binary
        values in its query, so each hop is sent exactly as the tracker wrote it."""
        for _ in range(MAX_HTTP_REDIRECTS + 1):
            reply = await self._http.get(url, max_body=MAX_HTTP_RESPONSE)
            if reply.status in REDIRECT_STATUSES and reply.location:
                url = urljoin(url, reply.location)
                continue
            if reply.status != 200 and not reply.body.startswith(b"d"):
                raise TrackerError(f"{self.url}: HTTP {reply.status} {reply.reason}")
            return reply.body
        raise TrackerError(f"{self.url}: too many redirects (more than {MAX_HTTP_REDIRECTS})")

    async def close(self) -> None:
        pass  # the HTTP client belongs to the Session


def _replace_tracker_id(req: AnnounceRequest, tracker_id: bytes) -> AnnounceRequest:
    from dataclasses import replace

    return replace(req, tracker_id=tracker_id)


class _UdpEndpoint(asyncio.DatagramProtocol):
    """Receives datagrams for one UdpTracker and wakes the waiter of the transaction."""

    def __init__(self) -> None:
        self.waiters: dict[int, asyncio.Future[bytes]] = {}
        self.error: Exception | None = None

    def datagram_received(self, data: bytes, addr: object) -> None:
        if len(data) < 8:
            return
        txid = int.from_bytes(data[4:8], "big")
        fut = self.waiters.pop(txid, None)
        if fut is not None and not fut.done():
            fut.set_result(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: fail every waiter now, not after the timeout.
        for fut in self.waiters.values():
            if not fut.done():
                fut.set_exception(exc)
        self.waiters.clear()


class UdpTracker:
    """A ``udp://host:port`` tracker (BEP 15)."""

    def __init__(self, url: str, *, retry_base_s: float = UDP_RETRY_BASE_S, max_retries: int = 3) -> None:
        parts = urlsplit(url)
        if not parts.hostname or not parts.port:
            raise TrackerError(f"{url}: a UDP tracker URL needs a host and a port")
        self.url = url
        self._host = parts.hostname
        self._port = parts.port
        self._retry_base_s = retry_base_s
        self._max_retries = max_retries
        self._transport: asyncio.DatagramTransport | None = None
        self._endpoint: _UdpEndpoint | None = None
        self._ipv6 = False
        self._connection_id: int | None = None
        self._connected_at = 0.0
        self._lock = asyncio.Lock()
        from torrent.proto import tracker_codec_udp

        self._codec = tracker_codec_udp

    async def _open(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            return
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise TrackerError(f"{self.url}: cannot resolve {self._host}: {exc.strerror or exc}") from None
        family, _, _, _, sockaddr = infos[0]
        self._ipv6 = family == socket.AF_INET6
        remote = (str(sockaddr[0]), int(sockaddr[1]))
        transport, endpoint = await loop.create_datagram_endpoint(_UdpEndpoint, remote_addr=remote)
        self._transport = transport
        self._endpoint = endpoint

    async def _exchange(self, build: object) -> udp_codec.UdpResponse:
        """Send a request (rebuilt per attempt with a fresh transaction id) and wait for
        its answer, retransmitting on the BEP 15 schedule."""
        assert self._transport is not None
        assert self._endpoint is not None
        loop = asyncio.get_running_loop()
        for n in range(self._max_retries + 1):
            txid = random.getrandbits(32)
            packet = build(txid)  # type: ignore[operator]
            fut: asyncio.Future[bytes] = loop.create_future()
            self._endpoint.waiters[txid] = fut
            self._transport.sendto(self._codec.encode_udp_request(packet))
            try:
                async with asyncio.timeout(self._retry_base_s * 2**n):
                    data = await fut
            except TimeoutError:
                continue
            except OSError as exc:
                raise TrackerError(f"{self.url}: {exc.strerror or exc}") from None
            finally:
                self._endpoint.waiters.pop(txid, None)
            try:
                resp = self._codec.decode_udp_response(data, ipv6=self._ipv6)
            except ProtocolError as exc:
                raise TrackerError(f"{self.url}: bad response: {exc}") from None
            if isinstance(resp, self._codec.UdpError):
                raise TrackerError(f"{self.url}: {resp.message}")
            return resp
        raise TrackerError(f"{self.url}: no answer after {self._max_retries + 1} attempts")

    async def announce(self, req: AnnounceRequest) -> AnnounceResponse:
        async with self._lock:
            await self._open()
            now = time.monotonic()
            if self._connection_id is None or now - self._connected_at > UDP_CONNECTION_ID_TTL_S:
                resp = await self._exchange(lambda txid: self._codec.UdpConnectRequest(txid))
                if not isinstance(resp, self._codec.UdpConnectResponse):
                    raise TrackerError(f"{self.url}: expected a connect response")
                self._connection_id = resp.connection_id
                self._connected_at = time.monotonic()
            conn_id = self._connection_id
            resp = await self._exchange(lambda txid: self._codec.UdpAnnounceRequest(conn_id, txid, req))
            if not isinstance(resp, self._codec.UdpAnnounceResponse):
                # A stale connection id may be answered with an error; forget it.
                self._connection_id = None
                raise TrackerError(f"{self.url}: expected an announce response")
            return resp.announce

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


def make_tracker(
    url: str,
    http: HttpClient,
    *,
    timeout_s: float = 15.0,
    udp_retry_base_s: float = UDP_RETRY_BASE_S,
) -> TrackerClient:
    """A client for ``url`` by scheme.

    Raises:
        TrackerError: the URL is malformed (bad port, no host, unclosed IPv6 bracket)
            or its scheme is neither http(s) nor udp.
    """
    problem = codec.tracker_url_problem(url)
    if problem is not None:
        raise TrackerError(problem)
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        return HttpTracker(url, http, timeout_s=timeout_s)
    if scheme == "udp":
        return UdpTracker(url, retry_base_s=udp_retry_base_s)
    raise TrackerError(f"{url}: unsupported tracker scheme {scheme!r}")


@dataclass(slots=True)
class AnnounceOutcome:
    """The answer of a tier walk: which tracker answered, what it said, and what the
    trackers that failed before it said."""

    url: str
    response: AnnounceResponse
    failures: list[str]


class TrackerTiers:
    """BEP 12 announce-list: shuffled tiers, the responding tracker moves to the front."""

    def __init__(self, tiers: Sequence[Sequence[TrackerClient]], *, rng: random.Random | None = None) -> None:
        rng = rng or _SHUFFLE_RNG
        self.tiers: list[list[TrackerClient]] = []
        for tier in tiers:
            shuffled = list(tier)
            rng.shuffle(shuffled)
            if shuffled:
                self.tiers.append(shuffled)

    def __bool__(self) -> bool:
        return bool(self.tiers)

    async def announce(self, req: AnnounceRequest) -> AnnounceOutcome:
        """Walk the tiers until a tracker answers.

        Raises:
            TrackerError: every tracker failed; ``reason`` lists why.
        """
        failures: list[str] = []
        for tier in self.tiers:
            for tracker in list(tier):
                try:
                    resp = await tracker.announce(req)
                except TrackerError as exc:
                    failures.append(exc.reason)
                    continue
                if tier[0] is not tracker and tracker in tier:
                    # Moved by identity: another walk may have reordered the tier meanwhile.
                    tier.remove(tracker)
                    tier.insert(0, tracker)
                return AnnounceOutcome(tracker.url, resp, failures)
        raise TrackerError("; ".join(failures) if failures else "no trackers")

    async def close(self) -> None:
        for tier in self.tiers:
            for tracker in tier:
                await tracker.close()
