"""Whether a tracker URL can be announced to, without loading the tracker codec.

Kept apart from :mod:`torrent.proto.tracker_codec` so that reading a torrent (which
checks its tracker URLs) does not pay for importing the announce and UDP codecs; the
codec re-exports both names.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["TRACKER_SCHEMES", "tracker_url_problem"]

#: Tracker URL schemes the client announces to.
TRACKER_SCHEMES = ("http", "https", "udp")


def tracker_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be announced to (one line naming the URL), or None when it can.

    Catches what would otherwise blow up deep in a URL parser: an unclosed IPv6
    bracket (``http://[::1``), a port outside 1-65535 (``udp://host:99999``), a
    UDP URL without a port, no host, an unsupported scheme.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{url!r}: malformed URL ({exc})"
    scheme = parts.scheme.lower()
    if scheme not in TRACKER_SCHEMES:
        return f"{url!r}: unsupported tracker scheme {scheme!r} (expected http, https or udp)"
    if not parts.hostname:
        return f"{url!r}: no host"
    if port == 0:
        return f"{url!r}: port 0"
    if scheme == "udp" and port is None:
        return f"{url!r}: a UDP tracker URL needs a port"
    return None
