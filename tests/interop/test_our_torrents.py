"""Matrix row "it loads a torrent made by ``pytorrent create``".

Each client is given a torrent that ``pytorrent create`` made from a multi-file payload
(odd sizes, files straddling pieces, a nested directory), pointed at the payload on disk.
The cell passes when the info hash the client's own API reports equals the one
``pytorrent create`` printed (and our ``Metainfo`` computes), and the client then checks
the data against our piece hashes and ends up seeding it: every hash we wrote is right.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.conftest import StartPeer
from tests.interop.ours import pytorrent_create
from tests.interop.peers import make_payload
from torrent.disk.torrent_file import read_metainfo

pytestmark = [pytest.mark.interop, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

SIZES = {"a.bin": 1_000_003, "sub/b.bin": 333_333, "sub/deeper/c.txt": 17, "z.bin": 65_536}


@pytest.mark.parametrize("client", ["libtorrent", "transmission", "aria2", "qbittorrent"])
async def test_it_loads_our_torrent(client: str, start_peer: StartPeer, tmp_path: Path) -> None:
    top = make_payload(tmp_path / "data", "ours", SIZES)
    torrent = tmp_path / "ours.torrent"
    printed = pytorrent_create(top, torrent, trackers=("http://127.0.0.1:9/announce",), piece_length="32K")
    meta = read_metainfo(torrent)
    assert meta.info_hash.hex() == printed

    peer = await start_peer(client)
    reported = await peer.add(torrent, tmp_path / "data", seed=True)
    assert reported == printed, f"{client} says {reported}, pytorrent create said {printed}"
    # Seeding means the client hashed our payload against our piece hashes and found all good.
    await peer.wait_seeding(reported, timeout_s=45)
    st = await peer.state(reported)
    assert st.progress == 1.0

    if client == "libtorrent":
        import libtorrent as lt

        ti = lt.torrent_info(str(torrent))
        files = ti.files()
        theirs = [
            (files.file_path(i).replace("\\", "/"), files.file_size(i)) for i in range(files.num_files())
        ]
        assert theirs == [(f"ours/{f.path_str}", f.length) for f in meta.info.files]
        assert ti.piece_length() == meta.info.piece_length == 32 * 1024
