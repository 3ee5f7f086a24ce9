"""v2 and hybrid torrents (BEP 52) made by libtorrent parse here with libtorrent's hashes,
file lists (padding included), offsets, roots and piece hashes.

No network: libtorrent only creates and parses torrents here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cli.main import main
from tests.lt_create import lt, lt_create, lt_info
from torrent.proto import merkle
from torrent.proto.magnet import Magnet
from torrent.proto.metainfo import Metainfo, PieceCheck


def _check_same(data: bytes, payload: Path) -> Metainfo:
    m = Metainfo.from_bytes(data)
    ti = lt_info(data)
    fs = ti.layout()
    hashes = ti.info_hashes()
    assert m.info_hash_v2 is not None
    assert str(hashes.v2) == m.info_hash_v2.hex()
    if hashes.has_v1():
        assert m.info_hash == m.info_hash_v1 == bytes.fromhex(str(hashes.v1))
        assert m.info.has_v1
    else:
        assert m.info_hash_v1 is None
        assert m.info_hash == m.info_hash_v2[:20]
    assert m.meta_version == 2
    assert ti.num_pieces() == m.info.num_pieces
    assert ti.piece_length() == m.info.piece_length
    theirs = [
        (
            fs.file_path(i),
            fs.file_size(i),
            fs.file_offset(i),
            bool(fs.file_flags(i) & fs.flag_pad_file),
            bytes(fs.root(i).to_bytes()),
        )
        for i in range(fs.num_files())
    ]
    ours = [
        (
            os.path.join(m.info.name, *f.path) if m.info.multi_file else f.path[0],
            f.length,
            f.offset,
            f.padding,
            f.pieces_root or bytes(32),
        )
        for f in m.info.files
    ]
    # libtorrent pads a v2 torrent's last file up to a piece boundary in its own file
    # list; that tail holds no data and changes no piece's hash, so we leave it out.
    tail = 0
    if len(theirs) == len(ours) + 1 and theirs[-1][3]:
        tail = theirs.pop()[1]
    assert ours == theirs
    assert ti.total_size() == m.info.total_length + tail
    _check_pieces(m, payload)
    return m


def _check_pieces(m: Metainfo, payload: Path) -> None:
    """Every piece of the real data passes (both hashes of a hybrid); a flipped byte fails."""
    files = [f for f in m.info.files if not f.padding]
    data = bytearray(m.info.total_length)
    for f in files:
        src = payload if not m.info.multi_file else payload.joinpath(*f.path)
        data[f.offset : f.offset + f.length] = src.read_bytes()
    pl = m.info.piece_length
    for i in range(m.info.num_pieces):
        piece = bytes(data[i * pl : i * pl + m.info.piece_size(i)])
        assert m.info.check_piece(i, piece) is PieceCheck.PASSED, i
        bad = bytearray(piece)
        bad[0] ^= 1
        assert m.info.check_piece(i, bytes(bad)) is PieceCheck.FAILED


def _tree(root: Path, sizes: dict[str, int]) -> Path:
    for name, size in sizes.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size))
    return root


SIZES = [1, 16383, 16384, 16385, 65535, 65536, 65537, 200_001]
PIECES = [16384, 32768, 65536, 2**20, 4 * 2**20]


@pytest.mark.parametrize("fmt", ["v2", "hybrid"])
@pytest.mark.parametrize("piece_length", PIECES)
@pytest.mark.parametrize("size", SIZES)
def test_single_file(tmp_path: Path, fmt: str, piece_length: int, size: int) -> None:
    f = tmp_path / "one file.bin"
    f.write_bytes(os.urandom(size))
    m = _check_same(lt_create(f, fmt, piece_length), f)
    assert not m.info.multi_file


@pytest.mark.parametrize("fmt", ["v2", "hybrid"])
@pytest.mark.parametrize("piece_length", PIECES)
def test_many_files_with_empty_ones(tmp_path: Path, fmt: str, piece_length: int) -> None:
    d = _tree(
        tmp_path / "many",
        {
            "a.txt": 1,
            "b/c/d.bin": 40_000,
            "b/empty": 0,
            "b/x-y": 16_384,
            "ünï/日本.txt": 777,
            "z/last.bin": 300_003,
            "zz/empty too": 0,
            "a.b": 65_536,
        },
    )
    m = _check_same(lt_create(d, fmt, piece_length), d)
    assert [f.path for f in m.info.files if not f.padding][:2] == [("a.b",), ("a.txt",)]


def test_one_file_in_a_directory_is_multi_file(tmp_path: Path) -> None:
    d = _tree(tmp_path / "dir", {"only/x.bin": 50_000})
    m = _check_same(lt_create(d, "v2", 16384), d)
    assert m.info.multi_file


@pytest.mark.parametrize("fmt", ["v2", "hybrid"])
def test_piece_layers_match_the_trees(tmp_path: Path, fmt: str) -> None:
    d = _tree(tmp_path / "layers", {"big.bin": 1_000_000, "small.bin": 20_000})
    m = _check_same(lt_create(d, fmt, 65536), d)
    big = next(f for f in m.info.files if f.path == ("big.bin",))
    layer = m.info.piece_layers[big.pieces_root]
    assert len(layer) == 32 * 16
    leaves = merkle.block_hashes((d / "big.bin").read_bytes())
    tree = merkle.MerkleTree(leaves, merkle.next_pow2(len(leaves)))
    assert tree.root == big.pieces_root
    assert b"".join(tree.layer(2)) == layer


@pytest.mark.parametrize("fmt", ["v2", "hybrid"])
def test_libtorrents_magnet_links_parse_with_both_hashes(tmp_path: Path, fmt: str) -> None:
    d = _tree(tmp_path / "mag", {"x.bin": 70_000, "y.bin": 3})
    data = lt_create(d, fmt, 16384)
    m = Metainfo.from_bytes(data)
    link = Magnet.parse(lt.make_magnet_uri(lt_info(data)))
    assert link.info_hash_v2 == m.info_hash_v2
    assert link.info_hash == m.info_hash
    assert link.v2_only == (fmt == "v2")


@pytest.mark.parametrize("fmt", ["v2", "hybrid"])
def test_info_json_shows_both_hashes_and_no_padding(
    tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _tree(tmp_path / "shown", {"x.bin": 70_000, "y/z.bin": 3, "e": 0})
    data = lt_create(d, fmt, 16384)
    path = tmp_path / "t.torrent"
    path.write_bytes(data)
    ti = lt_info(data)
    assert main(["info", "--json", str(path)]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["meta_version"] == 2
    assert facts["info_hash_v2"] == str(ti.info_hashes().v2)
    assert facts["info_hash"] == (None if fmt == "v2" else str(ti.info_hashes().v1))
    assert [f["path"] for f in facts["files"]] == [["e"], ["x.bin"], ["y", "z.bin"]]
    assert facts["total_size"] == 70_003
    assert facts["padding"]["files"] == (1 if fmt == "v2" else 2)
    assert Magnet.parse(facts["magnet"]).info_hash_v2 == bytes.fromhex(facts["info_hash_v2"])
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert facts["info_hash_v2"] in text
    assert ("none (v2 only)" in text) == (fmt == "v2")


def test_info_json_of_a_btmh_magnet(capsys: pytest.CaptureFixture[str]) -> None:
    v2 = "cd" * 32
    assert main(["info", "--json", f"magnet:?xt=urn:btmh:1220{v2}"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["info_hash"] is None
    assert facts["info_hash_v2"] == v2
