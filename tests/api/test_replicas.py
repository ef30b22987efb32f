"""Replicas over one PostgreSQL database: the poller's share follows the live heartbeats.

Real PostgreSQL, real Membership heartbeats and real Pollers on one event loop; the agents are
a counting stand-in for ``AgentClient.status_body`` (every agent answers ready), as in
test_poller. bench/scale.py runs the same over real HTTP and real processes.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pg_cluster
import pytest
from sqlalchemy import text

from agent_sim import SimBackend
from api_kit import make_app, ready_container, running, services
from zlh.api import accounts
from zlh.api.agent_client import AgentClient
from zlh.api.containers import ContainerRegistry
from zlh.api.db import Container, ContainerState, Database, Replica
from zlh.api.db.models import utcnow
from zlh.api.events import EventBus
from zlh.api.follower import Follower
from zlh.api.poller import Poller
from zlh.api.replicas import Membership, ReplicaNameTaken, _lock_key, owner
from zlh.api.settings import ApiSettings
from zlh.routefeed import RouteFeed
from zlh.schemas import AgentState, AgentStatus

HEARTBEAT_S, LEASE_S = 0.2, 0.6
COUNT = 300
READY = AgentStatus(
    workspace_root="/home/dev/workspace", state=AgentState.READY, agent_version="test"
)


class Agents:
    """Every agent answers ready; ``polls`` counts the polls per vmid (from the URL's port)."""

    parse_status = staticmethod(AgentClient.parse_status)

    def __init__(self) -> None:
        self.polls: Counter[int] = Counter()

    async def status_body(self, url: str, secret: str, *, timeout_s: float) -> bytes:
        self.polls[int(url.rsplit(":", 1)[1]) - 10000] += 1
        return READY.model_dump_json(by_alias=True).encode()


@pytest.fixture
def database(postgres_server: str) -> Iterator[Database]:
    """A migrated PostgreSQL database holding COUNT ready containers."""
    db = Database(pg_cluster.fresh_database(postgres_server))
    db.migrate()
    seed(db, COUNT)
    yield db
    db.dispose()


def seed(db: Database, count: int) -> None:
    """``count`` ready containers, vmids from 100, each agent at its own (closed) port."""
    user = accounts.create_user(db, "alice", "correct horse battery")
    with db.session() as session:
        for vmid in range(100, 100 + count):
            session.add(
                ready_container(
                    vmid,
                    user.id,
                    address="127.0.0.1",
                    agent_port=10000 + vmid,
                    agent_nonce="n",
                    status=READY,
                )
            )


class Node:
    """One replica on the test's loop: its membership heartbeating and its poller running."""

    def __init__(
        self,
        db: Database,
        name: str,
        *,
        lease_s: float = LEASE_S,
        poll_interval_s: float = 0.2,
        following: bool = False,
    ) -> None:
        """``following``: it also runs the follower, whose announcements feed the poller."""
        settings = ApiSettings(data_dir=Path("/nonexistent"), poll_interval_s=poll_interval_s)
        self.agents = Agents()
        self.membership = Membership(db, name=name, heartbeat_s=HEARTBEAT_S, lease_s=lease_s)
        # A following node stands for a process of its own: its own engine, whose connections
        # send its announcements (which its own follower skips).
        self.db = Database(db.url) if following else db
        self.registry = registry = ContainerRegistry(self.db, EventBus(), RouteFeed())
        registry.bind_loop(asyncio.get_running_loop())

        async def resend(_container: Container) -> None:
            raise AssertionError("every agent here is ready")

        self.poller = Poller(
            settings=settings,
            registry=registry,
            agents=self.agents,  # type: ignore[arg-type]
            secret=lambda _c: "secret",
            resend=resend,
            overdue=lambda _c: False,
            share=self.membership.owns,
        )
        self.membership.on_change = self.poller.wake
        self.follower = (
            Follower(
                db.url,
                replica=name,
                registry=registry,
                revocations_changed=lambda: None,
                container_announced=self.poller.announced,
                resynced=self.poller.wake,
            )
            if following
            else None
        )
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.membership.join()
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self.membership.run()), loop.create_task(self.poller.run())]
        if self.follower is not None:
            follower = self.follower
            self.tasks.append(loop.create_task(follower.run()))
            await until(lambda: follower.connects >= 1, what=f"{self.membership.name} listening")

    async def crash(self) -> None:
        """Stop heartbeating and polling, leaving the row behind (as kill -9 would)."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.follower is not None:
            self.db.dispose()


ALL = set(range(100, 100 + COUNT))


async def until(predicate: Callable[[], bool], *, timeout_s: float = 10.0, what: str) -> float:
    """Seconds until ``predicate`` holds, checked every 10 ms; fails after ``timeout_s``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def run(db: Database, body: Callable[[Database], Awaitable[None]]) -> None:
    asyncio.run(body(db))


def test_two_replicas_split_the_containers_with_no_overlap_and_no_gap(database: Database) -> None:
    async def body(db: Database) -> None:
        a, b = Node(db, "a"), Node(db, "b")
        await a.start()
        await b.start()
        try:
            await until(lambda: a.membership.live == b.membership.live == ("a", "b"), what="both")
            await until(lambda: a.poller.watched() | b.poller.watched() == ALL, what="all polled")
            await until(lambda: not a.poller.watched() & b.poller.watched(), what="no overlap")
            mine = {v for v in ALL if owner(v, ["a", "b"]) == "a"}
            # Each poller reloads once its heartbeat thread has read the other's row.
            await until(lambda: a.poller.watched() == mine, what="a polls its share")
            await until(lambda: b.poller.watched() == ALL - mine, what="b polls its share")
            assert 0.35 * COUNT < len(a.poller.watched()) < 0.65 * COUNT
            # Polled is polled: each agent's polls come from its owner only, from here on.
            a.agents.polls.clear()
            b.agents.polls.clear()
            await until(lambda: set(a.agents.polls) | set(b.agents.polls) == ALL, what="polls")
            assert not set(a.agents.polls) & set(b.agents.polls)
        finally:
            await a.crash()
            await b.crash()

    run(database, body)


def test_a_replica_that_stops_heartbeating_has_its_share_taken_over_within_one_lease(
    database: Database,
) -> None:
    async def body(db: Database) -> None:
        a, b = Node(db, "a"), Node(db, "b")
        await a.start()
        await b.start()
        try:
            await until(lambda: a.poller.watched() | b.poller.watched() == ALL, what="split")
            await until(lambda: len(a.poller.watched()) < COUNT, what="a gives up b's share")
            await b.crash()
            crashed = time.monotonic()
            took = await until(lambda: a.poller.watched() == ALL, what="a takes b's share")
            orphans = ALL - {v for v in ALL if owner(v, ["a", "b"]) == "a"}
            a.agents.polls.clear()
            await until(lambda: orphans <= set(a.agents.polls), what="b's agents polled by a")
            assert took <= LEASE_S + HEARTBEAT_S, took  # a lease from b's last beat (+ slack)
            assert time.monotonic() - crashed <= LEASE_S + 0.6
        finally:
            await a.crash()

    run(database, body)


def test_a_replica_whose_loop_is_blocked_past_its_lease_keeps_heartbeating_and_its_share(
    database: Database,
) -> None:
    """The heartbeat runs on a thread of its own: thousands of poll tasks hogging a replica's
    loop must not make the others think it died (nor delay its noticing that one did)."""
    blocked_s = LEASE_S * 3

    def busy_replica(done: threading.Event) -> None:
        async def body() -> None:
            b = Membership(database, name="b", heartbeat_s=HEARTBEAT_S, lease_s=LEASE_S)
            await b.join()
            task = asyncio.get_running_loop().create_task(b.run())
            await asyncio.sleep(0)  # the heartbeat thread starts
            time.sleep(blocked_s)  # noqa: ASYNC251 - a loop that does not come back for 3 leases
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            done.set()

        asyncio.run(body())

    async def body(db: Database) -> None:
        a = Node(db, "a")
        await a.start()
        done = threading.Event()
        thread = threading.Thread(target=busy_replica, args=(done,))
        thread.start()
        try:
            await until(lambda: a.membership.live == ("a", "b"), what="a sees b")
            while not done.is_set():
                assert a.membership.live == ("a", "b"), "b's blocked loop stopped its heartbeat"
                await asyncio.sleep(0.01)
        finally:
            await asyncio.to_thread(thread.join)
            await a.crash()

    run(database, body)


_KILLABLE = """
import asyncio, sys
from zlh.api.db import Database
from zlh.api.replicas import Membership

async def main() -> None:
    membership = Membership(Database(sys.argv[1]), name="b", heartbeat_s=0.2, lease_s=30.0)
    await membership.join()
    await membership.run()

asyncio.run(main())
"""


def test_a_killed_replica_has_its_share_taken_over_well_within_one_lease(
    database: Database,
) -> None:
    """SIGKILL closes the replica's connections, and PostgreSQL drops its advisory lock with
    them: the survivor counts it dead at its next heartbeat, not a lease after its last."""
    lease_s = 30.0
    url = database.engine.url.render_as_string(hide_password=False)

    async def body(db: Database) -> None:
        a = Node(db, "a", lease_s=lease_s)
        await a.start()
        try:
            await until(lambda: a.membership.live == ("a", "b"), timeout_s=30, what="a sees b")
            await until(lambda: "b" in a.membership._locked, timeout_s=30, what="b's lock seen")
            await until(lambda: len(a.poller.watched()) < COUNT, what="a gives up b's share")
            b.kill()
            killed = time.monotonic()
            orphans = ALL - a.poller.watched()
            await until(lambda: a.membership.live == ("a",), timeout_s=lease_s, what="b dead")
            a.agents.polls.clear()
            await until(lambda: orphans <= set(a.agents.polls), what="b's agents polled by a")
            took = time.monotonic() - killed
            assert took < lease_s / 10, took  # a heartbeat and a poll, not the 30 s lease
        finally:
            await a.crash()

    b = subprocess.Popen([sys.executable, "-c", _KILLABLE, url])
    try:
        run(database, body)
    finally:
        b.kill()
        b.wait()


def test_a_replica_whose_lock_connection_breaks_polls_nothing_until_it_holds_the_lock_again(
    database: Database,
) -> None:
    """The others count a replica without its lock dead: it must not poll its old share
    meanwhile (two pollers on one container), and must take the lock back."""
    terminate = text(
        "SELECT pg_terminate_backend(pid) FROM pg_locks"
        " WHERE locktype = 'advisory' AND objid::bigint = :key AND objsubid = 2"
    )

    async def body(db: Database) -> None:
        a = Node(db, "a")
        await a.start()
        try:
            await until(lambda: a.poller.watched() == ALL, what="a polls all")
            with db.session() as session:
                assert session.scalars(terminate, {"key": _lock_key("a")}).all() == [True]
            await until(lambda: not a.poller.watched(), what="a gives everything up")
            await until(lambda: a.poller.watched() == ALL, what="a takes its lock back")
        finally:
            await a.crash()

    run(database, body)


def test_a_joining_replica_takes_about_its_share_and_the_other_lets_it_go(
    database: Database,
) -> None:
    async def body(db: Database) -> None:
        a = Node(db, "a")
        await a.start()
        await until(lambda: a.poller.watched() == ALL, what="a alone polls all")
        b, c = Node(db, "b"), Node(db, "c")
        await b.start()
        await c.start()
        try:
            names = ["a", "b", "c"]
            await until(
                lambda: all(r.membership.live == tuple(names) for r in (a, b, c)), what="three"
            )
            for replica, name in ((a, "a"), (b, "b"), (c, "c")):
                mine = {v for v in ALL if owner(v, names) == name}
                await until(lambda r=replica, m=mine: r.poller.watched() == m, what=name)
                assert 0.2 * COUNT < len(mine) < 0.47 * COUNT
            await c.membership.leave()  # a clean stop: the others take its share at once
            await c.crash()
            await until(lambda: a.poller.watched() | b.poller.watched() == ALL, what="c's back")
            # Minimal movement: a keeps what it had and gains only some of c's.
            assert {v for v in ALL if owner(v, names) == "a"} <= a.poller.watched()
        finally:
            await a.crash()
            await b.crash()

    run(database, body)


def test_a_container_another_replica_changes_is_followed_by_its_owner_before_a_full_reload(
    database: Database,
) -> None:
    async def body(db: Database) -> None:
        # Full reloads 30 s apart: only the database's announcement can explain what b sees.
        a, b = (Node(db, n, poll_interval_s=30, following=True) for n in ("a", "b"))
        await a.start()
        await b.start()
        try:
            await until(
                lambda: (
                    a.poller.watched() | b.poller.watched() == ALL
                    and not a.poller.watched() & b.poller.watched()
                ),
                what="split",
            )
            vmid = min(v for v in ALL if owner(v, ["a", "b"]) == "b")
            # Replica a moves b's container (as a start there re-records its address).
            mover = a.registry
            mover.update(vmid, agent_port=10000 + vmid + COUNT)
            took = await until(lambda: vmid + COUNT in b.agents.polls, what="b follows")
            assert took < 3.0
            assert vmid + COUNT not in a.agents.polls
            # Stopped there: b stops polling it, 30 s before its next full reload.
            mover.update(vmid, state=ContainerState.STOPPED)
            await until(lambda: vmid not in b.poller.watched(), timeout_s=3, what="b lets go")
            assert vmid not in a.poller.watched()
        finally:
            await a.crash()
            await b.crash()

    run(database, body)


def test_a_second_live_process_under_the_same_name_is_refused(database: Database) -> None:
    async def body(db: Database) -> None:
        lease_s = 5.0  # long: a loaded machine's late heartbeat must not look like a death
        first = Node(db, "a", lease_s=lease_s)
        await first.start()
        try:
            second = Membership(db, name="a", heartbeat_s=HEARTBEAT_S, lease_s=lease_s)
            started = time.monotonic()
            with pytest.raises(ReplicaNameTaken, match="held by a live process"):
                await second.join()
            assert time.monotonic() - started < lease_s / 2  # told after a heartbeat, not a lease
            assert first.membership.owns(100) and not second.owns(100)
        finally:
            await first.crash()

    run(database, body)


def test_a_crashed_holder_of_the_name_is_replaced_after_its_lease(database: Database) -> None:
    async def body(db: Database) -> None:
        first = Node(db, "a")
        await first.start()
        await first.crash()
        second = Node(db, "a")
        started = time.monotonic()
        await second.start()
        try:
            assert time.monotonic() - started <= LEASE_S + 0.2
            await until(lambda: second.poller.watched() == ALL, what="the new holder polls")
        finally:
            await second.crash()

    run(database, body)


def test_a_name_held_by_a_dead_process_of_this_host_is_taken_at_once(database: Database) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    with database.session() as session:
        now = utcnow()
        holder = f"{socket.gethostname()}:{gone.pid}:dead"
        session.add(Replica(name="a", holder=holder, heartbeat_at=now, started_at=now))

    async def body(db: Database) -> None:
        membership = Membership(db, name="a", heartbeat_s=HEARTBEAT_S, lease_s=60.0)
        await asyncio.wait_for(membership.join(), timeout=HEARTBEAT_S)
        assert membership.live == ("a",) and membership.owns(100)

    run(database, body)


def test_a_replica_whose_name_was_taken_over_polls_nothing(database: Database) -> None:
    async def body(db: Database) -> None:
        stalled = Node(db, "a")
        await stalled.start()
        await stalled.crash()  # stalls past its lease ...
        usurper = Node(db, "a")
        await usurper.start()
        try:
            # ... and wakes up to find its name held by another live process.
            stalled.tasks = [asyncio.get_running_loop().create_task(stalled.membership.run())]
            await until(lambda: stalled.membership.lost, what="the stalled one notices")
            assert not any(stalled.membership.owns(v) for v in ALL)
            await until(lambda: usurper.poller.watched() == ALL, what="the usurper polls all")
        finally:
            await stalled.crash()
            await usurper.crash()

    run(database, body)


def test_an_api_on_postgresql_joins_as_a_replica_and_leaves_on_a_clean_stop(
    tmp_path: Path, postgres_server: str
) -> None:
    app = make_app(
        tmp_path,
        SimBackend(),
        database_url=pg_cluster.fresh_database(postgres_server),
        replica="r1",
    )
    svc = services(app)
    assert svc.replicas is not None

    def rows() -> list[str]:
        with svc.db.session() as session:
            return [r.name for r in session.query(Replica)]

    with running(app):
        assert svc.replicas.live == ("r1",)
        assert rows() == ["r1"]
    assert rows() == []  # the others take its share at once
    svc.db.dispose()


def test_a_single_sqlite_node_keeps_no_membership_and_polls_everything(tmp_path: Path) -> None:
    app = make_app(tmp_path, SimBackend())
    svc = services(app)
    assert svc.replicas is None
    seed(svc.db, 20)

    async def body() -> None:
        svc.registry.bind_loop(asyncio.get_running_loop())
        await svc.poller.poll_once()  # nothing listens at those ports: misses, still polled
        await svc.agents.close()

    asyncio.run(body())
    assert svc.poller.watched() == set(range(100, 120))
    svc.db.dispose()


def test_replicas_joining_at_the_same_moment_lead_a_duty_only_after_a_heartbeat_and_one_of_them(
    database: Database,
) -> None:
    """Each join may see only itself (the other's row not yet committed): leading a duty then
    would have both fill the warm pool. Until a heartbeat after the join, neither leads."""
    duty = "warm-pool"

    async def body(db: Database) -> None:
        members = [
            Membership(db, name=name, heartbeat_s=HEARTBEAT_S, lease_s=LEASE_S)
            for name in ("a", "b")
        ]
        await asyncio.gather(*(m.join() for m in members))
        assert [m.leads(duty) for m in members] == [False, False]
        tasks = [asyncio.get_running_loop().create_task(m.run()) for m in members]
        try:
            await until(lambda: all(m._settled for m in members), what="both heartbeat")
            assert [m.live for m in members] == [("a", "b"), ("a", "b")]
            leaders = [m.name for m in members if m.leads(duty)]
            assert leaders == [owner(duty, ("a", "b"))]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    run(database, body)
