"""Web seed pure parts: BEP 19 URL mapping, byte ranges across files, Retry-After, runs."""

from __future__ import annotations

import email.utils

import pytest

from torrent.config import Settings
from torrent.engine.clock import ManualClock
from torrent.engine.http_client import HttpClient
from torrent.engine.web_seed import (
    WebSeedKey,
    WebSeeds,
    _Assembler,
    _runs,
    byte_spans,
    file_url,
    parse_retry_after,
)
from torrent.proto import bencoding
from torrent.proto.metainfo import Info, Metainfo
from torrent.proto.picker import Block, Picker
from torrent.types import BLOCK_SIZE


def _info(files: list[tuple[list[str], int]] | int, name: str = "top dir", piece: int = 32768) -> Info:
    info: dict[bytes, object] = {b"name": name.encode(), b"piece length": piece}
    if isinstance(files, int):
        info[b"length"] = files
        total = files
    else:
        info[b"files"] = [{b"length": n, b"path": [c.encode() for c in p]} for p, n in files]
        total = sum(n for _, n in files)
    info[b"pieces"] = b"\0" * 20 * -(-total // piece)
    return Metainfo.from_bytes(bencoding.encode({b"info": info})).info


def test_single_file_url_is_the_file_or_a_directory() -> None:
    info = _info(100, name="a b#.iso")
    f = info.files[0]
    assert file_url("http://h/x/a.iso", info, f) == "http://h/x/a.iso"
    assert file_url("http://h/x/", info, f) == "http://h/x/a%20b%23.iso"


def test_multi_file_url_appends_name_and_encoded_path() -> None:
    info = _info([(["dir one", "ü?.bin"], 10), (["100%", "a+b&c"], 5)], name="top dir")
    base = "http://h/mirror"
    assert file_url(base, info, info.files[0]) == "http://h/mirror/top%20dir/dir%20one/%C3%BC%3F.bin"
    assert file_url(base + "/", info, info.files[1]) == "http://h/mirror/top%20dir/100%25/a%2Bb%26c"


def test_the_url_uses_the_torrents_names_not_the_sanitised_disk_names() -> None:
    info = _info([(["con", "a:b"], 10)], name="x")
    assert file_url("http://h/", info, info.files[0]) == "http://h/x/con/a%3Ab"


def test_byte_spans_cross_files_and_skip_empty_ones() -> None:
    info = _info([(["a"], 10), (["empty"], 0), (["b"], 5), (["c"], 20)])
    starts = [f.offset for f in info.files]
    assert byte_spans(info, starts, 0, 35) == [(0, 0, 10), (2, 0, 5), (3, 0, 20)]
    assert byte_spans(info, starts, 8, 9) == [(0, 8, 2), (2, 0, 5), (3, 0, 2)]
    assert byte_spans(info, starts, 15, 3) == [(3, 0, 3)]


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("120", 0.0) == 120.0
    assert parse_retry_after(None, 0.0) is None
    assert parse_retry_after("soon", 0.0) is None
    when = email.utils.formatdate(1_000_060, usegmt=True)
    assert parse_retry_after(when, 1_000_000.0) == pytest.approx(60.0)
    assert parse_retry_after(when, 2_000_000.0) == 0.0


def test_runs_merge_contiguous_blocks_across_pieces() -> None:
    piece = 2 * BLOCK_SIZE
    blocks = [Block(1, 0, BLOCK_SIZE), Block(0, BLOCK_SIZE, BLOCK_SIZE), Block(3, 0, BLOCK_SIZE)]
    assert _runs(blocks, piece) == [
        (BLOCK_SIZE, [Block(0, BLOCK_SIZE, BLOCK_SIZE), Block(1, 0, BLOCK_SIZE)]),
        (3 * piece, [Block(3, 0, BLOCK_SIZE)]),
    ]


def test_assembler_cuts_any_chunking_into_the_requested_blocks() -> None:
    blocks = [Block(0, 0, BLOCK_SIZE), Block(0, BLOCK_SIZE, 100)]
    data = bytes(range(256)) * (BLOCK_SIZE // 256) + b"x" * 100
    got: list[tuple[Block, bytes]] = []
    asm = _Assembler(blocks, lambda b, d: got.append((b, bytes(d))))
    for i in range(0, len(data), 777):
        asm.feed(data[i : i + 777])
    assert got == [(blocks[0], data[:BLOCK_SIZE]), (blocks[1], data[BLOCK_SIZE:])]
    assert asm.remaining() == []


class _Host:
    """A torrent as the web seeds see it: peers and their rate are set by the test."""

    def __init__(self, peers: int, rate: float) -> None:
        self.supply = (peers, rate)
        self.complete = False

    def may_start_pieces(self) -> bool:
        return True

    def peer_supply(self) -> tuple[int, float]:
        return self.supply

    def on_source_block(self, key: WebSeedKey, index: int, begin: int, data: bytes | memoryview) -> None:
        pass

    def on_source_dropped(self, key: WebSeedKey, blocks: list[Block]) -> None:
        pass

    def on_web_seed_warning(self, text: str) -> None:
        pass


def _seeds(host: _Host, num_pieces: int = 16) -> tuple[WebSeeds, Picker]:
    piece = 2 * BLOCK_SIZE
    info = _info(num_pieces * piece, name="f", piece=piece)
    picker = Picker(num_pieces, piece, num_pieces * piece)
    settings = Settings(web_seed_request_bytes=4 * piece, web_seed_peer_rate_bps=1000)
    ws = WebSeeds(["http://h/f"], info, picker, host, HttpClient(), settings, ManualClock())
    picker.on_peer_have_all(WebSeedKey("http://h/f"))
    return ws, picker


def test_with_no_peers_a_web_seed_is_asked_for_long_runs() -> None:
    ws, _ = _seeds(_Host(0, 0.0))
    seed = ws.seeds["http://h/f"]
    first, second = ws._pick(seed), ws._pick(seed)
    assert sorted({b.piece for b in first}) == [0, 1, 2, 3]
    assert sorted({b.piece for b in second}) == [4, 5, 6, 7]


def test_while_peers_carry_the_rate_only_pieces_no_peer_has_are_asked_for() -> None:
    ws, picker = _seeds(_Host(1, 10_000.0))
    has = [1] * 16
    has[5] = has[9] = 0
    picker.on_peer_bitfield(("10.0.0.1", 6881), has)
    seed = ws.seeds["http://h/f"]
    assert {b.piece for b in ws._pick(seed)} == {5, 9}
    assert ws._pick(seed) == []


def test_slow_peers_leave_the_web_seed_the_rarest_pieces() -> None:
    ws, picker = _seeds(_Host(1, 10.0))
    for p in (12, 13, 14, 15):  # past the picker's random first pieces
        picker.on_piece_verified(p)
    has = [1] * 16
    has[7] = 0
    picker.on_peer_bitfield(("10.0.0.1", 6881), has)
    picked = ws._pick(ws.seeds["http://h/f"])
    assert picked[0].piece == 7
    assert len({b.piece for b in picked}) == 4


def test_assembler_hands_over_whole_blocks_from_one_big_chunk() -> None:
    blocks = [Block(0, 0, BLOCK_SIZE), Block(0, BLOCK_SIZE, BLOCK_SIZE), Block(0, 2 * BLOCK_SIZE, 5)]
    data = bytes(range(256)) * (2 * BLOCK_SIZE // 256) + b"12345"
    got: list[tuple[Block, bytes]] = []
    asm = _Assembler(blocks, lambda b, d: got.append((b, bytes(d))))
    asm.feed(data[:100])
    asm.feed(data[100:])
    assert [d for _, d in got] == [data[:BLOCK_SIZE], data[BLOCK_SIZE : 2 * BLOCK_SIZE], b"12345"]
