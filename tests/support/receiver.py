"""The one fake HTTP server of the tests: a real HTTP/1.1 receiver on 127.0.0.1 that records
what it is sent and answers as the test tells it (status, headers, body, a delay, or going
down). The notification tests' webhook receiver; the authorization tests' provider runs on it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Received", "Receiver", "Reply"]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Reply:
    status: int = 202
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a stalled receiver: longer than the timeout)
    body: bytes = b"ok"


class Receiver:
    """``await start()``; ``url``; ``received`` (answered 2xx), ``requests`` (all);
    ``reply`` decides each answer; ``await stop()`` takes it down (connections refused) and
    ``await start()`` brings it back on the same port."""

    def __init__(self, reply: Callable[[Received], Reply] | None = None) -> None:
        self.reply = reply or (lambda _: Reply())
        self.requests: list[Received] = []
        self.received: list[Received] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._arrived = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def wait_for(self, count: int, within: float = 30.0) -> list[Received]:
        """Wait until ``count`` requests were answered 2xx."""
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)
        return self.received

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = h.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                target = line.split()[1].decode() if len(line.split()) > 1 else "/"
                got = Received(target, headers, body, time.monotonic())
                self.requests.append(got)
                reply = self.reply(got)
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
                head = (
                    f"HTTP/1.1 {reply.status} X\r\ncontent-length: {len(reply.body)}\r\n{extra}\r\n"
                )
                writer.write(head.encode() + reply.body)
                await writer.drain()
                if 200 <= reply.status < 300:
                    async with self._arrived:
                        self.received.append(got)
                        self._arrived.notify_all()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._handlers.discard(task)
            with contextlib.suppress(Exception):
                writer.close()
