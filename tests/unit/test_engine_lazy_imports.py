"""The DHT's and uTP's modules load only when they are enabled.

A download with ``--no-dht --no-utp`` (and every test, benchmark and demo run) would
otherwise pay for importing them at start-up: about 15 ms of a download's fixed part.
"""

from __future__ import annotations

from tests.processes import last_line_of

#: Modules that only a running DHT node or uTP socket needs.
ON_DEMAND = (
    "torrent.engine.dht_node",
    "torrent.engine.dht_source",
    "torrent.engine.utp_socket",
    "torrent.proto.dht",
    "torrent.proto.utp",
)


def test_the_engine_imports_neither_the_dht_nor_utp() -> None:
    script = (
        "import sys\n"
        "import torrent.engine.session, torrent.engine.swarm, torrent.engine.host\n"
        "import torrent.engine.utp_dial, torrent.engine.peer_exchange\n"
        f"print('LOADED', sorted(m for m in {ON_DEMAND!r} if m in sys.modules))\n"
    )
    assert last_line_of(script) == "LOADED []"
