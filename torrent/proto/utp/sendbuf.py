"""The bytes a uTP connection was given to send and has not yet cut into packets.

A ``bytearray`` that is appended to at the end and consumed a packet at a time from the front
looks like the obvious choice, but CPython copies all of it whenever its live part drops below
half of what it holds or grows past it after a front deletion: with a window's worth (about
1 MiB) queued, that costs some 6 µs per 1,400-byte packet, more than the rest of the sending
side. :class:`SendBuffer` keeps the writes as they came and an offset into the first one, so
each byte is copied once on the way in (the writer may reuse its buffer) and once into its
packet.
"""

from __future__ import annotations

from collections import deque

__all__ = ["SendBuffer"]


class SendBuffer:
    """A FIFO of bytes: :meth:`append` at the end, :meth:`take` from the front."""

    __slots__ = ("_chunks", "_offset", "_size")

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # into _chunks[0]
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Queue a copy of ``data`` (a ``bytes`` object is kept as it is: it cannot change)."""
        chunk = data if type(data) is bytes else bytes(data)
        if chunk:
            self._chunks.append(chunk)
            self._size += len(chunk)

    def take(self, n: int) -> bytes:
        """The first ``n`` bytes (fewer if fewer are queued), removed from the buffer."""
        n = min(n, self._size)
        if n <= 0:
            return b""
        self._size -= n
        chunks = self._chunks
        head = chunks[0]
        start = self._offset
        end = start + n
        if end < len(head):
            self._offset = end
            return head[start:end]
        if end == len(head):
            chunks.popleft()
            self._offset = 0
            return head[start:] if start else head
        parts = [head[start:] if start else head]
        chunks.popleft()
        need = n - (len(head) - start)
        while need:
            chunk = chunks[0]
            if len(chunk) > need:
                parts.append(chunk[:need])
                self._offset = need
                break
            parts.append(chunk)
            chunks.popleft()
            need -= len(chunk)
        else:
            self._offset = 0
        return b"".join(parts)

    def clear(self) -> None:
        self._chunks.clear()
        self._offset = 0
        self._size = 0
