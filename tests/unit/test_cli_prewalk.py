"""``pytorrent create DIR`` walks DIR in a forked process while it starts up (cli/prewalk.py):
the walk it hands over must be the command's own, and anything else must be as without it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cli import prewalk
from cli.main import main
from tests.polling import wait_until_blocking
from tests.processes import children, gone
from torrent.create import scan

ROOT = Path(__file__).resolve().parents[2]
#: What the ``pytorrent`` console script runs.
ENTRY = "import sys; from cli.main import entry; sys.exit(entry())"


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (["create", "d"], "d"),
        (["--debug", "create", "-t", "http://x/a", "d", "-f", "--private"], "d"),
        (["create", "-l", "1M", "--threads", "2", "-o", "o.torrent", "d", "--tier", "-w", "u"], "d"),
        (["create", "--comment", "-x", "d"], "d"),
        (["create"], None),
        (["create", "d", "e"], None),
        (["create", "d", "-t"], None),
        (["create", "--track", "u", "d"], None),  # argparse would take the abbreviation
        (["create", "--name=x", "d"], None),
        (["create", "-fo", "x", "d"], None),
        (["create", "--", "d"], None),
        (["info", "d"], None),
        (["seed", "d"], None),
        ([], None),
    ],
)
def test_the_path_is_guessed_only_from_plain_arguments(args: list[str], path: str | None) -> None:
    assert prewalk.guess_path(args) == path


def _tree(root: Path, files: int = 300) -> Path:
    d = root / "tree"
    for i in range(files):
        sub = d / f"d{i % 3}" / ("deep" if i % 5 == 0 else "")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:04d}").write_bytes(b"x" * (i % 7))
    (d / "a b.txt").write_bytes(b"hello")
    (d / "link").symlink_to(d / "a b.txt")
    (d / "linked-dir").symlink_to(d / "d1")
    return d


def _walked(path: Path) -> list[tuple[tuple[str, ...], str, int]] | None:
    """What the walker hands over for ``path`` (run here, not forked); None when it gives up."""
    read, write = os.pipe()
    out: list[tuple[tuple[str, ...], str, int]] = []

    def child() -> None:
        try:
            prewalk._walk_into(str(path), write)
        except Exception:
            pass
        finally:
            os.close(write)

    t = threading.Thread(target=child)
    t.start()
    try:
        for rows in prewalk.Walker(str(path), 0, read).chunks():
            if rows is None:
                return None
            out.extend(rows)
    finally:
        t.join()
    return out


def test_the_option_lists_are_the_parsers() -> None:
    """The walker's guess reads ``create``'s options from its own lists (importing the
    parser would cost the start-up it saves): they must name the parser's options, each
    with or without a value as the parser takes it."""
    import argparse

    from cli.main import build_parser

    top = build_parser(only="create")
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    create = sub.choices["create"]

    def options(parser: argparse.ArgumentParser, valued: bool) -> set[str]:
        return {
            o
            for a in parser._actions
            if a.option_strings and (a.nargs != 0) == valued and not isinstance(a, argparse._HelpAction)
            for o in a.option_strings
        }

    assert options(create, valued=True) == prewalk._VALUED
    assert options(create, valued=False) == prewalk._FLAGS
    assert options(top, valued=False) == prewalk.TOP_FLAGS
    assert not options(top, valued=True)


def test_the_walk_handed_over_is_the_scan(tmp_path: Path) -> None:
    d = _tree(tmp_path)
    walked = _walked(d)
    assert walked is not None
    multi, files = scan(d)
    assert multi
    assert len(files) > prewalk.CHUNK
    assert walked == [tuple(f) for f in files]


@pytest.mark.parametrize("odd", ["fifo", "loop", "non-ascii", "backslash"])
def test_the_walker_gives_up_on_anything_not_plain(tmp_path: Path, odd: str) -> None:
    d = _tree(tmp_path, files=10)
    if odd == "fifo":
        os.mkfifo(d / "d0" / "pipe")
    elif odd == "loop":
        (d / "d0" / "up").symlink_to(d)
    elif odd == "non-ascii":
        (d / "d0" / "é").write_bytes(b"x")
    else:
        (d / "d0" / "a\\b").write_bytes(b"x")
    assert _walked(d) is None


def _console(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", ENTRY, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("fmt", ["v1", "hybrid"])
@pytest.mark.parametrize("odd", ["", "non-ascii", "fifo", "loop"])
def test_the_command_gives_what_it_gives_without_the_walker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str, odd: str
) -> None:
    d = _tree(tmp_path, files=900)  # d0 and d1 fill two records before the walker meets d2
    if odd == "non-ascii":
        (d / "d2" / "é").write_bytes(b"accent")
    elif odd == "fifo":
        os.mkfifo(d / "d2" / "pipe")
    elif odd == "loop":
        (d / "d2" / "up").symlink_to(d)
    args = ["create", str(d), "--no-date", "--format", fmt, "-t", "http://127.0.0.1:1/a", "-l", "16K", "-f"]
    rc = main([*args, "-o", str(tmp_path / "alone.torrent")])  # an argv of its own: no walker
    alone = capsys.readouterr()
    proc = _console([*args, "-o", str(tmp_path / "walked.torrent")], tmp_path)
    assert proc.returncode == rc
    assert proc.stderr == alone.err
    if rc == 0:
        assert (tmp_path / "walked.torrent").read_bytes() == (tmp_path / "alone.torrent").read_bytes()
    else:
        assert proc.stderr.startswith("pytorrent create: ")


@pytest.mark.parametrize("how", ["parent killed", "ctrl-c"])
def test_no_walker_outlives_the_command(tmp_path: Path, how: str) -> None:
    if not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists():
        pytest.skip("no /proc/PID/task/TID/children here")
    d = _tree(tmp_path, files=3000)
    with open(d / "sparse.bin", "wb") as fh:
        fh.truncate(4 << 30)  # the workers are still hashing when the command is stopped
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            ENTRY,
            "create",
            str(d),
            "--threads",
            "2",
            "-l",
            "4M",
            "-o",
            str(tmp_path / "o"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    seen: set[int] = set()

    def children_seen(n: int) -> bool:
        seen.update(children(proc.pid))
        return len(seen) >= n

    try:
        # The walker first, then the two workers.
        wait_until_blocking(lambda: children_seen(3), timeout_s=60, interval_s=0.001, what="three children")
        if how == "parent killed":
            os.kill(proc.pid, signal.SIGKILL)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        wait_until_blocking(lambda: all(gone(pid) for pid in seen), timeout_s=30, what="children gone")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for pid in seen:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
    if how == "ctrl-c":
        assert proc.returncode == 130
        assert err == "pytorrent: interrupted\n"
