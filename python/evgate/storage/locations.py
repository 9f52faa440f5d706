"""storage room: locations — where chargers stand (issue 19).

A location's catalog fields are kept as the operator gave them (``body``, a
:class:`LocationBody`), with its timezone and tariff group as columns. Every change appends
LocationChangedNotification to the outbox in its transaction (``storage/outbox.py``) and sends
``NOTIFY evgate_pricing`` (the tariff a charger's transactions get may have changed). A location
that chargers stand at cannot be deleted (:class:`InUse`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
import msgspec

from evgate.pricing import check_timezone
from evgate.storage.db import Database
from evgate.storage.errors import BadReference, InUse, NotFound
from evgate.storage.outbox import record_location_changed

__all__ = [
    "PRICING_CHANNEL",
    "Address",
    "Geoposition",
    "Location",
    "LocationBody",
    "LocationStore",
    "OpeningHours",
    "check_location",
    "location_changed",
]

# NOTIFY payload '*': a tariff, a group, a location or a charger's place changed.
PRICING_CHANNEL = "evgate_pricing"

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
TimeOfDay = Annotated[str, msgspec.Meta(pattern="^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")]
ParkingType = Literal[
    "ALONG_MOTORWAY",
    "PARKING_GARAGE",
    "PARKING_LOT",
    "ON_DRIVEWAY",
    "ON_STREET",
    "UNDERGROUND_GARAGE",
]
Facility = Literal[
    "HOTEL", "RESTAURANT", "CAFE", "MALL", "SUPERMARKET", "SPORT", "RECREATION_AREA", "NATURE",
    "MUSEUM", "BIKE_SHARING", "BUS_STOP", "TAXI_STAND", "TRAM_STOP", "METRO_STATION",
    "TRAIN_STATION", "AIRPORT", "PARKING_LOT", "CARPOOL_PARKING", "FUEL_STATION", "WIFI",
]  # fmt: skip


# ISO 3166-1 alpha-2.
_COUNTRY_CODES = """
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ
BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM
DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS
GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN
KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ
MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM
PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV
SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI
VN VU WF WS YE YT ZA ZM ZW
"""
COUNTRIES = frozenset(_COUNTRY_CODES.split())


class Address(msgspec.Struct, rename="camel", frozen=True, kw_only=True, omit_defaults=True):
    street: Text
    city: Text
    postal_code: Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
    # ISO 3166-1 alpha-2 (the API checks it is one).
    country: Annotated[str, msgspec.Meta(pattern="^[A-Z]{2}$")]
    region: Text | None = None


class Geoposition(msgspec.Struct, frozen=True, kw_only=True):
    latitude: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    longitude: Annotated[float, msgspec.Meta(ge=-180, le=180)]


class OpeningPeriod(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """Open on ``weekday`` (1 Monday … 7 Sunday) from ``start`` to ``end``, local time."""

    weekday: Annotated[int, msgspec.Meta(ge=1, le=7)]
    start: TimeOfDay
    end: TimeOfDay


class OpeningHours(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """Always open, or open in the listed periods (a day without one is closed)."""

    always_open: bool = True
    periods: tuple[OpeningPeriod, ...] = ()


class LocationBody(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """A location's catalog fields, as the operator gives them."""

    name: Text
    description: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    address: Address
    geoposition: Geoposition | None = None
    # IANA (the API checks it is one); time-of-day prices are read in it (none: UTC).
    timezone: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    opening_hours: OpeningHours = OpeningHours()
    parking_type: ParkingType | None = None
    facilities: tuple[Facility, ...] = ()
    status: Literal["active", "disabled"] = "active"


class Location(LocationBody, frozen=True, kw_only=True):
    """A location as the API shows it: its fields, tariff group and chargers."""

    id: int
    tariff_group_id: int | None
    charger_ids: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    # The sub-operator that owns it (null: the operator's own).
    sub_operator_id: int | None = None


_SELECT = """
SELECT l.id, l.body, l.tariff_group_id, l.created_at, l.updated_at, l.sub_operator_id,
       ARRAY(SELECT c.id FROM chargers c WHERE c.location_id = l.id ORDER BY c.id) AS charger_ids
FROM locations l
"""
_decode_body = msgspec.json.Decoder(LocationBody).decode


def _location(row: asyncpg.Record) -> Location:
    body = _decode_body(row["body"])
    return Location(
        **msgspec.structs.asdict(body),
        id=row["id"],
        tariff_group_id=row["tariff_group_id"],
        charger_ids=tuple(row["charger_ids"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        sub_operator_id=row["sub_operator_id"],
    )


async def location_changed(conn: asyncpg.Connection, location_id: int, action: str) -> Location:
    """Read the location on ``conn`` and record its change (outbox, NOTIFY), inside the
    transaction that changes it (or its chargers)."""
    row = await conn.fetchrow(_SELECT + " WHERE l.id = $1", location_id)
    assert row is not None
    location = _location(row)
    numbers = await conn.fetch(
        "SELECT number FROM chargers WHERE location_id = $1 ORDER BY number", location_id
    )
    await record_location_changed(conn, location, [r[0] for r in numbers], action)
    await conn.execute("SELECT pg_notify($1, '*')", PRICING_CHANNEL)
    return location


def check_location(timezone: str | None, address: Address | None) -> None:
    """Raises: ValueError: ``timezone`` is not an IANA timezone, or the address's country is
    not an ISO 3166-1 alpha-2 code."""
    if timezone is not None:
        check_timezone(timezone)  # TariffInvalid is a ValueError
    if address is not None and address.country not in COUNTRIES:
        raise ValueError(f"{address.country!r} is not an ISO 3166-1 alpha-2 country")


class LocationStore:
    """Queries on ``locations``; every change is in the outbox and notifies
    ``evgate_pricing``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, body: LocationBody, tariff_group_id: int | None = None) -> Location:
        """Raises: BadReference: no such tariff group."""
        try:
            async with self.db.pool.acquire() as conn, conn.transaction():
                location_id = await conn.fetchval(
                    "INSERT INTO locations (body, timezone, tariff_group_id) VALUES ($1, $2, $3)"
                    " RETURNING id",
                    msgspec.json.encode(body).decode(),
                    body.timezone,
                    tariff_group_id,
                )
                return await location_changed(conn, location_id, "created")
        except asyncpg.ForeignKeyViolationError:
            raise BadReference(f"no tariff group {tariff_group_id}") from None

    async def get(self, location_id: int) -> Location:
        """Raises: NotFound."""
        row = await self.db.fetchrow(_SELECT + " WHERE l.id = $1", location_id)
        if row is None:
            raise NotFound(f"no location {location_id}")
        return _location(row)

    async def page(self, after: int | None = None, limit: int = 100) -> list[Location]:
        """Locations in id order, the ``limit`` first after ``after`` (keyset pagination)."""
        rows = await self.db.fetch(
            _SELECT + " WHERE $1::int8 IS NULL OR l.id > $1 ORDER BY l.id LIMIT $2", after, limit
        )
        return [_location(r) for r in rows]

    async def update(self, location_id: int, **fields: Any) -> Location:
        """Set some of the body's fields (by attribute name) and ``tariff_group_id``.

        Raises:
            NotFound: no such location. BadReference: no such tariff group.
        """
        group = fields.pop("tariff_group_id", msgspec.UNSET)
        try:
            async with self.db.pool.acquire() as conn, conn.transaction():
                raw = await conn.fetchval(
                    "SELECT body FROM locations WHERE id = $1 FOR UPDATE", location_id
                )
                if raw is None:
                    raise NotFound(f"no location {location_id}")
                body = msgspec.structs.replace(_decode_body(raw), **fields)
                await conn.execute(
                    "UPDATE locations SET body = $2, timezone = $3, updated_at = now(),"
                    " tariff_group_id = CASE WHEN $4 THEN $5 ELSE tariff_group_id END"
                    " WHERE id = $1",
                    location_id,
                    msgspec.json.encode(body).decode(),
                    body.timezone,
                    group is not msgspec.UNSET,
                    None if group is msgspec.UNSET else group,
                )
                return await location_changed(conn, location_id, "updated")
        except asyncpg.ForeignKeyViolationError:
            raise BadReference(f"no tariff group {group}") from None

    async def delete(self, location_id: int) -> None:
        """Raises: NotFound. InUse: chargers stand there."""
        try:
            async with self.db.pool.acquire() as conn, conn.transaction():
                if not await conn.fetchval(
                    "SELECT 1 FROM locations WHERE id = $1 FOR UPDATE", location_id
                ):
                    raise NotFound(f"no location {location_id}")
                await location_changed(conn, location_id, "deleted")  # while it is there
                await conn.execute("DELETE FROM locations WHERE id = $1", location_id)
        except (asyncpg.ForeignKeyViolationError, asyncpg.RestrictViolationError):
            raise InUse(f"location {location_id} has chargers; move them first") from None
