"""Hypothesis: the parsers raise only our errors, whatever they are fed; bencoding round-trips."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torrent.create import create
from torrent.errors import BencodeError, MetainfoError
from torrent.proto import bencoding, paths
from torrent.proto.magnet import Magnet
from torrent.proto.metainfo import Metainfo, check_path_component

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
VALID = [
    (FIXTURES / name).read_bytes()
    for name in sorted(json.loads((FIXTURES / "HASHES.json").read_text())["torrents"])
]

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _made_v2() -> list[bytes]:
    """A v2-only and a hybrid torrent of a small tree (several pieces, an empty file)."""
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp) / "t"
        (top / "d").mkdir(parents=True)
        (top / "a.bin").write_bytes(bytes(range(256)) * 200)
        (top / "d" / "b.txt").write_bytes(b"b" * 40_000)
        (top / "d" / "empty").write_bytes(b"")
        return [
            create(top, piece_length=16384, torrent_format=f, no_date=True).to_bytes()
            for f in ("v2", "hybrid")
        ]


VALID_V2 = _made_v2()

bencodable = st.recursive(
    st.integers(min_value=-(2**70), max_value=2**70) | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.binary(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)


def _parse_only_metainfo_errors(data: bytes) -> None:
    try:
        m = Metainfo.from_bytes(data)
    except MetainfoError:
        return
    # Whatever parses is self-consistent, and what storage writes is safe.
    if m.info.has_v1:
        assert m.info.num_pieces * 20 == len(m.info.pieces)
    _assert_safe(m.info.disk_name)
    for f in m.info.files:
        assert f.disk_path
        for c in (*f.disk_path, *(f.symlink or ())):
            _assert_safe(c)


def _assert_safe(c: str) -> None:
    assert c not in ("", ".", "..")
    assert "/" not in c
    assert "\\" not in c
    assert "\x00" not in c
    assert len(c.encode("utf-8")) <= 255
    assert all(not (ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F) for ch in c)


@SETTINGS
@given(st.binary(max_size=600))
def test_any_component_sanitises_to_a_safe_one(raw: bytes) -> None:
    _assert_safe(paths.sanitize_component(raw))
    assert paths.sanitize_component(raw, keep=False) in ("", paths.sanitize_component(raw))


_texty = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=260).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.lists(
        st.sampled_from([b"a", b".", b"/", b"\\", b"\xe6\x97\xa5", b"\xe2\x80\xae", b"\x7f", b"\xff"]),
        max_size=130,
    ).map(b"".join),
)


@SETTINGS
@given(_texty, st.booleans())
def test_the_fast_path_agrees_with_the_code_point_walk(raw: bytes, keep: bool) -> None:
    assert paths.sanitize_component(raw, keep=keep) == paths._sanitize_slow(raw, keep)


_component = st.sampled_from(
    [b"a", b"A", b"b", b"..", b".", b"", b"/", b"x.txt", b"X.TXT", b"x.1.txt", b"\\"]
)


@SETTINGS
@given(st.lists(st.lists(_component, min_size=1, max_size=3), min_size=1, max_size=12))
def test_disk_paths_never_clash_and_stay_inside(file_paths: list[list[bytes]]) -> None:
    files = [{b"length": 1, b"path": p} for p in file_paths]
    t = {b"info": {b"name": b"t", b"piece length": 16384, b"pieces": b"\x00" * 20, b"files": files}}
    try:
        m = Metainfo.from_bytes(bencoding.encode(t))
    except MetainfoError as exc:
        refusal: MetainfoError | None = exc
    else:
        refusal = None
    if refusal is not None:
        assert refusal.field.startswith("info.files[")
        return
    disk = [f.disk_path for f in m.info.files]
    folded = {tuple(c.lower() for c in d) for d in disk}
    assert len(folded) == len(disk)  # no two files share a name, whatever the case
    dirs = {tuple(c.lower() for c in d[:k]) for d in disk for k in range(1, len(d))}
    assert not folded & dirs  # and no file is another's directory
    for d in disk:
        for c in d:
            _assert_safe(c)


@SETTINGS
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_metainfo_error(data: bytes) -> None:
    _parse_only_metainfo_errors(data)


@SETTINGS
@given(st.sampled_from(VALID + VALID_V2), st.data())
def test_mutated_valid_torrents_raise_only_metainfo_error(valid: bytes, data: st.DataObject) -> None:
    buf = bytearray(valid)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate", "digit"]))
        pos = data.draw(st.integers(0, max(0, len(buf) - 1)))
        if kind == "flip" and buf:
            buf[pos] = data.draw(st.integers(0, 255))
        elif kind == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and buf:
            del buf[pos : pos + data.draw(st.integers(1, 8))]
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "digit" and buf:
            buf[pos] = data.draw(st.sampled_from(b"0123456789-ield:"))
    _parse_only_metainfo_errors(bytes(buf))


INFO_KEYS = [
    b"name",
    b"piece length",
    b"pieces",
    b"length",
    b"files",
    b"private",
    b"name.utf-8",
    b"source",
    b"meta version",
    b"attr",
    b"file tree",
]
TOP_KEYS = [
    b"announce",
    b"announce-list",
    b"url-list",
    b"httpseeds",
    b"creation date",
    b"comment",
    b"created by",
    b"encoding",
    b"info",
    b"piece layers",
]
FILE_KEYS = [b"length", b"path", b"path.utf-8", b"attr"]


@SETTINGS
@given(st.sampled_from(VALID + VALID_V2), st.data())
def test_wrongly_typed_fields_raise_only_metainfo_error(valid: bytes, data: st.DataObject) -> None:
    top: dict[bytes, Any] = bencoding.decode(valid)
    where = data.draw(st.sampled_from(["top", "info", "file"]))
    value = data.draw(bencodable)
    if where == "top":
        top[data.draw(st.sampled_from(TOP_KEYS))] = value
    elif where == "info":
        top[b"info"][data.draw(st.sampled_from(INFO_KEYS))] = value
    elif isinstance(top[b"info"].get(b"files"), list):
        files = top[b"info"][b"files"]
        files[data.draw(st.integers(0, len(files) - 1))][data.draw(st.sampled_from(FILE_KEYS))] = value
    _parse_only_metainfo_errors(bencoding.encode(top))


@SETTINGS
@given(bencodable)
def test_bencoding_round_trip(value: Any) -> None:
    raw = bencoding.encode(value)
    assert bencoding.decode(raw) == value
    assert bencoding.encode(bencoding.decode(raw)) == raw  # canonical bytes re-encode identically


@SETTINGS
@given(st.binary(max_size=300))
def test_bencoding_arbitrary_bytes_raise_only_bencode_error(data: bytes) -> None:
    try:
        value = bencoding.decode(data)
    except BencodeError:
        return
    bencoding.encode(value)


@SETTINGS
@given(bencodable.filter(lambda v: isinstance(v, dict)), bencodable)
def test_info_span_is_the_exact_value_bytes(top: dict[bytes, Any], info: Any) -> None:
    top = dict(top)
    top[b"info"] = info
    raw = bencoding.encode(top)
    decoded, span = bencoding.decode_with_info_span(raw)
    assert span == bencoding.encode(info)
    assert decoded[b"info"] == info


@SETTINGS
@given(st.text(max_size=300))
def test_magnet_parse_raises_only_metainfo_error(text: str) -> None:
    for uri in (text, "magnet:?" + text, "magnet:?xt=urn:btih:" + "a" * 40 + "&" + text):
        try:
            m = Magnet.parse(uri)
        except MetainfoError:
            continue
        assert len(m.info_hash) == 20
        assert Magnet.parse(m.to_uri()).info_hash == m.info_hash


@SETTINGS
@given(st.text(max_size=40))
def test_path_components_that_pass_are_safe(component: str) -> None:
    try:
        c = check_path_component(component, "f")
    except MetainfoError:
        return
    assert c not in ("", ".", "..")
    assert not any(s in c for s in ("/", "\\", "\x00"))
    assert not (len(c) >= 2 and c[1] == ":" and c[0].isalpha())
