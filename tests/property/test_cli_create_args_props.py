"""Hypothesis: ``create``'s own reading of plain arguments is what argparse makes of them.

``cli.cmd_create.parse_plain`` spares the command argparse's import; where it reads the
arguments at all, every attribute must be the one argparse's namespace has, and wherever
argparse refuses them, it must leave them to argparse.
"""

from __future__ import annotations

import contextlib
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from cli.cmd_create import parse_plain
from cli.main import build_parser

OPTIONS = [
    *("-t", "--tracker", "-o", "--output", "-l", "--piece-length", "--comment", "--source"),
    *("-w", "--web-seed", "--format", "--name", "--threads", "--tier", "-f", "--force"),
    *("--private", "--no-date", "--debug", "--no-uvloop"),
    # Not plain: abbreviations, joined values, help, the end of options, unknown ones.
    *("--trac", "--piece", "-l1M", "--name=x", "-fo", "-h", "--help", "--", "-x", "--tiers"),
]
VALUES = [
    *("", "x", "dir", "a b", "1M", "auto", "v1", "v2", "hybrid", "v3", "0", "2", "007"),
    *("-1", "-x", "²", "1_0", " 3", "create", "http://t.example/a", "udp://u.example:80"),
]
words = st.lists(st.sampled_from(OPTIONS + VALUES), max_size=10)


def _argparse(args: list[str]) -> dict[str, object] | None:
    """argparse's namespace for ``args`` as a dict, or None where it refuses them."""
    parser = build_parser("create")
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            return vars(parser.parse_args(args))
        except SystemExit:
            return None


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(["--debug", "--no-uvloop"]), max_size=2), words, words)
def test_plain_arguments_read_as_argparse_reads_them(
    top: list[str], before: list[str], after: list[str]
) -> None:
    for args in ([*top, "create", *before, "PATH", *after], [*top, "create", *before, *after]):
        plain = parse_plain(args)
        if plain is not None:
            assert vars(plain) == _argparse(args)


def test_the_arguments_of_the_benchmark_and_of_common_use_are_plain() -> None:
    for args in (
        ["create", "d", "-l", "1M", "--threads", "2", "-t", "http://127.0.0.1:1/announce", "-o", "o", "-f"],
        ["create", "d"],
        [
            "--debug",
            "create",
            "d",
            "-t",
            "http://a/",
            "--tier",
            "-t",
            "udp://b:1",
            "-w",
            "http://w/",
            "--private",
        ],
        ["create", "d", "--format", "hybrid", "--no-date", "--name", "n", "--comment", "c", "--source", "s"],
    ):
        plain = parse_plain(args)
        assert plain is not None, args
        assert vars(plain) == _argparse(args)
    assert parse_plain(["create", "d", "--help"]) is None
    assert parse_plain(["info", "d"]) is None
