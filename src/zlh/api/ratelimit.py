"""Login throttling that an outsider cannot turn against a user.

Failures are counted per (user name, client address) and per client address over all user
names. Past a number of free failures each further one doubles the wait before the next
attempt from there (capped); there is no lock without end, and failures from one address
never slow the same user at another. The clock is injected so tests count instead of sleep.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BackOff", "LoginThrottle"]

Clock = Callable[[], float]


@dataclass
class _Failures:
    count: int
    last_s: float  # the clock at the last failure
    wait_s: float  # the back-off that failure started


class BackOff:
    """Per key: the ``free``-th failure makes the key wait ``base_s``, each further one twice
    as long as the one before, up to ``max_s``.

    A key is forgotten ``forget_s`` after its back-off ended without a new failure; memory is
    bounded by ``max_keys`` (the key that failed first is dropped first).
    """

    def __init__(
        self,
        *,
        free: int,
        base_s: float,
        max_s: float,
        forget_s: float,
        clock: Clock,
        max_keys: int = 100_000,
    ) -> None:
        self.free = free
        self.base_s = base_s
        self.max_s = max_s
        self.forget_s = forget_s
        self.max_keys = max_keys
        self._clock = clock
        self._keys: dict[str, _Failures] = {}

    def retry_after_s(self, key: str) -> float:
        """0 if ``key`` may try now, else the seconds until it may."""
        failures = self._current(key)
        if failures is None:
            return 0.0
        return max(0.0, failures.last_s + failures.wait_s - self._clock())

    def fail(self, key: str) -> None:
        failures = self._current(key)
        if failures is None:
            if len(self._keys) >= self.max_keys:
                del self._keys[next(iter(self._keys))]
            failures = self._keys[key] = _Failures(0, 0.0, 0.0)
        failures.count += 1
        failures.last_s = self._clock()
        beyond = failures.count - self.free
        if beyond >= 0:
            failures.wait_s = min(self.max_s, self.base_s * 2 ** min(beyond, 62))

    def reset(self, key: str) -> None:
        self._keys.pop(key, None)

    def _current(self, key: str) -> _Failures | None:
        failures = self._keys.get(key)
        if failures is not None and self._clock() >= (
            failures.last_s + failures.wait_s + self.forget_s
        ):
            del self._keys[key]
            return None
        return failures


class LoginThrottle:
    """The two back-offs of login: per (user name, address) and per address."""

    def __init__(
        self,
        *,
        free_per_user_address: int,
        free_per_address: int,
        base_s: float,
        max_s: float,
        forget_s: float,
        clock: Clock = time.monotonic,
    ) -> None:

        def backoff(free: int) -> BackOff:
            return BackOff(free=free, base_s=base_s, max_s=max_s, forget_s=forget_s, clock=clock)

        self._pairs = backoff(free_per_user_address)
        self._addresses = backoff(free_per_address)
        self._lock = threading.Lock()

    @staticmethod
    def _pair(username: str, address: str) -> str:
        return f"{username.lower()}\n{address}"

    def retry_after_s(self, username: str, address: str) -> float:
        """0 if this user name may be tried from ``address`` now, else the seconds to wait."""
        with self._lock:
            return max(
                self._pairs.retry_after_s(self._pair(username, address)),
                self._addresses.retry_after_s(address),
            )

    def failed(self, username: str, address: str) -> None:
        with self._lock:
            self._pairs.fail(self._pair(username, address))
            self._addresses.fail(address)

    def succeeded(self, username: str, address: str) -> None:
        """Forget this pair's failures. The address keeps its count: a valid account of the
        attacker's own must not wipe the slow-down of its guesses at others."""
        with self._lock:
            self._pairs.reset(self._pair(username, address))
