"""What a plain download does not use is not imported.

The DHT's and uTP's modules load only when they are enabled: a download with ``--no-dht
--no-utp`` (and every test, benchmark and demo run) would otherwise pay for importing them
at start-up, about 15 ms of a download's fixed part. A whole download of a ``.torrent``
with those flags (in a fresh interpreter, as a user's process starts) loads none of the
modules below either: each is only reached by a feature that download does not use.
"""

from __future__ import annotations

import socket
from pathlib import Path

from tests.processes import last_line_of
from torrent.engine import peer
from torrent.proto import bencoding, ut_metadata

#: Modules that only a running DHT node or uTP socket needs.
ON_DEMAND = (
    "torrent.engine.dht_node",
    "torrent.engine.dht_source",
    "torrent.engine.utp_socket",
    "torrent.proto.dht",
    "torrent.proto.utp",
)

#: Modules a download of a .torrent file with the DHT, uTP and web seeds unused never needs.
NOT_FOR_A_PLAIN_DOWNLOAD = (
    *ON_DEMAND,
    # the UDP sockets (and ctypes, for recvmmsg): only the DHT and uTP use them
    "torrent.engine.udp",
    "torrent.engine.udp_mmsg",
    "ctypes",
    # an HTTP date in a web seed's Retry-After
    "email.utils",
    # a magnet link on the command line
    "torrent.proto.magnet",
    # BEP 15: only a udp:// tracker needs its packets
    "torrent.proto.tracker_codec_udp",
    # BEP 9: only a peer asking for the metadata (a magnet link's downloader)
    "torrent.proto.ut_metadata",
    # the choker's first round, choke_interval_s (10 s) after the start
    "torrent.proto.choker",
)


def test_the_engine_imports_neither_the_dht_nor_utp() -> None:
    script = (
        "import sys\n"
        "import torrent.engine.session, torrent.engine.swarm, torrent.engine.host\n"
        "import torrent.engine.utp_dial, torrent.engine.peer_exchange\n"
        f"print('LOADED', sorted(m for m in {ON_DEMAND!r} if m in sys.modules))\n"
    )
    assert last_line_of(script) == "LOADED []"


def test_a_plain_download_imports_only_what_it_uses(tmp_path: Path) -> None:
    # One HTTP tracker on a loopback port nobody listens on, and no peer: the download
    # starts, checks the (absent) data, announces (refused), finds no peer and gives up
    # after --timeout.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    info = {b"name": b"one.bin", b"length": 1 << 16, b"piece length": 1 << 16, b"pieces": bytes(20)}
    announce = f"http://127.0.0.1:{closed_port}/announce".encode()
    torrent = tmp_path / "one.torrent"
    torrent.write_bytes(bencoding.encode({b"announce": announce, b"info": info}))
    argv = [
        "download",
        str(torrent),
        "-o",
        str(tmp_path / "out"),
        "--no-seed",
        "--json",
        "--no-dht",
        "--no-lsd",
        "--no-port-mapping",
        "--no-utp",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--timeout",
        "0.1",
    ]
    script = (
        "import sys\n"
        "from cli.main import main\n"
        f"code = main({argv!r})\n"
        f"print('EXIT', code, 'LOADED', sorted(m for m in {NOT_FOR_A_PLAIN_DOWNLOAD!r} if m in sys.modules))\n"
    )
    assert last_line_of(script) == "EXIT 1 LOADED []"


def test_the_peer_offers_bep_9_under_its_name() -> None:
    # peer.py names the extension without importing its codec
    assert peer.UT_METADATA == ut_metadata.EXTENSION_NAME
