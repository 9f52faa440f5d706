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


async def test_chargers_import_secrets(database_url: str, tmp_path: Path) -> None:
    """`chargers import-secrets FILE.csv`: all lines or none. An unknown charger (without
    --create) or a bad line fails naming its line and changes nothing; --create registers
    the missing chargers; the stored digests are the secrets' SHA-256."""
    env = {"EVGATE_DATABASE_URL": database_url}
    first = re.search(r"\d{24}", _evgate("chargers", "add", "CP-1", env=env).stdout).group(0)
    keys = {"CP-1": "Kept-Password-0001", "CP-2": "Kept,Password:0002"}
    good = tmp_path / "fleet.csv"
    good.write_text('id,secret\nCP-1,Kept-Password-0001\n\n# moved\nCP-2,"Kept,Password:0002"\n')

    async def digests() -> dict[str, bytes]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT id, secret_digest FROM chargers ORDER BY id")
        finally:
            await conn.close()
        return {r["id"]: bytes(r["secret_digest"]) for r in rows}

    def sha(secret: str) -> bytes:
        return hashlib.sha256(secret.encode()).digest()

    out = _evgate("chargers", "import-secrets", str(good), env=env)
    assert out.returncode == 1 and f"{good}:5: no charger 'CP-2'" in out.stderr, out.stderr
    assert await digests() == {"CP-1": sha(first)}  # nothing changed

    bad = tmp_path / "bad.csv"
    for text, line, says in [
        ("CP-1,Kept-Password-0001\nCP-2,short\n", 2, "16-40 characters"),
        ("CP-1,Kept-Password-0001,extra\n", 1, "expected id,secret"),
        ("bad id,Kept-Password-0001\n", 1, "not a charger id"),
        ("CP-1,Kept-Password-0001\nCP-1,Kept-Password-0002\n", 2, "on line 1 already"),
    ]:
        bad.write_text(text)
        out = _evgate("chargers", "import-secrets", str(bad), "--create", env=env)
        assert out.returncode == 2 and f"{bad}:{line}: " in out.stderr and says in out.stderr
    assert await digests() == {"CP-1": sha(first)}

    out = _evgate("chargers", "import-secrets", str(good), "--create", env=env)
    assert out.returncode == 0, out.stderr
    assert "1 chargers' secrets replaced, 1 chargers created" in out.stdout
    assert await digests() == {c: sha(k) for c, k in keys.items()}
    assert all(k not in out.stdout + out.stderr for k in keys.values())


async def test_locations_and_tariffs_from_json(database_url: str, tmp_path: Path) -> None:
    """`locations add` / `tariffs add` take the API's JSON body (checked the API's way) and
    `list` prints each as a JSON line."""
    env = {"EVGATE_DATABASE_URL": database_url}
    tariff = tmp_path / "tariff.json"
    tariff.write_text('{"name": "Standard", "currency": "EUR", "pricePerKwh": "0.30"}')
    out = _evgate("tariffs", "add", str(tariff), env=env)
    assert out.returncode == 0 and "tariff 1 created" in out.stdout, out.stderr
    tariff.write_text('{"name": "Bad", "currency": "EUX"}')
    bad = _evgate("tariffs", "add", str(tariff), env=env)
    assert bad.returncode == 2 and "ISO 4217" in bad.stderr
    location = tmp_path / "location.json"
    location.write_text(
        '{"name": "Car park", "timezone": "Europe/Amsterdam", "address": {"street": "Main 1",'
        ' "city": "Utrecht", "postalCode": "3511", "country": "NL"}}'
    )
    out = _evgate("locations", "add", str(location), env=env)
    assert out.returncode == 0 and "location 1 created" in out.stdout, out.stderr
    location.write_text(location.read_text().replace("Europe/Amsterdam", "Nowhere/Atlantis"))
    assert _evgate("locations", "add", str(location), env=env).returncode == 2
    listed = _evgate("tariffs", "list", env=env)
    assert listed.returncode == 0 and '"pricePerKwh":"0.30"' in listed.stdout
    assert '"name":"Car park"' in _evgate("locations", "list", env=env).stdout


async def test_users_add_block_book_and_list(database_url: str) -> None:
    """`users add` (refusing a bad email or currency), `users book` (a top-up, and an
    adjustment below zero refused), `users block`, and `users list` showing it all."""
    env = {"EVGATE_DATABASE_URL": database_url}
    out = _evgate("users", "add", "ada@example.com", "--prepaid", env=env)
    assert out.returncode == 0, out.stderr
    user_id = re.search(r"user (\d+) created", out.stdout).group(1)
    assert _evgate("users", "add", "ADA@example.com", env=env).returncode == 1
    assert _evgate("users", "add", "not-an-email", env=env).returncode == 2
    assert _evgate("users", "add", "b@example.com", "--currency", "eur", env=env).returncode == 2
    booked = _evgate("users", "book", user_id, "10.00", env=env)
    assert booked.returncode == 0 and "balance 10.00 EUR" in booked.stdout, booked.stderr
    below = _evgate("users", "book", user_id, "-10.01", "--type", "adjustment", env=env)
    assert below.returncode == 1 and "below zero" in below.stderr
    assert _evgate("users", "book", user_id, "1.001", env=env).returncode == 1
    assert _evgate("users", "block", user_id, env=env).returncode == 0
    assert _evgate("users", "block", "999", env=env).returncode == 1
    listed = _evgate("users", "list", env=env)
    (line,) = [x for x in listed.stdout.splitlines() if "ada@example.com" in x]
    assert line.split()[:4] == [user_id, "blocked", "10.00", "EUR"]
