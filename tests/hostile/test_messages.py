"""Messages that say what happened (issue 10, section 5)."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from cli.main import main
from tests.integration.swarm_helpers import make_payload, make_torrent
from tests.integration.test_bad_peers import fake_peer, hostile

ROOT = Path(__file__).resolve().parents[2]


async def test_the_only_peer_banned_for_bad_data_is_named_with_the_reason(tmp_path: Path) -> None:
    meta = make_torrent(make_payload(tmp_path / "src", "p.bin", 200_000), piece_length=32 * 1024)
    (tmp_path / "t.torrent").write_bytes(meta.to_bytes())
    async with fake_peer(hostile(meta)) as (port, _):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", "download", "--no-dht", "--no-lsd", "--no-port-mapping", str(tmp_path / "t.torrent"),
            "-o", str(tmp_path / "out"), "--port", "0", "--bind", "127.0.0.1", "--encryption", "off",
            "--peer", f"127.0.0.1:{port}", "--timeout", "3", "--no-seed", "--quiet",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(60):
            _, err = await proc.communicate()
    text = err.decode()
    assert proc.returncode == 1, text
    assert text.count("\n") == 1, text
    assert "no peers reachable" in text
    assert f"1 peer banned (last: 127.0.0.1:{port}: " in text
    assert "hash" in text or "corrupt" in text


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["download", "x.torrent", "--max-peers", "many"], "--max-peers"),
        (["download", "x.torrent", "--encryption", "always"], "--encryption"),
        (["seed", "x.torrent", "d", "--port", "http"], "--port"),
        ([], "COMMAND"),
    ],
)
def test_argument_errors_are_one_line_not_the_usage_block(
    argv: list[str], names: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert names in err
    assert "usage:" not in err


def test_tracker_help_shows_readable_metavars(capsys: pytest.CaptureFixture[str]) -> None:
    """Not argparse's default of the option's dest in capitals (``NUMWANT_DEFAULT``)."""
    assert main(["tracker", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--numwant-default N" in out
    assert "--max-swarms N" in out
    assert re.search(r"\b[A-Z]+_[A-Z_]+\b", out) is None, re.findall(r"\b[A-Z]+_[A-Z_]+\b", out)
