"""Settings every libtorrent peer in the tests starts from: loopback only, nothing reaching out.

DHT, local peer discovery, UPnP and NAT-PMP stay off (see INTEROP notes: nothing may leave
the machine); uTP is off because it crawls on loopback; every peer is 127.0.0.1, so
several connections per IP must be allowed.
"""

from __future__ import annotations

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
    return {"listen_interfaces": f"{host}:{port}", **LOOPBACK_ONLY, **extra}


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
