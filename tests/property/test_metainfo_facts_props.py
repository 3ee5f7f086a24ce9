"""Hypothesis: the quick read of an added torrent accepts only what the full parse accepts,
and then says what it says; :meth:`MetainfoFacts.from_bytes` refuses exactly what
:meth:`Metainfo.from_bytes` refuses, with the same error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torrent.errors import MetainfoError
from torrent.proto import bencoding
from torrent.proto.metainfo import MAX_FILE_LENGTH, MAX_PIECE_LENGTH, Metainfo
from torrent.proto.metainfo_facts import MetainfoFacts, quick_facts

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
VALID = [
    (FIXTURES / name).read_bytes()
    for name in sorted(json.loads((FIXTURES / "HASHES.json").read_text())["torrents"])
]

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

_leaf = st.integers(min_value=-(2**40), max_value=2**40) | st.binary(max_size=24)
bencodable = st.recursive(
    _leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.binary(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_names = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"a.bin", b"", b".", b"..", b"a/b", b"_____padding_file_0", b"\xff\xfe", b" x ", b"C:"]),
    st.text(max_size=30).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
_urls = st.one_of(
    st.sampled_from(
        [
            b"http://tracker.example/announce",
            b"udp://tracker.example:6969",
            b"udp://tracker.example",
            b"http://[::1",
            b" ",
            b"",
            b"\xc2\xa0",
            b"http://h:" + b"1" * 5000,
        ]
    ),
    st.binary(max_size=30),
)
_piece_lengths = st.one_of(
    st.sampled_from([16384, 2**18, 2**20]),
    st.sampled_from([16384, 1, 0, -16384, MAX_PIECE_LENGTH, MAX_PIECE_LENGTH + 1]),
    st.integers(min_value=-5, max_value=2**22),
)
_lengths = st.one_of(
    st.integers(min_value=1, max_value=2**24),
    st.integers(min_value=1, max_value=2**24),
    st.sampled_from([0, 1, 16384, 16385, -1, MAX_FILE_LENGTH, MAX_FILE_LENGTH + 1]),
)


@st.composite
def torrents(draw: st.DrawFn) -> dict[bytes, Any]:
    """Single-file torrents, mostly well-formed, with a field now and then wrong, missing,
    wrongly typed or of a shape the quick read leaves to the full parse."""
    piece_length = draw(_piece_lengths)
    length = draw(_lengths)
    count = -(-length // piece_length) if piece_length > 0 and length > 0 else 1
    count = min(count, 2048)  # more would not match the length: refused all the same
    count += draw(st.sampled_from([0] * 10 + [1, -1]))
    info: dict[bytes, Any] = {
        b"name": draw(_names),
        b"piece length": piece_length,
        b"pieces": b"\x01" * 20 * max(0, count) + draw(st.sampled_from([b""] * 10 + [b"x"])),
        b"length": length,
    }
    for key in draw(st.lists(st.sampled_from([b"private", b"source", b"attr", b"x-seed", b"md5sum"]))):
        info[key] = draw(st.one_of(st.sampled_from([0, 1, 2, b"1"]), bencodable))
    top: dict[bytes, Any] = {b"info": info}
    if draw(st.booleans()):
        top[b"announce"] = draw(st.one_of(_urls, _urls, _urls, _urls, bencodable))
    if draw(st.booleans()):
        tier = st.lists(st.one_of(*[_urls] * 8, bencodable), max_size=3)
        top[b"announce-list"] = draw(
            st.one_of(st.lists(st.one_of(tier, tier, bencodable), max_size=3), bencodable)
        )
    for key in draw(
        st.lists(st.sampled_from([b"comment", b"created by", b"creation date", b"url-list", b"zz"]))
    ):
        top[key] = draw(bencodable)
    # Now and then: a key the quick read leaves to the full parse, or one dropped.
    odd = draw(st.sampled_from([None] * 15 + ["files", "meta version", "name.utf-8", "encoding", "drop"]))
    if odd == "encoding":
        top[b"encoding"] = draw(st.sampled_from([b"UTF-8", b"latin-1", b"bogus"]))
    elif odd == "drop":
        del info[draw(st.sampled_from(sorted(info)))]
    elif odd is not None:
        info[odd.encode()] = draw(st.one_of(st.sampled_from([2, 1, b"a.bin"]), bencodable))
    return top


def _mutate(buf: bytearray, data: st.DataObject) -> None:
    for _ in range(data.draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):
        kind = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate", "digit", "append"]))
        pos = data.draw(st.integers(0, max(0, len(buf) - 1)))
        if kind == "flip" and buf:
            buf[pos] = data.draw(st.integers(0, 255))
        elif kind == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=6))
        elif kind == "delete" and buf:
            del buf[pos : pos + data.draw(st.integers(1, 6))]
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "digit" and buf:
            buf[pos] = data.draw(st.sampled_from(b"0123456789-ield:"))
        elif kind == "append":
            buf += data.draw(st.binary(min_size=1, max_size=4))


def _agree(data: bytes) -> MetainfoFacts | None:
    """Check the quick read against the full parse on ``data``; the quick read's answer."""
    quick = quick_facts(data)
    refusal: MetainfoError | None = None
    try:
        full = MetainfoFacts.of(Metainfo.from_bytes(data))
    except MetainfoError as exc:
        refusal = exc
    if refusal is not None:
        assert quick is None, f"the quick read accepted what the full parse refuses: {refusal}"
        with pytest.raises(MetainfoError) as again:
            MetainfoFacts.from_bytes(data)
        assert str(again.value) == str(refusal)
        assert again.value.field == refusal.field
        return None
    assert quick is None or quick == full
    assert MetainfoFacts.from_bytes(data) == full
    return quick


@SETTINGS
@given(torrents(), st.data())
def test_the_quick_read_agrees_with_the_full_parse(top: dict[bytes, Any], data: st.DataObject) -> None:
    buf = bytearray(bencoding.encode(top))
    _mutate(buf, data)
    _agree(bytes(buf))


@SETTINGS
@given(st.sampled_from(VALID), st.data())
def test_the_quick_read_agrees_on_mutated_real_torrents(valid: bytes, data: st.DataObject) -> None:
    buf = bytearray(valid)
    _mutate(buf, data)
    _agree(bytes(buf))


@SETTINGS
@given(st.binary(max_size=300))
def test_the_quick_read_agrees_on_arbitrary_bytes(data: bytes) -> None:
    _agree(data)


@SETTINGS
@given(
    st.binary(min_size=1, max_size=40).filter(lambda n: n not in (b".", b"..") and b"/" not in n),
    st.integers(min_value=1, max_value=2**34),
    st.sampled_from([16384, 2**18, 2**20, 2**22]),
    st.sampled_from([None, 0, 1]),
    st.lists(
        st.lists(st.sampled_from([b"http://t.example/a", b"udp://u.example:80"]), max_size=2), max_size=2
    ),
)
def test_the_quick_read_answers_for_plain_single_file_torrents(
    name: bytes, length: int, piece_length: int, private: int | None, tiers: list[list[bytes]]
) -> None:
    """The shape it is for (what ``create`` makes of one file, with or without trackers)
    is read quickly, not left to the full parse."""
    info: dict[bytes, Any] = {
        b"length": length,
        b"name": name,
        b"piece length": piece_length,
        b"pieces": b"\x02" * 20 * -(-length // piece_length),
    }
    if private is not None:
        info[b"private"] = private
    top: dict[bytes, Any] = {b"info": info, b"created by": b"pytorrent", b"creation date": 1_700_000_000}
    if tiers:
        top[b"announce-list"] = tiers
    data = bencoding.encode(top)
    try:
        Metainfo.from_bytes(data)
    except MetainfoError:
        assert quick_facts(data) is None  # a name that leaves no usable file name
        return
    quick = _agree(data)
    assert quick is not None
    assert quick.private == (private == 1)
    assert quick.trackers == any(tiers)
