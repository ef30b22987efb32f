"""Handing the heap that provisioning freed back to the system.

An install runs on threads (download and hashing, inflating, writing: ``zlh.install``), and
glibc gives each thread its own malloc arena, which keeps the pages its thread freed: without
``malloc_trim(0)`` the agent stays up to 4.7 MB larger after a provisioning than it needs to be,
depending on the install (docs/performance.md). The agent trims once the provisioning jobs have
all ended, not at start: a fresh agent has little freed to give back, less than the ctypes
module that calls ``malloc_trim`` costs it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

__all__ = ["HeapTrimmer", "trim_heap"]


def trim_heap() -> bool:
    """Give free heap pages back to the system; False where libc has no malloc_trim."""
    import ctypes

    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only (not musl)
    if trim is None:
        return False
    trim(0)
    return True


class HeapTrimmer:
    """Trims the heap each time the work ``idle`` waits for has ended (one waiter at a time:
    work that starts while one waits is waited for by it)."""

    def __init__(
        self, idle: Callable[[], Awaitable[None]], trim: Callable[[], object] = trim_heap
    ) -> None:
        self._idle = idle
        self._trim = trim
        self._waiter: asyncio.Task[None] | None = None

    def after_work(self) -> None:
        if self._waiter is None or self._waiter.done():
            self._waiter = asyncio.create_task(self._trim_when_idle(), name="trim-heap")

    async def _trim_when_idle(self) -> None:
        await self._idle()
        self._trim()

    async def close(self) -> None:
        if self._waiter is not None:
            self._waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._waiter
