"""Every version string comes from ``torrent.__version__``."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import torrent
from torrent import config, create, version
from torrent.version import peer_id_prefix

ROOT = Path(__file__).resolve().parents[2]


def test_the_strings_of_0_1_0() -> None:
    assert torrent.__version__ == version.__version__ == "0.1.0"
    assert config.PEER_ID_PREFIX == b"-PT0100-"
    assert version.CLIENT_NAME == "pytorrent 0.1.0"
    assert version.USER_AGENT == "pytorrent/0.1.0"
    assert create.DEFAULT_CREATED_BY == "pytorrent/0.1.0"


def test_package_metadata_agrees() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["version"] == torrent.__version__


@pytest.mark.parametrize(
    ("ver", "prefix"),
    [("0.1.0", b"-PT0100-"), ("1.2", b"-PT1200-"), ("2.10.3.1", b"-PT2A31-"), ("0.0.61", b"-PT00z0-")],
)
def test_azureus_style_prefix(ver: str, prefix: bytes) -> None:
    assert peer_id_prefix(ver) == prefix
    assert len(prefix) == 8


@pytest.mark.parametrize("ver", ["1.2.3.4.5", "0.62.0", "1.-1"])
def test_versions_that_do_not_fit_a_peer_id(ver: str) -> None:
    with pytest.raises(ValueError, match="peer id"):
        peer_id_prefix(ver)
