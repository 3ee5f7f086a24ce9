"""ut_metadata decoder: round trips, and random bytes raise only our error."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from torrent.errors import RemoteProtocolError
from torrent.proto.ut_metadata import (
    METADATA_PIECE_SIZE,
    MetadataData,
    MetadataReject,
    MetadataRequest,
    decode,
    encode,
)

pieces = st.integers(min_value=0, max_value=2**40)
messages = st.one_of(
    st.builds(MetadataRequest, pieces),
    st.builds(MetadataReject, pieces),
    st.builds(
        MetadataData,
        pieces,
        st.integers(min_value=1, max_value=2**40),
        st.binary(max_size=METADATA_PIECE_SIZE),
    ),
)


@given(messages)
def test_roundtrip(msg: MetadataRequest | MetadataReject | MetadataData) -> None:
    raw = encode(msg)
    assert decode(raw) == msg
    assert encode(decode(raw)) == raw


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_our_error(raw: bytes) -> None:
    try:
        decode(raw)
    except RemoteProtocolError:
        pass


@given(messages, st.integers(min_value=0, max_value=60), st.binary(min_size=1, max_size=3))
def test_mutated_messages_raise_only_our_error(msg: MetadataRequest, pos: int, junk: bytes) -> None:
    raw = encode(msg)
    mutated = raw[:pos] + junk + raw[pos + len(junk) :]
    try:
        decode(mutated)
    except RemoteProtocolError:
        pass
