from __future__ import annotations

import pytest

from torrent.errors import BencodeError
from torrent.proto import bencoding


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"i0e", 0),
        (b"i-42e", -42),
        (b"4:spam", b"spam"),
        (b"0:", b""),
        (b"l4:spami3ee", [b"spam", 3]),
        (b"d3:cow3:moo4:spaml1:a1:bee", {b"cow": b"moo", b"spam": [b"a", b"b"]}),
    ],
)
def test_decode_spec_examples(raw: bytes, value: object) -> None:
    assert bencoding.decode(raw) == value
    assert bencoding.encode(value) == raw


@pytest.mark.parametrize(
    "raw", [b"", b"i", b"i01e", b"i-0e", b"5:abc", b"l", b"d3:cowe", b"x", b"i1ei2e", b"l" * 1000]
)
def test_decode_rejects_garbage(raw: bytes) -> None:
    with pytest.raises(BencodeError):
        bencoding.decode(raw)


def test_encode_sorts_keys_and_accepts_str() -> None:
    assert bencoding.encode({"b": 1, b"a": "x"}) == b"d1:a1:x1:bi1ee"


def test_encode_rejects_unknown_types() -> None:
    with pytest.raises(BencodeError):
        bencoding.encode({b"a": 1.5})
    with pytest.raises(BencodeError):
        bencoding.encode(True)


def test_info_span_is_raw_bytes_even_when_keys_are_unsorted() -> None:
    raw_info = b"d4:name1:x1:ai1ee"  # 'name' before 'a': not sorted
    data = b"d8:announce3:url4:info" + raw_info + b"1:zi0ee"
    top, span = bencoding.decode_with_info_span(data)
    assert span == raw_info
    assert top[b"info"] == {b"name": b"x", b"a": 1}
    assert bencoding.encode(top[b"info"]) != raw_info


def test_raw_is_copied_verbatim() -> None:
    assert bencoding.encode({b"info": bencoding.Raw(b"d1:bi1e1:ai2ee")}) == b"d4:infod1:bi1e1:ai2eee"
