"""``pytorrent info`` shows where a file is written when that differs from its torrent name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "corpus"


def test_plain_output_shows_both_paths_when_they_differ(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(CORPUS / "parent_path.torrent")]) == 0
    assert "  ../../bar  425 B  -> written as temp/_/_/bar\n" in capsys.readouterr().out


def test_plain_output_is_unchanged_when_they_agree(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(CORPUS / "symlink_zero_size.torrent")]) == 0
    assert "written as" not in capsys.readouterr().out


def test_json_gains_the_sanitised_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--json", str(CORPUS / "duplicate_files.torrent")]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["disk_name"] == "temp"
    assert [(f["path"], f.get("disk_path")) for f in facts["files"]] == [
        (["foo", "bar.txt"], None),  # written where the torrent says: no second path
        (["foo", "bar.txt"], ["temp", "foo", "bar.1.txt"]),
    ]


def test_a_four_thousand_digit_length_is_exit_2_naming_the_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(CORPUS / "huge_length.torrent")]) == 2
    err = capsys.readouterr().err
    assert "info.length" in err
    assert len(err.splitlines()) == 1
    assert len(err) < 200
