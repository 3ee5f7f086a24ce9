"""Terminal-escape torrents: names, comments, file names, ``created by``, a magnet's
``dn`` and tracker messages reach the terminal with their control characters escaped.

``--json`` keeps the exact strings (JSON escapes them itself).
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from cli.main import main
from cli.progress import PlainView, _rich_safe
from torrent.engine.status import TorrentEvent, TorrentEventKind
from torrent.proto import bencoding
from torrent.proto.text import install_printable_log_records, printable
from torrent.types import InfoHash

CLEAR = "\x1b[2J"
TITLE = "\x1b]0;pwned\x07"
CSI_C1 = "\x9b31m"
EVIL = f"a{CLEAR}b{TITLE}c{CSI_C1}d\x7fe"
RAW_CONTROLS = ("\x1b", "\x07", "\x9b", "\x7f")


def no_raw_controls(text: str) -> bool:
    return not any(c in text for c in RAW_CONTROLS)


def test_printable_escapes_c0_c1_and_del_and_keeps_unicode() -> None:
    assert printable(EVIL) == "a\\x1b[2Jb\\x1b]0;pwned\\x07c\\x9b31md\\x7fe"
    assert printable("Ünïcödé 日本 ✓ [x]") == "Ünïcödé 日本 ✓ [x]"
    assert printable("tab\tnewline\n") == "tab\\x09newline\\x0a"


def evil_torrent(tmp_path: Path) -> Path:
    ev = EVIL.encode()
    info = {
        b"name": b"name-" + ev,
        b"piece length": 16384,
        b"pieces": b"\x00" * 20,
        b"files": [{b"length": 10, b"path": [b"dir-" + ev, b"file-" + ev]}],
    }
    top = {b"info": info, b"comment": b"comment-" + ev, b"created by": b"by-" + ev}
    path = tmp_path / "evil.torrent"
    path.write_bytes(bencoding.encode(top))
    return path


def test_info_plain_output_escapes_every_untrusted_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["info", str(evil_torrent(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert no_raw_controls(out), out
    for field in ("name-", "comment-", "by-", "dir-"):
        assert f"{field}a\\x1b[2Jb" in out


def test_info_json_keeps_the_exact_strings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--json", str(evil_torrent(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert no_raw_controls(out)  # JSON escapes them itself
    facts = json.loads(out)
    assert facts["name"] == "name-" + EVIL
    assert facts["comment"] == "comment-" + EVIL
    assert facts["created_by"] == "by-" + EVIL


def test_magnet_dn_is_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    dn = "%1B%5B2J%9B%07x"
    assert main(["info", f"magnet:?xt=urn:btih:{'ab' * 20}&dn={dn}"]) == 0
    out = capsys.readouterr().out
    assert no_raw_controls(out), out
    assert "\\x1b[2J" in out


def test_an_error_naming_untrusted_text_is_one_escaped_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A file ``a`` and a file ``a/b`` in one torrent: the error names both.
    name = EVIL.encode()
    info = {
        b"name": b"t",
        b"piece length": 16384,
        b"pieces": b"\x00" * 20,
        b"files": [{b"length": 1, b"path": [name]}, {b"length": 1, b"path": [name, b"b"]}],
    }
    path = tmp_path / "clash.torrent"
    path.write_bytes(bencoding.encode({b"info": info}))
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert no_raw_controls(err), err
    assert err.count("\n") == 1


def test_plain_view_escapes_names_and_tracker_messages() -> None:
    out = io.StringIO()
    view = PlainView(out)
    ev = TorrentEvent(
        TorrentEventKind.TRACKER_ERROR, InfoHash(b"\x01" * 20), "name-" + EVIL, "failure: " + EVIL
    )
    view.event(ev)
    text = out.getvalue()
    assert no_raw_controls(text)
    assert text.count("\\x1b[2J") == 2


def test_rich_text_escapes_controls_and_markup() -> None:
    safe = _rich_safe(f"[bold red]{EVIL}")
    assert no_raw_controls(safe)
    assert safe.startswith("\\[bold red]")


def test_log_records_are_printable() -> None:
    old = logging.getLogRecordFactory()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    log = logging.getLogger("tests.hostile.escapes")
    log.addHandler(handler)
    try:
        install_printable_log_records()
        log.warning("peer closed: %s", EVIL)
    finally:
        logging.setLogRecordFactory(old)
        log.removeHandler(handler)
    assert no_raw_controls(stream.getvalue())
    assert "\\x1b[2J" in stream.getvalue()


def test_info_rich_view_escapes_every_untrusted_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli import cmd_info

    cmd_info._print_rich(cmd_info.describe(str(evil_torrent(tmp_path))))
    out = capsys.readouterr().out
    assert no_raw_controls(out), out
    assert "name-a\\x1b[2Jb" in out
