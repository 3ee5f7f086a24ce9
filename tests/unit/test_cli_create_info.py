"""``pytorrent create`` and ``pytorrent info`` through ``cli.main.main``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.cmd_create import parse_size
from cli.main import UsageError, main
from tests.processes import last_line_of
from torrent.disk.torrent_file import read_metainfo

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    d = tmp_path / "payload"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_bytes(b"hello\n")
    (d / "sub" / "b.bin").write_bytes(os.urandom(70_000))
    (d / "sub" / "empty").write_bytes(b"")
    return d


def test_create_writes_the_torrent_and_prints_the_facts(
    payload: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.torrent"
    rc = main(
        [
            "create",
            str(payload),
            "-o",
            str(out),
            "-t",
            "http://a/ann",
            "-t",
            "http://b/ann",
            "--tier",
            "-t",
            "udp://c:6969",
            "--private",
            "--comment",
            "hi",
            "--source",
            "S",
            "--web-seed",
            "http://ws/",
            "--no-date",
            "--piece-length",
            "32K",
        ]
    )
    assert rc == 0
    m = read_metainfo(out)
    text = capsys.readouterr().out
    assert m.info_hash.hex() in text
    assert "32 KiB" in text
    assert str(out) in text
    assert m.announce_list == (("http://a/ann", "http://b/ann"), ("udp://c:6969",))
    assert m.info.private
    assert m.info.source == "S"
    assert m.comment == "hi"
    assert m.url_list == ("http://ws/",)
    assert m.creation_date is None
    assert m.info.piece_length == 32 * 1024
    assert [f.path_str for f in m.info.files] == ["a.txt", "sub/b.bin", "sub/empty"]


def test_create_default_output_name_and_refusal_to_overwrite(
    payload: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["create", str(payload)]) == 0
    assert (tmp_path / "payload.torrent").exists()
    before = (tmp_path / "payload.torrent").read_bytes()
    capsys.readouterr()
    assert main(["create", str(payload), "--comment", "changed"]) == 2
    err = capsys.readouterr().err
    assert "exists" in err
    assert err.count("\n") == 1
    assert (tmp_path / "payload.torrent").read_bytes() == before
    assert main(["create", str(payload), "-f", "--name", "renamed", "-o", "payload.torrent"]) == 0
    assert read_metainfo(tmp_path / "payload.torrent").info.name == "renamed"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--piece-length", "lots"], "piece-length"),
        (["--piece-length", "1000"], "piece length"),
        (["--threads", "0"], "threads"),
    ],
)
def test_create_usage_errors_exit_2_with_one_line(
    payload: Path, tmp_path: Path, args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["create", str(payload), "-o", str(tmp_path / "o.torrent"), *args]) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert not (tmp_path / "o.torrent").exists()


def test_create_refuses_empty_dir_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["create", str(tmp_path / "empty"), "-o", str(tmp_path / "o.torrent")]) == 2
    assert "empty directory" in capsys.readouterr().err


def test_parse_size() -> None:
    assert parse_size("auto") is None
    assert parse_size("256K") == 256 * 1024
    assert parse_size("1M") == parse_size("1MiB") == parse_size("1048576") == 2**20
    with pytest.raises(UsageError):
        parse_size("1X")


def test_info_plain_and_json(payload: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.torrent"
    assert main(["create", str(payload), "-o", str(out), "-t", "http://a/ann", "-w", "http://ws/"]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    m = read_metainfo(out)
    for needle in (
        m.info_hash.hex(),
        "payload",
        "http://a/ann",
        "http://ws/",
        "sub/b.bin",
        "magnet:?xt=urn:btih:",
    ):
        assert needle in text
    assert main(["info", "--json", str(out)]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["info_hash"] == m.info_hash.hex()
    assert facts["name"] == "payload"
    assert facts["total_size"] == 70_006
    assert facts["piece_length"] == m.info.piece_length
    assert facts["piece_count"] == m.info.num_pieces
    assert facts["private"] is False
    assert facts["trackers"] == [["http://a/ann"]]
    assert facts["web_seeds"] == ["http://ws/"]
    assert facts["files"] == [
        {"path": ["a.txt"], "size": 6},
        {"path": ["sub", "b.bin"], "size": 70_000},
        {"path": ["sub", "empty"], "size": 0},
    ]
    assert facts["magnet"].startswith(f"magnet:?xt=urn:btih:{m.info_hash.hex()}&dn=payload&tr=")


def test_info_on_a_magnet_link(capsys: pytest.CaptureFixture[str]) -> None:
    uri = "magnet:?xt=urn:btih:" + "ab" * 20 + "&dn=Some%20Name&tr=http%3A%2F%2Ft%2Fa&tr=udp://u:1"
    assert main(["info", "--json", uri]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["kind"] == "magnet"
    assert facts["name"] == "Some Name"
    assert facts["info_hash"] == "ab" * 20
    assert facts["trackers"] == [["http://t/a"], ["udp://u:1"]]


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: None, "cannot read"),
        (lambda p: p.write_bytes(b"not bencoded at all"), "not a valid torrent"),
        (
            lambda p: p.write_bytes(b"d4:infod4:name1:x12:piece lengthi16384e6:pieces3:abc6:lengthi5eee"),
            "pieces",
        ),
    ],
)
def test_info_user_errors_exit_2_one_line(
    tmp_path: Path, make: object, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "bad.torrent"
    make(p)  # type: ignore[operator]
    assert main(["info", str(p)]) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert main(["info", "magnet:?dn=nohash"]) == 2
    assert "xt" in capsys.readouterr().err


def test_debug_flag_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--debug", "info", str(tmp_path / "missing.torrent")]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_as_a_process_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "info", str(tmp_path / "nope.torrent")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr


def test_create_as_a_process_draws_no_progress_when_not_a_tty(payload: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.torrent"
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "create", str(payload), "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.splitlines()[0].startswith("name:")
    assert "\r" not in proc.stdout
    assert "\x1b" not in proc.stdout


def test_demo_runs_a_local_swarm(capsys: pytest.CaptureFixture[str]) -> None:
    # The demo is now the whole local swarm (tests/integration/test_demo.py covers it more).
    assert main(["demo", "--size", "2", "--rate", "0"]) == 0
    err = capsys.readouterr().err
    assert "tracker: http://127.0.0.1:" in err
    assert "byte-identical to the original" in err
    assert main(["demo", "--size", "0"]) == 2


def test_rich_views_render(payload: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cli import cmd_create, cmd_info
    from torrent.create import create

    fixtures = ROOT / "fixtures"
    cmd_info._print_rich(cmd_info.describe(str(fixtures / "padded.torrent")))
    text = capsys.readouterr().out
    assert "3 padding files" in text
    assert "data.bin" in text
    assert ".pad" not in text
    meta = cmd_create._create_with_bar(create, str(payload), {"no_date": True})
    assert meta.info.name == "payload"


def test_create_and_info_stay_import_light(payload: Path, tmp_path: Path) -> None:
    """No event loop, HTTP client or rich when stdout is not a terminal: start-up is part of the speed."""
    script = (
        "import sys, cli.main\n"
        f"rc = cli.main.main(['create', {str(payload)!r}, '-o', {str(tmp_path / 'o.torrent')!r}])\n"
        f"rc |= cli.main.main(['info', {str(tmp_path / 'o.torrent')!r}])\n"
        "heavy = sorted(m for m in ('asyncio', 'aiohttp', 'rich', 'uvloop', 'torrent.engine.session') if m in sys.modules)\n"
        "print('HEAVY', heavy, rc)\n"
    )
    assert last_line_of(script) == "HEAVY [] 0"


def test_create_loads_neither_logging_nor_shutil(payload: Path, tmp_path: Path) -> None:
    """``create`` never logs, and argparse's width lookup goes without shutil (and the
    compression modules shutil imports): each start of the command is that much shorter."""
    script = (
        "import sys, cli.main\n"
        f"rc = cli.main.main(['create', {str(payload)!r}, '-o', {str(tmp_path / 'o.torrent')!r}])\n"
        "print('LOADED', sorted(m for m in ('logging', 'shutil', 'lzma', 'bz2') if m in sys.modules), rc)\n"
    )
    assert last_line_of(script) == "LOADED [] 0"


def test_create_with_plain_arguments_loads_no_argument_parser(payload: Path, tmp_path: Path) -> None:
    """Plain ``create`` arguments are read without argparse, ``re``, ``enum``, ``gettext``
    and ``locale`` (about 9 ms of CPU before the hashing starts); others still go
    through argparse, with its messages."""
    script = (
        "import sys, cli.main\n"
        f"rc = cli.main.main(['create', {str(payload)!r}, '-l', '1M', '-o', {str(tmp_path / 'o.torrent')!r}])\n"
        "print('LOADED', [m for m in ('argparse', 're', 'enum', 'gettext', 'locale') if m in sys.modules], rc)\n"
    )
    assert last_line_of(script) == "LOADED [] 0"
    script = (
        "import sys, cli.main\n"
        f"rc = cli.main.main(['create', {str(payload)!r}, '--piece', 'x', '-o', {str(tmp_path / 'p.torrent')!r}])\n"
        "print('LOADED', 'argparse' in sys.modules, rc)\n"
    )
    assert last_line_of(script) == "LOADED True 2"


@pytest.mark.parametrize("threads", ["1", "2"])
def test_create_imports_neither_typing_nor_a_url_parser(payload: Path, tmp_path: Path, threads: str) -> None:
    """``typing`` (about 4 ms with ``contextlib`` and its other imports) stays out of the
    command's whole run, the console script's way in included: a v1 ``create`` starts
    hashing that much sooner. The type checker still sees the annotations' types. A
    plain tracker URL is checked without ``urllib.parse`` and ``ipaddress`` (about 2 ms)."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 << 20))
    script = (
        "import sys\n"
        "from cli.main import main\n"
        "rc = 0\n"
        f"for path in ({str(payload)!r}, {str(big)!r}):\n"
        "    rc |= main(['create', path, '-l', '1M', '--threads', "
        f"{threads!r}, '-t', 'http://127.0.0.1:1/announce', '-o', {str(tmp_path / 'o.torrent')!r}, '-f'])\n"
        "print('LOADED', [m for m in ('typing', 'urllib.parse', 'ipaddress') if m in sys.modules], rc)\n"
    )
    assert last_line_of(script) == "LOADED [] 0"


def test_types_are_the_values_they_are_given() -> None:
    """``InfoHash``/``PeerId``/``PieceIndex`` behave as the NewTypes they are to the type checker."""
    from torrent import InfoHash, PeerId, PieceIndex

    raw = bytes(20)
    assert InfoHash(raw) is raw
    assert PeerId(raw) is raw
    assert PieceIndex(7) == 7
    assert isinstance(PieceIndex(7), int)
    assert [InfoHash.__name__, PeerId.__name__, PieceIndex.__name__] == ["InfoHash", "PeerId", "PieceIndex"]


@pytest.mark.parametrize("columns", ["50", "120"])
def test_help_is_wrapped_to_the_terminal_width(
    columns: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    assert main(["create", "--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= int(columns)
    assert max(len(line) for line in lines) > int(columns) - 30


def test_create_ends_at_once_with_its_output_complete(payload: Path, tmp_path: Path) -> None:
    """``entry`` ends ``create`` with ``os._exit`` (no interpreter teardown): every line must
    still reach the pipe, the torrent must be whole, and the exit codes stay as they were;
    an atexit hook shows the teardown was skipped (and that other commands keep it)."""
    out = tmp_path / "q.torrent"
    script = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('TEARDOWN', file=sys.stderr))\n"
        "from cli.main import entry\n"
        "entry()\n"
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True, timeout=60
        )

    done = run("create", str(payload), "-o", str(out), "--no-date")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == [
        "name",
        "info hash",
        "size",
        "piece length",
        "written to",
    ]
    assert read_metainfo(out).info.name == "payload"
    refused = run("create", str(tmp_path / "missing"), "-o", str(tmp_path / "r.torrent"))
    assert refused.returncode == 2
    assert refused.stderr.startswith("pytorrent create: ")
    assert "TEARDOWN" not in refused.stderr
    shown = run("info", str(out))
    assert shown.returncode == 0
    assert shown.stderr == "TEARDOWN\n"
