"""The nasty corpus torrents, downloaded: files land at their sanitised paths, inside.

Each case writes every piece of a crafted torrent (``fixtures/corpus/``) through
:class:`FileStorage`, reads it back, checks every piece's hash, and then walks the
whole sandbox: exactly the expected files exist, all below the content directory,
and nothing else was created or changed anywhere around it. BEP 47 symlinks that
name a file of the torrent become relative links inside it; the rest empty files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

from torrent.disk.storage import FileStorage
from torrent.errors import StorageError
from torrent.proto.metainfo import Metainfo

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def _make_fixtures() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKE = _make_fixtures()

NASTY = [
    "absolute_filename",
    "backslash_path",
    "duplicate_files",
    "empty_path_multi",
    "hidden_parent_path",
    "invalid_directory_name",
    "invalid_filename2",
    "invalid_name2",
    "long_name",
    "pad_file_no_path",
    "parent_path",
    "slash_path2",
    "slash_path3",
    "symlink_filtered_path",
    "symlink_zero_size",
    "case_duplicates",
    "control_characters",
]


def _tree(root: Path) -> dict[str, str]:
    """Every entry under ``root``: relative path -> 'dir', 'link:<target>' or 'file:<size>'."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = f"link:{os.readlink(p)}"
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = f"file:{p.stat().st_size}"
    return out


@pytest.mark.parametrize("case", NASTY)
def test_nasty_torrent_lands_at_sanitised_paths_inside_the_download_directory(
    case: str, tmp_path: Path
) -> None:
    data, payload = MAKE.corpus_torrent(case)
    meta = Metainfo.from_bytes(data)
    info = meta.info
    # Bait around the download directory: nothing may touch it.
    sandbox = tmp_path / "sandbox"
    download = sandbox / "deep" / "down"
    download.mkdir(parents=True)
    for bait in (tmp_path / "bar", sandbox / "bar", sandbox / "deep" / "bar", tmp_path / "etc"):
        bait.write_bytes(b"bait")
    before = _tree(tmp_path)

    storage = FileStorage(info, download, info_hash=meta.info_hash)
    try:
        storage.allocate()
        for piece in range(info.num_pieces):
            start = piece * info.piece_length
            storage.write_block(piece, 0, payload[start : start + info.piece_size(piece)])
        storage.sync()
        for piece in range(info.num_pieces):
            assert hashlib.sha1(storage.read_piece(piece)).digest() == info.piece_hash(piece)
    finally:
        storage.close()

    after = _tree(tmp_path)
    created = {k: v for k, v in after.items() if k not in before}
    assert before == {k: after.get(k) for k in before}, "something outside was changed"
    inside = f"sandbox/deep/down/{info.disk_name}"
    state = "sandbox/deep/down/.pytorrent"
    assert all(k in (inside, state) or k.startswith((inside + "/", state + "/")) for k in created), sorted(
        created
    )

    expected: dict[str, str] = {}
    for f in info.files:
        if f.padding:
            continue
        rel = inside if not info.multi_file else "/".join((inside, *f.disk_path))
        if f.symlink is not None:
            target = os.path.join(tmp_path, inside, *f.symlink)
            expected[rel] = f"link:{os.path.relpath(target, os.path.dirname(os.path.join(tmp_path, rel)))}"
        else:
            expected[rel] = f"file:{f.length}"
    files = {k: v for k, v in created.items() if v != "dir" and not k.startswith(state)}
    assert files == expected
    for rel, kind in expected.items():
        if kind.startswith("link:"):
            real = os.path.realpath(tmp_path / rel)
            assert real.startswith(str(tmp_path / inside) + os.sep)


def test_the_escaping_symlinks_are_plain_empty_files(tmp_path: Path) -> None:
    data, _ = MAKE.corpus_torrent("symlink_filtered_path")
    info = Metainfo.from_bytes(data).info
    storage = FileStorage(info, tmp_path)
    storage.allocate()
    storage.close()
    root = tmp_path / info.disk_name
    assert not (root / "a" / "escape").is_symlink() and (root / "a" / "escape").stat().st_size == 0
    assert not (root / "a" / "_" / "abs").is_symlink()
    assert os.readlink(root / "a" / "good") == "bar"


def test_a_planted_link_does_not_let_a_symlink_entry_out(tmp_path: Path) -> None:
    data, _ = MAKE.corpus_torrent("symlink_zero_size")
    info = Metainfo.from_bytes(data).info
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "dl" / info.disk_name
    (root / "a").mkdir(parents=True)
    os.symlink(outside, root / "a" / "b")  # someone planted a link where a directory goes
    storage = FileStorage(info, tmp_path / "dl")
    with pytest.raises(StorageError, match="outside"):
        storage.allocate()
    storage.close()
    assert list(outside.iterdir()) == []
