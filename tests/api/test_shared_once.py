"""What replicas on one real PostgreSQL database must do once on the whole platform, raced by
processes that share nothing but the database (each its own engine, as each replica has).

An IDE ticket is taken once, whichever host's front it is shown to (``DbLedger``), and a
database that cannot record it refuses it. A warm-pool container is handed out once, whatever
the number of replicas that take it at the same moment (``take_from_pool``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pg_cluster
import pytest
from sqlalchemy import select

from api_kit import ready_container
from zlh.api import accounts
from zlh.api.containers import ContainerRegistry, Quota
from zlh.api.db import Container, Database
from zlh.api.db.models import UsedTicket
from zlh.api.events import EventBus
from zlh.proxy.ticket_db import DbLedger
from zlh.proxy.tickets import TicketDesk, mint_ticket
from zlh.routefeed import RouteFeed
from zlh.schemas import AgentState, AgentStatus

KEY = b"k" * 32
RACERS = 8


@pytest.fixture
def db_url(postgres_server: str) -> Iterator[str]:
    url = pg_cluster.fresh_database(postgres_server)
    db = Database(url)
    db.migrate()
    db.dispose()
    yield url


@pytest.fixture
def ledgers(db_url: str) -> Iterator[list[DbLedger]]:
    """One ledger per racing front process, each with its own engine."""
    made = [DbLedger(db_url) for _ in range(RACERS)]
    yield made
    for ledger in made:
        ledger.dispose()


def _ticket(now: float) -> str:
    return mint_ticket(
        KEY,
        user_id="1",
        sid="s",
        vmid=100,
        admin=False,
        session_issued_at=now,
        session_expires_at=now + 3600,
        now=now,
    )


def test_a_ticket_taken_on_one_host_is_refused_on_every_other(ledgers: list[DbLedger]) -> None:
    token = _ticket(time.time())
    desks = [TicketDesk(KEY, ledger=ledger) for ledger in ledgers]  # a host each

    async def race() -> list[object]:
        return list(await asyncio.gather(*(desk.take(token) for desk in desks)))

    taken = [t for t in asyncio.run(race()) if t is not None]
    assert len(taken) == 1
    # Later, on a host that never saw it: still refused.
    assert TicketDesk(KEY, ledger=ledgers[0]).redeem(token) is None


def test_tickets_taken_are_swept_after_they_expire(db_url: str, ledgers: list[DbLedger]) -> None:
    earlier = time.time() - 120  # a ticket taken two minutes ago (expired one minute ago)
    old = _ticket(earlier)
    assert TicketDesk(KEY, ledger=ledgers[0], clock=lambda: earlier).redeem(old) is not None
    now = time.time()
    fresh = _ticket(now)
    assert TicketDesk(KEY, ledger=ledgers[1], clock=lambda: now).redeem(fresh) is not None
    db = Database(db_url)
    try:
        with db.session() as session:
            rows = session.scalars(select(UsedTicket.expires_at)).all()
    finally:
        db.dispose()
    assert rows == [int(now) + 60]  # the old row is gone, the new one kept


def test_a_ticket_is_refused_when_the_database_cannot_record_it() -> None:
    unreachable = DbLedger("postgresql+psycopg://zlh@127.0.0.1:1/nothing")
    try:
        assert TicketDesk(KEY, ledger=unreachable).redeem(_ticket(time.time())) is None
    finally:
        unreachable.dispose()


def test_replicas_taking_one_pool_container_at_once_hand_it_out_once(db_url: str) -> None:
    setup = Database(db_url)
    users = [accounts.create_user(setup, f"user{i}", "correct horse battery") for i in range(8)]
    pool_user = accounts.create_user(setup, "pool-owner", "correct horse battery")
    status = AgentStatus(workspace_root="/w", state=AgentState.READY, agent_version="test")
    with setup.session() as session:
        row = ready_container(
            100, pool_user.id, address="127.0.0.1", agent_port=1, agent_nonce="n", status=status
        )
        row.pool = True
        session.add(row)
    setup.dispose()
    databases = [Database(db_url) for _ in users]
    registries = [ContainerRegistry(db, EventBus(), RouteFeed()) for db in databases]
    try:
        with ThreadPoolExecutor(len(users)) as threads:
            taken = list(
                threads.map(
                    lambda registry, user: registry.take_from_pool(
                        100, owner=user, quota=Quota(5, 5), name=None, reason="race"
                    ),
                    registries,
                    users,
                )
            )
        winners = [c for c in taken if c is not None]
        assert len(winners) == 1
        with databases[0].session() as session:
            after = session.get(Container, 100)
            assert after is not None
            assert (after.pool, after.owner_id) == (False, winners[0].owner_id)
    finally:
        for db in databases:
            db.dispose()
