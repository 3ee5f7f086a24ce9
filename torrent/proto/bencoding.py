"""Bencoding (BEP 3): decode, encode, and find the raw bytes of a dict value.

This is the only module that imports ``bencodepy``. Byte strings stay ``bytes``
throughout; dict keys are ``bytes``. Every failure is a :class:`BencodeError`.

``bencodepy`` accepts unsorted and duplicate dict keys and reports no offsets, so
:func:`decode_with_info_span` walks the top-level dict itself to find the exact bytes
of ``info``: the info hash is the SHA-1 of those bytes as they stand in the file.
"""

from __future__ import annotations

from torrent.errors import BencodeError

#: ``typing`` is not imported at run time (``pytorrent create`` encodes without it).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeAlias

    #: Decoded bencoding: int, bytes, list of values, or dict with bytes keys.
    Value: TypeAlias = int | bytes | list[Any] | dict[bytes, Any]
else:
    Value = int | bytes | list | dict

#: Deepest nesting we decode; real metainfo nests four or five levels.
MAX_DEPTH = 64

#: The bencodepy decoder, made on first use: importing bencodepy pulls in pathlib and
#: urllib.parse (~6 ms), which encoding (all ``pytorrent create`` needs) does without.
_decoder: Any = None


def _bencodepy() -> Any:
    global _decoder
    import bencodepy  # type: ignore[import-untyped]  # ships no type information

    if _decoder is None:
        _decoder = bencodepy.BencodeDecoder(max_depth=MAX_DEPTH)
    return bencodepy


def decode(data: bytes) -> Any:
    """Decode one complete bencoded value.

    Raises:
        BencodeError: ``data`` is not exactly one valid bencoded value.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BencodeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise BencodeError("empty input")
    bencodepy = _bencodepy()
    try:
        return _decoder.decode(data)
    except bencodepy.BencodeDecodeError as exc:
        raise BencodeError(str(exc)) from None
    except (RecursionError, MemoryError, OverflowError, ValueError, TypeError, IndexError, KeyError):
        raise BencodeError("not a valid bencoded value") from None


def encode(value: Any) -> bytes:
    """Encode ``value`` (int, bytes, str, list, tuple, dict) as bencoding.

    Dict keys are sorted as raw bytes, as BEP 3 requires.

    Raises:
        BencodeError: ``value`` holds something bencoding cannot express.
    """
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _encode(value: Any, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise BencodeError("value nested too deeply to encode")
    if isinstance(value, Raw):
        out.append(bytes(value))
    elif isinstance(value, bool):
        raise BencodeError("cannot bencode a bool")
    elif isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out, depth + 1)
        out.append(b"e")
    elif isinstance(value, dict):
        items: list[tuple[bytes, Any]] = []
        for key, item in value.items():
            if isinstance(key, str):
                key = key.encode("utf-8")
            if not isinstance(key, bytes):
                raise BencodeError(f"dict key must be bytes or str, not {type(key).__name__}")
            items.append((key, item))
        items.sort(key=lambda kv: kv[0])
        out.append(b"d")
        for key, item in items:
            out.append(b"%d:" % len(key))
            out.append(key)
            _encode(item, out, depth + 1)
        out.append(b"e")
    else:
        raise BencodeError(f"cannot bencode {type(value).__name__}")


def _skip(data: bytes, pos: int, depth: int = 0) -> int:
    """Return the offset just past the bencoded value starting at ``pos``.

    Iterative (a nesting counter, no recursion): it walks every token of the ``info``
    dict of each torrent read, tens of thousands for a large multi-file torrent.
    """
    n = len(data)
    find = data.find
    level = 0
    while True:
        if pos >= n:
            raise BencodeError("truncated value" if level == 0 else "unterminated list or dict")
        lead = data[pos]
        if 0x30 <= lead <= 0x39:
            colon = find(b":", pos)
            if colon < 0 or colon - pos > 20:
                raise BencodeError("bad string length")
            pos = colon + 1 + int(data[pos:colon])
            if pos > n:
                raise BencodeError("truncated string")
        elif lead == 0x65 and level:  # e: closes a list or dict
            level -= 1
            pos += 1
        elif lead == 0x69:  # i
            end = find(b"e", pos + 1)
            if end < 0:
                raise BencodeError("unterminated integer")
            pos = end + 1
        elif lead == 0x6C or lead == 0x64:  # l, d
            level += 1
            if depth + level > MAX_DEPTH + 1:
                raise BencodeError("nested too deeply")
            pos += 1
            continue
        else:
            raise BencodeError(f"unexpected byte {lead:#04x} at offset {pos}")
        if level == 0:
            return pos


def value_end(data: bytes) -> int:
    """Offset just past the first bencoded value of ``data`` (what follows is not read).

    Raises:
        BencodeError: ``data`` does not start with a complete bencoded value.
    """
    return _skip(bytes(data), 0)


def find_value_span(data: bytes, key: bytes) -> tuple[int, int] | None:
    """Return ``(start, end)`` of the value of ``key`` in the top-level dict of ``data``.

    The last occurrence wins when a key repeats, matching what a dict decode keeps.
    Returns ``None`` when the key is absent. ``data`` must already be known to decode.
    """
    if not data.startswith(b"d"):
        return None
    pos = 1
    found: tuple[int, int] | None = None
    while pos < len(data) and data[pos] != 0x65:
        key_end = _skip(data, pos)
        colon = data.index(b":", pos)
        this_key = data[colon + 1 : key_end]
        value_end = _skip(data, key_end)
        if this_key == key:
            found = (key_end, value_end)
        pos = value_end
    return found


def decode_with_info_span(data: bytes) -> tuple[dict[bytes, Any], bytes | None]:
    """Decode a metainfo file and return it with the raw bytes of its ``info`` value.

    Returns:
        ``(top_level_dict, raw_info_bytes)``; ``raw_info_bytes`` is ``None`` when the
        dict has no ``info`` key.

    Raises:
        BencodeError: ``data`` is not bencoded, or is not a dict at the top.
    """
    value = decode(data)
    if not isinstance(value, dict):
        raise BencodeError("top level is not a dictionary")
    span = find_value_span(bytes(data), b"info")
    raw = bytes(data[span[0] : span[1]]) if span else None
    return value, raw


class Raw(bytes):
    """Bytes that are already bencoded; :func:`encode` copies them verbatim.

    Used to write a metainfo file back with its ``info`` value byte-for-byte as it was
    read, so its info hash cannot change.
    """
