"""``--encryption`` on ``download`` and ``seed``, and the ``Settings.encryption`` knob."""

from __future__ import annotations

import pytest

from cli.cmd_download import build_settings
from cli.main import build_parser, main
from torrent.config import Encryption, Settings


@pytest.mark.parametrize("command", [["download", "x.torrent"], ["seed", "x.torrent", "data"]])
@pytest.mark.parametrize("flag", ["require", "prefer", "off"])
def test_the_flag_reaches_settings(command: list[str], flag: str) -> None:
    args = build_parser().parse_args([*command, "--encryption", flag])
    assert build_settings(args).encryption is Encryption(flag)


@pytest.mark.parametrize("command", [["download", "x.torrent"], ["seed", "x.torrent", "data"]])
def test_prefer_is_the_default(command: list[str]) -> None:
    assert build_settings(build_parser().parse_args(command)).encryption is Encryption.PREFER
    assert Settings().encryption is Encryption.PREFER


def test_an_unknown_mode_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["download", "x.torrent", "--encryption", "always"]) == 2
    assert "--encryption" in capsys.readouterr().err


def test_settings_refuse_an_unknown_mode() -> None:
    assert Settings(encryption="require").validate().encryption == Encryption.REQUIRE  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="encryption must be one of require, prefer, off"):
        Settings(encryption="sometimes").validate()  # type: ignore[arg-type]
