"""A torrent with more files than ``MAX_FILES``: refused at once with exit 2, naming the limit.

A million files used to take 25-35 s and over 1 GB in ``pytorrent info``; the limit is
now 200,000 (about 5 s and 300 MB, see ``bench/many_files.py``) and a longer list is
refused before the file is even decoded.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.many_files import many_files_torrent
from cli.main import main
from torrent.errors import MetainfoError
from torrent.proto import metainfo
from torrent.proto.metainfo import MAX_FILES, Metainfo


def test_a_million_files_is_refused_quickly_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "many.torrent"
    path.write_bytes(many_files_torrent(1_000_000))
    t0 = time.monotonic()
    assert main(["info", str(path)]) == 2
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "1000000 files" in err
    assert f"{MAX_FILES:,}" in err
    assert "MAX_FILES" in err
    assert elapsed < 5, elapsed  # decoding it all took ~10 s


def test_one_file_over_the_limit_is_refused_and_the_limit_itself_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metainfo, "MAX_FILES", 1000)
    with pytest.raises(MetainfoError, match="1001 files; pytorrent loads at most 1,000"):
        Metainfo.from_bytes(many_files_torrent(1001))
    assert len(Metainfo.from_bytes(many_files_torrent(1000)).info.files) == 1000
