"""The login back-off on a clock the test moves: counted, never timed. In memory (one node)
and in PostgreSQL's ``login_failures`` table (replicas), which must behave alike."""

from __future__ import annotations

from collections.abc import Iterator

import pg_cluster
import pytest
from sqlalchemy import func, select

from zlh.api.db import Database
from zlh.api.db.models import LoginFailures
from zlh.api.ratelimit import BackOff, Counter, LoginThrottle, SharedBackOff


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "postgresql"])
def shared(request: pytest.FixtureRequest) -> Iterator[Database | None]:
    """None (counted in memory) or a fresh PostgreSQL database to count in."""
    if request.param == "memory":
        yield None
        return
    db = Database(pg_cluster.fresh_database(request.getfixturevalue("postgres_server")))
    db.migrate()
    yield db
    db.dispose()


def backoff_in(shared: Database | None, clock: Clock, **limits: float) -> Counter:
    if shared is None:
        return BackOff(clock=clock, **limits)  # type: ignore[arg-type]
    return SharedBackOff(shared, "test", clock=clock, **limits)  # type: ignore[arg-type]


def test_failures_are_forgotten_a_window_after_the_back_off_ended(
    shared: Database | None,
) -> None:
    clock = Clock()
    backoff = backoff_in(shared, clock, free=1, base_s=10.0, max_s=100.0, forget_s=60.0)
    backoff.fail("k")
    backoff.fail("k")
    assert backoff.retry_after_s("k") == 20.0  # second failure: twice the first wait
    clock.now = 20.0 + 59.0
    assert backoff.retry_after_s("k") == 0.0
    backoff.fail("k")
    assert backoff.retry_after_s("k") == 40.0  # still remembered: the doubling goes on
    clock.now += 40.0 + 60.0
    backoff.fail("k")
    assert backoff.retry_after_s("k") == 10.0  # forgotten: starts over


def test_a_flood_of_keys_is_bounded() -> None:
    backoff = BackOff(free=0, base_s=1.0, max_s=1.0, forget_s=1.0, clock=Clock(), max_keys=3)
    for n in range(10):
        backoff.fail(f"k{n}")
    assert [backoff.retry_after_s(f"k{n}") for n in range(10)] == [0.0] * 7 + [1.0] * 3


def test_a_success_clears_the_pair_but_not_the_address(shared: Database | None) -> None:
    clock = Clock()
    throttle = LoginThrottle(
        free_per_user_address=1,
        free_per_address=2,
        base_s=5.0,
        max_s=60.0,
        forget_s=60.0,
        clock=clock,
        shared=shared,
    )
    throttle.failed("Mallory", "203.0.113.9")
    assert throttle.retry_after_s("mallory", "203.0.113.9") == 5.0  # names are case-blind
    assert throttle.retry_after_s("alice", "203.0.113.9") == 0.0
    clock.now = 5.0
    throttle.succeeded("mallory", "203.0.113.9")  # the attacker's own account
    assert throttle.retry_after_s("mallory", "203.0.113.9") == 0.0
    throttle.failed("alice", "203.0.113.9")  # the address's second failure
    assert throttle.retry_after_s("bob", "203.0.113.9") == 5.0  # the address still backs off
    assert throttle.retry_after_s("alice", "198.51.100.1") == 0.0


def test_the_wait_is_capped_and_stale_rows_are_swept_from_the_table(
    postgres_server: str,
) -> None:
    db = Database(pg_cluster.fresh_database(postgres_server))
    db.migrate()
    clock = Clock()
    backoff = SharedBackOff(db, "test", free=0, base_s=1.0, max_s=8.0, forget_s=10.0, clock=clock)
    try:
        for _ in range(6):
            backoff.fail("guesser")
        assert backoff.retry_after_s("guesser") == 8.0  # 1, 2, 4, 8, 8, 8
        backoff.fail("another")
        clock.now = 8.0 + 10.0 + 61.0  # both stale, and the next sweep is due
        backoff.fail("late")
        with db.session() as session:
            assert session.scalar(select(func.count()).select_from(LoginFailures)) == 1
        backoff.reset("late")
        assert backoff.retry_after_s("late") == 0.0
    finally:
        db.dispose()
