"""UPnP IGD codec with literal bytes: SSDP, the device description, SOAP."""

from __future__ import annotations

import pytest

from torrent.errors import RemoteProtocolError
from torrent.proto import upnp

WANIP1 = "urn:schemas-upnp-org:service:WANIPConnection:1"

#: Shaped as miniupnpd's rootDesc.xml (trimmed): the WAN connection service sits three
#: devices deep, and there is no URLBase.
DESCRIPTION = b"""<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
<specVersion><major>1</major><minor>0</minor></specVersion>
<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType>
<controlURL>/ctl/L3F</controlURL></service></serviceList>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId><controlURL>/ctl/IPConn</controlURL>
<eventSubURL>/evt/IPConn</eventSubURL><SCPDURL>/WANIPCn.xml</SCPDURL></service></serviceList>
</device></deviceList></device></deviceList></device></root>
"""


def test_search_bytes() -> None:
    assert upnp.encode_search() == (
        b"M-SEARCH * HTTP/1.1\r\n"
        b"HOST: 239.255.255.250:1900\r\n"
        b"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"
        b'MAN: "ssdp:discover"\r\n'
        b"MX: 2\r\n"
        b"\r\n"
    )


def test_search_response_headers_in_any_case() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nst: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"
        b"Location: http://192.168.77.1:41487/rootDesc.xml\r\nSERVER: Debian/12 UPnP/1.1 MiniUPnPd/2.3.1\r\n\r\n"
    )
    found = upnp.decode_search_response(answer)
    assert found.location == "http://192.168.77.1:41487/rootDesc.xml"
    assert found.search_target.endswith("InternetGatewayDevice:1")
    assert "MiniUPnPd" in found.server


@pytest.mark.parametrize(
    "answer",
    [
        b"NOTIFY * HTTP/1.1\r\nLOCATION: http://a/\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nLOCATION: http://a/\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nLOCATION: file:///etc/passwd\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"\xff\xfe",
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 400,
    ],
)
def test_bad_search_responses(answer: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        upnp.decode_search_response(answer)


def test_description_gives_the_control_url_resolved_against_the_location() -> None:
    gw = upnp.parse_description(DESCRIPTION, "http://192.168.77.1:41487/rootDesc.xml")
    assert gw == upnp.Gateway("http://192.168.77.1:41487/ctl/IPConn", WANIP1)


def test_description_prefers_url_base_and_ip_over_ppp() -> None:
    desc = (
        b'<root xmlns="urn:schemas-upnp-org:device-1-0"><URLBase>http://10.0.0.1:5000/</URLBase><device>'
        b"<serviceList><service><serviceType>urn:schemas-upnp-org:service:WANPPPConnection:1</serviceType>"
        b"<controlURL>/ppp</controlURL></service><service>"
        b"<serviceType>urn:schemas-upnp-org:service:WANIPConnection:2</serviceType><controlURL>ip2</controlURL>"
        b"</service></serviceList></device></root>"
    )
    gw = upnp.parse_description(desc, "http://10.0.0.1:1900/desc.xml")
    assert gw.control_url == "http://10.0.0.1:5000/ip2"
    assert gw.service_type.endswith("WANIPConnection:2")


@pytest.mark.parametrize(
    "desc",
    [
        b"not xml",
        b"<root><device/></root>",  # no connection service
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><root>&a;</root>',  # entity expansion refused
        b"<root>" + b" " * upnp.MAX_DESCRIPTION + b"</root>",
    ],
)
def test_bad_descriptions(desc: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        upnp.parse_description(desc, "http://10.0.0.1/")


def test_add_port_mapping_body_keeps_argument_order_and_escapes() -> None:
    body, action = upnp.add_port_mapping(
        WANIP1,
        external_port=6881,
        protocol="TCP",
        internal_port=6881,
        internal_client="192.168.1.20",
        description="a<b&c",
        lease_s=3600,
    )
    assert action == f'"{WANIP1}#AddPortMapping"'
    assert body == (
        b'<?xml version="1.0"?>\r\n'
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        b's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
        b'<u:AddPortMapping xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">'
        b"<NewRemoteHost></NewRemoteHost><NewExternalPort>6881</NewExternalPort><NewProtocol>TCP</NewProtocol>"
        b"<NewInternalPort>6881</NewInternalPort><NewInternalClient>192.168.1.20</NewInternalClient>"
        b"<NewEnabled>1</NewEnabled><NewPortMappingDescription>a&lt;b&amp;c</NewPortMappingDescription>"
        b"<NewLeaseDuration>3600</NewLeaseDuration></u:AddPortMapping></s:Body></s:Envelope>\r\n"
    )
    body, action = upnp.delete_port_mapping(WANIP1, external_port=6881, protocol="UDP")
    assert action.endswith('#DeletePortMapping"')
    assert b"<NewExternalPort>6881</NewExternalPort><NewProtocol>UDP</NewProtocol>" in body


def test_action_response_and_fault() -> None:
    ok = (
        b'<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        b'<u:GetExternalIPAddressResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">'
        b"<NewExternalIPAddress>11.22.33.44</NewExternalIPAddress></u:GetExternalIPAddressResponse>"
        b"</s:Body></s:Envelope>"
    )
    assert upnp.decode_action_response(ok) == upnp.ActionResult(
        "GetExternalIPAddress", {"NewExternalIPAddress": "11.22.33.44"}
    )
    fault = (
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>'
        b"<faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>"
        b'<UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>725</errorCode>'
        b"<errorDescription>OnlyPermanentLeasesSupported</errorDescription></UPnPError></detail>"
        b"</s:Fault></s:Body></s:Envelope>"
    )
    assert upnp.decode_action_response(fault) == upnp.SoapFault(725, "OnlyPermanentLeasesSupported")


@pytest.mark.parametrize(
    "data",
    [
        b"<a/>",
        b"<s:Envelope xmlns:s='x'/>",
        b"<s:Envelope xmlns:s='x'><s:Body><u:Other/></s:Body></s:Envelope>",
    ],
)
def test_bad_action_responses(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        upnp.decode_action_response(data)
