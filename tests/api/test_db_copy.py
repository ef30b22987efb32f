"""``zlh db copy``: a node's SQLite database into PostgreSQL, as an operator runs it (the real
CLI in a subprocess, a real PostgreSQL cluster), then an API on the copy.

The node's data is made through its API (logins, a token, containers ready, stopped, failed
and shared, a public preview, the warm pool), so every table holds what the platform itself
writes. After the copy, every row reads back equal through the models on both databases, and
an API on PostgreSQL with the same data dir's keys logs the users in, takes their token, and
inserts new users, tokens, audit rows and containers without a key collision.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx
import pg_cluster
import psycopg
import pytest
from sqlalchemy import select, update

from agent_sim import SimBackend
from api_kit import (
    PASSWORD,
    add_cli_users,
    add_user,
    login,
    make_app,
    running,
    services,
    sse_events,
    wait_for,
)
from api_kit import zlh_up as zlh_up_process
from support import free_port, free_port_pair, zlh
from zlh.api import accounts
from zlh.api.db import AuditEntry, Base, ContainerState, Database, User
from zlh.api.db.models import POOL_USER


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, read through the models (UTC times, parsed JSON), by key."""
    db = Database(url)
    try:
        with db.engine.connect() as connection:
            return {
                table.name: [
                    tuple(row)
                    for row in connection.execute(
                        select(table).order_by(*table.primary_key.columns)
                    )
                ]
                for table in Base.metadata.sorted_tables
            }
    finally:
        db.dispose()


def summary(stdout: str) -> dict[str, int]:
    """The per-table row counts ``zlh db copy`` printed."""
    lines = [line.split() for line in stdout.splitlines() if line.startswith("  ")]
    return {parts[0]: int(parts[1]) for parts in lines}


def copy(data: Path, url: str, *extra: str, check: bool = True) -> Any:
    return zlh("db", "copy", "--data-dir", str(data), "--to", url, *extra, check=check)


def state_of(client: Any, vmid: int, headers: dict[str, str]) -> str:
    return str(client.get(f"/api/dev/{vmid}", headers=headers).json()["state"])


def build_node(data: Path) -> dict[str, Any]:
    """A node on SQLite with what every table can hold; what the test checks afterwards."""
    backend = SimBackend()
    app = make_app(data, backend, warm_pool=1)
    for name, admin in (("alice", False), ("bob", False), ("root", True)):
        add_user(app, name, admin=admin)
    svc = services(app)
    with running(app) as client:
        # The warm pool: one node container by default, owned by the pool's user row.
        wait_for(
            lambda: any(c.pool for c in svc.registry.in_states([ContainerState.READY])),
            what="a ready pool container",
        )
        alice = login(client, "alice")
        made = client.post(
            "/api/tokens",
            json={"name": "ci", "scopes": ["containers:read", "containers:write"]},
            headers=alice,
        )
        assert made.status_code == 201, made.text
        vmids = {}
        for name in ("shared", "stopped", "failed"):
            backend.fail_create = "disk full" if name == "failed" else None
            answer = client.post("/api/dev", json={"runtime": "node", "name": name}, headers=alice)
            assert answer.status_code == 202, answer.text
            vmids[name] = answer.json()["vmid"]
            final = "failed" if name == "failed" else "ready"
            wait_for(lambda v=vmids[name], f=final: state_of(client, v, alice) == f, what=name)
        backend.fail_create = None
        shared = vmids["shared"]
        shared_ok = client.post(
            f"/api/dev/{shared}/shares", json={"user": "bob", "role": "use"}, headers=alice
        )
        assert shared_ok.status_code == 201, shared_ok.text
        assert client.put(f"/api/dev/{shared}/previews/3000/public", headers=alice).is_success
        assert client.post(f"/api/dev/{vmids['stopped']}/stop", headers=alice).status_code == 202
        wait_for(lambda: state_of(client, vmids["stopped"], alice) == "stopped", what="stopped")
    return {"vmids": vmids, "token": made.json()["token"]}


@pytest.fixture
def pg_url(postgres_server: str) -> str:
    return pg_cluster.fresh_database(postgres_server)


def test_a_node_copied_to_postgresql_keeps_users_tokens_and_containers_and_inserts_anew(
    tmp_path: Path, pg_url: str
) -> None:
    data = tmp_path / "data"
    node = build_node(data)
    before = dump(f"sqlite:///{data / 'zlh.db'}")
    assert all(before[t] for t in ("users", "api_tokens", "containers", "shares", "audit"))
    assert before["public_previews"] and before["sessions"] and before["kv"]
    assert any(row[1] == POOL_USER for row in before["users"])  # the warm pool's owner

    done = copy(data, pg_url)
    assert summary(done.stdout) == {table: len(rows) for table, rows in before.items()}
    assert "counts verified per table" in done.stdout and "jwt.key" in done.stdout
    after = dump(pg_url)
    assert after == before  # every row, every column: times, JSON, booleans

    # An API on PostgreSQL with the same data dir's keys, and a backend that holds none of the
    # old containers (as a Proxmox cluster would not hold the old host's LXC containers).
    app = make_app(data, SimBackend(), database_url=pg_url)
    svc = services(app)
    old_vmids = {row[0] for row in before["containers"]}
    top_user = max(row[0] for row in before["users"])
    with running(app) as client:
        alice = login(client, "alice")  # the argon2 hash made on SQLite still verifies
        by_token = {"Authorization": f"Bearer {node['token']}"}
        listed = client.get("/api/dev", headers=by_token)
        assert listed.status_code == 200, listed.text
        assert {c["vmid"] for c in listed.json()} == set(node["vmids"].values())
        bobs = client.get("/api/dev", headers=login(client, "bob")).json()
        assert [c["vmid"] for c in bobs] == [node["vmids"]["shared"]]
        vmids = node["vmids"]
        assert state_of(client, vmids["stopped"], alice) == "stopped"
        # What ran on a backend the new one does not hold ends failed, saying so.
        wait_for(lambda: state_of(client, vmids["shared"], alice) == "failed", what="failed")
        error = client.get(f"/api/dev/{vmids['shared']}", headers=alice).json()["error"]
        assert "disappeared from the backend" in error
        # A stopped one stays so; starting it goes back to stopped, with the backend's reason.
        assert client.post(f"/api/dev/{vmids['stopped']}/start", headers=alice).status_code == 202
        wait_for(
            lambda: (
                "no container"
                in str(client.get(f"/api/dev/{vmids['stopped']}", headers=alice).json())
            ),
            what="the start's failure",
        )
        assert state_of(client, vmids["stopped"], alice) == "stopped"

        # New rows on every serial key, and a new container above every vmid ever used.
        dave = accounts.create_user(svc.db, "dave", PASSWORD)
        assert dave.id == top_user + 1
        login(client, "dave")
        made = client.post(
            "/api/tokens", json={"name": "ci2", "scopes": ["containers:read"]}, headers=alice
        )
        assert made.status_code == 201, made.text
        deleted = client.delete(f"/api/dev/{vmids['shared']}", headers=alice)
        assert deleted.status_code == 204, deleted.text
        answer = client.post("/api/dev", json={"runtime": "python"}, headers=alice)
        assert answer.status_code == 202, answer.text
        vmid = answer.json()["vmid"]
        assert vmid > max(old_vmids)
        wait_for(lambda: state_of(client, vmid, alice) == "ready", what="the new container")
        audit = client.get("/api/audit?limit=1000", headers=login(client, "root")).json()
    old_audit = {row[0] for row in before["audit"]}
    assert old_audit < {entry["id"] for entry in audit}


def test_a_target_that_holds_rows_is_refused_and_nothing_is_written(
    tmp_path: Path, pg_url: str
) -> None:
    data = tmp_path / "data"
    add_cli_users(data)
    copy(data, pg_url)
    before = dump(pg_url)
    accounts_db = Database(f"sqlite:///{data / 'zlh.db'}")
    accounts.create_user(accounts_db, "erin", PASSWORD)
    accounts_db.dispose()

    again = copy(data, pg_url, check=False)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines() == [
        line for line in again.stderr.splitlines() if line.startswith("zlh")
    ]
    assert "already holds rows (users: 3" in again.stderr, again.stderr
    assert dump(pg_url) == before


def test_a_dry_run_copies_and_verifies_then_leaves_the_target_empty(
    tmp_path: Path, pg_url: str
) -> None:
    data = tmp_path / "data"
    add_cli_users(data)
    dry = copy(data, pg_url, "--dry-run")
    assert summary(dry.stdout)["users"] == 3, dry.stdout
    assert "nothing written" in dry.stdout
    with psycopg.connect(pg_url.replace("+psycopg", "")) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)  # even the migrations were rolled back


def test_a_target_at_another_revision_is_refused(tmp_path: Path, pg_url: str) -> None:
    data = tmp_path / "data"
    add_cli_users(data)
    migrated = Database(pg_url)
    migrated.migrate()
    migrated.dispose()
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0007_previews'")
    refused = copy(data, pg_url, check=False)
    assert refused.returncode == 1
    assert "at revision 0007_previews" in refused.stderr, refused.stderr


def test_the_copy_is_refused_while_the_node_runs(tmp_path: Path, pg_url: str) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    add_cli_users(data)
    store.mkdir()
    with zlh_up_process(data, store, free_port_pair()):
        refused = copy(data, pg_url, check=False)
    assert refused.returncode == 2
    assert "the platform is running" in refused.stderr, refused.stderr
    # Once it stopped, the same copy goes through, even past a socket a killed one left.
    stale = data / "run" / "api.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(stale))
    assert stale.exists()
    assert copy(data, pg_url).returncode == 0


def test_an_unreachable_target_or_a_missing_driver_is_one_line_and_the_source_is_untouched(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    add_cli_users(data)
    before = dump(f"sqlite:///{data / 'zlh.db'}")
    refused = copy(data, f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/zlh", check=False)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "cannot connect to" in refused.stderr
    no_driver = copy(data, "postgresql+asyncpg://nobody@127.0.0.1/zlh", check=False)
    assert no_driver.returncode == 1 and no_driver.stderr.count("\n") == 1
    assert "postgresql+psycopg://" in no_driver.stderr, no_driver.stderr
    assert dump(f"sqlite:///{data / 'zlh.db'}") == before


@pytest.mark.slow
def test_one_host_moved_onto_postgresql_keeps_its_running_container(
    node_store: Path, tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`zlh up` (process backend, a real agent with a real Node runtime), stopped, copied, and
    started again with database_url: the same backend holds the container, so it is found
    (not failed), its agent answers the API with the secret derived from the copied nonce and
    the data dir's agent key, and what the API writes now goes to PostgreSQL."""
    add_cli_users(tmp_path)
    port = free_port_pair()
    with (
        zlh_up_process(tmp_path, node_store, port),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        alice = login(client, "alice")
        created = client.post("/api/dev", json={"runtime": "node"}, headers=alice)
        assert created.status_code == 202, created.text
        vmid = created.json()["vmid"]
        assert sse_events(client, f"/api/dev/{vmid}/events", alice)[-1]["state"] == "ready"
    copy(tmp_path, pg_url)
    monkeypatch.setenv("ZLH_DATABASE_URL", pg_url)
    with (
        zlh_up_process(tmp_path, node_store, port),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        alice = login(client, "alice")
        wait_for(lambda: state_of(client, vmid, alice) == "ready", what="ready on PostgreSQL")
        record = client.get(f"/api/dev/{vmid}", headers=alice).json()
        assert record["status"]["runtimeInstalled"] is True
        files = client.get(f"/api/dev/{vmid}/files", headers=alice)  # relayed to its agent
        assert files.status_code == 200, files.text
        assert client.delete(f"/api/dev/{vmid}", headers=alice).status_code == 204
    with psycopg.connect(pg_url.replace("+psycopg", "")) as conn:
        actions = conn.execute("SELECT action FROM audit WHERE vmid = %s", (vmid,)).fetchall()
    assert ("delete",) in actions


def test_a_node_on_a_database_url_is_copied_from_there(
    tmp_path: Path, postgres_server: str, pg_url: str
) -> None:
    """The source is the settings' database_url when there is one (here another PostgreSQL
    database, read in one repeatable-read snapshot), not the data dir's SQLite file."""
    data = tmp_path / "data"
    data.mkdir()
    source_url = pg_cluster.fresh_database(postgres_server)
    (data / "api.toml").write_text(f'database_url = "{source_url}"\n')
    source = Database(source_url)
    source.migrate()
    for name in ("alice", "bob"):
        accounts.create_user(source, name, PASSWORD)
    source.dispose()
    done = copy(data, pg_url)
    assert summary(done.stdout)["users"] == 2, done.stdout
    assert not (data / "zlh.db").exists()
    assert dump(pg_url) == dump(source_url)


def test_a_row_postgresql_rejects_rolls_back_every_table_and_the_schema(
    tmp_path: Path, pg_url: str
) -> None:
    """SQLite checks no string length; PostgreSQL does. The copy stops at that row, names its
    table, and leaves the target as it was: not even the migrations stay."""
    data = tmp_path / "data"
    add_cli_users(data)
    source = Database(f"sqlite:///{data / 'zlh.db'}")
    with source.session() as session:
        session.add(AuditEntry(actor="root", action="login"))  # audit is copied before users
        session.execute(update(User).where(User.username == "bob").values(username="b" * 80))
    source.dispose()
    failed = copy(data, pg_url, check=False)
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1, failed.stderr
    assert "nothing written: users" in failed.stderr and "too long" in failed.stderr
    with psycopg.connect(pg_url.replace("+psycopg", "")) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)
