"""Hypothesis over uTP's send buffer: any mix of writes and takes gives back the bytes written,
in order, and none twice."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from torrent.proto.utp.sendbuf import SendBuffer

WRITE = st.tuples(st.just("write"), st.binary(max_size=3000), st.sampled_from(["bytes", "bytearray", "view"]))
TAKE = st.tuples(st.just("take"), st.integers(0, 5000), st.just(""))


@given(st.lists(st.one_of(WRITE, TAKE), max_size=60))
def test_takes_return_the_written_bytes_in_order(ops: list[tuple[str, object, str]]) -> None:
    buf = SendBuffer()
    written = bytearray()
    taken = bytearray()
    for op, arg, kind in ops:
        if op == "write":
            assert isinstance(arg, bytes)
            data: bytes | bytearray | memoryview = (
                arg if kind == "bytes" else bytearray(arg) if kind == "bytearray" else memoryview(arg)
            )
            buf.append(data)
            if isinstance(data, bytearray):
                data[:] = b"x" * len(data)  # the writer reuses its buffer: the queued copy stays
            written += arg
        else:
            assert isinstance(arg, int)
            before = len(buf)
            got = buf.take(arg)
            assert isinstance(got, bytes)
            assert len(got) == min(arg, before)
            assert len(buf) == before - len(got)
            taken += got
        assert len(buf) == len(written) - len(taken)
    taken += buf.take(len(buf))
    assert bytes(taken) == bytes(written)
    assert len(buf) == 0


def test_clear_empties_it() -> None:
    buf = SendBuffer()
    buf.append(b"abc")
    buf.append(memoryview(b"defg"))
    assert buf.take(2) == b"ab"
    buf.clear()
    assert len(buf) == 0
    assert buf.take(10) == b""
    buf.append(b"xyz")
    assert buf.take(10) == b"xyz"
