"""The background work of each container, one piece at a time.

Provisioning, stop, start and restart each run as a task of their container. A task spawned
while another of the same container runs waits for it: a start asked for while the stop
before it is still finishing runs after it, never beside it. Deleting a container cancels
whatever runs for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["ContainerTasks"]


class ContainerTasks:
    def __init__(self) -> None:
        self._tasks: dict[int, asyncio.Task[None]] = {}

    def busy(self, vmid: int) -> bool:
        task = self._tasks.get(vmid)
        return task is not None and not task.done()

    def spawn(self, vmid: int, work: Callable[[], Awaitable[object]], name: str) -> None:
        """Run ``work()`` after the container's current task (if any) has ended."""
        before = self._tasks.get(vmid)

        async def in_turn() -> None:
            if before is not None and not before.done():
                await asyncio.gather(before, return_exceptions=True)
            await work()

        task = asyncio.get_running_loop().create_task(in_turn(), name=name)
        self._tasks[vmid] = task
        task.add_done_callback(
            lambda t: self._tasks.pop(vmid, None) if self._tasks.get(vmid) is t else None
        )

    async def cancel(self, vmid: int) -> None:
        """Cancel the container's work (and what it was waiting for) and wait until it ends."""
        task = self._tasks.pop(vmid, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
