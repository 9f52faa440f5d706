"""Which hosts are no outside world: loopback, private, link-local, reserved addresses and
localhost (issue 20). A leaf, pure: the api room refuses them as a sub-operator's targets
(api/targets.py), the events room refuses to connect to them for a sub-operator's webhook
subscription (events/sinks.py), after its name was resolved.
"""

from __future__ import annotations

import ipaddress
import socket

__all__ = ["private_host"]


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``host`` is written as, if it is one: also the legacy IPv4 forms the
    system resolver still accepts ("127.1", "2130706433", "0x7f.0.0.1")."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def private_host(host: str) -> str | None:
    """Why ``host`` (a URL's host name, without brackets) is no target for a tenant: a
    loopback, private, link-local, unspecified, multicast or reserved IP address (an IPv4 one
    also inside IPv6), or ``localhost``; None for any other host.
    """
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return f"{host} is a loopback name"
    address = _address(name.partition("%")[0])  # an IPv6 zone (fe80::1%eth0) is no part of it
    if address is None:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return f"{host} is a loopback address"
    if address.is_link_local:
        return f"{host} is a link-local address (cloud metadata services live there)"
    if address.is_unspecified:
        return f"{host} is the unspecified address"
    if address.is_multicast:
        return f"{host} is a multicast address"
    # is_global also leaves out the shared address space (100.64.0.0/10, where some clouds
    # keep their metadata service) and documentation ranges, which is_private does not name.
    if address.is_private or address.is_reserved or not address.is_global:
        return f"{host} is a private or reserved address"
    return None
