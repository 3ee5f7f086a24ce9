"""Metainfo (.torrent) files: read, validate and write them (BEP 3, 12, 19, 27, 47).

Covers the v1 format: single-file and multi-file ``info`` dicts, ``announce`` and
``announce-list`` tiers (BEP 12), ``private`` (BEP 27), ``url-list`` web seeds (BEP 19)
and ``httpseeds``, ``name.utf-8``/``path.utf-8``, and BEP 47 padding files (known as
padding, never written to disk). Unknown keys are kept in ``raw`` and survive a
round trip.

The info hash is the SHA-1 of the ``info`` value's bytes exactly as they stand in
the file, never of a re-encoding, so a torrent with unsorted keys keeps the hash every
other client computes for it.

Validation follows libtorrent: every problem is a :class:`MetainfoError` naming the key
path. Paths are checked so that no file can land outside the download directory.

Left out: v2 (BEP 52) merkle trees; a v2-only torrent is refused with a clear error,
a hybrid torrent is read through its v1 part.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from torrent.errors import BencodeError, MetainfoError
from torrent.proto import bencoding
from torrent.types import BLOCK_SIZE, InfoHash

#: The largest piece libtorrent loads: 32767 blocks of 16 KiB (2**29 - 16 KiB; one byte
#: more and ``torrent_info`` refuses the 'piece length'). Checked in the libtorrent tests.
MAX_PIECE_LENGTH = 32767 * 16 * 1024
#: Refuse file lists longer than this: a hostile torrent cannot make us allocate forever.
MAX_FILES = 1_000_000
#: Longest single path component we accept (common file systems allow 255 bytes).
MAX_COMPONENT_BYTES = 255
#: Largest .torrent we read from disk.
MAX_TORRENT_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of the torrent, in the order of the ``info`` dict.

    Attributes:
        path: path components below the torrent's top directory (for a single-file
            torrent: just the name).
        length: size in bytes.
        offset: byte offset of the file's first byte in the torrent's payload.
        padding: a BEP 47 padding file (``attr`` contains ``p``); never written to disk.
        attr: the raw BEP 47 ``attr`` string (``x`` executable, ``h`` hidden, ...).
    """

    path: tuple[str, ...]
    length: int
    offset: int
    padding: bool = False
    attr: str = ""

    @property
    def path_str(self) -> str:
        """The path joined with ``/``."""
        return "/".join(self.path)


@dataclass(frozen=True, slots=True)
class Info:
    """The validated contents of the ``info`` dict.

    Attributes:
        name: suggested file (single-file) or directory (multi-file) name.
        piece_length: bytes per piece (the last piece may be shorter).
        pieces: concatenated 20-byte SHA-1 hashes, one per piece.
        files: every file in order, padding files included (``FileEntry.padding``).
        multi_file: the ``info`` dict has a ``files`` list (content lives in a directory).
        private: BEP 27 private flag.
        source: the ``source`` key some private trackers use to vary the info hash.
        raw: the decoded ``info`` dict, unknown keys included.
    """

    name: str
    piece_length: int
    pieces: bytes
    files: tuple[FileEntry, ...]
    multi_file: bool
    private: bool = False
    source: str = ""
    raw: dict[bytes, Any] = field(default_factory=dict, compare=False, repr=False)
    # Computed once: piece_size() runs for every block read or written, and summing a
    # long file list each time would make that O(files).
    _total_length: int = field(default=0, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_total_length", sum(f.length for f in self.files))

    @property
    def total_length(self) -> int:
        """Sum of every file's length, padding included (the payload's size)."""
        return self._total_length

    @property
    def num_pieces(self) -> int:
        return len(self.pieces) // 20

    def piece_hash(self, index: int) -> bytes:
        """The expected SHA-1 of piece ``index``."""
        if not 0 <= index < self.num_pieces:
            raise IndexError(f"piece index {index} out of range")
        return self.pieces[index * 20 : index * 20 + 20]

    def piece_size(self, index: int) -> int:
        """Bytes in piece ``index``: ``piece_length`` except for a shorter last piece."""
        if not 0 <= index < self.num_pieces:
            raise IndexError(f"piece index {index} out of range")
        if index == self.num_pieces - 1:
            return self.total_length - index * self.piece_length
        return self.piece_length


@dataclass(frozen=True, slots=True)
class Metainfo:
    """A parsed .torrent file.

    Attributes:
        info: the ``info`` dict.
        info_hash: SHA-1 of the raw ``info`` bytes.
        info_bytes: the raw bencoded ``info`` value as read (or as created).
        announce: the ``announce`` URL ("" when absent).
        announce_list: BEP 12 tiers; when the file has no ``announce-list`` this is
            ``((announce,),)`` or empty, so callers only ever look here.
        url_list: BEP 19 web seeds.
        httpseeds: BEP 17 HTTP seeds.
        creation_date: seconds since the epoch, or None.
        comment, created_by, encoding: the optional text fields ("" when absent).
        warnings: things libtorrent accepts but that are unusual (e.g. a piece length
            that is not a power of two).
        raw: the decoded top-level dict, unknown keys included.
    """

    info: Info
    info_hash: InfoHash
    info_bytes: bytes = field(repr=False)
    announce: str = ""
    announce_list: tuple[tuple[str, ...], ...] = ()
    url_list: tuple[str, ...] = ()
    httpseeds: tuple[str, ...] = ()
    creation_date: int | None = None
    comment: str = ""
    created_by: str = ""
    encoding: str = ""
    warnings: tuple[str, ...] = ()
    raw: dict[bytes, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_bytes(cls, data: bytes) -> Metainfo:
        """Parse and validate a .torrent file's bytes.

        Raises:
            MetainfoError: the bytes are not bencoded, or a field is missing, wrongly
                typed or unsafe. Nothing else escapes, whatever the input.
        """
        try:
            top, info_bytes = bencoding.decode_with_info_span(data)
        except BencodeError as exc:
            raise MetainfoError(f"not a valid torrent file ({exc})") from None
        try:
            return _parse(top, info_bytes)
        except MetainfoError:
            raise
        except (BencodeError, ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError) as exc:
            # A shape we did not foresee still gets our one error class.
            raise MetainfoError(f"malformed torrent ({exc})") from None

    def to_bytes(self) -> bytes:
        """Bencode the whole file, with the ``info`` value byte-for-byte as read."""
        top = dict(self.raw)
        top[b"info"] = bencoding.Raw(self.info_bytes)
        return bencoding.encode(top)

    @property
    def trackers(self) -> tuple[str, ...]:
        """Every tracker URL, tier by tier, without duplicates."""
        seen: dict[str, None] = {}
        for tier in self.announce_list:
            for url in tier:
                seen.setdefault(url, None)
        return tuple(seen)


# --- parsing ---------------------------------------------------------------------------


def _text(value: Any, where: str, encoding: str = "") -> str:
    if not isinstance(value, bytes):
        raise MetainfoError(f"expected a string, got {_kind(value)}", where)
    if encoding and encoding.lower().replace("-", "") not in ("utf8", ""):
        try:
            return value.decode(encoding)
        except (LookupError, UnicodeDecodeError):
            pass
    return value.decode("utf-8", errors="replace")


def _kind(value: Any) -> str:
    return {int: "an integer", bytes: "a string", list: "a list", dict: "a dictionary"}.get(
        type(value), type(value).__name__
    )


def _int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise MetainfoError(f"expected an integer, got {_kind(value)}", where)
    return value


def check_path_component(component: str, where: str) -> str:
    """Refuse a path component that could escape the download directory or is unusable.

    Raises:
        MetainfoError: empty, ``.``, ``..``, contains ``/``, ``\\`` or NUL, starts
            like an absolute or drive path, or is longer than 255 bytes.
    """
    if component in ("", ".", ".."):
        raise MetainfoError(f"path component {component!r} is not allowed", where)
    if "/" in component or "\\" in component or "\x00" in component:
        raise MetainfoError(f"path component {component!r} contains a separator or NUL", where)
    if len(component) >= 2 and component[1] == ":" and component[0].isalpha():
        raise MetainfoError(f"path component {component!r} looks like a drive letter", where)
    if len(component.encode("utf-8", errors="surrogateescape")) > MAX_COMPONENT_BYTES:
        raise MetainfoError(f"path component is longer than {MAX_COMPONENT_BYTES} bytes", where)
    return component


def _parse_info(info: Any, encoding: str) -> tuple[Info, list[str]]:
    warnings: list[str] = []
    if not isinstance(info, dict):
        raise MetainfoError(f"expected a dictionary, got {_kind(info)}", "info")

    if b"pieces" not in info:
        if info.get(b"meta version") == 2:
            raise MetainfoError("v2-only torrents (BEP 52) are not supported", "info.pieces")
        raise MetainfoError("missing", "info.pieces")
    name_raw = info.get(b"name.utf-8", info.get(b"name"))
    if name_raw is None:
        raise MetainfoError("missing", "info.name")
    name = check_path_component(
        _text(name_raw, "info.name", "" if b"name.utf-8" in info else encoding), "info.name"
    )

    if b"piece length" not in info:
        raise MetainfoError("missing", "info.piece length")
    piece_length = _int(info[b"piece length"], "info.piece length")
    if piece_length <= 0 or piece_length > MAX_PIECE_LENGTH:
        raise MetainfoError(f"{piece_length} is not between 1 and {MAX_PIECE_LENGTH}", "info.piece length")
    if piece_length & (piece_length - 1) or piece_length < BLOCK_SIZE:
        # libtorrent loads v1 torrents with any positive piece length; so do we, but say so.
        warnings.append(f"piece length {piece_length} is not a power of two of at least 16 KiB")

    pieces = info[b"pieces"]
    if not isinstance(pieces, bytes):
        raise MetainfoError(f"expected a string, got {_kind(pieces)}", "info.pieces")
    if len(pieces) % 20:
        raise MetainfoError(f"length {len(pieces)} is not a multiple of 20", "info.pieces")

    private_raw = info.get(b"private", 0)
    private = isinstance(private_raw, int) and private_raw == 1
    source = _text(info[b"source"], "info.source") if isinstance(info.get(b"source"), bytes) else ""

    files: list[FileEntry] = []
    if b"files" in info:
        if b"length" in info:
            raise MetainfoError("has both 'length' and 'files'", "info")
        entries = info[b"files"]
        if not isinstance(entries, list):
            raise MetainfoError(f"expected a list, got {_kind(entries)}", "info.files")
        if not entries:
            raise MetainfoError("the file list is empty", "info.files")
        if len(entries) > MAX_FILES:
            raise MetainfoError(f"more than {MAX_FILES} files", "info.files")
        offset = 0
        seen: set[tuple[str, ...]] = set()
        for i, entry in enumerate(entries):
            where = f"info.files[{i}]"
            if not isinstance(entry, dict):
                raise MetainfoError(f"expected a dictionary, got {_kind(entry)}", where)
            if b"length" not in entry:
                raise MetainfoError("missing", f"{where}.length")
            length = _int(entry[b"length"], f"{where}.length")
            if length < 0:
                raise MetainfoError("negative length", f"{where}.length")
            utf8 = b"path.utf-8" in entry
            path_raw = entry.get(b"path.utf-8", entry.get(b"path"))
            if path_raw is None:
                raise MetainfoError("missing", f"{where}.path")
            if not isinstance(path_raw, list):
                raise MetainfoError(f"expected a list, got {_kind(path_raw)}", f"{where}.path")
            if not path_raw:
                raise MetainfoError("empty path", f"{where}.path")
            path = tuple(
                check_path_component(
                    _text(c, f"{where}.path[{j}]", "" if utf8 else encoding), f"{where}.path"
                )
                for j, c in enumerate(path_raw)
            )
            attr_raw = entry.get(b"attr", b"")
            attr = attr_raw.decode("ascii", errors="replace") if isinstance(attr_raw, bytes) else ""
            padding = "p" in attr
            if not padding:
                if path in seen:
                    raise MetainfoError(f"duplicate path {'/'.join(path)!r}", f"{where}.path")
                seen.add(path)
            files.append(FileEntry(path=path, length=length, offset=offset, padding=padding, attr=attr))
            offset += length
        if all(f.padding for f in files):
            raise MetainfoError("every file is a padding file", "info.files")
    else:
        if b"length" not in info:
            raise MetainfoError("missing (neither 'length' nor 'files')", "info.length")
        length = _int(info[b"length"], "info.length")
        if length < 0:
            raise MetainfoError("negative length", "info.length")
        attr_raw = info.get(b"attr", b"")
        attr = attr_raw.decode("ascii", errors="replace") if isinstance(attr_raw, bytes) else ""
        files.append(FileEntry(path=(name,), length=length, offset=0, attr=attr))

    total = sum(f.length for f in files)
    expected_pieces = math.ceil(total / piece_length)
    if len(pieces) // 20 != expected_pieces:
        raise MetainfoError(
            f"{len(pieces) // 20} piece hashes for {total} bytes in pieces of {piece_length} "
            f"(expected {expected_pieces})",
            "info.pieces",
        )
    if total == 0:
        raise MetainfoError("the torrent holds no data", "info")

    return (
        Info(
            name=name,
            piece_length=piece_length,
            pieces=pieces,
            files=tuple(files),
            multi_file=b"files" in info,
            private=private,
            source=source,
            raw=info,
        ),
        warnings,
    )


def _url_list(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, bytes):
        return (_text(value, where),) if value else ()
    if isinstance(value, list):
        return tuple(_text(v, f"{where}[{i}]") for i, v in enumerate(value) if isinstance(v, bytes) and v)
    raise MetainfoError(f"expected a string or list, got {_kind(value)}", where)


def _parse(top: dict[bytes, Any], info_bytes: bytes | None) -> Metainfo:
    if info_bytes is None:
        raise MetainfoError("missing", "info")
    encoding = _text(top[b"encoding"], "encoding") if isinstance(top.get(b"encoding"), bytes) else ""
    info, warnings = _parse_info(top[b"info"], encoding)

    announce = ""
    if b"announce" in top:
        announce = _text(top[b"announce"], "announce").strip()

    tiers: list[tuple[str, ...]] = []
    if b"announce-list" in top:
        raw_tiers = top[b"announce-list"]
        if not isinstance(raw_tiers, list):
            raise MetainfoError(f"expected a list, got {_kind(raw_tiers)}", "announce-list")
        for i, tier in enumerate(raw_tiers):
            if not isinstance(tier, list):
                raise MetainfoError(f"expected a list, got {_kind(tier)}", f"announce-list[{i}]")
            stripped = (_text(x, f"announce-list[{i}][{j}]").strip() for j, x in enumerate(tier))
            urls = tuple(u for u in stripped if u)
            if urls:
                tiers.append(urls)
    # BEP 12: when announce-list is present (and not empty) it replaces announce.
    if not tiers and announce:
        tiers.append((announce,))

    creation_date = top.get(b"creation date")
    return Metainfo(
        info=info,
        info_hash=InfoHash(hashlib.sha1(info_bytes).digest()),
        info_bytes=info_bytes,
        announce=announce,
        announce_list=tuple(tiers),
        url_list=_url_list(top[b"url-list"], "url-list") if b"url-list" in top else (),
        httpseeds=_url_list(top[b"httpseeds"], "httpseeds") if b"httpseeds" in top else (),
        creation_date=creation_date if isinstance(creation_date, int) and not isinstance(creation_date, bool) else None,
        comment=_text(top[b"comment"], "comment", encoding) if isinstance(top.get(b"comment"), bytes) else "",
        created_by=_text(top[b"created by"], "created by") if isinstance(top.get(b"created by"), bytes) else "",
        encoding=encoding,
        warnings=tuple(warnings),
        raw=top,
    )
