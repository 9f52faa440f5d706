"""The API against its own OpenAPI document (issue 15), fuzzed by schemathesis as a new user
would run it: every operation of the live document, valid and invalid data, with an admin and
with a read token. No answer is a 5xx, and each one's status code, content type, headers and
body are those the document gives. Bounded: a fixed number of examples per operation, a fixed
seed, and a time limit.

Not checked: that every schema-valid request is accepted (``positive_data_acceptance``).
Rules that span fields (a Kafka subscription needs ``kafka``, ``from`` needs a time zone, an
event name must be in the catalog) are answered 422, as documented, without being in the
schemas."""

from __future__ import annotations

import asyncio
import logging
import secrets
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


def _fuzz(base_url: str, token: str, max_examples: int) -> tuple[int, list[str]]:
    """Run schemathesis's engine against ``base_url`` (blocking: call it in a thread): the
    number of requests it made, and the failures found, one line each with its request."""
    config = schemathesis.Config.from_dict(
        {
            "headers": {"Authorization": f"Bearer {token}"},
            "seed": 15,
            "workers": 1,
            "request-timeout": 30,
            "generation": {"max-examples": max_examples, "mode": "all", "database": "none"},
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
    found: list[str] = []
    requests = 0
    for event in from_schema(schema).execute():
        if isinstance(event, st_events.ScenarioFinished | st_events.FuzzScenarioFinished):
            requests += len(event.recorder.interactions)
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        failure = check.failure_info.failure
                        found.append(
                            f"{failure.code} {failure.title} ({check.name}): "
                            f"{_request_of(event.recorder, case_id)}: {failure.message[:300]}"
                        )
        elif isinstance(event, st_events.NonFatalError | st_events.FatalError):
            found.append(f"schemathesis error: {event}")
    return requests, sorted(set(found))


def _request_of(recorder: Any, case_id: str) -> str:
    interaction = recorder.interactions.get(case_id)
    if interaction is None:
        return "?"
    request = interaction.request
    status = interaction.response.status_code if interaction.response is not None else "-"
    body = (request.body or b"")[:200]
    return f"{request.method} {request.uri} {body!r} -> {status}"


@pytest.mark.timeout(900)
async def test_every_answer_is_documented_and_none_is_a_5xx(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """schemathesis over the live document, with an admin and then a read token: no failed
    check, and no ERROR (no traceback) in evgate's log."""
    async with running_evgate(database_url, tmp_path) as app:
        assert app.db is not None
        read_token = "read-" + secrets.token_hex(16)
        await TokenStore(app.db).create("fuzz-read", "read", digest(read_token))
        base = f"http://127.0.0.1:{app.api_port}"
        # Something for the operations on one resource to find.
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {BOOTSTRAP_TOKEN}"}
        ) as api:
            assert (await api.post("/api/v1/chargers", json={"id": "CP-1"})).status_code == 201
            assert (await api.post("/api/v1/id-tags", json={"idTag": "TAG-1"})).status_code == 201
            r = await api.post("/api/v1/installations", json={"name": "site"})
            assert r.status_code == 201

        with caplog.at_level(logging.WARNING):
            admin_requests, failures = await asyncio.to_thread(_fuzz, base, BOOTSTRAP_TOKEN, 40)
            read_requests, read_failures = await asyncio.to_thread(_fuzz, base, read_token, 10)
        print(f"schemathesis: {admin_requests} requests (admin), {read_requests} (read)")
        assert admin_requests > 1000 and read_requests > 300  # the whole document was run
        assert not failures + read_failures, "\n".join(failures + read_failures)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, [r.getMessage() for r in errors]
