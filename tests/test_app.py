"""app.py's wiring of notification delivery: an app run in-process, and ``evgate deliver``."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest

from evgate.app import Evgate
from support import Receiver, free_port, running_evgate, until

pytestmark = pytest.mark.timeout(120)


async def test_an_app_not_started_by_serve_delivers_only_inline(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The default, a delivery process, is what ``evgate serve`` starts: an app run by other
    means with it starts no dispatcher, and says so (one WARNING naming the setting); inline,
    it delivers on its own loop."""
    with caplog.at_level(logging.WARNING, logger="evgate"):
        async with running_evgate(database_url, tmp_path, notification_delivery="process") as app:
            assert app.dispatcher is None
    [warning] = [r for r in caplog.records if "EVGATE_NOTIFICATION_DELIVERY" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    caplog.clear()
    async with running_evgate(database_url, tmp_path / "inline") as app:
        assert app.dispatcher is not None
    assert not [r for r in caplog.records if "EVGATE_NOTIFICATION_DELIVERY" in r.getMessage()]


@pytest.mark.evgate_settings(notification_delivery="off")
async def test_the_delivery_process_delivers_without_its_metrics_port(
    database_url: str, evgate: Evgate, api: httpx.AsyncClient, receiver: Receiver, tmp_path: Path
) -> None:
    """``evgate deliver`` whose metrics port another program holds (taken after the
    supervisor's check: a restart's race) logs one ERROR and delivers all the same; SIGTERM
    stops it, status 0."""
    r = await api.post(
        "/public-api/notifications/v2.0",
        json={"via": "webhook", "notifications": ["chargePoint.changed"],
              "webhook": {"callbackUrl": receiver.url}},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    port = free_port()
    env = {
        **os.environ,
        "EVGATE_DATABASE_URL": database_url,
        "EVGATE_NOTIFICATION_DELIVERY_METRICS_PORT": str(port),
        "EVGATE_NOTIFICATION_DELIVERY_NICE": "0",
    }
    log = tmp_path / "deliver.log"
    with socket.create_server(("127.0.0.1", port)), log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "evgate.cli", "deliver", env=env, stdout=out, stderr=out
        )
        try:
            await until(lambda: "delivering notifications" in log.read_text(), within=60)
            assert (await api.post("/api/v1/chargers", json={"id": "CP-D"})).status_code == 201

            def created() -> bool:
                bodies = [json.loads(got.body) for got in receiver.received]
                return any(b.get("networkId") == "CP-D" for b in bodies)

            await until(created, within=60)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 60) == 0, log.read_text()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    lines = log.read_text().splitlines()
    [error] = [line for line in lines if "metrics port" in line]
    assert " ERROR " in error and f"127.0.0.1:{port}" in error and "without metrics" in error
    assert any("delivering notifications; no metrics" in line for line in lines), lines
