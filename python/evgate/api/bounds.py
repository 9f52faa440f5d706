"""api room: the range of every integer the API takes, in paths, queries and bodies.

Each bound is the range of the PostgreSQL column the value meets, so that no request reaches
the database with a number it cannot hold (asyncpg would refuse it in the client: a 500).
Bigint ids stop at 2^53-1, the integers every JSON client reads exactly (I-JSON, RFC 7493):
evgate's sequences never get there, and a bound that is exact as a float is exact in the
OpenAPI document too (Litestar writes bounds as floats).

Out of range is answered like any other invalid value: 404 for an id in a path (no such
resource can exist), 422 for a query parameter or a body member (see ``problems.py``).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar.params import Parameter, QueryParameter

from evgate.protocol.v16 import INT32_MAX  # PostgreSQL ``integer``, as OCPP's ``integer``

__all__ = [
    "INT32_MAX",
    "JSON_INT_MAX",
    "BigintCursor",
    "BigintId",
    "BodyBigintId",
    "ConnectorFilter",
    "MeterWh",
    "TransactionCursor",
    "TransactionId",
]

#: The largest bigint id evgate accepts (I-JSON's exact integers).
JSON_INT_MAX = 2**53 - 1

#: A transaction's id in a path (``integer`` column).
TransactionId = Annotated[int, Parameter(ge=1, le=INT32_MAX, description="a transaction id")]
#: An installation's or a subscription's id in a path (``bigint`` identity column).
BigintId = Annotated[int, Parameter(ge=1, le=JSON_INT_MAX)]

#: Keyset cursors in queries: the last id of the previous page.
TransactionCursor = Annotated[
    int | None,
    QueryParameter(ge=1, le=INT32_MAX, description="the nextCursor of the previous page"),
]
BigintCursor = Annotated[
    int | None,
    QueryParameter(ge=1, le=JSON_INT_MAX, description="the last id of the previous page"),
]
#: The connector filter of meter values (0 is the charger itself). Litestar leaves a bound of 0
#: out of the document (it tests the value's truth): schema_extra writes it.
ConnectorFilter = Annotated[
    int | None,
    QueryParameter(
        name="connectorId",
        ge=0,
        le=INT32_MAX,
        schema_extra={"minimum": 0},
        description="only this connector (0: the charger itself)",
    ),
]

#: A bigint id in a JSON body.
BodyBigintId = Annotated[int, msgspec.Meta(ge=1, le=JSON_INT_MAX)]

#: An energy register reading (Wh) in a JSON body (a ``bigint`` column).
MeterWh = Annotated[int, msgspec.Meta(ge=-JSON_INT_MAX, le=JSON_INT_MAX)]
