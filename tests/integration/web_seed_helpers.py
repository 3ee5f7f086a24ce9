"""Web servers for the web seed tests: Debian's nginx with its own configuration on a free
loopback port (started and stopped by PID), and helpers to make torrents that carry them."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.integration.swarm_helpers import free_port
from torrent.proto.metainfo import Metainfo

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)

_CONF = """
daemon off;
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
{user}
events {{ worker_connections 256; }}
http {{
    access_log {run}/access.log;
    sendfile on;
    keepalive_requests 100000;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ {extra} }}
    }}
}}
"""


@contextlib.contextmanager
def nginx(root: Path, run_dir: Path, *, limit_rate: str = "") -> Iterator[str]:
    """Serve ``root`` over HTTP on 127.0.0.1; yields the base URL (ending in ``/``).

    ``limit_rate``: nginx's per-connection rate limit (e.g. ``"2m"``), none by default.
    """
    assert NGINX is not None, "nginx is not installed"
    run_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    user = "user root;" if os.geteuid() == 0 else ""
    conf = run_dir / "nginx.conf"
    conf.write_text(
        _CONF.format(
            run=run_dir,
            user=user,
            port=port,
            root=root,
            extra=f"limit_rate {limit_rate};" if limit_rate else "",
        )
    )
    proc = subprocess.Popen(
        [NGINX, "-p", str(run_dir), "-c", str(conf), "-e", str(run_dir / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"nginx did not start: {err}")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def requests_logged(run_dir: Path) -> int:
    """Requests nginx answered so far (its access log)."""
    log = run_dir / "access.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def with_web_seeds(meta: Metainfo, *urls: str) -> Metainfo:
    """``meta`` with ``url-list`` set to ``urls`` (the info hash does not change)."""
    return dataclasses.replace(meta, url_list=tuple(urls))
