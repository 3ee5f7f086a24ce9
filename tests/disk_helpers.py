"""Build small in-memory torrents for the storage, diskio and resume tests."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from torrent.proto.metainfo import FileEntry, Info
from torrent.types import InfoHash

#: ("a/b.txt", 100) is a file of 100 random bytes; ("pad", 50, True) a padding file.
FileSpec = tuple[str, int] | tuple[str, int, bool]


@dataclass(frozen=True)
class Fixture:
    info: Info
    info_hash: InfoHash
    payload: bytes

    def piece(self, index: int) -> bytes:
        plen = self.info.piece_length
        return self.payload[index * plen : index * plen + self.info.piece_size(index)]

    def file_bytes(self, index: int) -> bytes:
        f = self.info.files[index]
        return self.payload[f.offset : f.offset + f.length]


def make_torrent(
    files: Sequence[FileSpec], piece_length: int, *, name: str = "t", multi: bool = True, seed: int = 1
) -> Fixture:
    """A torrent whose payload is random bytes (zeros in padding files)."""
    rng = random.Random(seed)
    entries: list[FileEntry] = []
    chunks: list[bytes] = []
    offset = 0
    for spec in files:
        path, length = spec[0], spec[1]
        padding = len(spec) > 2 and bool(spec[2])
        data = bytes(length) if padding else rng.randbytes(length)
        entries.append(
            FileEntry(
                path=tuple(path.split("/")) if multi else (name,),
                length=length,
                offset=offset,
                padding=padding,
                attr="p" if padding else "",
            )
        )
        chunks.append(data)
        offset += length
    payload = b"".join(chunks)
    hashes = b"".join(
        hashlib.sha1(payload[i : i + piece_length]).digest() for i in range(0, len(payload), piece_length)
    )
    info = Info(name=name, piece_length=piece_length, pieces=hashes, files=tuple(entries), multi_file=multi)
    return Fixture(info, InfoHash(hashlib.sha1(hashes + name.encode()).digest()), payload)


def can_mount() -> bool:
    return os.geteuid() == 0 and os.path.exists("/bin/mount")


@contextlib.contextmanager
def tmpfs(size: str = "1m", *, read_only: bool = False) -> Iterator[str]:
    """Mount a small tmpfs in a fresh temp dir; unmounted and removed afterwards."""
    where = tempfile.mkdtemp(prefix="pytorrent-tmpfs-")
    opts = f"size={size}" + (",ro" if read_only else "")
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", where], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        os.rmdir(where)
        raise
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", where], check=False, capture_output=True)
        os.rmdir(where)
