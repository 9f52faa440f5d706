"""Helpers shared by the tests of every folder, by job (import as ``from support import ...``;
the ``conftest`` module name is taken by each folder's own conftest.py):

- :mod:`support.waiting`: waiting on an observed condition (``until``), not a fixed sleep;
- :mod:`support.evgate`: a running evgate in-process (``running_evgate``, ``running``);
- :mod:`support.charger`: the one test charger (``TestCharger``, ``ocpp_charger``);
- :mod:`support.receiver`: the one fake HTTP server (``Receiver``);
- :mod:`support.processes`: evgate and PostgreSQL as subprocesses;
- :mod:`support.database`: a database of the session's PostgreSQL;
- :mod:`support.logs`: the log records of a test (``LogLines``);
- :mod:`support.loop`: the test event loop the leak guard inspects.
"""

from __future__ import annotations

from .charger import Script, TestCharger, ocpp_charger
from .database import (
    create_database,
    drop_database,
    locked,
    logged_queries,
    terminate_query,
    want_events,
    with_database,
)
from .evgate import (
    BOOTSTRAP_TOKEN,
    Running,
    gateway_knows,
    make_settings,
    register_charger,
    running_evgate,
    running_handle,
)
from .logs import LogLines
from .loop import TrackingLoop, asyncpg_copy_waiter_unretrieved
from .processes import (
    ProcessOutput,
    ended,
    free_port,
    postmaster_pid,
    serve_env,
    serving,
    start_serve,
)
from .receiver import Received, Receiver, Reply
from .waiting import quiet_for, until, until_sync

__all__ = [
    "BOOTSTRAP_TOKEN",
    "LogLines",
    "ProcessOutput",
    "Received",
    "Receiver",
    "Reply",
    "Running",
    "Script",
    "TestCharger",
    "TrackingLoop",
    "asyncpg_copy_waiter_unretrieved",
    "create_database",
    "drop_database",
    "ended",
    "free_port",
    "gateway_knows",
    "locked",
    "logged_queries",
    "make_settings",
    "ocpp_charger",
    "postmaster_pid",
    "quiet_for",
    "register_charger",
    "running_evgate",
    "running_handle",
    "serve_env",
    "serving",
    "start_serve",
    "terminate_query",
    "until",
    "until_sync",
    "want_events",
    "with_database",
]
