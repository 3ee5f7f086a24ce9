"""Matrix row "we load a torrent it made": our ``Metainfo`` agrees with the tool that made it.

For each maker, the info hash the tool itself reports (``transmission-show`` for
Transmission and mktorrent, ``torrent_info`` for libtorrent) must equal ours, and so must
the file list (paths, lengths, BEP 47 padding files) and the piece length and count.

aria2 cannot create torrents, and qBittorrent 4.5.2's Web API has no torrent creator
(``/api/v2/torrentcreator`` arrived in 5.0): those cells are not applicable.
These tests start no network peer, so they need no network namespace.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.interop.conftest import need
from tests.interop.peers import make_payload
from torrent.disk.torrent_file import read_metainfo
from torrent.proto.metainfo import Metainfo

pytestmark = pytest.mark.interop

TRACKER = "http://127.0.0.1:6969/announce"
#: Odd sizes so that files straddle piece boundaries; one empty-ish file, one nested.
SIZES = {"a.bin": 300_001, "sub/b.bin": 99_999, "sub/deeper/c.txt": 17, "z.bin": 65_536}

NOT_APPLICABLE = {
    "aria2": "aria2 cannot create torrents",
    "qbittorrent": "qBittorrent 4.5.2 has no torrent creator in its Web API (added in 5.0)",
}


def _show(torrent: Path) -> dict[str, object]:
    """Parse ``transmission-show``: the info hash, piece size and count, file paths."""
    out = subprocess.run(
        ["transmission-show", str(torrent)], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    hash_m = re.search(r"^\s*Hash: ([0-9a-f]{40})$", out, re.M)
    size_m = re.search(r"^\s*Piece Size: ([\d.]+) (KiB|MiB|B)$", out, re.M)
    count_m = re.search(r"^\s*Piece Count: (\d+)$", out, re.M)
    assert hash_m, out
    assert size_m, out
    assert count_m, out
    unit = {"B": 1, "KiB": 1024, "MiB": 1024 * 1024}[size_m.group(2)]
    files_part = out.split("\nFILES\n", 1)[1]
    paths = [re.sub(r" \([^)]*\)$", "", line.strip()) for line in files_part.splitlines() if line.strip()]
    return {
        "info_hash": hash_m.group(1),
        "piece_length": int(float(size_m.group(1)) * unit),
        "num_pieces": int(count_m.group(1)),
        "paths": paths,
    }


def _expect_files_match_disk(meta: Metainfo, top: Path) -> None:
    ours = {"/".join(f.path): f.length for f in meta.info.files if not f.padding}
    disk = {str(p.relative_to(top)): p.stat().st_size for p in top.rglob("*") if p.is_file()}
    assert ours == disk


@pytest.mark.parametrize("maker", ["libtorrent", "transmission", "aria2", "qbittorrent"])
def test_we_load_its_torrent(maker: str, tmp_path: Path) -> None:
    if maker in NOT_APPLICABLE:
        pytest.skip(f"n/a: {NOT_APPLICABLE[maker]}")
    top = make_payload(tmp_path, "payload", SIZES)
    if maker == "libtorrent":
        _check_libtorrent(top, tmp_path, v1_only=False)
    else:
        need("transmission-create")
        out = tmp_path / "t.torrent"
        subprocess.run(
            ["transmission-create", "-o", str(out), "-s", "32", "-t", TRACKER, str(top)],
            capture_output=True,
            timeout=60,
            check=True,
        )
        shown = _show(out)
        meta = read_metainfo(out)
        assert meta.info_hash.hex() == shown["info_hash"]
        assert meta.info.piece_length == shown["piece_length"] == 32 * 1024
        assert meta.info.num_pieces == shown["num_pieces"]
        assert [f"payload/{f.path_str}" for f in meta.info.files] == shown["paths"]
        assert meta.trackers == (TRACKER,)
        _expect_files_match_disk(meta, top)


def test_we_load_a_v1_only_libtorrent_torrent(tmp_path: Path) -> None:
    need("libtorrent")
    top = make_payload(tmp_path, "payload", SIZES)
    _check_libtorrent(top, tmp_path, v1_only=True)


def test_we_load_a_mktorrent_torrent(tmp_path: Path) -> None:
    need("mktorrent")
    need("transmission-create")  # transmission-show is the second opinion on the hash
    top = make_payload(tmp_path, "payload", SIZES)
    out = tmp_path / "m.torrent"
    subprocess.run(
        ["mktorrent", "-l", "15", "-a", TRACKER, "-o", str(out), str(top)],
        capture_output=True,
        timeout=60,
        check=True,
    )
    shown = _show(out)
    meta = read_metainfo(out)
    assert meta.info_hash.hex() == shown["info_hash"]
    assert meta.info.piece_length == shown["piece_length"] == 1 << 15
    assert meta.info.num_pieces == shown["num_pieces"]
    assert not any(f.padding for f in meta.info.files)
    _expect_files_match_disk(meta, top)


def _check_libtorrent(top: Path, tmp_path: Path, *, v1_only: bool) -> None:
    """libtorrent 2.x makes hybrid v1+v2 torrents with BEP 47 pad files by default."""
    import libtorrent as lt

    fs = lt.file_storage()
    lt.add_files(fs, str(top))
    flags = lt.create_torrent.v1_only if v1_only else 0
    ct = lt.create_torrent(fs, 32 * 1024, flags=flags)
    ct.add_tracker(TRACKER)
    lt.set_piece_hashes(ct, str(top.parent))
    data = lt.bencode(ct.generate())
    path = tmp_path / "lt.torrent"
    path.write_bytes(data)

    ti = lt.torrent_info(str(path))
    meta = read_metainfo(path)
    assert meta.info_hash.hex() == str(ti.info_hashes().v1)
    if not v1_only:
        assert ti.info_hashes().has_v2()  # our v1 hash covers the v2 keys as well
    assert meta.info.piece_length == ti.piece_length() == 32 * 1024
    assert meta.info.num_pieces == ti.num_pieces()
    assert meta.info.total_length == ti.total_size()
    st = ti.files()
    theirs = [
        (
            st.file_path(i).replace("\\", "/"),
            st.file_size(i),
            bool(st.file_flags(i) & lt.file_storage.flag_pad_file),
        )
        for i in range(st.num_files())
    ]
    ours = [(f"payload/{f.path_str}", f.length, f.padding) for f in meta.info.files]
    assert ours == theirs
    if not v1_only:
        assert any(pad for _, _, pad in theirs)  # the padding case really is exercised
    for i in range(ti.num_pieces()):
        assert meta.info.piece_hash(i) == ti.hash_for_piece(i)
    _expect_files_match_disk(meta, top)
