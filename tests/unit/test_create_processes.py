"""torrent.create_hashing's worker processes: the same bytes as threads, errors, no worker left behind."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import torrent.create_hashing as hashing
from tests.polling import wait_until_blocking
from tests.processes import children, gone
from torrent.create import make
from torrent.create_hashing import HashJob, ProcessHashJob, SourceFile, new_job
from torrent.errors import StorageError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> list[ProcessHashJob]:
    """Processes for any payload, one piece per batch; yields the process jobs started."""
    assert hashing.processes_possible(), f"threads left running: {threading.enumerate()}"
    monkeypatch.setattr(hashing, "PROCESS_MIN_BYTES", 0)
    monkeypatch.setattr(hashing, "BATCH_BYTES", 16384)
    started: list[ProcessHashJob] = []
    real_start = ProcessHashJob.start

    def start(job: ProcessHashJob) -> None:
        real_start(job)
        started.append(job)

    monkeypatch.setattr(ProcessHashJob, "start", start)
    return started


def _many_files(base: Path, count: int, seed: int) -> Path:
    """``count`` files of sizes from 0 to 70 KB in nested directories, some empty."""
    rng = random.Random(seed)
    for i in range(count):
        p = base / f"d{i % 7}" / f"s{i % 3}" / f"f{i:04d}"
        p.parent.mkdir(parents=True, exist_ok=True)
        size = 0 if i % 11 == 0 else rng.choice([1, 100, 16383, 16384, 16385, 40_000, 70_001])
        p.write_bytes(rng.randbytes(size))
    return base


@pytest.mark.parametrize("fmt", ["v1", "v2", "hybrid"])
@pytest.mark.parametrize("piece_length", [16384, 65536])
def test_processes_give_the_bytes_threads_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, piece_length: int
) -> None:
    # Many files, empty ones, files smaller and larger than a piece, and for a hybrid a
    # padding file after each file that ends inside a piece.
    top = _many_files(tmp_path / "top", 120, seed=piece_length)
    single = tmp_path / "single.bin"
    single.write_bytes(random.Random(1).randbytes(300_001))
    fields = dict(piece_length=piece_length, torrent_format=fmt, creation_date=1, threads=3)
    with_threads = [make(p, **fields).data for p in (top, single)]  # type: ignore[arg-type]
    started: list[ProcessHashJob] = []
    real_start = ProcessHashJob.start

    def start(job: ProcessHashJob) -> None:
        real_start(job)
        started.append(job)

    monkeypatch.setattr(hashing, "PROCESS_MIN_BYTES", 0)
    monkeypatch.setattr(hashing, "BATCH_BYTES", 16384)
    monkeypatch.setattr(ProcessHashJob, "start", start)
    with_processes = [make(p, **fields).data for p in (top, single)]  # type: ignore[arg-type]
    assert [job.threads for job in started] == [3, 3]
    assert with_processes == with_threads


def test_new_job_picks_processes_only_for_large_payloads_of_several_batches() -> None:
    big = [SourceFile(("a",), "/nonexistent", hashing.PROCESS_MIN_BYTES)]
    small = [SourceFile(("a",), "/nonexistent", hashing.PROCESS_MIN_BYTES - 1)]
    assert isinstance(new_job(1 << 20, big, threads=2), ProcessHashJob)
    assert isinstance(new_job(1 << 20, small, threads=2), HashJob)
    assert isinstance(new_job(1 << 20, big, threads=1), HashJob)  # one worker: no process
    # One batch only (a piece as large as the payload): one worker, so threads.
    assert isinstance(new_job(hashing.PROCESS_MIN_BYTES, big, threads=2), HashJob)


def test_processes_are_not_used_beside_other_threads(tmp_path: Path) -> None:
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert not hashing.processes_possible()
        big = [SourceFile(("a",), "/nonexistent", hashing.PROCESS_MIN_BYTES)]
        assert isinstance(new_job(1 << 20, big, threads=2), HashJob)
    finally:
        release.set()
        other.join()
    assert hashing.processes_possible(), f"threads left running: {threading.enumerate()}"


def test_progress_on_processes_reaches_the_total(tmp_path: Path, small_batches: list[ProcessHashJob]) -> None:
    f = tmp_path / "f"
    f.write_bytes(os.urandom(40 * 16384 + 5))
    calls: list[tuple[int, int]] = []
    job = new_job(16384, [SourceFile(("f",), str(f), 40 * 16384 + 5)], threads=2)
    job.start()
    job.wait(lambda done, total: calls.append((done, total)))
    assert calls[-1] == (40 * 16384 + 5, 40 * 16384 + 5)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert small_batches
    assert not small_batches[0].pids  # reaped


def test_workers_left_by_wait_are_reaped_by_reap_and_by_make(
    tmp_path: Path, small_batches: list[ProcessHashJob]
) -> None:
    f = tmp_path / "f"
    data = os.urandom(9 * 16384 + 5)
    f.write_bytes(data)
    job = new_job(16384, [SourceFile(("f",), str(f), len(data))], threads=2)
    assert isinstance(job, ProcessHashJob)
    job.start()
    pids = list(job.pids)
    assert len(pids) == 2
    pieces = job.wait(reap=False)
    assert pieces == b"".join(hashlib.sha1(data[i : i + 16384]).digest() for i in range(0, len(data), 16384))
    assert job.pids == pids  # sent every digest, exiting, not yet reaped
    job.reap()
    assert not job.pids
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    made = make(f, piece_length=16384)
    assert made.pieces == 10
    assert len(small_batches) == 2
    assert not small_batches[1].pids  # make reaps them before it returns


def test_a_queue_longer_than_its_pipe_is_topped_up_while_the_workers_hash(
    tmp_path: Path, small_batches: list[ProcessHashJob]
) -> None:
    # 9,000 one-piece batches: more numbers than a 64 KiB pipe holds (8,192), so the
    # rest are written as the workers take them.
    count = 9000
    f = tmp_path / "sparse"
    with open(f, "wb") as fh:
        fh.truncate(count * 16384)  # reads as zeros
    job = new_job(16384, [SourceFile(("sparse",), str(f), count * 16384)], threads=2)
    job.start()
    assert isinstance(job, ProcessHashJob)
    assert job._queued < count
    assert job.wait() == hashlib.sha1(bytes(16384)).digest() * count
    assert not job.pids


def test_a_read_error_in_a_worker_is_a_storage_error_and_every_worker_is_reaped(
    tmp_path: Path, small_batches: list[ProcessHashJob]
) -> None:
    good = tmp_path / "good"
    good.write_bytes(os.urandom(5 * 16384))
    files = [SourceFile(("good",), str(good), 5 * 16384), SourceFile(("gone",), str(tmp_path / "gone"), 100)]
    job = new_job(16384, files, threads=2)
    job.start()
    assert isinstance(job, ProcessHashJob)
    pids = list(job.pids)
    with pytest.raises(StorageError, match=r"cannot open .*gone"):
        job.wait()
    assert not job.pids
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # already reaped


def _start_with_nothing_queued(job: ProcessHashJob) -> None:
    """Fork ``job``'s workers with no batch in the queue yet (``wait`` queues them), so
    a worker killed now surely dies before it finishes its work."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ProcessHashJob, "_fill", lambda job: None)
        job.start()


def test_a_worker_that_dies_names_the_file_that_shrank(
    tmp_path: Path, small_batches: list[ProcessHashJob]
) -> None:
    # A file cut short under a worker's mapping kills it with SIGBUS; here both workers
    # are killed outright after the file was cut, which the parent sees the same way.
    f = tmp_path / "f"
    f.write_bytes(os.urandom(8 * 16384))
    job = new_job(16384, [SourceFile(("f",), str(f), 8 * 16384)], threads=2)
    assert isinstance(job, ProcessHashJob)
    _start_with_nothing_queued(job)
    os.truncate(f, 16384)
    for pid in job.pids:
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(StorageError, match=f"{f} shrank while it was being hashed"):
        job.wait()
    assert not job.pids


def test_a_worker_killed_otherwise_is_a_storage_error(
    tmp_path: Path, small_batches: list[ProcessHashJob]
) -> None:
    f = tmp_path / "f"
    f.write_bytes(os.urandom(8 * 16384))
    job = new_job(16384, [SourceFile(("f",), str(f), 8 * 16384)], threads=2)
    assert isinstance(job, ProcessHashJob)
    _start_with_nothing_queued(job)
    for pid in job.pids:
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(StorageError, match="hashing process"):
        job.wait()


def test_a_failing_progress_callback_kills_and_reaps_the_workers(
    tmp_path: Path, small_batches: list[ProcessHashJob]
) -> None:
    f = tmp_path / "f"
    f.write_bytes(os.urandom(64 * 16384))
    job = new_job(16384, [SourceFile(("f",), str(f), 64 * 16384)], threads=2)
    job.start()
    assert isinstance(job, ProcessHashJob)
    pids = list(job.pids)

    def boom(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        job.wait(boom)
    assert not job.pids
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


# Whole-process checks: ``pytorrent create`` interrupted while its workers hash.


def _start_create(tmp_path: Path) -> tuple[subprocess.Popen[str], list[int]]:
    """``pytorrent create`` of a 4 GiB sparse file with two workers, once they run."""
    if not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists():
        pytest.skip("no /proc/PID/task/TID/children here")
    payload = tmp_path / "sparse.bin"
    with open(payload, "wb") as fh:
        fh.truncate(4 << 30)  # no bytes on disk; the workers are stopped long before the end
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "cli.main", "create", str(payload)),
            *("--threads", "2", "-l", "4M", "--format", "hybrid", "-o", str(tmp_path / "out.torrent")),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )
    try:
        wait_until_blocking(
            lambda: len(children(proc.pid)) == 2, timeout_s=60, interval_s=0.002, what="two workers"
        )
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return proc, children(proc.pid)


def test_ctrl_c_stops_the_workers_and_exits_130_without_a_traceback(tmp_path: Path) -> None:
    proc, workers = _start_create(tmp_path)
    try:
        for pid in workers:  # hold them mid-work, so the interrupt surely finds them running
            os.kill(pid, signal.SIGSTOP)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the whole foreground group
        _, err = proc.communicate(timeout=60)
        ended = [gone(pid) for pid in workers]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for pid in workers:  # a stopped worker left behind would stay forever
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 130
    assert err == "pytorrent: interrupted\n"
    assert all(ended)
    assert not (tmp_path / "out.torrent").exists()


def test_workers_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    proc, workers = _start_create(tmp_path)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        wait_until_blocking(lambda: all(gone(pid) for pid in workers), timeout_s=30, what="workers gone")
    finally:
        for pid in workers:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("fmt", ["v1", "v2", "hybrid"])
@pytest.mark.parametrize("problem", ["shrank", "cannot open"])
def test_a_file_problem_in_a_worker_is_one_line_and_exit_1(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    small_batches: list[ProcessHashJob],
    fmt: str,
    problem: str,
) -> None:
    import torrent.create
    from cli.main import main

    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_bytes(os.urandom(100_000))
    (d / "b").write_bytes(os.urandom(50_000))
    real_scan = torrent.create.scan

    def scan(
        path: str | os.PathLike[str], on_file: object = None, *, on_files: object = None
    ) -> tuple[bool, list[SourceFile]]:
        # What another program does between the walk and the hashing.
        multi, files = real_scan(path)
        if problem == "shrank":
            files[1] = files[1]._replace(length=files[1].length + 1)
        else:
            files[1] = files[1]._replace(fs_path=str(tmp_path / "removed"))
        return multi, files

    monkeypatch.setattr(torrent.create, "scan", scan)
    out = tmp_path / "o.torrent"
    assert main(["create", str(d), "-l", "16K", "--format", fmt, "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pytorrent create: ")
    assert problem in err
    assert err.count("\n") == 1
    assert not out.exists()
    assert small_batches
    assert not small_batches[0].pids


def test_the_progress_bar_leaves_the_workers_to_processes(
    tmp_path: Path, small_batches: list[ProcessHashJob], capsys: pytest.CaptureFixture[str]
) -> None:
    # rich redraws from its own thread by default; with that thread running, the
    # command could not fork its workers (processes_possible is false).
    from cli import cmd_create

    f = tmp_path / "f"
    f.write_bytes(os.urandom(20 * 16384))
    seen: list[bool] = []
    real_wait = ProcessHashJob.wait

    def wait(
        job: ProcessHashJob, progress: hashing.ProgressCallback | None = None, *, reap: bool = True
    ) -> bytes:
        assert progress is not None
        seen.append(threading.active_count() == 1)
        return real_wait(job, progress, reap=reap)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ProcessHashJob, "wait", wait)
        made = cmd_create._create_with_bar(make, str(f), {"piece_length": 16384, "no_date": True})
    assert made.pieces == 20
    assert len(small_batches) == 1
    assert seen == [True]


@pytest.mark.parametrize("problem", ["shrank", "cannot open"])
def test_a_file_problem_after_the_fork_mid_walk_is_one_line_and_exit_1(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    small_batches: list[ProcessHashJob],
    problem: str,
) -> None:
    # With the piece length given, the workers are forked while the walk goes on and
    # learn the later files from the job's file table: a file that changes after the
    # walk found it is still one line.
    import torrent.create
    from cli.main import main

    d = tmp_path / "d"
    d.mkdir()
    for i in range(12):
        (d / f"f{i:02d}").write_bytes(os.urandom(20_000))
    monkeypatch.setattr(torrent.create, "FEED_EVERY", 2)
    real_scan = torrent.create.scan

    def scan(
        path: str | os.PathLike[str], on_file: Any = None, *, on_files: Any = None
    ) -> tuple[bool, list[SourceFile]]:
        def found(files: list[SourceFile]) -> None:
            on_files(files)
            for f in files:
                if f.path[-1] == "f10":  # found (fed to the workers later): another program changes it
                    if problem == "shrank":
                        os.truncate(f.fs_path, 100)
                    else:
                        os.unlink(f.fs_path)

        return real_scan(path, on_files=found)

    monkeypatch.setattr(torrent.create, "scan", scan)
    out = tmp_path / "o.torrent"
    assert main(["create", str(d), "-l", "16K", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pytorrent create: ")
    assert problem in err
    assert "f10" in err
    assert err.count("\n") == 1
    assert not out.exists()
    assert len(small_batches) == 1
    assert small_batches[0]._table_end > 0  # the file came through the table
    assert not small_batches[0].pids
