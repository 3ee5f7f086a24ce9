"""The tracker's status page lists clients by the peer-id prefix they chose: every such
string is HTML-escaped (and its control bytes shown as ``\\xNN``), over HTTP and UDP."""

from __future__ import annotations

from urllib.parse import quote_from_bytes

import aiohttp

from tests.integration.test_tracker_udp import Client
from tracker.server import TrackerServer
from tracker.settings import TrackerSettings

SCRIPT = b"<script>alert(1)</s>"  # 20 bytes: a peer id
TITLE = b"\x1b]0;x\x07<b" + bytes(12)  # retitle a terminal, then open a tag
IH = bytes(range(20))


async def test_peer_chosen_client_names_are_escaped_on_the_status_page() -> None:
    settings = TrackerSettings(host="127.0.0.1", port=0, udp_port=0)
    async with TrackerServer(settings) as srv, aiohttp.ClientSession() as http:
        url = (
            f"http://127.0.0.1:{srv.http_port}/announce?info_hash={quote_from_bytes(IH, safe='')}"
            f"&peer_id={quote_from_bytes(SCRIPT, safe='')}&port=7000&left=1"
        )
        async with http.get(url) as resp:
            assert b"failure" not in await resp.read()
        assert srv.udp_port is not None
        udp = Client("127.0.0.1", srv.udp_port)
        try:
            await udp.announce(1, peer_id=TITLE, info_hash=IH)
        finally:
            udp.close()
        async with http.get(f"http://127.0.0.1:{srv.http_port}/") as resp:
            page = await resp.text()
    assert "&lt;script&gt;" in page
    assert "\\x1b]0;x\\x07&lt;b" in page
    assert "<script" not in page
    assert "<b" not in page.replace("<body", "")
    assert "\x1b" not in page
    assert "\x07" not in page
