"""gateway: the charger front end — picows listener, upgrade-time auth, connection registry,
outgoing calls (CS→CP) with correlation ids. The only room that knows picows.

* ``evgate.gateway.server``: :class:`~evgate.gateway.server.Gateway`, wired by ``app.py``.
* ``evgate.gateway.connection``: one charger's connection (a picows listener).
* ``evgate.gateway.upgrade``: the pure upgrade decision (paths, secrets, profiles, limits).
* ``evgate.gateway.credentials``: the credential index the upgrade decision reads, kept in
  sync with the database.
* ``evgate.gateway.interface``: what other rooms may use without importing picows
  (``ConnectionInfo``, ``ChargerLink``, observers, the errors of ``Gateway.call``).
* ``evgate.gateway.basic_routes``: BootNotification and Heartbeat answered simply, for a
  gateway run without the handlers' routing table (tests, benchmarks).

This package's ``__init__`` imports nothing, so importing ``evgate.gateway.interface`` does not
load picows.
"""
