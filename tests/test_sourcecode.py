"""Each I/O library has one home (STYLE.md); protocol/ is pure; each room imports only the
rooms its row of ROOM_IMPORTS names. Checked on the source, as asyncpg's test__sourcecode.py
runs linters as tests."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "evgate"

# library → the rooms (folders or modules under evgate/) allowed to import it
HOMES = {
    "picows": {"gateway"},
    "asyncpg": {"storage"},
    "aiokafka": {"events"},
    "httpx": {"auth"},
    "aiohttp": {"events"},
    "aiohappyeyeballs": {"events"},
    "uvicorn": {"api"},
    "litestar": {"api"},
}
PURE = {"protocol", "loadmgmt"}
IO_MODULES = {"asyncio", "socket", "ssl", "selectors", "uvloop", "logging", *HOMES}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_io_libraries_stay_in_their_rooms(path: Path) -> None:
    """picows only in gateway/, asyncpg only in storage/, and so on; protocol/ does no I/O."""
    room = path.relative_to(PACKAGE).parts[0]
    imports = _imports(path)
    for library, homes in HOMES.items():
        if library in imports:
            assert room in homes, f"{library} imported in {room}/ (its home: {sorted(homes)})"
    if room in PURE:
        assert not imports & IO_MODULES, f"{room}/ must be pure: imports {imports & IO_MODULES}"


# room → what it may import of evgate (docs/ARCHITECTURE.md, "Which room imports which").
# A room is a folder or a module under evgate/; "x" allows all of room x, "x.y" only its module
# x.y (an interface: the rest of x stays out of reach). Every import counts: module level,
# inside a function (a lazy import is still an arrow) and under TYPE_CHECKING (the type's
# meaning is a dependency all the same; none crosses a room today).
ROOM_IMPORTS: dict[str, set[str]] = {
    # The leaves: pure or process-wide helpers every room may lean on.
    "protocol": set(),
    # The load-management decisions (allocator, change plan) are pure, like protocol: the
    # engine that runs them on chargers is handlers/smart_charging.py.
    "loadmgmt": set(),
    "config": set(),
    "tasks": set(),
    # The process's garbage collector settings (serve and deliver, before they start).
    "heap": set(),
    "native": {"_native"},
    "metrics": {"tasks"},
    "outages": {"metrics"},
    "credentials": {"native"},
    "limits": set(),
    # Which hosts are private (a tenant's targets are refused there): api and events ask it.
    "addresses": set(),
    # tariffs and prices: pure decimal arithmetic, the rooms that store, build, price and
    # show them import it.
    "pricing": set(),
    # storage stores what events' pure builders build (outbox rows in the change's own
    # transaction); it never imports the dispatcher or the sinks, which read storage.
    "storage": {"events.builders", "metrics", "native", "outages", "pricing", "tasks"},
    "events": {
        "addresses",
        "metrics",
        "native",
        "outages",
        "pricing",
        "protocol",
        "storage",
        "tasks",
    },
    # auth calls chargers (the offline-config push) through the gateway's interface only.
    "auth": {
        "config",
        "credentials",
        "gateway.interface",
        "metrics",
        "protocol",
        "storage",
        "tasks",
    },
    # handlers ask an authorizer (auth's interface) and call chargers through the gateway's;
    # the smart-charging engine (handlers/smart_charging.py) runs loadmgmt's pure decisions.
    "handlers": {
        "auth.authorizer",
        "credentials",
        "events",
        "gateway.interface",
        "loadmgmt",
        "metrics",
        "pricing",
        "protocol",
        "storage",
        "tasks",
    },
    # The gateway knows the handlers' contract (a routing table's shape), never a handler.
    "gateway": {
        "config",
        "credentials",
        "handlers.contract",
        "limits",
        "metrics",
        "outages",
        "protocol",
        "storage",
        "tasks",
    },
    "api": {
        "addresses",
        "auth",
        "credentials",
        "events",
        "gateway.interface",
        "limits",
        "metrics",
        "pricing",
        "protocol",
        "storage",
        "tasks",
    },
    # The wiring: only these three see every room.
    "app": {
        "api",
        "auth",
        "config",
        "credentials",
        "events",
        "gateway",
        "handlers",
        "heap",
        "limits",
        "metrics",
        "storage",
        "tasks",
    },
    "cli": {"app", "auth", "config", "credentials", "pricing", "storage", "workers"},
    "workers": {"config", "storage", "tasks"},
}


def _evgate_imports(path: Path) -> set[str]:
    """The evgate modules ``path`` imports (``"storage.writer"`` for ``evgate.storage.writer``;
    ``from evgate import x`` names the module ``x``), wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "evgate":
                names = [f"evgate.{a.name}" for a in node.names]
        else:
            continue
        found |= {n.removeprefix("evgate.") for n in names if n.startswith("evgate.")}
    return found


def room_of(path: Path) -> str:
    """The room of a source file: its folder under evgate/, or its own module name."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def forbidden_imports(room: str, imports: set[str]) -> set[str]:
    """The modules of ``imports`` that ``room``'s row of ROOM_IMPORTS does not allow (its own
    modules are always allowed)."""
    allowed = ROOM_IMPORTS[room] | {room}
    return {
        module
        for module in imports
        if not any(module == a or module.startswith(a + ".") for a in allowed)
    }


def test_every_room_has_a_row() -> None:
    """A new room says what it may import before it imports anything."""
    rooms = {room_of(p) for p in SOURCES} - {"__init__"}
    assert rooms - set(ROOM_IMPORTS) == set()


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_rooms_import_only_what_their_row_allows(path: Path) -> None:
    """An import of another room that ROOM_IMPORTS does not list is a new arrow: either it
    points the wrong way (move the code) or the table and ARCHITECTURE.md change with it."""
    room = room_of(path)
    if room == "__init__":
        return
    assert forbidden_imports(room, _evgate_imports(path)) == set(), (
        f"{room}/ may import only {sorted(ROOM_IMPORTS[room])}"
    )


def test_the_table_points_one_way() -> None:
    """No two rooms may import all of each other: where two rooms meet both ways, one side
    imports only the other's interface module."""
    for room, allowed in ROOM_IMPORTS.items():
        for other in allowed & set(ROOM_IMPORTS):
            assert room not in ROOM_IMPORTS[other], f"{room} and {other} import each other"


def _waits_in_wait_for(path: Path) -> list[int]:
    """Lines where ``asyncio.wait_for`` wraps a ``.wait()`` call."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "wait_for"
            and node.args
            and isinstance(node.args[0], ast.Call)
            and isinstance(node.args[0].func, ast.Attribute)
            and node.args[0].func.attr == "wait"
        ):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_wait_for_around_a_wait(path: Path) -> None:
    """``asyncio.wait_for(x.wait(), t)`` loses a cancellation that arrives as the wait ends
    (Python 3.11), which hung a dispatcher's stop: use ``tasks.wait_event`` or
    ``asyncio.timeout``."""
    assert _waits_in_wait_for(path) == []


# Names a word was taken back from (docs/ARCHITECTURE.md, "Words"): "session" is AMPECO's and the
# external provider's word only, "lane" the dispatcher's only.
RETIRED_NAMES = {
    "SessionStart": "AuthorizationQuestion (an authorization question, not a session)",
    "SessionsApi": "ChargingApi",
    "session_started": "transaction_started",
    "session_stopped": "transaction_stopped",
    "session_meter_values": "transaction_meter_values",
    "writer_lanes": "writer_connections (the writer's committers)",
}


def _names(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, ast.arg):
            found.add(node.arg)
        elif isinstance(node, ast.alias):
            found.add(node.asname or node.name.split(".")[-1])
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_one_word_one_meaning(path: Path) -> None:
    """No retired name comes back, and the writer's room never says "lane" (a committer)."""
    retired = {n: RETIRED_NAMES[n] for n in _names(path) & RETIRED_NAMES.keys()}
    assert retired == {}, f"use the new names: {retired}"
    if path.name == "writer.py":
        assert "lane" not in path.read_text().lower()


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_annotations_written_by_hand(path: Path) -> None:
    """A handler's request type is its real annotation (``handlers.contract.check_routes``
    reads it at start-up); one set by assigning ``__annotations__`` proves nothing."""
    written = [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Attribute) and t.attr == "__annotations__" for t in node.targets)
    ]
    assert written == []


# Where a task may inherit its creator's context (its sub-operator, storage.db.acting_for):
# only where it does that request's own work.
INHERITING_TASKS = {"api/async_commands.py"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_tasks_start_in_a_context_of_their_own(path: Path) -> None:
    """A component's task is a ``tasks.service_task``: one started by ``create_task`` inherits
    the context of whatever started it, and a sub-operator's request would make it query as
    that tenant for everyone (a TaskGroup's children inherit their service task's, and may)."""
    relative = str(path.relative_to(PACKAGE))
    if relative in INHERITING_TASKS or relative == "tasks.py":
        return
    started = [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "create_task"
        and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "group")
    ]
    assert started == [], "use evgate.tasks.service_task"


# Session state on a connection of the operator's pool: released without asyncpg's reset query
# (storage/db.py, _keep_session), it would outlive its query and reach the next one.
_SESSION_STATE = (
    re.compile(r"set_config\s*\([^()]*,\s*false\s*\)", re.IGNORECASE),  # a setting for the session
    re.compile(r"\bpg_(try_)?advisory_lock(_shared)?\s*\(", re.IGNORECASE),  # held past COMMIT
    # A statement of its own (upper case, as the codebase writes SQL: a docstring may start
    # "Set ..." or "LISTEN on ...").
    re.compile(r"^\s*SET\s+(SESSION\s+)?(?!LOCAL\b|TRANSACTION\b)[\w.\"]+\s*(=|TO\b)"),
    re.compile(r"^\s*(RESET|DISCARD|UNLISTEN|LISTEN)\s+[\w.\"*]+\s*;?\s*$"),
    re.compile(r"\bWITH\s+HOLD\b", re.IGNORECASE),  # a cursor that outlives its transaction
)
# The tenant pool's setup sets its role and tenant per session, on every acquire, and keeps
# asyncpg's reset.
SESSION_STATE_ALLOWED = {"storage/db.py": 1}


def _sql_texts(path: Path) -> list[str]:
    """Every string in the module as the parser joined it (an f-string's parts with ``?`` for
    what is interpolated)."""
    texts: list[str] = []
    nodes = list(ast.walk(ast.parse(path.read_text())))
    parts = {id(v) for node in nodes if isinstance(node, ast.JoinedStr) for v in node.values}
    for node in nodes:
        if id(node) in parts:
            continue  # a piece of an f-string: checked as the whole
        if isinstance(node, ast.JoinedStr):
            texts.append(
                "".join(
                    v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "?"
                    for v in node.values
                )
            )
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            texts.append(node.value)
    return texts


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_sql_leaves_state_on_its_session(path: Path) -> None:
    """No query sets a setting for the session, takes a session's advisory lock, LISTENs or
    keeps a cursor past its transaction: the operator pool gives its connections back without
    asyncpg's ``RESET ALL`` and the rest (a round trip per query saved)."""
    found = [
        text[:80]
        for text in _sql_texts(path)
        if any(pattern.search(text) for pattern in _SESSION_STATE)
    ]
    assert len(found) == SESSION_STATE_ALLOWED.get(str(path.relative_to(PACKAGE)), 0), found
