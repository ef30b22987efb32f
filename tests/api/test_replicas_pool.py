"""One warm pool for two ``zlh up --backend process --replica`` processes on one real PostgreSQL
database, real agents and real pool builds: ``warm_pool`` is the platform's size, not each
replica's.

Both replicas start at the same moment (their first fills race); only the replica that leads
the fill duty builds, both hand out. Two requests at the same
moment, one on each replica, get two different containers (one from the pool); the take on
the replica that does not fill reaches the one that does, which builds the replacement. At no
moment does the pool hold more than one container.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pg_cluster
import pytest
from replica_kit import add_users, replicas_up
from sqlalchemy import select

from api_kit import login, wait_for
from zlh.api.db import Container, ContainerState, Database
from zlh.api.pool import FILL_DUTY
from zlh.api.replicas import owner

pytestmark = pytest.mark.slow

BUILD_S = 300.0
DEFAULT_REQUEST = {"runtime": "node", "addons": ["code-server"]}


def _pool_rows(db: Database) -> list[tuple[int, str]]:
    """(vmid, state) of the pool containers not on their way out."""
    with db.session() as session:
        rows = session.execute(
            select(Container.vmid, Container.state).where(
                Container.pool.is_(True), Container.state != ContainerState.DELETING.value
            )
        ).all()
    return [(vmid, str(state)) for vmid, state in rows]


def _one_ready(db: Database, *, not_vmid: int = 0) -> int:
    """The vmid of the pool's one ready container (other than ``not_vmid``), once it is; fails
    as soon as the pool holds more than one container."""

    def ready() -> int | None:
        rows = _pool_rows(db)
        assert len(rows) <= 1, f"the pool holds {rows}: built by more than one replica"
        found = [vmid for vmid, state in rows if state == "ready" and vmid != not_vmid]
        return found[0] if found else None

    vmid: int = wait_for(ready, timeout_s=BUILD_S, what="one ready pool container")
    return vmid


def test_two_replicas_keep_one_pool_hand_it_out_once_and_the_leader_refills_it(
    ide_store: Path, tmp_path: Path, postgres_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZLH_WARM_POOL", '{"node": 1}')
    db_url = pg_cluster.fresh_database(postgres_server)
    add_users(db_url, [("alice", False), ("bob", False)])
    db = Database(db_url)
    try:
        with (
            replicas_up(tmp_path, ide_store, db_url, at_once=True) as (a, b),
            httpx.Client(base_url=a.base_url, timeout=30) as on_a,
            httpx.Client(base_url=b.base_url, timeout=30) as on_b,
        ):
            pooled = _one_ready(db)
            print(f"2 replicas, warm_pool=1: {len(_pool_rows(db))} pool container(s) kept")
            leader, other = (on_a, on_b) if owner(FILL_DUTY, ["a", "b"]) == "a" else (on_b, on_a)
            alice, bob = login(other, "alice"), login(leader, "bob")

            def post(client: httpx.Client, auth: dict[str, str]) -> httpx.Response:
                return client.post("/api/dev", json=DEFAULT_REQUEST, headers=auth)

            with ThreadPoolExecutor(2) as threads:
                answers = list(threads.map(post, (other, leader), (alice, bob)))
            assert [r.status_code for r in answers] == [202, 202], [r.text for r in answers]
            vmids = [r.json()["vmid"] for r in answers]
            assert pooled in vmids and len(set(vmids)) == 2, (pooled, vmids)

            replacement = _one_ready(db, not_vmid=pooled)
            assert replacement not in vmids
            print(f"after a take: {len(_pool_rows(db))} pool container(s), {replacement} new")
            for client, auth, vmid in zip((other, leader), (alice, bob), vmids, strict=True):
                assert client.delete(f"/api/dev/{vmid}", headers=auth).status_code == 204
    finally:
        db.dispose()
