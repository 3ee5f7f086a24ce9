"""BEP 52 metainfo from literal dicts: v2-only and hybrid layouts, and every hostile
shape raising MetainfoError naming its field (never another exception)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from torrent.errors import MetainfoError
from torrent.proto import bencoding, merkle
from torrent.proto.metainfo import Metainfo, PieceCheck

PIECE = 16384


def _data(n: int, seed: int) -> bytes:
    blocks = (hashlib.sha256(b"%d %d" % (seed, i)).digest() for i in range(n // 32 + 1))
    return b"".join(blocks)[:n]


def _root_and_layer(data: bytes, piece_length: int = PIECE) -> tuple[bytes, bytes]:
    if len(data) <= piece_length:
        return merkle.small_file_root(data), b""
    nodes = [
        merkle.piece_hash(data[i : i + piece_length], piece_length) for i in range(0, len(data), piece_length)
    ]
    return merkle.root_from_piece_layer(nodes, piece_length), b"".join(nodes)


def _v2(
    files: dict[tuple[bytes, ...], bytes], *, hybrid: bool = False, name: bytes = b"t"
) -> dict[bytes, Any]:
    tree: dict[bytes, Any] = {}
    layers: dict[bytes, bytes] = {}
    v1_files: list[dict[bytes, Any]] = []
    payload = b""
    for path, data in sorted(files.items()):
        node = tree
        for c in path[:-1]:
            node = node.setdefault(c, {})
        entry: dict[bytes, Any] = {b"length": len(data)}
        if data:
            root, layer = _root_and_layer(data)
            entry[b"pieces root"] = root
            if layer:
                layers[root] = layer
        node[path[-1]] = {b"": entry}
        v1_files.append({b"length": len(data), b"path": list(path)})
        payload += data
        if len(payload) % PIECE:
            gap = PIECE - len(payload) % PIECE
            v1_files.append({b"attr": b"p", b"length": gap, b"path": [b".pad", str(gap).encode()]})
            payload += bytes(gap)
    info: dict[bytes, Any] = {b"name": name, b"piece length": PIECE, b"meta version": 2, b"file tree": tree}
    if hybrid:
        info[b"files"] = v1_files
        info[b"pieces"] = b"".join(
            hashlib.sha1(payload[i : i + PIECE]).digest() for i in range(0, len(payload), PIECE)
        )
    top: dict[bytes, Any] = {b"info": info}
    if layers:
        top[b"piece layers"] = layers
    return top


FILES = {(b"a.bin",): _data(40_000, 1), (b"d", b"e.txt"): _data(100, 2), (b"empty",): b""}


def _load(top: dict[bytes, Any]) -> Metainfo:
    return Metainfo.from_bytes(bencoding.encode(top))


def _error(top: dict[bytes, Any]) -> MetainfoError:
    with pytest.raises(MetainfoError) as info:
        _load(top)
    return info.value


def test_v2_only_layout_pads_every_gap_but_the_last() -> None:
    m = _load(_v2(FILES))
    assert m.info_hash_v1 is None
    assert not m.info.has_v1
    assert m.info_hash_v2 is not None
    assert m.info_hash == m.info_hash_v2[:20]
    assert [(f.path, f.length, f.offset, f.padding) for f in m.info.files] == [
        (("a.bin",), 40_000, 0, False),
        ((".pad", "9152"), 9152, 40_000, True),
        (("d", "e.txt"), 100, 49_152, False),
        ((".pad", "16284"), 16284, 49_252, True),
        (("empty",), 0, 65_536, False),
    ]
    assert m.info.num_pieces == 4
    assert m.info.total_length == 65_536
    assert m.info_hashes == (m.info_hash,)
    with pytest.raises(LookupError):
        m.info.piece_hash(0)


def test_v2_pieces_check_against_the_tree() -> None:
    m = _load(_v2(FILES))
    a = FILES[(b"a.bin",)]
    assert m.info.check_piece(0, a[:PIECE]) is PieceCheck.PASSED
    assert m.info.check_piece(2, a[2 * PIECE :] + bytes(9152)) is PieceCheck.PASSED
    assert (
        m.info.check_piece(2, a[2 * PIECE :] + b"\x01" * 9152) is PieceCheck.PASSED
    )  # padding is not hashed
    assert m.info.check_piece(1, a[:PIECE]) is PieceCheck.FAILED
    assert m.info.check_piece(3, FILES[(b"d", b"e.txt")] + bytes(16284)) is PieceCheck.PASSED


def test_hybrid_has_both_hashes_and_checks_both() -> None:
    m = _load(_v2(FILES, hybrid=True))
    assert m.info.has_v1
    assert m.info.has_v2
    assert m.info_hash == hashlib.sha1(m.info_bytes).digest()
    assert m.info_hash_v2 == hashlib.sha256(m.info_bytes).digest()
    assert len(m.info_hashes) == 2
    a = FILES[(b"a.bin",)]
    assert m.info.check_piece(2, a[2 * PIECE :] + bytes(9152)) is PieceCheck.PASSED
    # Non-zero padding: the SHA-256 tree (file bytes only) passes, the SHA-1 fails.
    assert m.info.check_piece(2, a[2 * PIECE :] + b"\x01" * 9152) is PieceCheck.CONFLICT


def test_hybrid_whose_sha1_describes_other_data_is_a_conflict() -> None:
    top = _v2(FILES, hybrid=True)
    good = top[b"info"][b"pieces"]
    top[b"info"][b"pieces"] = hashlib.sha1(b"other").digest() + good[20:]
    m = _load(top)
    assert m.info.check_piece(0, FILES[(b"a.bin",)][:PIECE]) is PieceCheck.CONFLICT


def test_missing_piece_layers_load_with_a_warning_and_unknown_hashes() -> None:
    top = _v2(FILES)
    del top[b"piece layers"]
    m = _load(top)
    assert any("piece layers" in w for w in m.warnings)
    assert m.info.piece_hash_v2(0) is None
    assert m.info.check_piece(0, FILES[(b"a.bin",)][:PIECE]) is PieceCheck.UNKNOWN
    assert m.info.piece_hash_v2(3) is not None  # one-piece files: the root is the hash


def _mutate(top: Any, *path: bytes | int, value: Any = None, delete: bool = False) -> Any:
    node = top
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return top


def _layer_key(top: dict[bytes, Any]) -> bytes:
    key: bytes = next(iter(top[b"piece layers"]))
    return key


HOSTILE: list[tuple[str, Any, str]] = [
    (
        "layer-wrong-hash",
        lambda t: _mutate(t, b"piece layers", _layer_key(t), value=bytes(96)),
        "piece layers[",
    ),
    ("layer-short", lambda t: _mutate(t, b"piece layers", _layer_key(t), value=bytes(64)), "piece layers["),
    ("layer-not-bytes", lambda t: _mutate(t, b"piece layers", _layer_key(t), value=5), "piece layers["),
    ("layers-not-dict", lambda t: _mutate(t, b"piece layers", value=[1]), "piece layers"),
    ("layer-missing", lambda t: _mutate(t, b"piece layers", value={b"x" * 32: b""}), "piece layers["),
    (
        "root-is-a-file",
        lambda t: _mutate(t, b"info", b"file tree", b"", value={b"length": 1}),
        "info.file tree",
    ),
    ("tree-not-dict", lambda t: _mutate(t, b"info", b"file tree", value=[]), "info.file tree"),
    ("no-tree", lambda t: _mutate(t, b"info", b"file tree", delete=True), "info.file tree"),
    (
        "file-with-sibling",
        lambda t: _mutate(t, b"info", b"file tree", b"a.bin", b"x", value={b"": {b"length": 0}}),
        "info.file tree['a.bin']",
    ),
    ("node-not-dict", lambda t: _mutate(t, b"info", b"file tree", b"d", value=3), "info.file tree['d']"),
    (
        "leaf-not-dict",
        lambda t: _mutate(t, b"info", b"file tree", b"a.bin", b"", value=b"x"),
        "info.file tree['a.bin']['']",
    ),
    (
        "length-missing",
        lambda t: _mutate(t, b"info", b"file tree", b"a.bin", b"", b"length", delete=True),
        "info.file tree['a.bin'].length",
    ),
    (
        "length-negative",
        lambda t: _mutate(t, b"info", b"file tree", b"a.bin", b"", b"length", value=-1),
        "info.file tree['a.bin'].length",
    ),
    (
        "length-huge",
        lambda t: _mutate(t, b"info", b"file tree", b"a.bin", b"", b"length", value=10**4000),
        "info.file tree['a.bin'].length",
    ),
    (
        "root-31-bytes",
        lambda t: _mutate(t, b"info", b"file tree", b"a.bin", b"", b"pieces root", value=b"r" * 31),
        "info.file tree['a.bin'].pieces root",
    ),
    (
        "root-an-int",
        lambda t: _mutate(t, b"info", b"file tree", b"a.bin", b"", b"pieces root", value=7),
        "info.file tree['a.bin'].pieces root",
    ),
    (
        "piece-length-odd",
        lambda t: _mutate(t, b"info", b"piece length", value=3 * PIECE),
        "info.piece length",
    ),
    ("piece-length-small", lambda t: _mutate(t, b"info", b"piece length", value=8192), "info.piece length"),
    ("newer-version", lambda t: _mutate(t, b"info", b"meta version", value=3), "info.meta version"),
]


@pytest.mark.parametrize(("case", "mutate", "field"), HOSTILE, ids=[c for c, _, _ in HOSTILE])
def test_hostile_v2_metainfo_names_the_field(case: str, mutate: Any, field: str) -> None:
    err = _error(mutate(_v2(FILES)))
    assert err.field.startswith(field), (case, err.field, str(err))


def test_a_million_deep_tree_is_a_metainfo_error() -> None:
    deep = b"d1:a" * 10**6 + b"d0:d6:lengthi1eee" + b"e" * 10**6
    data = b"d4:infod9:file tree" + deep + b"12:meta versioni2e4:name1:x12:piece lengthi16384eee"
    with pytest.raises(MetainfoError):
        Metainfo.from_bytes(data)


def test_a_wide_tree_of_many_empty_directories_loads_without_recursion() -> None:
    top = _v2(FILES)
    node = top[b"info"][b"file tree"]
    for i in range(50):  # as deep as the decoder allows a real tree to go
        node = node.setdefault(b"z%d" % i, {})
    m = _load(top)
    assert len([f for f in m.info.files if not f.padding]) == 3


HYBRID_BAD: list[tuple[str, Any, str]] = [
    (
        "v1-path-differs",
        lambda t: _mutate(t, b"info", b"files", 0, b"path", value=[b"other.bin"]),
        "info.files[0].path",
    ),
    (
        "v1-length-differs",
        lambda t: _mutate(t, b"info", b"files", 2, b"length", value=99),
        "info.files[2].length",
    ),
    (
        "padding-missing",
        lambda t: _mutate(
            t, b"info", b"files", value=[f for f in t[b"info"][b"files"] if f.get(b"attr") != b"p"]
        ),
        "info.files[1]",
    ),
    (
        "extra-v1-file",
        lambda t: _mutate(
            t, b"info", b"files", value=[*t[b"info"][b"files"], {b"length": 1, b"path": [b"zz"]}]
        ),
        "info.files",
    ),
]


@pytest.mark.parametrize(("case", "mutate", "field"), HYBRID_BAD, ids=[c for c, _, _ in HYBRID_BAD])
def test_inconsistent_hybrid_names_the_v1_field(case: str, mutate: Any, field: str) -> None:
    top = mutate(_v2(FILES, hybrid=True))
    # Keep the piece count right so only the disagreement between the halves is wrong.
    err = _error(top)
    assert err.field == field or err.field == "info.pieces", (case, err.field, str(err))
    assert "disagree" in str(err) or "piece boundary" in str(err) or "piece hashes" in str(err)


def test_layers_learned_from_peers_are_checked_and_saved_with_the_torrent() -> None:
    top = _v2(FILES)
    layers = top.pop(b"piece layers")
    m = _load(top)
    root, layer = next(iter(layers.items()))
    with pytest.raises(MetainfoError):
        m.info.add_piece_layer(root, bytes(len(layer)))
    assert m.info.missing_piece_layers
    m.info.add_piece_layer(root, layer)
    assert not m.info.missing_piece_layers
    again = Metainfo.from_bytes(m.to_bytes())
    assert again.info.piece_layers == {root: layer}
    assert again.info_hash_v2 == m.info_hash_v2
