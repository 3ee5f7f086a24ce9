"""The live view and ``--json`` show the DHT (nodes in the table, peers it found) and our
external address once known."""

from __future__ import annotations

import io
import json

from cli.progress import JsonView, PlainView
from torrent.engine.status import TorrentState, TorrentStats
from torrent.types import InfoHash


def stats(**changes: object) -> TorrentStats:
    base: dict[str, object] = dict(
        info_hash=InfoHash(b"\x01" * 20), name="x", state=TorrentState.DOWNLOADING, wanted_bytes=100,
        done_bytes=50, total_bytes=100, pieces_done=1, pieces_wanted=2, downloaded_bytes=50,
        uploaded_bytes=0, download_rate_bps=0.0, upload_rate_bps=0.0, peers_connected=1, peers_known=2,
        seeds_connected=1, checked_fraction=1.0, eta_s=None, error="", tracker_message="",
        wasted_bytes=0, hash_failures=0, banned_peers=0,
    )  # fmt: skip
    base.update(changes)
    return TorrentStats(**base)  # type: ignore[arg-type]


def test_json_progress_carries_the_dht_counts() -> None:
    out = io.StringIO()
    JsonView(out).update([stats(dht_nodes=57, dht_peers=3)], force=True)
    line = json.loads(out.getvalue())
    assert line["dht_nodes"] == 57
    assert line["dht_peers"] == 3


def test_plain_view_shows_the_dht_only_when_it_is_used() -> None:
    on, off = io.StringIO(), io.StringIO()
    PlainView(on).update([stats(dht_nodes=57, dht_peers=3)], force=True)
    PlainView(off).update([stats()], force=True)
    assert on.getvalue().rstrip().endswith("dht 57n 3p")
    assert "dht" not in off.getvalue()


def test_external_address_is_shown_once_known() -> None:
    """The router's (or the peers') word on our external address: in the line and in
    ``--json``; nothing while it is unknown."""
    plain, js, unknown = io.StringIO(), io.StringIO(), io.StringIO()
    PlainView(plain).update([stats(dht_nodes=5, dht_peers=1, external_ip="11.22.33.44")], force=True)
    JsonView(js).update([stats(external_ip="11.22.33.44")], force=True)
    JsonView(unknown).update([stats()], force=True)
    assert plain.getvalue().rstrip().endswith("dht 5n 1p ext 11.22.33.44")
    assert json.loads(js.getvalue())["external_ip"] == "11.22.33.44"
    assert "external_ip" not in json.loads(unknown.getvalue())
