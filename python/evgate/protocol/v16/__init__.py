"""OCPP 1.6J messages (room: protocol): payload Structs, enumerations and the action table.

Everything is re-exported here, so other rooms write ``from evgate.protocol.v16 import
BootNotificationRequest, RegistrationStatus, ACTIONS``. See ``messages`` for the naming and
encoding rules, ``enums`` for the enumerations and ``actions`` for the table of 39 actions.
"""

from evgate.protocol.v16.actions import ACTION_OF_REQUEST, ACTIONS, ActionSpec, Direction
from evgate.protocol.v16.enums import *  # noqa: F403
from evgate.protocol.v16.enums import __all__ as _enum_names
from evgate.protocol.v16.messages import *  # noqa: F403
from evgate.protocol.v16.messages import __all__ as _message_names

__all__ = [
    "ACTIONS",
    "ACTION_OF_REQUEST",
    "ActionSpec",
    "Direction",
    *_enum_names,
    *_message_names,
]
