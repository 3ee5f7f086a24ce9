"""torrent.proto.metainfo: every field, the raw info hash, the fixtures, and every validation error."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from torrent.disk.torrent_file import read_metainfo
from torrent.errors import MetainfoError
from torrent.proto import bencoding
from torrent.proto.metainfo import MAX_PIECE_LENGTH, Metainfo, check_path_component

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
HASHES = json.loads((FIXTURES / "HASHES.json").read_text(encoding="utf-8"))
PIECE = 16384


def _single(**info_changes: Any) -> dict[bytes, Any]:
    data = b"a" * 40_000
    pieces = b"".join(hashlib.sha1(data[i : i + PIECE]).digest() for i in range(0, len(data), PIECE))
    t: dict[bytes, Any] = {
        b"announce": b"http://tracker/announce",
        b"info": {b"name": b"file.bin", b"piece length": PIECE, b"pieces": pieces, b"length": len(data)},
    }
    t[b"info"].update({k.encode(): v for k, v in info_changes.items()})
    return t


def _multi(files: list[dict[bytes, Any]], **info_changes: Any) -> dict[bytes, Any]:
    # A BEP 47 symlink takes no payload room; a hostile length gets one hash (refused first).
    total = sum(0 if b"l" in f.get(b"attr", b"") else f[b"length"] for f in files)
    n = -(-total // PIECE) if total < 2**40 else 1
    t: dict[bytes, Any] = {
        b"info": {b"name": b"dir", b"piece length": PIECE, b"pieces": b"\x01" * 20 * n, b"files": files}
    }
    t[b"info"].update({k.encode(): v for k, v in info_changes.items()})
    return t


def _load(t: dict[bytes, Any]) -> Metainfo:
    return Metainfo.from_bytes(bencoding.encode(t))


# --- fixtures -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HASHES["torrents"]))
def test_fixture_info_hash_matches_the_other_tool(name: str) -> None:
    facts = HASHES["torrents"][name]
    m = read_metainfo(FIXTURES / name)
    assert m.info_hash.hex() == facts["info_hash"]
    assert m.info.piece_length == facts["piece_length"]
    assert m.info.num_pieces == facts["num_pieces"]
    assert m.info.private is bool(facts.get("private"))
    assert m.info.source == facts.get("source", "")
    assert any(f.padding for f in m.info.files) is bool(facts.get("padded"))
    # The info bytes survive a round trip exactly.
    assert Metainfo.from_bytes(m.to_bytes()).info_bytes == m.info_bytes


@pytest.mark.parametrize("name", sorted(HASHES["torrents"]))
def test_fixture_piece_hashes_match_the_payload(name: str) -> None:
    facts = HASHES["torrents"][name]
    m = read_metainfo(FIXTURES / name)
    payload = FIXTURES / facts["payload"]
    blob = bytearray()
    for f in m.info.files:
        if f.padding:
            blob += bytes(f.length)
        elif m.info.multi_file:
            blob += payload.joinpath(*f.path).read_bytes()
        else:
            blob += payload.read_bytes()
    pl = m.info.piece_length
    assert all(
        hashlib.sha1(blob[i * pl : (i + 1) * pl]).digest() == m.info.piece_hash(i)
        for i in range(m.info.num_pieces)
    )


def test_unsorted_keys_keep_the_raw_span_hash() -> None:
    raw = (FIXTURES / "unsorted-keys.torrent").read_bytes()
    m = Metainfo.from_bytes(raw)
    assert m.info_bytes in raw
    assert m.info_bytes.startswith(b"d6:pieces")
    assert m.info_hash == hashlib.sha1(m.info_bytes).digest()
    assert m.info_hash != hashlib.sha1(bencoding.encode(m.info.raw)).digest()
    assert m.to_bytes().count(m.info_bytes) == 1


def test_padded_fixture_marks_padding_files() -> None:
    m = read_metainfo(FIXTURES / "padded.torrent")
    pads = [f for f in m.info.files if f.padding]
    assert pads
    assert all(f.path[0] == ".pad" and "p" in f.attr for f in pads)
    real = [f for f in m.info.files if not f.padding]
    assert real[0].path_str == "README.txt"
    # Padding counts in the payload size: every real file after a pad starts on a piece boundary.
    for prev, f in zip(m.info.files, m.info.files[1:], strict=False):
        if prev.padding:
            assert f.offset % m.info.piece_length == 0


def test_hybrid_fixture_is_read_with_both_halves() -> None:
    m = read_metainfo(FIXTURES / "multi.libtorrent-hybrid.torrent")
    assert b"file tree" in m.info.raw
    assert m.meta_version == 2
    assert m.info.has_v1
    assert m.info.has_v2
    assert m.info_hash_v2 is not None
    assert len(m.info_hash_v2) == 32
    assert m.info.multi_file
    assert m.info.name == "multi"
    assert all(len(f.pieces_root) == 32 for f in m.info.files if f.length and not f.padding)


@pytest.mark.parametrize("name", sorted(HASHES["malformed"]))
def test_malformed_fixture_raises_metainfo_error_naming_the_field(name: str) -> None:
    field = HASHES["malformed"][name]
    with pytest.raises(MetainfoError) as info:
        read_metainfo(FIXTURES / "malformed" / name)
    assert info.value.field == field
    assert "\n" not in str(info.value)
    if field:
        assert str(info.value).startswith(field + ":")


# --- fields ---------------------------------------------------------------------------------


def test_single_file_basics() -> None:
    m = _load(_single())
    assert m.info.name == "file.bin"
    assert not m.info.multi_file
    assert [(f.path, f.length, f.offset) for f in m.info.files] == [(("file.bin",), 40_000, 0)]
    assert m.info.total_length == 40_000
    assert m.info.num_pieces == 3
    assert m.info.piece_size(0) == PIECE
    assert m.info.piece_size(2) == 40_000 - 2 * PIECE
    with pytest.raises(IndexError):
        m.info.piece_hash(3)
    assert m.announce == "http://tracker/announce"
    assert m.announce_list == (("http://tracker/announce",),)


def test_announce_list_tiers_replace_announce() -> None:
    t = _single()
    t[b"announce-list"] = [[b"http://a/1", b" http://b/1 "], [], [b""], [b"udp://c:80"]]
    m = _load(t)
    assert m.announce_list == (("http://a/1", "http://b/1"), ("udp://c:80",))
    assert m.announce == "http://tracker/announce"
    assert m.trackers == ("http://a/1", "http://b/1", "udp://c:80")


def test_empty_announce_list_falls_back_to_announce() -> None:
    t = _single()
    t[b"announce-list"] = []
    assert _load(t).announce_list == (("http://tracker/announce",),)
    del t[b"announce"]
    assert _load(t).announce_list == ()


def test_private_flag() -> None:
    assert _load(_single(private=1)).info.private
    assert not _load(_single(private=0)).info.private
    assert not _load(_single()).info.private


def test_url_list_and_httpseeds_as_string_or_list() -> None:
    t = _single()
    t[b"url-list"] = b"http://ws/file.bin"
    t[b"httpseeds"] = [b"http://hs/1", b"", b"http://hs/2"]
    m = _load(t)
    assert m.url_list == ("http://ws/file.bin",)
    assert m.httpseeds == ("http://hs/1", "http://hs/2")
    t[b"url-list"] = [b"http://a/", b"http://b/"]
    assert _load(t).url_list == ("http://a/", "http://b/")
    t[b"url-list"] = b""
    assert _load(t).url_list == ()


def test_creation_date_comment_created_by() -> None:
    t = _single()
    t[b"creation date"] = 1_234_567_890
    t[b"comment"] = "grüße".encode()
    t[b"created by"] = b"someone/1.0"
    m = _load(t)
    assert (m.creation_date, m.comment, m.created_by) == (1_234_567_890, "grüße", "someone/1.0")
    t[b"creation date"] = b"yesterday"  # wrong type: ignored, as libtorrent does
    assert _load(t).creation_date is None


def test_encoding_field_decodes_legacy_names() -> None:
    t = _single(name="café.bin".encode("latin-1"))
    t[b"encoding"] = b"ISO-8859-1"
    t[b"comment"] = "déjà".encode("latin-1")
    m = _load(t)
    assert m.encoding == "ISO-8859-1"
    assert m.info.name == "café.bin"
    assert m.comment == "déjà"


def test_utf8_variants_win() -> None:
    files = [{b"length": 5, b"path": [b"old"], b"path.utf-8": ["ü".encode(), b"new"]}]
    t = _multi(files, **{"name.utf-8": "nämé".encode()})
    m = _load(t)
    assert m.info.name == "nämé"
    assert m.info.files[0].path == ("ü", "new")


def test_multi_file_offsets_and_empty_files() -> None:
    files = [
        {b"length": 10, b"path": [b"a"]},
        {b"length": 0, b"path": [b"b", b"empty"]},
        {b"length": 20_000, b"path": [b"c"]},
    ]
    m = _load(_multi(files))
    assert [(f.path_str, f.length, f.offset) for f in m.info.files] == [
        ("a", 10, 0),
        ("b/empty", 0, 10),
        ("c", 20_000, 10),
    ]
    assert m.info.multi_file
    assert m.info.total_length == 20_010


def test_unknown_keys_are_kept_and_round_trip() -> None:
    t = _single(**{"x-custom": b"kept", "similar": [b"\x00" * 20]})
    t[b"x-top"] = {b"nested": [1, 2, b"three"]}
    raw = bencoding.encode(t)
    m = Metainfo.from_bytes(raw)
    assert m.raw[b"x-top"] == {b"nested": [1, 2, b"three"]}
    assert m.info.raw[b"x-custom"] == b"kept"
    assert m.to_bytes() == raw


def test_non_power_of_two_piece_length_is_accepted_with_a_warning_as_libtorrent_does() -> None:
    data = b"z" * 50_000
    pl = 20_000
    pieces = b"".join(hashlib.sha1(data[i : i + pl]).digest() for i in range(0, len(data), pl))
    m = _load({b"info": {b"name": b"x", b"piece length": pl, b"pieces": pieces, b"length": len(data)}})
    assert m.info.piece_length == pl
    assert m.info.num_pieces == 3
    assert any("power of two" in w for w in m.warnings)
    assert not _load(_single()).warnings


def test_piece_length_limit_is_libtorrents() -> None:
    ok = {b"info": {b"name": b"x", b"piece length": MAX_PIECE_LENGTH, b"pieces": b"\x00" * 20, b"length": 1}}
    assert _load(ok).info.piece_length == MAX_PIECE_LENGTH
    ok[b"info"][b"piece length"] = MAX_PIECE_LENGTH + 1
    with pytest.raises(MetainfoError, match="piece length"):
        _load(ok)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda t: t[b"info"].pop(b"name"), "info.name"),
        (lambda t: t[b"info"].update({b"name": [b"x"]}), "info.name"),
        (lambda t: t[b"info"].pop(b"piece length"), "info.piece length"),
        (lambda t: t[b"info"].update({b"piece length": 0}), "info.piece length"),
        (lambda t: t[b"info"].pop(b"pieces"), "info.pieces"),
        (lambda t: t[b"info"].update({b"pieces": 5}), "info.pieces"),
        (lambda t: t[b"info"].update({b"pieces": b"x" * 21}), "info.pieces"),
        (lambda t: t[b"info"].update({b"pieces": b"x" * 40}), "info.pieces"),
        (lambda t: t[b"info"].update({b"length": b"5"}), "info.length"),
        (lambda t: t[b"info"].update({b"length": -1}), "info.length"),
        (lambda t: t[b"info"].pop(b"length"), "info.length"),
        (lambda t: t[b"info"].update({b"files": []}), "info.files"),
        (lambda t: t.update({b"announce": 5}), "announce"),
        (lambda t: t.update({b"announce-list": [[5]]}), "announce-list[0][0]"),
        (lambda t: t.update({b"info": []}), "info"),
        (lambda t: t.pop(b"info"), "info"),
    ],
)
def test_validation_errors_name_the_field(mutate: Any, field: str) -> None:
    t = _single()
    mutate(t)
    with pytest.raises(MetainfoError) as info:
        _load(t)
    assert info.value.field == field, str(info.value)


# Path traversal is impossible: every unsafe path is sanitised (as libtorrent does) to
# one that stays below the torrent's directory; the torrent's own path stays for display.
@pytest.mark.parametrize(
    ("path", "disk"),
    [
        ([b".."], ("_",)),
        ([b"a", b".."], ("a", "_")),
        ([b"."], ("_",)),
        ([b""], ("_",)),
        ([b"/etc", b"passwd"], ("etc", "passwd")),
        ([b"a/b"], ("ab",)),
        ([b"a\\b"], ("ab",)),
        ([b"a\x00"], ("a",)),
        ([b"C:"], ("C:",)),
        ([b"c:\\windows"], ("c:windows",)),
        ([b"x" * 256], ("x" * 240,)),
        ([b"..", b"..", b"etc", b"passwd"], ("_", "_", "etc", "passwd")),
        ([b"a\x1b[2J"], ("a_[2J",)),
    ],
)
def test_path_traversal_is_impossible(path: list[bytes], disk: tuple[str, ...]) -> None:
    files = [{b"length": 5, b"path": [b"ok"]}, {b"length": 5, b"path": path}]
    m = _load(_multi(files))
    f = m.info.files[1]
    assert f.disk_path == disk
    assert f.path == tuple(c.decode("utf-8", "replace") for c in path)
    assert any("sanitised" in w for w in m.warnings) == (f.disk_path != f.path)


def test_an_empty_path_is_still_refused() -> None:
    with pytest.raises(MetainfoError) as info:
        _load(_multi([{b"length": 5, b"path": [b"ok"]}, {b"length": 5, b"path": []}]))
    assert info.value.field == "info.files[1].path"


@pytest.mark.parametrize("name", [b"..", b".", b"", b"\x00", b"/"])
def test_names_that_leave_nothing_are_refused_for_a_single_file(name: bytes) -> None:
    with pytest.raises(MetainfoError) as info:
        _load(_single(name=name))
    assert info.value.field == "info.name"


@pytest.mark.parametrize(
    ("name", "disk"), [(b"a/b", "ab"), (b"/abs", "abs"), (b"a\\b", "ab"), (b"x" * 300, "x" * 240)]
)
def test_odd_names_are_sanitised(name: bytes, disk: str) -> None:
    info = _load(_single(name=name)).info
    assert (info.name, info.disk_name, info.files[0].disk_path) == (name.decode(), disk, (disk,))


def test_a_multi_file_name_that_leaves_nothing_becomes_the_info_hash() -> None:
    m = _load(_multi([{b"length": 5, b"path": [b"a"]}], name=b".."))
    assert m.info.name == ".."
    assert m.info.disk_name == m.info_hash.hex()


def test_path_utf8_is_sanitised_too() -> None:
    files = [{b"length": 5, b"path": [b"fine"], b"path.utf-8": [b".."]}]
    f = _load(_multi(files)).info.files[0]
    assert (f.path, f.disk_path) == (("..",), ("_",))


def test_a_file_that_is_also_a_directory_is_refused_naming_both() -> None:
    for files in (
        [{b"length": 5, b"path": [b"a"]}, {b"length": 5, b"path": [b"a", b"b"]}],
        [{b"length": 5, b"path": [b"a", b"b"]}, {b"length": 5, b"path": [b"a"]}],
    ):
        with pytest.raises(MetainfoError, match=r"'a'.*'a/b'|'a/b'.*'a'") as info:
            _load(_multi(files))
        assert info.value.field.startswith("info.files[")


def test_a_four_thousand_digit_length_names_the_field() -> None:
    for field, mutate in (
        ("info.length", {b"length": int("9" * 4000)}),
        ("info.piece length", {b"piece length": int("9" * 4000)}),
    ):
        t = _single()
        t[b"info"].update(mutate)
        with pytest.raises(MetainfoError) as info:
            _load(t)
        assert info.value.field == field
        assert "4000-digit" in str(info.value)
        assert len(str(info.value)) < 200
    files = [{b"length": 5, b"path": [b"a"]}, {b"length": int("9" * 4000), b"path": [b"b"]}]
    with pytest.raises(MetainfoError) as info:
        _load(_multi(files))
    assert info.value.field == "info.files[1].length"


def test_malformed_optional_lists_are_ignored_with_a_warning() -> None:
    for key in (b"announce-list", b"url-list", b"httpseeds"):
        t = _single()
        t[key] = {}
        m = _load(t)
        assert any(key.decode() in w and "ignored" in w for w in m.warnings)


def test_bytes_after_the_dictionary_are_ignored_with_a_warning() -> None:
    data = bencoding.encode(_single()) + b"\ngarbage"
    m = Metainfo.from_bytes(data)
    assert m.info_hash == Metainfo.from_bytes(data[:-8]).info_hash
    assert any("8 bytes after" in w for w in m.warnings)


def test_symlinks_are_kept_only_inside_the_torrent() -> None:
    files: list[dict[bytes, Any]] = [
        {b"length": 5, b"path": [b"d", b"a"]},
        {b"attr": b"l", b"path": [b"in"], b"symlink path": [b"d", b"a"]},
        {b"attr": b"l", b"path": [b"dir"], b"symlink path": [b"d"]},
        {b"attr": b"l", b"length": 99, b"path": [b"out"], b"symlink path": [b"..", b"..", b"etc", b"passwd"]},
        {b"attr": b"l", b"path": [b"abs"], b"symlink path": [b"/etc/passwd"]},
        {b"attr": b"l", b"path": [b"self"], b"symlink path": [b"self"]},
        {b"attr": b"l", b"path": [b"d", b"sibling"], b"symlink path": [b"a"]},
        {b"attr": b"l", b"path": [b"nopath"]},
    ]
    got = {f.disk_path: (f.length, f.symlink) for f in _load(_multi(files)).info.files}
    assert got == {
        ("d", "a"): (5, None),
        ("in",): (0, ("d", "a")),
        ("dir",): (0, ("d",)),
        ("out",): (0, None),
        ("abs",): (0, None),
        ("self",): (0, None),
        ("d", "sibling"): (0, ("d", "a")),
        ("nopath",): (0, None),
    }


def test_check_path_component_accepts_ordinary_names() -> None:
    for ok in ("a", "file.txt", "...", "..a", "日本語", "a b", "x" * 255):
        assert check_path_component(ok, "f") == ok


def test_padding_only_and_zero_total_are_refused() -> None:
    with pytest.raises(MetainfoError, match="padding"):
        _load(_multi([{b"length": 5, b"path": [b".pad", b"5"], b"attr": b"p"}]))
    with pytest.raises(MetainfoError, match="no data"):
        _load(_multi([{b"length": 0, b"path": [b"a"]}]))


def test_duplicate_padding_paths_are_fine_but_real_duplicates_are_not() -> None:
    pad = {b"length": PIECE - 5, b"path": [b".pad", b"x"], b"attr": b"p"}
    files = [
        {b"length": 5, b"path": [b"a"]},
        pad,
        {b"length": 5, b"path": [b"b"]},
        dict(pad),
        {b"length": 5, b"path": [b"c"]},
    ]
    assert _load(_multi(files)).info.num_pieces == 3
    dups = [
        {b"length": 5, b"path": [b"a.txt"]},
        {b"length": 5, b"path": [b"A.TXT"]},
        {b"length": 5, b"path": [b"a.txt"]},
        {b"length": 5, b"path": [b"a.1.txt"]},
    ]
    got = [f.disk_path for f in _load(_multi(dups)).info.files]
    assert got == [("a.txt",), ("A.1.TXT",), ("a.2.txt",), ("a.1.1.txt",)]


def test_thousands_of_one_name_are_refused_not_renamed_forever() -> None:
    with pytest.raises(MetainfoError, match="clashing") as info:
        _load(_multi([{b"length": 1, b"path": [b"x"]} for _ in range(100)]))
    assert info.value.field.startswith("info.files[")


def test_read_errors_are_metainfo_errors(tmp_path: Path) -> None:
    with pytest.raises(MetainfoError, match="cannot read"):
        read_metainfo(tmp_path / "missing.torrent")
    with pytest.raises(MetainfoError, match="cannot read"):
        read_metainfo(tmp_path)


def test_v2_torrent_without_files_is_refused_clearly() -> None:
    t = {b"info": {b"name": b"x", b"piece length": PIECE, b"meta version": 2, b"file tree": {}}}
    with pytest.raises(MetainfoError, match="no data") as info:
        _load(t)
    assert info.value.field == "info.file tree"
