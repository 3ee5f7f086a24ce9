"""The wire events behave exactly as the frozen, slotted dataclasses they replace.

Each event is checked against a reference built by ``dataclasses.make_dataclass`` from the
same fields (name, default, whether it takes part in equality): constructor, repr,
equality, hashing, immutability, slots, ``__match_args__``, copying and pickling.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import pickle
import typing
from typing import Any

import pytest

from torrent.proto import wire
from torrent.proto.pieceset import PieceSet
from torrent.proto.wire import events

_NO_DEFAULT: Any = dataclasses.MISSING
_FACTORY = object()  # the default is a new empty dict

#: For each event: (field, default, compare) in order.
SPEC: dict[str, list[tuple[str, Any, bool]]] = {
    "Handshake": [("info_hash", None, True), ("peer_id", None, True), ("reserved", None, True)],
    "KeepAlive": [],
    "Choke": [("voided", (), False)],
    "Unchoke": [],
    "Interested": [],
    "NotInterested": [],
    "Have": [("index", _NO_DEFAULT, True)],
    "Bitfield": [("pieces", _NO_DEFAULT, True)],
    "Request": [("index", _NO_DEFAULT, True), ("begin", _NO_DEFAULT, True), ("length", _NO_DEFAULT, True)],
    "Block": [("index", _NO_DEFAULT, True), ("begin", _NO_DEFAULT, True), ("data", _NO_DEFAULT, True)],
    "UnrequestedBlock": [
        ("index", _NO_DEFAULT, True),
        ("begin", _NO_DEFAULT, True),
        ("data", _NO_DEFAULT, True),
    ],
    "Cancel": [("index", _NO_DEFAULT, True), ("begin", _NO_DEFAULT, True), ("length", _NO_DEFAULT, True)],
    "Port": [("port", _NO_DEFAULT, True)],
    "HaveAll": [],
    "HaveNone": [],
    "SuggestPiece": [("index", _NO_DEFAULT, True)],
    "RejectRequest": [
        ("index", _NO_DEFAULT, True),
        ("begin", _NO_DEFAULT, True),
        ("length", _NO_DEFAULT, True),
        ("withdrawn", False, False),
    ],
    "AllowedFast": [("index", _NO_DEFAULT, True)],
    "HashRequest": [
        ("pieces_root", _NO_DEFAULT, True),
        ("base_layer", _NO_DEFAULT, True),
        ("index", _NO_DEFAULT, True),
        ("length", _NO_DEFAULT, True),
        ("proof_layers", _NO_DEFAULT, True),
    ],
    "Hashes": [
        ("pieces_root", _NO_DEFAULT, True),
        ("base_layer", _NO_DEFAULT, True),
        ("index", _NO_DEFAULT, True),
        ("length", _NO_DEFAULT, True),
        ("proof_layers", _NO_DEFAULT, True),
        ("hashes", _NO_DEFAULT, True),
    ],
    "HashReject": [
        ("pieces_root", _NO_DEFAULT, True),
        ("base_layer", _NO_DEFAULT, True),
        ("index", _NO_DEFAULT, True),
        ("length", _NO_DEFAULT, True),
        ("proof_layers", _NO_DEFAULT, True),
    ],
    "ExtensionHandshake": [("fields", _FACTORY, True)],
    "ExtendedMessage": [("name", _NO_DEFAULT, True), ("payload", _NO_DEFAULT, True)],
    "ConnectionClosed": [],
}

#: Two different values for each field name.
SAMPLES: dict[str, tuple[Any, Any]] = {
    "info_hash": (b"\x01" * 20, b"\x02" * 20),
    "peer_id": (b"-PT0100-aaaaaaaaaaaa", b"-PT0100-bbbbbbbbbbbb"),
    "reserved": (bytes(8), b"\x00" * 5 + b"\x10\x00\x05"),
    "voided": ((wire.Request(0, 0, 16384),), ()),
    "index": (3, 4),
    "pieces": (PieceSet.from_indexes([1], 8), PieceSet.from_indexes([2], 8)),
    "begin": (0, 16384),
    "length": (16384, 100),
    "data": (b"abc", b"abd"),
    "port": (6881, 6882),
    "withdrawn": (False, True),
    "pieces_root": (b"\x03" * 32, b"\x04" * 32),
    "base_layer": (0, 2),
    "proof_layers": (1, 3),
    "hashes": ((b"\x05" * 32,), (b"\x06" * 32, b"\x07" * 32)),
    "fields": ({b"v": b"x"}, {b"p": 1}),
    "name": ("ut_pex", "ut_metadata"),
    "payload": (b"d1:ai1ee", b"d1:ai2ee"),
}


@functools.cache
def _reference(name: str) -> Any:
    fields: list[Any] = []
    for fname, default, compare in SPEC[name]:
        if default is _FACTORY:
            fields.append((fname, Any, dataclasses.field(default_factory=dict, compare=compare)))
        elif default is _NO_DEFAULT:
            fields.append((fname, Any, dataclasses.field(compare=compare)))
        else:
            fields.append((fname, Any, dataclasses.field(default=default, compare=compare)))
    return dataclasses.make_dataclass(name, fields, frozen=True, slots=True)


def _pair(name: str, which: int, *, differ: str | None = None) -> tuple[Any, Any]:
    """The event and its reference, built from the same sample values (``differ`` from the other set)."""
    args = {f: SAMPLES[f][1 - which if f == differ else which] for f, _, _ in SPEC[name]}
    return getattr(events, name)(**args), _reference(name)(**args)


def _hash(value: object) -> int | type[Exception]:
    try:
        return hash(value)
    except TypeError:
        return TypeError


def test_every_event_is_specified() -> None:
    assert {cls.__name__ for cls in typing.get_args(wire.Event)} == set(SPEC)


@pytest.mark.parametrize("name", sorted(SPEC))
def test_constructor_fields_and_match_args(name: str) -> None:
    cls: Any = getattr(events, name)
    ref = _reference(name)
    ours = inspect.signature(cls).parameters
    theirs = inspect.signature(ref).parameters
    assert list(ours) == list(theirs)
    for param, (_, default, _) in zip(ours.values(), SPEC[name], strict=True):
        assert param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        if default is _NO_DEFAULT:
            assert param.default is inspect.Parameter.empty
        elif default is not _FACTORY:
            assert param.default == default
    assert cls.__match_args__ == ref.__match_args__
    assert set(cls.__slots__) == set(ref.__slots__)


@pytest.mark.parametrize("name", sorted(SPEC))
def test_repr_equality_and_hash_as_the_dataclass(name: str) -> None:
    a, ref_a = _pair(name, 0)
    b, ref_b = _pair(name, 0)
    assert repr(a) == repr(ref_a)
    assert (a == b) is (ref_a == ref_b) is True
    assert (a != b) is (ref_a != ref_b) is False
    assert _hash(a) == _hash(ref_a)
    for fname, _, _ in SPEC[name]:
        c, ref_c = _pair(name, 0, differ=fname)
        assert (a == c) is (ref_a == ref_c), fname
        assert (a != c) is (ref_a != ref_c), fname
        assert repr(c) == repr(ref_c)
        if _hash(ref_a) is not TypeError and ref_a == ref_c:
            assert hash(a) == hash(c)
    # Another class never compares equal, even with the same fields.
    assert a != ref_a
    assert (a == ref_a) is False
    assert a.__eq__(object()) is NotImplemented


@pytest.mark.parametrize("name", sorted(SPEC))
def test_defaults_as_the_dataclass(name: str) -> None:
    required = {f: SAMPLES[f][0] for f, default, _ in SPEC[name] if default is _NO_DEFAULT}
    ours, theirs = getattr(events, name)(**required), _reference(name)(**required)
    assert repr(ours) == repr(theirs)
    assert ours == getattr(events, name)(*[required[f] for f in required])


@pytest.mark.parametrize("name", sorted(SPEC))
def test_frozen_and_slotted(name: str) -> None:
    a, _ = _pair(name, 0)
    assert not hasattr(a, "__dict__")
    for fname, _, _ in SPEC[name]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(a, fname, SAMPLES[fname][1])
        with pytest.raises(dataclasses.FrozenInstanceError):
            delattr(a, fname)
        assert getattr(a, fname) == SAMPLES[fname][0]
    # (Python 3.11's slotted dataclass raised TypeError here, from its __setattr__'s super().)
    with pytest.raises(AttributeError):
        a.not_a_field = 1


@pytest.mark.parametrize("name", sorted(SPEC))
def test_copy_and_pickle_keep_every_field(name: str) -> None:
    a, _ = _pair(name, 1)
    for other in (copy.copy(a), copy.deepcopy(a), pickle.loads(pickle.dumps(a))):
        assert type(other) is type(a)
        for fname, _, _ in SPEC[name]:  # the fields out of equality too
            assert getattr(other, fname) == getattr(a, fname)


def test_class_patterns_match_by_position_and_keyword() -> None:
    voided = (wire.Request(1, 0, 16384),)
    match wire.Choke(voided):
        case wire.Choke(v):
            assert v == voided
    match wire.RejectRequest(1, 2, 3, withdrawn=True):
        case wire.RejectRequest(i, b, n, w):
            assert (i, b, n, w) == (1, 2, 3, True)
    match wire.Block(5, 16384, b"x"):
        case wire.Request():
            pytest.fail("a block is not a request")
        case wire.Block(index=i, data=d):
            assert (i, d) == (5, b"x")


def test_extension_handshake_gets_a_new_dict_each_time() -> None:
    a, b = wire.ExtensionHandshake(), wire.ExtensionHandshake()
    assert a.fields == {}
    assert a.fields is not b.fields
    assert a == b
    with pytest.raises(TypeError):
        hash(a)


def test_requests_work_as_keys() -> None:
    seen = {wire.Request(0, 0, 16384): 1.0}
    assert seen[wire.Request(0, 0, 16384)] == 1.0
    assert wire.Block(0, 0, b"x" * 16384).request() in seen
    assert wire.RejectRequest(0, 0, 16384, withdrawn=True) == wire.RejectRequest(0, 0, 16384)
    assert hash(wire.Choke((wire.Request(0, 0, 1),))) == hash(wire.Choke())


def test_the_package_exports_every_name_from_its_module_on_first_use() -> None:
    """``torrent.proto.wire`` imports its modules lazily: each name of ``__all__`` has a
    home module, resolves to that module's object, and nothing else resolves."""
    import importlib

    assert set(wire._HOMES) == set(wire.__all__)
    for name in wire.__all__:
        home = importlib.import_module(f"torrent.proto.wire.{wire._HOMES[name]}")
        assert getattr(wire, name) is getattr(home, name), name
    assert set(wire.__all__) <= set(dir(wire))
    with pytest.raises(AttributeError):
        _ = wire.NotAName  # type: ignore[attr-defined]
