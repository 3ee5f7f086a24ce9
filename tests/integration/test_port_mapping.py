"""Port mapping against a real gateway: Debian's ``miniupnpd`` (UPnP IGD, NAT-PMP, PCP).

The gateway runs in a network namespace of its own (``unshare --net``), joined to the
test's namespace by a veth pair: ``lan0`` 192.168.77.1 on the gateway's side, ``cli0``
192.168.77.2 on ours, with our default route through it. Its "WAN" is a second veth pair
inside its namespace (100.127.0.2) that leads nowhere; miniupnpd refuses to map behind a
private WAN address, so its configuration declares ``ext_ip`` 11.22.33.44, which exists in
that file only. Its nftables chains are made by the test (Debian's ``nft_init.sh`` wants
iptables). Nothing can leave the machine: the test refuses to run in the machine's own
network namespace (it changes the default route), so it needs a namespace holding only
``lo`` (``make test``'s, or ``unshare --net``), root, ``ip``, ``nft`` and ``miniupnpd``; elsewhere it
skips (under ``CI=true`` it fails).

Checked: each method (PCP, NAT-PMP, UPnP IGD) maps TCP and UDP, the mapping shows in
miniupnpd's nftables rules, it is renewed before its lease ends, and it is gone after
``close()``; the router's external address is reported; a ``Session`` with port mapping
on does all of it by itself (its DHT node taking a BEP 42 id for the external address)
and removes its mappings on exit. Two paths miniupnpd does not
take are checked against a small UPnP router of the test's own on loopback (no root
needed): a router that only takes permanent leases (error 725), and one that refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.integration.swarm_helpers import only_loopback
from tests.interop.conftest import skip_or_fail
from tests.polling import wait_until
from torrent import config
from torrent.engine.http_client import HttpClient
from torrent.engine.portmap import PortMapper, default_gateway
from torrent.engine.session import Session
from torrent.proto import upnp
from torrent.proto.dht import routing

EXTERNAL_IP = "11.22.33.44"
GATEWAY = "192.168.77.1"
CLIENT = "192.168.77.2"

CONF = f"""\
ext_ifname=wan0
ext_ip={EXTERNAL_IP}
listening_ip=lan0
port=0
enable_natpmp=yes
enable_upnp=yes
secure_mode=yes
system_uptime=yes
min_lifetime=2
uuid=3f2e4b5a-1c2d-4e5f-8a9b-0c1d2e3f4a5b
upnp_table_name=pt
upnp_nat_table_name=pt
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
allow 1024-65535 192.168.77.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
"""

RULES = """\
table inet pt {
  chain forward {
    type filter hook forward priority 0; policy accept;
    jump miniupnpd
  }
  chain miniupnpd {
  }
  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    jump prerouting_miniupnpd
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd
  }
  chain prerouting_miniupnpd {
  }
  chain postrouting_miniupnpd {
  }
}
"""

#: Run in the gateway's namespace: wait for lan0 (moved in by the test), wire the WAN,
#: load the chains, then become miniupnpd (in the foreground, so the test's kill ends it).
GATEWAY_SCRIPT = """
set -e
ip link set lo up
i=0
until ip link show lan0 >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 200 ] || exit 3; sleep 0.05; done
ip link add wan0 type veth peer name isp0
ip addr add 192.168.77.1/24 dev lan0
ip addr add 100.127.0.2/24 dev wan0
ip addr add 100.127.0.1/24 dev isp0
for dev in lan0 wan0 isp0; do ip link set $dev up; done
ip route add default via 100.127.0.1 dev wan0
nft -f "$1/rules.nft"
exec miniupnpd -f "$1/miniupnpd.conf" -P "$1/miniupnpd.pid" -d
"""


@dataclass
class Gateway:
    pid: int
    log: Path

    def rules(self) -> str:
        done = subprocess.run(
            ["nsenter", f"--net=/proc/{self.pid}/ns/net", "nft", "list", "chain", "inet", "pt", "prerouting_miniupnpd"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        return done.stdout

    def maps(self, protocol: str, port: int) -> bool:
        """A DNAT rule of ``protocol`` for external ``port`` to our address (miniupnpd
        writes ``@nh,72,8 0x6 th dport 41001 dnat ip to 192.168.77.2:41001``)."""
        number = {"tcp": "0x6", "udp": "0x11"}[protocol]
        return any(
            f" {number} th dport {port} dnat" in line and f"to {CLIENT}:" in line
            for line in self.rules().splitlines()
        )


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    missing = [
        tool for tool in ("unshare", "nsenter", "ip", "nft", "miniupnpd") if shutil.which(tool) is None
    ]
    if os.geteuid() != 0 or missing:
        skip_or_fail(f"the port mapping test needs root and {', '.join(missing) or 'these tools'}")
    if not only_loopback():
        # It adds a default route: only where nothing but loopback exists to be disturbed.
        skip_or_fail("the port mapping test changes the default route: run it in a loopback-only namespace")
    if default_gateway() is not None:
        skip_or_fail("this namespace already has a default route")
    (tmp_path / "miniupnpd.conf").write_text(CONF)
    (tmp_path / "rules.nft").write_text(RULES)
    log = tmp_path / "miniupnpd.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["unshare", "--net", "--", "sh", "-c", GATEWAY_SCRIPT, "gateway", str(tmp_path)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        # unshare(2) runs in the child after Popen returns: wait until it has its own
        # namespace, or the veth end would land in ours.
        ours = os.readlink("/proc/self/ns/net")
        for _ in range(200):
            if proc.poll() is not None or os.readlink(f"/proc/{proc.pid}/ns/net") != ours:
                break
            subprocess.run(["sleep", "0.02"], check=True)
        subprocess.run(
            ["ip", "link", "add", "cli0", "type", "veth", "peer", "name", "lan0", "netns", str(proc.pid)],
            check=True,
        )
        for cmd in (
            ["ip", "addr", "add", f"{CLIENT}/24", "dev", "cli0"],
            ["ip", "link", "set", "cli0", "up"],
            ["ip", "route", "add", "default", "via", GATEWAY, "dev", "cli0"],
        ):
            subprocess.run(cmd, check=True)
        for _ in range(200):
            if "Listening for NAT-PMP" in log.read_text() or proc.poll() is not None:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        assert proc.poll() is None, f"miniupnpd did not start:\n{log.read_text()[-3000:]}"
        yield Gateway(proc.pid, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "link", "del", "cli0"], capture_output=True)


@pytest.mark.parametrize("method", ["pcp", "natpmp", "upnp"])
async def test_maps_renews_and_removes(gateway: Gateway, method: str) -> None:
    externals: list[str] = []
    async with asyncio.timeout(40), aiohttp.ClientSession() as http:
        mapper = PortMapper(
            tcp_port=lambda: 41_001,
            udp_port=lambda: 41_002,
            lease_s=4,
            http=HttpClient(session=http),
            on_external=externals.append,
            methods=(method,),
        )
        task = asyncio.create_task(mapper.run())
        try:
            await mapper.ready.wait()
            stats = mapper.statistics()
            assert stats.method == method, f"{stats.error}\n{gateway.log.read_text()[-2000:]}"
            assert {(m.protocol, m.internal_port, m.external_port) for m in stats.mappings} == {
                ("TCP", 41_001, 41_001),
                ("UDP", 41_002, 41_002),
            }
            assert externals == [EXTERNAL_IP]
            assert gateway.maps("tcp", 41_001), gateway.rules()
            assert gateway.maps("udp", 41_002)
            # Granted 4 s (or miniupnpd's floor): renewed at half of it, still mapped.
            await wait_until(lambda: mapper.statistics().renewals >= 2, timeout_s=15, what="two renewals")
            assert gateway.maps("tcp", 41_001)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await mapper.close()
        assert not gateway.maps("tcp", 41_001)
        assert not gateway.maps("udp", 41_002)


async def test_session_maps_its_ports_and_removes_them_on_exit(gateway: Gateway, tmp_path: Path) -> None:
    settings = config.testing_settings().replace(
        listen_interfaces=(("0.0.0.0", 0),),
        port_mapping=True,
        port_mapping_lease_s=60,
        dht_enabled=True,  # for a UDP port; no bootstrap node, so nothing is sent
        dht_bootstrap=(),
        dht_state_file=str(tmp_path / "dht.state"),
    )
    async with asyncio.timeout(30):
        async with Session(settings) as session:
            mapper = session.port_mapping
            assert mapper is not None
            await asyncio.wait_for(mapper.ready.wait(), 20)
            stats = mapper.statistics()
            assert stats.method == "pcp", stats.error
            assert session.addresses.mapped_ipv4 == EXTERNAL_IP
            assert gateway.maps("tcp", session.port)
            assert session.dht is not None
            # BEP 42: the DHT node took an id that fits the external address.
            assert routing.conforms(session.dht.node_id, EXTERNAL_IP)
            udp_port = next(m.internal_port for m in stats.mappings if m.protocol == "UDP")
            assert gateway.maps("udp", udp_port)
            # The listen port changes while running: the mappings follow it.
            old_port = session.port
            await session.set_listen_port(0)
            mapper = session.port_mapping
            assert mapper is not None
            await asyncio.wait_for(mapper.ready.wait(), 20)
            stats = mapper.statistics()
            assert stats.method == "pcp", stats.error
            new_udp = next(m.internal_port for m in stats.mappings if m.protocol == "UDP")
            assert (session.port, new_udp) != (old_port, udp_port)
            assert gateway.maps("tcp", session.port)
            assert gateway.maps("udp", new_udp)
            assert not gateway.maps("tcp", old_port)
            assert not gateway.maps("udp", udp_port)
            udp_port = new_udp
        assert not gateway.maps("tcp", session.port)
        assert not gateway.maps("udp", udp_port)


async def test_no_gateway_is_one_log_line_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing answers (no route, no router): the mapper gives up quietly and says why."""
    async with asyncio.timeout(20), aiohttp.ClientSession() as http:
        mapper = PortMapper(
            tcp_port=lambda: 41_003,
            udp_port=lambda: None,
            lease_s=60,
            http=HttpClient(session=http),
            gateway="127.0.0.1",  # nobody answers NAT-PMP/PCP there
            methods=("pcp", "natpmp"),
        )
        await mapper.run()
    stats = mapper.statistics()
    assert stats.method == ""
    assert "pcp:" in stats.error
    assert "natpmp:" in stats.error
    failures = [
        r for r in caplog.records if r.name == "torrent.engine.portmap" and "failed" in r.getMessage()
    ]
    assert len(failures) == 1


class _FakeIgd:
    """A UPnP router of the test's on 127.0.0.1: SSDP answers on a UDP port, description
    and SOAP over aiohttp. ``refuse`` maps a lease to the UPnP error it gets."""

    def __init__(self, refuse: dict[int, int]) -> None:
        self.refuse = refuse
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.http_port = 0

    async def soap(self, request: web.Request) -> web.Response:
        body = await request.read()
        action = request.headers["SOAPAction"].strip('"').rpartition("#")[2]
        result = upnp.decode_action_response(
            body.replace(f"u:{action}".encode(), f"u:{action}Response".encode())
        )
        assert isinstance(result, upnp.ActionResult)
        self.calls.append((action, result.values))
        code = self.refuse.get(int(result.values.get("NewLeaseDuration", "-1")), 0)
        if action == "AddPortMapping" and code:
            fault = (
                '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>'
                "<faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>"
                f'<UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>{code}</errorCode>'
                "<errorDescription>refused</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>"
            )
            return web.Response(status=500, body=fault.encode(), content_type="text/xml")
        out = (
            "<NewExternalIPAddress>11.22.33.44</NewExternalIPAddress>"
            if action == "GetExternalIPAddress"
            else ""
        )
        answer = (
            '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
            f'<u:{action}Response xmlns:u="{upnp.SERVICES[1]}">{out}</u:{action}Response></s:Body></s:Envelope>'
        )
        return web.Response(body=answer.encode(), content_type="text/xml")

    async def description(self, _request: web.Request) -> web.Response:
        desc = (
            '<root xmlns="urn:schemas-upnp-org:device-1-0"><device><serviceList><service>'
            f"<serviceType>{upnp.SERVICES[1]}</serviceType><controlURL>/ctl</controlURL>"
            "</service></serviceList></device></root>"
        )
        return web.Response(body=desc.encode(), content_type="text/xml")


class _Ssdp(asyncio.DatagramProtocol):
    def __init__(self, location: str) -> None:
        self.location = location
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.startswith(b"M-SEARCH") and self.transport is not None:
            self.transport.sendto(
                f"HTTP/1.1 200 OK\r\nST: x\r\nLOCATION: {self.location}\r\n\r\n".encode(), addr
            )


@contextlib.asynccontextmanager
async def _fake_igd(refuse: dict[int, int]) -> AsyncIterator[tuple[_FakeIgd, tuple[str, int]]]:
    igd = _FakeIgd(refuse)
    app = web.Application()
    app.router.add_get("/desc.xml", igd.description)
    app.router.add_post("/ctl", igd.soap)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    loop = asyncio.get_running_loop()
    transport, _ssdp = await loop.create_datagram_endpoint(
        lambda: _Ssdp(f"http://127.0.0.1:{port}/desc.xml"), local_addr=("127.0.0.1", 0)
    )
    try:
        yield igd, transport.get_extra_info("sockname")
    finally:
        transport.close()
        await runner.cleanup()


async def _run_upnp(refuse: dict[int, int]) -> tuple[PortMapper, _FakeIgd]:
    async with asyncio.timeout(20), _fake_igd(refuse) as (igd, ssdp), aiohttp.ClientSession() as http:
        mapper = PortMapper(
            tcp_port=lambda: 41_005, udp_port=lambda: 41_006, lease_s=3600, http=HttpClient(session=http),
            gateway="127.0.0.1", methods=("upnp",), ssdp_group=ssdp,
        )  # fmt: skip
        task = asyncio.create_task(mapper.run())
        try:
            await mapper.ready.wait()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await mapper.close()
    return mapper, igd


async def test_upnp_router_that_only_takes_permanent_leases() -> None:
    """UPnP error 725: each mapping is asked again with lease 0 (never renewed), and both
    are deleted at exit. The router is a small one of the test's on loopback."""
    mapper, igd = await _run_upnp({3600: upnp.ONLY_PERMANENT_LEASES})
    stats = mapper.statistics()
    assert stats.method == "upnp"
    assert stats.external_address == "11.22.33.44"
    adds = [
        (v["NewProtocol"], v["NewExternalPort"], v["NewLeaseDuration"])
        for a, v in igd.calls
        if a == "AddPortMapping"
    ]
    assert adds == [
        ("TCP", "41005", "3600"),
        ("TCP", "41005", "0"),
        ("UDP", "41006", "3600"),
        ("UDP", "41006", "0"),
    ]
    deletes = [(v["NewProtocol"], v["NewExternalPort"]) for a, v in igd.calls if a == "DeletePortMapping"]
    assert deletes == [("TCP", "41005"), ("UDP", "41006")]
    assert all(v["NewInternalClient"] == "127.0.0.1" for a, v in igd.calls if a == "AddPortMapping")


async def test_upnp_refusal_is_reported_not_raised() -> None:
    """A conflict (718) for every lease: nothing is mapped, the error names it."""
    mapper, igd = await _run_upnp({3600: upnp.CONFLICT_IN_MAPPING, 0: upnp.CONFLICT_IN_MAPPING})
    stats = mapper.statistics()
    assert stats.method == ""
    assert stats.mappings == ()
    assert "718" in stats.error
    assert not [a for a, _ in igd.calls if a == "DeletePortMapping"]
