"""The evgate command: charger and token chores, and `serve` with its embedded PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx

from support import free_port, serve_env, start_serve


def _evgate(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evgate.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def test_chargers_add_prints_secret_once(database_url: str) -> None:
    """`chargers add` prints the secret; only its digest is stored; a second add fails."""
    env = {"EVGATE_DATABASE_URL": database_url}
    out = _evgate("chargers", "add", "CP-9", "--description", "from cli", env=env)
    assert out.returncode == 0, out.stderr
    secret = re.search(r"\b(\d{24})\b", out.stdout).group(1)
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval("SELECT secret_digest FROM chargers WHERE id = 'CP-9'")
    finally:
        await conn.close()
    assert bytes(stored) == hashlib.sha256(secret.encode()).digest()
    again = _evgate("chargers", "add", "CP-9", env=env)
    assert again.returncode == 1 and "exists" in again.stderr
    bad = _evgate("chargers", "add", "bad id", env=env)
    assert bad.returncode == 2


async def test_circuits_add_list_delete(database_url: str) -> None:
    """`circuits add` creates a circuit (and circuit.changed), `list` shows it under its
    parent, `delete` refuses one with sub-circuits and deletes an empty one."""
    env = {"EVGATE_DATABASE_URL": database_url}
    out = _evgate("circuits", "add", "Feeder", "--max-current", "63", env=env)
    assert out.returncode == 0, out.stderr
    feeder = re.search(r"circuit (\d+) created", out.stdout).group(1)
    out = _evgate("circuits", "add", "Row A", "--max-current", "32", "--parent", feeder, env=env)
    row = re.search(r"circuit (\d+) created", out.stdout).group(1)
    listed = _evgate("circuits", "list", env=env).stdout
    assert re.search(rf"{row}\s+{feeder}\s+32\s+3\s+Row A", listed), listed
    refused = _evgate("circuits", "delete", feeder, env=env)
    assert refused.returncode == 1 and "sub-circuits" in refused.stderr
    assert _evgate("circuits", "delete", row, env=env).returncode == 0
    conn = await asyncpg.connect(database_url)
    try:
        actions = await conn.fetch(
            "SELECT convert_from(payload, 'UTF8')::jsonb->>'action' AS a FROM outbox"
            " WHERE event = 'circuit.changed' ORDER BY id"
        )
    finally:
        await conn.close()
    assert [r["a"] for r in actions] == ["created", "created", "deleted"]


async def test_rotate_secret_and_tokens_create(database_url: str) -> None:
    """`chargers rotate-secret` prints a new secret; `tokens create` prints a token once."""
    env = {"EVGATE_DATABASE_URL": database_url}
    first = re.search(r"\d{24}", _evgate("chargers", "add", "CP-1", env=env).stdout).group(0)
    out = _evgate("chargers", "rotate-secret", "CP-1", env=env)
    second = re.search(r"\d{24}", out.stdout).group(0)
    assert out.returncode == 0 and second != first
    assert _evgate("chargers", "rotate-secret", "nope", env=env).returncode == 1
    tok = _evgate("tokens", "create", "--name", "ci", "--scope", "admin", env=env)
    token = tok.stdout.strip()
    assert tok.returncode == 0 and token.startswith("evg_")
    reserved = _evgate("tokens", "create", "--name", "bootstrap", "--scope", "admin", env=env)
    assert reserved.returncode == 2 and "reserved" in reserved.stderr
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT name, scope, digest FROM api_tokens")
    finally:
        await conn.close()
    assert (row["name"], row["scope"]) == ("ci", "admin")
    assert bytes(row["digest"]) == hashlib.sha256(token.encode()).digest()


async def test_tokens_list_and_revoke(database_url: str) -> None:
    """`tokens list` shows id, scope and name (never the token); `tokens revoke ID` deletes the
    token (its digest is gone), and an unknown id is exit status 1."""
    env = {"EVGATE_DATABASE_URL": database_url}
    token = _evgate("tokens", "create", "--name", "ci-deploy", "--scope", "admin", env=env)
    assert token.returncode == 0, token.stderr
    listed = _evgate("tokens", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    (line,) = [x for x in listed.stdout.splitlines() if "ci-deploy" in x]
    token_id, scope = line.split()[:2]
    assert scope == "admin" and token.stdout.strip() not in listed.stdout
    revoked = _evgate("tokens", "revoke", token_id, env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert "ci-deploy" not in _evgate("tokens", "list", env=env).stdout
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM api_tokens") == 0
    finally:
        await conn.close()
    again = _evgate("tokens", "revoke", token_id, env=env)
    assert again.returncode == 1 and "no API token" in again.stderr


def test_serve_on_embedded_postgres_and_stop_cleanly(tmp_path: Path) -> None:
    """`evgate serve` with no database starts one in the data folder, logs one line saying
    where everything is, serves the API, and on SIGTERM stops with the PostgreSQL too."""
    api_port, ws_port = free_port(), free_port()
    token = "serve-test-token-0123456789"
    env = serve_env(tmp_path / "var", api_port, ws_port, bootstrap_token=token)
    proc, out = start_serve(env)
    try:
        out.wait_count("ready", 1)
        [ready] = [line for line in out.lines if "ready" in line]
        assert f"ws://127.0.0.1:{ws_port}/cp/" in ready and f":{api_port}" in ready
        assert "embedded PostgreSQL" in ready
        r = httpx.post(
            f"http://127.0.0.1:{api_port}/api/v1/chargers",
            json={"id": "CP-1"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 201 and len(r.json()["secret"]) == 24
        assert (tmp_path / "var" / "postgres" / "postmaster.pid").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not (tmp_path / "var" / "postgres" / "postmaster.pid").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
