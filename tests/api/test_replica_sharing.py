"""Two replicas of the API on one real PostgreSQL database, each a real uvicorn server.

Replica ``a`` provisions (simulated agents over real HTTP); replica ``b`` polls nothing (its
poll intervals are an hour, so whatever it learns of a's containers came through the
database's NOTIFY or its snapshot), except where a test says otherwise. They share the data
dir, hence the key files, as replicas must.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pg_cluster
import psycopg
import pytest
from fastapi import FastAPI

from agent_sim import SimBackend
from api_kit import PINS, add_user, login, make_app, running, services, sse_events, wait_for
from zlh.api import accounts
from zlh.api import app as app_module
from zlh.api.audit import AuditLog
from zlh.api.containers import ContainerRegistry, Quota
from zlh.api.db import ContainerState, Database, ShareRole, User
from zlh.api.errors import Conflict
from zlh.api.events import EventBus
from zlh.api.follower import Follower, libpq_url
from zlh.api.replicas import Membership
from zlh.api.shares import Shares
from zlh.routefeed import FeedRoute, RouteFeed

T = TypeVar("T")

# b never polls an agent within a test: what it knows of a's containers, it was told.
QUIET = {"poll_interval_s": 3600.0, "poll_interval_provisioning_s": 3600.0}


@pytest.fixture
def pg_url(postgres_server: str) -> str:
    return pg_cluster.fresh_database(postgres_server)


def on_loop(app: FastAPI, fn: Callable[[], T]) -> T:
    """``fn()`` run on ``app``'s event loop (the feed and the bus live there)."""
    loop = services(app).registry._loop
    assert loop is not None

    async def call() -> T:
        return fn()

    return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)


def route_on(app: FastAPI, vmid: int) -> FeedRoute | None:
    return on_loop(app, lambda: services(app).feed.snapshot().routes.get(vmid))


def revoked_on(app: FastAPI) -> frozenset[str]:
    return on_loop(app, lambda: services(app).feed.snapshot().revoked_sessions)


def follower_of(app: FastAPI) -> Follower:
    follower: Follower = app.state.follower
    return follower


def membership(app: FastAPI) -> Membership:
    replicas = services(app).replicas
    assert replicas is not None, "a replica on PostgreSQL keeps a membership"
    return replicas


def sid_of(headers: dict[str, str]) -> str:
    payload = headers["Authorization"].removeprefix("Bearer ").split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=="))
    return str(claims["sid"])


def listeners(url: str, application_name: str) -> list[int]:
    """Backend pids of the connections with that application name."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,)
        ).fetchall()
    return [pid for (pid,) in rows]


Pair = tuple[FastAPI, httpx.Client, FastAPI, httpx.Client]


@contextmanager
def serving(tmp_path: Path, pg_url: str, **extra: Any) -> Iterator[Pair]:
    """Replicas a and b serving (settings ``extra`` on both), with alice and bob."""
    a = make_app(
        tmp_path,
        SimBackend(create_delay_s=0.3, step_s=0.3),
        database_url=pg_url,
        replica="a",
        **extra,
    )
    b = make_app(tmp_path, SimBackend(), database_url=pg_url, replica="b", **{**QUIET, **extra})
    add_user(a, "alice")
    add_user(a, "bob")
    with running(a) as on_a, running(b) as on_b:
        wait_for(lambda: follower_of(b).connects >= 1, what="b listening")
        wait_for(lambda: follower_of(a).connects >= 1, what="a listening")
        yield a, on_a, b, on_b


@pytest.fixture
def replicas(tmp_path: Path, pg_url: str) -> Iterator[Pair]:
    with serving(tmp_path, pg_url) as pair:
        yield pair


def allocated_on(a: FastAPI, *, seen_by: FastAPI) -> int:
    """Alice's new container recorded on ``a``, once ``seen_by`` has its route."""
    owner = accounts.get_user(services(a).db, "alice")
    registry = services(a).registry
    container = registry.allocate(
        owner=owner, runtime="node", version="22", addons=[], pins=PINS, quota=Quota(9, 9)
    )
    vmid = container.vmid
    wait_for(lambda: route_on(seen_by, vmid) is not None, what="the route on the other replica")
    return vmid


def test_sse_progress_and_the_route_of_a_container_provisioned_on_a_reach_b(
    tmp_path: Path, pg_url: str
) -> None:
    # Both poll, each its share: the container's progress is read on the replica whose
    # poller does not poll it, so all it streams came through the database.
    with serving(tmp_path, pg_url, poll_interval_s=0.2, poll_interval_provisioning_s=0.05) as (
        a,
        on_a,
        b,
        on_b,
    ):
        for replica in (a, b):
            wait_for(
                lambda replica=replica: membership(replica).live == ("a", "b"),  # type: ignore[misc]
                what="each replica seeing both",
            )
        alice = login(on_a, "alice")
        created = on_a.post(
            "/api/dev", json={"runtime": "node", "addons": ["code-server"]}, headers=alice
        )
        assert created.status_code == 202, created.text
        vmid = created.json()["vmid"]
        polled_by_a = membership(a).owns(vmid)
        assert polled_by_a != membership(b).owns(vmid)
        told, on_told = (b, on_b) if polled_by_a else (a, on_a)

        events = sse_events(on_told, f"/api/dev/{vmid}/events", alice, deadline_s=30)

        states = [e["state"] for e in events]
        assert states[-1] == "ready", events
        # More than the stream's first frame: it was told of each step as the other saw it.
        assert "provisioning" in states, states
        percents = [e["progress"]["percent"] for e in events if e.get("progress")]
        assert len(set(percents)) >= 2, events
        route = wait_for(
            lambda: (r := route_on(told, vmid)) and r.ready and r, what="the told one's route"
        )
        assert route.address == "127.0.0.1"

        # A share made on a lets bob in on b's front; taken back, it is gone there too.
        shared = on_a.post(
            f"/api/dev/{vmid}/shares", json={"user": "bob", "role": "use"}, headers=alice
        )
        assert shared.status_code == 201, shared.text
        bob_id = accounts.get_user(services(a).db, "bob").id
        wait_for(lambda: bob_id in route_on(b, vmid).guest_ids, what="bob's share on b")  # type: ignore[union-attr]
        assert on_a.delete(f"/api/dev/{vmid}/shares/bob", headers=alice).status_code == 204
        wait_for(lambda: not route_on(b, vmid).guest_ids, what="the share gone on b")  # type: ignore[union-attr]

        # Deleted on a: b's route goes.
        assert on_a.delete(f"/api/dev/{vmid}", headers=alice).status_code == 204
        wait_for(lambda: route_on(b, vmid) is None, timeout_s=30, what="b's route removed")


def test_a_session_revoked_on_a_reaches_b_within_a_second(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The periodic sync runs once a minute: within the test only a NOTIFY brings a revocation.
    monkeypatch.setattr(app_module, "REVOCATION_SYNC_S", 60.0)
    with serving(tmp_path, pg_url) as (a, on_a, b, _on_b):
        latencies = _revocation_latencies(a, on_a, b)
    print(
        f"revocation on a seen by b's feed: median {statistics.median(latencies) * 1000:.0f} ms,"
        f" max {max(latencies) * 1000:.0f} ms over {len(latencies)}"
    )
    assert max(latencies) < 1.0, latencies


def _revocation_latencies(a: FastAPI, on_a: httpx.Client, b: FastAPI) -> list[float]:
    """Seconds from each revocation on a to b's feed holding it: five logouts, then an
    operator's ``disable_user`` (another process) of a signed-in user."""
    latencies = []
    for _ in range(5):
        headers = login(on_a, "alice")
        sid = sid_of(headers)
        assert sid not in revoked_on(b)
        start = time.monotonic()
        assert on_a.post("/api/auth/logout", headers=headers).status_code == 204
        wait_for(lambda sid=sid: sid in revoked_on(b), timeout_s=5, what="b's feed revoked")  # type: ignore[misc]
        latencies.append(time.monotonic() - start)
    # Disabled by an operator's command in another process: its open sessions end on b too.
    headers = login(on_a, "bob")
    start = time.monotonic()
    assert accounts.disable_user(services(a).db, "bob") == [sid_of(headers)]
    wait_for(lambda: sid_of(headers) in revoked_on(b), timeout_s=5, what="bob's session on b")
    latencies.append(time.monotonic() - start)
    return latencies


def test_the_follower_survives_its_connection_killed_and_its_snapshot_catches_up(
    replicas: Pair, pg_url: str
) -> None:
    a, _on_a, b, _on_b = replicas
    registry = services(a).registry
    vmid = allocated_on(a, seen_by=b)
    name = follower_of(b).application_name
    for port in range(3000, 3005):
        (pid,) = listeners(pg_url, name)
        with psycopg.connect(libpq_url(pg_url), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(lambda pid=pid: pid not in listeners(pg_url, name), what="the listener gone")  # type: ignore[misc]
        registry.set_public(vmid, port, True)  # announced while b does not listen
        if not listeners(pg_url, name):
            break  # b missed that announcement: only its snapshot can bring it
    else:
        pytest.fail("b's follower was back before every change: the snapshot was never needed")
    start = time.monotonic()
    wait_for(lambda: port in route_on(b, vmid).public_ports, what="the missed change on b")  # type: ignore[union-attr]
    print(f"b reconnected and caught up {(time.monotonic() - start) * 1000:.0f} ms later")
    assert follower_of(b).connects >= 2
    # And it follows again: the next change arrives by NOTIFY.
    registry.update(vmid, state="failed", error="gone wrong")
    wait_for(lambda: route_on(b, vmid).state == "failed", what="the next change on b")  # type: ignore[union-attr]


def test_notifications_are_not_trusted_for_content(
    replicas: Pair,
    pg_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, _on_a, b, _on_b = replicas
    registry = services(a).registry
    vmid = allocated_on(a, seen_by=b)
    caplog.set_level(logging.WARNING, logger="zlh.api.notify")
    # Another role on the database sends what it likes: junk, a vmid that does not exist, a
    # real vmid with a forged "state" -- nothing but a re-read of the row follows.
    with psycopg.connect(libpq_url(pg_url), autocommit=True) as other:
        for payload in ("not-a-vmid", "1" * 5000, "-5", f"{vmid} ready", "99999999", str(vmid)):
            other.execute("SELECT pg_notify('zlh_containers', %s)", (payload,))
        # A flood of vmids that exist nowhere: re-read in rounds, it holds nothing up for long.
        flood = "SELECT count(pg_notify('zlh_containers', n::text)) FROM generate_series(%s, %s) n"
        other.execute(flood, (10**6, 10**6 + 69_999))
    assert route_on(b, vmid).state == "requested"  # type: ignore[union-attr]
    start = time.monotonic()
    registry.update(vmid, state="creating")  # announced after the junk: read after it too
    wait_for(lambda: route_on(b, vmid).state == "creating", what="the real change on b")  # type: ignore[union-attr]
    print(
        f"the change after a flood of 70,000 vmids reached b {time.monotonic() - start:.1f}s later"
    )
    assert route_on(b, 99999999) is None

    def ignored() -> list[str]:
        return [r.getMessage() for r in caplog.records if "names no vmid" in r.getMessage()]

    # Each replica (a follows too) logged each of the four payloads that name no vmid.
    wait_for(lambda: len(ignored()) == 8, what="8 ignored payloads logged")


def test_a_replica_reads_back_the_others_writes_but_not_its_own(
    replicas: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every write is announced to every listener, its writer's included; the writer, which
    delivered the change as it committed it, skips its own (told by the sender's pid)."""
    a, _on_a, b, _on_b = replicas
    on_a, on_b = allocated_on(a, seen_by=b), allocated_on(a, seen_by=b)
    read_back: dict[str, list[int]] = {"a": [], "b": []}
    for name, app in (("a", a), ("b", b)):
        registry = services(app).registry

        def recording(vmids: set[int], name: str = name, read: Any = registry.refresh) -> None:
            read_back[name].extend(sorted(vmids))
            read(vmids)

        monkeypatch.setattr(registry, "refresh", recording)
    services(a).registry.update(on_a, state="creating")
    # Committed after a's write, so every listener is told of it after a's.
    services(b).registry.update(on_b, state="creating")
    wait_for(
        lambda: on_b in read_back["a"] and on_a in read_back["b"], what="each read the other's"
    )
    assert read_back == {"a": [on_b], "b": [on_a]}
    assert route_on(a, on_b).state == route_on(b, on_a).state == "creating"  # type: ignore[union-attr]


def test_failed_logins_on_a_throttle_the_same_user_and_address_on_b(
    tmp_path: Path, pg_url: str
) -> None:
    throttle = {
        "login_free_failures": 2,
        "login_failures_per_address": 100,
        "login_backoff_base_s": 60.0,
    }
    with serving(tmp_path, pg_url, **throttle) as (_a, on_a, _b, on_b):
        _throttled_across(on_a, on_b)


def _throttled_across(on_a: httpx.Client, on_b: httpx.Client) -> None:
    wrong = {"username": "alice", "password": "not her password"}
    for _ in range(2):
        assert on_a.post("/api/auth/login", json=wrong).status_code == 401
    refused = on_b.post("/api/auth/login", json={**wrong, "password": "correct horse battery"})
    assert refused.status_code == 429, refused.text
    assert 55 <= int(refused.headers["Retry-After"]) <= 60
    assert "too many failed logins" in refused.json()["message"]
    login(on_b, "bob")  # another user from the same address is not slowed


def test_every_container_write_announces_its_vmid_on_commit_and_nothing_else_does(
    pg_url: str,
) -> None:
    """Each writer path of the registry (and of shares) sends ``zlh_containers`` with the
    vmid; a write that changes nothing, or is refused and rolled back, sends nothing."""
    db = Database(pg_url)
    db.migrate()
    try:
        _every_write_announces(db, pg_url)
    finally:
        db.dispose()


def _every_write_announces(db: Database, pg_url: str) -> None:
    registry = ContainerRegistry(db, EventBus(), RouteFeed())
    shares = Shares(db, registry, AuditLog(db))
    alice = accounts.create_user(db, "alice", "password-1")
    accounts.create_user(db, "bob", "password-1")
    pool_owner = accounts.create_user(db, "pool-stand-in", "password-1")

    def allocate(owner: User, *, pool: bool = False) -> int:
        return registry.allocate(
            owner=owner,
            runtime="node",
            version="22",
            addons=[],
            pins=PINS,
            quota=Quota(99, 99),
            pool=pool,
        ).vmid

    with psycopg.connect(libpq_url(pg_url), autocommit=True) as listener:
        listener.execute("LISTEN zlh_containers")

        def announced(action: Callable[[], object]) -> list[int]:
            """The vmids announced while ``action`` ran, up to the marker written after it."""
            action()
            marker = allocate(alice)  # a new container: announced once, after the action's
            seen = []
            for note in listener.notifies(timeout=5):
                if int(note.payload) == marker:
                    return seen
                seen.append(int(note.payload))
            raise AssertionError(f"no marker after {seen}")

        vmid = 0

        def first() -> None:
            nonlocal vmid
            vmid = allocate(alice)

        assert announced(first) == [vmid]
        assert announced(lambda: registry.update(vmid, address="10.0.0.9")) == [vmid]
        assert announced(lambda: registry.update(vmid, address="10.0.0.9")) == []  # no change
        stop = {"to": ContainerState.STOPPED, "reason": "test", "action": "stop"}
        with pytest.raises(Conflict):  # refused: rolled back, nothing sent
            registry.transition(vmid, allowed=[ContainerState.READY], **stop)  # type: ignore[arg-type]
        assert announced(lambda: None) == []
        assert announced(
            lambda: registry.transition(vmid, allowed=[ContainerState.REQUESTED], **stop)  # type: ignore[arg-type]
        ) == [vmid]
        assert announced(lambda: registry.set_public(vmid, 3000, True)) == [vmid]
        owned = registry.get(vmid)
        assert owned is not None
        assert announced(lambda: asyncio.run(shares.grant(owned, alice, "bob", ShareRole.USE))) == [
            vmid
        ]
        assert announced(lambda: asyncio.run(shares.revoke(owned, alice, "bob"))) == [vmid]
        pooled = allocate(pool_owner, pool=True)
        registry.update(pooled, state=ContainerState.READY)
        assert set(announced(lambda: None)) == {pooled}  # made, then made ready
        taken = lambda: registry.take_from_pool(  # noqa: E731
            pooled, owner=alice, quota=Quota(99, 99), name=None, reason="test"
        )
        assert announced(taken) == [pooled]
        assert announced(lambda: registry.leave_pool(pooled)) == []  # taken: not the pool's
        spare = allocate(pool_owner, pool=True)
        assert announced(lambda: None) == [spare]
        assert announced(lambda: registry.leave_pool(spare)) == [spare]
        assert announced(lambda: registry.remove(vmid)) == [vmid]


def test_a_single_node_on_sqlite_listens_to_nothing_and_still_delivers_in_process(
    tmp_path: Path,
) -> None:
    app = make_app(tmp_path, SimBackend())
    add_user(app, "alice")
    with running(app) as client:
        assert not hasattr(app.state, "follower")
        headers = login(client, "alice")
        assert client.post("/api/auth/logout", headers=headers).status_code == 204
        assert sid_of(headers) in revoked_on(app)  # at once: the route handler fed it
        vmid = (
            services(app)
            .registry.allocate(
                owner=accounts.get_user(services(app).db, "alice"),
                runtime="node",
                version="22",
                addons=[],
                pins=PINS,
                quota=Quota(9, 9),
            )
            .vmid
        )
        assert route_on(app, vmid) is not None
