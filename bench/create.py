"""Torrent creation throughput: pytorrent against mktorrent, libtorrent and raw SHA-1.

Two payloads, made in a temp dir and deleted afterwards: one file of SIZE bytes, and the
same number of bytes spread over FILES files in DIRS directories. The page cache is
warmed before timing. Each tool hashes each payload RUNS times with 1 MiB pieces;
the table shows the median and the best MB/s (10^6 bytes per second) and the ratios to
mktorrent, then each tool's CPU seconds (user + system of its whole process). Tools run
interleaved, so load from elsewhere hits them alike; on a shared machine the best run is
the least disturbed one, and the CPU seconds move less than the times.

* ``pytorrent``: ``pytorrent create`` as a whole process, started the way the console
  script starts it (interpreter start-up and imports included), ``--threads`` = usable
  cores. With ``--baseline DIR`` another checkout (say, the main branch) is timed the
  same way in the same interleaving, so a change is measured against what it replaces
  under the same load.
* ``mktorrent -t <cores>``: whole process.
* ``libtorrent``: ``create_torrent`` + ``set_piece_hashes`` (v1 only) timed inside its
  own process, import excluded (libtorrent hashes on one thread).
* ``sha1 xN``: ``hashlib.sha1`` over an in-memory buffer on 1 and on N threads: the
  most any hasher using this machine's SHA-1 can do (no file reads at all).

Usage: ``python bench/create.py [--size 1G] [--files 5000] [--dirs 10] [--runs 3] [--baseline DIR]``
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PIECE_LENGTH = 1 << 20

LIBTORRENT_SCRIPT = r"""
import sys, time, warnings
warnings.simplefilter("ignore")
import libtorrent as lt
path, out = sys.argv[1], sys.argv[2]
t = time.perf_counter()
fs = lt.file_storage()
lt.add_files(fs, path)
ct = lt.create_torrent(fs, PIECE_LENGTH, flags=lt.create_torrent.v1_only)
lt.set_piece_hashes(ct, str(__import__("os").path.dirname(path)))
data = lt.bencode(ct.generate())
open(out, "wb").write(data)
print(time.perf_counter() - t)
""".replace("PIECE_LENGTH", str(PIECE_LENGTH))


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def make_payloads(base: Path, size: int, files: int, dirs: int) -> tuple[Path, Path]:
    """One file of ``size`` bytes, and ``files`` files of together ``size`` bytes in ``dirs`` dirs."""
    single = base / "single.bin"
    with open(single, "wb") as fh:
        left = size
        while left:
            n = min(left, 1 << 20)
            fh.write(os.urandom(n))
            left -= n
    many = base / "many"
    per_file = size // files
    with open(single, "rb") as src:
        for i in range(files):
            d = many / f"dir{i % dirs:02d}"
            d.mkdir(parents=True, exist_ok=True)
            n = per_file if i < files - 1 else size - per_file * (files - 1)
            (d / f"file{i:05d}.bin").write_bytes(src.read(n))
    return single, many


def warm(path: Path) -> None:
    paths = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in paths:
        with open(p, "rb") as fh:
            while fh.read(8 << 20):
                pass


#: CPU seconds (user + system) of every process a tool ran, per (tool, payload), as measured.
CPU: dict[tuple[str, str], list[float]] = {}


def children_cpu() -> float:
    """CPU seconds used so far by this process's finished children."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t


#: What the ``pytorrent`` console script runs.
ENTRY = "import sys; from cli.main import entry; sys.exit(entry())"


def pytorrent_env(root: Path) -> dict[str, str]:
    """The environment that makes ``root``'s packages the ones imported."""
    return {**os.environ, "PYTHONPATH": str(root)}


def run_pytorrent(payload: Path, out: Path, threads: int, root: Path = ROOT) -> float:
    cmd = [
        sys.executable,
        "-c",
        ENTRY,
        "create",
        str(payload),
        "-l",
        "1M",
        "--threads",
        str(threads),
        "-t",
        "http://127.0.0.1:1/announce",
        "-o",
        str(out),
        "-f",
    ]
    return timed(cmd, cwd=root, env=pytorrent_env(root))


def run_mktorrent(payload: Path, out: Path, threads: int) -> float:
    out.unlink(missing_ok=True)
    cmd = [
        "mktorrent",
        "-t",
        str(threads),
        "-l",
        "20",
        "-a",
        "http://127.0.0.1:1/announce",
        "-o",
        str(out),
        str(payload),
    ]
    return timed(cmd)


def run_libtorrent(payload: Path, out: Path, threads: int) -> float:
    proc = subprocess.run(
        [sys.executable, "-c", LIBTORRENT_SCRIPT, str(payload), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(proc.stdout.strip().splitlines()[-1])


def raw_sha1(size: int, threads: int) -> float:
    """Seconds to SHA-1 ``size`` bytes of memory in 1 MiB pieces on ``threads`` threads."""
    buf = os.urandom(PIECE_LENGTH)
    pieces = size // PIECE_LENGTH

    def work(n: int) -> None:
        for _ in range(n):
            hashlib.sha1(buf).digest()

    shares = [pieces // threads + (1 if i < pieces % threads else 0) for i in range(threads)]
    t = time.perf_counter()
    workers = [threading.Thread(target=work, args=(n,)) for n in shares]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1G", help="payload size (default 1G)")
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--dirs", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--extra-threads", action="store_true", help="also time pytorrent with one thread more than cores"
    )
    ap.add_argument(
        "--baseline",
        metavar="DIR",
        default=None,
        help="another checkout to time beside this one (e.g. a clone at the main branch)",
    )
    ap.add_argument(
        "--dir", default=None, help="where to make the temp payload (default: the system temp dir)"
    )
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    n = cores()
    have_mktorrent = shutil.which("mktorrent") is not None
    try:
        import libtorrent  # noqa: F401

        have_libtorrent = True
    except ImportError:
        have_libtorrent = False

    # An installed package has its bytecode compiled (pip does it); a checkout run with
    # PYTHONDONTWRITEBYTECODE would otherwise compile every module on every start.
    baseline = Path(args.baseline).resolve() if args.baseline else None
    for root in [ROOT] + ([baseline] if baseline else []):
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", "torrent", "cli"],
            cwd=root,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    base = Path(tempfile.mkdtemp(prefix="pytorrent-bench-", dir=args.dir))
    results: dict[tuple[str, str], list[float]] = {}
    try:
        print(
            f"making payloads in {base} ({size} bytes; {args.files} files in {args.dirs} dirs)",
            file=sys.stderr,
        )
        single, many = make_payloads(base, size, args.files, args.dirs)
        payloads = {"1 file": single, f"{args.files} files": many}
        tools: dict[str, Any] = {f"pytorrent create --threads {n}": run_pytorrent}
        if baseline is not None:
            tools[f"baseline ({baseline.name}) --threads {n}"] = lambda p, o, t: run_pytorrent(
                p, o, t, baseline
            )
        if args.extra_threads:
            # mktorrent -t N runs N hashing threads plus its reading thread: on a loaded
            # machine the extra thread wins it a larger share of the cores.
            tools[f"pytorrent create --threads {n + 1}"] = lambda p, o, t: run_pytorrent(p, o, t + 1)
        if have_mktorrent:
            tools[f"mktorrent -t {n}"] = run_mktorrent
        if have_libtorrent:
            tools["libtorrent create_torrent"] = run_libtorrent
        for label, payload in payloads.items():
            warm(payload)
            for _ in range(args.runs):
                # Interleave the tools so that load from elsewhere hits them alike.
                for tool, fn in tools.items():
                    out = base / "out.torrent"
                    cpu = children_cpu()
                    results.setdefault((tool, label), []).append(fn(payload, out, n))
                    CPU.setdefault((tool, label), []).append(children_cpu() - cpu)
                    out.unlink(missing_ok=True)
        for threads in sorted({1, n}):
            results[(f"hashlib.sha1 x{threads} (memory)", "-")] = [
                raw_sha1(size, threads) for _ in range(args.runs)
            ]
    finally:
        shutil.rmtree(base, ignore_errors=True)

    report(results, size, ["1 file", f"{args.files} files"], n, args.runs, have_mktorrent, baseline)
    return 0


def report(
    results: dict[tuple[str, str], list[float]],
    size: int,
    labels: list[str],
    n: int,
    runs: int,
    have_mktorrent: bool,
    baseline: Path | None,
) -> None:
    """Print the table, the CPU seconds and the ratios to mktorrent."""

    def mbps(key: tuple[str, str], pick: Any = statistics.median) -> float:
        return size / pick(results[key]) / 1e6

    print(
        f"\nCreating torrents: {size / 2**30:g} GiB, 1 MiB pieces, page cache warm, {n} cores, "
        f"{runs} runs each (MB/s = 10^6 bytes/s)\n"
    )
    print(f"| tool | {labels[0]}: median | best | {labels[1]}: median | best |")
    print("|---|---:|---:|---:|---:|")
    tools_seen = list(dict.fromkeys(t for t, _ in results))
    for tool in tools_seen:
        keys = [(tool, "-")] * 2 if (tool, "-") in results else [(tool, lab) for lab in labels]
        cells = [f"{mbps(k):,.0f} | {mbps(k, min):,.0f}" for k in keys]
        print(f"| {tool} | " + " | ".join(cells) + " |")
    print("\nCPU seconds per run (user + system, whole process; libtorrent's includes its import), median:")
    for tool in tools_seen:
        if (tool, labels[0]) in CPU:
            cells = ", ".join(f"{lab}: {statistics.median(CPU[(tool, lab)]):.2f} s" for lab in labels)
            print(f"  {tool}: {cells}")
    mk = f"mktorrent -t {n}"
    py = f"pytorrent create --threads {n}"
    if have_mktorrent:
        for what, pick in (("median", statistics.median), ("best", min)):
            ratios = ", ".join(
                f"{lab}: {mbps((py, lab), pick) / mbps((mk, lab), pick):.2f}x" for lab in labels
            )
            print(f"pytorrent / mktorrent ({what}): {ratios}")
            if baseline is not None:
                base_tool = f"baseline ({baseline.name}) --threads {n}"
                ratios = ", ".join(
                    f"{lab}: {mbps((base_tool, lab), pick) / mbps((mk, lab), pick):.2f}x" for lab in labels
                )
                print(f"baseline / mktorrent ({what}): {ratios}")
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    sys.exit(main())
