"""v2 and hybrid torrent creation (BEP 52): pytorrent against libtorrent's create_torrent.

Two payloads, made in a temp dir and deleted afterwards: one file of SIZE bytes, and the
same bytes spread over FILES files in 10 directories. The page cache is warmed first.
For each format (``v2``, ``hybrid``) each tool hashes each payload RUNS times with 1 MiB
pieces, interleaved; the table shows the median MB/s (10^6 bytes per second), the best,
and the ratio to libtorrent. Both tools produce the same info dict (checked after the
first run: the info hashes must be equal).

* ``pytorrent``: ``pytorrent create --format FMT`` as a whole process, started the way
  the console script starts it (interpreter start-up included), hashing workers =
  usable cores. ``--baseline DIR`` times another checkout the same way, interleaved.
* ``libtorrent``: ``create_torrent`` (``v2_only`` or hybrid flags) + ``set_piece_hashes``
  in its own process, import excluded; its CPU seconds are shown beside its wall time
  (CPU/wall above 1 means it hashed on more than one thread). Its whole process (start-up
  and ``import libtorrent`` included, as ours is timed) is shown as well, for reference.

Usage: ``python bench/create_v2.py [--size 1G] [--files 1000] [--runs 3] [--baseline DIR]``
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.create import (  # noqa: E402
    ENTRY,
    children_cpu,
    cores,
    make_payloads,
    parse_size,
    pytorrent_env,
    warm,
)

PIECE_LENGTH = 1 << 20

LIBTORRENT_SCRIPT = r"""
import sys, time, warnings, os, hashlib, resource
warnings.simplefilter("ignore")
import libtorrent as lt
path, out, fmt = sys.argv[1], sys.argv[2], sys.argv[3]
flags = lt.create_torrent.v2_only if fmt == "v2" else 0
r0 = resource.getrusage(resource.RUSAGE_SELF)
t = time.perf_counter()
fs = lt.file_storage()
lt.add_files(fs, path)
ct = lt.create_torrent(fs, PIECE_LENGTH, flags)
lt.set_piece_hashes(ct, os.path.dirname(path))
entry = ct.generate()
wall = time.perf_counter() - t
r1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
info = lt.bencode(entry[b"info"])
print(wall, cpu, hashlib.sha256(info).hexdigest())
""".replace("PIECE_LENGTH", str(PIECE_LENGTH))


def run_pytorrent(payload: Path, out: Path, fmt: str, threads: int, root: Path = ROOT) -> tuple[float, str]:
    cmd = [sys.executable, "-c", ENTRY, "create", str(payload), "-l", "1M", "--format", fmt]
    cmd += ["--threads", str(threads), "--no-date", "-o", str(out), "-f"]
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=root, env=pytorrent_env(root), check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t
    m = re.search(r"^info hash v2: ([0-9a-f]{64})$", done.stdout, re.M)
    assert m, done.stdout
    return wall, m.group(1)


def run_libtorrent(payload: Path, out: Path, fmt: str) -> tuple[float, float, str, float]:
    """(hashing wall s, hashing CPU s, v2 info hash, whole-process wall s)."""
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", LIBTORRENT_SCRIPT, str(payload), str(out), fmt],
        check=True,
        capture_output=True,
        text=True,
    )
    whole = time.perf_counter() - t
    wall, cpu, digest = proc.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu), digest, whole


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1G", help="payload size (default 1G)")
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--baseline", metavar="DIR", default=None, help="another checkout to time beside this one"
    )
    args = ap.parse_args(argv)
    baseline = Path(args.baseline).resolve() if args.baseline else None
    size = parse_size(args.size)
    threads = cores()
    rows: dict[tuple[str, str, str], list[float]] = {}
    lt_cpu: dict[tuple[str, str], list[float]] = {}
    lt_cpu_s: dict[tuple[str, str], list[float]] = {}
    our_cpu: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-create-v2-") as tmp:
        base = Path(tmp)
        single, many = make_payloads(base, size, args.files, 10)
        for payload in (single, many):
            warm(payload)
        print(f"payload {size / 1e6:.0f} MB, {threads} cores, 1 MiB pieces, {args.runs} runs", flush=True)
        for run in range(args.runs):
            for fmt in ("v2", "hybrid"):
                for label, payload in (("1 file", single), (f"{args.files} files", many)):
                    cpu = children_cpu()
                    ours, our_hash = run_pytorrent(payload, base / "ours.torrent", fmt, threads)
                    our_cpu.setdefault((fmt, label), []).append(children_cpu() - cpu)
                    if baseline is not None:
                        before, _ = run_pytorrent(payload, base / "base.torrent", fmt, threads, baseline)
                        rows.setdefault((fmt, label, "baseline"), []).append(size / before / 1e6)
                    theirs, cpu, their_hash, whole = run_libtorrent(payload, base / "lt.torrent", fmt)
                    rows.setdefault((fmt, label, "libtorrent process"), []).append(size / whole / 1e6)
                    if run == 0 and our_hash != their_hash:
                        print(f"  {fmt} {label}: info hashes differ! ours {our_hash} libtorrent {their_hash}")
                    rows.setdefault((fmt, label, "pytorrent"), []).append(size / ours / 1e6)
                    rows.setdefault((fmt, label, "libtorrent"), []).append(size / theirs / 1e6)
                    lt_cpu.setdefault((fmt, label), []).append(cpu / theirs)
                    lt_cpu_s.setdefault((fmt, label), []).append(cpu)
                    was = f"  baseline {size / before / 1e6:6.0f} MB/s" if baseline is not None else ""
                    print(
                        f"run {run + 1} {fmt:6} {label:11} pytorrent {size / ours / 1e6:6.0f} MB/s{was}  "
                        f"libtorrent {size / theirs / 1e6:6.0f} MB/s (CPU/wall {cpu / theirs:.2f}; "
                        f"whole process {size / whole / 1e6:.0f} MB/s)",
                        flush=True,
                    )
    print()
    print(
        f"{'format':7} {'payload':12} {'pytorrent MB/s':>15} {'libtorrent MB/s':>16} {'ratio':>6} {'best':>12}"
    )
    for fmt in ("v2", "hybrid"):
        for label in ("1 file", f"{args.files} files"):
            ours_r = rows[(fmt, label, "pytorrent")]
            lt_r = rows[(fmt, label, "libtorrent")]
            med_o, med_l = statistics.median(ours_r), statistics.median(lt_r)
            print(
                f"{fmt:7} {label:12} {med_o:15.0f} {med_l:16.0f} {med_o / med_l:5.2f}x "
                f"{max(ours_r):5.0f}/{max(lt_r):.0f}  (libtorrent CPU/wall "
                f"{statistics.median(lt_cpu[(fmt, label)]):.2f}; CPU s: pytorrent whole process "
                f"{statistics.median(our_cpu[(fmt, label)]):.2f}, libtorrent hashing "
                f"{statistics.median(lt_cpu_s[(fmt, label)]):.2f})"
            )
            whole_r = statistics.median(rows[(fmt, label, "libtorrent process")])
            extra = f"   libtorrent whole process {whole_r:.0f} MB/s: {med_o / whole_r:.2f}x"
            if baseline is not None:
                med_b = statistics.median(rows[(fmt, label, "baseline")])
                extra += f"; baseline {med_b:.0f} MB/s: {med_b / med_l:.2f}x of libtorrent"
            print(extra)
    print(f"\nmax RSS of this script: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    raise SystemExit(main())
