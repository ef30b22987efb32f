"""API tokens over real HTTP: made with a session, used as Bearer, held to their scopes, and
refused (from a hostile tenant's seat) whenever they should be."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from sqlalchemy import update
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from agent_sim import SimBackend
from api_kit import (
    PASSWORD,
    PINS,
    login,
    make_app,
    ready_on_a_real_agent,
    running,
    services,
    wait_for,
)
from support import ConsoleClient, pid_gone
from zlh.api import accounts
from zlh.api.apitokens import ApiTokens, Scope
from zlh.api.containers import Quota
from zlh.api.db import ApiToken, Database, User
from zlh.api.db.models import utcnow
from zlh.api.deps import declared_scope
from zlh.api.errors import InvalidRequest, NotAuthenticated, NotFound

ALL_USER_SCOPES = ["containers:read", "containers:write", "files", "console"]


@dataclass
class World:
    client: httpx.Client
    app: Any
    vmid: int  # alice's, ready, with a real agent (files and console)
    bob_vmid: int  # bob's
    alice: dict[str, str]
    bob: dict[str, str]
    root: dict[str, str]

    @property
    def ws_base(self) -> str:
        return "ws" + str(self.client.base_url).rstrip("/").removeprefix("http")

    def token(self, session: dict[str, str], name: str, scopes: list[str], **extra: Any) -> Any:
        made = self.client.post(
            "/api/tokens", json={"name": name, "scopes": scopes, **extra}, headers=session
        )
        assert made.status_code == 201, made.text
        return made.json()


def bearer(made: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {made['token']}"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("tokens")
    app = make_app(base / "data", SimBackend(), poll_interval_s=3600.0, api_token_max_days=90)
    svc = services(app)
    alice = accounts.create_user(svc.db, "alice", PASSWORD)
    bob = accounts.create_user(svc.db, "bob", PASSWORD)
    accounts.create_user(svc.db, "root", PASSWORD, admin=True)
    quota = Quota(5, 5)
    container = svc.registry.allocate(
        owner=alice, runtime="node", version="22", addons=[], pins=PINS, quota=quota
    )
    bobs = svc.registry.allocate(
        owner=bob, runtime="node", version="22", addons=[], pins=PINS, quota=quota
    )
    workspace = base / "workspace"
    workspace.mkdir()
    with ready_on_a_real_agent(app, container, base), running(app) as client:
        yield World(
            client=client,
            app=app,
            vmid=container.vmid,
            bob_vmid=bobs.vmid,
            alice=login(client, "alice"),
            bob=login(client, "bob"),
            root=login(client, "root"),
        )


def test_a_token_is_shown_once_listed_without_its_secret_and_works_as_bearer(
    world: World,
) -> None:
    made = world.token(world.alice, "laptop", ["containers:read"], expires_in_days=7)
    assert made["token"].startswith("zlh_") and len(made["token"]) == 47
    assert made["scopes"] == ["containers:read"] and made["owner"] == "alice"
    assert made["lastUsedAt"] is None and made["expired"] is False
    created = made["createdAt"]
    assert made["expiresAt"] > created
    listed = world.client.get("/api/tokens", headers=world.alice).json()
    mine = next(t for t in listed if t["id"] == made["id"])
    assert "token" not in mine and made["token"] not in json.dumps(listed)
    containers = world.client.get("/api/dev", headers=bearer(made))
    assert containers.status_code == 200
    assert [c["vmid"] for c in containers.json()] == [world.vmid]
    listed = world.client.get("/api/tokens", headers=world.alice).json()
    assert next(t for t in listed if t["id"] == made["id"])["lastUsedAt"] is not None
    # Only a digest is stored: the secret is nowhere in the database's files.
    with services(world.app).db.session() as session:
        row = session.get(ApiToken, made["id"])
        assert row is not None
        assert row.secret_sha256 == hashlib.sha256(made["token"].encode()).hexdigest()
    db_files = list(services(world.app).settings.data_dir.glob("zlh.db*"))
    assert db_files
    for db_file in db_files:
        assert made["token"].encode() not in db_file.read_bytes(), db_file


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"name": "x", "scopes": ["containers:reed"]}, "scopes.0", "Input should be"),
        ({"name": "x", "scopes": []}, "scopes", "at least 1"),
        ({"name": "", "scopes": ["files"]}, "name", "at least 1"),
        ({"name": "n" * 65, "scopes": ["files"]}, "name", "at most 64"),
        (
            {"name": "x", "scopes": ["files"], "expires_in_days": 0},
            "expires_in_days",
            "greater than or equal to 1",
        ),
        ({"name": "x", "scopes": ["files"], "expires_in_days": 91}, "expires_in_days", "1 to 90"),
    ],
)
def test_bad_token_requests_are_422_naming_the_problem(
    world: World, body: dict[str, Any], field: str, words: str
) -> None:
    refused = world.client.post("/api/tokens", json=body, headers=world.alice)
    assert refused.status_code == 422, refused.text
    problem = refused.json()["validations"][0]
    assert problem["field"] == field and words in problem["detail"], problem


def test_a_duplicate_name_is_422_until_the_first_is_revoked(world: World) -> None:
    first = world.token(world.alice, "dup", ["files"])
    again = world.client.post(
        "/api/tokens", json={"name": "dup", "scopes": ["files"]}, headers=world.alice
    )
    assert again.status_code == 422 and "already have a token named 'dup'" in again.text
    # Another user's same name is theirs.
    world.token(world.bob, "dup", ["files"])
    assert world.client.delete(f"/api/tokens/{first['id']}", headers=world.alice).status_code == 204
    world.token(world.alice, "dup", ["files"])


def test_no_expiry_given_is_the_maximum(world: World) -> None:
    made = world.token(world.alice, "longest", ["containers:read"])
    with services(world.app).db.session() as session:
        row = session.get(ApiToken, made["id"])
        assert row is not None
        assert row.expires_at - row.created_at == timedelta(days=90)


@pytest.mark.parametrize("scope", ["admin", "metrics"])
def test_a_non_admin_cannot_make_an_admin_or_metrics_token(world: World, scope: str) -> None:
    refused = world.client.post(
        "/api/tokens", json={"name": f"want-{scope}", "scopes": [scope]}, headers=world.alice
    )
    assert refused.status_code == 403 and scope in refused.json()["message"]
    assert world.token(world.root, f"ops-{scope}", [scope])["scopes"] == [scope]


def test_a_read_token_cannot_create_stop_or_delete(world: World) -> None:
    reader = bearer(world.token(world.alice, "reader", ["containers:read"]))
    base = f"/api/dev/{world.vmid}"
    before = world.client.get(base, headers=reader).json()
    for method, path, body in [
        ("POST", "/api/dev", {"runtime": "node"}),
        ("POST", f"{base}/stop", None),
        ("DELETE", base, None),
        ("PATCH", base, {"runtime": "node", "version": "20"}),
    ]:
        refused = world.client.request(method, path, json=body, headers=reader)
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.json()["message"] == "this API token lacks the containers:write scope"
    after = world.client.get(base, headers=reader).json()
    assert (after["state"], after["runtime"]) == (before["state"], before["runtime"])
    assert len(world.client.get("/api/dev", headers=reader).json()) == 1


def test_a_token_of_alice_on_bobs_container_is_404(world: World) -> None:
    everything = bearer(world.token(world.alice, "everything", ALL_USER_SCOPES))
    for method, path in [
        ("GET", f"/api/dev/{world.bob_vmid}"),
        ("POST", f"/api/dev/{world.bob_vmid}/stop"),
        ("DELETE", f"/api/dev/{world.bob_vmid}"),
        ("GET", f"/api/dev/{world.bob_vmid}/files"),
    ]:
        refused = world.client.request(method, path, headers=everything)
        assert refused.status_code == 404, (method, path, refused.text)
        assert refused.json()["message"] == f"no container {world.bob_vmid}"


def test_the_files_relay_needs_the_files_scope(world: World) -> None:
    path = f"/api/dev/{world.vmid}/files"
    reader = bearer(world.token(world.alice, "no-files", ["containers:read", "console"]))
    refused = world.client.get(path, headers=reader)
    assert refused.status_code == 403 and "files scope" in refused.json()["message"]
    uploaded = world.client.put(
        f"{path}/content", params={"path": "t.txt"}, content=b"x", headers=reader
    )
    assert uploaded.status_code == 403
    files = bearer(world.token(world.alice, "files", ["files"]))
    put = world.client.put(f"{path}/content", params={"path": "t.txt"}, content=b"x", headers=files)
    assert put.status_code == 201, put.text
    assert world.client.get(path, headers=files).status_code == 200


def test_a_token_in_the_query_string_is_ignored(world: World) -> None:
    made = world.token(world.alice, "in-url", ["containers:read"])
    for name in ("token", "access_token", "api_token"):
        refused = world.client.get("/api/dev", params={name: made["token"]})
        assert refused.status_code == 401, refused.text


def test_expired_revoked_unknown_and_malformed_tokens_are_401_naming_why(world: World) -> None:
    expiring = world.token(world.alice, "expiring", ["containers:read"])
    revoked = world.token(world.alice, "revoked", ["containers:read"])
    assert world.client.get("/api/dev", headers=bearer(expiring)).status_code == 200
    with services(world.app).db.session() as session:
        session.execute(
            update(ApiToken).where(ApiToken.id == expiring["id"]).values(expires_at=utcnow())
        )
    deleted = world.client.delete(f"/api/tokens/{revoked['id']}", headers=world.alice)
    assert deleted.status_code == 204
    unknown = "zlh_" + "A" * 43
    for header, message in [
        (bearer(expiring), "API token 'expiring' expired"),
        (bearer(revoked), "API token 'revoked' was revoked"),
        ({"Authorization": f"Bearer {unknown}"}, "unknown API token"),
        ({"Authorization": "Bearer zlh_short"}, "malformed API token"),
    ]:
        refused = world.client.get("/api/dev", headers=header)
        assert refused.status_code == 401 and refused.json()["message"] == message
        assert refused.headers["www-authenticate"] == "Bearer"
    listed = world.client.get("/api/tokens", headers=world.alice).json()
    assert next(t for t in listed if t["id"] == expiring["id"])["expired"] is True
    assert revoked["id"] not in [t["id"] for t in listed]


def test_another_users_token_is_404_to_revoke_and_admins_see_and_revoke_all(
    world: World,
) -> None:
    bobs = world.token(world.bob, "bobs", ["containers:read"])
    assert world.client.delete(f"/api/tokens/{bobs['id']}", headers=world.alice).status_code == 404
    assert world.client.delete("/api/tokens/999999", headers=world.alice).status_code == 404
    assert world.client.get("/api/dev", headers=bearer(bobs)).status_code == 200
    everyone = world.client.get("/api/tokens", params={"all": "true"}, headers=world.alice)
    assert everyone.status_code == 403
    mine = world.client.get("/api/tokens", headers=world.alice).json()
    assert {t["owner"] for t in mine} == {"alice"}
    listed = world.client.get("/api/tokens", params={"all": "true"}, headers=world.root).json()
    assert bobs["id"] in [t["id"] for t in listed] and {"alice", "bob"} <= {
        t["owner"] for t in listed
    }
    assert world.client.delete(f"/api/tokens/{bobs['id']}", headers=world.root).status_code == 204
    assert world.client.get("/api/dev", headers=bearer(bobs)).status_code == 401
    audit = services(world.app).audit.entries(actor="root", limit=5)
    assert ("token-revoke", "bobs of bob") in [(e.action, e.detail) for e in audit]


def test_a_token_cannot_make_list_or_revoke_tokens(world: World) -> None:
    admin = bearer(world.token(world.root, "root-all", [s.value for s in Scope]))
    victim = world.token(world.root, "victim", ["containers:read"])
    for method, path, body in [
        ("POST", "/api/tokens", {"name": "longer", "scopes": ["admin"]}),
        ("GET", "/api/tokens", None),
        ("DELETE", f"/api/tokens/{victim['id']}", None),
    ]:
        refused = world.client.request(method, path, json=body, headers=admin)
        assert refused.status_code == 403, refused.text
        assert refused.json()["message"].startswith("API tokens are not accepted")
    assert world.client.get("/api/dev", headers=bearer(victim)).status_code == 200


def test_a_disabled_users_tokens_stop_and_a_password_change_keeps_them(world: World) -> None:
    svc = services(world.app)
    accounts.create_user(svc.db, "carol", PASSWORD)
    carol = login(world.client, "carol")
    made = bearer(world.token(carol, "carol-ci", ["containers:read"]))
    change = {"current": PASSWORD, "new": "carol's new password"}
    assert world.client.post("/api/auth/password", json=change, headers=carol).status_code == 204
    assert world.client.get("/api/dev", headers=made).status_code == 200
    accounts.disable_user(svc.db, "carol")
    refused = world.client.get("/api/dev", headers=made)
    assert refused.status_code == 401 and refused.json()["message"] == "account disabled"


def test_every_use_and_what_it_did_is_audited_with_the_tokens_name(world: World) -> None:
    writer = bearer(world.token(world.alice, "deployer", ["files"]))
    path = f"/api/dev/{world.vmid}/files"
    made = world.client.post(f"{path}/mkdir", json={"path": "by-token"}, headers=writer)
    assert made.status_code == 201, made.text
    entries = services(world.app).audit.entries(actor="alice", limit=10)
    by_token = [(e.action, e.detail, e.via) for e in entries if e.via == "token deployer"]
    assert ("file-mkdir", "made workspace/by-token", "token deployer") in by_token
    assert ("token-use", f"POST {path}/mkdir", "token deployer") in by_token
    creates = [e.detail for e in entries if e.action == "token-create"]
    assert any(d.startswith("deployer: files, expires ") for d in creates)
    admin_view = world.client.get("/api/audit", params={"actor": "alice"}, headers=world.root)
    assert {"action": "file-mkdir", "via": "token deployer"}.items() <= next(
        e for e in admin_view.json() if e["action"] == "file-mkdir"
    ).items()
    # A session's own actions carry no token.
    world.client.post(f"{path}/mkdir", json={"path": "by-session"}, headers=world.alice)
    latest = services(world.app).audit.entries(actor="alice", limit=1)[0]
    assert latest.detail == "made workspace/by-session" and latest.via is None


def test_the_console_needs_the_console_scope_and_closes_when_the_token_is_revoked(
    world: World,
) -> None:
    url = f"{world.ws_base}/api/dev/{world.vmid}/console"
    files = bearer(world.token(world.alice, "console-less", ["files"]))
    with pytest.raises(InvalidStatus) as refused, connect(url, additional_headers=files):
        pass
    assert refused.value.response.status_code == 403
    assert "console scope" in json.loads(refused.value.response.body or b"{}")["message"]
    made = world.token(world.alice, "terminal", ["console"])
    with connect(url, additional_headers=bearer(made), open_timeout=10) as ws:
        shell = int(ConsoleClient(ws).ask("$$"))
        revoked = world.client.delete(f"/api/tokens/{made['id']}", headers=world.alice)
        assert revoked.status_code == 204
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=10)
        assert ws.close_code == 1008
    wait_for(lambda: pid_gone(shell), what="the shell of the revoked token to be killed")


def test_the_openapi_document_declares_the_bearer_schemes_per_operation(world: World) -> None:
    schema = world.client.get("/api/openapi.json", headers=world.alice).json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["apiToken"]["scheme"] == schemes["session"]["scheme"] == "bearer"
    paths = schema["paths"]
    assert paths["/api/dev"]["get"]["security"] == [
        {"session": []},
        {"apiToken": ["containers:read"]},
    ]
    assert paths["/api/dev/{vmid}/stop"]["post"]["security"][1] == {
        "apiToken": ["containers:write"]
    }
    assert paths["/api/dev/{vmid}/files"]["get"]["security"][1] == {"apiToken": ["files"]}
    assert paths["/api/audit"]["get"]["security"][1] == {"apiToken": ["admin"]}
    assert paths["/api/tokens"]["post"]["security"] == [{"session": []}]
    assert "security" not in paths["/api/auth/login"]["post"]


# -- storage, on SQLite and PostgreSQL ---------------------------------------------------------


def test_tokens_are_stored_as_digests_and_verified(db: Database) -> None:
    user = accounts.create_user(db, "dora", PASSWORD)
    tokens = ApiTokens(db, max_days=30)
    row, secret = tokens.create(user, "ci", [Scope.FILES, Scope.CONTAINERS_READ], 1)
    assert row.scopes == ["containers:read", "files"]
    use = tokens.verify(secret, "GET /api/dev")
    assert use.user.username == "dora" and use.scopes == {"files", "containers:read"}
    with db.session() as session:
        stored = session.get(ApiToken, row.id)
        assert stored is not None and stored.last_used_at is not None
        assert secret not in stored.secret_sha256
    other = accounts.create_user(db, "eve", PASSWORD)
    with pytest.raises(NotFound):
        tokens.revoke(row.id, other)
    tokens.revoke(row.id, user)
    with pytest.raises(NotAuthenticated, match="revoked"):
        tokens.verify(secret, "GET /api/dev")
    assert tokens.revoked_keys() == [f"api-token:{row.id}"]
    again, _ = tokens.create(user, "ci", [Scope.FILES], 30)  # a revoked name is free again
    assert again.id != row.id
    with pytest.raises(InvalidRequest, match="already have a token named 'ci'"):
        tokens.create(user, "ci", [Scope.CONSOLE], 30)  # but a live one's is not
    with db.session() as session:
        session.execute(update(User).where(User.id == user.id).values(disabled=True))
    assert sorted(tokens.revoked_keys()) == sorted([f"api-token:{row.id}", f"api-token:{again.id}"])


def test_revoked_tokens_surface_in_the_feed_sync_set(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'zlh.db'}")
    db.migrate()
    try:
        user = accounts.create_user(db, "fred", PASSWORD)
        tokens = ApiTokens(db, max_days=30)
        row, _ = tokens.create(user, "a", [Scope.CONSOLE], 1)
        assert tokens.revoked_keys() == []
        with db.session() as session:
            session.execute(
                update(ApiToken)
                .where(ApiToken.id == row.id)
                .values(revoked_at=utcnow(), expires_at=utcnow() - timedelta(seconds=1))
            )
        assert tokens.revoked_keys() == []  # expired: refused anyway, nothing to remember
    finally:
        db.dispose()


# -- every route declares a scope or refuses tokens --------------------------------------------

# Routes that take no credential at all: signing in, health, the portal's static pages.
PUBLIC = {
    ("POST", "/api/auth/login"),
    ("GET", "/api/health"),
    ("GET", "/api/health/ready"),
    ("GET", "/"),
    ("GET", "/login"),
    ("GET", "/password"),
    ("GET", "/tokens"),
    ("GET", "/new"),
    ("GET", "/c/{vmid}"),
    ("GET", "/c/{vmid}/{tab}"),
}


def _routes(app: Any) -> list[tuple[str, str, Any]]:
    """(method, path, route) of every route the app serves; WebSocket routes as "WS"."""
    found = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIWebSocketRoute):
            found.append(("WS", context.path_format, route))
        elif isinstance(route, APIRoute):
            found.extend((m, context.path_format, route) for m in sorted(context.methods or ()))
    return found


def _fill(path: str, vmid: int) -> str:
    values = {
        "vmid": vmid,
        "token_id": 1,
        "runtime": "node",
        "version": "20",
        "tab": "files",
        "username": "nobody",
        "port": 3000,
    }
    return path.format(**values)


def _status(world: World, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
    if method == "WS":
        with (
            pytest.raises(InvalidStatus) as refused,
            connect(world.ws_base + path, additional_headers=headers),
        ):
            pass
        response = refused.value.response
        return response.status_code, json.loads(response.body or b"{}").get("message", "")
    answer = world.client.request(method, path, headers=headers)
    return answer.status_code, answer.json().get("message", "") if answer.content else ""


def test_every_route_declares_a_scope_or_refuses_tokens(world: World) -> None:
    """Walks the app's routes: a route that declares a scope refuses a token with every other
    scope (403 naming it); one that declares none refuses a token with every scope, unless it
    takes no credential at all (and then answers without one)."""
    every = world.token(world.root, "walk-all", [s.value for s in Scope])
    checked = 0
    for method, template, route in _routes(world.app):
        path = _fill(template, world.vmid)
        scope = declared_scope(route)
        if (method, template) in PUBLIC:
            assert scope is None
            assert world.client.request(method, path).status_code != 401, path
            continue
        if scope is None:
            status, message = _status(world, method, path, bearer(every))
            assert status == 403, (method, template, status, message)
            assert message.startswith("API tokens are not accepted"), (method, template)
        else:
            others = [s.value for s in Scope if s is not scope]
            lacking = world.token(world.root, f"walk-{checked}", others)
            status, message = _status(world, method, path, bearer(lacking))
            assert (status, message) == (403, f"this API token lacks the {scope} scope"), (
                method,
                template,
            )
        checked += 1
    assert checked >= 30


# -- zlh token ----------------------------------------------------------------------------------


def _zlh(world: World, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ZLH_PASSWORD": PASSWORD, "ZLH_URL": str(world.client.base_url)}
    return subprocess.run(
        [sys.executable, "-m", "zlh.cli", "token", *argv, "--user", "alice"],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=60,
    )


def test_zlh_token_creates_lists_and_revokes(world: World) -> None:
    made = _zlh(world, "create", "from-cli", "--scope", "containers:read", "--scope", "files")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("zlh_") and "shown only now" in made.stderr
    assert world.client.get("/api/dev", headers={"Authorization": f"Bearer {secret}"}).is_success
    listed = _zlh(world, "list")
    line = next(x for x in listed.stdout.splitlines() if "from-cli" in x)
    assert "containers:read,files" in line and secret not in listed.stdout
    token_id = line.split()[0]
    again = _zlh(world, "create", "from-cli", "--scope", "files")
    assert again.returncode == 1 and "already have a token named 'from-cli'" in again.stderr
    assert again.stderr.count("\n") == 1 and "Traceback" not in again.stderr
    assert _zlh(world, "revoke", token_id).stdout.strip() == f"token {token_id} revoked"
    refused = world.client.get("/api/dev", headers={"Authorization": f"Bearer {secret}"})
    assert refused.status_code == 401
    gone = _zlh(world, "revoke", token_id)
    assert gone.returncode == 1 and f"no token {token_id}" in gone.stderr
