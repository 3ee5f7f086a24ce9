"""Hypothesis: piece ⇄ file mapping over random layouts; the resume parser never crashes."""

from __future__ import annotations

import hashlib
import logging
import os
import random
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.disk_helpers import make_torrent
from torrent.disk.resume import ResumeStore
from torrent.disk.storage import FileStorage
from torrent.proto import bencoding

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

file_spec = st.tuples(st.integers(min_value=0, max_value=300), st.booleans())
layouts = st.lists(file_spec, min_size=1, max_size=7).filter(
    lambda fs: sum(n for n, _ in fs) > 0 and any(not pad and n > 0 for n, pad in fs)
)


def build(layout: list[tuple[int, bool]], plen: int, seed: int = 0):
    specs = [(f"d{i % 2}/f{i}", n, pad) for i, (n, pad) in enumerate(layout)]
    return make_torrent(specs, plen, seed=seed)


@SETTINGS
@given(layouts, st.integers(min_value=1, max_value=97))
def test_spans_tile_every_piece_exactly(layout: list[tuple[int, bool]], plen: int) -> None:
    fx = build(layout, plen)
    info = fx.info
    st_ = FileStorage(info, "/nonexistent-dir-for-mapping-only")
    pos = 0
    for p in range(info.num_pieces):
        covered = 0
        for index, in_file, n in st_.spans(p, 0, info.piece_size(p)):
            f = info.files[index]
            assert n > 0
            assert in_file >= 0
            assert in_file + n <= f.length
            assert f.offset + in_file == pos, "spans are contiguous in payload order"
            pos += n
            covered += n
            assert p in st_.file_pieces(index)
        assert covered == info.piece_size(p)
    assert pos == info.total_length


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layouts, st.integers(min_value=1, max_value=97), st.integers(min_value=1, max_value=64), st.randoms())
def test_random_block_writes_read_back_and_hash(
    layout: list[tuple[int, bool]], plen: int, block: int, rnd: random.Random
) -> None:
    fx = build(layout, plen)
    info = fx.info
    with tempfile.TemporaryDirectory() as where:
        storage = FileStorage(info, where, max_open_files=2)
        jobs = [
            (p, o, min(block, info.piece_size(p) - o))
            for p in range(info.num_pieces)
            for o in range(0, info.piece_size(p), block)
        ]
        rnd.shuffle(jobs)
        for p, o, n in jobs:
            storage.write_block(p, o, fx.piece(p)[o : o + n])
        for p in range(info.num_pieces):
            assert hashlib.sha1(storage.read_piece(p)).digest() == info.piece_hash(p)
        storage.close()


@SETTINGS
@given(st.binary(max_size=400))
def test_resume_parser_never_raises_on_random_bytes(data: bytes) -> None:
    fx = build([(100, False), (50, False)], 32)
    with tempfile.TemporaryDirectory() as where:
        store = ResumeStore(fx.info, fx.info_hash, where)
        os.makedirs(os.path.dirname(store.path))
        with open(store.path, "wb") as fh:
            fh.write(data)
        logging.disable(logging.WARNING)
        try:
            state, why = store.load()
        finally:
            logging.disable(logging.NOTSET)
        assert state is None
        assert why


MUTATED = build([(100, False), (0, False), (50, False)], 32)
_VALID: list[bytes] = []


def valid_state() -> bytes:
    """A real resume file for MUTATED, written once (saving fsyncs, which is slow)."""
    if not _VALID:
        with tempfile.TemporaryDirectory() as where:
            store = ResumeStore(MUTATED.info, MUTATED.info_hash, where)
            store.write_state(
                FileStorage(MUTATED.info, where),
                {0, 3},
                clean=True,
                peers=[("::1", 6881)],
                uploaded=1,
                downloaded=2,
            )
            store.close()
            with open(store.path, "rb") as fh:
                _VALID.append(fh.read())
    return _VALID[0]


@SETTINGS
@given(st.data())
def test_resume_parser_survives_mutated_valid_files(data: st.DataObject) -> None:
    fx = MUTATED
    with tempfile.TemporaryDirectory() as where:
        store = ResumeStore(fx.info, fx.info_hash, where)
        os.makedirs(os.path.dirname(store.path))
        top = bencoding.decode(valid_state())
        key = data.draw(st.sampled_from(sorted(top)))
        value = data.draw(
            st.integers(min_value=-3, max_value=2**40)
            | st.binary(max_size=10)
            | st.lists(st.integers(min_value=-1, max_value=5) | st.binary(max_size=3), max_size=4)
        )
        top[key] = value
        with open(store.path, "wb") as fh:
            fh.write(bencoding.encode(top))
        logging.disable(logging.WARNING)
        try:
            state, why = store.load()
        finally:
            logging.disable(logging.NOTSET)
        if state is not None:
            assert state.verified <= set(range(fx.info.num_pieces))
            assert len(state.file_stats) == len(fx.info.files)
        else:
            assert why
        store.close()


_hostile_component = st.one_of(
    st.sampled_from(
        [b"..", b".", b"", b"/", b"\\", b"/etc", b"C:", b"a", b"A", b"x" * 300, b"a\x00b", b"\xff"]
    ),
    st.binary(max_size=20),
)


@SETTINGS
@given(
    st.lists(st.lists(_hostile_component, min_size=1, max_size=4), min_size=1, max_size=8), _hostile_component
)
def test_every_file_maps_inside_the_content_directory(file_paths: list[list[bytes]], name: bytes) -> None:
    from torrent.errors import MetainfoError
    from torrent.proto.metainfo import Metainfo

    files = [{b"length": 1, b"path": p} for p in file_paths]
    info = {b"name": name, b"piece length": 16384, b"pieces": b"\x00" * 20, b"files": files}
    try:
        meta = Metainfo.from_bytes(bencoding.encode({b"info": info}))
    except MetainfoError:
        return
    directory = "/nonexistent/dl"
    storage = FileStorage(meta.info, directory)
    assert os.path.dirname(storage.content_path) == directory
    seen = set()
    for i in range(len(files)):
        path = storage.file_path(i)
        assert os.path.normpath(path) == path  # no '.', '..' or '//' left to resolve
        assert path.startswith(storage.content_path + os.sep)
        seen.add(path.lower())
    assert len(seen) == len(files)
