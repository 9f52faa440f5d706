"""api room: the addresses a sub-operator's token may not make evgate call (issue 20).

Subscriptions (webhook ``callbackUrl``, Kafka ``brokers``) and installations' webhooks
(``authenticationUrl``, ``sessionStartUrl``, ``sessionEndUrl``) make evgate's servers open
connections. The operator may point them anywhere; a tenant must not reach what only evgate's
network can: cloud metadata (169.254.169.254), loopback services, the private network — and a
failed delivery's ``lastError`` would tell it which ports answer. So for a request acting for a
sub-operator, a host that is a literal IP address outside the public internet, or ``localhost``,
is refused, unless ``EVGATE_TENANT_PRIVATE_TARGETS`` allows it.

Host names are not resolved here (the answer may change after the check): a name that
resolves to a private address is refused only when a delivery connects (events/sinks.py, for
webhooks; not for Kafka brokers nor installations' webhooks). README.md ("Sub-operators").
"""

from __future__ import annotations

from urllib.parse import urlsplit

from evgate.addresses import private_host
from evgate.api.problems import Unprocessable
from evgate.storage.db import tenant

__all__ = ["check_tenant_target"]


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
