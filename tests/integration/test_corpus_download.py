"""The nasty corpus torrents, downloaded: files land at their sanitised paths, inside.

Each case writes every piece of a crafted torrent (``fixtures/corpus/``) through
:class:`FileStorage`, reads it back, checks every piece's hash, and then walks the
whole sandbox: exactly the expected files exist, all below the content directory,
and nothing else was created or changed anywhere around it. BEP 47 symlinks that
name a file of the torrent become relative links inside it; the rest empty files.
"""

from __future__ import annotations

import asyncio
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
    assert spec is not None
    assert spec.loader is not None
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
    assert not (root / "a" / "escape").is_symlink()
    assert (root / "a" / "escape").stat().st_size == 0
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


@pytest.mark.parametrize(
    "case", ["parent_path", "invalid_name2", "pad_file_no_path", "symlink_filtered_path"]
)
async def test_seed_to_leech_of_a_nasty_torrent_stays_inside(case: str, tmp_path: Path) -> None:
    from torrent import config
    from torrent.engine.session import Session

    data, payload = MAKE.corpus_torrent(case)
    meta = Metainfo.from_bytes(data)
    info = meta.info
    seed_dir, leech_dir = tmp_path / "seed", tmp_path / "box" / "leech"
    leech_dir.mkdir(parents=True)
    (tmp_path / "box" / "bar").write_bytes(b"bait")
    storage = FileStorage(info, seed_dir, info_hash=meta.info_hash)
    storage.allocate()
    for piece in range(info.num_pieces):
        start = piece * info.piece_length
        storage.write_block(piece, 0, payload[start : start + info.piece_size(piece)])
    storage.close()
    before = _tree(tmp_path / "box")

    async with (
        asyncio.timeout(30),
        Session(config.testing_settings()) as seed_s,
        Session(config.testing_settings()) as leech_s,
    ):
        seed = await seed_s.add_torrent(meta, seed_dir)
        await seed.swarm.wait_checked()
        assert seed.statistics().state == "seeding"
        leech = await leech_s.add_torrent(meta, leech_dir, seed=False, peers=[("127.0.0.1", seed_s.port)])
        await leech.wait_complete()

    after = _tree(tmp_path / "box")
    assert {k: after.get(k) for k in before} == before
    created = {k: v for k, v in after.items() if k not in before}
    content = f"leech/{info.disk_name}"
    assert all(
        k.startswith((content + "/", "leech/.pytorrent")) or k in (content, "leech/.pytorrent")
        for k in created
    ), sorted(created)
    for f in info.files:
        if f.padding or f.symlink is not None:
            continue
        got = (leech_dir / info.disk_name).joinpath(*f.disk_path).read_bytes()
        assert got == payload[f.offset : f.offset + f.length]
