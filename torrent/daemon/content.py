"""The daemon's work on a torrent's content: its files on disk and its names.

Synchronous file work (the daemon runs it through ``asyncio.to_thread``): deleting and
moving the content with the engine's state files, forgetting the resume state, and
``torrent-rename-path`` (a rename is kept as a record of new names; :func:`renamed`
applies it to the :class:`~torrent.proto.metainfo.Metainfo` the engine gets, whose info
hash and ``info`` bytes stay as they are: the engine writes where ``Info.disk_name`` and
``FileEntry.disk_path`` say).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import TYPE_CHECKING, Any

from torrent.types import InfoHash

if TYPE_CHECKING:  # the daemon imports this module before it parses any metainfo
    from torrent.proto.metainfo import Info, Metainfo

__all__ = ["delete_data", "forget_resume", "move_data", "plan_rename", "rename_on_disk", "renamed", "slim"]


def slim(meta: Metainfo, *, fresh: bool = False) -> Metainfo:
    """``meta`` without the decoded ``info`` dict in ``raw`` (``info`` and ``info_bytes``
    hold it already; ``to_bytes`` uses ``info_bytes``): most of a small torrent's memory.

    ``fresh``: ``meta`` was just parsed and nothing else holds it, so its own ``raw``
    dict is trimmed (``raw`` takes no part in comparing or hashing it) instead of
    copying the whole object (a copy was 4 µs of an add's 150)."""
    if b"info" not in meta.raw:
        return meta
    if fresh:
        del meta.raw[b"info"]
        return meta
    return dataclasses.replace(meta, raw={k: v for k, v in meta.raw.items() if k != b"info"})


def plan_rename(
    info: Info, renames: dict[str, Any], path: str, name: str
) -> tuple[dict[str, Any], tuple[str, ...], str]:
    """``(new renames, old on-disk parts below the download dir, new last part)``.

    Raises:
        ValueError: ``path`` is not the torrent's top name or a path inside it.
    """
    parts = tuple(p for p in path.strip("/").split("/") if p)
    if not parts or parts[0] != info.name:
        raise ValueError(f"no such path in the torrent: {path!r}")
    out: dict[str, Any] = {
        "name": renames.get("name", ""),
        "paths": dict(renames.get("paths", {})),
        "disk": dict(renames.get("disk", {})),
    }
    sub = parts[1:]
    if not sub:
        out["name"] = name
        if not info.multi_file:
            out["paths"]["0"] = [name]
            out["disk"]["0"] = [name]
        return out, (info.disk_name,), name
    chosen = [i for i, f in enumerate(info.files) if f.path[: len(sub)] == sub and not f.padding]
    if not info.multi_file or not chosen:
        raise ValueError(f"no such path in the torrent: {path!r}")
    n = len(sub)
    for i in chosen:
        f = info.files[i]
        out["paths"][str(i)] = [*f.path[: n - 1], name, *f.path[n:]]
        out["disk"][str(i)] = [*f.disk_path[: n - 1], name, *f.disk_path[n:]]
    return out, (info.disk_name, *info.files[chosen[0]].disk_path[:n]), name


def renamed(meta: Metainfo, renames: dict[str, Any]) -> Metainfo:
    """``meta`` with the names ``torrent-rename-path`` gave (info hash and bytes unchanged)."""
    if not renames:
        return meta
    info = meta.info
    name = renames.get("name") or info.name
    paths, disk = renames.get("paths", {}), renames.get("disk", {})
    files = tuple(
        dataclasses.replace(f, path=tuple(paths[str(i)]), disk_path=tuple(disk.get(str(i), paths[str(i)])))
        if str(i) in paths
        else f
        for i, f in enumerate(info.files)
    )
    disk_name = name if renames.get("name") else info.disk_name
    return dataclasses.replace(
        meta, info=dataclasses.replace(info, name=name, disk_name=disk_name, files=files)
    )


def rename_on_disk(old: str, last: str) -> None:
    """Rename ``old`` (if there is anything yet) to ``last`` in the same directory.

    Raises:
        OSError: the target exists (``FileExistsError``) or the rename failed.
    """
    new = os.path.join(os.path.dirname(old), last)
    if os.path.lexists(new):
        raise FileExistsError(17, "File exists", new)
    if os.path.lexists(old):
        os.rename(old, new)


def forget_resume(download_dir: str, info_hash: str) -> None:
    """Delete a torrent's resume state and journal: its next start hashes everything."""
    from torrent.disk.storage import state_path

    ih = bytes.fromhex(info_hash)
    for suffix in ("resume", "journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(state_path(download_dir, InfoHash(ih), suffix))


def delete_data(meta: Metainfo | None, download_dir: str, info_hash: str) -> None:
    """Delete the torrent's content (where its names, renamed or not, put it) and its
    engine state files."""
    import glob
    import shutil

    from torrent.disk.storage import state_dir

    if meta is not None:
        content = os.path.join(download_dir, meta.info.disk_name)
        if os.path.isdir(content) and meta.info.multi_file:
            shutil.rmtree(content, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(content)
    for path in glob.glob(os.path.join(state_dir(download_dir), glob.escape(info_hash) + ".*")):
        with contextlib.suppress(OSError):
            os.unlink(path)


def move_data(meta: Metainfo, download_dir: str, info_hash: str, location: str) -> None:
    """Move the content and the engine state files from ``download_dir`` to ``location``.

    Raises:
        OSError: ``location`` cannot be made or written, or a move failed.
    """
    import glob
    import shutil

    from torrent.disk.storage import state_dir

    if os.path.abspath(download_dir) == location:
        return
    os.makedirs(location, exist_ok=True)
    if not os.access(location, os.W_OK | os.X_OK):
        raise PermissionError(13, "Permission denied", location)
    src = os.path.join(download_dir, meta.info.disk_name)
    if os.path.lexists(src):
        shutil.move(src, os.path.join(location, meta.info.disk_name))
    states = glob.glob(os.path.join(state_dir(download_dir), glob.escape(info_hash) + ".*"))
    if states:
        os.makedirs(state_dir(location), exist_ok=True)
        for path in states:
            shutil.move(path, os.path.join(state_dir(location), os.path.basename(path)))
