"""Untrusted text made safe for a terminal.

A torrent's name, comment, file names and ``created by``, a magnet's ``dn``, a tracker's
``failure reason`` and ``warning message`` and a peer's client name come from strangers.
Printed raw, an escape sequence in them can clear the screen, retitle the terminal or
hide what came before (``ESC [ 2 J``, ``ESC ] 0 ; title BEL``, the one-byte C1 CSI
``0x9b``). :func:`printable` replaces every C0 control, DEL and C1 control with a visible
``\\xNN`` escape and keeps all other text, printable Unicode included; it is applied
wherever such text is shown (rich views, plain lines, error messages, log records),
never to ``--json`` output, which keeps the exact strings (JSON escapes them itself).
"""

from __future__ import annotations

import re

__all__ = ["install_printable_log_records", "json_controls_escaped", "printable"]

#: C0 controls (0x00-0x1f), DEL (0x7f) and C1 controls (0x80-0x9f).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _escape(m: re.Match[str]) -> str:
    return f"\\x{ord(m.group()):02x}"


def printable(text: str) -> str:
    """``text`` with every C0/C1 control and DEL shown as ``\\xNN``; the rest unchanged.

    >>> printable("a\\x1b[2Jb\\x9bc é")
    'a\\\\x1b[2Jb\\\\x9bc é'
    """
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(_escape, text)


#: What JSON leaves raw but a terminal may act on: DEL and the C1 controls.
_JSON_RAW_CONTROL = re.compile("[\x7f-\x9f]")


def json_controls_escaped(dumped: str) -> str:
    """``json.dumps(..., ensure_ascii=False)`` output with DEL and C1 controls written as
    ``\\u00NN`` too (JSON itself only escapes C0): the same JSON value, safe on a terminal."""
    return _JSON_RAW_CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", dumped)


def install_printable_log_records() -> None:
    """Make every log record's message printable, whatever handler shows it (log lines
    carry peer close reasons, tracker messages and torrent names).

    ``logging`` is imported here, not with this module: a command that prints text
    but never logs (``pytorrent create``) does not load it (about 6 ms).
    """
    import logging

    class _PrintableLogRecord(logging.LogRecord):
        def getMessage(self) -> str:
            return printable(super().getMessage())

    logging.setLogRecordFactory(_PrintableLogRecord)
