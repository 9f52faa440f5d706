"""The API against its own OpenAPI document (issue 15), fuzzed by schemathesis as a new user
would run it: every operation of the live document, valid and invalid data, with an admin and
with a read token. No answer is a 5xx, and each one's status code, content type, headers and
body are those the document gives. Bounded by time, not by the number of examples: each run has
its seconds (schemathesis shares them among the operations and phases, and stops at the end),
and a guard stops a run that overruns them. The seed is fixed so that a failure can be replayed
(``EVGATE_FUZZ_SEED`` tries another); the test holds for any seed: the read token the second
run uses is created only after the admin run, whose ``DELETE /api/v1/tokens/{id}`` reaches
every small id (a token made before it was deleted with each seed tried, and the read run
then met only 401s), and it must still be valid after the read run.

Not checked: that every schema-valid request is accepted (``positive_data_acceptance``).
Rules that span fields (a Kafka subscription needs ``kafka``, ``from`` needs a time zone, an
event name must be in the catalog) are answered 422, as documented, without being in the
schemas."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.engine import Status, from_schema
from schemathesis.engine import events as st_events

from evgate.credentials import digest
from evgate.storage.tokens import TokenStore
from support import BOOTSTRAP_TOKEN, running_evgate

# Everything schemathesis checks on an answer, and that invalid data is refused.
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "ignored_auth",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
]


# Seconds of fuzzing per run (~30 s in all), and how long past them a run may take before the
# guard stops it (the request in flight, the engine's own wind-down).
ADMIN_SECONDS = 20
READ_SECONDS = 10
GRACE = 15.0
SEED = int(os.environ.get("EVGATE_FUZZ_SEED", "15"))
# Failures schemathesis reports for answers that are right by design (the substring each has).
# A user's subscription is made by PUT: right after ``POST /users`` it does not exist (GET
# answers null), so a PATCH of it is 404, which ``ensure_resource_availability`` takes for the
# user missing. A run reaches that pair or not by how far it gets in its seconds (a loaded
# machine's run did).
BY_DESIGN = ["Not available with: `PATCH /api/v1/users/{user_id}/subscription`"]
_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@dataclass
class _Run:
    """What one schemathesis run did."""

    requests: int = 0
    operations: set[str] = field(default_factory=set)  # "GET /api/v1/chargers", ...
    failures: list[str] = field(default_factory=list)
    stopped_by_guard: bool = False
    seconds: float = 0.0


def _fuzz(base_url: str, token: str, seconds: int) -> _Run:
    """Run schemathesis's engine against ``base_url`` for ``seconds`` (blocking: call it in a
    thread): the requests it made, the operations it reached, and the failures found, one
    line each with its request."""
    config = schemathesis.Config.from_dict(
        {
            "headers": {"Authorization": f"Bearer {token}"},
            "seed": SEED,
            "workers": 1,
            "max-time": seconds,
            "request-timeout": 10,
            "generation": {"max-examples": 40, "mode": "all", "database": "none"},
            "phases": {
                "examples": {"enabled": False},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": True, "max-steps": 6},
            },
            "checks": {
                "enabled": False,
                **{name: {"enabled": True} for name in CHECKS},
            },
        }
    )
    schema = schemathesis.openapi.from_url(f"{base_url}/api/openapi.json", config=config)
    run = _Run()
    started = time.monotonic()
    guard = time.monotonic() + seconds + GRACE
    stream = from_schema(schema).execute()
    for event in stream:
        if not run.stopped_by_guard and time.monotonic() > guard:
            run.stopped_by_guard = True
            stream.stop()  # the next event is the last
        if isinstance(event, st_events.ScenarioFinished | st_events.FuzzScenarioFinished):
            run.requests += len(event.recorder.interactions)
            if isinstance(event, st_events.ScenarioFinished) and event.recorder.interactions:
                run.operations.add(event.recorder.label)
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        failure = check.failure_info.failure
                        run.failures.append(
                            f"{failure.code} {failure.title} ({check.name}): "
                            f"{_request_of(event.recorder, case_id)}: {failure.message[:300]}"
                        )
        elif isinstance(event, st_events.NonFatalError | st_events.FatalError):
            run.failures.append(f"schemathesis error: {event}")
    run.failures = sorted({f for f in run.failures if not any(known in f for known in BY_DESIGN)})
    run.seconds = time.monotonic() - started
    return run


def _request_of(recorder: Any, case_id: str) -> str:
    interaction = recorder.interactions.get(case_id)
    if interaction is None:
        return "?"
    request = interaction.request
    status = interaction.response.status_code if interaction.response is not None else "-"
    body = (request.body or b"")[:200]
    return f"{request.method} {request.uri} {body!r} -> {status}"


@pytest.mark.timeout(ADMIN_SECONDS + READ_SECONDS + 2 * GRACE + 120)
async def test_every_answer_is_documented_and_none_is_a_5xx(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """schemathesis over the live document, with an admin and then a read token, each run
    reaching every operation and the read token valid to the end: no failed check, and no
    ERROR (no traceback) in evgate's log."""
    async with running_evgate(database_url, tmp_path) as app:
        assert app.db is not None
        base = f"http://127.0.0.1:{app.api_port}"
        # Something for the operations on one resource to find.
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"}
        ) as api:
            assert (await api.post("/api/v1/chargers", json={"id": "CP-1"})).status_code == 201
            assert (await api.post("/api/v1/id-tags", json={"idTag": "TAG-1"})).status_code == 201
            r = await api.post("/api/v1/installations", json={"name": "site"})
            assert r.status_code == 201
            document = (await api.get("/api/openapi.json")).json()
        operations = {
            f"{method.upper()} {path}"
            for path, item in document["paths"].items()
            for method in item
            if method in _METHODS
        }

        with caplog.at_level(logging.WARNING):
            admin = await asyncio.to_thread(_fuzz, base, BOOTSTRAP_TOKEN, ADMIN_SECONDS)
            # Only now: the admin run may delete any token it can list.
            read_token = "read-" + secrets.token_hex(16)
            await TokenStore(app.db).create("fuzz-read", "read", digest(read_token))
            read = await asyncio.to_thread(_fuzz, base, read_token, READ_SECONDS)
        for name, run in (("admin", admin), ("read", read)):
            print(f"schemathesis {name}, seed {SEED}: {run.requests} requests, {run.seconds:.0f} s")
        for run in (admin, read):
            assert not run.stopped_by_guard
            assert not operations - run.operations, operations - run.operations
        # The read run was a read token's (not an unknown token's 401s) from start to end.
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {read_token}"}
        ) as api:
            assert (await api.get("/api/v1/chargers")).status_code == 200
        assert not admin.failures + read.failures, "\n".join(admin.failures + read.failures)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, [r.getMessage() for r in errors]
