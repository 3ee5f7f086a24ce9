"""The daemon's network settings under their Transmission names: ``peer-port``,
``encryption``, ``dht-enabled``, ``pex-enabled``, ``lpd-enabled``, ``utp-enabled``.

``session-set`` applies them to the running session (:func:`apply`: the engine rebinds
its listeners, starts or stops the DHT, LSD and uTP, changes the encryption policy of new
connections) and the daemon keeps them in its state store; at the next start they are
where the session starts from (:func:`startup_settings`), over the command line's.

Transmission's encryption names map to ours: ``required`` is ``require``, ``preferred``
``prefer``, and ``tolerated`` (plaintext first) is ``off``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from torrent.config import Encryption, Settings
from torrent.engine.session import Session

__all__ = ["ENCRYPTION_NAMES", "NETWORK_KEYS", "apply", "parse", "startup_settings", "values"]

#: Transmission's names for the encryption settings.
ENCRYPTION_NAMES = {
    Encryption.REQUIRE: "required",
    Encryption.PREFER: "preferred",
    Encryption.OFF: "tolerated",
}
_ENCRYPTION_BY_NAME = {name: mode for mode, name in ENCRYPTION_NAMES.items()}

#: The keys, with the :class:`~torrent.config.Settings` field each one sets.
NETWORK_KEYS = {
    "peer-port": "listen_port",
    "encryption": "encryption",
    "dht-enabled": "dht_enabled",
    "pex-enabled": "pex_enabled",
    "lpd-enabled": "lsd_enabled",
    "utp-enabled": "utp_enabled",
}


def parse(values: Mapping[str, Any]) -> dict[str, Any]:
    """The network keys of ``session-set`` arguments, checked (the others are left out).

    Raises:
        ValueError: a value of the wrong type or out of range, naming its key.
    """
    out: dict[str, Any] = {}
    for key in NETWORK_KEYS:
        if key not in values:
            continue
        value = values[key]
        if key == "peer-port":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
                raise ValueError(f"'peer-port' must be a port number (0-65535), not {value!r}")
        elif key == "encryption":
            if value not in _ENCRYPTION_BY_NAME:
                raise ValueError(
                    f"'encryption' must be one of {', '.join(_ENCRYPTION_BY_NAME)}, not {value!r}"
                )
        elif not isinstance(value, bool):
            raise ValueError(f"'{key}' must be true or false")
        out[key] = value
    return out


def values(session: Session) -> dict[str, Any]:
    """What ``session-get`` reports of them: what applies now."""
    s = session.settings
    return {
        "peer-port": session.port,
        "encryption": ENCRYPTION_NAMES[Encryption(s.encryption)],
        "dht-enabled": s.dht_enabled,
        "pex-enabled": s.pex_enabled,
        "lpd-enabled": s.lsd_enabled,
        "utp-enabled": s.utp_enabled,
    }


async def apply(session: Session, changes: Mapping[str, Any], done: dict[str, Any]) -> None:
    """Apply :func:`parse`'s result to the running session, the port first; each key
    that took effect goes into ``done`` (to be stored), also when a later one fails.

    Raises:
        OSError: the port cannot be bound (nothing was changed), or a UDP socket for the
            DHT or uTP could not be opened (what came before it was applied).
    """
    port = changes.get("peer-port")
    if port is not None and port != session.port:
        await session.set_listen_port(port)
    if port is not None:
        done["peer-port"] = port
    if "encryption" in changes:
        session.set_encryption(_ENCRYPTION_BY_NAME[changes["encryption"]])
        done["encryption"] = changes["encryption"]
    if "pex-enabled" in changes:
        session.set_pex_enabled(changes["pex-enabled"])
        done["pex-enabled"] = changes["pex-enabled"]
    for key, switch in (
        ("lpd-enabled", session.set_lsd_enabled),
        ("dht-enabled", session.set_dht_enabled),
        ("utp-enabled", session.set_utp_enabled),
    ):
        if key in changes:
            await switch(changes[key])
            done[key] = changes[key]


def startup_settings(settings: Settings, stored: Mapping[str, Any], state_dir: str) -> Settings:
    """``settings`` with the network keys a ``session-set`` stored applied over them (a
    stored value that no longer parses is skipped). The DHT's routing table is kept in
    ``state_dir`` (unless the settings name a file) even when the DHT starts off: a
    ``session-set`` may turn it on, and the next start then joins from that table."""
    changes: dict[str, Any] = {}
    if not settings.dht_state_file:
        changes["dht_state_file"] = os.path.join(state_dir, "dht.state")
    for key, field in NETWORK_KEYS.items():
        if key not in stored:
            continue
        try:
            value = parse({key: stored[key]})[key]
        except ValueError:
            continue
        if key == "encryption":
            value = _ENCRYPTION_BY_NAME[value]
        if key == "peer-port" and settings.listen_interfaces:
            changes["listen_interfaces"] = tuple((host, value) for host, _ in settings.listen_interfaces)
            continue
        changes[field] = value
    return dataclasses.replace(settings, **changes)
