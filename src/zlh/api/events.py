"""In-process pub/sub of container updates, feeding the SSE streams.

Subscribers get a bounded queue; a subscriber that falls behind loses the oldest updates
(the newest one always describes the whole state, so nothing needed is lost).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pydantic import BaseModel

from zlh.api.bodies import ContainerEvent

__all__ = ["EventBus"]

QUEUE_SIZE = 64


class EventBus:
    def __init__(self) -> None:
        self._subscribers: dict[int, set[asyncio.Queue[ContainerEvent]]] = {}

    @asynccontextmanager
    async def subscribe(self, vmid: int) -> AsyncIterator[asyncio.Queue[ContainerEvent]]:
        queue: asyncio.Queue[ContainerEvent] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers.setdefault(vmid, set()).add(queue)
        try:
            yield queue
        finally:
            queues = self._subscribers.get(vmid)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._subscribers[vmid]

    def publish(self, event: ContainerEvent) -> None:
        """Deliver to every subscriber of ``event.vmid``. Call from the event loop's thread."""
        for queue in self._subscribers.get(event.vmid, ()):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    def subscribers(self, vmid: int) -> int:
        return len(self._subscribers.get(vmid, ()))


def sse(event: str, data: BaseModel) -> bytes:
    """One Server-Sent Events frame."""
    return f"event: {event}\ndata: {data.model_dump_json(by_alias=True)}\n\n".encode()
