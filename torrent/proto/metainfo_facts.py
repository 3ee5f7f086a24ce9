"""What adding a torrent needs of its metainfo, read without the whole parse when it can be.

A daemon adding a torrent needs a handful of facts (:class:`MetainfoFacts`: the info
hash, the name, the file sizes, whether it has trackers, whether it is private) and
must refuse every torrent :meth:`Metainfo.from_bytes <torrent.proto.metainfo.Metainfo.from_bytes>`
refuses, with the same error. The full parse builds the whole
:class:`~torrent.proto.metainfo.Metainfo` (every file, tracker tier, warning and raw
dict): about 24 µs for the smallest torrent, most of what an add costs besides the
RPC itself.

:meth:`MetainfoFacts.from_bytes` reads the most common shape in one pass over the bytes
(:func:`quick_facts`) and leaves everything else to the full parse. The quick pass
only ever *accepts*: it answers for a torrent that is

* canonical bencoding (BEP 3): one top-level dictionary and nothing after it, every
  dictionary's keys in strictly increasing order, no leading zeros, nesting no deeper
  than :data:`QUICK_DEPTH`;
* v1 and single-file: an ``info`` dictionary with a ``name``, a ``piece length``, whole
  ``pieces`` hashes and a ``length``, and no ``files``, ``file tree``, ``meta version``
  or ``name.utf-8``; no top-level ``encoding``;
* one the full parse accepts (the same checks: sizes, piece count, a usable file
  name, no BitComet padding name);

and returns None for anything else, which then gets the full parse, its answer and its
error. Whenever it answers, it gives what the full parse gives (the property tests hold
it to that over arbitrary and mutated torrents).
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

from torrent.errors import BencodeError, MetainfoError
from torrent.proto import paths
from torrent.proto.metainfo import MAX_FILE_LENGTH, MAX_PIECE_LENGTH, Metainfo, check_file_count
from torrent.proto.tracker_url import tracker_url_problem
from torrent.types import InfoHash

__all__ = ["QUICK_DEPTH", "MetainfoFacts", "quick_facts"]

#: Deepest nesting of a value the quick pass skips over (the full parse allows more).
QUICK_DEPTH = 32

#: A canonical string length (at most 15 digits: longer is no .torrent read here) ...
_LENGTH = re.compile(rb"(0|[1-9][0-9]{0,14}):")
#: ... and a canonical integer (at most 30 digits; ``-0`` is not one).
_INT = re.compile(rb"i(0|-?[1-9][0-9]{0,29})e")

#: ``info`` keys whose torrents the quick pass leaves to the full parse (multi-file,
#: v2, hybrid, a UTF-8 name beside the legacy one).
_INFO_ELSEWHERE = frozenset((b"files", b"file tree", b"meta version", b"name.utf-8"))
#: BitComet's padding files say so only in their name (as in the full parse).
_BITCOMET_PAD = "_____padding_file_"


class MetainfoFacts(NamedTuple):
    """What an add reads of a torrent's metainfo.

    Attributes:
        info_hash: the info hash peers name it by (v1's SHA-1; a v2-only torrent's
            truncated SHA-256).
        name: the torrent's name as shown.
        file_lengths: every file's length, in ``info`` order (padding included).
        total_length: their sum.
        trackers: it has a tracker to announce to.
        private: BEP 27's ``private`` flag.
        v2_alias: a hybrid's truncated v2 info hash (hex), which peers may name too;
            empty otherwise.
    """

    info_hash: InfoHash
    name: str
    file_lengths: tuple[int, ...]
    total_length: int
    trackers: bool
    private: bool
    v2_alias: str = ""

    @classmethod
    def of(cls, meta: Metainfo) -> MetainfoFacts:
        """The facts of a parsed torrent."""
        v2 = meta.info_hash_v2
        alias = v2[:20].hex() if v2 is not None and v2[:20] != meta.info_hash else ""
        return cls(
            meta.info_hash,
            meta.info.name,
            tuple(f.length for f in meta.info.files),
            meta.info.total_length,
            bool(meta.announce_list),
            meta.info.private,
            alias,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> MetainfoFacts:
        """The facts of a .torrent's bytes: those :meth:`Metainfo.from_bytes` gives.

        Raises:
            MetainfoError: what :meth:`Metainfo.from_bytes` raises for ``data``.
        """
        facts = quick_facts(data)
        return facts if facts is not None else cls.of(Metainfo.from_bytes(data))


#: What the full parse turns into a :class:`MetainfoError` (besides that one): the quick
#: pass leaves an input that raises one of these to it.
_PARSE_ERRORS = (MetainfoError, BencodeError, ValueError, TypeError, KeyError, IndexError, OverflowError)


def quick_facts(data: bytes) -> MetainfoFacts | None:
    """The facts of a canonical single-file v1 torrent the full parse accepts, read in one
    pass; None for any other input (see the module doc)."""
    try:
        return _quick_facts(data)
    except _PARSE_ERRORS:
        return None


def _quick_facts(data: bytes) -> MetainfoFacts | None:
    if type(data) is not bytes or data[:1] != b"d":
        return None
    string = _LENGTH.match
    pos = 1
    previous: bytes | None = None
    announce = ""
    urls: list[str] = []
    found: tuple[int, int, bytes, int, bool] | None = None
    while data[pos] != 0x65:  # e (past the end: IndexError, the full parse's case)
        read = _key(data, pos, previous)
        if read is None:
            return None
        key, pos = read
        previous = key
        if key == b"info":
            found = _plain_info(data, pos) or _info(data, pos)
            if found is None:
                return None
            pos = found[1]
        elif key == b"announce":
            m = string(data, pos)
            if m is None:
                return None  # not a string: the full parse refuses it
            pos = m.end() + int(m.group(1))
            announce = data[m.end() : pos].decode("utf-8", errors="replace").strip()
        elif key == b"announce-list" and data[pos : pos + 1] == b"l":
            pos = _tiers(data, pos, urls)
            if pos < 0:
                return None
        elif key == b"encoding":
            return None  # names in a legacy encoding
        else:
            pos = _skip(data, pos)
            if pos < 0:
                return None
    if found is None or pos != len(data) - 1:
        return None
    return _facts(data, found, urls or ([announce] if announce else []))


def _facts(data: bytes, found: tuple[int, int, bytes, int, bool], urls: list[str]) -> MetainfoFacts | None:
    """The facts of a torrent read to its end (``found``: what :func:`_info` read;
    ``urls``: its trackers), once the rest of the full parse's checks pass."""
    check_file_count(data)
    # The full parse checks each tracker's URL (for a warning): what it raises, it raises.
    for url in dict.fromkeys(urls):
        tracker_url_problem(url)
    start, end, name_raw, length, private = found
    info_hash = InfoHash(hashlib.sha1(data[start:end]).digest())
    disk_name = paths.sanitize_name(name_raw, multi_file=False, info_hash_hex=info_hash.hex())
    if disk_name is None or _BITCOMET_PAD in disk_name:
        return None
    name = name_raw.decode("utf-8", errors="replace")
    return MetainfoFacts(info_hash, name, (length,), length, bool(urls), private)


#: The usual single-file ``info`` (what ``create``, mktorrent and libtorrent write for
#: one file), read with three matches instead of a walk: its ``length`` and the length
#: of its ``name`` ...
_PLAIN_HEAD = re.compile(rb"d6:lengthi([1-9][0-9]{0,15})e4:name([1-9][0-9]{0,3}):")
#: ... after the name, its ``piece length`` and the length of its ``pieces`` ...
_PLAIN_PIECES = re.compile(rb"12:piece lengthi([1-9][0-9]{0,9})e6:pieces([1-9][0-9]{0,9}):")
#: ... and after the pieces, a ``private`` flag or none, and the end.
_PLAIN_END = re.compile(rb"(?:7:privatei([01])e)?e")


def _plain_info(data: bytes, pos: int) -> tuple[int, int, bytes, int, bool] | None:
    """:func:`_info` of the usual single-file ``info`` (see :data:`_PLAIN_HEAD`); None
    for any other (which :func:`_info` then reads)."""
    head = _PLAIN_HEAD.match(data, pos)
    if head is None:
        return None
    name_at = head.end()
    pieces = _PLAIN_PIECES.match(data, name_at + int(head.group(2)))
    if pieces is None:
        return None
    size = int(pieces.group(2))
    end = _PLAIN_END.match(data, pieces.end() + size)
    length = int(head.group(1))
    if end is None or size % 20 or not _sizes_pass(length, int(pieces.group(1)), size // 20):
        return None
    return pos, end.end(), data[name_at : name_at + int(head.group(2))], length, end.group(1) == b"1"


def _info(data: bytes, pos: int) -> tuple[int, int, bytes, int, bool] | None:
    """``(start, end, name, length, private)`` of the ``info`` dictionary at ``pos``,
    when it is one the quick pass answers for."""
    if data[pos : pos + 1] != b"d":
        return None
    string, integer = _LENGTH.match, _INT.match
    start = pos
    pos += 1
    previous: bytes | None = None
    name: bytes | None = None
    piece_length = length = piece_count = -1
    private = False
    while data[pos] != 0x65:  # e (past the end: IndexError, the full parse's case)
        read = _key(data, pos, previous)
        if read is None or read[0] in _INFO_ELSEWHERE:
            return None
        key, pos = read
        previous = key
        if key == b"name" or key == b"pieces":
            m = string(data, pos)
            if m is None:
                return None
            size = int(m.group(1))
            if key == b"name":
                name = data[m.end() : m.end() + size]
            elif size % 20:
                return None
            else:
                piece_count = size // 20
            pos = m.end() + size
        elif key == b"length" or key == b"piece length":
            m = integer(data, pos)
            if m is None:
                return None
            if key == b"length":
                length = int(m.group(1))
            else:
                piece_length = int(m.group(1))
            pos = m.end()
        else:
            if key == b"private":
                m = integer(data, pos)
                private = m is not None and m.group(1) == b"1"
            pos = _skip(data, pos)
            if pos < 0:
                return None
    if name is None or not _sizes_pass(length, piece_length, piece_count):
        return None
    return start, pos + 1, name, length, private


def _key(data: bytes, pos: int, previous: bytes | None) -> tuple[bytes, int] | None:
    """The dictionary key at ``pos`` and the offset past it; None when it is not a
    canonical string or does not come after ``previous`` (keys strictly increase)."""
    m = _LENGTH.match(data, pos)
    if m is None:
        return None
    pos = m.end()
    key = data[pos : pos + int(m.group(1))]
    if previous is not None and key <= previous:
        return None
    return key, pos + len(key)


def _sizes_pass(length: int, piece_length: int, piece_count: int) -> bool:
    """The full parse accepts a single file of ``length`` bytes in pieces of
    ``piece_length`` with ``piece_count`` hashes (-1: a value missing)."""
    return (
        0 < piece_length <= MAX_PIECE_LENGTH
        and 0 < length <= MAX_FILE_LENGTH
        and piece_count == -(-length // piece_length)
    )


def _tiers(data: bytes, pos: int, urls: list[str]) -> int:
    """Read the ``announce-list`` at ``pos`` (a list): its tiers' URLs, stripped, the empty
    ones left out, go into ``urls``. The offset past it; -1 when the full parse would
    refuse it or the pass cannot read it."""
    pos += 1
    n = len(data)
    while pos < n and data[pos] != 0x65:
        if data[pos] != 0x6C:  # a tier that is not a list: the full parse ignores it
            pos = _skip(data, pos)
            if pos < 0:
                return -1
            continue
        pos += 1
        while pos < n and data[pos] != 0x65:
            end = _string_end(data, pos)
            if end < 0:
                return -1  # a URL that is not a string: the full parse refuses it
            url = _stripped(data, pos, end)
            if url:
                urls.append(url)
            pos = end
        pos += 1
    return pos + 1 if pos < n else -1


def _stripped(data: bytes, pos: int, end: int) -> str:
    """The string at ``pos`` as the full parse reads a URL: UTF-8 (errors replaced), stripped."""
    return data[data.index(b":", pos) + 1 : end].decode("utf-8", errors="replace").strip()


def _string_end(data: bytes, pos: int) -> int:
    """The offset past the canonical string at ``pos``; -1 when there is none."""
    m = _LENGTH.match(data, pos)
    if m is None:
        return -1
    end = m.end() + int(m.group(1))
    return end if end <= len(data) else -1


def _skip(data: bytes, pos: int) -> int:
    """The offset past the canonical value at ``pos`` (dictionaries with string keys,
    in any order: the full parse reads those the same); -1 when there is none or it
    nests deeper than :data:`QUICK_DEPTH`."""
    n = len(data)
    open_dicts: list[bool] = []  # per open container: a dictionary
    key_next = False
    while pos < n:
        lead = data[pos]
        if lead == 0x65:  # e
            if not open_dicts or (open_dicts[-1] and not key_next):
                return -1
            open_dicts.pop()
            pos += 1
        elif key_next or 0x30 <= lead <= 0x39:
            pos = _string_end(data, pos)
            if pos < 0:
                return -1
            if key_next:
                key_next = False
                continue
        elif lead == 0x69:  # i
            m = _INT.match(data, pos)
            if m is None:
                return -1
            pos = m.end()
        elif lead == 0x6C or lead == 0x64:  # l, d
            if len(open_dicts) >= QUICK_DEPTH:
                return -1
            open_dicts.append(lead == 0x64)
            key_next = lead == 0x64
            pos += 1
            continue
        else:
            return -1
        if not open_dicts:
            return pos
        key_next = open_dicts[-1]
    return -1
