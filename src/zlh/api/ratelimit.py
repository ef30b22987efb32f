"""Login throttling that an outsider cannot turn against a user.

Failures are counted per (user name, client address) and per client address over all user
names. Past a number of free failures each further one doubles the wait before the next
attempt from there (capped); there is no lock without end, and failures from one address
never slow the same user at another. The clock is injected so tests count instead of sleep.

A single node (SQLite) counts in memory. Replicas sharing PostgreSQL count in its
``login_failures`` table (:class:`SharedBackOff`), one atomic upsert per failure, so failures
on one replica slow the next attempt on every replica.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import case, delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.sql import ColumnElement

from zlh.api.db import Database
from zlh.api.db.models import LoginFailures

__all__ = ["BackOff", "LoginThrottle", "SharedBackOff"]

Clock = Callable[[], float]
SWEEP_EVERY_S = 60.0


class Counter(Protocol):
    def retry_after_s(self, key: str) -> float: ...
    def fail(self, key: str) -> None: ...
    def reset(self, key: str) -> None: ...


def _wait_s(count: int, free: int, base_s: float, max_s: float) -> float:
    """The back-off the ``count``-th failure starts (0 within the free ones)."""
    beyond = count - free
    return min(max_s, base_s * 2 ** min(beyond, 62)) if beyond >= 0 else 0.0


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
        if failures.count >= self.free:
            failures.wait_s = _wait_s(failures.count, self.free, self.base_s, self.max_s)

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


class SharedBackOff:
    """:class:`BackOff` kept in the database's ``login_failures`` table (PostgreSQL), under
    ``scope``, for every replica at once. ``clock`` is wall-clock time (the replicas' clocks
    agree, as they must for session expiry anyway). Stale rows are swept on a failure at most
    every ``SWEEP_EVERY_S``."""

    def __init__(
        self,
        db: Database,
        scope: str,
        *,
        free: int,
        base_s: float,
        max_s: float,
        forget_s: float,
        clock: Clock = time.time,
    ) -> None:
        self.db = db
        self.scope = scope
        self.free = free
        self.base_s = base_s
        self.max_s = max_s
        self.forget_s = forget_s
        self._clock = clock
        self._sweep_at = 0.0

    @staticmethod
    def _key(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    def _where(self, key: str) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
        return LoginFailures.scope == self.scope, LoginFailures.key == self._key(key)

    def retry_after_s(self, key: str) -> float:
        now = self._clock()
        with self.db.session() as session:
            row = session.execute(
                select(LoginFailures.last_s, LoginFailures.wait_s, LoginFailures.forget_at).where(
                    *self._where(key)
                )
            ).first()
        if row is None or row.forget_at <= now:
            return 0.0
        return max(0.0, float(row.last_s + row.wait_s - now))

    def fail(self, key: str) -> None:
        """One upsert counts the failure (a stale row starts again at one) and holds the row
        locked while the back-off it starts is written: concurrent failures on any replica
        count one by one."""
        now = self._clock()
        stale = LoginFailures.forget_at <= now
        values = insert(LoginFailures).values(
            scope=self.scope,
            key=self._key(key),
            count=1,
            last_s=now,
            wait_s=0.0,
            forget_at=now + self.forget_s,
        )
        counted = values.on_conflict_do_update(
            index_elements=[LoginFailures.scope, LoginFailures.key],
            set_={
                "count": case((stale, 1), else_=LoginFailures.count + 1),
                "wait_s": case((stale, 0.0), else_=LoginFailures.wait_s),
                "last_s": now,
            },
        ).returning(LoginFailures.count, LoginFailures.wait_s)
        with self.db.session() as session:
            count, wait_s = session.execute(counted).one()
            if count >= self.free:
                wait_s = _wait_s(count, self.free, self.base_s, self.max_s)
            session.execute(
                update(LoginFailures)
                .where(*self._where(key))
                .values(wait_s=wait_s, forget_at=now + wait_s + self.forget_s)
            )
            if now >= self._sweep_at:
                self._sweep_at = now + SWEEP_EVERY_S
                session.execute(delete(LoginFailures).where(LoginFailures.forget_at <= now))

    def reset(self, key: str) -> None:
        with self.db.session() as session:
            session.execute(delete(LoginFailures).where(*self._where(key)))


class LoginThrottle:
    """The two back-offs of login: per (user name, address) and per address; in memory, or
    with ``shared`` (a PostgreSQL database replicas share) in its ``login_failures`` table."""

    def __init__(
        self,
        *,
        free_per_user_address: int,
        free_per_address: int,
        base_s: float,
        max_s: float,
        forget_s: float,
        clock: Clock | None = None,
        shared: Database | None = None,
    ) -> None:
        """``clock`` defaults to the monotonic clock in memory, the wall clock when shared."""
        self._pairs: Counter
        self._addresses: Counter
        self._lock: AbstractContextManager[object]
        if shared is None:
            mono = clock or time.monotonic
            self._pairs, self._addresses = (
                BackOff(free=free, base_s=base_s, max_s=max_s, forget_s=forget_s, clock=mono)
                for free in (free_per_user_address, free_per_address)
            )
            self._lock = threading.Lock()
        else:
            wall = clock or time.time
            self._pairs, self._addresses = (
                SharedBackOff(
                    shared,
                    scope,
                    free=free,
                    base_s=base_s,
                    max_s=max_s,
                    forget_s=forget_s,
                    clock=wall,
                )
                for scope, free in (("pair", free_per_user_address), ("address", free_per_address))
            )
            self._lock = contextlib.nullcontext()  # the database serialises

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
