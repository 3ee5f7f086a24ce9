"""Web seeds (BEP 19, ``url-list``; BEP 17, ``httpseeds``): HTTP servers as one more source of pieces.

A web seed is a picker "peer" that has every piece (:class:`WebSeedKey` is its key). Its
workers ask the picker for blocks, merge them into runs of contiguous payload bytes, map
each run onto the files it spans and fetch every file segment with an HTTP ``Range`` GET
on the session's aiohttp client (one pool per host, keep-alive, bounded redirects). The
body is cut into blocks that reach the swarm exactly as a peer's blocks do, so pieces are
SHA-1 verified, and a hash failure bans the URL for the torrent (smart ban, see
:mod:`torrent.proto.smart_ban`).

What is asked of a web seed (docs/ARCHITECTURE.md, "Web seeds"):

* with no peer connected: long runs of consecutive missing pieces, from a cursor, up to
  ``web_seed_request_bytes`` per request;
* with peers, rarest first among all pieces (the picker's order);
* while the peers supply at least ``web_seed_peer_rate_bps``: only pieces no connected
  peer has, so the server carries no load the swarm can carry.

Failures (an HTTP error status, a short body, a wrong ``Content-Range``, a server that
ignores ``Range``, a redirect loop, a rate below ``web_seed_min_rate_bps`` for
``web_seed_slow_window_s``, a timeout) free the blocks for other sources and put the
seed in a growing back-off that honours ``Retry-After``; each is one warning event,
never an exception out of here and never a stalled download.

URL mapping: a single-file torrent's URL is the file itself, or, ending in ``/``, a
directory the file's name is appended to; a multi-file torrent's file is URL + ``/`` (if
missing) + name + ``/`` + path, every component percent-encoded. The torrent's own names
are used, not the sanitised names storage writes to disk.

BEP 17 seeds get one GET per piece, ``URL?info_hash=..&piece=N&ranges=a-b`` (an inclusive
range inside the piece, as libtorrent sends it), answered with exactly those bytes; a 503's
body is the seconds to wait. Everything else (picking, verification, back-off) is shared.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

from torrent.config import Settings
from torrent.engine.clock import Clock
from torrent.engine.http_client import HttpClient
from torrent.proto.metainfo import FileEntry, Info
from torrent.proto.picker import Block, Picker
from torrent.proto.wire.rate import RateMeter
from torrent.types import BLOCK_SIZE

if TYPE_CHECKING:
    import aiohttp

__all__ = ["WebSeedHost", "WebSeedKey", "WebSeeds", "byte_spans", "file_url", "parse_retry_after"]

log = logging.getLogger(__name__)

_CONTENT_RANGE = re.compile(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class WebSeedKey:
    """A web seed as the picker and smart ban see it (a peer key)."""

    url: str

    def __str__(self) -> str:
        return f"web seed {self.url}"


def file_url(base: str, info: Info, f: FileEntry) -> str:
    """The URL of file ``f`` of the torrent on the web seed ``base`` (BEP 19)."""
    if not info.multi_file:
        return base + quote(info.name) if base.endswith("/") else base
    if not base.endswith("/"):
        base += "/"
    return base + "/".join(quote(c) for c in (info.name, *f.path))


def byte_spans(info: Info, starts: Sequence[int], start: int, length: int) -> list[tuple[int, int, int]]:
    """``(file_index, offset_in_file, length)`` of the payload bytes ``[start, start+length)``,
    in order, skipping empty files. ``starts`` is every file's offset (``FileEntry.offset``)."""
    out: list[tuple[int, int, int]] = []
    pos, end = start, start + length
    k = bisect.bisect_right(starts, pos) - 1
    files = info.files
    while pos < end and k < len(files):
        f = files[k]
        if f.length and pos < f.offset + f.length:
            n = min(end, f.offset + f.length) - pos
            out.append((k, pos - f.offset, n))
            pos += n
        k += 1
    return out


def parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` (seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    # An HTTP date is rare here (servers send seconds), and email.utils with what it
    # imports (datetime, calendar, email.charset) costs every download about 4 ms.
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now_epoch)


class WebSeedHost(Protocol):
    """What :class:`WebSeeds` needs of its torrent (the swarm)."""

    @property
    def complete(self) -> bool: ...

    def may_start_pieces(self) -> bool:
        """Room for more pieces in memory."""
        ...

    def peer_supply(self) -> tuple[int, float]:
        """Connected peers and their download rate (bytes/s)."""
        ...

    def on_source_block(self, key: WebSeedKey, index: int, begin: int, data: bytes | memoryview) -> None: ...

    def on_source_dropped(self, key: WebSeedKey, blocks: list[Block]) -> None: ...

    def on_web_seed_warning(self, text: str) -> None: ...


class _Failure(Exception):
    def __init__(self, why: str, retry_after: float | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.retry_after = retry_after


class _WebSeed:
    """One URL's state."""

    def __init__(self, url: str, now: float, *, http_seed: bool = False) -> None:
        self.key = WebSeedKey(url)
        #: BEP 17 (``httpseeds``, ``?info_hash=&piece=&ranges=``) rather than BEP 19.
        self.http_seed = http_seed
        self.failures = 0
        self.retry_at = 0.0
        self.banned = False
        self.cursor = 0
        self.meter = RateMeter(5.0, now=now)


class _Assembler:
    """Cuts a run of contiguous payload bytes into the blocks that were requested."""

    def __init__(self, blocks: list[Block], deliver: Callable[[Block, bytes | memoryview], None]) -> None:
        self.blocks = blocks
        self.i = 0
        self.buf = bytearray()
        self.deliver = deliver

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while len(view) and self.i < len(self.blocks):
            blk = self.blocks[self.i]
            if not self.buf and len(view) >= blk.length:
                # A whole block in the chunk: hand it over without a copy here.
                self.i += 1
                self.deliver(blk, view[: blk.length])
                view = view[blk.length :]
                continue
            take = min(len(view), blk.length - len(self.buf))
            self.buf += view[:take]
            view = view[take:]
            if len(self.buf) == blk.length:
                self.i += 1
                data_out, self.buf = bytes(self.buf), bytearray()
                self.deliver(blk, data_out)

    def remaining(self) -> list[Block]:
        return self.blocks[self.i :]


def _runs(blocks: list[Block], piece_length: int) -> list[tuple[int, list[Block]]]:
    """Blocks sorted and grouped into runs of contiguous payload bytes: ``(start, blocks)``."""
    out: list[tuple[int, list[Block]]] = []
    end = -1
    for blk in sorted(blocks):
        pos = blk.piece * piece_length + blk.offset
        if pos != end:
            out.append((pos, []))
        out[-1][1].append(blk)
        end = pos + blk.length
    return out


class WebSeeds:
    """The web seeds of one torrent: their workers, back-off and bans."""

    def __init__(
        self,
        urls: Sequence[str],
        info: Info,
        picker: Picker,
        host: WebSeedHost,
        http: HttpClient,
        settings: Settings,
        clock: Clock,
        *,
        http_seeds: Sequence[str] = (),
        info_hash: bytes = b"",
        throttle: Callable[[int], float] | None = None,
    ) -> None:
        now = clock.monotonic()
        schemes = ("http://", "https://")
        self.seeds = {u: _WebSeed(u, now) for u in dict.fromkeys(urls) if u.startswith(schemes)}
        for u in dict.fromkeys(http_seeds):
            if u.startswith(schemes) and u not in self.seeds:
                self.seeds[u] = _WebSeed(u, now, http_seed=True)
        self._info_hash = info_hash
        self._info = info
        self._starts = [f.offset for f in info.files]
        self._picker = picker
        self._host = host
        self._http = http
        self._settings = settings
        self._clock = clock
        self._throttle = throttle
        self._wake = asyncio.Event()

    # ------------------------------------------------------------------ state

    @property
    def total(self) -> int:
        return len(self.seeds)

    @property
    def active(self) -> int:
        """Seeds neither banned nor failing."""
        return sum(1 for s in self.seeds.values() if not s.banned and s.failures == 0)

    def rate_bps(self) -> float:
        now = self._clock.monotonic()
        return sum(s.meter.rate_bps(now) for s in self.seeds.values())

    def wake(self) -> None:
        """Blocks became free: idle workers look again."""
        self._wake.set()

    def is_seed(self, key: object) -> bool:
        return isinstance(key, WebSeedKey) and key.url in self.seeds

    def ban(self, key: WebSeedKey, why: str) -> bool:
        """Never ask this URL again for this torrent; False if it was banned already."""
        seed = self.seeds.get(key.url)
        if seed is None or seed.banned:
            return False
        seed.banned = True
        self._host.on_source_dropped(key, self._picker.abort_requests(key))
        self._picker.on_peer_disconnect(key)
        return True

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Fetch until the torrent is complete or every seed is banned (cancel to stop)."""
        if not self.seeds:
            return
        for seed in self.seeds.values():
            self._picker.on_peer_have_all(seed.key)
        async with asyncio.TaskGroup() as tg:
            for seed in self.seeds.values():
                for _ in range(max(1, self._settings.web_seed_connections)):
                    tg.create_task(self._worker(seed))

    async def _worker(self, seed: _WebSeed) -> None:
        while not seed.banned and not self._host.complete:
            delay = seed.retry_at - self._clock.monotonic()
            if delay > 0:
                await asyncio.sleep(min(delay, 1.0))
                continue
            blocks = self._pick(seed)
            if not blocks:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await self._wake.wait()
                continue
            await self._fetch(seed, blocks)

    def _pick(self, seed: _WebSeed) -> list[Block]:
        picker, s = self._picker, self._settings
        count = max(1, s.web_seed_request_bytes // BLOCK_SIZE)
        now = self._clock.monotonic()
        start_new = self._host.may_start_pieces()
        peers, rate = self._host.peer_supply()
        if peers and rate >= s.web_seed_peer_rate_bps:
            # The swarm carries the load: only what no connected peer has.
            mine = sum(1 for x in self.seeds.values() if not x.banned)
            only = {p for p in range(picker.num_pieces) if picker.wants(p) and picker.availability(p) <= mine}
            return (
                picker.pick(seed.key, count, now=now, restrict_to=only, start_new=start_new) if only else []
            )
        if peers:
            return picker.pick(seed.key, count, now=now, start_new=start_new)
        return self._pick_run(seed, count, now, start_new)

    def _pick_run(self, seed: _WebSeed, count: int, now: float, start_new: bool) -> list[Block]:
        """Consecutive missing pieces from the seed's cursor: long ranges, few requests."""
        picker = self._picker
        n = picker.num_pieces
        i, scanned = seed.cursor % n, 0
        limit = max(self._settings.web_seed_request_bytes, picker.piece_length)
        while scanned < n:
            if not picker.wants(i):
                i, scanned = (i + 1) % n, scanned + 1
                continue
            window: list[int] = []
            size, j = 0, i
            while j < n and picker.wants(j) and size < limit:
                window.append(j)
                size += picker.piece_size(j)
                j += 1
            blocks = picker.pick(seed.key, count, now=now, restrict_to=set(window), start_new=start_new)
            if blocks:
                seed.cursor = j % n
                return blocks
            scanned += j - i
            i = j % n
        return []

    # ------------------------------------------------------------------ fetching

    async def _fetch(self, seed: _WebSeed, blocks: list[Block]) -> None:
        """Fetch ``blocks``; on failure free what did not arrive and back off."""
        pending: list[Block] = list(blocks)

        def deliver(blk: Block, data: bytes | memoryview) -> None:
            pending.remove(blk)
            seed.meter.add(len(data), self._clock.monotonic())
            self._host.on_source_block(seed.key, blk.piece, blk.offset, data)

        try:
            for start, run in _runs(blocks, self._info.piece_length):
                asm = _Assembler(run, deliver)
                if seed.http_seed:
                    await self._get_bep17(seed, run, asm)
                    continue
                length = sum(b.length for b in run)
                for index, offset, n in byte_spans(self._info, self._starts, start, length):
                    if seed.banned:
                        return
                    f = self._info.files[index]
                    if f.padding:
                        asm.feed(bytes(n))
                    else:
                        await self._get(seed, file_url(seed.key.url, self._info, f), offset, n, f.length, asm)
        except _Failure as exc:
            self._failed(seed, exc.why, exc.retry_after)
        except Exception as exc:  # never out of a worker: the seed backs off instead
            log.debug("web seed %s: %r", seed.key.url, exc, exc_info=True)
            self._failed(seed, f"{type(exc).__name__}: {exc}")
        else:
            seed.failures = 0
        finally:
            if pending and not seed.banned:
                self._host.on_source_dropped(seed.key, self._picker.abort_requests(seed.key, pending))

    def _failed(self, seed: _WebSeed, why: str, retry_after: float | None = None) -> None:
        s = self._settings
        seed.failures += 1
        delay = min(s.web_seed_retry_s * 2 ** (seed.failures - 1), s.web_seed_retry_max_s)
        if retry_after is not None:
            delay = max(delay, min(retry_after, s.web_seed_retry_max_s))
        seed.retry_at = self._clock.monotonic() + delay
        self._host.on_web_seed_warning(f"web seed {seed.key.url}: {why}; retrying in {delay:.3g} s")

    async def _get(
        self, seed: _WebSeed, url: str, offset: int, length: int, file_length: int, asm: _Assembler
    ) -> None:
        resp = await self._open(url, {"Range": f"bytes={offset}-{offset + length - 1}"})
        try:
            self._check_response(resp, offset, length, file_length)
            await self._read_body(seed, resp, length, asm)
        except BaseException:
            resp.close()  # drop the connection: never read what we did not ask for
            raise
        resp.release()

    async def _open(self, url: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
        import aiohttp  # loaded by the first web seed request: see torrent.engine.http_client
        from yarl import URL  # aiohttp's, loaded with it

        s = self._settings
        try:
            async with asyncio.timeout(s.web_seed_timeout_s):
                return await self._http.session().get(
                    URL(url, encoded=True),
                    headers={"Accept-Encoding": "identity", **headers},
                    max_redirects=s.web_seed_max_redirects,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=s.web_seed_timeout_s),
                )
        except aiohttp.TooManyRedirects:
            raise _Failure("too many redirects (a redirect loop?)") from None
        except TimeoutError:
            raise _Failure(f"no response within {s.web_seed_timeout_s:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _Failure(f"unreachable ({exc or type(exc).__name__})") from None

    async def _get_bep17(self, seed: _WebSeed, run: list[Block], asm: _Assembler) -> None:
        """BEP 17: one GET per piece, ``?info_hash=..&piece=N&ranges=a-b`` (inclusive, as
        libtorrent sends it); a 503's body is the seconds to wait."""
        for piece in sorted({b.piece for b in run}):
            mine = [b for b in run if b.piece == piece]
            first, length = mine[0].offset, sum(b.length for b in mine)
            url = seed.key.url
            url += ("&" if "?" in url else "?") + (
                f"info_hash={quote(self._info_hash, safe='')}&piece={piece}&ranges={first}-{first + length - 1}"
            )
            resp = await self._open(url, {})
            try:
                if resp.status == 503:
                    text = (await resp.content.read(64)).decode("ascii", "replace").strip()
                    raise _Failure("HTTP 503 (busy)", float(text) if text.isdigit() else None)
                if resp.status != 200:
                    raise _Failure(f"HTTP {resp.status} {resp.reason or ''}".rstrip())
                if resp.content_length is not None and resp.content_length != length:
                    raise _Failure(f"{resp.content_length} bytes for a {length}-byte range")
                await self._read_body(seed, resp, length, asm)
            except BaseException:
                resp.close()
                raise
            resp.release()

    @staticmethod
    def _check_response(resp: aiohttp.ClientResponse, offset: int, length: int, file_length: int) -> None:
        status = resp.status
        if status == 206:
            m = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", ""))
            if m is None or int(m.group(1)) != offset or int(m.group(2)) != offset + length - 1:
                raise _Failure(f"wrong Content-Range {resp.headers.get('Content-Range')!r}")
            return
        if status == 200:
            if offset == 0 and length == file_length:
                return  # the whole file was asked for: a 200 is the same bytes
            raise _Failure("the server ignores Range (200 with the whole file)")
        retry = parse_retry_after(resp.headers.get("Retry-After"), time.time())
        raise _Failure(f"HTTP {status} {resp.reason or ''}".rstrip(), retry)

    async def _read_body(
        self, seed: _WebSeed, resp: aiohttp.ClientResponse, length: int, asm: _Assembler
    ) -> None:
        import aiohttp  # already loaded by _open

        s = self._settings
        loop = asyncio.get_running_loop()
        got = 0
        window_start, window_bytes = loop.time(), 0
        while got < length:
            if seed.banned:
                return
            chunk: bytes | None = None
            try:
                async with asyncio.timeout(max(0.01, window_start + s.web_seed_slow_window_s - loop.time())):
                    chunk = await resp.content.readany()
            except TimeoutError:
                pass
            except (aiohttp.ClientError, OSError) as exc:
                raise _Failure(f"connection lost mid-body after {got} of {length} bytes ({exc})") from None
            if chunk == b"":
                raise _Failure(f"short body: {got} of {length} bytes")
            if chunk:
                chunk = chunk[: length - got]
                got += len(chunk)
                window_bytes += len(chunk)
                asm.feed(chunk)
                if self._throttle is not None:
                    delay = self._throttle(len(chunk))
                    if delay > 0:
                        await asyncio.sleep(delay)
            now = loop.time()
            if now - window_start >= s.web_seed_slow_window_s:
                if window_bytes < s.web_seed_min_rate_bps * (now - window_start):
                    raise _Failure(
                        f"too slow: {window_bytes} bytes in {now - window_start:.3g} s "
                        f"(floor {s.web_seed_min_rate_bps} B/s)"
                    )
                window_start, window_bytes = now, 0
