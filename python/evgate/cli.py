"""The ``evgate`` command: serve, migrate, and the operator's charger, circuit and token chores.

Commands that touch the database use ``EVGATE_DATABASE_URL`` or, without it, the embedded
PostgreSQL in the data folder (adopting the one a running ``evgate serve`` started).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

from evgate.config import ConfigError, Settings, load_settings

__all__ = ["main"]


@contextlib.asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[Any]:
    from evgate.storage.db import Database
    from evgate.storage.embedded import EmbeddedPostgres

    embedded = None
    dsn = settings.database_url
    if dsn is None:
        embedded = EmbeddedPostgres(settings.data_dir)
        dsn = await asyncio.to_thread(embedded.start)
    db = Database(dsn, pool_size=2)
    try:
        await db.open(migrate=True)
        yield db
    finally:
        await db.close()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


async def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from evgate.storage.embedded import EmbeddedPostgresError
    from evgate.workers import taken_port

    taken = None if settings.reuse_port else taken_port(settings)
    if taken is not None:  # before the database and the workers: nothing to undo
        print(f"evgate: cannot listen on {taken}", file=sys.stderr)
        return 1
    try:
        if settings.workers > 1 or settings.notification_delivery == "process":
            from evgate.workers import supervise

            return await supervise(settings, args.config)
        from evgate.app import serve

        await serve(settings)
    except EmbeddedPostgresError as exc:  # its message says what to do; no traceback
        print(f"evgate: {exc}", file=sys.stderr)
        return 1
    return 0


async def _deliver(settings: Settings, _: argparse.Namespace) -> int:
    from evgate.app import deliver

    await deliver(settings)
    return 0


async def _migrate(settings: Settings, _: argparse.Namespace) -> int:
    async with _database(settings):
        print("migrations applied")
    return 0


async def _chargers_add(settings: Settings, args: argparse.Namespace) -> int:
    from evgate.auth.registry import ChargerRegistry
    from evgate.credentials import is_valid_charger_id
    from evgate.storage.chargers import ChargerStore
    from evgate.storage.errors import AlreadyExists

    if not is_valid_charger_id(args.id):
        print(
            f"error: {args.id!r} is not a charger id (1-64 of A-Z a-z 0-9 . _ - :)", file=sys.stderr
        )
        return 2
    async with _database(settings) as db:
        try:
            charger, secret = await ChargerRegistry(ChargerStore(db)).create(
                args.id, args.description, args.security_profile
            )
        except AlreadyExists as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"charger {charger.id} created; its secret (shown only now): {secret}")
    return 0


async def _chargers_rotate(settings: Settings, args: argparse.Namespace) -> int:
    from evgate.auth.registry import ChargerRegistry
    from evgate.storage.chargers import ChargerStore
    from evgate.storage.errors import NotFound

    async with _database(settings) as db:
        try:
            secret = await ChargerRegistry(ChargerStore(db)).rotate_secret(args.id)
        except NotFound as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"charger {args.id}: new secret (shown only now): {secret}")
    return 0


class _ImportError(Exception):
    """A line of a secrets file that cannot be imported (its message names the line)."""


def _read_secrets(path: Path) -> tuple[dict[str, str], dict[str, int]]:
    """The ``id,secret`` lines of a CSV file: the secrets by charger id, and each id's line.
    Blank lines, ``#`` comments and a first line ``id,secret`` are skipped.

    Raises:
        _ImportError: a line that is not ``id,secret`` with a valid id and secret, or an id
            given twice.
    """
    import csv

    from evgate.credentials import is_valid_charger_id, key_problem

    secrets: dict[str, str] = {}
    lines: dict[str, int] = {}
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            for fields in reader:
                line = reader.line_num
                if not fields or fields[0].lstrip().startswith("#"):
                    continue
                if line == 1 and fields == ["id", "secret"]:
                    continue
                where = f"{path}:{line}"
                if len(fields) != 2:
                    raise _ImportError(f"{where}: expected id,secret, found {len(fields)} fields")
                charger_id, secret = fields[0].strip(), fields[1]
                if not is_valid_charger_id(charger_id):
                    raise _ImportError(
                        f"{where}: {charger_id!r} is not a charger id (1-64 of A-Z a-z 0-9 . _ - :)"
                    )
                problem = key_problem(secret)
                if problem is not None:
                    raise _ImportError(f"{where}: the secret of {charger_id} {problem}")
                if charger_id in lines:
                    raise _ImportError(
                        f"{where}: charger {charger_id} is on line {lines[charger_id]} already"
                    )
                secrets[charger_id], lines[charger_id] = secret, line
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise _ImportError(f"{path}: {exc}") from None
    return secrets, lines


async def _chargers_import_secrets(settings: Settings, args: argparse.Namespace) -> int:
    from evgate.auth.registry import ChargerRegistry
    from evgate.storage.chargers import ChargerStore, MissingCharger

    try:
        secrets, lines = _read_secrets(Path(args.file))
    except _ImportError as exc:
        print(f"error: {exc}; nothing imported", file=sys.stderr)
        return 2
    async with _database(settings) as db:
        try:
            done = await ChargerRegistry(ChargerStore(db)).import_secrets(secrets, args.create)
        except MissingCharger as exc:
            print(
                f"error: {args.file}:{lines[exc.charger_id]}: {exc} (--create makes missing"
                " chargers); nothing imported",
                file=sys.stderr,
            )
            return 1
    print(f"{len(done.updated)} chargers' secrets replaced, {len(done.created)} chargers created")
    return 0


async def _circuits_add(settings: Settings, args: argparse.Namespace) -> int:
    from evgate.storage.circuits import CircuitStore
    from evgate.storage.errors import BadReference

    fields: dict[str, object] = {
        "name": args.name,
        "max_current": args.max_current,
        "phases": args.phases,
        "min_charge_point_current": args.min_current,
        "offline_reserved_current": args.reserve,
    }
    if args.parent is not None:
        fields["parent_circuit_id"] = args.parent
    async with _database(settings) as db:
        try:
            circuit = await CircuitStore(db).create(**fields)
        except BadReference as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"circuit {circuit.id} created: {circuit.name}, {circuit.max_current:g} A")
    return 0


async def _circuits_list(settings: Settings, _: argparse.Namespace) -> int:
    from evgate.storage.circuits import CircuitStore

    async with _database(settings) as db:
        topology = await CircuitStore(db).topology()
    members: dict[int, list[str]] = {}
    for m in topology.members:
        members.setdefault(m.circuit_id, []).append(f"{m.charger_id} ({m.max_current:g} A)")
    print(f"{'id':>6}  {'parent':>6}  {'max A':>7}  {'ph':>2}  name: chargers")
    for c in sorted(topology.circuits, key=lambda c: c.id):
        parent = "" if c.parent_circuit_id is None else str(c.parent_circuit_id)
        chargers = ", ".join(members.get(c.id, []))
        print(f"{c.id:>6}  {parent:>6}  {c.max_current:>7g}  {c.phases:>2}  {c.name}: {chargers}")
    return 0


async def _circuits_delete(settings: Settings, args: argparse.Namespace) -> int:
    from evgate.storage.circuits import CircuitStore
    from evgate.storage.errors import InUse, NotFound

    async with _database(settings) as db:
        try:
            await CircuitStore(db).delete(args.id)
        except (InUse, NotFound) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"circuit {args.id} deleted")
    return 0


async def _tokens_create(settings: Settings, args: argparse.Namespace) -> int:
    from evgate.auth.registry import create_token
    from evgate.storage.errors import BadReference
    from evgate.storage.tokens import TokenStore

    async with _database(settings) as db:
        try:
            token = await create_token(TokenStore(db), args.name, args.scope, args.sub_operator)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except BadReference as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(token)
    return 0


async def _tokens_list(settings: Settings, _: argparse.Namespace) -> int:
    from evgate.storage.tokens import TokenStore

    async with _database(settings) as db:
        store = TokenStore(db)
        tokens, after = [], None
        while page := await store.page(after, 1000):
            tokens += page
            after = page[-1].id
    # The bootstrap token is no row: it is the EVGATE_BOOTSTRAP_TOKEN of each process.
    # sub-op: the sub-operator a token acts for (empty: the operator's).
    print(f"{'id':>6}  {'scope':<5}  {'sub-op':>6}  {'created':<25}  name")
    for t in tokens:
        sub_operator = "" if t.sub_operator_id is None else str(t.sub_operator_id)
        created = t.created_at.isoformat(timespec="seconds")
        print(f"{t.id:>6}  {t.scope:<5}  {sub_operator:>6}  {created:<25}  {t.name}")
    return 0


async def _tokens_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from evgate.storage.errors import NotFound
    from evgate.storage.tokens import TokenStore

    async with _database(settings) as db:
        try:
            await TokenStore(db).delete(args.id)
        except NotFound as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"API token {args.id} revoked")
    return 0


def _json_argument(path: str) -> bytes:
    """The JSON in file ``path`` ("-": standard input)."""
    return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()


async def _pricing_add(settings: Settings, args: argparse.Namespace) -> int:
    """Create a location or a tariff from the API's JSON body, checked as the API checks it."""
    import msgspec

    from evgate.pricing import Tariff, check_tariff
    from evgate.storage.errors import BadReference
    from evgate.storage.locations import LocationBody, LocationStore, check_location
    from evgate.storage.tariffs import TariffStore

    kind: type[LocationBody | Tariff] = LocationBody if args.command == "locations" else Tariff
    try:
        item = msgspec.json.decode(_json_argument(args.file), type=kind)
        if isinstance(item, LocationBody):
            check_location(item.timezone, item.address)
        else:
            check_tariff(item)
    except (OSError, ValueError, msgspec.ValidationError) as exc:  # TariffInvalid too
        print(f"error: {exc}", file=sys.stderr)
        return 2
    async with _database(settings) as db:
        try:
            if isinstance(item, LocationBody):
                made: Any = await LocationStore(db).create(item, args.tariff_group)
            else:
                made = await TariffStore(db).create_tariff(item)
        except BadReference as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"{args.command[:-1]} {made.id} created")
    return 0


async def _pricing_list(settings: Settings, args: argparse.Namespace) -> int:
    """Print every location, tariff or tariff group as a JSON line (the API's form)."""
    import msgspec

    from evgate.storage.locations import LocationStore
    from evgate.storage.tariffs import TariffStore

    async with _database(settings) as db:
        pages: Any = {
            "locations": LocationStore(db).page,
            "tariffs": TariffStore(db).tariffs,
            "tariff-groups": TariffStore(db).groups,
        }[args.command]
        after = None
        while page := await pages(after, 1000):
            for item in page:
                print(msgspec.json.encode(item).decode())
            after = page[-1].id
    return 0


async def _users_add(settings: Settings, args: argparse.Namespace) -> int:
    from evgate.storage.errors import AlreadyExists
    from evgate.storage.users import UserStore

    # The API's rules (api/users.py), said here too: the CLI does not go through the API.
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", args.email) or len(args.email) > 254:
        print(f"error: {args.email!r} is not an email address", file=sys.stderr)
        return 2
    if not re.fullmatch(r"[A-Z]{3}", args.currency):
        print(f"error: {args.currency!r} is no ISO 4217 currency code", file=sys.stderr)
        return 2
    fields = {"email": args.email, "prepaid": args.prepaid, "currency": args.currency}
    async with _database(settings) as db:
        try:
            user = await UserStore(db).create(fields, [])
        except AlreadyExists as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"user {user.id} created ({user.email})")
    return 0


async def _users_list(settings: Settings, _: argparse.Namespace) -> int:
    from evgate.storage.users import UserStore

    async with _database(settings) as db:
        store = UserStore(db)
        users, after = [], None
        while page := await store.page(after, 1000):
            users += page
            after = page[-1].id
    print(f"{'id':>6}  {'status':<7}  {'balance':>14}  email")
    for u in users:
        balance = f"{u.balance.amount} {u.currency}" if u.prepaid else "-"
        print(f"{u.id:>6}  {u.status:<7}  {balance:>14}  {u.email}")
    return 0


async def _users_status(settings: Settings, args: argparse.Namespace) -> int:
    from evgate.storage.errors import NotFound
    from evgate.storage.users import UserStore

    async with _database(settings) as db:
        try:
            await UserStore(db).update(args.id, {"status": args.status})
        except NotFound as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    # Every running evgate refuses or accepts the user's id tags from now on (evgate_user).
    print(f"user {args.id} {args.status}")
    return 0


async def _users_book(settings: Settings, args: argparse.Namespace) -> int:
    from evgate.storage.balances import BalanceStore
    from evgate.storage.errors import InsufficientBalance, NotFound
    from evgate.storage.money import AmountError

    async with _database(settings) as db:
        try:
            entry = await BalanceStore(db).book(args.id, args.amount, args.type)
        except (NotFound, InsufficientBalance, AmountError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"user {args.id}: {entry.type} {entry.amount}, balance {entry.balance} {entry.currency}")
    return 0


def _checkout_root() -> Path | None:
    """The source checkout holding loadtest/, if this evgate runs from one."""
    # The simulator lives in the checkout's loadtest/ beside python/, not in the installed
    # package (it is a test tool, and its locustfile needs locust). The editable install that
    # `make install` does points at python/, so the checkout is two folders above this file.
    root = Path(__file__).resolve().parents[2]
    return root if (root / "loadtest" / "cli.py").is_file() else None


async def _simulate(_: Settings, args: argparse.Namespace) -> int:
    root = _checkout_root()
    if root is None:
        print(
            "evgate simulate needs a source checkout of evgate (its loadtest/ folder);"
            " this evgate is installed without one",
            file=sys.stderr,
        )
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from loadtest.cli import run

    return await run(args.simulate_args)


Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evgate", description="OCPP 1.6J central system")
    parser.add_argument("--config", help="a TOML file of settings (EVGATE_* variables win)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run evgate (embedded PostgreSQL unless a database is set)")
    p.add_argument("--workers", type=int, help="worker processes (EVGATE_WORKERS)")
    p.set_defaults(run=_serve)

    sub.add_parser(
        "deliver",
        help="deliver notifications only (serve starts it beside its workers, unless"
        " EVGATE_NOTIFICATION_DELIVERY is inline or off)",
    ).set_defaults(run=_deliver)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(run=_migrate)

    chargers = sub.add_parser("chargers", help="register chargers, rotate secrets")
    csub = chargers.add_subparsers(dest="chargers_command", required=True)
    p = csub.add_parser("add", help="register a charger and print its secret once")
    p.add_argument("id")
    p.add_argument("--description", default="")
    p.add_argument("--security-profile", type=int, choices=(1, 2, 3), default=1)
    p.set_defaults(run=_chargers_add)
    p = csub.add_parser("rotate-secret", help="give a charger a new secret, print it once")
    p.add_argument("id")
    p.set_defaults(run=_chargers_rotate)
    p = csub.add_parser(
        "import-secrets",
        help="set chargers' secrets from a CSV file of id,secret lines, all or none",
    )
    p.add_argument("file", help="UTF-8 CSV: id,secret per line (16-40 characters each secret)")
    p.add_argument(
        "--create",
        action="store_true",
        help="register chargers the file names that do not exist (security profile 1)",
    )
    p.set_defaults(run=_chargers_import_secrets)

    circuits = sub.add_parser("circuits", help="circuits for load management")
    lsub = circuits.add_subparsers(dest="circuits_command", required=True)
    p = lsub.add_parser("add", help="create a circuit (a breaker) and print its id")
    p.add_argument("name")
    p.add_argument("--max-current", type=float, required=True, help="A per phase")
    p.add_argument("--phases", type=int, choices=(1, 3), default=3)
    p.add_argument("--parent", type=int, help="the id of the circuit that feeds it")
    p.add_argument("--min-current", type=float, default=6.0, help="minChargePointCurrent, A")
    p.add_argument("--reserve", type=float, default=0.0, help="offlineReservedCurrent, A")
    p.set_defaults(run=_circuits_add)
    lsub.add_parser("list", help="list circuits and their chargers").set_defaults(
        run=_circuits_list
    )
    p = lsub.add_parser("delete", help="delete a circuit without chargers or sub-circuits")
    p.add_argument("id", type=int)
    p.set_defaults(run=_circuits_delete)

    tokens = sub.add_parser("tokens", help="operator API tokens")
    tsub = tokens.add_subparsers(dest="tokens_command", required=True)
    p = tsub.add_parser("create", help="create an API token and print it once")
    p.add_argument("--name", required=True)
    p.add_argument("--scope", choices=("admin", "read"), default="read")
    p.add_argument(
        "--sub-operator",
        type=int,
        default=None,
        metavar="ID",
        help="scope the token to this sub-operator (it sees only its resources)",
    )
    p.set_defaults(run=_tokens_create)
    tsub.add_parser("list", help="list API tokens (never the tokens)").set_defaults(
        run=_tokens_list
    )
    p = tsub.add_parser("revoke", help="revoke an API token (by its id); it stops working at once")
    p.add_argument("id", type=int)
    p.set_defaults(run=_tokens_revoke)

    locations = sub.add_parser("locations", help="where chargers stand (issue 19)")
    lsub = locations.add_subparsers(dest="locations_command", required=True)
    p = lsub.add_parser("add", help="create a location from the API's JSON body (file or -)")
    p.add_argument("file")
    p.add_argument("--tariff-group", type=int, help="the tariff group of its chargers")
    p.set_defaults(run=_pricing_add)
    lsub.add_parser("list", help="every location, one JSON line each").set_defaults(
        run=_pricing_list
    )
    tariffs = sub.add_parser("tariffs", help="what charging costs (issue 19)")
    psub = tariffs.add_subparsers(dest="tariffs_command", required=True)
    p = psub.add_parser("add", help="create a tariff from the API's JSON body (file or -)")
    p.add_argument("file")
    p.set_defaults(run=_pricing_add)
    psub.add_parser("list", help="every tariff, one JSON line each").set_defaults(run=_pricing_list)
    groups = sub.add_parser("tariff-groups", help="ordered tariffs with restrictions")
    gsub = groups.add_subparsers(dest="groups_command", required=True)
    gsub.add_parser("list", help="every tariff group, one JSON line each").set_defaults(
        run=_pricing_list
    )

    # Its options belong to loadtest.cli (`evgate simulate --help` lists them): this parser
    # takes every word after "simulate" as it is (no option prefix of its own) and hands it on.
    users = sub.add_parser("users", help="users (drivers), their status and balance")
    usub = users.add_subparsers(dest="users_command", required=True)
    p = usub.add_parser("add", help="add a user")
    p.add_argument("email")
    p.add_argument("--prepaid", action="store_true", help="refused at a balance of zero")
    p.add_argument("--currency", default="EUR", help="ISO 4217 (default EUR)")
    p.set_defaults(run=_users_add)
    usub.add_parser("list", help="list users").set_defaults(run=_users_list)
    for verb, status in (("block", "blocked"), ("unblock", "active")):
        p = usub.add_parser(verb, help=f"set a user {status} (their id tags follow at once)")
        p.add_argument("id", type=int)
        p.set_defaults(run=_users_status, status=status)
    p = usub.add_parser("book", help="book an entry on a user's balance")
    p.add_argument("id", type=int)
    p.add_argument("amount", help="a decimal string, e.g. 10.00 (negative: an adjustment)")
    p.add_argument("--type", choices=("topUp", "voucher", "adjustment"), default="topUp")
    p.set_defaults(run=_users_book)

    p = sub.add_parser(
        "simulate",
        help="simulate a fleet of chargers (source checkout only)",
        add_help=False,
        prefix_chars="\0",
    )
    p.add_argument("simulate_args", nargs="*")
    p.set_defaults(run=_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``evgate`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    overrides: dict[str, Any] = {}
    if getattr(args, "workers", None) is not None:
        overrides["workers"] = args.workers
    try:
        settings = load_settings(args.config, **overrides)
    except ConfigError as exc:
        print(f"evgate: bad setting: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.log_level != "DEBUG":
        # picows logs every connect and disconnect at INFO; evgate's own gateway lines say the
        # same with the charger's id, so picows speaks up only for warnings.
        logging.getLogger("evgate.gateway.picows").setLevel(logging.WARNING)
    import uvloop

    run: Command = args.run
    return uvloop.run(run(settings, args))


if __name__ == "__main__":
    sys.exit(main())
