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
