"""Local Service Discovery (BEP 14): two of our clients find each other with no tracker.

The clients run in a child process inside a network namespace of the test's own
(``unshare --net``; IPv4: multicast on ``lo`` and 239.0.0.0/8 routed there; IPv6: a veth
pair that leads nowhere, for the ff15::efc0:988f group), so their multicast never reaches
a real network. That needs root: elsewhere the test skips (under
``CI=true`` it fails). Inside, a seed and a leecher, each its own session with LSD on and
nothing else (no tracker, no peer given, no DHT, no PEX), share one torrent; the leecher
completes only if their announces found each other. A private torrent in both sessions
is never announced: the leecher gets no peer for it. Once more with LSD turned on in
both sessions while they run, and off again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.interop.conftest import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import asyncio, json, sys
from pathlib import Path
from tests.integration.swarm_helpers import make_payload, make_torrent, same_tree
from torrent import config
from torrent.engine.session import Session
from torrent.proto import bencoding
from torrent.proto.metainfo import Metainfo

async def main(tmp: Path, family: int, live: bool) -> dict:
    content = make_payload(tmp / "seed", "lsd.bin", 300_000)
    meta = make_torrent(content)
    secret = make_payload(tmp / "seed", "secret.bin", 50_000)
    info = bencoding.decode(make_torrent(secret).info_bytes)
    info[b"private"] = 1
    private = Metainfo.from_bytes(bencoding.encode({b"info": info}))
    settings = config.testing_settings().replace(lsd_enabled=not live)
    if family == 6:  # listen on IPv6 only: the IPv6 group alone must do
        settings = settings.replace(listen_interfaces=(("::", 0),))
    async with asyncio.timeout(30), Session(settings) as seed_s, Session(settings) as leech_s:
        if live:  # turned on while running
            assert seed_s.lsd is None
            await seed_s.set_lsd_enabled(True)
            await leech_s.set_lsd_enabled(True)
        assert seed_s.lsd is not None and seed_s.lsd.active, "LSD did not join the group"
        assert [m.family for m in seed_s.lsd_services] == [family]
        seed = await seed_s.add_torrent(meta, tmp / "seed")
        await seed_s.add_torrent(private, tmp / "seed")
        await seed.wait_checked()
        leech = await leech_s.add_torrent(meta, tmp / "leech", seed=False)
        leech_private = await leech_s.add_torrent(private, tmp / "leech")
        await leech.wait_complete()
        sent, received = seed_s.lsd.sent, leech_s.lsd.received
        if live:  # and off again: the sockets are gone
            await leech_s.set_lsd_enabled(False)
            assert leech_s.lsd is None and not leech_s.lsd_services
            assert not leech_s.settings.lsd_enabled and not leech.swarm.lsd_enabled
        return {
            "same": same_tree(content, tmp / "leech" / "lsd.bin"),
            "lsd_peers": leech.swarm.lsd_peers,
            "private_lsd_peers": leech_private.swarm.lsd_peers,
            "private_known": leech_private.statistics().peers_known,
            "seed_sent": sent,
            "leech_received": received,
        }

print(json.dumps(asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "live"))))
"""


#: IPv4: multicast on lo, the group's range routed there. IPv6: Linux does not loop IPv6
#: multicast back on lo, so a veth pair (one end up, a ULA without DAD) carries the group.
SETUP = {
    4: "ip link set lo up && ip link set lo multicast on && ip route add 239.0.0.0/8 dev lo",
    6: "ip link set lo up && ip link add v0 type veth peer name v1 && ip link set v0 up"
    " && ip addr add fd00:77::1/64 dev v0 nodad",
}


@pytest.mark.parametrize(
    ("family", "live"), [(4, False), (6, False), (4, True)], ids=["ipv4", "ipv6", "ipv4-turned-on-live"]
)
def test_two_clients_find_each_other_on_the_local_network(tmp_path: Path, family: int, live: bool) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        skip_or_fail("the LSD test needs root, unshare and ip for a network namespace of its own")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        ["unshare", "--net", "--", "sh", "-c", f'{SETUP[family]} && exec "$0" "$1" "$2" "$3" "$4"', sys.executable, str(script), str(tmp_path), str(family), "live" if live else "start"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["same"]
    assert result["lsd_peers"] >= 1
    assert result["leech_received"] >= 1
    assert result["private_lsd_peers"] == 0
    assert result["private_known"] == 0
