"""The ``evgate`` command: serve, migrate, and the operator's charger, circuit and token chores.

Commands that touch the database use ``EVGATE_DATABASE_URL`` or, without it, the embedded
PostgreSQL in the data folder (adopting the one a running ``evgate serve`` started).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
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

    try:
        if settings.workers > 1:
            from evgate.workers import supervise

            return await supervise(settings, args.config)
        from evgate.app import serve

        await serve(settings)
    except EmbeddedPostgresError as exc:  # its message says what to do; no traceback
        print(f"evgate: {exc}", file=sys.stderr)
        return 1
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
    from evgate.storage.tokens import TokenStore

    async with _database(settings) as db:
        try:
            token = await create_token(TokenStore(db), args.name, args.scope)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
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
    print(f"{'id':>6}  {'scope':<5}  {'created':<25}  name")
    for t in tokens:
        print(
            f"{t.id:>6}  {t.scope:<5}  {t.created_at.isoformat(timespec='seconds'):<25}  {t.name}"
        )
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
    p.set_defaults(run=_tokens_create)
    tsub.add_parser("list", help="list API tokens (never the tokens)").set_defaults(
        run=_tokens_list
    )
    p = tsub.add_parser("revoke", help="revoke an API token (by its id); it stops working at once")
    p.add_argument("id", type=int)
    p.set_defaults(run=_tokens_revoke)

    # Its options belong to loadtest.cli (`evgate simulate --help` lists them): this parser
    # takes every word after "simulate" as it is (no option prefix of its own) and hands it on.
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
