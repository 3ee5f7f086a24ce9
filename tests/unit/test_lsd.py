"""Local Service Discovery (BEP 14): the BT-SEARCH codec and the rate limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torrent.proto import lsd
from torrent.proto.lsd import AnnounceLimiter

IH1, IH2 = bytes(range(20)), bytes(range(20, 40))


def test_round_trip() -> None:
    data = lsd.encode(6881, [IH1, IH2], "c00k1e")
    assert data.startswith(b"BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\n")
    assert data.endswith(b"\r\n\r\n\r\n")
    assert lsd.decode(data) == lsd.LsdAnnounce(6881, (IH1, IH2), "c00k1e")


def test_libtorrent_style_announce_with_mixed_case_headers() -> None:
    text = (
        "BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 51413\r\n"
        f"Infohash: {IH1.hex().upper()}\r\ncookie: 1234abcd\r\n\r\n\r\n"
    )
    assert lsd.decode(text.encode()) == lsd.LsdAnnounce(51413, (IH1,), "1234abcd")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"M-SEARCH * HTTP/1.1\r\nPort: 1\r\n\r\n",  # SSDP, same group family
        b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n\r\n",  # no info hash
        b"BT-SEARCH * HTTP/1.1\r\nInfohash: " + IH1.hex().encode() + b"\r\n\r\n",  # no port
        b"BT-SEARCH * HTTP/1.1\r\nPort: 0\r\nInfohash: " + IH1.hex().encode() + b"\r\n\r\n",
        b"BT-SEARCH * HTTP/1.1\r\nPort: x\r\nInfohash: " + IH1.hex().encode() + b"\r\n\r\n",
        b"\xff\xfe" * 10,
        lsd.encode(1, [IH1], "c") + b"x" * lsd.MAX_DATAGRAM,
    ],
)
def test_what_is_not_an_announce_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - every refusal is a ValueError; the reason varies
        lsd.decode(data)


def test_info_hashes_are_bounded_and_deduplicated() -> None:
    many = [bytes([i]) * 20 for i in range(60)]
    msg = lsd.decode(lsd.encode(1, [IH1, IH1, *many[:30]], "c"))
    assert len(msg.info_hashes) == lsd.MAX_INFO_HASHES
    assert msg.info_hashes[0] == IH1
    assert msg.info_hashes.count(IH1) == 1


@given(st.binary(max_size=500))
def test_random_bytes_never_raise_anything_else(data: bytes) -> None:
    try:
        lsd.decode(data)
    except ValueError:
        pass


def test_each_torrent_is_announced_at_most_once_an_interval() -> None:
    lim = AnnounceLimiter(300)
    assert lim.due([IH1], now=0) == [IH1]
    assert lim.due([IH1, IH2], now=10) == [IH2]
    assert lim.due([IH1, IH2], now=299) == []
    assert lim.due([IH1, IH2], now=300) == [IH1]
    lim.forget(IH2)
    assert lim.due([IH2], now=301) == [IH2]


def test_bursts_from_one_source_are_dropped() -> None:
    lim = AnnounceLimiter(300, max_per_source=3, max_sources=2)
    assert [lim.accept("10.0.0.1", now=0) for _ in range(5)] == [True, True, True, False, False]
    assert lim.dropped == 2
    assert lim.accept("10.0.0.2", now=1)
    assert lim.accept("10.0.0.3", now=2)  # the oldest source is forgotten: memory stays bounded
    assert lim.accept("10.0.0.1", now=300)  # a new window
