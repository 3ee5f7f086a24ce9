"""Every fixture judged against libtorrent in the same run: what it loads we load, alike.

For each ``.torrent`` under ``fixtures/`` (the reference torrents, the crafted cases of
libtorrent's corpus, the repaired and the malformed ones), libtorrent's
``torrent_info`` and our ``Metainfo`` must agree:

* libtorrent refuses it → we raise :class:`MetainfoError`;
* libtorrent loads it → we load it with the same info hash, and the same files
  (sanitised path and size, padding files left out) in the same order; a BEP 47
  symlink is a link with the same target exactly when libtorrent's target is not the
  link itself (libtorrent's way of disabling a link that points elsewhere).

``DIFFERENCES`` names the cases where we differ on purpose, and why.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torrent.errors import MetainfoError
from torrent.proto import bencoding
from torrent.proto.metainfo import Metainfo

lt = pytest.importorskip("libtorrent")

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
ALL = sorted(
    str(p.relative_to(FIXTURES))
    for sub in ("", "corpus", "repaired", "malformed")
    for p in (FIXTURES / sub).glob("*.torrent")
)

#: Fixtures where we deliberately do not do what libtorrent does: fixture -> what we do
#: instead (the file list we give, or None when we refuse the torrent).
DIFFERENCES: dict[str, list[tuple[str, int]] | None] = {
    # libtorrent renames the file 'a' to 'a.1' because 'a' is also the directory of
    # 'a/b'. That silently moves a file the torrent's maker named; the torrent
    # describes no layout any file system can hold, so we refuse it at load and name
    # both files.
    "corpus/file_and_directory.torrent": None,
    # libtorrent renames the second 'a.txt' to 'a.1.txt' but then leaves the third
    # file, really named 'a.1.txt', where it is: two files at one path, writing over
    # each other. We number the third again, so no two files ever share a path.
    "corpus/rename_clash.torrent": [("temp/a.txt", 5), ("temp/a.1.txt", 6), ("temp/a.1.1.txt", 7)],
}
# Also (no fixture; the random test below meets it): a torrent whose every file is a
# padding file (BEP 47 'p', or BitComet's '_____padding_file_' names) loads in
# libtorrent as a torrent with nothing to write; we refuse it, as before, since there
# is nothing to download or seed.


def _lt_load(data: bytes) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return lt.torrent_info(data)


def test_the_corpus_cases_are_all_there() -> None:
    names = {Path(n).stem for n in ALL if n.startswith("corpus/")}
    assert names >= {
        "absolute_filename",
        "backslash_path",
        "duplicate_files",
        "empty_path",
        "empty_path_multi",
        "hidden_parent_path",
        "invalid_directory_name",
        "invalid_filename",
        "invalid_filename2",
        "invalid_name2",
        "long_name",
        "pad_file_no_path",
        "parent_path",
        "slash_path",
        "slash_path2",
        "slash_path3",
        "symlink_filtered_path",
        "large_piece_size",
        "symlink_zero_size",
    }


@pytest.mark.parametrize("name", ALL)
def test_fixture_loads_here_exactly_as_in_libtorrent(name: str) -> None:
    data = (FIXTURES / name).read_bytes()
    try:
        ti = _lt_load(data)
    except RuntimeError:
        with pytest.raises(MetainfoError):
            Metainfo.from_bytes(data)
        return
    if name in DIFFERENCES and DIFFERENCES[name] is None:
        with pytest.raises(MetainfoError):
            Metainfo.from_bytes(data)
        return

    meta = Metainfo.from_bytes(data)
    assert meta.info_hash.hex() == str(ti.info_hashes().v1)  # type: ignore[attr-defined]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        fs = ti.files()  # type: ignore[attr-defined]
    pad = lt.file_storage.flag_pad_file
    theirs = [(fs.file_path(i), fs.file_size(i)) for i in range(fs.num_files()) if not fs.file_flags(i) & pad]
    info = meta.info

    def on_disk(parts: tuple[str, ...]) -> str:
        return "/".join((info.disk_name, *parts)) if info.multi_file else info.disk_name

    ours = [(on_disk(f.disk_path), f.length) for f in info.files if not f.padding]
    if name in DIFFERENCES:
        assert ours == DIFFERENCES[name] != theirs
    else:
        assert ours == theirs
    assert info.disk_name == ti.name()  # type: ignore[attr-defined]

    links = {
        fs.file_path(i): fs.symlink(i)
        for i in range(fs.num_files())
        if fs.file_flags(i) & lt.file_storage.flag_symlink
    }
    for f in info.files:
        path = on_disk(f.disk_path)
        if f.symlink is not None:
            assert links[path] == on_disk(f.symlink)
        elif path in links:
            assert links[path] == path, f"{path}: libtorrent keeps a link to {links[path]}"


def test_file_and_directory_refusal_names_both_files() -> None:
    with pytest.raises(MetainfoError) as err:
        Metainfo.from_bytes((FIXTURES / "corpus" / "file_and_directory.torrent").read_bytes())
    assert err.value.field == "info.files[0].path"
    assert "'a'" in str(err.value)
    assert "'a/b'" in str(err.value)


_component = st.one_of(
    st.sampled_from(
        [
            b"..",
            b".",
            b"",
            b"/",
            b"\\",
            b"/etc",
            b"C:",
            b"a",
            b"A",
            b"a.txt",
            b"A.TXT",
            b"a.1.txt",
            b"x" * 250 + b".ext",
            b"y" * 300,
            b"a\x00b",
            b"\xff\xfe",
            b"\xe2\x80\xaeevil",
            b"\x1b[2J",
            b"_____padding_file_1",
        ]
    ),
    st.binary(max_size=12),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.lists(_component, min_size=1, max_size=3), st.sampled_from([b"", b"x", b"h"])),
        min_size=1,
        max_size=6,
    ),
    _component,
)
def test_random_hostile_file_lists_load_alike(entries: list[tuple[list[bytes], bytes]], name: bytes) -> None:
    files = [{b"length": 1 + i, b"path": path, b"attr": attr} for i, (path, attr) in enumerate(entries)]
    total = sum(f[b"length"] for f in files)  # type: ignore[misc]
    info = {
        b"name": name,
        b"piece length": 16384,
        b"pieces": b"\x00" * 20 * -(-total // 16384),
        b"files": files,
    }
    data = bencoding.encode({b"info": info})
    try:
        ti = _lt_load(data)
    except RuntimeError:
        with pytest.raises(MetainfoError):
            Metainfo.from_bytes(data)
        return
    try:
        meta = Metainfo.from_bytes(data)
    except MetainfoError as exc:
        refusal: MetainfoError | None = exc
    else:
        refusal = None
    if refusal is not None:
        # The two refusals libtorrent does not share (see DIFFERENCES).
        assert "is also the directory of" in str(refusal) or "every file is a padding file" in str(refusal)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        fs = ti.files()  # type: ignore[attr-defined]
    pad = lt.file_storage.flag_pad_file
    theirs = [(fs.file_path(i), fs.file_size(i)) for i in range(fs.num_files()) if not fs.file_flags(i) & pad]
    ours = [
        ("/".join((meta.info.disk_name, *f.disk_path)), f.length) for f in meta.info.files if not f.padding
    ]
    if len({p.lower() for p, _ in theirs}) < len(theirs):
        # libtorrent left two files at one path (see rename_clash in DIFFERENCES); we
        # never do, and everything else agrees.
        assert len({p.lower() for p, _ in ours}) == len(ours)
        assert [n for _, n in ours] == [n for _, n in theirs]
        return
    assert ours == theirs
