"""``pytorrent download``/``seed`` argument handling: rates, durations, file selection, usage errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cli.cmd_download import build_settings, parse_duration, parse_nodes, parse_rate, select_files
from cli.main import build_parser, main
from torrent import config
from torrent.config import DEFAULT_DHT_ROUTERS, Settings


@pytest.mark.parametrize(
    ("text", "bps"),
    [
        ("0", 0),
        ("500", 500),
        ("500K", 512_000),
        ("2M", 2 << 20),
        ("1.5MiB", 3 << 19),
        ("1g/s", 1 << 30),
        ("64kb", 65536),
    ],
)
def test_parse_rate(text: str, bps: int) -> None:
    assert parse_rate(text) == bps


@pytest.mark.parametrize("text", ["", "fast", "-1M", "2X", "1.2.3K"])
def test_parse_rate_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_rate(text)


@pytest.mark.parametrize(
    ("text", "s"), [("90", 90), ("90s", 90), ("30m", 1800), ("1h30m", 5400), ("2d", 172800), ("0.5h", 1800)]
)
def test_parse_duration(text: str, s: float) -> None:
    assert parse_duration(text) == s


@pytest.mark.parametrize("text", ["", "1x", "m30", "1h 30m", "-5s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


PATHS = ["docs/a.txt", "docs/b.pdf", "video/c.mkv", "d.txt"]


def test_select_files_by_index_range_and_glob() -> None:
    assert select_files(PATHS, "0") == [1, 0, 0, 0]
    assert select_files(PATHS, "1-2") == [0, 1, 1, 0]
    assert select_files(PATHS, "*.txt") == [1, 0, 0, 1]
    assert select_files(PATHS, "video/*,3") == [0, 0, 1, 1]
    assert select_files(PATHS, "c.mkv") == [0, 0, 1, 0]  # a base name matches too


@pytest.mark.parametrize(
    ("sel", "msg"),
    [("9", "out of range"), ("2-9", "out of range"), ("*.iso", "no file matches"), (",", "no file")],
)
def test_select_files_errors(sel: str, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        select_files(PATHS, sel)


def test_usage_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["download", str(tmp_path / "missing.torrent")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "no such file" in err[0]
    assert main(["download", "x.torrent", "--max-up", "lots"]) == 2
    assert main(["download", "magnet:?xt=urn:btih:nothex"]) == 2
    assert main(["seed", "magnet:?xt=urn:btih:" + "ab" * 20, "."]) == 2
    assert "needs a .torrent file" in capsys.readouterr().err
    bad = tmp_path / "bad.torrent"
    bad.write_bytes(b"not bencoded")
    assert main(["download", str(bad)]) == 2


def test_settings_defaults_are_sane() -> None:
    s = Settings().validate()
    assert (s.pipeline_min, s.pipeline_max) == (4, 500)
    assert s.keepalive_interval_s == 120
    assert s.choke_interval_s == 10
    assert s.optimistic_interval_s == 30
    assert s.resume_save_interval_s == 30
    assert s.seed_ratio == 1.0
    with pytest.raises(ValueError, match="pipeline_min"):
        Settings(pipeline_min=0).validate()
    with pytest.raises(ValueError, match="listen_port"):
        Settings(listen_port=70000).validate()


def test_dht_bootstrap_nodes_are_parsed() -> None:
    assert parse_nodes("a.example:6881,[::1]:25401, 10.0.0.1:1") == (
        ("a.example", 6881),
        ("::1", 25401),
        ("10.0.0.1", 1),
    )
    assert parse_nodes("") == ()
    for bad in ("nohost", "host:", ":6881", "host:0", "host:70000", "host:x"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_nodes(bad)


def test_dht_flags_become_settings(tmp_path: Path) -> None:
    parser = build_parser("download")
    on = build_settings(parser.parse_args(["download", "x.torrent"]), state_dir=str(tmp_path))
    assert on.dht_enabled
    assert on.dht_bootstrap == DEFAULT_DHT_ROUTERS
    assert on.dht_state_file == str(tmp_path / ".pytorrent" / "dht.state")
    local = build_settings(parser.parse_args(["download", "x.torrent", "--dht-bootstrap", "127.0.0.2:6881"]))
    assert local.dht_bootstrap == (("127.0.0.2", 6881),)
    assert local.dht_state_file is None
    assert on.pex_enabled
    assert on.lsd_enabled
    off = build_settings(
        parser.parse_args(["download", "x.torrent", "--no-dht", "--no-pex", "--no-lsd"]),
        state_dir=str(tmp_path),
    )
    assert not off.dht_enabled
    assert off.dht_state_file is None
    assert not off.pex_enabled
    assert not off.lsd_enabled
    testing = config.testing_settings()
    assert not (testing.dht_enabled)
    assert not (testing.pex_enabled)
    assert not (testing.lsd_enabled)
    with pytest.raises(ValueError, match="dht_bootstrap"):
        Settings(dht_bootstrap=(("", 6881),)).validate()


def test_no_direct_writes_becomes_a_setting() -> None:
    parser = build_parser("download")
    assert build_settings(parser.parse_args(["download", "x.torrent"])).direct_writes
    off = build_settings(parser.parse_args(["download", "x.torrent", "--no-direct-writes"]))
    assert not off.direct_writes
    assert build_parser("daemon").parse_args(["daemon", "--no-direct-writes"]).no_direct_writes
