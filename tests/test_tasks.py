"""tasks.wait_event: woken, timed out, and — the reason it exists — cancelled in the same loop
iteration as it is woken, which ``asyncio.wait_for`` loses on Python 3.11."""

from __future__ import annotations

import asyncio

from evgate.tasks import wait_event


async def test_wait_event_tells_woken_from_timed_out() -> None:
    """Set before the timeout: True at once; never set: False after the timeout."""
    event = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_event(event, 5) is True
    assert await wait_event(asyncio.Event(), 0.01) is False


async def test_a_loop_woken_as_it_is_cancelled_ends() -> None:
    """The owner wakes a waiting loop and cancels it in one step (a dispatcher's wake() just
    before its stop()): the loop ends, every time."""

    async def loop(event: asyncio.Event) -> None:
        while True:
            event.clear()
            await wait_event(event, 10)

    for _ in range(20):
        event = asyncio.Event()
        task = asyncio.create_task(loop(event))
        await asyncio.sleep(0)  # one loop turn
        event.set()
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2)
        assert done == {task} and task.cancelled()
