"""``MAGNET:`` in any case is a magnet link for ``download`` as it is for ``info``."""

from __future__ import annotations

import pytest

from cli.cmd_download import load_source, load_torrent
from cli.main import UsageError
from torrent.proto.magnet import Magnet

IH = "c401dbb712fd894654fb129553a7f1f87f03a042"


@pytest.mark.parametrize("scheme", ["magnet", "MAGNET", "Magnet", "mAgNeT"])
def test_download_takes_a_magnet_link_in_any_case(scheme: str) -> None:
    got = load_source(f"{scheme}:?xt=urn:btih:{IH}&dn=x")
    assert isinstance(got, Magnet)
    assert got.info_hash.hex() == IH
    assert got.name == "x"


def test_commands_that_need_a_torrent_file_say_so_for_any_case() -> None:
    with pytest.raises(UsageError, match="magnet"):
        load_torrent(f"MAGNET:?xt=urn:btih:{IH}")
