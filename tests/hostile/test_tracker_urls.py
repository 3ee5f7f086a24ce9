"""Malformed tracker URLs: skipped with one ``tracker_error`` line, never a traceback.

A torrent may carry any bytes in ``announce``/``announce-list``; ``download`` must keep
using its other peer sources, ``create -t`` refuses such a URL (exit 2) and ``info``
warns about it.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from cli.main import main
from tests.integration.swarm_helpers import make_payload, make_torrent, same_tree
from torrent import config
from torrent.engine.session import Session
from torrent.proto.tracker_codec import tracker_url_problem

ROOT = Path(__file__).resolve().parents[2]
BAD_URLS = ["udp://host:99999/announce", "udp://host/", "http://[::1"]


@pytest.mark.parametrize("url", BAD_URLS)
def test_each_malformed_url_has_a_one_line_reason(url: str) -> None:
    problem = tracker_url_problem(url)
    assert problem is not None
    assert url in problem
    assert "\n" not in problem


@pytest.mark.parametrize(
    "url", ["http://a/ann", "https://a:443/x?k=1", "udp://c:6969", "udp://[::1]:6969/announce"]
)
def test_good_urls_pass(url: str) -> None:
    assert tracker_url_problem(url) is None


@pytest.mark.parametrize("url", BAD_URLS)
def test_create_refuses_a_malformed_tracker_with_exit_2(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "f").write_bytes(b"x" * 100)
    out = tmp_path / "f.torrent"
    assert main(["create", str(tmp_path / "f"), "-o", str(out), "-t", url]) == 2
    err = capsys.readouterr().err
    assert url in err
    assert err.count("\n") == 1
    assert not out.exists()


def test_info_warns_about_each_malformed_tracker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    content = make_payload(tmp_path, "p.bin", 1000)
    meta = make_torrent(content, trackers=[*BAD_URLS, "http://127.0.0.1:1/announce"])
    (tmp_path / "t.torrent").write_bytes(meta.to_bytes())
    assert main(["info", str(tmp_path / "t.torrent")]) == 0
    out = capsys.readouterr().out
    for url in BAD_URLS:
        assert url in out
    assert out.count("it will be skipped") == len(BAD_URLS)


async def test_download_skips_malformed_trackers_and_finishes_from_the_peer(tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "payload.bin", 300_000, seed=3)
    meta = make_torrent(content, trackers=BAD_URLS)
    (tmp_path / "t.torrent").write_bytes(meta.to_bytes())
    async with Session(config.testing_settings()) as s:
        seed = await s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", "download", "--no-dht", "--no-lsd", "--no-port-mapping", str(tmp_path / "t.torrent"),
            "-o", str(tmp_path / "out"), "--port", "0", "--bind", "127.0.0.1",
            "--peer", f"127.0.0.1:{s.port}", "--timeout", "60", "--no-seed",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(90):
            out, err = await proc.communicate()
    text = (out + err).decode()
    assert proc.returncode == 0, text
    assert "Traceback" not in text
    for url in BAD_URLS:
        assert sum(url in line for line in text.splitlines()) == 1, text
    assert same_tree(content, tmp_path / "out" / "payload.bin")
