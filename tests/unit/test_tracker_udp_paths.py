"""The UDP tracker's hot path for announces answers exactly as the general path does."""

from __future__ import annotations

import random
import struct
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from torrent.proto import tracker_codec_udp as tcu
from tracker.service import TrackerService
from tracker.settings import TrackerSettings
from tracker.store import AnnounceResult, MemoryStore, PeerAnnounce
from tracker.udp import ConnectionIds, UdpTracker

ALLOWED = [bytes([n]) * 20 for n in range(1, 4)]


class Sent:
    def __init__(self) -> None:
        self.packets: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.packets.append((data, addr))


def announce(conn_id: int, txid: int, rng: random.Random, **override: Any) -> bytes:
    """A BEP 15 announce (98 bytes, the layout of BEP 15's table) with random fields."""
    f: dict[str, Any] = {
        "info_hash": rng.choice([*ALLOWED, b"\x09" * 20]),
        "peer_id": b"-UT0001-" + rng.randrange(30).to_bytes(12, "big"),
        "left": rng.choice([0, 100]),
        "event": rng.randrange(4),
        "ip": 0,
        "key": rng.randrange(3),
        "numwant": rng.choice([-1, 0, 5, 500]),
        "port": 6000 + rng.randrange(30),
    }
    f.update(override)
    return struct.pack(
        ">QII20s20sQQQIIIiH", conn_id, 1, txid, f["info_hash"], f["peer_id"], 0, f["left"], 0,
        f["event"], f["ip"], f["key"], f["numwant"], f["port"],
    )  # fmt: skip


def packets(ids: ConnectionIds) -> list[tuple[bytes, Any]]:
    rng = random.Random(5)
    v4, v6 = ("127.0.0.1", 1000), ("::1", 1001, 0, 0)
    out: list[tuple[bytes, Any]] = []
    for txid in range(600):
        addr = v6 if txid % 5 == 0 else v4
        conn_id = ids.issue(addr[0])
        data = announce(conn_id, txid, rng)
        kind = txid % 13
        if kind == 1:
            data = announce(conn_id ^ 1, txid, rng)  # bad connection id
        elif kind == 2:
            data = data[:80] + struct.pack(">I", 9) + data[84:]  # no such event
        elif kind == 3:
            data = announce(conn_id, txid, rng, port=0)
        elif kind == 4:
            data = announce(conn_id, txid, rng, ip=0x0A000001)
        elif kind == 5:
            data = data[:90]
        elif kind == 6:
            data = struct.pack(">QII", tcu.UDP_PROTOCOL_ID, 0, txid)
        elif kind == 7:
            data = data[:8] + struct.pack(">I", 5) + data[12:]  # unknown action
        elif kind == 8:
            data = announce(conn_id, txid, rng, left=1 << 63)
        out.append((data, addr))
    return out


@pytest.mark.parametrize("accept_ip", [False, True])
@pytest.mark.parametrize("allow_list", [False, True])
def test_hot_path_and_general_path_give_the_same_answers_and_counts(
    tmp_path: Path, accept_ip: bool, allow_list: bool
) -> None:
    allow = None
    if allow_list:
        allow = tmp_path / "allow"
        allow.write_text("".join(ih.hex() + "\n" for ih in ALLOWED))
    settings = TrackerSettings(
        accept_ip_param=accept_ip, allow_file=allow, log_every=50, numwant_default=2, numwant_max=3
    )
    results = []
    for fast in (True, False):
        service = TrackerService(MemoryStore(600, clock=lambda: 1000.0, rng=random.Random(3)), settings)
        ids = ConnectionIds(b"k" * 32, clock=lambda: 5000.0)
        proto = UdpTracker(service, ids)
        assert proto._fast  # a public tracker over the memory store takes the hot path
        proto._fast = fast
        sent = Sent()
        proto.transport = sent  # type: ignore[assignment]
        for data, addr in packets(ids):
            proto.datagram_received(data, addr)
        results.append((sent.packets, asdict(service.counters), dict(service.clients)))
    assert results[0] == results[1]
    sent_packets, counters, _ = results[0]
    assert len(sent_packets) > 400
    assert counters["udp_announces"] > 250
    assert counters["udp_bad_connection_id"] > 0
    assert counters["failures_bad_request"] > 0  # port 0
    assert counters["failures_not_allowed"] > 0 if allow_list else counters["failures_not_allowed"] == 0


def test_the_hot_paths_tuples_have_every_field() -> None:
    """The hot paths build these NamedTuples as plain tuples of all their fields."""
    assert PeerAnnounce._fields[-2:] == ("tally", "refuse_new")
    assert len(PeerAnnounce._fields) == 11
    assert AnnounceResult._fields[-1] == "tally"
    assert len(AnnounceResult._fields) == 7


class CountingStore(MemoryStore):
    """Counts the announces ``reannounce_nowait`` answered."""

    again = 0

    def reannounce_nowait(
        self, ih: bytes, pid: bytes, addr: bytes, is_seed: bool, numwant: int
    ) -> tuple[int, int, bytes | bytearray] | None:
        got = super().reannounce_nowait(ih, pid, addr, is_seed, numwant)
        self.again += got is not None
        return got


def test_returning_peers_take_the_reannounce_path_with_the_same_answers() -> None:
    """Peers that come back from the same port in the same state (the commonest
    announce) are answered by ``MemoryStore.reannounce_nowait``, byte for byte as the
    general path answers them."""
    rng = random.Random(8)
    v4, v6 = ("127.0.0.1", 1000), ("::1", 1001, 0, 0)
    ids = ConnectionIds(b"k" * 32, clock=lambda: 5000.0)
    stream = []
    for txid in range(3000):
        n = rng.randrange(40)
        addr = v6 if n % 7 == 0 else v4
        event = 0 if rng.random() < 0.9 else rng.choice([1, 2, 3])
        data = announce(
            ids.issue(addr[0]), txid, rng, peer_id=b"-UT0001-" + n.to_bytes(12, "big"), port=6000 + n,
            left=0 if n % 4 == 0 else 100, event=event, numwant=rng.choice([-1, 0, 5, 30]),
        )  # fmt: skip
        stream.append((data, addr))
    results = []
    stores = []
    for fast in (True, False):
        store = CountingStore(600, clock=lambda: 1000.0, rng=random.Random(3))
        stores.append(store)
        service = TrackerService(store, TrackerSettings(numwant_default=20))
        proto = UdpTracker(service, ids)
        proto._fast = fast
        sent = Sent()
        proto.transport = sent  # type: ignore[assignment]
        for data, addr in stream:
            proto.datagram_received(data, addr)
        results.append((sent.packets, asdict(service.counters)))
    assert results[0] == results[1]
    assert stores[0].again > 2000  # the hot path answered most of them through the reannounce path
    assert stores[1].again == 0
    assert max(len(data) for data, _ in results[0][0]) > 20 + 6 * 20


@pytest.mark.parametrize("fast", [True, False])
def test_connection_ids_expire_on_the_hot_path_as_on_the_general_one(fast: bool) -> None:
    """The hot path keeps each sender's valid ids until its window ends: an id stays
    good through the next window and not after."""
    now = [1000.0]
    ids = ConnectionIds(b"k" * 32, clock=lambda: now[0])
    service = TrackerService(MemoryStore(600, clock=lambda: now[0]), TrackerSettings())
    proto = UdpTracker(service, ids)
    proto._fast = fast
    sent = Sent()
    proto.transport = sent  # type: ignore[assignment]
    addr = ("127.0.0.1", 1000)
    rng = random.Random(1)
    cid = ids.issue(addr[0])
    actions = []
    for step in (0, 60, 79, 81, 150, 199, 201, 400):
        now[0] = 1000.0 + step
        proto.datagram_received(
            announce(cid, step, rng, info_hash=ALLOWED[0], event=0, port=6881, key=1), addr
        )
        actions.append(struct.unpack_from(">I", sent.packets[-1][0])[0])
    # 1000 s is in window 8 (960-1080): the id holds until 1200, the end of window 9
    assert actions == [1, 1, 1, 1, 1, 1, 3, 3]
    assert service.counters.udp_bad_connection_id == 2
