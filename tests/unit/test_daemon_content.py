"""The daemon's slimmed metainfo: without the decoded ``info`` in ``raw``, the same torrent."""

from __future__ import annotations

from torrent.daemon.content import slim
from torrent.proto import bencoding
from torrent.proto.metainfo import Metainfo

DATA = bencoding.encode(
    {
        b"announce": b"http://127.0.0.1:9/announce",
        b"info": {b"length": 5, b"name": b"a.bin", b"piece length": 16384, b"pieces": bytes(20)},
    }
)


def test_a_slimmed_metainfo_is_the_same_torrent_without_the_decoded_info() -> None:
    meta = Metainfo.from_bytes(DATA)
    copied = slim(meta)
    assert b"info" in meta.raw  # not fresh: the parsed object is left as it was
    assert copied is not meta
    fresh = Metainfo.from_bytes(DATA)
    trimmed = slim(fresh, fresh=True)
    assert trimmed is fresh  # trimmed where it is, not copied
    for m in (copied, trimmed):
        assert b"info" not in m.raw
        assert m == meta
        assert m.to_bytes() == DATA
        assert m.info_hash == meta.info_hash
        assert m.raw[b"announce"] == b"http://127.0.0.1:9/announce"
    assert slim(trimmed, fresh=True) is trimmed
