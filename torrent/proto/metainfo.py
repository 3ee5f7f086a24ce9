"""Metainfo (.torrent) files: read, validate and write them (BEP 3, 12, 19, 27, 47, 52).

Covers the v1 format: single-file and multi-file ``info`` dicts, ``announce`` and
``announce-list`` tiers (BEP 12), ``private`` (BEP 27), ``url-list`` web seeds (BEP 19)
and ``httpseeds``, ``name.utf-8``/``path.utf-8``, and BEP 47 padding files (known as
padding, never written to disk). Unknown keys are kept in ``raw`` and survive a
round trip.

The info hash is the SHA-1 of the ``info`` value's bytes exactly as they stand in
the file, never of a re-encoding, so a torrent with unsorted keys keeps the hash every
other client computes for it.

Validation follows libtorrent: every problem is a :class:`MetainfoError` naming the key
path, and a torrent libtorrent loads loads here too. File names are not refused for
being odd: each file keeps the path the torrent gives it (``FileEntry.path``, for
display) and gets a sanitised one that is safe to create below the download directory
(``FileEntry.disk_path``, see :mod:`torrent.proto.paths`); storage only ever uses the
latter. Bytes after the top-level dictionary are ignored with a warning, as libtorrent
ignores them. BEP 47 symlinks are kept only when they point inside the torrent.

BEP 52 (v2): ``meta version`` 2, the ``file tree`` (walked without recursion, in the
sorted order of its keys) and the top-level ``piece layers``, each checked against its
file's ``pieces root``. The v2 info hash is the SHA-256 of the same raw span
(:attr:`Metainfo.info_hash_v2`, 32 bytes). A v2-only torrent is laid out in the piece
space the way BEP 52 says (every non-empty file starts a piece): :attr:`Info.files`
holds a padding entry in each gap, so storage, the picker and the wire treat its gaps
exactly like a v1 torrent's BEP 47 padding. A *hybrid* carries both halves; its v1
``files`` (with their padding) must describe the same files, sizes and piece-aligned
offsets as its ``file tree``, or it is refused with a :class:`MetainfoError` naming the
v1 field that disagrees. A torrent without ``piece layers`` (what a magnet link gives)
loads with a warning: its large files' pieces are checked once the hashes are known.

Left out: v2 symlinks and per-file attributes other than ``x``/``h`` in the file tree.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torrent.errors import BencodeError, MetainfoError
from torrent.proto import bencoding, merkle, paths
from torrent.proto.tracker_url import tracker_url_problem
from torrent.types import BLOCK_SIZE, InfoHash

#: The largest piece libtorrent loads: 32767 blocks of 16 KiB (2**29 - 16 KiB; one byte
#: more and ``torrent_info`` refuses the 'piece length'). Checked in the libtorrent tests.
MAX_PIECE_LENGTH = 32767 * 16 * 1024
#: Refuse file lists longer than this: a hostile torrent cannot make us allocate forever.
#: Measured with ``pytorrent info``: 200,000 one-component files take about 5 s and
#: 300 MB; a million took 35 s and 1.4 GB, most of it in decoding and path sanitising.
#: (libtorrent's default ``max_decode_tokens`` of 3,000,000 refuses a million files too.)
MAX_FILES = 200_000
#: Every file entry of a v1 torrent holds a ``path`` list: counting the key's bytes
#: bounds the file count before the whole file is decoded.
_PATH_KEY = b"4:pathl"
#: Every non-empty file of a v2 file tree holds a ``pieces root``.
_ROOT_KEY = b"11:pieces root"
#: Longest single path component :func:`check_path_component` accepts (``create``).
MAX_COMPONENT_BYTES = 255
#: Largest single file libtorrent loads (its merkle-tree indices bound it: 2**30 - 1
#: blocks of 16 KiB).
MAX_FILE_LENGTH = (2**31 - 1) // 2 * BLOCK_SIZE
#: Largest payload libtorrent loads (2**48 - 1 bytes).
MAX_TOTAL_LENGTH = 2**48 - 1
#: Largest .torrent we read from disk.
MAX_TORRENT_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of the torrent, in the order of the ``info`` dict.

    Attributes:
        path: path components below the torrent's top directory as the torrent gives
            them (for a single-file torrent: just the name). For display only: it may
            hold ``..``, separators or control characters.
        length: size in bytes.
        offset: byte offset of the file's first byte in the torrent's payload.
        padding: a BEP 47 padding file (``attr`` contains ``p``); never written to disk.
        attr: the raw BEP 47 ``attr`` string (``x`` executable, ``h`` hidden, ...).
        disk_path: where the file is written, below the content's top directory
            (single-file: the file's name): sanitised, never empty, no component is
            ``.``, ``..`` or holds a separator. Defaults to ``path``.
        symlink: for a BEP 47 symlink whose target is one of the torrent's own files
            or directories, that target (sanitised, relative to the top directory);
            None for every other entry (a symlink pointing elsewhere is an empty file).
        pieces_root: BEP 52: the root of the file's merkle tree (32 bytes) in a v2 or
            hybrid torrent; empty for v1 torrents, empty files and padding.
    """

    path: tuple[str, ...]
    length: int
    offset: int
    padding: bool = False
    attr: str = ""
    disk_path: tuple[str, ...] = ()
    symlink: tuple[str, ...] | None = None
    pieces_root: bytes = b""

    def __post_init__(self) -> None:
        if not self.disk_path:
            object.__setattr__(self, "disk_path", self.path)

    @property
    def path_str(self) -> str:
        """The path joined with ``/``."""
        return "/".join(self.path)


class PieceCheck(enum.Enum):
    """What :meth:`Info.check_piece` found."""

    PASSED = "passed"
    FAILED = "failed"
    #: A hybrid's SHA-1 and SHA-256 hashes disagree about the same bytes.
    CONFLICT = "conflict"
    #: No hash is known for the piece yet (v2 without its piece layer).
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Info:
    """The validated contents of the ``info`` dict.

    Attributes:
        name: suggested file (single-file) or directory (multi-file) name, as the
            torrent gives it (for display).
        piece_length: bytes per piece (the last piece may be shorter).
        pieces: concatenated 20-byte SHA-1 hashes, one per piece.
        files: every file in order, padding files included (``FileEntry.padding``).
        multi_file: the ``info`` dict has a ``files`` list (content lives in a directory).
        private: BEP 27 private flag.
        source: the ``source`` key some private trackers use to vary the info hash.
        raw: the decoded ``info`` dict, unknown keys included.
        disk_name: the sanitised ``name``: the file or directory storage creates
            (defaults to ``name``).
        meta_version: 1 for a BEP 3 torrent, 2 for a v2 or hybrid one (BEP 52).
        has_v1: the torrent carries v1 ``pieces`` (v1 or hybrid); False for v2-only,
            whose ``pieces`` is empty.
        piece_layers: BEP 52 piece layers by ``pieces root`` (from outside the ``info``
            dict, checked against the roots); a file missing here has unknown piece
            hashes until peers send them.
    """

    name: str
    piece_length: int
    pieces: bytes
    files: tuple[FileEntry, ...]
    multi_file: bool
    private: bool = False
    source: str = ""
    raw: dict[bytes, Any] = field(default_factory=dict, compare=False, repr=False)
    disk_name: str = ""
    meta_version: int = 1
    has_v1: bool = True
    piece_layers: Mapping[bytes, bytes] = field(default_factory=dict, compare=False, repr=False)
    # Computed once: piece_size() runs for every block read or written, and summing a
    # long file list each time would make that O(files).
    _total_length: int = field(default=0, init=False, compare=False, repr=False)
    _num_pieces: int = field(default=0, init=False, compare=False, repr=False)
    # v2: the first piece of each non-empty file, and those files, for piece -> file.
    _v2_starts: tuple[int, ...] = field(default=(), init=False, compare=False, repr=False)
    _v2_files: tuple[FileEntry, ...] = field(default=(), init=False, compare=False, repr=False)
    # v2: piece nodes proven one by one while their file's layer is unknown (root -> k -> node).
    _proven: dict[bytes, dict[int, bytes]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        total = sum(f.length for f in self.files)
        object.__setattr__(self, "_total_length", total)
        if not self.disk_name:
            object.__setattr__(self, "disk_name", self.name)
        count = len(self.pieces) // 20 if self.has_v1 else -(-total // self.piece_length)
        object.__setattr__(self, "_num_pieces", count)
        if self.meta_version == 2:
            data_files = tuple(f for f in self.files if f.length and not f.padding)
            starts = tuple(f.offset // self.piece_length for f in data_files)
            object.__setattr__(self, "_v2_files", data_files)
            object.__setattr__(self, "_v2_starts", starts)

    @property
    def total_length(self) -> int:
        """Sum of every file's length, padding included (the payload's size)."""
        return self._total_length

    @property
    def num_pieces(self) -> int:
        return self._num_pieces

    @property
    def has_v2(self) -> bool:
        """BEP 52 merkle trees are present (v2-only or hybrid)."""
        return self.meta_version == 2

    @property
    def padding_bytes(self) -> int:
        """Bytes of BEP 47 padding (never requested, written or counted as progress)."""
        return sum(f.length for f in self.files if f.padding)

    def piece_hash(self, index: int) -> bytes:
        """The expected SHA-1 of piece ``index`` (v1 and hybrid torrents).

        Raises:
            IndexError: out of range.
            LookupError: a v2-only torrent has no SHA-1 piece hashes.
        """
        if not 0 <= index < self.num_pieces:
            raise IndexError(f"piece index {index} out of range")
        if not self.has_v1:
            raise LookupError("a v2-only torrent has no SHA-1 piece hashes")
        return self.pieces[index * 20 : index * 20 + 20]

    def v2_piece(self, index: int) -> tuple[FileEntry, int]:
        """The file piece ``index`` belongs to (v2: one file per piece) and the piece's
        index within that file.

        Raises:
            IndexError: out of range, or not a v2 torrent.
        """
        if not self.has_v2 or not 0 <= index < self.num_pieces:
            raise IndexError(f"piece index {index} out of range")
        i = bisect.bisect_right(self._v2_starts, index) - 1
        return self._v2_files[i], index - self._v2_starts[i]

    def piece_hash_v2(self, index: int) -> bytes | None:
        """The expected piece-layer node of piece ``index`` (BEP 52), or None while the
        file's piece layer is unknown. For a file of one piece, its ``pieces root``."""
        f, k = self.v2_piece(index)
        if f.length <= self.piece_length:
            return f.pieces_root
        layer = self.piece_layers.get(f.pieces_root)
        if layer is None:
            proven = self._proven.get(f.pieces_root)
            return proven.get(k) if proven is not None else None
        return layer[k * merkle.HASH_SIZE : (k + 1) * merkle.HASH_SIZE]

    @property
    def missing_piece_layers(self) -> tuple[FileEntry, ...]:
        """v2: the files larger than a piece whose piece layer is not known yet."""
        return tuple(
            f
            for f in self._v2_files
            if f.length > self.piece_length and f.pieces_root not in self.piece_layers
        )

    def add_piece_layer(self, root: bytes, layer: bytes) -> None:
        """Learn a piece layer from peers (a v2 magnet link), once it proves its root.

        The one change an ``Info`` allows after it is built: ``piece_layers`` only gains
        layers, each checked here against its file's ``pieces root``.

        Raises:
            MetainfoError: no file has this root, or the layer does not hash to it.
        """
        f = next((f for f in self._v2_files if f.pieces_root == root), None)
        if f is None:
            raise MetainfoError(f"no file has the pieces root {root.hex()}", "piece layers")
        count = -(-f.length // self.piece_length)
        nodes = [layer[i : i + merkle.HASH_SIZE] for i in range(0, len(layer), merkle.HASH_SIZE)]
        if (
            len(layer) != count * merkle.HASH_SIZE
            or merkle.root_from_piece_layer(nodes, self.piece_length) != root
        ):
            raise MetainfoError(
                f"does not hash to the pieces root of {f.path_str!r}", f"piece layers[{root.hex()}]"
            )
        if not isinstance(self.piece_layers, dict):
            raise TypeError("piece_layers is read-only")
        self.piece_layers[root] = layer
        self._proven.pop(root, None)  # the nodes proven one by one are in the layer now

    def add_piece_hash_v2(self, index: int, node: bytes, uncles: Sequence[bytes]) -> None:
        """Learn one piece's node before its file's layer (BEP 52 per-block proofs).

        ``uncles`` prove ``node`` from the piece layer up to the file's ``pieces root``;
        once every piece of the file is known this way, they make its piece layer.

        Raises:
            MetainfoError: the proof does not reach the file's root.
        """
        f, k = self.v2_piece(index)
        if f.length <= self.piece_length or f.pieces_root in self.piece_layers:
            if self.piece_hash_v2(index) != node:
                raise MetainfoError(f"piece {index} does not match its known hash", "piece layers")
            return
        count = -(-f.length // self.piece_length)
        base = merkle.log2(self.piece_length // BLOCK_SIZE)
        height = base + merkle.log2(merkle.next_pow2(count))
        if not merkle.verify_proof(f.pieces_root, height, base, k, [node], uncles):
            raise MetainfoError(
                f"piece {index}'s hash does not prove the pieces root of {f.path_str!r}", "piece layers"
            )
        proven = self._proven.setdefault(f.pieces_root, {})
        proven[k] = node
        if len(proven) == count:
            self.add_piece_layer(f.pieces_root, b"".join(proven[i] for i in range(count)))

    def v2_piece_data_length(self, index: int) -> int:
        """Bytes of file data in piece ``index`` (the rest, if any, is padding)."""
        f, k = self.v2_piece(index)
        return min(self.piece_length, f.length - k * self.piece_length)

    def v2_hash_of(self, index: int, data: bytes | bytearray | memoryview) -> bytes:
        """The BEP 52 hash of piece ``index`` holding ``data`` (padding past the file's
        end is left out): what :meth:`piece_hash_v2` must equal."""
        f, _ = self.v2_piece(index)
        view = memoryview(data)[: self.v2_piece_data_length(index)]
        if f.length <= self.piece_length:
            return merkle.small_file_root(view)
        return merkle.piece_hash(view, self.piece_length)

    def check_piece(self, index: int, data: bytes | bytearray | memoryview) -> PieceCheck:
        """Check a whole piece against every hash the torrent has for it.

        A hybrid's piece must match its SHA-1 and its SHA-256 node; a piece that
        matches one and not the other is :attr:`PieceCheck.CONFLICT` (the torrent's two
        halves describe different data). A v2 piece whose node is not known yet is
        :attr:`PieceCheck.UNKNOWN`.
        """
        v1 = hashlib.sha1(data).digest() == self.piece_hash(index) if self.has_v1 else None
        v2: bool | None = None
        if self.has_v2:
            expected = self.piece_hash_v2(index)
            if expected is not None:
                v2 = self.v2_hash_of(index, data) == expected
        if v1 is not None and v2 is not None and v1 != v2:
            return PieceCheck.CONFLICT
        result = v1 if v2 is None else v2
        if result is None:
            return PieceCheck.UNKNOWN
        return PieceCheck.PASSED if result else PieceCheck.FAILED

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
        info_hash: the 20 bytes that name the torrent on the wire, to trackers and in
            the DHT: the SHA-1 of the raw ``info`` bytes (v1 and hybrid), or the v2 hash
            truncated to 20 bytes (v2-only, BEP 52).
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
        info_hash_v2: BEP 52: the SHA-256 of the raw ``info`` bytes (32 bytes) for a v2
            or hybrid torrent; None for v1.
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
    info_hash_v2: bytes | None = None

    @property
    def info_hash_v1(self) -> InfoHash | None:
        """The SHA-1 info hash, or None for a v2-only torrent."""
        return self.info_hash if self.info.has_v1 else None

    @property
    def info_hashes(self) -> tuple[InfoHash, ...]:
        """Every 20-byte hash a peer may name this torrent by: the v1 hash and the
        truncated v2 hash of a hybrid, the one hash of a v1 or v2-only torrent."""
        hashes = [self.info_hash]
        if self.info_hash_v2 is not None and self.info_hash_v2[:20] != self.info_hash:
            hashes.append(InfoHash(self.info_hash_v2[:20]))
        return tuple(hashes)

    @property
    def meta_version(self) -> int:
        return self.info.meta_version

    @classmethod
    def from_bytes(cls, data: bytes) -> Metainfo:
        """Parse and validate a .torrent file's bytes.

        Raises:
            MetainfoError: the bytes are not bencoded, or a field is missing, wrongly
                typed or unsafe. Nothing else escapes, whatever the input.
        """
        trailing = 0
        check_file_count(data)
        try:
            top, info_bytes = bencoding.decode_with_info_span(data)
        except BencodeError as exc:
            # libtorrent reads the first value and ignores what follows it; so do we.
            try:
                end = bencoding.value_end(data)
                if end >= len(data):
                    raise BencodeError(str(exc))
                top, info_bytes = bencoding.decode_with_info_span(bytes(data[:end]))
            except (BencodeError, ValueError):
                raise MetainfoError(f"not a valid torrent file ({exc})") from None
            trailing = len(data) - end
        try:
            meta = _parse(top, info_bytes)
        except MetainfoError:
            raise
        except (
            BencodeError,
            ValueError,
            TypeError,
            KeyError,
            IndexError,
            OverflowError,
            RecursionError,
        ) as exc:
            # A shape we did not foresee still gets our one error class.
            raise MetainfoError(f"malformed torrent ({exc})") from None
        if trailing:
            note = f"{trailing} bytes after the end of the torrent's dictionary were ignored"
            meta = dataclasses.replace(meta, warnings=(*meta.warnings, note))
        return meta

    def to_bytes(self) -> bytes:
        """Bencode the whole file, with the ``info`` value byte-for-byte as read (and the
        v2 piece layers learned from peers since, so a saved magnet download keeps them)."""
        top = dict(self.raw)
        top[b"info"] = bencoding.Raw(self.info_bytes)
        if self.info.piece_layers and not isinstance(top.get(b"piece layers"), dict):
            top[b"piece layers"] = dict(self.info.piece_layers)
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


def _int(value: Any, where: str, maximum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise MetainfoError(f"expected an integer, got {_kind(value)}", where)
    if maximum is not None and value > maximum:
        raise MetainfoError(f"{_number(value)} is larger than the largest allowed, {maximum}", where)
    return value


def _number(value: int) -> str:
    """``value`` for a message: a hostile 4000-digit number is summarised, not printed."""
    digits = len(str(abs(value))) if value.bit_length() < 20_000 else 0
    if 0 < digits <= 24:
        return str(value)
    return f"a {digits or 'many'}-digit number"


def _disk_bytes(value: bytes, encoding: str, utf8: bool) -> bytes:
    """The bytes to sanitise for disk: UTF-8, re-encoded from a legacy ``encoding``."""
    if utf8 or not encoding or encoding.lower().replace("-", "") in ("utf8", ""):
        return value
    try:
        return value.decode(encoding).encode("utf-8")
    except (LookupError, UnicodeDecodeError):
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


def _parse_info(info: Any, encoding: str, info_hash_hex: str) -> tuple[Info, list[str]]:
    warnings: list[str] = []
    if not isinstance(info, dict):
        raise MetainfoError(f"expected a dictionary, got {_kind(info)}", "info")
    # BEP 52: the version is checked before anything else.
    tree = _file_tree(info) if _meta_version(info) == META_VERSION else None
    if b"pieces" not in info:
        if tree is None:
            raise MetainfoError("missing", "info.pieces")
        return _v2_only_info(info, tree, info_hash_hex, warnings), warnings
    parsed = _v1_info(info, encoding, info_hash_hex, warnings)
    if tree is not None:
        parsed = _hybrid_info(parsed, tree)
    return parsed, warnings


def _name(
    info: dict[bytes, Any], encoding: str, info_hash_hex: str, multi_file: bool, warnings: list[str]
) -> tuple[str, str]:
    """The torrent's ``name`` as shown, and as the file or directory storage creates."""
    name_utf8 = isinstance(info.get(b"name.utf-8"), bytes)
    name_raw = info[b"name.utf-8"] if name_utf8 else info.get(b"name")
    if name_raw is None:
        raise MetainfoError("missing", "info.name")
    name = _text(name_raw, "info.name", "" if name_utf8 else encoding)
    disk_name = paths.sanitize_name(
        _disk_bytes(name_raw, encoding, name_utf8), multi_file=multi_file, info_hash_hex=info_hash_hex
    )
    if disk_name is None:
        raise MetainfoError(f"{name!r} leaves no usable file name", "info.name")
    if disk_name != name:
        warnings.append(f"the name {name!r} is written as {disk_name!r}")
    return name, disk_name


def _private_source(info: dict[bytes, Any]) -> tuple[bool, str]:
    private_raw = info.get(b"private", 0)
    private = isinstance(private_raw, int) and private_raw == 1
    source = _text(info[b"source"], "info.source") if isinstance(info.get(b"source"), bytes) else ""
    return private, source


def _v1_info(info: dict[bytes, Any], encoding: str, info_hash_hex: str, warnings: list[str]) -> Info:
    multi_file = b"files" in info
    name, disk_name = _name(info, encoding, info_hash_hex, multi_file, warnings)
    piece_length = _piece_length(info, warnings)
    pieces = _piece_hashes(info[b"pieces"])
    private, source = _private_source(info)

    if multi_file:
        if b"length" in info:
            warnings.append("'length' is ignored: the torrent also has a 'files' list")
        files = _parse_files(info[b"files"], encoding, warnings, bitcomet_padding=_BITCOMET_PAD in disk_name)
    else:
        files = [_single_file(info, name, disk_name)]

    total = sum(f.length for f in files)
    expected_pieces = -(-total // piece_length)
    if len(pieces) // 20 != expected_pieces:
        raise MetainfoError(
            f"{len(pieces) // 20} piece hashes for {total} bytes in pieces of {piece_length} "
            f"(expected {expected_pieces})",
            "info.pieces",
        )
    if total == 0:
        raise MetainfoError("the torrent holds no data", "info")

    return Info(
        name=name,
        piece_length=piece_length,
        pieces=pieces,
        files=tuple(files),
        multi_file=multi_file,
        private=private,
        source=source,
        raw=info,
        disk_name=disk_name,
    )


# --- BEP 52 ----------------------------------------------------------------------------

#: The ``meta version`` this reader knows (BEP 52).
META_VERSION = 2


class _TreeFile:
    """One file of a v2 ``file tree``, in tree order."""

    __slots__ = ("attr", "length", "path", "root", "where")

    def __init__(self, path: tuple[bytes, ...], length: int, root: bytes, attr: str, where: str) -> None:
        self.path = path
        self.length = length
        self.root = root
        self.attr = attr
        self.where = where

    @property
    def shown(self) -> tuple[str, ...]:
        return tuple(c.decode("utf-8", errors="replace") for c in self.path)


def _meta_version(info: dict[bytes, Any]) -> int:
    """``meta version``: 1 when absent (or not a number above 1, as libtorrent reads it).

    Raises:
        MetainfoError: a version newer than BEP 52's 2.
    """
    version = info.get(b"meta version")
    if not isinstance(version, int) or isinstance(version, bool) or version < META_VERSION:
        return 1
    if version > META_VERSION:
        raise MetainfoError(
            f"meta version {_number(version)}: the torrent is newer than this client reads "
            f"(up to {META_VERSION})",
            "info.meta version",
        )
    return version


def _tree_where(path: tuple[bytes, ...]) -> str:
    return "info.file tree" + "".join(f"[{c.decode('utf-8', errors='replace')!r}]" for c in path)


def _file_tree(info: dict[bytes, Any]) -> list[_TreeFile]:
    """Every file of ``info['file tree']`` in tree order (keys sorted as bytes).

    Walked with an explicit stack: the depth is bounded by the decoder, never by
    Python's recursion limit.
    """
    tree = info.get(b"file tree")
    if tree is None:
        raise MetainfoError("missing (meta version 2 needs it)", "info.file tree")
    if not isinstance(tree, dict):
        raise MetainfoError(f"expected a dictionary, got {_kind(tree)}", "info.file tree")
    if b"" in tree:
        raise MetainfoError("the root of the file tree must not be a file", "info.file tree")
    files: list[_TreeFile] = []
    total = 0
    stack: list[tuple[tuple[bytes, ...], Any]] = [((k,), tree[k]) for k in sorted(tree, reverse=True)]
    while stack:
        path, node = stack.pop()
        where = _tree_where(path)
        if not isinstance(node, dict):
            raise MetainfoError(f"expected a dictionary, got {_kind(node)}", where)
        if b"" not in node:
            stack.extend(((*path, k), node[k]) for k in sorted(node, reverse=True))
            continue
        if len(node) != 1:
            raise MetainfoError("a file has other entries beside it", where)
        entry = _tree_file(path, node[b""], where)
        total += entry.length
        if total > MAX_TOTAL_LENGTH:
            raise MetainfoError(f"the files add up to more than {MAX_TOTAL_LENGTH} bytes", where)
        files.append(entry)
        if len(files) > MAX_FILES:
            raise _too_many_files(len(files))
    return files


def _tree_file(path: tuple[bytes, ...], entry: Any, where: str) -> _TreeFile:
    if not isinstance(entry, dict):
        raise MetainfoError(f"expected a dictionary, got {_kind(entry)}", f"{where}['']")
    attr_raw = entry.get(b"attr", b"")
    attr = attr_raw.decode("ascii", errors="replace") if isinstance(attr_raw, bytes) else ""
    if "l" in attr:
        return _TreeFile(path, 0, b"", attr, where)
    if b"length" not in entry:
        raise MetainfoError("missing", f"{where}.length")
    length = _int(entry[b"length"], f"{where}.length", MAX_FILE_LENGTH)
    if length < 0:
        raise MetainfoError("negative length", f"{where}.length")
    root = b""
    if length:
        root = entry.get(b"pieces root", b"")
        if not isinstance(root, bytes) or len(root) != merkle.HASH_SIZE:
            got = f"{len(root)} bytes" if isinstance(root, bytes) else _kind(root)
            raise MetainfoError(f"expected {merkle.HASH_SIZE} bytes, got {got}", f"{where}.pieces root")
    return _TreeFile(path, length, root, attr, where)


def _v2_piece_length(info: Info | dict[bytes, Any], warnings: list[str]) -> int:
    piece_length = info.piece_length if isinstance(info, Info) else _piece_length(info, warnings)
    if piece_length & (piece_length - 1) or piece_length < BLOCK_SIZE:
        raise MetainfoError(
            f"{piece_length} is not a power of two of at least 16 KiB, as BEP 52 requires",
            "info.piece length",
        )
    return piece_length


def _v2_only_info(
    info: dict[bytes, Any], tree: list[_TreeFile], info_hash_hex: str, warnings: list[str]
) -> Info:
    """A v2-only torrent, laid out with a padding entry in every alignment gap."""
    piece_length = _v2_piece_length(info, warnings)
    if not any(t.length for t in tree):
        raise MetainfoError("the torrent holds no data", "info.file tree")
    single = len(tree) == 1 and len(tree[0].path) == 1
    name, disk_name = _name(info, "", info_hash_hex, not single, warnings)
    if single:
        t = tree[0]
        files = [
            FileEntry(
                path=(name,),
                length=t.length,
                offset=0,
                attr=t.attr,
                disk_path=(disk_name,),
                pieces_root=t.root,
            )
        ]
    else:
        entries: list[dict[bytes, Any]] = []
        sources: list[_TreeFile | None] = []
        offset = 0
        # As libtorrent lays it out: a gap right after each file that ends inside a
        # piece (so an empty file after it sits at the next boundary), none at the end.
        for t in tree:
            entries.append({b"attr": t.attr.encode(), b"length": t.length, b"path": list(t.path)})
            sources.append(t)
            offset += t.length
            if offset % piece_length:
                gap = piece_length - offset % piece_length
                entries.append({b"attr": b"p", b"length": gap, b"path": [b".pad", str(gap).encode()]})
                sources.append(None)
                offset += gap
        while sources and sources[-1] is None:
            entries.pop()
            sources.pop()
        files = [
            f if t is None else dataclasses.replace(f, padding=False, pieces_root=t.root)
            for f, t in zip(_parse_files(entries, "", warnings, bitcomet_padding=False), sources, strict=True)
        ]
    private, source = _private_source(info)
    return Info(
        name=name,
        piece_length=piece_length,
        pieces=b"",
        files=tuple(files),
        multi_file=not single,
        private=private,
        source=source,
        raw=info,
        disk_name=disk_name,
        meta_version=META_VERSION,
        has_v1=False,
    )


def _hybrid_info(v1: Info, tree: list[_TreeFile]) -> Info:
    """The v1 half of a hybrid, checked against its file tree, with the trees' roots.

    Raises:
        MetainfoError: the halves disagree; the field named is the v1 one.
    """
    piece_length = _v2_piece_length(v1, [])
    v1_data = [(i, f) for i, f in enumerate(v1.files) if f.length and not f.padding]
    v2_data = [t for t in tree if t.length]
    if len(v1_data) != len(v2_data):
        raise MetainfoError(
            f"{len(v1_data)} files hold data here, {len(v2_data)} in the file tree: the hybrid's "
            "v1 and v2 halves disagree",
            "info.files" if v1.multi_file else "info.file tree",
        )
    roots: dict[int, bytes] = {}
    for (i, f), t in zip(v1_data, v2_data, strict=True):
        where = f"info.files[{i}]" if v1.multi_file else "info"
        shown = t.shown if v1.multi_file else t.shown[-1:]
        if f.path != shown or (not v1.multi_file and len(t.path) != 1):
            field_name = f"{where}.path" if v1.multi_file else "info.name"
            raise MetainfoError(
                f"{'/'.join(f.path)!r} where the file tree has {'/'.join(t.shown)!r}: the hybrid's "
                "v1 and v2 halves disagree",
                field_name,
            )
        if f.length != t.length:
            raise MetainfoError(
                f"{f.length} bytes where the file tree says {t.length}: the hybrid's v1 and v2 halves disagree",
                f"{where}.length",
            )
        if f.offset % piece_length:
            raise MetainfoError(
                f"starts at byte {f.offset}, not at a piece boundary as the file tree needs (padding missing)",
                where,
            )
        roots[i] = t.root
    v2_pieces = sum(-(-t.length // piece_length) for t in v2_data)
    if v1.num_pieces != v2_pieces:
        raise MetainfoError(
            f"{v1.num_pieces} pieces where the file tree needs {v2_pieces}: the hybrid's v1 and v2 "
            "halves disagree",
            "info.pieces",
        )
    files = tuple(
        dataclasses.replace(f, pieces_root=roots[i]) if i in roots else f for i, f in enumerate(v1.files)
    )
    return dataclasses.replace(v1, files=files, meta_version=META_VERSION)


def _piece_layers(top: dict[bytes, Any], info: Info, warnings: list[str]) -> dict[bytes, bytes]:
    """The ``piece layers`` of every file larger than a piece, each checked against its root.

    Raises:
        MetainfoError: a layer is missing (while others are given), of the wrong size or
            does not hash to its file's ``pieces root`` (BEP 52: the torrent is invalid).
    """
    if not info.has_v2:
        return {}
    piece_length = info.piece_length
    big = [f for f in info.files if f.pieces_root and f.length > piece_length]
    raw = top.get(b"piece layers")
    if raw is None:
        if big:
            warnings.append(
                f"no piece layers: {len(big)} file(s) larger than a piece are checked once peers send their hashes"
            )
        return {}
    if not isinstance(raw, dict):
        raise MetainfoError(f"expected a dictionary, got {_kind(raw)}", "piece layers")
    layers: dict[bytes, bytes] = {}
    for f in big:
        if f.pieces_root in layers:
            continue
        where = f"piece layers[{f.pieces_root.hex()}]"
        layer = raw.get(f.pieces_root)
        if layer is None:
            raise MetainfoError(f"missing for {f.path_str!r}", where)
        if not isinstance(layer, bytes):
            raise MetainfoError(f"expected a string, got {_kind(layer)}", where)
        count = -(-f.length // piece_length)
        if len(layer) != count * merkle.HASH_SIZE:
            raise MetainfoError(
                f"{len(layer)} bytes; {f.path_str!r} has {count} pieces, so {count * merkle.HASH_SIZE}", where
            )
        nodes = [layer[i : i + merkle.HASH_SIZE] for i in range(0, len(layer), merkle.HASH_SIZE)]
        if merkle.root_from_piece_layer(nodes, piece_length) != f.pieces_root:
            raise MetainfoError(f"does not hash to the pieces root of {f.path_str!r}", where)
        layers[f.pieces_root] = layer
    return layers


def _piece_length(info: dict[bytes, Any], warnings: list[str]) -> int:
    if b"piece length" not in info:
        raise MetainfoError("missing", "info.piece length")
    piece_length = _int(info[b"piece length"], "info.piece length")
    if piece_length <= 0 or piece_length > MAX_PIECE_LENGTH:
        raise MetainfoError(
            f"{_number(piece_length)} is not between 1 and {MAX_PIECE_LENGTH}", "info.piece length"
        )
    if piece_length & (piece_length - 1) or piece_length < BLOCK_SIZE:
        # libtorrent loads v1 torrents with any positive piece length; so do we, but say so.
        warnings.append(f"piece length {piece_length} is not a power of two of at least 16 KiB")
    return piece_length


def _piece_hashes(pieces: Any) -> bytes:
    if not isinstance(pieces, bytes):
        raise MetainfoError(f"expected a string, got {_kind(pieces)}", "info.pieces")
    if len(pieces) % 20:
        raise MetainfoError(f"length {len(pieces)} is not a multiple of 20", "info.pieces")
    return pieces


def _single_file(info: dict[bytes, Any], name: str, disk_name: str) -> FileEntry:
    """The one file of a single-file torrent."""
    length = _int(info[b"length"], "info.length", MAX_FILE_LENGTH) if b"length" in info else None
    if length is None:
        raise MetainfoError("missing (neither 'length' nor 'files')", "info.length")
    if length < 0:
        raise MetainfoError("negative length", "info.length")
    attr_raw = info.get(b"attr", b"")
    attr = attr_raw.decode("ascii", errors="replace") if isinstance(attr_raw, bytes) else ""
    if _BITCOMET_PAD in disk_name:
        raise MetainfoError("the only file is a padding file (BitComet's name for one)", "info.name")
    return FileEntry(path=(name,), length=length, offset=0, attr=attr, disk_path=(disk_name,))


#: BitComet's padding files predate BEP 47 and say so only in their path (libtorrent
#: looks for this anywhere in the path, the torrent's name included).
def _too_many_files(count: int) -> MetainfoError:
    return MetainfoError(f"{count} files; pytorrent loads at most {MAX_FILES:,} (MAX_FILES)", "info.files")


def check_file_count(data: bytes) -> None:
    """Refuse a torrent with more than ``MAX_FILES`` file entries before decoding it
    (decoding a million entries alone takes seconds and hundreds of MB)."""
    if len(data) <= len(_PATH_KEY) * MAX_FILES:
        return  # too short to hold more keys than that (the v2 key is longer still)
    raw = bytes(data)
    count = max(raw.count(_PATH_KEY), raw.count(_ROOT_KEY))
    if count > MAX_FILES:
        raise _too_many_files(count)


_BITCOMET_PAD = "_____padding_file_"


def _parse_files(
    entries: Any, encoding: str, warnings: list[str], *, bitcomet_padding: bool
) -> list[FileEntry]:
    """The ``files`` list of a multi-file torrent, with sanitised, de-duplicated disk paths.

    ``bitcomet_padding``: the torrent's own name marks every file as padding.
    """
    _check_file_list(entries)
    shown: list[tuple[str, ...]] = []
    cleaned: list[tuple[str, ...]] = []
    lengths: list[int] = []
    attrs: list[str] = []
    padding: list[bool] = []
    links: list[list[bytes] | None] = []
    where_paths: list[str] = []
    total = 0
    for i, entry in enumerate(entries):
        where = f"info.files[{i}]"
        if not isinstance(entry, dict):
            raise MetainfoError(f"expected a dictionary, got {_kind(entry)}", where)
        attr_raw = entry.get(b"attr", b"")
        attr = attr_raw.decode("ascii", errors="replace") if isinstance(attr_raw, bytes) else ""
        length = _file_length(entry, attr, where)
        total += length
        if total > MAX_TOTAL_LENGTH:
            raise MetainfoError(f"the files add up to more than {MAX_TOTAL_LENGTH} bytes", f"{where}.length")
        is_pad = "p" in attr
        path, disk = _file_path(entry, encoding, where, is_pad=is_pad, length=length)
        is_pad = is_pad or bitcomet_padding or any(_BITCOMET_PAD in c for c in disk)
        link = entry.get(b"symlink path")
        links.append(
            [c for c in link if isinstance(c, bytes)]
            if "l" in attr and isinstance(link, list) and all(isinstance(c, bytes) for c in link)
            else None
        )
        shown.append(path)
        cleaned.append(disk)
        lengths.append(length)
        attrs.append(attr)
        padding.append(is_pad)
        where_paths.append(f"{where}.path")

    final = paths.resolve_duplicates(cleaned, padding, lengths, where_paths)
    renamed = sum(1 for a, b in zip(cleaned, final, strict=True) if a != b)
    changed = sum(1 for p, d, pad in zip(shown, final, padding, strict=True) if p != d and not pad)
    if changed:
        warnings.append(
            f"{changed} file path{'s' if changed != 1 else ''} sanitised for disk"
            + (f" ({renamed} renamed to avoid a clash)" if renamed else "")
        )
    real = [d for d, pad in zip(final, padding, strict=True) if not pad]
    file_set = set(real)
    dir_set = {d[:k] for d in real for k in range(1, len(d))}

    files: list[FileEntry] = []
    offset = 0
    for i, disk in enumerate(final):
        target = None
        link = links[i]
        if link is not None and not padding[i]:
            target = paths.symlink_target(link, disk, file_set, dir_set)
            if target is None:
                warnings.append(
                    f"symlink {'/'.join(disk)!r} points outside the torrent: written as an empty file"
                )
        files.append(
            FileEntry(
                path=shown[i],
                length=lengths[i],
                offset=offset,
                padding=padding[i],
                attr=attrs[i],
                disk_path=disk,
                symlink=target,
            )
        )
        offset += lengths[i]
    if all(f.padding for f in files):
        raise MetainfoError("every file is a padding file", "info.files")
    return files


def _check_file_list(entries: Any) -> None:
    if not isinstance(entries, list):
        raise MetainfoError(f"expected a list, got {_kind(entries)}", "info.files")
    if not entries:
        raise MetainfoError("the file list is empty", "info.files")
    if len(entries) > MAX_FILES:
        raise _too_many_files(len(entries))


def _file_length(entry: dict[bytes, Any], attr: str, where: str) -> int:
    """The length of ``info.files[i]``."""
    if "l" in attr:
        # BEP 47: a symlink takes no room in the payload, whatever 'length' says.
        return 0
    if b"length" not in entry:
        raise MetainfoError("missing", f"{where}.length")
    length = _int(entry[b"length"], f"{where}.length", MAX_FILE_LENGTH)
    if length < 0:
        raise MetainfoError("negative length", f"{where}.length")
    return length


def _file_path(
    entry: dict[bytes, Any], encoding: str, where: str, *, is_pad: bool, length: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The path of ``info.files[i]`` as the torrent shows it, and sanitised for disk."""
    utf8 = isinstance(entry.get(b"path.utf-8"), list)
    path_raw = entry[b"path.utf-8"] if utf8 else entry.get(b"path")
    if is_pad and (not isinstance(path_raw, list) or not path_raw):
        # A padding file needs no name (BEP 47); libtorrent files it under .pad/.
        path: tuple[str, ...] = (".pad", str(length))
        return path, path
    if path_raw is None:
        raise MetainfoError("missing", f"{where}.path")
    if not isinstance(path_raw, list):
        raise MetainfoError(f"expected a list, got {_kind(path_raw)}", f"{where}.path")
    if not path_raw:
        raise MetainfoError("empty path", f"{where}.path")
    path = tuple(_text(c, f"{where}.path[{j}]", "" if utf8 else encoding) for j, c in enumerate(path_raw))
    disk = paths.sanitize_path(_disk_bytes(c, encoding, utf8) for c in path_raw)
    return path, disk


def _url_list(value: Any, where: str, warnings: list[str]) -> tuple[str, ...]:
    if isinstance(value, bytes):
        return (_text(value, where),) if value else ()
    if isinstance(value, list):
        return tuple(_text(v, f"{where}[{i}]") for i, v in enumerate(value) if isinstance(v, bytes) and v)
    # libtorrent ignores web seeds of the wrong type; so do we, but say so.
    warnings.append(f"{where}: expected a string or list, got {_kind(value)}; ignored")
    return ()


def _parse(top: dict[bytes, Any], info_bytes: bytes | None) -> Metainfo:
    if info_bytes is None:
        raise MetainfoError("missing", "info")
    encoding = _text(top[b"encoding"], "encoding") if isinstance(top.get(b"encoding"), bytes) else ""
    raw_info = top[b"info"]
    v2_only = isinstance(raw_info, dict) and b"pieces" not in raw_info
    info_hash_v2 = hashlib.sha256(info_bytes).digest()
    info_hash = InfoHash(info_hash_v2[:20] if v2_only else hashlib.sha1(info_bytes).digest())
    info, warnings = _parse_info(raw_info, encoding, info_hash.hex())
    if info.has_v2:
        info = dataclasses.replace(info, piece_layers=_piece_layers(top, info, warnings))

    announce = ""
    if b"announce" in top:
        announce = _text(top[b"announce"], "announce").strip()

    tiers: list[tuple[str, ...]] = []
    if b"announce-list" in top:
        raw_tiers = top[b"announce-list"]
        if not isinstance(raw_tiers, list):
            # libtorrent ignores a malformed announce-list and uses 'announce'.
            warnings.append(f"announce-list: expected a list, got {_kind(raw_tiers)}; ignored")
            raw_tiers = []
        for i, tier in enumerate(raw_tiers):
            if not isinstance(tier, list):
                warnings.append(f"announce-list[{i}]: expected a list, got {_kind(tier)}; ignored")
                continue
            stripped = (_text(x, f"announce-list[{i}][{j}]").strip() for j, x in enumerate(tier))
            urls = tuple(u for u in stripped if u)
            if urls:
                tiers.append(urls)
    # BEP 12: when announce-list is present (and not empty) it replaces announce.
    if not tiers and announce:
        tiers.append((announce,))
    for url in dict.fromkeys(u for tier in tiers for u in tier):
        problem = tracker_url_problem(url)
        if problem is not None:
            warnings.append(f"tracker {problem}; it will be skipped")

    creation_date = top.get(b"creation date")
    return Metainfo(
        info=info,
        info_hash=info_hash,
        info_bytes=info_bytes,
        announce=announce,
        announce_list=tuple(tiers),
        url_list=_url_list(top[b"url-list"], "url-list", warnings) if b"url-list" in top else (),
        httpseeds=_url_list(top[b"httpseeds"], "httpseeds", warnings) if b"httpseeds" in top else (),
        creation_date=creation_date
        if isinstance(creation_date, int) and not isinstance(creation_date, bool)
        else None,
        comment=_text(top[b"comment"], "comment", encoding) if isinstance(top.get(b"comment"), bytes) else "",
        created_by=_text(top[b"created by"], "created by")
        if isinstance(top.get(b"created by"), bytes)
        else "",
        encoding=encoding,
        warnings=tuple(warnings),
        raw=top,
        info_hash_v2=info_hash_v2 if info.has_v2 else None,
    )
