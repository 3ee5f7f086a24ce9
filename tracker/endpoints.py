"""Announce and scrape over HTTP, without the HTTP: a raw query string and the client's
address in, a bencoded body out.

Both HTTP front ends call these: the hand-written HTTP/1.1 protocol that serves
``/announce`` and ``/scrape`` (:mod:`tracker.http1`) and the aiohttp routes
(:mod:`tracker.app`), so an announce is answered the same, byte for byte, whichever of
them parsed it. Every problem is a bencoded ``failure reason`` (sent with status 200);
nothing here raises.

With a store that answers without awaiting (:class:`~tracker.store.SyncPeerStore`) an
announce is answered in :meth:`HttpEndpoints.announce` itself. With another store (Redis)
that call returns a :class:`PendingAnnounce` and :meth:`HttpEndpoints.finish` awaits the
store.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from torrent.errors import RemoteProtocolError
from torrent.proto.tracker_codec import (
    AnnounceRequest,
    AnnounceResponse,
    PeerAddress,
    ScrapeResponse,
    decode_compact_peers,
    encode_announce_response,
    encode_compact_announce,
    encode_failure,
    encode_scrape_response,
    parse_announce_query,
    parse_scrape_query,
)
from tracker.service import NOT_ALLOWED, STORE_UNAVAILABLE, TrackerService
from tracker.settings import TrackerSettings
from tracker.store import AnnounceRejected, AnnounceResult, PeerAnnounce, PeerStore, StoreUnavailable
from tracker.users import NOT_REGISTERED, Ticket

log = logging.getLogger("pytorrent.tracker")

#: ``tracker id`` we hand out (clients echo it as ``trackerid``; we accept any).
TRACKER_ID = b"pytorrent"
INTERNAL_ERROR = "internal tracker error"


class PendingAnnounce(NamedTuple):
    """An announce checked and waiting for an asynchronous store."""

    req: AnnounceRequest
    announce: PeerAnnounce
    source: bytes
    want_ids: bool
    ticket: Ticket | None


class HttpEndpoints:
    """``/announce`` and ``/scrape`` of one tracker process.

    Args:
        service: the tracker service (settings, store, counters, allow-list, private mode).
        store: the peer store.
        settings: tracker settings.
    """

    def __init__(self, service: TrackerService, store: PeerStore, settings: TrackerSettings) -> None:
        self.service = service
        self.store = store
        self.settings = settings
        self._sync = service.sync_store.announce_nowait if service.sync_store is not None else None
        self._interval = settings.interval_s
        self._min_interval = settings.min_interval_s

    # ------------------------------------------------------------ announce

    def announce(self, query: str | bytes, remote: str, passkey: str | None) -> bytes | PendingAnnounce:
        """The answer to an announce whose raw query is ``query``, from ``remote``; a
        :class:`PendingAnnounce` to hand to :meth:`finish` when the store must be awaited."""
        service = self.service
        counters = service.counters
        counters.http_announces += 1
        service.note_announce()
        try:
            req = parse_announce_query(query)
        except RemoteProtocolError as exc:
            counters.failures_bad_request += 1
            return encode_failure(str(exc))
        service.note_client(req.peer_id)
        try:
            return self._checked(req, remote, passkey)
        except Exception:  # a bug: log it, never show the client a traceback
            counters.failures_internal += 1
            log.exception("announce failed")
            return encode_failure(INTERNAL_ERROR)

    def _checked(self, req: AnnounceRequest, remote: str, passkey: str | None) -> bytes | PendingAnnounce:
        service = self.service
        counters = service.counters
        if service.allow is not None and req.info_hash not in service.allow.hashes:
            counters.failures_not_allowed += 1
            return encode_failure(NOT_ALLOWED)
        source = service.pack_address(remote)
        if source is None:
            counters.failures_internal += 1
            return encode_failure("cannot tell the address of this request")
        ticket: Ticket | None = None
        private = service.private
        if private is not None:
            verdict = private.admit(passkey, req.info_hash, req.peer_id, req.left, req.event, source)
            if isinstance(verdict, str):
                counters.failures_private += 1
                return encode_failure(verdict)
            ticket = private.ticket(
                verdict, req.info_hash, req.peer_id, uploaded=req.uploaded, downloaded=req.downloaded,
                left=req.left, event=req.event, ip=source,
            )  # fmt: skip
        want_ids = not req.compact and not req.no_peer_id
        pa = service.peer_announce(req, source, both_families=True, want_peer_ids=want_ids)
        if ticket is not None:
            pa = pa._replace(tally=ticket.tally, refuse_new=ticket.refuse_new)
        sync = self._sync
        if sync is None:
            return PendingAnnounce(req, pa, source, want_ids, ticket)
        try:
            res = sync(pa)
        except StoreUnavailable as exc:
            return self._unavailable(exc)
        except AnnounceRejected as exc:
            service.note_rejected(exc)
            return encode_failure(exc.reason)
        return self._answer(req, res, source, want_ids, ticket)

    async def finish(self, pending: PendingAnnounce) -> bytes:
        """The answer to ``pending`` once the store has taken it."""
        service = self.service
        try:
            res = await self.store.announce(pending.announce)
            return self._answer(pending.req, res, pending.source, pending.want_ids, pending.ticket)
        except StoreUnavailable as exc:
            return self._unavailable(exc)
        except AnnounceRejected as exc:
            service.note_rejected(exc)
            return encode_failure(exc.reason)
        except Exception:
            service.counters.failures_internal += 1
            log.exception("announce failed")
            return encode_failure(INTERNAL_ERROR)

    def _unavailable(self, exc: StoreUnavailable) -> bytes:
        self.service.counters.failures_store_unavailable += 1
        log.debug("store unavailable: %s", exc.detail)
        return encode_failure(STORE_UNAVAILABLE)

    def _answer(
        self, req: AnnounceRequest, res: AnnounceResult, source: bytes, want_ids: bool, ticket: Ticket | None
    ) -> bytes:
        private = self.service.private
        if private is not None and ticket is not None:
            private.settle(ticket, res.tally)
        return announce_body(req, res, source, self._interval, self._min_interval, want_ids=want_ids)

    # ------------------------------------------------------------ scrape

    async def scrape(self, query: str | bytes, passkey: str | None) -> bytes:
        """The answer to a scrape whose raw query is ``query``."""
        service = self.service
        counters = service.counters
        counters.http_scrapes += 1
        private = service.private
        if private is not None:
            reason = private.check_passkey(passkey)
            if reason is not None:
                counters.failures_private += 1
                return encode_failure(reason)
        try:
            hashes = parse_scrape_query(query)
        except RemoteProtocolError as exc:
            counters.failures_bad_request += 1
            return encode_failure(str(exc))
        try:
            if not hashes:
                if not self.settings.full_scrape:
                    counters.failures_bad_request += 1
                    return encode_failure("full scrape is disabled: name at least one info_hash")
                files = await self.store.full_scrape(self.settings.full_scrape_max)
                if service.allow is not None or private is not None:
                    files = {ih: s for ih, s in files.items() if service.scrapable(ih)}
            else:
                # what may not be shown is left out (see PrivateTracker.scrapable)
                wanted = [ih for ih in hashes if service.scrapable(ih)]
                if not wanted:
                    if private is not None:
                        counters.failures_private += 1
                        return encode_failure(NOT_REGISTERED)
                    counters.failures_not_allowed += 1
                    return encode_failure(NOT_ALLOWED)
                files = dict(zip(wanted, await self.store.scrape(wanted), strict=True))
            return encode_scrape_response(ScrapeResponse(files))  # type: ignore[arg-type]
        except StoreUnavailable:
            counters.failures_store_unavailable += 1
            return encode_failure(STORE_UNAVAILABLE)
        except Exception:
            counters.failures_internal += 1
            log.exception("scrape failed")
            return encode_failure(INTERNAL_ERROR)


def announce_body(
    req: AnnounceRequest,
    res: AnnounceResult,
    source: bytes,
    interval: int,
    min_interval: int,
    *,
    want_ids: bool,
) -> bytes:
    """The bencoded answer to ``req``: compact (BEP 23, 7) or the original dict form."""
    tracker_id = TRACKER_ID if req.tracker_id is None else None
    if req.compact:
        return encode_compact_announce(
            interval=interval,
            min_interval=min_interval,
            complete=res.complete,
            incomplete=res.incomplete,
            downloaded=res.downloaded,
            peers=res.peers4,
            peers6=res.peers6,
            external_ip=source,
            tracker_id=tracker_id,
        )
    peers = decode_compact_peers(res.peers4) + decode_compact_peers(res.peers6, ipv6=True)
    if want_ids:
        peers = tuple(PeerAddress(p.ip, p.port, pid) for p, pid in zip(peers, res.peer_ids, strict=True))
    return encode_announce_response(
        AnnounceResponse(
            interval=interval,
            min_interval=min_interval,
            complete=res.complete,
            incomplete=res.incomplete,
            downloaded=res.downloaded,
            peers=peers,
            external_ip=PeerAddress.from_packed(source + b"\0\0").ip,
            tracker_id=tracker_id,
        ),
        compact=False,
        no_peer_id=req.no_peer_id,
    )


__all__ = ["TRACKER_ID", "HttpEndpoints", "PendingAnnounce", "announce_body"]
