"""Private mode: passkeys over HTTP and UDP (BEP 41), access rules, accounting that
survives a restart, and ``tracker-admin``."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cli.main import main as cli_main
from torrent.proto import bencoding
from torrent.proto import tracker_codec as tc
from torrent.proto import tracker_codec_udp as tcu
from torrent.types import InfoHash
from tracker.server import TrackerServer
from tracker.settings import TrackerSettings
from tracker.users import (
    DENIED_CLIENT,
    NOT_REGISTERED,
    PASSKEY_REQUIRED,
    UDP_SCRAPE_REFUSED,
    UNKNOWN_PASSKEY,
    Delta,
    UserDb,
)

from .test_tracker_udp import Client

IH = bytes(range(20))
FREE = bytes(range(20, 40))


def pid(n: int, prefix: bytes = b"-XX0001-") -> bytes:
    return prefix + n.to_bytes(12, "big")


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'users.db'}"


def admin(url: str, *args: str) -> Any:
    """``pytorrent tracker-admin ... --json``, parsed."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["tracker-admin", "--private-users", url, "--json", *args]) == 0
    return json.loads(out.getvalue())


def settings(url: str, **kw: Any) -> TrackerSettings:
    return TrackerSettings(host="127.0.0.1", port=0, udp_port=0, private_users=url, users_poll_s=0.05, **kw)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def announce(
    http: aiohttp.ClientSession, port: int, passkey: str | None, n: int, ih: bytes = IH, **q: Any
) -> dict[bytes, Any]:
    params = {"peer_id": pid(n, q.pop("prefix", b"-XX0001-")), "port": 6000 + n, "left": 100, "compact": 1}
    params.update(q)
    query = f"info_hash={urllib.parse.quote_from_bytes(ih)}&" + urllib.parse.urlencode(params)
    path = f"/{passkey}/announce" if passkey else "/announce"
    async with http.get(f"http://127.0.0.1:{port}{path}?{query}") as resp:
        result: dict[bytes, Any] = bencoding.decode(await resp.read())
        return result


async def udp_announce(port: int, passkey: str, n: int, ih: bytes = IH) -> tcu.UdpResponse:
    c = Client("127.0.0.1", port)
    try:
        conn = await c.connect()
        req = tc.AnnounceRequest(info_hash=ih, peer_id=pid(n), port=6000 + n, left=5, key=n)  # type: ignore[arg-type]
        packet = tcu.encode_udp_request(tcu.UdpAnnounceRequest(conn, 77, req))
        reply = await c.raw(packet + tcu.encode_udp_url_data(f"/{passkey}/announce".encode()))
        return tcu.decode_udp_response(reply, ipv6=False)
    finally:
        c.close()


async def test_passkeys_over_http_and_udp(db_url: str, http: aiohttp.ClientSession) -> None:
    alice = admin(db_url, "user", "add", "alice")[0]["passkey"]
    bob = admin(db_url, "user", "add", "bob")[0]["passkey"]
    admin(db_url, "torrent", "add", IH.hex())
    async with TrackerServer(settings(db_url)) as srv:
        assert srv.udp_port is not None
        ok = await announce(http, srv.http_port, alice, 1)
        assert b"failure reason" not in ok, ok
        assert await announce(http, srv.http_port, None, 1) == {b"failure reason": PASSKEY_REQUIRED.encode()}
        assert await announce(http, srv.http_port, "0" * 32, 1) == {
            b"failure reason": UNKNOWN_PASSKEY.encode()
        }
        unregistered = await announce(http, srv.http_port, alice, 1, ih=b"z" * 20)
        assert b"not registered" in unregistered[b"failure reason"]
        resp = await udp_announce(srv.udp_port, bob, 2)
        assert isinstance(resp, tcu.UdpAnnounceResponse), resp
        assert resp.announce.incomplete == 2
        # revoke bob: the running tracker sees it at its next poll
        admin(db_url, "user", "revoke", "bob")

        async def bob_refused() -> bool:
            r = await announce(http, srv.http_port, bob, 2)
            return r.get(b"failure reason") == UNKNOWN_PASSKEY.encode()

        for _ in range(100):
            if await bob_refused():
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("revoked passkey still accepted")
        resp = await udp_announce(srv.udp_port, bob, 2)
        assert isinstance(resp, tcu.UdpError)
        assert resp.message == UNKNOWN_PASSKEY
        # scrape takes the passkey too
        async with http.get(
            f"http://127.0.0.1:{srv.http_port}/{alice}/scrape?info_hash={urllib.parse.quote_from_bytes(IH)}"
        ) as r:
            files = bencoding.decode(await r.read())[b"files"]
        assert files[IH][b"incomplete"] == 2
        metrics = await (await http.get(f"http://127.0.0.1:{srv.http_port}/metrics")).text()
        assert alice not in metrics
        assert bob not in metrics
        assert 'reason="private"' in metrics


async def test_rules_deny_list_and_clients(db_url: str, http: aiohttp.ClientSession) -> None:
    key = admin(db_url, "user", "add", "carol")[0]["passkey"]
    admin(db_url, "torrent", "add", IH.hex(), "--deny")
    admin(db_url, "torrent", "add", FREE.hex())
    async with TrackerServer(settings(db_url, client_deny=("-XL",))) as srv:
        r = await announce(http, srv.http_port, key, 1)
        assert r == {b"failure reason": b"torrent not allowed"}
        r = await announce(http, srv.http_port, key, 2, ih=FREE, prefix=b"-XL0012-")
        assert r == {b"failure reason": DENIED_CLIENT.encode()}
        r = await announce(http, srv.http_port, key, 3, ih=FREE, prefix=b"-qB4650-")
        assert b"failure reason" not in r


async def test_accounting_is_flushed_and_survives_a_restart(db_url: str, http: aiohttp.ClientSession) -> None:
    a = admin(db_url, "user", "add", "alice")[0]["passkey"]
    b = admin(db_url, "user", "add", "bob")[0]["passkey"]
    admin(db_url, "torrent", "add", IH.hex())
    admin(db_url, "torrent", "add", FREE.hex(), "--freeleech")
    async with TrackerServer(settings(db_url)) as srv:
        p = srv.http_port
        await announce(http, p, a, 1, left=0, event="started")  # alice seeds
        await announce(http, p, b, 2, left=1000, event="started")  # bob leeches
        await announce(http, p, a, 1, left=0, uploaded=600)
        await announce(http, p, b, 2, left=400, downloaded=600)
        await announce(http, p, b, 3, ih=FREE, left=100, event="started", downloaded=50)  # freeleech
        # a client restart: counters go back, the new value is the delta
        await announce(http, p, a, 1, left=0, uploaded=100, event="started")
    stats = {r["name"]: r for r in admin(db_url, "stats")}
    assert (stats["alice"]["uploaded"], stats["alice"]["downloaded"]) == (700, 0)
    assert (stats["bob"]["uploaded"], stats["bob"]["downloaded"]) == (0, 600)
    async with TrackerServer(settings(db_url)) as srv:
        p = srv.http_port
        await announce(http, p, b, 2, left=1000, event="started")
        await announce(http, p, b, 2, left=0, downloaded=1000, uploaded=10, event="completed")
        # an absurd jump is flagged, not counted
        await announce(http, p, a, 1, left=0, event="started")
        await announce(http, p, a, 1, left=0, uploaded=1 << 50)
    stats = {r["name"]: r for r in admin(db_url, "stats")}
    assert (stats["bob"]["uploaded"], stats["bob"]["downloaded"], stats["bob"]["completed"]) == (10, 1600, 1)
    assert (stats["alice"]["uploaded"], stats["alice"]["flagged"]) == (700, 1)
    per = UserDb(db_url).torrent_stats("bob")
    assert per[IH].downloaded == 1600
    assert per.get(FREE, Delta()).downloaded == 0  # freeleech: not counted


async def test_ratio_floor(db_url: str, http: aiohttp.ClientSession) -> None:
    key = admin(db_url, "user", "add", "dave")[0]["passkey"]
    admin(db_url, "torrent", "add", IH.hex())
    admin(db_url, "torrent", "add", FREE.hex())
    async with TrackerServer(settings(db_url, ratio_floor=0.5, ratio_grace_bytes=1000)) as srv:
        p = srv.http_port
        await announce(http, p, key, 1, event="started")
        await announce(http, p, key, 1, downloaded=5000)  # ratio 0 after 5000 bytes
        # the download in progress goes on; a new one is refused
        assert b"failure reason" not in await announce(http, p, key, 1, downloaded=5100)
        r = await announce(http, p, key, 2, ih=FREE, event="started")
        assert b"ratio" in r[b"failure reason"]
        # seeding (left=0) is always allowed
        assert b"failure reason" not in await announce(http, p, key, 3, ih=FREE, left=0, event="started")


async def test_private_scrapes_show_registered_torrents_only(
    db_url: str, http: aiohttp.ClientSession
) -> None:
    """Unregistered (and deny-listed) hashes are left out of ``files``, as Ocelot and XBT do;
    a scrape naming none that is registered fails; UDP scrapes carry no passkey: refused."""
    key = admin(db_url, "user", "add", "dave")[0]["passkey"]
    admin(db_url, "torrent", "add", IH.hex())
    admin(db_url, "torrent", "add", FREE.hex(), "--deny")
    unknown = b"u" * 20
    async with TrackerServer(settings(db_url)) as srv:
        assert b"failure reason" not in await announce(http, srv.http_port, key, 1)
        base = f"http://127.0.0.1:{srv.http_port}/{key}/scrape?"
        both = "&".join(f"info_hash={urllib.parse.quote_from_bytes(ih)}" for ih in (IH, unknown, FREE))
        async with http.get(base + both) as r:
            answer = bencoding.decode(await r.read())
        assert set(answer[b"files"]) == {IH}
        assert answer[b"files"][IH][b"incomplete"] == 1
        async with http.get(base + f"info_hash={urllib.parse.quote_from_bytes(unknown)}") as r:
            assert bencoding.decode(await r.read()) == {b"failure reason": NOT_REGISTERED.encode()}
        assert srv.udp_port is not None
        c = Client("127.0.0.1", srv.udp_port)
        try:
            conn = await c.connect()
            reply = await c.send(tcu.UdpScrapeRequest(conn, 5, (InfoHash(IH),)))
        finally:
            c.close()
        assert isinstance(reply, tcu.UdpError)
        assert reply.message == UDP_SCRAPE_REFUSED
