"""handlers: where OCPP meaning lives — one module per concern, found through a routing table.

The contract between the gateway and the handlers is :mod:`evgate.handlers.contract`, the one
module of this room the gateway imports (tests/test_sourcecode.py, ``ROOM_IMPORTS``).
"""

from evgate.handlers.contract import ChargerContext, Handler, Routes

__all__ = ["ChargerContext", "Handler", "Routes"]
