"""A request handler whose answer waits for some work off the request path (a database write),
without holding up the event loop: the work runs as a task, then ``then(result)`` makes the
handler that answers, and the request's events are passed on to it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from zlh.proxy.listener import Handler

__all__ = ["Deferred"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Deferred(Generic[T]):
    """``work``'s result handed to ``then`` once it is done (None if it failed: ``then`` must
    answer a refusal to it). A lost client cancels the work and answers nothing."""

    def __init__(self, work: Awaitable[T], then: Callable[[T | None], Handler]) -> None:
        self._then = then
        self._inner: Handler | None = None
        self._body_ended = False
        self._lost = False
        self._task = asyncio.ensure_future(work)
        self._task.add_done_callback(self._answer)

    def _answer(self, task: asyncio.Future[T]) -> None:
        if self._lost or task.cancelled():
            return
        result: T | None = None
        if (exc := task.exception()) is not None:
            log.error("answering a request failed", exc_info=exc)
        else:
            result = task.result()
        self._inner = self._then(result)
        if self._body_ended:
            self._inner.on_client_body_end()

    def on_client_body(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.on_client_body(data)

    def on_client_body_end(self) -> None:
        self._body_ended = True
        if self._inner is not None:
            self._inner.on_client_body_end()

    def client_lost(self) -> None:
        self._lost = True
        self._task.cancel()
        if self._inner is not None:
            self._inner.client_lost()

    def client_paused(self) -> None:
        if self._inner is not None:
            self._inner.client_paused()

    def client_resumed(self) -> None:
        if self._inner is not None:
            self._inner.client_resumed()

    def check_timeout(self, now: float) -> None:
        if self._inner is not None:
            self._inner.check_timeout(now)
