"""Storage on both databases: migrations, accounts, sessions, containers, audit."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import text

from api_kit import PINS
from zlh.api import accounts
from zlh.api.audit import Action, AuditLog
from zlh.api.auth import TokenService
from zlh.api.clientaddr import request_address
from zlh.api.containers import ContainerRegistry, Quota
from zlh.api.db import Base, ContainerState, Database, User
from zlh.api.db.engine import MIGRATIONS
from zlh.api.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotAuthenticated,
    NotFound,
    QuotaExceeded,
)
from zlh.api.events import EventBus
from zlh.routefeed import RouteFeed
from zlh.schemas import AgentStatus


def registry(db: Database) -> ContainerRegistry:
    return ContainerRegistry(db, EventBus(), RouteFeed())


def allocate(reg: ContainerRegistry, owner: User, quota: int = 100) -> int:
    container = reg.allocate(
        owner=owner, runtime="node", version="22", addons=[], pins=PINS, quota=Quota(quota, quota)
    )
    return container.vmid


def status_doc(installed: bool) -> AgentStatus:
    return AgentStatus(
        workspace_root="/home/dev/workspace", runtime_installed=installed, agent_version="test"
    )


def test_migrations_are_idempotent_and_match_the_models(db: Database) -> None:
    db.migrate()  # a second time: nothing to do
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_users_are_unique_and_passwords_verify(db: Database) -> None:
    accounts.create_user(db, "alice", "password-1", admin=True)
    with pytest.raises(Conflict, match="already exists"):
        accounts.create_user(db, "alice", "password-2")
    assert accounts.authenticate(db, "alice", "password-1") is not None
    assert accounts.authenticate(db, "alice", "wrong-password") is None
    assert accounts.authenticate(db, "nobody", "password-1") is None
    accounts.set_password(db, "alice", "password-3")
    assert accounts.authenticate(db, "alice", "password-1") is None
    assert accounts.authenticate(db, "alice", "password-3") is not None
    assert [(u.username, u.is_admin) for u in accounts.list_users(db)] == [("alice", True)]


@pytest.mark.parametrize(
    ("username", "password", "field"),
    [("Bad Name", "password-1", "username"), ("bob", "short", "password")],
)
def test_bad_user_input_names_the_field(
    db: Database, username: str, password: str, field: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        accounts.create_user(db, username, password)
    assert caught.value.validations[0].field == field
    assert accounts.list_users(db) == []


def test_disabling_revokes_every_session_at_once(db: Database) -> None:
    user = accounts.create_user(db, "bob", "password-1")
    tokens = TokenService(db, b"k" * 32, ttl_s=60)
    first, second = tokens.issue(user), tokens.issue(user)
    assert tokens.verify(first.token)[0].username == "bob"
    revoked = accounts.disable_user(db, "bob")
    assert sorted(revoked) == sorted([first.sid, second.sid])
    for issued in (first, second):
        with pytest.raises(NotAuthenticated):
            tokens.verify(issued.token)
    assert sorted(tokens.revoked_since(None)) == sorted(revoked)
    with pytest.raises(NotFound):
        accounts.disable_user(db, "nobody")


def test_password_and_role_changes_revoke_sessions(db: Database) -> None:
    user = accounts.create_user(db, "dave", "password-1")
    tokens = TokenService(db, b"k" * 32, ttl_s=60)
    mine, other = tokens.issue(user), tokens.issue(user)
    with pytest.raises(Forbidden, match="current password is wrong"):
        accounts.change_password(db, user.id, "wrong-password", "password-2", keep=mine.sid)
    with pytest.raises(InvalidRequest) as weak:
        accounts.change_password(db, user.id, "password-1", "short", keep=mine.sid)
    assert weak.value.validations[0].field == "new"
    assert tokens.verify(other.token)[0].username == "dave"  # refusals changed nothing
    assert accounts.change_password(db, user.id, "password-1", "password-2", keep=mine.sid) == [
        other.sid
    ]
    assert tokens.verify(mine.token)[1] == mine.sid
    with pytest.raises(NotAuthenticated):
        tokens.verify(other.token)
    assert accounts.authenticate(db, "dave", "password-2") is not None

    assert accounts.set_password(db, "dave", "password-3") == [mine.sid]  # an operator's reset
    granted = tokens.issue(user)
    assert accounts.set_admin(db, "dave", True) == [granted.sid]
    assert accounts.set_admin(db, "dave", True) == []  # no change, nothing ended
    admin_session = tokens.issue(accounts.get_user(db, "dave"))
    assert accounts.set_admin(db, "dave", False) == [admin_session.sid]
    with pytest.raises(NotAuthenticated):
        tokens.verify(admin_session.token)


def test_the_audit_table_of_0001_gains_the_address_column_and_keeps_its_rows(
    db_url: str,
) -> None:
    database = Database(db_url)
    try:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with database.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")
            connection.execute(
                text(
                    "INSERT INTO audit (at, actor, action, vmid, detail) "
                    "VALUES (:at, 'alice', 'login', NULL, 'from 10.0.0.1')"
                ),
                {"at": datetime(2026, 1, 1)},
            )
        database.migrate()
        log = AuditLog(database)
        token = request_address.set("198.51.100.7")
        try:
            log.record("alice", Action.LOGOUT)
        finally:
            request_address.reset(token)
        log.record("system", Action.FAILED, 100, "no request")
        rows = [(e.actor, e.action, e.address) for e in reversed(log.entries())]
        assert rows == [
            ("alice", "login", None),
            ("alice", "logout", "198.51.100.7"),
            ("system", "failed", None),
        ]
    finally:
        database.dispose()


def test_sessions_keep_utc_times(db: Database) -> None:
    user = accounts.create_user(db, "carol", "password-1")
    issued = TokenService(db, b"k" * 32, ttl_s=60).issue(user)
    assert issued.expires_at.tzinfo is UTC
    stored = accounts.get_user(db, "carol").created_at
    assert stored.tzinfo is UTC


def test_vmids_are_allocated_in_order_and_quota_holds(db: Database) -> None:
    owner = accounts.create_user(db, "dave", "password-1")
    reg = registry(db)
    assert [allocate(reg, owner, quota=2) for _ in range(2)] == [100, 101]
    with pytest.raises(QuotaExceeded, match="holds 2 of 2"):
        allocate(reg, owner, quota=2)
    assert [c.vmid for c in reg.list_for(owner.id)] == [100, 101]
    assert reg.get(100) is not None and reg.get(100).state == "requested"  # type: ignore[union-attr]


def test_a_deleted_containers_vmid_is_never_handed_out_again(db: Database) -> None:
    owner = accounts.create_user(db, "gina", "password-1")
    reg = registry(db)
    first = allocate(reg, owner)
    reg.remove(first)
    assert allocate(reg, owner) == first + 1


def test_concurrent_requests_never_share_a_vmid(db: Database) -> None:
    owner = accounts.create_user(db, "erin", "password-1")
    reg = registry(db)
    with ThreadPoolExecutor(8) as pool:
        vmids = list(pool.map(lambda _: allocate(reg, owner), range(16)))
    assert sorted(vmids) == list(range(100, 116))


def test_updates_write_only_on_change(db: Database) -> None:
    owner = accounts.create_user(db, "frank", "password-1")
    reg = registry(db)
    vmid = allocate(reg, owner)
    first = reg.update(vmid, state=ContainerState.PROVISIONING, status=status_doc(False))
    assert first is not None
    again = reg.update(vmid, state=ContainerState.PROVISIONING, status=status_doc(False))
    assert again is not None and again.updated_at == first.updated_at
    changed = reg.update(vmid, status=status_doc(True))
    assert changed is not None and changed.updated_at > first.updated_at
    assert reg.update(99_999, state=ContainerState.READY) is None
    assert reg.feed.snapshot().routes[vmid].state == "provisioning"
    reg.remove(vmid)
    assert reg.get(vmid) is None
    assert vmid not in reg.feed.snapshot().routes


def test_audit_lists_newest_first_with_filters(db: Database) -> None:
    log = AuditLog(db)
    log.record("alice", Action.CREATE, 100, "node 22")
    log.record("bob", Action.CREATE, 101)
    log.record("alice", Action.DELETE, 100)
    entries = log.entries()
    assert [(e.actor, e.action, e.vmid) for e in entries] == [
        ("alice", "delete", 100),
        ("bob", "create", 101),
        ("alice", "create", 100),
    ]
    assert [e.action for e in log.entries(vmid=100)] == ["delete", "create"]
    assert [e.vmid for e in log.entries(actor="bob")] == [101]
    assert [e.action for e in log.entries(before_id=entries[0].id, limit=1)] == ["create"]
    assert entries[0].at.tzinfo is UTC


def test_a_pool_container_is_taken_once_whoever_races_for_it(db: Database) -> None:
    """One conditional UPDATE decides: registries of their own (as separate processes have)
    race for one ready pool container; one request gets it, the rest get None, and once taken
    it can no longer be deleted as the pool's."""
    pool_owner = accounts.create_user(db, "pool-stand-in", "password-1")
    users = [accounts.create_user(db, f"racer{i}", "password-1") for i in range(8)]
    reg = registry(db)
    pooled = reg.allocate(
        owner=pool_owner,
        runtime="node",
        version="22",
        addons=["code-server"],
        pins=PINS,
        quota=Quota(0, 0),  # not checked for the pool
        pool=True,
    )
    reg.update(pooled.vmid, state=ContainerState.READY)

    def take(user: User) -> int | None:
        taken = registry(db).take_from_pool(
            pooled.vmid, owner=user, quota=Quota(3, 3), name=None, reason="race"
        )
        return None if taken is None else taken.owner_id

    with ThreadPoolExecutor(8) as pool:
        winners = [w for w in pool.map(take, users) if w is not None]
    assert len(winners) == 1
    record = reg.get(pooled.vmid)
    assert record is not None
    assert (record.owner_id, record.pool, record.state) == (winners[0], False, "creating")
    assert record.next_nonce is not None and record.next_nonce != record.agent_nonce
    assert reg.leave_pool(pooled.vmid) is False
    assert reg.get(pooled.vmid).state == "creating"  # type: ignore[union-attr]
