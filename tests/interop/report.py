"""Run the interoperability tests and write their matrix into README.md.

Usage (from the repository root, as root so that a loopback-only network namespace can
be made; installed clients as ``.ci/run`` installs them)::

    python tests/interop/report.py            # run, then rewrite README's section
    python tests/interop/report.py --junit F  # only render an earlier run's JUnit XML

The tests run under ``pytest --junitxml``; each test (function and parameter) is one
cell. A cell reads ``pass``, ``FAIL``, ``n/a`` (a skip whose reason starts with
``n/a:``), ``xfail`` (a known limitation of that client, reason given) or ``skip``.
Every cell that does not pass gets a numbered note with the reason pytest recorded.
The section between ``## Interoperability`` and the next ``## `` heading is replaced
(or added before ``## Benchmarks``). Exit status: pytest's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BUDGET_S = 8 * 60

COLUMNS = [("libtorrent", "libtorrent 2.1 (PyPI)"), ("transmission", "Transmission 3.00"), ("aria2", "aria2 1.36"),
           ("qbittorrent", "qBittorrent 4.5.2")]  # fmt: skip
ROWS = [
    ("test_it_seeds_we_download", "it seeds, our client downloads (through our tracker)"),
    ("test_we_seed_it_downloads", "our client seeds, it downloads (through our tracker)"),
    ("test_it_announces_http", "it announces to our tracker over HTTP and finds a peer"),
    ("test_it_announces_udp", "it announces to our tracker over UDP and finds a peer"),
    ("test_it_loads_our_torrent", "it loads a torrent made by `pytorrent create` (same info hash)"),
    ("test_we_load_its_torrent", "we load a torrent it made (`transmission-create`, libtorrent)"),
    ("test_handshake", "BEP 3 handshake, fast extension (BEP 6) and extension protocol (BEP 10)"),
]
SINGLE = [
    (
        "test_mixed_swarm",
        "mixed swarm: libtorrent seed; leechers ours, Transmission, aria2; ours trades with leechers",
    ),
    ("test_we_load_a_mktorrent_torrent", "we load a torrent mktorrent made (same info hash, files, pieces)"),
    ("test_we_load_a_v1_only_libtorrent_torrent", "we load a v1-only libtorrent torrent"),
]


def isolated() -> bool:
    return sorted(name for _, name in socket.if_nameindex()) == ["lo"]


def run_tests(junit: Path, handshake_log: Path, extra: list[str]) -> tuple[int, float, str]:
    """Run ``pytest tests/interop``; inside a new network namespace when we may make one."""
    pytest_cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/interop",
                  f"--junitxml={junit}", *extra]  # fmt: skip
    shown = f"python -m pytest -q tests/interop {' '.join(extra)}".strip()
    if not isolated() and os.geteuid() == 0:
        inner = "ip link set lo up && exec " + shlex.join(pytest_cmd)
        cmd = ["unshare", "--net", "--", "sh", "-c", inner]
        shown = f"unshare --net -- sh -c 'ip link set lo up && exec {shown}'"
    else:
        cmd = pytest_cmd
    env = dict(os.environ, INTEROP_HANDSHAKE_LOG=str(handshake_log))
    started = time.monotonic()
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    return rc, time.monotonic() - started, shown


def outcomes(junit: Path) -> tuple[dict[str, tuple[str, str]], float]:
    """``{test name with parameter: (status, reason)}`` and the suite's time from JUnit XML."""
    tree = ET.parse(junit)
    out: dict[str, tuple[str, str]] = {}
    total = 0.0
    for suite in tree.iter("testsuite"):
        total += float(suite.get("time", 0))
    for case in tree.iter("testcase"):
        name = case.get("name", "")
        status, reason = "pass", ""
        for child in case:
            msg = (child.get("message") or child.text or "").strip()
            if child.tag in ("failure", "error"):
                status, reason = "FAIL", msg.splitlines()[0] if msg else child.tag
            elif child.tag == "skipped":
                if child.get("type") == "pytest.xfail":
                    status, reason = "xfail", msg
                elif msg.startswith("n/a:"):
                    status, reason = "n/a", msg[4:].strip()
                else:
                    status, reason = "skip", re.sub(r"^Skipped: ", "", msg)
        out[name] = (status, reason)
    return out, total


def render(
    results: dict[str, tuple[str, str]], handshakes: list[dict[str, object]], meta: dict[str, str]
) -> str:
    notes: list[str] = []

    def cell(key: str) -> str:
        if key not in results:
            return "not run"
        status, reason = results[key]
        if status == "pass":
            return "pass"
        note = f"{key}: {reason}" if reason else key
        notes.append(note)
        return f"{status} [{len(notes)}]"

    lines = [
        "## Interoperability",
        "",
        "Each cell is a test in `tests/interop/` against the real client on loopback, inside a",
        "loopback-only network namespace, with DHT, local peer discovery, UPnP, NAT-PMP, PEX and",
        "uTP off. Transfers use a multi-file torrent made by `pytorrent create` (20 MiB) and our",
        "tracker. The harness (`tests/interop/peers.py`) starts every client on free ports in a",
        "temporary directory and stops exactly the processes it started.",
        "",
        f"Last run: {meta['date']}, {meta['duration']} on {meta['cpus']} cores (machine shared with other",
        f"work), command: `{meta['command']}`; table written by `python tests/interop/report.py`.",
        "",
        "| | " + " | ".join(title for _, title in COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for func, label in ROWS:
        lines.append(f"| {label} | " + " | ".join(cell(f"{func}[{key}]") for key, _ in COLUMNS) + " |")
    lines.append("")
    for func, label in SINGLE:
        lines.append(f"- {label}: **{cell(func)}**")
    lines.append("")
    if notes:
        lines.append("Cells that do not pass:")
        lines.append("")
        for i, note in enumerate(notes, 1):
            lines.append(f"{i}. {note}")
        lines.append("")
    if handshakes:
        lines += [
            "What each client advertises when we connect to it as a peer (`test_handshake`):",
            "",
            "| client | reserved bits | peer id | BEP 10 `v` | BEP 10 `m` | `reqq` | opens with | piece-set msgs |",
            "|---|---|---|---|---|---|---|---|",
        ]
        seen: set[str] = set()
        for h in handshakes:
            if h["client"] in seen:
                continue
            seen.add(str(h["client"]))
            flags = ", ".join(h.get("reserved_flags") or []) or "none"  # type: ignore[arg-type]
            m = ", ".join(h.get("m") or []) or "-"  # type: ignore[arg-type]
            lines.append(
                f"| {h['client']} | `{h['reserved']}` ({flags}) | `{h['peer_id_prefix']}` | {h.get('v') or '-'} "
                f"| {m} | {h.get('reqq') or '-'} | {h.get('opening') or '-'} | {h.get('piece_set_messages', '-')} |"
            )
        lines.append("")
    lines += [
        "Known behaviour of these clients on loopback, which the tests are written around:",
        "",
        "- Transmission 3.00 ignores 127.x peers handed out by a tracker and never dials them; as a",
        "  leecher it is reached by a seed that re-announces and dials it. It keeps one connection",
        "  per IP address, so in the mixed swarm the other peers use 127.0.0.2 and 127.0.0.3. It",
        "  turns interested only on its 10 s rechoke pulse, so its transfers take at least ~10 s.",
        "- aria2 1.36, while downloading, sends a bitfield again later in a connection: raw bytes",
        "  show `extended, bitfield, allowed fast x10, bitfield` and `extended, have none, allowed",
        "  fast x10, interested, requests ..., bitfield`. libtorrent and our wire codec take a late",
        "  bitfield as the peer's new piece set (our codec used to drop the connection, which the",
        "  transfer cells caught: a transfer fails if our client drops a peer for a protocol error).",
        '- aria2 1.36 announces over UDP only through its DHT socket ("udp is not supported yet"',
        "  with DHT off), and drops a connection whose BEP 10 handshake arrives before it has",
        "  answered the BitTorrent handshake.",
        "- libtorrent shares UDP tracker connection ids between sessions of one process (a cache",
        "  keyed by tracker address); the harness runs one session per process.",
        "- qBittorrent 4.5.2 has no torrent creator in its Web API; it resets connections for a",
        "  moment after it reports a torrent as seeding.",
        "",
    ]
    return "\n".join(lines)


def write_readme(section: str) -> None:
    text = README.read_text()
    pattern = re.compile(r"^## Interoperability\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    elif "\n## Benchmarks" in text:
        text = text.replace("\n## Benchmarks", "\n" + section + "\n## Benchmarks", 1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    README.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--junit", type=Path, help="render this JUnit XML instead of running the tests")
    parser.add_argument("--handshakes", type=Path, help="handshake log (JSON lines) for --junit")
    parser.add_argument("--no-write", action="store_true", help="print the section, leave README.md alone")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="interop-report-") as tmp:
        junit = args.junit or Path(tmp) / "junit.xml"
        hs_log = args.handshakes or Path(tmp) / "handshakes.jsonl"
        rc = 0
        command = "python -m pytest -q tests/interop"
        if args.junit is None:
            rc, wall_s, command = run_tests(junit, hs_log, args.pytest_args)
        results, suite_s = outcomes(junit)
        wall_s = wall_s if args.junit is None else suite_s
        handshakes = []
        if hs_log.exists():
            handshakes = [json.loads(line) for line in hs_log.read_text().splitlines() if line.strip()]
        meta = {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "duration": f"{wall_s / 60:.1f} min" if wall_s >= 60 else f"{wall_s:.0f} s",
            "cpus": str(os.cpu_count()),
            "command": command,
        }
        section = render(results, handshakes, meta)
    if args.no_write:
        print(section)
    else:
        write_readme(section)
        print(f"README.md: Interoperability section written ({len(results)} tests)")
    if wall_s > BUDGET_S:
        print(f"warning: the interop set took {wall_s:.0f} s, over its {BUDGET_S} s budget", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
