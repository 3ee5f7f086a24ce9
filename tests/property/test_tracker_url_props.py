"""Hypothesis: the plain-URL shortcut of ``tracker_url_problem`` agrees with ``urlsplit``.

``tracker_url_problem`` accepts a plain URL without parsing it; for any string, its answer
must be exactly the parsed one, so the shortcut is no looser and no stricter.
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from torrent.proto.tracker_url import _parsed_problem, _plain, tracker_url_problem

#: Pieces a URL is made of, the ones urlsplit treats specially among them.
_PIECES = st.sampled_from(
    [
        "http",
        "https",
        "udp",
        "HTTP",
        "Udp",
        "ftp",
        "://",
        ":/",
        "/",
        ":",
        "?",
        "#",
        "@",
        "[",
        "]",
        "%",
        " ",
        "\t",
        "\n",
        "\r",
        "\x00",
        "\x1f",
        ".",
        "-",
        "_",
        "a",
        "tracker.example",
        "127.0.0.1",
        "::1",
        "0",
        "1",
        "6969",
        "65535",
        "65536",
        "99999",
        "00080",
        "\u0661",  # ARABIC-INDIC DIGIT ONE: isdigit() but not ASCII
        "\u00b2",  # SUPERSCRIPT TWO: isdigit(), int() refuses it
        "é",
        "\uff0e",  # FULLWIDTH FULL STOP: NFKC makes it "."
        "announce",
    ]
)
_URLS = st.lists(_PIECES, max_size=12).map("".join)
_PLAINISH = st.builds(
    "{}://{}{}{}".format,
    st.sampled_from(["http", "https", "udp", "HTTP", "ftp"]),
    st.text("abcXYZ019.-_@[]:% é\t", max_size=12),
    st.sampled_from(["", ":", ":0", ":1", ":80", ":65535", ":65536", ":080", ":\u0661", ":x"]),
    st.sampled_from(["", "/", "/announce", "?a=1", "#f", "/a:b@c[d]", "\t", " "]),
)


@settings(max_examples=3000)
@given(st.one_of(_URLS, _PLAINISH, st.text(max_size=40)))
@example("http://tracker.example:6969/announce")
@example("udp://tracker.example:6969")
@example("udp://tracker.example")
@example("http://host:0/")
@example("http://a:b:80/")
@example("http://ho\tst:80/")
@example("http://host:\u00b2")
def test_plain_shortcut_answers_as_the_parse_does(url: str) -> None:
    assert tracker_url_problem(url) == _parsed_problem(url)
    if _plain(url):
        assert _parsed_problem(url) is None


def test_plain_urls_take_the_shortcut() -> None:
    """What ``pytorrent create -t`` is usually given skips the parse (and its imports)."""
    for url in (
        "http://tracker.example:6969/announce",
        "https://tracker.example/announce?passkey=abc",
        "udp://tracker.example:1337",
        "http://127.0.0.1:1/announce",
    ):
        assert _plain(url)
    for url in ("udp://tracker.example", "http://[::1]:80/", "HTTP://x/", "http://x:0/", " http://x/"):
        assert not _plain(url)
