"""Hypothesis: what the daemon's store writes of a torrent's summary is what json.dumps writes."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from torrent.daemon.store import Summary, _summary_text

_summaries = st.builds(
    Summary,
    st.integers(min_value=0, max_value=2**48),
    st.lists(st.integers(min_value=0, max_value=2**44), max_size=7).map(tuple),
    st.booleans(),
    st.booleans(),
    st.one_of(st.just(""), st.binary(min_size=20, max_size=20).map(bytes.hex), st.text(max_size=6)),
)


@given(_summaries)
def test_the_summary_text_is_json_dumps(summary: Summary) -> None:
    assert _summary_text(summary) == json.dumps(summary)
