"""Helpers shared by tests in several folders (import as ``from support import ...``; the
``conftest`` module name is taken by each folder's own conftest.py)."""

from __future__ import annotations

import secrets
from pathlib import Path

from evgate.config import Settings, load_settings

__all__ = ["BOOTSTRAP_TOKEN", "make_settings"]

BOOTSTRAP_TOKEN = "test-bootstrap-token-" + secrets.token_hex(8)


def make_settings(database_url: str, tmp_path: Path, **overrides: object) -> Settings:
    """Settings for an in-process evgate on free loopback ports."""
    base: dict[str, object] = {
        "database_url": database_url,
        "data_dir": str(tmp_path),
        "ws_host": "127.0.0.1",
        "ws_port": 0,
        "api_port": 0,
        "bootstrap_token": BOOTSTRAP_TOKEN,
    }
    base.update(overrides)
    return load_settings(environ={}, **base)
