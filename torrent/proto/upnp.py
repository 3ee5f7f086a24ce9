"""UPnP IGD port mapping, sans-IO: SSDP search and answer, the device description, SOAP.

A client finds the router by multicasting an SSDP ``M-SEARCH`` (HTTP over UDP) to
239.255.255.250:1900 for an ``InternetGatewayDevice``; the router answers with a
``LOCATION`` URL of its XML device description. That description lists services; the one
that maps ports is ``WANIPConnection`` (v1 or v2) or, on DSL links, ``WANPPPConnection``;
its ``controlURL`` takes SOAP actions over HTTP POST:

* ``AddPortMapping`` (external port, protocol, internal port and client, lease),
* ``DeletePortMapping`` (external port, protocol),
* ``GetExternalIPAddress``,
* ``GetSpecificPortMappingEntry`` (what a mapping is now).

Here: :func:`encode_search` / :func:`decode_search_response` (SSDP),
:func:`parse_description` (the control URL of the first connection service, resolved
against ``URLBase`` or the description's own URL), :func:`encode_action` (the SOAP body
and ``SOAPAction`` header) and :func:`decode_action_response` (the output arguments, or a
:class:`SoapFault` with the UPnP error code, e.g. 718 "conflict in mapping entry", 725
"only permanent leases supported").

Everything received is untrusted: sizes are bounded, XML with a ``DOCTYPE`` is refused
(no entity expansion), and failures raise ``RemoteProtocolError`` only.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torrent.errors import RemoteProtocolError

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

# The XML modules are imported where a router's answer is read or a request written:
# every session imports this module, and xml.sax.saxutils alone pulls in urllib.request
# (about 15 ms of start-up together with ElementTree), which a session that maps no port
# never needs.

__all__ = [
    "SSDP_GROUP",
    "SSDP_PORT",
    "ActionResult",
    "Gateway",
    "SearchResponse",
    "SoapFault",
    "add_port_mapping",
    "decode_action_response",
    "decode_search_response",
    "delete_port_mapping",
    "encode_action",
    "encode_search",
    "get_external_ip_address",
    "get_specific_port_mapping_entry",
    "parse_description",
]

SSDP_GROUP = "239.255.255.250"
SSDP_PORT = 1900
IGD_DEVICE = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
#: Connection services that map ports, in order of preference.
SERVICES = (
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
)
#: Bounds on what we read from a router.
MAX_SEARCH_RESPONSE = 2048
MAX_DESCRIPTION = 256 * 1024
MAX_SOAP_RESPONSE = 64 * 1024
#: UPnP errors a caller reacts to (UPnP IGD WANIPConnection:1 §2.4.16).
CONFLICT_IN_MAPPING = 718
ONLY_PERMANENT_LEASES = 725

_ENVELOPE = "http://schemas.xmlsoap.org/soap/envelope/"
_ENCODING = "http://schemas.xmlsoap.org/soap/encoding/"


def encode_search(mx_s: int = 2, target: str = IGD_DEVICE) -> bytes:
    """An SSDP ``M-SEARCH`` for ``target``; routers answer within ``mx_s`` seconds."""
    return (
        "M-SEARCH * HTTP/1.1\r\n"
        f"HOST: {SSDP_GROUP}:{SSDP_PORT}\r\n"
        f"ST: {target}\r\n"
        'MAN: "ssdp:discover"\r\n'
        f"MX: {mx_s}\r\n"
        "\r\n"
    ).encode("ascii")


@dataclass(frozen=True, slots=True)
class SearchResponse:
    """A router's SSDP answer: where its description is, and what it found."""

    location: str
    search_target: str
    server: str = ""


def decode_search_response(data: bytes) -> SearchResponse:
    """Parse an SSDP answer (``HTTP/1.1 200 OK`` and headers, any case).

    Raises:
        RemoteProtocolError: not a 200 answer with an ``http://`` ``LOCATION``.
    """
    if len(data) > MAX_SEARCH_RESPONSE:
        raise RemoteProtocolError("SSDP: answer too large")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError("SSDP: answer is not text") from None
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    status = lines[0].split()
    if len(status) < 2 or not status[0].upper().startswith("HTTP/") or status[1] != "200":
        raise RemoteProtocolError(f"SSDP: not a 200 answer: {lines[0][:60]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    location = headers.get("location", "")
    if not location.lower().startswith("http://"):
        raise RemoteProtocolError(f"SSDP: no http LOCATION: {location[:80]!r}")
    return SearchResponse(location, headers.get("st", ""), headers.get("server", ""))


@dataclass(frozen=True, slots=True)
class Gateway:
    """A router's port-mapping service: where to POST, and which service type it is."""

    control_url: str
    service_type: str


def _parse_xml(data: bytes, limit: int, what: str) -> ET.Element:
    import xml.etree.ElementTree as ET

    if len(data) > limit:
        raise RemoteProtocolError(f"{what}: {len(data)} bytes is too large")
    if b"<!DOCTYPE" in data.upper() or b"<!ENTITY" in data.upper():
        raise RemoteProtocolError(f"{what}: DOCTYPE or ENTITY refused")
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise RemoteProtocolError(f"{what}: not XML ({exc})") from None


def _local(tag: str) -> str:
    """The element name without its namespace."""
    return tag.rpartition("}")[2]


def _child_text(element: ET.Element, name: str) -> str:
    for child in element:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    return ""


def parse_description(data: bytes, location: str) -> Gateway:
    """The port-mapping service of a device description fetched from ``location``.

    Raises:
        RemoteProtocolError: not XML, or no WANIPConnection/WANPPPConnection service.
    """
    root = _parse_xml(data, MAX_DESCRIPTION, "UPnP description")
    base = location
    for element in root.iter():
        if _local(element.tag) == "URLBase" and (element.text or "").strip():
            base = (element.text or "").strip()
            break
    found: dict[str, str] = {}
    for element in root.iter():
        if _local(element.tag) != "service":
            continue
        service_type = _child_text(element, "serviceType")
        control = _child_text(element, "controlURL")
        if service_type in SERVICES and control and service_type not in found:
            found[service_type] = control
    for service_type in SERVICES:
        if service_type in found:
            url = urllib.parse.urljoin(base, found[service_type])
            if not url.lower().startswith("http://"):
                raise RemoteProtocolError(f"UPnP description: control URL {url[:80]!r} is not http")
            return Gateway(url, service_type)
    raise RemoteProtocolError("UPnP description: no WANIPConnection or WANPPPConnection service")


def encode_action(service_type: str, action: str, arguments: list[tuple[str, str]]) -> tuple[bytes, str]:
    """A SOAP request: (body, value of the ``SOAPAction`` header). Arguments keep their
    order (some routers insist on the order of the service description)."""
    from xml.sax.saxutils import escape

    args = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in arguments)
    body = (
        '<?xml version="1.0"?>\r\n'
        f'<s:Envelope xmlns:s="{_ENVELOPE}" s:encodingStyle="{_ENCODING}">'
        f'<s:Body><u:{action} xmlns:u="{escape(service_type)}">{args}</u:{action}></s:Body>'
        "</s:Envelope>\r\n"
    )
    return body.encode("utf-8"), f'"{service_type}#{action}"'


def add_port_mapping(
    service_type: str,
    *,
    external_port: int,
    protocol: str,
    internal_port: int,
    internal_client: str,
    description: str,
    lease_s: int,
) -> tuple[bytes, str]:
    """``AddPortMapping`` (any remote host; ``lease_s = 0`` asks for a permanent one)."""
    return encode_action(
        service_type,
        "AddPortMapping",
        [
            ("NewRemoteHost", ""),
            ("NewExternalPort", str(external_port)),
            ("NewProtocol", protocol),
            ("NewInternalPort", str(internal_port)),
            ("NewInternalClient", internal_client),
            ("NewEnabled", "1"),
            ("NewPortMappingDescription", description),
            ("NewLeaseDuration", str(lease_s)),
        ],
    )


def delete_port_mapping(service_type: str, *, external_port: int, protocol: str) -> tuple[bytes, str]:
    """``DeletePortMapping`` of what ``add_port_mapping`` made."""
    return encode_action(
        service_type,
        "DeletePortMapping",
        [("NewRemoteHost", ""), ("NewExternalPort", str(external_port)), ("NewProtocol", protocol)],
    )


def get_external_ip_address(service_type: str) -> tuple[bytes, str]:
    """``GetExternalIPAddress`` (answer: ``NewExternalIPAddress``)."""
    return encode_action(service_type, "GetExternalIPAddress", [])


def get_specific_port_mapping_entry(
    service_type: str, *, external_port: int, protocol: str
) -> tuple[bytes, str]:
    """``GetSpecificPortMappingEntry`` (answer: internal port and client, lease, ...)."""
    return encode_action(
        service_type,
        "GetSpecificPortMappingEntry",
        [("NewRemoteHost", ""), ("NewExternalPort", str(external_port)), ("NewProtocol", protocol)],
    )


@dataclass(frozen=True, slots=True)
class ActionResult:
    """A successful action's output arguments by name."""

    action: str
    values: dict[str, str]


@dataclass(frozen=True, slots=True)
class SoapFault:
    """The router refused: the UPnP error code (0 when it gave none) and its text."""

    code: int
    description: str


def decode_action_response(data: bytes) -> ActionResult | SoapFault:
    """A SOAP answer: the ``<Action>Response`` arguments, or the fault.

    Raises:
        RemoteProtocolError: not a SOAP envelope with a body holding either.
    """
    root = _parse_xml(data, MAX_SOAP_RESPONSE, "SOAP answer")
    if _local(root.tag) != "Envelope":
        raise RemoteProtocolError("SOAP answer: not an Envelope")
    body = next((c for c in root if _local(c.tag) == "Body"), None)
    if body is None or len(body) == 0:
        raise RemoteProtocolError("SOAP answer: no Body")
    content = body[0]
    name = _local(content.tag)
    if name == "Fault":
        code, text = 0, ""
        for element in content.iter():
            if _local(element.tag) == "errorCode":
                raw = (element.text or "").strip()
                code = int(raw) if raw.isdigit() and len(raw) <= 6 else 0
            elif _local(element.tag) == "errorDescription":
                text = (element.text or "").strip()[:200]
        return SoapFault(code, text or _child_text(content, "faultstring")[:200])
    if not name.endswith("Response"):
        raise RemoteProtocolError(f"SOAP answer: unexpected {name[:60]!r}")
    return ActionResult(
        name.removesuffix("Response"), {_local(c.tag): (c.text or "").strip() for c in content}
    )
