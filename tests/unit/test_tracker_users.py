"""Private mode's pure parts: accounting deltas, rules, BEP 41 URL data, passkey paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from torrent.errors import RemoteProtocolError
from torrent.proto.tracker_codec_udp import encode_udp_url_data, parse_udp_url_data
from tracker.users import TOO_MANY_IPS, Accounting, PrivateRules, PrivateTracker, Tally, passkey_from_path

IH = b"i" * 20
KEY = "0123456789abcdef0123456789abcdef"


def test_deltas_resets_and_absurd_rates() -> None:
    acc = Accounting(max_rate_bps=1000, max_gap_s=100)
    # what the store keeps between announces (rule 6 of tracker.store), per (user, peer)
    tallies: dict[tuple[int, bytes], Tally] = {}

    def record(
        user: int, peer: bytes, *, uploaded: int, downloaded: int, left: int, event: int, now: float,
        freeleech: bool,
    ) -> tuple[int, int]:  # fmt: skip
        prev = tallies.pop((user, peer), None)
        if event != 3:
            tallies[(user, peer)] = Tally(user, uploaded, downloaded, left, now)
        return acc.record(
            user, IH, uploaded=uploaded, downloaded=downloaded, left=left, event=event, now=now,
            freeleech=freeleech, prev=prev,
        )  # fmt: skip

    def rec(up: int, down: int, left: int, event: int, now: float, free: bool = False) -> tuple[int, int]:
        return record(1, b"p", uploaded=up, downloaded=down, left=left, event=event, now=now, freeleech=free)

    assert rec(0, 0, 10, 2, 0) == (0, 0)
    assert rec(500, 900, 10, 0, 10) == (500, 900)
    assert rec(400, 1000, 10, 0, 20) == (400, 100)  # upload counter reset: 400 counted
    assert rec(400, 1000 + 10**9, 10, 0, 30) == (0, 0)  # 100 MB/s > 1000 B/s: flagged
    assert rec(400, 1000 + 10**9, 0, 1, 40) == (0, 0)  # completed
    assert rec(900, 1000 + 10**9, 0, 0, 60) == (500, 0)  # seeding
    assert rec(900, 1000 + 10**9, 0, 0, 500) == (0, 0)  # a long gap: seeding time capped
    d = acc.take()[(1, IH)]
    assert (d.uploaded, d.downloaded, d.completed, d.flagged) == (1400, 1000, 1, 1)
    assert d.seed_time_s == 20 + 100
    assert acc.take() == {}
    # a peer first seen without "started": baseline only, nothing counted
    assert record(2, b"q", uploaded=7, downloaded=7, left=1, event=0, now=0, freeleech=False) == (
        0,
        0,
    )
    # freeleech: downloaded not counted
    record(3, b"r", uploaded=0, downloaded=0, left=9, event=2, now=0, freeleech=True)
    assert record(3, b"r", uploaded=5, downloaded=9, left=0, event=0, now=10, freeleech=True) == (
        5,
        0,
    )


async def test_leeching_ip_limit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'u.db'}"
    async with PrivateTracker(url, PrivateRules(leech_ip_limit=2)) as pt:
        key = pt.db.add_user("eve")
        pt.db.add_torrent(IH)
        await pt.reload()
        for ip in (b"\x0a\0\0\x01", b"\x0a\0\0\x02"):
            v = pt.admit(key, IH, b"p" * 20, 10, 2, ip)
            assert not isinstance(v, str)
            pt.record(*v, IH, b"p" * 20, uploaded=0, downloaded=0, left=10, event=2, ip=ip)
        assert pt.admit(key, IH, b"p" * 20, 10, 2, b"\x0a\0\0\x03") == TOO_MANY_IPS
        assert not isinstance(pt.admit(key, IH, b"p" * 20, 0, 2, b"\x0a\0\0\x03"), str)  # seeding is fine
        # one address stops: another may start
        v = pt.admit(key, IH, b"p" * 20, 10, 3, b"\x0a\0\0\x01")
        assert not isinstance(v, str)
        pt.record(*v, IH, b"p" * 20, uploaded=0, downloaded=0, left=10, event=3, ip=b"\x0a\0\0\x01")
        assert not isinstance(pt.admit(key, IH, b"p" * 20, 10, 2, b"\x0a\0\0\x03"), str)


def test_bep41_url_data() -> None:
    path = f"/{KEY}/announce?x=1".encode()
    assert parse_udp_url_data(encode_udp_url_data(path)) == path
    long = b"/" + b"a" * 600
    assert parse_udp_url_data(encode_udp_url_data(long)) == long
    # NOP, an unknown option, two URL-data pieces, end, then ignored bytes
    raw = b"\x01\x07\x02zz\x02\x03/ab\x02\x02cd\x00\x02\x05junk!"
    assert parse_udp_url_data(raw) == b"/abcd"
    assert parse_udp_url_data(b"") == b""
    with pytest.raises(RemoteProtocolError):
        parse_udp_url_data(b"\x02\x09/short")


def test_passkey_paths() -> None:
    assert passkey_from_path(f"/{KEY}/announce") == KEY
    assert passkey_from_path(f"/{KEY}/scrape".encode()) == KEY
    assert passkey_from_path("/announce") is None
    assert passkey_from_path(f"/{KEY.upper()}/announce") is None
    assert passkey_from_path(f"/{KEY}x/announce") is None
