"""Each I/O library has one home (STYLE.md); protocol/ is pure. Checked on the source, as
asyncpg's test__sourcecode.py runs linters as tests."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "evgate"

# library → the rooms (folders or modules under evgate/) allowed to import it
HOMES = {
    "picows": {"gateway"},
    "asyncpg": {"storage"},
    "aiokafka": {"events"},
    "httpx": {"events", "auth"},
    "uvicorn": {"api"},
    "litestar": {"api"},
}
PURE = {"protocol"}
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
        assert not imports & IO_MODULES, f"protocol/ must be pure: imports {imports & IO_MODULES}"


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
