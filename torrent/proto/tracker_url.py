"""Whether a tracker URL can be announced to, without loading the tracker codec.

Kept apart from :mod:`torrent.proto.tracker_codec` so that reading a torrent (which
checks its tracker URLs) does not pay for importing the announce and UDP codecs; the
codec re-exports both names.

A plain URL (``http://tracker.example:6969/announce``: a lower-case scheme, a host of
letters, digits, dots, dashes and underscores, a port of 1-65535 or none) is accepted
without :mod:`urllib.parse` (and the :mod:`ipaddress` it imports: about 2 ms of
``pytorrent create``); every other URL goes through :func:`urllib.parse.urlsplit`. The
plain check accepts only what that parse accepts (a property test holds the two together).
"""

from __future__ import annotations

__all__ = ["TRACKER_SCHEMES", "tracker_url_problem"]

#: Tracker URL schemes the client announces to.
TRACKER_SCHEMES = ("http", "https", "udp")

#: What a plain URL's host may be made of: nothing that ``urlsplit`` treats specially
#: (``@ [ ] : %``, whitespace and control characters, non-ASCII).
_PLAIN_HOST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")


def tracker_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be announced to (one line naming the URL), or None when it can.

    Catches what would otherwise blow up deep in a URL parser: an unclosed IPv6
    bracket (``http://[::1``), a port outside 1-65535 (``udp://host:99999``), a
    UDP URL without a port, no host, an unsupported scheme.
    """
    if _plain(url):
        return None
    return _parsed_problem(url)


def _plain(url: str) -> bool:
    """``url`` is ``SCHEME://HOST[:PORT]`` then nothing or ``/``, ``?`` or ``#`` and anything,
    with a tracker scheme in lower case, a plain host, and (a port UDP must have) 1-65535."""
    if type(url) is not str:
        return False
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in TRACKER_SCHEMES:
        return False
    end = len(rest)
    for delimiter in "/?#":
        at = rest.find(delimiter, 0, end)
        if at >= 0:
            end = at
    host, colon, port = rest[:end].partition(":")
    if not host or not _PLAIN_HOST.issuperset(host):
        return False
    if not colon:
        return scheme != "udp"
    return port.isascii() and port.isdigit() and 0 < int(port) <= 65535


def _parsed_problem(url: str) -> str | None:
    """:func:`tracker_url_problem` by :func:`urllib.parse.urlsplit`, for any URL."""
    from urllib.parse import urlsplit

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
