"""The watch directory: a ``.torrent`` dropped there is added, then renamed.

As Transmission does: ``x.torrent`` becomes ``x.torrent.added`` once added (or found
to be a duplicate), ``x.torrent.invalid`` when it is not a valid torrent (with a log
line). The directory is listed every ``interval_s`` (one timer for the whole
directory); a file is read only once its size stopped changing between two listings,
so a file still being written is not taken half-way.
"""

from __future__ import annotations

import asyncio
import logging
import os

from torrent.daemon.service import Daemon, DaemonError
from torrent.errors import MetainfoError

__all__ = ["watch_directory"]

log = logging.getLogger(__name__)

#: A .torrent larger than this is not read (it would be invalid anyway).
MAX_TORRENT_BYTES = 16 * 1024 * 1024


def _scan(path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with os.scandir(path) as it:
            for entry in it:
                if entry.name.endswith(".torrent") and entry.is_file():
                    out[entry.path] = entry.stat().st_size
    except OSError as exc:
        log.warning("watch dir %s: %s", path, exc.strerror or exc)
    return out


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(MAX_TORRENT_BYTES + 1)


def _rename(path: str, suffix: str) -> None:
    try:
        os.replace(path, path + suffix)
    except OSError as exc:
        log.warning("watch dir: cannot rename %s: %s", path, exc.strerror or exc)


async def watch_directory(daemon: Daemon, path: str, *, interval_s: float = 2.0) -> None:
    """Add every ``.torrent`` that appears in ``path``, until cancelled."""
    sizes: dict[str, int] = {}
    while True:
        seen = await asyncio.to_thread(_scan, path)
        for file, size in seen.items():
            if sizes.get(file) != size:
                continue  # new or still growing: take it on the next listing
            await _take(daemon, file)
        sizes = seen
        await asyncio.sleep(interval_s)


async def _take(daemon: Daemon, file: str) -> None:
    try:
        data = await asyncio.to_thread(_read, file)
    except OSError as exc:
        log.warning("watch dir: cannot read %s: %s", file, exc.strerror or exc)
        return
    try:
        if len(data) > MAX_TORRENT_BYTES:
            raise MetainfoError(f"larger than {MAX_TORRENT_BYTES} bytes")
        record, added = daemon.add(metainfo=data)
        await daemon.committed()  # stored before the file is renamed
    except DaemonError as exc:
        log.warning("watch dir: %s not added: %s", file, exc)
        return
    except MetainfoError as exc:
        log.warning("watch dir: %s is not a valid torrent (%s); renamed .invalid", file, exc)
        await asyncio.to_thread(_rename, file, ".invalid")
        return
    log.info("watch dir: %s %s as torrent %d", file, "added" if added else "already present", record.id)
    await asyncio.to_thread(_rename, file, ".added")
