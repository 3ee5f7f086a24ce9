"""A real 6-node Redis Cluster (3 masters, 3 replicas) on loopback; stopped by PID.

Each node is a Debian ``redis-server`` in its own temp dir with a short
``cluster-node-timeout`` so a failover takes a few seconds, and
``cluster-require-full-coverage no`` so the other masters keep serving while one is
down.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

NODE_TIMEOUT_MS = 2000


def _free_cluster_port() -> int:
    """A port free for the node and for its cluster bus (the port + 10000)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def redis_cli(port: int, *args: str, timeout: float = 10) -> str:
    return subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    ).stdout


class RedisCluster:
    def __init__(self, workdir: Path, nodes: int = 6) -> None:
        self.workdir = workdir
        self.ports: list[int] = []
        while len(self.ports) < nodes:
            p = _free_cluster_port()
            if p not in self.ports:
                self.ports.append(p)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return "redis-cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2])

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe is not None
        for port in self.ports:
            d = self.workdir / str(port)
            d.mkdir(parents=True, exist_ok=True)
            self.procs[port] = subprocess.Popen(
                [
                    exe,
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(d / "nodes.conf"),
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                    "--cluster-require-full-coverage", "no",
                    # a replica takes over however long ago it last heard from its
                    # master (the default refuses when the link was down for long)
                    "--cluster-replica-validity-factor", "0",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(d),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
        for port in self.ports:
            self._wait(lambda p=port: redis_cli(p, "ping").strip() == "PONG", "node up")
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=60,
            check=True,
        )
        self.wait_ok()

    def _wait(self, cond: object, what: str, timeout_s: float = 30) -> None:
        assert callable(cond)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if cond():
                    return
            except (subprocess.SubprocessError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis cluster: {what} not within {timeout_s} s")

    def nodes(self) -> list[dict[str, str]]:
        """``CLUSTER NODES`` of a live node: id, port, role (master/slave), flags."""
        alive = next(p for p in self.ports if p in self.procs)
        out = []
        for line in redis_cli(alive, "cluster", "nodes").splitlines():
            f = line.split()
            flags = f[2].split(",")
            role = "master" if "master" in flags else "slave"
            out.append({"id": f[0], "port": f[1].split(":")[1].split("@")[0], "role": role, "flags": f[2]})
        return out

    def masters(self) -> list[int]:
        return [int(n["port"]) for n in self.nodes() if n["role"] == "master" and "fail" not in n["flags"]]

    def wait_ok(self, timeout_s: float = 30) -> None:
        """Every live node says ``cluster_state:ok``, three masters serve all slots and
        every live replica's link to its master is up (else it could not take over)."""

        def ok() -> bool:
            for p in self.procs:
                if "cluster_state:ok" not in redis_cli(p, "cluster", "info"):
                    return False
            for n in self.nodes():
                port = int(n["port"])
                if (
                    n["role"] == "slave"
                    and port in self.procs
                    and "master_link_status:up" not in redis_cli(port, "info", "replication")
                ):
                    return False
            return len(self.masters()) == 3

        self._wait(ok, "cluster_state:ok", timeout_s)

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()


def _require_redis() -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed (CI installs it: .ci/run)")
        pytest.skip("redis-server is not installed (apt install redis-server)")


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One cluster for a test module; tests keep apart by key prefix or info hash."""
    _require_redis()
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def fresh_redis_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A cluster of its own, for a test that kills nodes."""
    _require_redis()
    cluster = RedisCluster(tmp_path)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
