"""``recvmmsg(2)`` through ctypes: up to ``VLEN`` datagrams in one system call.

Python's socket module has no binding for it, and reading a datagram costs a system call and
about 2 µs here, most of a small datagram's handling. :class:`MultiReader` keeps its message
headers, address and control buffers, and one 64 KiB slot per datagram (a slot holds a GRO
run) in memory of its own, and hands back what one call read: for each datagram its bytes,
its sender as ``recvfrom`` gives it, and the GRO segment size (0 when not a run). Linux only;
:func:`open_reader` returns None where the call is missing.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
import sys
from typing import Any

__all__ = ["VLEN", "MultiReader", "open_reader"]

#: Datagrams read in one call at most.
VLEN = 32
#: Bytes per datagram slot: the largest datagram, and the largest GRO run.
SLOT = 1 << 16
#: Bytes of sender address per slot (``struct sockaddr_storage``).
NAME = 128
#: Bytes of control messages per slot (one ``UDP_GRO``: ``CMSG_SPACE(sizeof(int))``).
CONTROL = 32
MSG_DONTWAIT = 0x40
UDP_GRO = 104
_SOL_UDP = 17
_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)
#: Senders remembered by their raw address (the tuple is made once per sender).
MAX_ADDRESSES = 4096


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


_STRIDE = ctypes.sizeof(_MMsgHdr)
_LEN_AT = _MMsgHdr.msg_len.offset
_NAMELEN_AT = _MsgHdr.msg_namelen.offset
_CONTROLLEN_AT = _MsgHdr.msg_controllen.offset


def open_reader(sock: socket.socket) -> MultiReader | None:
    """A reader for ``sock``, or None (not Linux, or no ``recvmmsg`` in the C library)."""
    if sys.platform != "linux" or _STRIDE % 8 or _LEN_AT % 4 or _CONTROLLEN_AT % 8:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.recvmmsg
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    call.restype = ctypes.c_int
    return MultiReader(sock, call)


class MultiReader:
    """See the module docstring."""

    def __init__(self, sock: socket.socket, call: Any) -> None:
        self._fd = sock.fileno()
        self._call = call
        self._data = mmap.mmap(-1, VLEN * SLOT)  # touched only where datagrams land
        self._names = bytearray(VLEN * NAME)
        self._controls = bytearray(VLEN * CONTROL)
        self._headers = bytearray(VLEN * _STRIDE)
        self._iovs = (_IoVec * VLEN)()
        data = ctypes.addressof(ctypes.c_char.from_buffer(self._data))
        names = ctypes.addressof(ctypes.c_char.from_buffer(self._names))
        controls = ctypes.addressof(ctypes.c_char.from_buffer(self._controls))
        headers = (_MMsgHdr * VLEN).from_buffer(self._headers)
        for i in range(VLEN):
            self._iovs[i].iov_base = data + i * SLOT
            self._iovs[i].iov_len = SLOT
            h = headers[i].msg_hdr
            h.msg_name = names + i * NAME
            h.msg_namelen = NAME
            h.msg_iov = ctypes.addressof(self._iovs[i])
            h.msg_iovlen = 1
            h.msg_control = controls + i * CONTROL
            h.msg_controllen = CONTROL
        del headers
        self._template = bytes(self._headers)  # what the kernel overwrites, reset per call
        self._headers_at = ctypes.addressof(ctypes.c_char.from_buffer(self._headers))
        self._u32 = memoryview(self._headers).cast("I")
        self._u64 = memoryview(self._headers).cast("Q")
        self._view = memoryview(self._data)
        self._name_view = memoryview(self._names)
        self._addresses: dict[bytes, Any] = {}

    def read(self) -> list[tuple[memoryview, Any, int]]:
        """What one call read (empty when nothing waits): (datagram, sender, GRO segment
        size); each datagram is a view valid until the next call.

        Raises:
            OSError: the call failed for another reason than an empty queue.
        """
        self._headers[:] = self._template
        n = self._call(self._fd, self._headers_at, VLEN, MSG_DONTWAIT, None)
        if n <= 0:
            if n < 0:
                err = ctypes.get_errno()
                if err not in _AGAIN:
                    raise OSError(err, os.strerror(err))
            return []
        u32, u64, view, names = self._u32, self._u64, self._view, self._name_view
        addresses = self._addresses
        out: list[tuple[memoryview, Any, int]] = []
        for i in range(n):
            at = i * _STRIDE
            size = u32[(at + _LEN_AT) >> 2]
            key = names[i * NAME : i * NAME + u32[(at + _NAMELEN_AT) >> 2]].tobytes()
            addr = addresses.get(key)
            if addr is None:
                addr = self._address(key)
            segment = self._segment(i) if u64[(at + _CONTROLLEN_AT) >> 3] else 0
            out.append((view[i * SLOT : i * SLOT + size], addr, segment))
        return out

    def _address(self, key: bytes) -> Any:
        family = int.from_bytes(key[:2], sys.byteorder)
        port = int.from_bytes(key[2:4], "big")
        if family == socket.AF_INET:
            addr: Any = (socket.inet_ntop(socket.AF_INET, key[4:8]), port)
        elif family == socket.AF_INET6 and len(key) >= 28:
            addr = (
                socket.inet_ntop(socket.AF_INET6, key[8:24]),
                port,
                int.from_bytes(key[4:8], "big"),
                int.from_bytes(key[24:28], sys.byteorder),
            )
        else:
            addr = None
        if len(self._addresses) >= MAX_ADDRESSES:
            self._addresses.clear()
        self._addresses[key] = addr
        return addr

    def _segment(self, i: int) -> int:
        """The GRO segment size in slot ``i``'s control messages (0: none)."""
        c = self._controls
        at = i * CONTROL
        length = int.from_bytes(c[at : at + 8], sys.byteorder)
        level = int.from_bytes(c[at + 8 : at + 12], sys.byteorder)
        kind = int.from_bytes(c[at + 12 : at + 16], sys.byteorder)
        if length >= 20 and level == _SOL_UDP and kind == UDP_GRO:
            return int.from_bytes(c[at + 16 : at + 20], sys.byteorder)
        return 0

    def close(self) -> None:
        self._u32.release()
        self._u64.release()
        self._view.release()
        self._name_view.release()
