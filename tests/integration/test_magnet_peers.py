"""Magnet links against peers we control on loopback: a peer lying about the metadata, a
multi-piece info dict, ``x.pe`` and BEP 53 ``so`` through the command line."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from tests.integration.swarm_helpers import make_payload, make_torrent, our_tracker, same_tree
from torrent import config
from torrent.engine.session import Session
from torrent.proto import ut_metadata, wire
from torrent.proto.magnet import Magnet
from torrent.proto.metainfo import Metainfo

ROOT = Path(__file__).resolve().parents[2]


class MetadataPeer:
    """A loopback peer that only serves ut_metadata, from ``info_bytes`` (honest or not),
    after ``delay_s`` (its extension handshake and every answer are late by that much).

    Records when it first served a piece and when the other side closed on it.
    """

    def __init__(
        self, meta: Metainfo, info_bytes: bytes, *, delay_s: float = 0.0, name: bytes = b"x"
    ) -> None:
        self.meta = meta
        self.server = ut_metadata.MetadataServer(info_bytes)
        self.delay_s = delay_s
        self.peer_id = (b"-XX0000-" + name * 12)[:20]
        self.served = 0
        self.first_served_at: float | None = None
        self.closed_at: float | None = None
        self.port = 0
        self._srv: asyncio.Server | None = None

    async def __aenter__(self) -> MetadataPeer:
        self._srv = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._srv.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._srv is not None
        self._srv.close()

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        proto = wire.PeerProtocol(
            info_hash=self.meta.info_hash, our_peer_id=self.peer_id,
            piece_length=self.meta.info.piece_length, total_length=self.meta.info.total_length,
            extensions={"ut_metadata": 7},
        )  # fmt: skip
        try:
            async with asyncio.timeout(20):
                while data := await reader.read(65536):
                    proto.receive_data(data)
                    while (ev := proto.next_event()) is not wire.NEED_DATA:
                        if isinstance(ev, wire.Handshake):
                            writer.write(proto.send(wire.Handshake()))
                            await asyncio.sleep(self.delay_s)
                            writer.write(proto.send(wire.ExtensionHandshake(self.server.handshake_fields())))
                        elif isinstance(ev, wire.ExtendedMessage):
                            reply = self.server.answer(ut_metadata.decode(ev.payload))
                            if reply is None:
                                continue
                            await asyncio.sleep(self.delay_s)
                            self.served += 1
                            if self.first_served_at is None:
                                self.first_served_at = time.monotonic()
                            writer.write(
                                proto.send(wire.ExtendedMessage("ut_metadata", ut_metadata.encode(reply)))
                            )
            self.closed_at = time.monotonic()
        except (OSError, TimeoutError):
            self.closed_at = time.monotonic()
        finally:
            writer.close()


def _many_files_torrent(tmp_path: Path) -> tuple[Path, Metainfo]:
    # A thousand small files: an info dict of about 45 KB, three metadata pieces.
    files = {f"d/f{i:04}.bin": 200 + i % 7 for i in range(1000)}
    content = make_payload(tmp_path / "seed", "many", files)
    meta = make_torrent(content, piece_length=16 * 1024)
    assert len(meta.info_bytes) > 2 * ut_metadata.METADATA_PIECE_SIZE
    return content, meta


async def test_peer_sending_bad_metadata_is_dropped_and_fetch_completes_from_another(tmp_path: Path) -> None:
    _content, meta = _many_files_torrent(tmp_path)
    bad = bytearray(meta.info_bytes)
    for start in range(0, len(bad), ut_metadata.METADATA_PIECE_SIZE):
        bad[start + 100] ^= 0xFF  # every metadata piece is wrong
    async with (
        asyncio.timeout(30),
        MetadataPeer(meta, bytes(bad), name=b"l") as liar,
        MetadataPeer(meta, meta.info_bytes, delay_s=0.5, name=b"h") as honest,
    ):
        # The liar answers at once and gets asked first; the honest peer is late.
        magnet = Magnet(meta.info_hash, peers=(liar.addr, honest.addr))
        async with Session(config.testing_settings()) as s:
            fetched = await s.fetch_metadata(magnet)
            done_at = time.monotonic()
    assert fetched.info_bytes == meta.info_bytes
    assert fetched.info_hash == meta.info_hash
    assert liar.served >= 1  # its pieces were taken, and failed the info hash check
    assert honest.served == 3
    # The liar was dropped as soon as its copy failed, before the honest peer served anything
    # (not merely closed with the others once the fetch was done).
    assert liar.closed_at is not None
    assert honest.first_served_at is not None
    assert liar.closed_at < honest.first_served_at < done_at


async def test_multi_piece_metadata_from_our_seed(tmp_path: Path) -> None:
    content, meta = _many_files_torrent(tmp_path)
    async with asyncio.timeout(40):
        async with (
            Session(config.testing_settings()) as seed_s,
            Session(config.testing_settings()) as leech_s,
        ):
            seed = await seed_s.add_torrent(meta, tmp_path / "seed")
            await seed.wait_checked()
            mirror = "http://127.0.0.1:9/mirror/"
            magnet = Magnet(meta.info_hash, web_seeds=(mirror,), peers=(("127.0.0.1", seed_s.port),))
            fetched = await leech_s.fetch_metadata(magnet)
            assert fetched.info_bytes == meta.info_bytes
            assert fetched.url_list == (mirror,)  # the magnet's ws= (BEP 19)
            leech = await leech_s.add_torrent(fetched, tmp_path / "leech", seed=False, peers=magnet.peers)
            await leech.wait_complete()
    assert same_tree(content, tmp_path / "leech" / "many")


async def test_cli_magnet_through_our_tracker_with_so_selection(tmp_path: Path) -> None:
    files = {"one.bin": 120_000, "two.bin": 80_000, "three.bin": 50_000}
    content = make_payload(tmp_path / "seed", "trio", files)
    async with asyncio.timeout(60), our_tracker() as tracker:
        url = tracker.urls()[0]
        meta = make_torrent(content, trackers=[url])
        names = [f.path_str for f in meta.info.files]  # sorted: one, three, two
        wanted = names.index("two.bin")
        async with Session(config.testing_settings()) as seed_s:
            seed = await seed_s.add_torrent(meta, tmp_path / "seed")
            await seed.wait_checked()
            uri = Magnet(meta.info_hash, name="trio", trackers=(url,), select_only=(wanted,)).to_uri()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cli.main", "download", "--no-dht", "--no-lsd", "--no-port-mapping", uri, "-o", str(tmp_path / "out"),
                "--no-seed", "--json", "--port", "0", "--bind", "127.0.0.1", "--timeout", "30",
                cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    events = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert any(e.get("event") == "metadata" for e in events)
    got = tmp_path / "out" / "trio"
    assert (got / "two.bin").read_bytes() == (content / "two.bin").read_bytes()
    for other in ("one.bin", "three.bin"):  # not selected: not created, or not complete
        p = got / other
        assert not p.exists() or p.read_bytes() != (content / other).read_bytes()


async def _raw_peer(
    port: int, meta: Metainfo, their_m: dict[str, int]
) -> tuple[wire.PeerProtocol, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    proto = wire.PeerProtocol(
        info_hash=meta.info_hash, our_peer_id=b"-XX0000-rawrawrawraw", piece_length=None, total_length=None,
        extensions=their_m,
    )  # fmt: skip
    writer.write(proto.send(wire.Handshake()))
    return proto, reader, writer


async def _events_until(proto: wire.PeerProtocol, reader: asyncio.StreamReader, want: type) -> list[object]:
    seen: list[object] = []
    while True:
        data = await reader.read(65536)
        proto.receive_data(data)
        while (ev := proto.next_event()) is not wire.NEED_DATA:
            seen.append(ev)
            if isinstance(ev, want | wire.ConnectionClosed):
                return seen


async def test_our_seed_serves_metadata_and_survives_a_peer_that_never_offered_ut_metadata(
    tmp_path: Path,
) -> None:
    content = make_payload(tmp_path / "seed", "x.bin", 50_000)
    meta = make_torrent(content)
    async with asyncio.timeout(20), Session(config.testing_settings()) as seed_s:
        seed = await seed_s.add_torrent(meta, tmp_path / "seed")
        await seed.wait_checked()
        # A well-behaved magnet peer: our extension handshake offers ut_metadata and its size,
        # and a request gets the data.
        proto, reader, writer = await _raw_peer(seed_s.port, meta, {"ut_metadata": 5})
        seen = await _events_until(proto, reader, wire.ExtensionHandshake)
        hs = seen[-1]
        assert isinstance(hs, wire.ExtensionHandshake)
        assert "ut_metadata" in hs.extensions
        assert hs.metadata_size == len(meta.info_bytes)
        writer.write(proto.send(wire.ExtensionHandshake({})) + proto.send(wire.HaveNone()))
        writer.write(
            proto.send(
                wire.ExtendedMessage("ut_metadata", ut_metadata.encode(ut_metadata.MetadataRequest(0)))
            )
        )
        writer.write(
            proto.send(
                wire.ExtendedMessage("ut_metadata", ut_metadata.encode(ut_metadata.MetadataRequest(9)))
            )
        )
        seen = await _events_until(proto, reader, wire.ExtendedMessage)
        got = ut_metadata.decode(seen[-1].payload)  # type: ignore[attr-defined]
        assert got == ut_metadata.MetadataData(0, len(meta.info_bytes), meta.info_bytes)
        seen = await _events_until(proto, reader, wire.ExtendedMessage)
        assert ut_metadata.decode(seen[-1].payload) == ut_metadata.MetadataReject(9)  # type: ignore[attr-defined]
        writer.close()
        # A peer that asks (with our id for ut_metadata) without having offered ut_metadata
        # itself: no answer is possible; the seed must go on.
        proto, reader, writer = await _raw_peer(seed_s.port, meta, {})
        await _events_until(proto, reader, wire.ExtensionHandshake)
        writer.write(proto.send(wire.ExtensionHandshake({})) + proto.send(wire.HaveNone()))
        request = ut_metadata.encode(ut_metadata.MetadataRequest(0))
        writer.write((2 + len(request)).to_bytes(4, "big") + b"\x14\x02" + request)
        await asyncio.sleep(0.3)
        writer.close()
        # Still seeding: a new magnet peer still gets the metadata.
        assert seed.statistics().state == "seeding"
        proto, reader, writer = await _raw_peer(seed_s.port, meta, {"ut_metadata": 5})
        await _events_until(proto, reader, wire.ExtensionHandshake)
        writer.write(proto.send(wire.ExtensionHandshake({})) + proto.send(wire.HaveNone()))
        writer.write(
            proto.send(
                wire.ExtendedMessage("ut_metadata", ut_metadata.encode(ut_metadata.MetadataRequest(0)))
            )
        )
        seen = await _events_until(proto, reader, wire.ExtendedMessage)
        assert isinstance(ut_metadata.decode(seen[-1].payload), ut_metadata.MetadataData)  # type: ignore[attr-defined]
        writer.close()
