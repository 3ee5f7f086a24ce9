"""Sanitising a torrent's file names (torrent.proto.paths), case by case."""

from __future__ import annotations

import pytest

from torrent.errors import MetainfoError
from torrent.proto import paths


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (b"ok.txt", "ok.txt"),
        (b"", "_"),
        (b".", "_"),
        (b"..", "_"),
        (b"...", "..."),
        (b"/", "_"),
        (b"\\", "_"),
        (b"a/b\\c", "abc"),
        (b"/etc/passwd", "etcpasswd"),
        (b"a\x00b", "ab"),
        (b"tab\there", "tab_here"),
        (b"esc\x1b[2J", "esc_[2J"),
        (b"del\x7f", "del_"),
        ("c1\u0085".encode(), "c1_"),
        ("evil\u202etxt.exe".encode(), "eviltxt.exe"),
        ("zero\u200bwidth\ufeff".encode(), "zerowidth"),
        (b"bad\xffutf8", "bad_utf8"),
        (b"overlong\xc0\xaf", "overlong_"),
        (b"surrogate\xed\xa0\x80", "surrogate_"),
        (b"cut\xe6\x97", "cut_"),
        ("日本語".encode(), "日本語"),
        (b"C:", "C:"),
    ],
)
def test_component(raw: bytes, clean: str) -> None:
    assert paths.sanitize_component(raw) == clean


def test_long_components_are_cut_at_240_bytes_keeping_a_short_extension() -> None:
    assert paths.sanitize_component(b"x" * 300 + b".mkv") == "x" * 240 + ".mkv"
    assert paths.sanitize_component(b"x" * 300) == "x" * 240
    # An extension further than ten bytes from the end is not one.
    assert paths.sanitize_component(b"x" * 250 + b".0123456789ab") == "x" * 240
    # Multi-byte characters are never split.
    out = paths.sanitize_component("é".encode() * 200)
    assert out == "é" * 120
    assert len(out.encode()) == 240


def test_name_rules() -> None:
    assert paths.sanitize_name(b"..", multi_file=True, info_hash_hex="ab" * 20) == "ab" * 20
    assert paths.sanitize_name(b"..", multi_file=False, info_hash_hex="ab" * 20) is None
    assert paths.sanitize_name(b"", multi_file=True, info_hash_hex="ab" * 20) == "_"
    assert paths.sanitize_name(b"", multi_file=False, info_hash_hex="ab" * 20) is None
    assert paths.sanitize_name(b"a/../b", multi_file=False, info_hash_hex="") == "a..b"


def _where(n: int) -> list[str]:
    return [f"info.files[{i}].path" for i in range(n)]


def test_duplicates_are_numbered_before_the_extension_ignoring_case() -> None:
    ps = [("a.txt",), ("A.TXT",), ("d", ".hidden"), ("d", ".hidden"), ("noext",), ("NOEXT",)]
    got = paths.resolve_duplicates(ps, [False] * 6, [1] * 6, _where(6))
    assert got == [("a.txt",), ("A.1.TXT",), ("d", ".hidden"), ("d", ".1.hidden"), ("noext",), ("NOEXT.1",)]


def test_a_file_never_takes_a_directorys_name() -> None:
    got = paths.resolve_duplicates([("D",), ("d", "x")], [False] * 2, [1] * 2, _where(2))
    assert got == [("D.1",), ("d", "x")]
    with pytest.raises(MetainfoError, match="also the directory") as err:
        paths.resolve_duplicates([("d", "x"), ("d",)], [False] * 2, [1] * 2, _where(2))
    assert err.value.field == "info.files[1].path"


def test_padding_files_of_one_size_share_a_path_freely() -> None:
    ps = [("a",), (".pad", "5"), ("b",), (".pad", "5"), (".pad", "5")]
    pads = [False, True, False, True, True]
    assert paths.resolve_duplicates(ps, pads, [1, 5, 1, 5, 5], _where(5)) == ps
    got = paths.resolve_duplicates([(".pad", "5"), (".pad", "5")], [True, True], [5, 6], _where(2))
    assert got == [(".pad", "5"), (".pad", "5.1")]


def test_symlink_targets_stay_inside_the_torrent() -> None:
    files: set[tuple[str, ...]] = {("d", "f"), ("l",), ("d", "l2")}
    dirs: set[tuple[str, ...]] = {("d",)}
    assert paths.symlink_target([b"d", b"f"], ("l",), files, dirs) == ("d", "f")
    assert paths.symlink_target([b"d"], ("l",), files, dirs) == ("d",)
    assert paths.symlink_target([b"f"], ("d", "l2"), files, dirs) == ("d", "f")  # from the link's directory
    assert paths.symlink_target([b"..", b"d", b"f"], ("l",), files, dirs) == ("d", "f")  # '..' dropped
    assert paths.symlink_target([b"/etc/passwd"], ("l",), files, dirs) is None
    assert paths.symlink_target([b"..", b"..", b"etc"], ("l",), files, dirs) is None
    assert paths.symlink_target([b"l"], ("l",), files, dirs) is None
    assert paths.symlink_target([], ("l",), files, dirs) is None
