"""api room: the addresses a sub-operator's token may not make evgate call (issue 20).

Subscriptions (webhook ``callbackUrl``, Kafka ``brokers``) and installations' webhooks
(``authenticationUrl``, ``sessionStartUrl``, ``sessionEndUrl``) make evgate's servers open
connections. The operator may point them anywhere; a tenant must not reach what only evgate's
network can: cloud metadata (169.254.169.254), loopback services, the private network — and a
failed delivery's ``lastError`` would tell it which ports answer. So for a request acting for a
sub-operator, a host that is a literal IP address outside the public internet, or ``localhost``,
is refused, unless ``EVGATE_TENANT_PRIVATE_TARGETS`` allows it.

Host names are not resolved (the answer may change after the check): a name that resolves to a
private address is not refused here. README.md ("Sub-operators") says so.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from evgate.api.problems import Unprocessable
from evgate.storage.db import tenant

__all__ = ["check_tenant_target", "private_host"]


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


def check_tenant_target(field: str, url: str | None, allowed: bool) -> None:
    """Refuse ``url`` (a URL, or a Kafka broker's ``host:port``) as ``field`` of a request
    acting for a sub-operator when its host is private (:func:`private_host`).

    Args:
        field: the body's member, named in the answer.
        url: the target; None (not given) passes.
        allowed: ``EVGATE_TENANT_PRIVATE_TARGETS``: the operator lets tenants reach any host.

    Raises:
        Unprocessable: a sub-operator's request names a private target (422).
    """
    if url is None or allowed or tenant() is None:
        return
    try:
        host = urlsplit(url if "//" in url else f"//{url}").hostname
    except ValueError:  # not a URL at all: the shape checks answer it
        return
    why = private_host(host) if host else None
    if why is not None:
        raise Unprocessable(
            f"{field}: {why}; a sub-operator's token may not make evgate call loopback,"
            " private, link-local or reserved addresses (the operator may allow it with"
            " EVGATE_TENANT_PRIVATE_TARGETS)"
        )
