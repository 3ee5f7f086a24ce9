"""Settings every libtorrent peer in the tests starts from: loopback only, nothing reaching out.

DHT, local peer discovery, UPnP and NAT-PMP stay off (see INTEROP notes: nothing may leave
the machine); uTP is off because it crawls on loopback; every peer is 127.0.0.1, so
several connections per IP must be allowed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.polling import wait_until

LOOPBACK_ONLY: dict[str, object] = {
    "enable_dht": False,
    "enable_lsd": False,
    "enable_upnp": False,
    "enable_natpmp": False,
    "enable_outgoing_utp": False,
    "enable_incoming_utp": False,
    "allow_multiple_connections_per_ip": True,
}


def loopback_settings(host: str = "127.0.0.1", port: int = 0, **extra: object) -> dict[str, object]:
    """A libtorrent settings dict listening on ``host:port``, plus ``extra`` settings."""
    where = f"[{host}]" if ":" in host else host
    return {"listen_interfaces": f"{where}:{port}", **LOOPBACK_ONLY, **extra}


#: libtorrent's DHT on loopback: no public router, and none of the checks that make it
#: ignore loopback, same-subnet or same-IP nodes (it never puts ``dht_bootstrap_nodes``
#: into its table: introduce nodes with ``session.add_dht_node((host, port))``). Give each
#: libtorrent session its own 127.0.0.x address.
DHT_ON_LOOPBACK: dict[str, object] = {
    "enable_dht": True,
    "dht_bootstrap_nodes": "",
    "dht_restrict_routing_ips": False,
    "dht_restrict_search_ips": False,
    "dht_ignore_dark_internet": False,
    "dht_enforce_node_id": False,
    "dht_prefer_verified_node_ids": False,
}


def dht_loopback_settings(host: str, port: int = 0, **extra: object) -> dict[str, object]:
    """:func:`loopback_settings` with the DHT on, on loopback only (see ``DHT_ON_LOOPBACK``)."""
    return {**loopback_settings(host, port, outgoing_interfaces=host), **DHT_ON_LOOPBACK, **extra}


@contextlib.contextmanager
def lt_session(lt: Any, **settings: object) -> Iterator[Any]:
    """A libtorrent session on 127.0.0.1 (a free port) with :func:`loopback_settings`,
    paused and dropped on exit."""
    session = lt.session(loopback_settings("127.0.0.1", 0, **settings))
    try:
        yield session
    finally:
        session.pause()
        del session


async def lt_listen_port(session: Any) -> int:
    """The port ``session`` listens on, once it does."""
    await wait_until(session.listen_port, timeout_s=10, interval_s=0.02, what="libtorrent to listen")
    return int(session.listen_port())


def lt_add(lt: Any, session: Any, torrent: Path, save_path: Path) -> Any:
    """Add ``torrent`` to ``session`` started (not auto-managed) with PEX, DHT and LSD off."""
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(str(torrent))
    atp.save_path = str(save_path)
    atp.flags &= ~lt.torrent_flags.auto_managed
    atp.flags &= ~lt.torrent_flags.paused
    atp.flags |= lt.torrent_flags.disable_pex | lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd
    return session.add_torrent(atp)
