"""From the paths a torrent names to the paths we write (BEP 3 file lists, BEP 47 attributes).

A torrent's ``name`` and ``path`` components are untrusted bytes. Instead of refusing the
odd ones (torrents made on Windows, with long names or with two files of one name are
common), they are *sanitised* the way libtorrent does it, so that a torrent loads here
exactly when it loads there and its files land at the same relative paths:

1. Each component is read as UTF-8 one code point at a time. NUL, ``/`` and ``\\`` are dropped
   (a component can never hold a separator), and so are the invisible Unicode format
   characters that can make one name look like another (bidi overrides, zero-width
   spaces, the byte order mark). An invalid UTF-8 sequence, a C0 or C1 control
   character or DEL becomes ``_``.
2. A component longer than 240 bytes is cut there, keeping its extension (a ``.`` in
   its last ten bytes), so no component reaches the 255 bytes file systems allow.
3. A path component that is empty, or is only one or two dots once cleaned (``.``,
   ``..``, ``/``), becomes ``_``: it is kept as a component so no two files merge, and
   it can never climb out of the directory. An absolute path (``/etc/passwd`` as one
   component) loses its separators and so becomes relative.
4. The torrent's ``name`` is cleaned the same way; when nothing usable is left, a
   multi-file torrent's directory is named after its info hash (hex), and a
   single-file torrent is refused.
5. Two files whose cleaned paths are equal ignoring ASCII case (or a file equal to a
   directory of another file, ignoring case) are told apart by numbering the later
   one: ``bar.txt``, ``bar.1.txt``, ``bar.2.txt``. The directories of every file are
   reserved first, so a file never takes a directory's name. More than
   :data:`MAX_DUPLICATE_PROBES` clashes and the torrent is refused (a torrent of
   thousands of files with one name would otherwise cost quadratic time).
6. Exception: a file whose cleaned path is *exactly* a directory of another file (``a``
   and ``a/b``). libtorrent renames the file to ``a.1``; we refuse the torrent, because
   such a file list has no faithful layout on any file system, and a client that
   creates ``a`` first and then needs ``a/`` leaves a stray file behind.

Everything here is pure: strings and bytes in, strings out. The info hash never
changes: it is the SHA-1 of the raw ``info`` bytes, whatever the names become.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from torrent.errors import MetainfoError

#: Bytes of a cleaned component after which only the extension is kept (libtorrent's
#: threshold: with a short extension the result stays below 255 bytes).
TRUNCATE_AT_BYTES = 240
#: How far from the end of a long component an extension's ``.`` may be.
EXTENSION_WINDOW = 10
#: Name clashes tolerated while numbering duplicates (libtorrent's default limit).
MAX_DUPLICATE_PROBES = 500
#: What a component that cleans to nothing becomes.
PLACEHOLDER = "_"

#: Zero-width, invisible and direction-changing format characters: dropped, because
#: they let ``evil\u202etxt.exe`` pass for another name.
_INVISIBLE = frozenset(
    [
        0x061C,
        0xFEFF,
        *range(0x200B, 0x2010),
        *range(0x202A, 0x202F),
        *range(0x2060, 0x2065),
        *range(0x2066, 0x206A),
    ]
)
_DOT, _SLASH, _BACKSLASH = 0x2E, 0x2F, 0x5C
#: Any character the slow path would drop or replace: a name without one (and short
#: enough, and not only dots) comes out unchanged, so the common case skips the loop.
_NEEDS_WORK = re.compile(
    "[\x00-\x1f\x7f-\x9f/\\\\\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)


def _code_point(data: bytes, i: int) -> tuple[int, int]:
    """Decode the UTF-8 sequence at ``data[i]``: ``(code point or -1 if invalid, bytes used)``."""
    lead = data[i]
    if lead < 0x80:
        return lead, 1
    if lead >> 5 == 0b110:
        n, value = 2, lead & 0x1F
    elif lead >> 4 == 0b1110:
        n, value = 3, lead & 0x0F
    elif lead >> 3 == 0b11110:
        n, value = 4, lead & 0x07
    elif lead >> 2 == 0b111110:
        n, value = 5, 0  # never valid, but skipped as one unit
    else:
        return -1, 1
    if n > len(data) - i:
        return -1, len(data) - i
    if n > 4:
        return -1, n
    for k in range(1, n):
        b = data[i + k]
        if not 0x80 <= b <= 0xBF:
            return -1, n
        value = (value << 6) | (b & 0x3F)
    overlong = value < (0x80, 0x800, 0x10000)[n - 2]
    if overlong or value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
        return -1, n
    return value, n


def _printable(cp: int) -> bool:
    return not (cp < 0x20 or cp == 0x7F or 0x80 <= cp <= 0x9F)


def sanitize_component(raw: bytes, *, keep: bool = True) -> str:
    """Clean one path component (see the module rules 1 to 3).

    Args:
        raw: the component's bytes as the torrent has them.
        keep: a component that cleans to nothing (empty, ``.``, ``..``) becomes ``_``;
            with ``keep=False`` it becomes ``""`` instead (used for the torrent name).

    Returns:
        A non-empty component with no separator and no control character, at most
        ``TRUNCATE_AT_BYTES`` bytes plus a short extension; or ``""`` (``keep=False``).
    """
    if len(raw) < TRUNCATE_AT_BYTES and raw.strip(b"."):
        # Fast path: short, not only dots, valid UTF-8 (Python's decoder refuses
        # surrogates and overlong forms too) and nothing to drop or replace.
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            if not _NEEDS_WORK.search(text):
                return text
    return _sanitize_slow(raw, keep)


def _sanitize_slow(raw: bytes, keep: bool) -> str:
    """:func:`sanitize_component`, one code point at a time."""
    if not raw:
        return PLACEHOLDER
    out = bytearray()
    dots = 0
    extension_taken = False
    i, n = 0, len(raw)
    while i < n:
        cp, size = _code_point(raw, i)
        if cp in (0, _SLASH, _BACKSLASH) or cp in _INVISIBLE:
            i += size
            continue
        if cp < 0 or not _printable(cp):
            out += b"_"
            i += size
            continue
        out += raw[i : i + size]
        dots += cp == _DOT
        if len(out) >= TRUNCATE_AT_BYTES and not extension_taken:
            # Keep the extension, if the name has one near its end; else stop here.
            dot = raw.rfind(b".", max(n - EXTENSION_WINDOW, i) + 1)
            if dot < 0:
                break
            extension_taken = True
            i = dot
            continue
        i += size
    if len(out) == dots and dots <= 2:
        return PLACEHOLDER if keep else ""
    return out.decode("utf-8")


def sanitize_name(raw: bytes, *, multi_file: bool, info_hash_hex: str) -> str | None:
    """The directory (multi-file) or file (single-file) name to write, or None if unusable."""
    name = sanitize_component(raw, keep=False) if raw else (PLACEHOLDER if multi_file else "")
    if name:
        return name
    return info_hash_hex if multi_file else None


def sanitize_path(components: Iterable[bytes]) -> tuple[str, ...]:
    """Clean every component of a file's path (none is ever dropped)."""
    return tuple(sanitize_component(c) for c in components)


def _split_extension(component: str) -> tuple[str, str]:
    dot = component.rfind(".")
    return (component, "") if dot < 0 else (component[:dot], component[dot:])


def resolve_duplicates(
    paths: Sequence[tuple[str, ...]], padding: Sequence[bool], sizes: Sequence[int], where: Sequence[str]
) -> list[tuple[str, ...]]:
    """Number files whose cleaned paths clash (module rules 5 and 6).

    Args:
        paths: each file's cleaned path, in ``info`` order.
        padding: True for BEP 47 padding files (they clash with one another freely
            when their sizes agree: they are never written).
        sizes: each file's length.
        where: each file's key path, for errors.

    Returns:
        The paths, with later duplicates renamed.

    Raises:
        MetainfoError: a file is exactly a directory of another file, or the torrent
            has more than :data:`MAX_DUPLICATE_PROBES` name clashes.
    """
    directories: dict[tuple[str, ...], int] = {}
    for index, path in enumerate(paths):
        for depth in range(1, len(path)):
            directories.setdefault(path[:depth], index)
    for index, path in enumerate(paths):
        if not padding[index] and path in directories:
            other = directories[path]
            raise MetainfoError(
                f"file {'/'.join(path)!r} is also the directory of {'/'.join(paths[other])!r} "
                f"({where[other]}); no file system can hold both",
                where[index],
            )

    taken: dict[tuple[str, ...], int] = {tuple(c.lower() for c in d): -1 for d in directories}
    out: list[tuple[str, ...]] = []
    probes = 0
    for index, path in enumerate(paths):
        key = tuple(c.lower() for c in path)
        clash = taken.get(key)
        if clash is None:
            taken[key] = index
            out.append(path)
            continue
        other = clash
        if other >= 0 and padding[index] and padding[other] and sizes[index] == sizes[other]:
            out.append(path)
            continue
        base, ext = _split_extension(path[-1])
        number = 0
        while True:
            number += 1
            candidate = (*path[:-1], f"{base}.{number}{ext}")
            candidate_key = tuple(c.lower() for c in candidate)
            if candidate_key not in taken:
                break
            probes += 1
            if probes > MAX_DUPLICATE_PROBES:
                raise MetainfoError(f"more than {MAX_DUPLICATE_PROBES} clashing file names", where[index])
        taken[candidate_key] = index
        out.append(candidate)
    return out


def symlink_target(
    target: Sequence[bytes],
    link: tuple[str, ...],
    files: set[tuple[str, ...]],
    directories: set[tuple[str, ...]],
) -> tuple[str, ...] | None:
    """Where a BEP 47 symlink may point, relative to the torrent's top directory.

    ``.`` and ``..`` components are dropped (BEP 47 forbids them) and the rest cleaned
    like any path, so the target is a path *inside* the torrent by construction. It is
    accepted only when it names one of the torrent's files or directories (taken from
    the top directory, or else from the link's own directory); anything else (an
    absolute path, a target outside the torrent or missing from it) gives None: the
    entry is then an ordinary empty file, never a link.
    """
    if not target or target[0].startswith((b"/", b"\\")):
        return None  # absolute: never followed
    cleaned = tuple(sanitize_component(c) for c in target if c not in (b".", b".."))
    if not cleaned:
        return None
    if cleaned in files or cleaned in directories:
        return cleaned if cleaned != link else None
    relative = (*link[:-1], *cleaned)
    if relative != link and (relative in files or relative in directories):
        return relative
    return None
