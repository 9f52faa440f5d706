"""loadtest: the fleet simulator and the locust scenario (not part of the installed package).

* ``loadtest.charger``: simulated chargers (picows clients) and the fleet of one process.
* ``loadtest.worker``: one simulator process, driven over stdin/stdout.
* ``loadtest.driver``: runs a fleet over several processes and merges what they measured.
* ``loadtest.cli``: ``evgate simulate`` / ``python -m loadtest``.
* ``loadtest/locustfile.py``: an OCPP charger user for operators who use locust.

It lives beside ``python/`` in a source checkout; ``evgate simulate`` finds it there (see
``evgate.cli``), and ``bench/fleet.py`` drives it to compare evgate with a reference server.
"""
