"""Reading what reached the test broker: the one consumer loop of the Kafka tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer

__all__ = ["consume"]


async def consume(
    config: dict[str, Any], topic: str, enough: Callable[[list[Any]], bool], within: float
) -> list[Any]:
    """The records of ``topic`` from its start, read until ``enough(records)`` holds or
    ``within`` seconds have passed (the caller asserts on what it got)."""
    consumer = AIOKafkaConsumer(
        topic, **config, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    got: list[Any] = []
    try:
        deadline = asyncio.get_running_loop().time() + within
        while not enough(got) and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got.extend(records)
    finally:
        await consumer.stop()
    return got
