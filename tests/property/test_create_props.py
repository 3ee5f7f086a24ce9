"""Hypothesis: ``create`` gives the same bytes whether worker processes or threads hash."""

from __future__ import annotations

import random
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torrent.create as create
import torrent.create_hashing as hashing
from torrent.create import make

SETTINGS = settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])

#: File sizes around the block (16 KiB) and piece boundaries, empty files included.
sizes = st.one_of(
    st.integers(min_value=0, max_value=3),
    st.sampled_from([16383, 16384, 16385, 32767, 32768, 65536, 65537]),
    st.integers(min_value=0, max_value=150_000),
)


@SETTINGS
@given(
    st.lists(sizes, min_size=1, max_size=12).filter(lambda xs: sum(xs) > 0),
    st.sampled_from([16384, 32768, 65536]),
    st.sampled_from(["v1", "v2", "hybrid"]),
    st.integers(min_value=1, max_value=4),
    st.booleans(),
    st.sampled_from([1, 2, 5, 32]),
)
def test_processes_and_threads_give_the_same_torrent(
    lengths: list[int], piece_length: int, fmt: str, workers: int, one_piece_batches: bool, feed_every: int
) -> None:
    assert hashing.processes_possible(), f"threads left running: {threading.enumerate()}"
    rng = random.Random(sum(lengths) * 31 + piece_length)
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp) / "top"
        for i, n in enumerate(lengths):
            p = top / f"d{i % 3}" / f"f{i:02d}"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(rng.randbytes(n))
        fields = dict(piece_length=piece_length, torrent_format=fmt, no_date=True, threads=workers)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(hashing, "PROCESS_MIN_BYTES", 1 << 62)  # threads only
            with_threads = make(top, **fields)  # type: ignore[arg-type]
        started: list[int] = []
        real_start = hashing.ProcessHashJob.start

        def start(job: hashing.ProcessHashJob) -> None:
            real_start(job)
            started.append(len(job.pids))

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(hashing, "PROCESS_MIN_BYTES", 0)
            if one_piece_batches:
                mp.setattr(hashing, "BATCH_BYTES", piece_length)
            mp.setattr(hashing.ProcessHashJob, "start", start)
            # v1 processes start once the walk has fed this many files; the workers
            # read the files found after that from the job's file table.
            mp.setattr(create, "FEED_EVERY", feed_every)
            with_processes = make(top, **fields)  # type: ignore[arg-type]
    assert with_processes.data == with_threads.data
    assert with_processes.info_hash_v1 == with_threads.info_hash_v1
    assert with_processes.info_hash_v2 == with_threads.info_hash_v2
    if fmt == "v1" and workers > 1 and len(lengths) >= feed_every:
        # Forked during the walk, before the payload's size was known: one per worker.
        assert started == [workers]
    elif one_piece_batches and workers > 1 and with_threads.pieces > 1:
        # More than one worker had a batch to hash: they were processes.
        assert started == [min(workers, with_threads.pieces)]
