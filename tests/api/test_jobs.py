"""Provisioning jobs with leases (zlh.api.jobs): a replica that dies mid-provisioning loses
nothing, a live holder keeps its job, two replicas never both take one, a job whose drivers
keep dying ends failed, and a delete on one replica stops the work on another. A runtime
change outlives its replica too: the poller of the container's share records it.

Replicas here are two Services over one real PostgreSQL database (different replica names,
one shared data dir for the keys, one simulated backend) on one event loop; a crash is the
replica's tasks cancelled with nothing handed back (no lease released, no job ended).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pg_cluster
import pytest
from sqlalchemy import select

from agent_sim import SimBackend
from api_kit import (
    FAST,
    PASSWORD,
    PINS,
    add_user,
    login,
    make_app,
    running,
    services,
    wait_for,
    write_catalog,
)
from zlh.api import accounts
from zlh.api.app import build_services
from zlh.api.bodies import DevRequest
from zlh.api.catalog import StoreCatalog
from zlh.api.containers import ContainerRegistry, Quota
from zlh.api.db import Container, ContainerState, Database, Job, User, models
from zlh.api.db.models import utcnow
from zlh.api.errors import NotFound
from zlh.api.events import EventBus
from zlh.api.jobs import Jobs
from zlh.api.services import Services
from zlh.api.settings import ApiSettings
from zlh.routefeed import RouteFeed
from zlh.schemas import ArtifactKind, InstalledRuntime

LEASE_S = 0.6


class Replica:
    """One API replica's provisioning, poller, job scanner and (PostgreSQL) membership
    heartbeat on the test's loop, as the app's lifespan runs them."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.crashed = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, *, scan: bool) -> None:
        loop = asyncio.get_running_loop()
        self.svc.registry.bind_loop(loop)
        if self.svc.replicas is not None:
            await self.svc.replicas.join()  # before polling: its share follows the live ones
            self._tasks.append(loop.create_task(self.svc.replicas.run()))
        self._tasks.append(loop.create_task(self.svc.poller.run()))
        if scan:
            self._tasks.append(loop.create_task(self.svc.provisioning.run_jobs()))

    @property
    def name(self) -> str:
        return self.svc.settings.replica_name

    async def crash(self) -> None:
        """Gone as by kill -9: every task ends where it stands, nothing is handed back."""
        self.crashed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.svc.provisioning.tasks.close()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if not self.crashed:
            await self.svc.provisioning.close()
        await self.svc.agents.close()


@asynccontextmanager
async def replicas(
    db_url: str,
    data_dir: Path,
    backend: SimBackend,
    *names: str,
    scan: bool = True,
    lease_s: float = LEASE_S,
    stop_containers: bool = True,
    **extra: Any,
) -> AsyncIterator[list[Replica]]:
    store = data_dir / "artifacts"
    write_catalog(store)
    started: list[Replica] = []
    threads = ThreadPoolExecutor()
    asyncio.get_running_loop().set_default_executor(threads)
    try:
        for name in names:
            settings = ApiSettings(
                data_dir=data_dir,
                database_url=db_url,
                replica=name,
                job_lease_s=lease_s,
                replica_heartbeat_s=0.2,
                replica_lease_s=0.6,
                **{**FAST, **extra},
            )
            svc = build_services(
                settings,
                backend,
                catalog=StoreCatalog(store),
                artifact_base_url="http://127.0.0.1:9/artifacts",
            )
            replica = Replica(svc)
            await replica.start(scan=scan)
            started.append(replica)
        yield started
    finally:
        for replica in started:
            await replica.close()
        if stop_containers:
            await backend.aclose()
        # A crash leaves database calls running in threads: they end before the pools close.
        threads.shutdown(wait=True)
        for replica in started:
            replica.svc.db.dispose()


def _user(db: Database, name: str) -> User:
    try:
        return accounts.get_user(db, name)
    except NotFound:
        return accounts.create_user(db, name, PASSWORD)


def _bare_row(registry: ContainerRegistry, owner: User) -> Container:
    """A container row as a dev request writes it, but without its job."""
    return registry.allocate(
        owner=owner,
        runtime="node",
        version="22",
        addons=[],
        pins=PINS,
        quota=Quota(containers=100, running=100),
    )


def _job(svc: Services, vmid: int) -> Job | None:
    return svc.provisioning.jobs.get(vmid)


async def until(predicate: Callable[[], Any], *, timeout_s: float = 15.0, what: str) -> Any:
    """Poll ``predicate`` on the loop until it is truthy (the replicas run meanwhile)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def pg_url(postgres_server: str) -> str:
    return pg_cluster.fresh_database(postgres_server)


def test_a_replica_killed_mid_provisioning_is_finished_by_another_with_one_container(
    tmp_path: Path, pg_url: str
) -> None:
    backend = SimBackend(create_delay_s=0.1, step_s=0.3)

    async def scenario() -> None:
        async with replicas(pg_url, tmp_path, backend, "a", "b") as (a, b):
            user = _user(a.svc.db, "alice")
            container = await a.svc.provisioning.request(user, DevRequest(runtime="node"))
            vmid = container.vmid
            held = _job(a.svc, vmid)
            assert held is not None and held.lease_holder == "a" and held.attempts == 1
            # A dies once the backend holds the container, before it is ready.
            await until(lambda: backend.creates == 1, what="the container created by a")
            await a.crash()
            assert a.svc.registry.get(vmid).state != "ready"  # type: ignore[union-attr]
            left = _job(b.svc, vmid)
            assert left is not None and left.lease_holder == "a"
            taken = await until(
                lambda: (j := _job(b.svc, vmid)) is not None and j.lease_holder == "b" and j,
                what="b to take the job",
            )
            assert taken.attempts == 2
            assert (await b.svc.provisioning.take_jobs()) == []  # b holds it now: nothing free
            assert taken.lease_expires_at >= left.lease_expires_at  # not before a's ran out
            await until(
                lambda: b.svc.registry.get(vmid).state == "ready",  # type: ignore[union-attr]
                what="ready",
            )
            await until(lambda: _job(b.svc, vmid) is None, what="the job to end")
            assert backend.creates == 1
            assert list(backend.agents) == [vmid]
            assert [c.vmid for c in b.svc.registry.list_for(None)] == [vmid]

    asyncio.run(scenario())


def test_a_live_holder_renewing_its_lease_is_never_taken_over(tmp_path: Path, pg_url: str) -> None:
    backend = SimBackend()
    backend.on_agent = lambda agent: setattr(agent, "never_ready", True)

    async def scenario() -> None:
        async with replicas(pg_url, tmp_path, backend, "a", "b") as (a, b):
            user = _user(a.svc.db, "alice")
            vmid = (await a.svc.provisioning.request(user, DevRequest(runtime="node"))).vmid
            seen: list[Any] = []

            def renewed_often() -> bool:
                job = _job(b.svc, vmid)
                assert job is not None and job.lease_holder == "a" and job.attempts == 1
                if not seen or job.lease_expires_at > seen[-1]:
                    seen.append(job.lease_expires_at)
                return len(seen) >= 8  # well past two leases: b scanned a dozen times

            await until(renewed_often, what="a to renew its lease 8 times")
            assert not b.svc.provisioning.tasks.busy(vmid)
            assert backend.creates == 1

    asyncio.run(scenario())


def test_two_replicas_scanning_at_once_never_both_take_one_job(pg_url: str) -> None:
    db = Database(pg_url)
    db.migrate()
    registry = ContainerRegistry(db, EventBus(), RouteFeed())
    owner = accounts.create_user(db, "alice", PASSWORD)
    for _ in range(40):
        _bare_row(registry, owner)
    sides = [Jobs(Database(pg_url), holder=n, lease_s=60, max_attempts=3) for n in ("a", "b")]
    assert len(sides[0].adopt_orphans()) == 40  # free jobs, their leases already out
    start = threading.Barrier(2)
    taken: dict[str, list[int]] = {"a": [], "b": []}

    def scan(jobs: Jobs) -> None:
        start.wait()
        while (claim := jobs.claim_next()) is not None:
            taken[jobs.holder].append(claim.vmid)

    threads = [threading.Thread(target=scan, args=(jobs,)) for jobs in sides]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not set(taken["a"]) & set(taken["b"])
    assert sorted(taken["a"] + taken["b"]) == sorted(c.vmid for c in registry.list_for(None))
    with db.session() as session:
        holders = {j.vmid: j.lease_holder for j in session.scalars(select(Job))}
    assert all(holders[v] == "a" for v in taken["a"])
    assert all(holders[v] == "b" for v in taken["b"])
    for jobs in sides:
        jobs.db.dispose()
    db.dispose()


def _skew(monkeypatch: pytest.MonkeyPatch, minutes: float) -> None:
    """This process's clock runs ``minutes`` off."""
    real = models.utcnow

    def skewed() -> datetime:
        return real() + timedelta(minutes=minutes)

    monkeypatch.setattr(models, "utcnow", skewed)


@pytest.mark.parametrize("minutes", [10, -10])
def test_a_replica_with_a_skewed_clock_neither_steals_a_live_job_nor_misses_an_expired_one(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, minutes: float
) -> None:
    db = Database(pg_url)
    db.migrate()
    registry = ContainerRegistry(db, EventBus(), RouteFeed())
    owner = accounts.create_user(db, "alice", PASSWORD)
    live, expired = (_bare_row(registry, owner).vmid for _ in range(2))
    a, b = (Jobs(Database(pg_url), holder=n, lease_s=60, max_attempts=3) for n in ("a", "b"))
    token = a.hold_now(live)  # a minute's lease
    _skew(monkeypatch, -minutes)
    assert a.renew(live, token)  # renewed by a clock off the other way
    assert b.adopt_orphans() == [expired]  # its lease ran out a minute ago
    _skew(monkeypatch, minutes)
    claim = b.claim_next()
    assert claim is not None and claim.vmid == expired  # an expired lease is seen expired
    assert b.claim_next() is None  # and a live one live, whichever way the clocks are off
    held = a.get(live)
    assert held is not None and held.token == token
    for side in (a, b):
        side.db.dispose()
    db.dispose()


def test_replicas_allocating_at_once_get_distinct_vmids_and_none_gives_up(pg_url: str) -> None:
    """vmids come from the shared database (its primary key and high-water mark), never a
    per-process counter: four replicas requesting at the same moment never share one, and
    none is refused for losing the race too often."""
    dbs = [Database(pg_url) for _ in range(4)]
    dbs[0].migrate()
    owner = accounts.create_user(dbs[0], "alice", PASSWORD)
    made: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(dbs))

    def allocate(db: Database) -> None:
        registry = ContainerRegistry(db, EventBus(), RouteFeed())
        start.wait()
        try:
            for _ in range(20):
                made.append(_bare_row(registry, owner).vmid)
        except BaseException as exc:  # reported below, with what was made
            errors.append(exc)

    threads = [threading.Thread(target=allocate, args=(db,)) for db in dbs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for db in dbs:
        db.dispose()
    assert not errors, errors
    assert len(made) == 80 and len(set(made)) == 80


def test_a_job_whose_drivers_keep_dying_ends_failed_after_the_attempt_limit(
    tmp_path: Path, pg_url: str
) -> None:
    backend = SimBackend(create_delay_s=60)  # no drive ever gets past the backend's create

    async def scenario() -> None:
        async with replicas(pg_url, tmp_path, backend, "a", "b", "c", scan=False) as group:
            user = _user(group[0].svc.db, "alice")
            vmid = (await group[0].svc.provisioning.request(user, DevRequest(runtime="node"))).vmid
            await group[0].crash()  # attempt 1
            for attempt, replica in enumerate(group[1:], start=2):  # each holder dies in turn
                claims = await until(replica.svc.provisioning.take_jobs, what="a takeover")
                assert [(c.vmid, c.attempts, c.exhausted) for c in claims] == [
                    (vmid, attempt, False)
                ]
                await until(lambda r=replica: r.svc.provisioning.tasks.busy(vmid), what="drive")
                await replica.crash()
                # Cut short, not failed: the next replica drives it again.
                assert replica.svc.registry.get(vmid).state == "creating"  # type: ignore[union-attr]
            last = group[0].svc.provisioning
            claims = await until(last.take_jobs, what="the exhausted job")
            assert [(c.vmid, c.attempts, c.exhausted) for c in claims] == [(vmid, 3, True)]
            container = last.registry.get(vmid)
            assert container is not None and container.state == "failed"
            assert container.error is not None
            assert "begun 3 times" in container.error and "job_max_attempts=3" in container.error
            assert _job(group[0].svc, vmid) is None
            assert not last.tasks.busy(vmid)

    asyncio.run(scenario())


def test_deleting_on_one_replica_stops_the_work_of_the_replica_holding_the_job(
    tmp_path: Path, pg_url: str
) -> None:
    backend = SimBackend(create_delay_s=0.5)

    async def scenario() -> None:
        async with replicas(pg_url, tmp_path, backend, "a", "b") as (a, b):
            user = _user(a.svc.db, "alice")
            vmid = (await a.svc.provisioning.request(user, DevRequest(runtime="node"))).vmid
            await until(lambda: a.svc.provisioning.tasks.busy(vmid), what="a's drive")
            # b deletes while a is inside the backend's create, which lands after the delete.
            await b.svc.provisioning.delete(vmid, "alice")
            assert backend.creates == 0
            assert b.svc.registry.get(vmid) is None and _job(b.svc, vmid) is None
            await until(lambda: not a.svc.provisioning.tasks.busy(vmid), what="a to stop")
            assert backend.creates == 1  # a's create landed, and a destroyed what it made
            assert vmid not in backend.agents and not backend.running

    asyncio.run(scenario())


def test_a_request_names_no_holder_and_its_job_is_this_replicas(tmp_path: Path) -> None:
    app = make_app(tmp_path, SimBackend(step_s=0.2), replica="node-1")
    add_user(app, "alice")
    with running(app) as client:
        alice = login(client, "alice")
        for field in ("lease_holder", "replica", "lease_expires_at"):
            body = {"runtime": "node", field: "attacker"}
            refused = client.post("/api/dev", json=body, headers=alice)
            assert refused.status_code == 422, refused.text
            assert field in refused.json()["message"]
        response = client.post("/api/dev", json={"runtime": "node"}, headers=alice)
        vmid = int(response.json()["vmid"])
        jobs = services(app).provisioning.jobs
        job = jobs.get(vmid)
        assert job is not None and job.lease_holder == "node-1"
        wait_for(lambda: client.get(f"/api/dev/{vmid}", headers=alice).json()["state"] == "ready")
        # At once, not at the next renewal (a third of the 15 s lease away).
        wait_for(lambda: jobs.get(vmid) is None, timeout_s=2, what="the job to end when ready")


def test_a_container_left_without_a_job_is_given_one_at_start(tmp_path: Path) -> None:
    """A row in ``requested`` from before jobs existed (or a rebuild cut between its steps)
    is driven at the next start, as the start-up resume did."""
    backend = SimBackend()
    app = make_app(tmp_path, backend)
    add_user(app, "alice")
    svc = services(app)
    container = _bare_row(svc.registry, accounts.get_user(svc.db, "alice"))
    with svc.db.session() as session:
        assert session.get(Job, container.vmid) is None
        assert session.get(Container, container.vmid) is not None
    with running(app):
        wait_for(lambda: svc.registry.get(container.vmid).state == "ready", what="ready")  # type: ignore[union-attr]
        wait_for(lambda: svc.provisioning.jobs.get(container.vmid) is None, what="job ended")
    assert backend.creates == 1


def test_a_single_node_restarted_after_a_crash_takes_its_own_job_at_once(tmp_path: Path) -> None:
    """SQLite, one node killed mid-provisioning: started again under the same name, it drives
    the job its previous run held without waiting for that lease (a minute here) to run out."""
    backend = SimBackend(create_delay_s=0.1, step_s=0.2)
    url = f"sqlite:///{tmp_path / 'zlh.db'}"

    async def scenario() -> None:
        # The API dies, its containers run on.
        async with replicas(url, tmp_path, backend, "node", lease_s=60, stop_containers=False) as (
            first,
        ):
            user = _user(first.svc.db, "alice")
            vmid = (await first.svc.provisioning.request(user, DevRequest(runtime="node"))).vmid
            await until(lambda: backend.creates == 1, what="the container created")
            await first.crash()
        async with replicas(url, tmp_path, backend, "node", lease_s=60) as (again,):
            await until(
                lambda: again.svc.registry.get(vmid).state == "ready",  # type: ignore[union-attr]
                what="ready well within the lease",
            )
            await until(lambda: _job(again.svc, vmid) is None, what="the job to end")
            assert backend.creates == 1 and list(backend.agents) == [vmid]

    asyncio.run(scenario())


def _gate_first(backend: SimBackend, method: str) -> tuple[asyncio.Event, list[int]]:
    """The first call of ``backend.method`` waits forever (its replica dies there); the
    vmids of every call are listed."""
    original = getattr(backend, method)
    entered = asyncio.Event()
    calls: list[int] = []

    async def gated(first: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(first if isinstance(first, int) else first.vmid)  # a vmid, or a spec
        if len(calls) == 1:
            entered.set()
            await asyncio.Event().wait()  # until cancelled
        return await original(first, *args, **kwargs)

    setattr(backend, method, gated)
    return entered, calls


@pytest.mark.parametrize(
    ("action", "cut_in", "then"),
    [
        ("stop", "stop", "stopped"),
        ("start", "start", "ready"),
        ("restart", "start", "ready"),  # between its halves: stopped, starting
        ("rebuild", "rebuild", "ready"),
    ],
)
def test_a_replica_killed_mid_lifecycle_action_leaves_a_job_another_replica_finishes(
    tmp_path: Path, pg_url: str, action: str, cut_in: str, then: str
) -> None:
    backend = SimBackend()

    async def scenario() -> None:
        async with replicas(pg_url, tmp_path, backend, "a", "b") as (a, b):

            def state() -> str | None:
                container = b.svc.registry.get(vmid)
                return None if container is None else container.state

            user = _user(a.svc.db, "alice")
            vmid = (await a.svc.provisioning.request(user, DevRequest(runtime="node"))).vmid
            await until(lambda: state() == "ready" and _job(a.svc, vmid) is None, what="ready")
            if action == "start":
                await a.svc.lifecycle.stop(vmid, actor="alice", reason="stopped by user alice")
                await until(lambda: state() == "stopped" and not _job(a.svc, vmid), what="stop")
            backend.template = 2  # what a rebuild takes
            entered, calls = _gate_first(backend, cut_in)
            reason = f"{action} asked by user alice"
            await getattr(a.svc.lifecycle, action)(vmid, actor="alice", reason=reason)
            await asyncio.wait_for(entered.wait(), timeout=10)
            left = _job(a.svc, vmid)
            assert left is not None and (left.kind, left.lease_holder) == (action, "a")
            await a.crash()

            taken = await until(
                lambda: (j := _job(b.svc, vmid)) is not None and j.lease_holder == "b" and j,
                what="b to take the job",
            )
            assert (taken.kind, taken.attempts) == (action, 2)
            await until(lambda: state() == then, what=f"b to finish the {action}")
            await until(lambda: _job(b.svc, vmid) is None, what="the job to end")
            assert calls == [vmid, vmid]  # a's cut short, b's went through
            container = b.svc.registry.get(vmid)
            assert container is not None and container.error is None
            assert backend.creates == 1 and list(backend.agents) == [vmid]
            assert (vmid in backend.running) is (then == "ready")
            if action == "restart":
                assert container.state_reason == reason  # the request's, kept by b
            if action == "rebuild":
                assert backend.systems[vmid] == 2  # a fresh system, provisioned again
                assert container.status is not None and container.status.runtime_installed

    asyncio.run(scenario())


def test_a_stop_left_without_a_job_is_given_one_at_start_and_finished(tmp_path: Path) -> None:
    """A container in ``stopping`` with no job (a version without lifecycle jobs stopped
    there) is stopped at the next start, by the job it is given."""
    backend = SimBackend()
    url = f"sqlite:///{tmp_path / 'zlh.db'}"

    async def scenario() -> None:
        async with replicas(url, tmp_path, backend, "node", stop_containers=False) as (first,):
            user = _user(first.svc.db, "alice")
            vmid = (await first.svc.provisioning.request(user, DevRequest(runtime="node"))).vmid
            registry = first.svc.registry
            await until(
                lambda: registry.get(vmid).state == "ready" and _job(first.svc, vmid) is None,  # type: ignore[union-attr]
                what="ready",
            )
            await first.crash()
            registry.update(vmid, state="stopping", state_reason="stopped by user alice")
            assert _job(first.svc, vmid) is None
        async with replicas(url, tmp_path, backend, "node") as (again,):
            await until(
                lambda: again.svc.registry.get(vmid).state == "stopped",  # type: ignore[union-attr]
                what="stopped",
            )
            await until(lambda: _job(again.svc, vmid) is None, what="the job to end")
            assert vmid not in backend.running

    asyncio.run(scenario())


def test_work_that_raises_leaves_its_job_to_run_out_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in a job's work neither holds the job forever nor loses it: the holder stops
    renewing, logs the error with its traceback, and the job waits for its lease to end."""
    backend = SimBackend()
    url = f"sqlite:///{tmp_path / 'zlh.db'}"

    async def scenario() -> None:
        async with replicas(url, tmp_path, backend, "node", scan=False, lease_s=60) as (node,):
            svc = node.svc
            user = _user(svc.db, "alice")
            vmid = (await svc.provisioning.request(user, DevRequest(runtime="node"))).vmid
            await until(
                lambda: svc.registry.get(vmid).state == "ready" and _job(svc, vmid) is None,  # type: ignore[union-attr]
                what="ready",
            )

            async def broken(_vmid: int) -> bool:
                raise RuntimeError("a bug in the stop")

            svc.lifecycle._stop = broken  # type: ignore[method-assign]
            await svc.lifecycle.stop(vmid, actor="alice", reason="stopped by user alice")
            held = _job(svc, vmid)
            assert held is not None and held.kind == "stop"
            await until(lambda: not svc.provisioning.tasks.busy(vmid), what="the task to end")
            left = _job(svc, vmid)
            assert left is not None and left.token == held.token  # neither ended nor renewed
            assert left.lease_expires_at == held.lease_expires_at
            assert svc.registry.get(vmid).state == "stopping"  # type: ignore[union-attr]

    with caplog.at_level("ERROR", logger="zlh.api.provisioning"):
        asyncio.run(scenario())
    failed = [r for r in caplog.records if "its stop job's work failed" in r.getMessage()]
    assert failed and failed[0].exc_info is not None
    assert "a bug in the stop" in str(failed[0].exc_info[1])


def test_at_start_each_replica_takes_up_only_its_share_of_the_containers(
    tmp_path: Path, pg_url: str
) -> None:
    """Re-finding the containers on the backend is split like the polls: no container is
    looked up (or started again) by two replicas, none by neither."""
    backend = SimBackend()

    async def scenario() -> None:
        async with replicas(pg_url, tmp_path, backend, "a", "b", scan=False) as (a, b):
            for replica in (a, b):
                membership = replica.svc.replicas
                assert membership is not None
                await asyncio.wait_for(membership.settled(), timeout=10)
            await until(
                lambda: a.svc.replicas.live == b.svc.replicas.live == ("a", "b"),  # type: ignore[union-attr]
                what="both replicas seeing both",
            )
            owner = _user(a.svc.db, "alice")
            vmids = set()
            for _ in range(20):
                vmid = _bare_row(a.svc.registry, owner).vmid
                a.svc.registry.update(vmid, state="ready", address="127.0.0.1", agent_port=9)
                vmids.add(vmid)
            asked: dict[str, set[int]] = {}
            looked_up: list[int] = []
            real_status = backend.status

            async def status(vmid: int) -> Any:
                looked_up.append(vmid)
                return await real_status(vmid)

            backend.status = status  # type: ignore[method-assign]
            for replica in (a, b):
                looked_up.clear()
                await replica.svc.provisioning.resume(replica.svc.replicas.owns)  # type: ignore[union-attr]
                asked[replica.name] = set(looked_up)
            assert asked["a"] and asked["b"]
            assert asked["a"] | asked["b"] == vmids and not asked["a"] & asked["b"]

    asyncio.run(scenario())


async def _ready_in_share_of(replica: Replica, user: User, *, of: int = 8) -> int:
    """A ready node 22 container that ``replica`` polls (requested until one hashes to it)."""
    replicas = replica.svc.replicas
    assert replicas is not None
    await until(lambda: len(replicas.live) == 2, what="both replicas live")
    registry = replica.svc.registry
    for _ in range(of):
        request = DevRequest(runtime="node", version="22")
        vmid = (await replica.svc.provisioning.request(user, request)).vmid
        await until(lambda: registry.get(vmid).state == "ready", what="ready")  # type: ignore[union-attr]  # noqa: B023
        if replicas.owns(vmid):
            return vmid
    raise AssertionError(f"none of {of} containers is {replica.name}'s to poll")


def test_a_runtime_change_whose_replica_dies_is_recorded_by_the_replica_taking_its_share(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """a takes ``PATCH`` node 22 → 20 for a container it polls and dies while the agent
    installs; b, polling a's share once a's lease ran out, records 20 and its pin when the
    agent reports it active."""
    backend = SimBackend()

    async def scenario() -> None:
        async with replicas(pg_url, tmp_path, backend, "a", "b") as (a, b):
            vmid = await _ready_in_share_of(a, _user(a.svc.db, "alice"))
            agent = backend.agents[vmid]
            agent.changes_go.clear()  # the install waits until a is gone
            container = a.svc.registry.get(vmid)
            assert container is not None
            changed = await a.svc.runtime_changes.change(container, "alice", "node", "20")
            assert changed.version == "22"
            assert changed.status is not None and changed.status.runtime_change is not None
            assert changed.status.runtime_change.state == "installing"
            await a.crash()

            def dead(*_args: object, **_changes: object) -> None:
                raise AssertionError("replica a was killed: nothing of it writes again")

            monkeypatch.setattr(a.svc.registry, "update", dead)
            agent.changes_go.set()

            def recorded() -> Container | None:
                row = b.svc.registry.get(vmid)
                return row if row is not None and row.version == "20" else None

            row = await until(recorded, what="b to record node 20")
            assert b.svc.poller.watched() >= {vmid}  # b's now: a's share came to it
            catalog = await b.svc.catalog.get()
            assert row.pins.runtime == catalog.resolve(ArtifactKind.RUNTIME, "node", "20")[1]
            assert row.state == "ready"
            assert row.status is not None and row.status.runtime_change is not None
            assert row.status.runtime_change.state == "active"

    asyncio.run(scenario())


def test_a_forged_agent_status_records_no_version_the_catalog_does_not_pin(
    tmp_path: Path,
) -> None:
    """A tenant root in its container answers the poller's ``/status`` itself, claiming
    another language, a version the catalog lacks, or a catalog version with other bytes: the
    record keeps node 22. What the catalog pins with those very bytes is recorded (the
    agent finished a change): the check is the digest, not a refusal of every change."""
    backend = SimBackend()
    url = f"sqlite:///{tmp_path / 'zlh.db'}"

    def claim(name: str, version: str, sha256: str) -> list[InstalledRuntime]:
        path = f"/opt/zlh/runtimes/{name}/{version}"
        return [InstalledRuntime(name=name, version=version, path=path, sha256=sha256, active=True)]

    async def scenario() -> None:
        async with replicas(url, tmp_path, backend, "node") as (node,):
            registry = node.svc.registry
            user = _user(node.svc.db, "alice")
            request = DevRequest(runtime="node", version="22")
            vmid = (await node.svc.provisioning.request(user, request)).vmid
            await until(lambda: registry.get(vmid).state == "ready", what="ready")  # type: ignore[union-attr]
            catalog = await node.svc.catalog.get()
            node20 = catalog.resolve(ArtifactKind.RUNTIME, "node", "20")[1].sha256
            python = catalog.resolve(ArtifactKind.RUNTIME, "python", "3.12")[1].sha256
            agent = backend.agents[vmid]
            for forged in [
                claim("python", "3.12", python),  # another language
                claim("node", "99", node20),  # no such version
                claim("node", "20", "f" * 64),  # other bytes
            ]:
                agent.claimed_runtimes = forged
                polls = agent.status_calls
                await until(lambda: agent.status_calls > polls + 1, what="polls of the forgery")  # noqa: B023
                row = registry.get(vmid)
                assert row is not None and (row.version, row.state) == ("22", "ready")
            agent.claimed_runtimes = claim("node", "20", node20)
            await until(lambda: registry.get(vmid).version == "20", what="node 20")  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_each_replica_measures_and_idle_stops_the_containers_of_its_share_only(
    tmp_path: Path, pg_url: str
) -> None:
    """Per-container use (the metrics) and idle auto-stop are each one replica's work per
    container: its share's owner asks the backend for its figures and stops it when idle."""
    backend = SimBackend()

    async def scenario() -> None:
        async with replicas(
            pg_url,
            tmp_path,
            backend,
            "a",
            "b",
            idle_stop_after=1,
            max_containers_per_user=6,
            max_running_per_user=6,
        ) as pair:
            for replica in pair:
                replica.svc.usage.bind_loop(asyncio.get_running_loop())
                members = replica.svc.replicas
                assert members is not None
                await until(lambda m=members: len(m.live) == 2, what="both live")  # type: ignore[misc]
            a = pair[0]
            user = _user(a.svc.db, "alice")
            vmids = set()
            for _ in range(6):
                vmids.add((await a.svc.provisioning.request(user, DevRequest(runtime="node"))).vmid)
            registry = a.svc.registry

            def idle_all() -> bool:
                ready = registry.in_states([ContainerState.READY])
                due = [a.svc.lifecycle.idle_stop_at(c, None) for c in ready]
                idle = all(d is not None and d <= utcnow() for d in due)
                return len(ready) == len(vmids) and idle

            await until(idle_all, what="every container ready and idle")
            shares = {r.name: {v for v in vmids if r.svc.replicas.owns(v)} for r in pair}  # type: ignore[union-attr]
            assert shares["a"] and shares["b"], shares  # six vmids over two replicas
            assert shares["a"] | shares["b"] == vmids and not shares["a"] & shares["b"]
            for replica in pair:
                figures = await asyncio.to_thread(replica.svc.usage.snapshot)
                assert set(figures) == shares[replica.name]
            for replica in pair:
                assert set(await replica.svc.lifecycle.stop_idle()) == shares[replica.name]

    asyncio.run(scenario())
