"""Per-container CPU and memory for scrapes, at a bounded cost.

A scrape asks :meth:`UsageCache.snapshot` from a worker thread. Figures younger than
``max_age_s`` are returned as they are; older ones start one refresh on the event loop (the
running containers from the database, then one ``Backend.usage`` call for all of them) and
the scrape that started it waits for it at most ``wait_s``, else answers with the last
figures while the refresh finishes for a later scrape; scrapes meanwhile do not wait at all.
However often Prometheus (or several of them) scrapes, the backend is asked at most once per
``max_age_s`` plus the time it takes to answer, and a slow backend never holds a scrape
longer than ``wait_s``.

Measured with ``bench/metrics_scrape.py`` (Proxmox backend, the test suite's stand-in PVE
server with 1,000 running CTs on loopback TLS, 2-core machine): the backend took about 8 s for
the 1,000 ``status/current`` calls; the first scrape returned after 1.0 s without figures, the
ones during the refresh in about 1 ms, every later one with all 1,000 in 11-43 ms.

With several replicas each measures only the containers of its poll share (``share``): every
container is reported by one replica, and the backend is asked for each once, not once per
replica.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Final

from zlh.api.replicas import Share, everything
from zlh.backends import Backend, Usage
from zlh.errors import ZlhError

__all__ = ["UsageCache"]

logger = logging.getLogger(__name__)

MAX_AGE_S: Final = 5.0
WAIT_S: Final = 1.0


class UsageCache:
    def __init__(
        self,
        backend: Backend,
        running: Callable[[], Sequence[int]],
        *,
        max_age_s: float = MAX_AGE_S,
        wait_s: float = WAIT_S,
        share: Share = everything,
    ) -> None:
        """``running()`` (blocking: it reads the database) names the containers that run;
        those of ``share`` are measured."""
        self._backend = backend
        self._running = running
        self._share = share
        self._max_age_s = max_age_s
        self._wait_s = wait_s
        self._figures: dict[int, Usage] = {}
        self._taken = float("-inf")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refresh: Future[None] | None = None
        self._lock = threading.Lock()

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the backend runs on (the app's, from its lifespan)."""
        self._loop = loop

    def snapshot(self) -> dict[int, Usage]:
        """The figures, refreshed first when stale (see the module). Call off the loop."""
        loop = self._loop
        if loop is None or not loop.is_running():
            return self._figures
        pending = None
        with self._lock:
            if time.monotonic() - self._taken > self._max_age_s and self._refresh is None:
                pending = asyncio.run_coroutine_threadsafe(self._refreshed(), loop)
                self._refresh = pending
        if pending is not None:  # only the scrape that starts a refresh waits for it
            try:
                pending.result(timeout=self._wait_s)
            except TimeoutError:
                logger.info("container use: the backend is slow, answering with older figures")
        return self._figures

    async def _refreshed(self) -> None:
        try:
            vmids = [v for v in await asyncio.to_thread(self._running) if self._share(v)]
            self._figures = await self._backend.usage(vmids)
        except ZlhError as exc:
            logger.warning("reading the containers' use failed: %s", exc.message)
            self._figures = {}  # none rather than old figures passed off as current
        finally:
            self._taken = time.monotonic()  # a failing backend too is asked once per max_age_s
            with self._lock:
                self._refresh = None
