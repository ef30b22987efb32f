"""Sliding-window failure counters for login (per user name and per client address)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["FailureLimiter"]


class FailureLimiter:
    """At most ``limit`` failures per key within ``window_s``; memory is bounded by ``max_keys``."""

    def __init__(
        self,
        *,
        limit: int,
        window_s: float,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit <= 0 or window_s <= 0:
            raise ValueError("limit and window_s must be positive")
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after_s(self, key: str) -> float:
        """0 if ``key`` may try now, else seconds until its oldest failure leaves the window."""
        stamps = self._prune(key)
        if stamps is None or len(stamps) < self.limit:
            return 0.0
        return max(0.0, stamps[0] + self.window_s - self._clock())

    def fail(self, key: str) -> None:
        if key not in self._failures and len(self._failures) >= self.max_keys:
            # Forget the key that first failed longest ago: a flood of new keys cannot grow memory.
            del self._failures[next(iter(self._failures))]
        self._failures.setdefault(key, deque()).append(self._clock())
        self._prune(key)

    def reset(self, key: str) -> None:
        self._failures.pop(key, None)

    def _prune(self, key: str) -> deque[float] | None:
        stamps = self._failures.get(key)
        if stamps is None:
            return None
        horizon = self._clock() - self.window_s
        while stamps and stamps[0] <= horizon:
            stamps.popleft()
        while len(stamps) > self.limit:
            stamps.popleft()
        if not stamps:
            del self._failures[key]
            return None
        return stamps
