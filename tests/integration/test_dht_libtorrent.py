"""Our DHT against libtorrent's (PyPI bindings, in process), on loopback, with no tracker.

Each libtorrent session has its own 127.0.0.x address and the DHT settings of
``tests.libtorrent_settings.DHT_ON_LOOPBACK`` (no public router; the checks that ignore
loopback and same-IP nodes off). Besides the peer under test, a libtorrent session with
no torrent is "the libtorrent node" everyone joins through: it stores the announces.

* (a) a libtorrent seed of a torrent with no trackers announces to the DHT; ``pytorrent
  download MAGNET --dht-bootstrap <libtorrent node>`` (no ``tr``, no ``x.pe``) finds it,
  gets the metadata and completes, verified.
* (b) ``pytorrent seed --dht-bootstrap <libtorrent node>`` announces itself; a libtorrent
  leecher given only the magnet link finds it through the DHT and completes.
* (c) a private torrent: our leecher and a libtorrent seed both on a DHT node of ours that
  counts the KRPC queries per info hash: nobody looks the private torrent up or
  announces it, though both talk to that node.

Runs only inside a loopback-only network namespace (elsewhere it skips; under ``CI=true``
it fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.dht_helpers import TEST_CONFIG
from tests.integration.swarm_helpers import make_payload, make_torrent, same_tree
from tests.interop.conftest import isolation_problem, skip_or_fail
from tests.libtorrent_settings import dht_loopback_settings
from torrent.engine.dht_node import DhtNode
from torrent.proto import bencoding
from torrent.proto.magnet import Magnet
from torrent.proto.metainfo import Metainfo

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def lt() -> Any:
    why = isolation_problem()
    if why:
        skip_or_fail(f"{why}: libtorrent runs only in a loopback-only network namespace (make test as root)")
    try:
        import libtorrent
    except ImportError:
        skip_or_fail("libtorrent (PyPI) is not installed")
    return libtorrent


async def _until(pred: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


class LtDht:
    """One libtorrent session with its DHT on, on ``host``; collects the DHT alerts."""

    def __init__(self, lt: Any, host: str) -> None:
        self.lt = lt
        self.host = host
        mask = lt.alert.category_t.dht_notification | lt.alert.category_t.status_notification
        self.ses = lt.session(dht_loopback_settings(host, alert_mask=mask))
        self.announced: Counter[tuple[str, str, int]] = Counter()  # (info hash hex, ip, port)
        self.looked_up: Counter[str] = Counter()

    @property
    def port(self) -> int:
        return int(self.ses.listen_port())

    def poll(self) -> None:
        for a in self.ses.pop_alerts():
            if isinstance(a, self.lt.dht_announce_alert):
                self.announced[(str(a.info_hash), str(a.ip), int(a.port))] += 1
            elif isinstance(a, self.lt.dht_get_peers_alert):
                self.looked_up[str(a.info_hash)] += 1

    def dht_nodes(self) -> int:
        with _no_deprecation():  # session.status() is deprecated but still the simplest count
            return int(self.ses.status().dht_nodes)

    def add(self, atp: Any) -> Any:
        atp.flags &= ~self.lt.torrent_flags.auto_managed
        atp.flags &= ~self.lt.torrent_flags.paused
        return self.ses.add_torrent(atp)

    def close(self) -> None:
        self.ses.pause()


@contextlib.contextmanager
def _no_deprecation() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _write_torrent(meta: Metainfo, path: Path) -> Path:
    path.write_bytes(bencoding.encode({b"info": bencoding.decode(meta.info_bytes)}))
    return path


def _progress(out: str) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    return [e for e in lines if e.get("event") == "progress"]


async def test_a_libtorrent_seed_found_through_the_dht_alone(lt: Any, tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "found.bin", 600_000)
    meta = make_torrent(content, piece_length=64 * 1024)  # no tracker
    node, seed = LtDht(lt, "127.0.0.3"), LtDht(lt, "127.0.0.2")
    try:
        async with asyncio.timeout(120):
            seed.ses.add_dht_node((node.host, node.port))
            node.ses.add_dht_node((seed.host, seed.port))
            atp = lt.add_torrent_params()
            atp.ti = lt.torrent_info(str(_write_torrent(meta, tmp_path / "t.torrent")))
            atp.save_path = str(tmp_path / "seed")
            handle = seed.add(atp)
            await _until(lambda: handle.status().is_seeding and seed.dht_nodes() > 0, "the seed on the DHT")
            key = (meta.info_hash.hex(), seed.host, seed.port)

            def announced() -> bool:
                node.poll()
                if not node.announced[key]:
                    handle.force_dht_announce()
                return node.announced[key] > 0

            await _until(announced, "the seed's announce at the libtorrent node", timeout_s=30)

            uri = Magnet(info_hash=meta.info_hash).to_uri()
            assert "tr=" not in uri
            assert "x.pe=" not in uri
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cli.main", "download", "--no-lsd", "--no-port-mapping", uri, "-o", str(tmp_path / "out"),
                "--no-seed", "--port", "0", "--bind", "127.0.0.1", "--timeout", "60", "--json",
                "--dht-bootstrap", f"{node.host}:{node.port}",
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            out, err = await proc.communicate()
    finally:
        seed.close()
        node.close()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert same_tree(content, tmp_path / "out" / "found.bin")
    last = _progress(out.decode())[-1]
    assert last["dht_peers"] >= 1
    assert last["dht_nodes"] >= 1


async def test_a_libtorrent_leecher_finds_our_seed_through_the_dht(lt: Any, tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "ours.bin", 600_000)
    meta = make_torrent(content, piece_length=64 * 1024)  # no tracker
    torrent = _write_torrent(meta, tmp_path / "t.torrent")
    node, leech = LtDht(lt, "127.0.0.3"), LtDht(lt, "127.0.0.4")
    proc = None
    try:
        async with asyncio.timeout(120):
            leech.ses.add_dht_node((node.host, node.port))
            node.ses.add_dht_node((leech.host, leech.port))
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cli.main", "seed", "--no-lsd", "--no-port-mapping", str(torrent), str(content),
                "--port", "0", "--bind", "127.0.0.1", "--quiet",
                "--dht-bootstrap", f"{node.host}:{node.port}",
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip

            def our_announce() -> bool:
                node.poll()
                return any(ih == meta.info_hash.hex() and ip == "127.0.0.1" for ih, ip, _ in node.announced)

            await _until(our_announce, "our seed's announce at the libtorrent node", timeout_s=30)

            atp = lt.parse_magnet_uri(Magnet(info_hash=meta.info_hash).to_uri())
            atp.save_path = str(tmp_path / "lt")
            handle = leech.add(atp)

            def done() -> bool:
                st = handle.status()
                if not st.has_metadata and leech.dht_nodes() > 0:
                    handle.force_dht_announce()  # look again now that it knows the node
                return bool(st.is_seeding)

            await _until(done, "libtorrent to find our seed and complete", timeout_s=60)
            handle.flush_cache()
            await asyncio.sleep(0.5)
    finally:
        leech.close()
        node.close()
        if proc is not None and proc.returncode is None:
            proc.terminate()
            await proc.wait()
    assert same_tree(content, tmp_path / "lt" / "ours.bin")


class CountingNode(DhtNode):
    """A DHT node of ours that counts the KRPC queries it gets: per method and info hash,
    and per source address."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.by_hash: Counter[tuple[bytes, bytes]] = Counter()  # (method, info hash)
        self.sources: Counter[str] = Counter()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        with contextlib.suppress(Exception):
            msg = bencoding.decode(data)
            if msg.get(b"y") == b"q":
                self.sources[addr[0]] += 1
                args = msg.get(b"a", {})
                if isinstance(args, dict) and b"info_hash" in args:
                    self.by_hash[(msg[b"q"], args[b"info_hash"])] += 1
        super().datagram_received(data, addr)


async def test_a_private_torrent_never_reaches_the_dht(lt: Any, tmp_path: Path) -> None:
    content = make_payload(tmp_path / "seed", "secret.bin", 400_000)
    public = make_torrent(make_payload(tmp_path / "seed", "public.bin", 100_000))
    info = bencoding.decode(make_torrent(content, piece_length=64 * 1024).info_bytes)
    info[b"private"] = 1
    meta = Metainfo.from_bytes(bencoding.encode({b"info": info}))
    assert meta.info.private
    torrent = _write_torrent(meta, tmp_path / "t.torrent")
    watch = CountingNode("127.0.1.1", 0, config=TEST_CONFIG)
    seed = LtDht(lt, "127.0.0.2")
    try:
        async with asyncio.timeout(90), watch:
            seed.ses.add_dht_node((watch.host, watch.port))
            atp = lt.add_torrent_params()
            atp.ti = lt.torrent_info(str(torrent))
            atp.save_path = str(tmp_path / "seed")
            handle = seed.add(atp)
            control = lt.add_torrent_params()
            control.ti = lt.torrent_info(str(_write_torrent(public, tmp_path / "public.torrent")))
            control.save_path = str(tmp_path / "seed")
            control_handle = seed.add(control)
            await _until(lambda: handle.status().is_seeding, "the libtorrent seed")
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cli.main", "download", "--no-lsd", "--no-port-mapping", str(torrent), "-o", str(tmp_path / "out"),
                "--no-seed", "--port", "0", "--bind", "127.0.0.1", "--timeout", "30", "--quiet",
                "--dht-bootstrap", f"{watch.host}:{watch.port}", "--peer", f"{seed.host}:{seed.port}",
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            _, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()[-2000:]
            # Both were on the DHT, through our node...
            await _until(lambda: watch.sources["127.0.0.2"] > 0, "libtorrent's queries at our node", 30)
            assert watch.sources["127.0.0.1"] > 0
            # A forced announce of both: the public one reaches our node; the private one
            # (libtorrent refuses it) had as long to.
            handle.force_dht_announce()

            def control_announced() -> bool:
                if not watch.by_hash[(b"announce_peer", public.info_hash)]:
                    control_handle.force_dht_announce()
                return watch.by_hash[(b"announce_peer", public.info_hash)] > 0

            await _until(control_announced, "libtorrent's announce of the public torrent", 30)
    finally:
        seed.close()
    # ...and neither ever looked the private torrent up, nor announced it.
    assert watch.by_hash[(b"get_peers", meta.info_hash)] == 0
    assert watch.by_hash[(b"announce_peer", meta.info_hash)] == 0
    assert same_tree(content, tmp_path / "out" / "secret.bin")
