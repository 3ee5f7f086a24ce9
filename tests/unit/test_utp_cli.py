"""``--no-utp`` on download, seed and the daemon becomes ``Settings.utp_enabled = False``."""

from __future__ import annotations

import pytest

from cli.cmd_download import build_settings, discovery_settings
from cli.main import build_parser
from torrent.config import Settings


@pytest.mark.parametrize("command", ["download", "seed"])
def test_no_utp_turns_utp_off(command: str) -> None:
    parser = build_parser(command)
    args = ["download", "x.torrent"] if command == "download" else ["seed", "x.torrent", "data"]
    assert build_settings(parser.parse_args(args)).utp_enabled
    assert not build_settings(parser.parse_args([*args, "--no-utp"])).utp_enabled


def test_the_daemon_takes_no_utp_too() -> None:
    # The daemon builds its Settings from the same helper (cli/cmd_daemon.py ``_serve``).
    args = build_parser("daemon").parse_args(["daemon", "--no-utp"])
    assert discovery_settings(args, None)["utp_enabled"] is False
    args = build_parser("daemon").parse_args(["daemon"])
    assert discovery_settings(args, None)["utp_enabled"] is True


def test_utp_settings_are_checked() -> None:
    assert Settings().utp_enabled
    with pytest.raises(ValueError, match="utp_connect_timeout_s"):
        Settings(utp_connect_timeout_s=0).validate()
    with pytest.raises(ValueError, match="utp_recv_buffer_bytes"):
        Settings(utp_recv_buffer_bytes=100).validate()
