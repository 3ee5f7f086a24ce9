"""A compact set of piece indexes stored as a BEP 3 bitfield.

``PieceSet(size)`` behaves like a mutable ``set[int]`` restricted to ``range(size)``: ``add``,
``discard``, ``in``, ``len`` (the number of pieces present, cached so it is O(1)), iteration in
ascending order, and ``&``/``|``/``-`` with another set of the same size. Its wire form is the
BEP 3 bitfield: the high bit of the first byte is piece 0, and the spare bits at the end of the last
byte are zero. :meth:`PieceSet.from_bytes` enforces exactly that.

The peer wire codec (``torrent.proto.wire``) keeps each peer's pieces in one; the piece picker can use
the same type for its own bookkeeping. No I/O, no dependencies.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

# For every byte value, the positions (0 = most significant bit) of its set bits.
_BIT_POSITIONS: tuple[tuple[int, ...], ...] = tuple(
    tuple(bit for bit in range(8) if value & (0x80 >> bit)) for value in range(256)
)


class PieceSet:
    """A set of piece indexes in ``range(size)``, stored one bit per piece.

    Args:
        size: number of pieces in the torrent (the bitfield's length in bits).

    Raises:
        ValueError: ``size`` is negative.
    """

    __slots__ = ("_bits", "_count", "_size")

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        self._size = size
        self._bits = bytearray((size + 7) // 8)
        self._count = 0

    # -- constructors -----------------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, size: int) -> PieceSet:
        """Build a set from a BEP 3 bitfield.

        Raises:
            ValueError: ``data`` is not exactly ``ceil(size / 8)`` bytes long, or a spare bit
                past ``size`` is set.
        """
        expected = (size + 7) // 8
        if len(data) != expected:
            raise ValueError(f"bitfield is {len(data)} bytes, a torrent of {size} pieces needs {expected}")
        spare = expected * 8 - size
        if spare and data[-1] & ((1 << spare) - 1):
            raise ValueError("bitfield has spare bits set past the last piece")
        new = cls.__new__(cls)
        new._size = size
        new._bits = bytearray(data)
        new._count = int.from_bytes(new._bits, "big").bit_count()
        return new

    @classmethod
    def full(cls, size: int) -> PieceSet:
        """A set holding every piece (a seed's set, or the meaning of BEP 6 ``have all``)."""
        new = cls(size)
        if size:
            new._bits[:] = b"\xff" * len(new._bits)
            spare = len(new._bits) * 8 - size
            if spare:
                new._bits[-1] &= 0xFF ^ ((1 << spare) - 1)
        new._count = size
        return new

    @classmethod
    def from_indexes(cls, indexes: Iterable[int], size: int) -> PieceSet:
        """A set holding ``indexes``. Raises ``IndexError`` for an index outside ``range(size)``."""
        new = cls(size)
        for index in indexes:
            new.add(index)
        return new

    # -- queries ----------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """How many pieces the torrent has (not how many are in the set: that is ``len()``)."""
        return self._size

    def __len__(self) -> int:
        return self._count

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int) or not 0 <= index < self._size:
            return False
        return bool(self._bits[index >> 3] & (0x80 >> (index & 7)))

    def __iter__(self) -> Iterator[int]:
        positions = _BIT_POSITIONS
        for byte_index, value in enumerate(self._bits):
            if value:
                base = byte_index << 3
                for bit in positions[value]:
                    yield base + bit

    def missing(self) -> Iterator[int]:
        """The indexes in ``range(size)`` that are *not* in the set, ascending."""
        positions = _BIT_POSITIONS
        size = self._size
        for byte_index, value in enumerate(self._bits):
            if value != 0xFF:
                base = byte_index << 3
                for bit in positions[value ^ 0xFF]:
                    if base + bit < size:
                        yield base + bit

    def is_full(self) -> bool:
        """True when every piece is in the set (a seed)."""
        return self._count == self._size

    def to_bytes(self) -> bytes:
        """The BEP 3 bitfield: ``ceil(size / 8)`` bytes, spare bits zero."""
        return bytes(self._bits)

    def copy(self) -> PieceSet:
        new = PieceSet.__new__(PieceSet)
        new._size = self._size
        new._bits = bytearray(self._bits)
        new._count = self._count
        return new

    # -- updates ----------------------------------------------------------------------------------

    def add(self, index: int) -> bool:
        """Add ``index``; return True if it was not there before.

        Raises:
            IndexError: ``index`` is outside ``range(size)``.
        """
        if not 0 <= index < self._size:
            raise IndexError(f"piece {index} out of range for {self._size} pieces")
        mask = 0x80 >> (index & 7)
        byte = self._bits[index >> 3]
        if byte & mask:
            return False
        self._bits[index >> 3] = byte | mask
        self._count += 1
        return True

    def discard(self, index: int) -> bool:
        """Remove ``index`` if present; return True if it was there."""
        if not 0 <= index < self._size:
            return False
        mask = 0x80 >> (index & 7)
        byte = self._bits[index >> 3]
        if not byte & mask:
            return False
        self._bits[index >> 3] = byte & ~mask
        self._count -= 1
        return True

    def clear(self) -> None:
        self._bits[:] = bytes(len(self._bits))
        self._count = 0

    # -- set algebra (whole-set operations run in C through int) -------------------------------

    def _combine(self, other: PieceSet, op: str) -> PieceSet:
        if not isinstance(other, PieceSet):
            return NotImplemented
        if other._size != self._size:
            raise ValueError(f"piece sets of different sizes ({self._size} and {other._size})")
        a = int.from_bytes(self._bits, "big")
        b = int.from_bytes(other._bits, "big")
        value = a & b if op == "&" else a | b if op == "|" else a & ~b
        new = PieceSet.__new__(PieceSet)
        new._size = self._size
        new._bits = bytearray(value.to_bytes(len(self._bits), "big"))
        new._count = value.bit_count()
        return new

    def __and__(self, other: PieceSet) -> PieceSet:
        return self._combine(other, "&")

    def __or__(self, other: PieceSet) -> PieceSet:
        return self._combine(other, "|")

    def __sub__(self, other: PieceSet) -> PieceSet:
        return self._combine(other, "-")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PieceSet):
            return NotImplemented
        return self._size == other._size and self._bits == other._bits

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"PieceSet(size={self._size}, count={self._count})"
