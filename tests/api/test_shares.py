"""Sharing a container: alice shares hers with bob to ``view`` (status only) or to ``use``
(the IDE ticket, the files, the console, a start); carol, whom it is not shared with, learns
nothing. Taking the share back ends bob's open console at once and his access on the next
request. Real HTTP to a real agent's files and console routes; every change audited."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from agent_sim import SimBackend
from api_kit import PASSWORD, PINS, login, make_app, ready_on_a_real_agent, running, services
from support import ConsoleClient
from zlh.api import accounts
from zlh.api.containers import Quota


@dataclass
class World:
    client: httpx.Client
    vmid: int
    app: Any
    heads: dict[str, dict[str, str]]

    def as_(self, name: str) -> dict[str, str]:
        return self.heads[name]

    def share(self, user: str, role: str, *, by: str = "alice") -> httpx.Response:
        body = {"user": user, "role": role}
        return self.client.post(f"/api/dev/{self.vmid}/shares", json=body, headers=self.as_(by))

    def unshare(self, user: str, *, by: str = "alice") -> httpx.Response:
        return self.client.delete(f"/api/dev/{self.vmid}/shares/{user}", headers=self.as_(by))

    def console_url(self) -> str:
        base = "ws" + str(self.client.base_url).rstrip("/").removeprefix("http")
        return f"{base}/api/dev/{self.vmid}/console"

    def audit(self) -> list[tuple[str, str, str]]:
        entries = services(self.app).audit.entries(vmid=self.vmid)
        return [(e.actor, e.action, e.detail) for e in entries]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    app = make_app(tmp_path / "data", SimBackend(), poll_interval_s=3600.0)
    svc = services(app)
    alice = accounts.create_user(svc.db, "alice", PASSWORD)
    for name in ("bob", "carol"):
        accounts.create_user(svc.db, name, PASSWORD)
    accounts.create_user(svc.db, "root", PASSWORD, admin=True)
    container = svc.registry.allocate(
        owner=alice, runtime="node", version="22", addons=[], pins=PINS, quota=Quota(5, 5)
    )
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "alice.txt").write_text("hers")
    with ready_on_a_real_agent(app, container, tmp_path), running(app) as client:
        heads = {n: login(client, n) for n in ("alice", "bob", "carol", "root")}
        yield World(client=client, vmid=container.vmid, app=app, heads=heads)


def _reach(world: World, who: str) -> dict[str, int]:
    """The status codes ``who`` gets from each kind of route of alice's container; none of
    them changes it (stop is asked of a container that is ready, and only owners may)."""
    client, vmid, head = world.client, world.vmid, world.as_(who)
    return {
        "status": client.get(f"/api/dev/{vmid}", headers=head).status_code,
        "ide": client.get(f"/api/dev/{vmid}/ide-url", headers=head).status_code,
        "files": client.get(f"/api/dev/{vmid}/files", headers=head).status_code,
        "shares": client.get(f"/api/dev/{vmid}/shares", headers=head).status_code,
        "share": client.post(
            f"/api/dev/{vmid}/shares", json={"user": "carol", "role": "use"}, headers=head
        ).status_code,
        "delete": client.request(
            "DELETE", f"/api/dev/{vmid}/runtimes/node/20", headers=head
        ).status_code,
    }


NOTHING = {"status": 404, "ide": 404, "files": 404, "shares": 404, "share": 404, "delete": 404}


def _console_refused(world: World, who: str) -> int:
    with (
        pytest.raises(InvalidStatus) as refused,
        connect(world.console_url(), additional_headers=world.as_(who)),
    ):
        pass
    return refused.value.response.status_code


def test_a_view_share_shows_the_status_and_opens_nothing(world: World) -> None:
    assert _reach(world, "bob") == NOTHING
    created = world.share("bob", "view")
    assert created.status_code == 201, created.text
    assert created.json()["shares"][0]["user"] == "bob"
    assert created.json()["shares"][0]["role"] == "view"

    assert _reach(world, "bob") == {**NOTHING, "status": 200}
    assert _console_refused(world, "bob") == 404
    seen = world.client.get(f"/api/dev/{world.vmid}", headers=world.as_("bob")).json()
    assert (seen["owner"], seen["role"], seen["shares"]) == ("alice", "view", [])
    listed = world.client.get("/api/dev", headers=world.as_("bob")).json()
    assert [(c["vmid"], c["owner"], c["role"]) for c in listed] == [(world.vmid, "alice", "view")]
    assert _reach(world, "carol") == NOTHING  # not shared with her: it does not exist


def test_a_use_share_opens_the_ide_files_and_console_but_not_the_owners_controls(
    world: World,
) -> None:
    assert world.share("bob", "use").status_code == 201
    reach = _reach(world, "bob")
    assert reach == {**NOTHING, "status": 200, "ide": 200, "files": 200}
    with connect(world.console_url(), additional_headers=world.as_("bob"), open_timeout=10) as ws:
        assert ConsoleClient(ws).ask("$(cat alice.txt)") == "hers"
    for action in ("stop", "restart", "rebuild"):
        answer = world.client.post(f"/api/dev/{world.vmid}/{action}", headers=world.as_("bob"))
        assert answer.status_code == 404, (action, answer.text)
    gone = world.client.delete(f"/api/dev/{world.vmid}", headers=world.as_("bob"))
    assert gone.status_code == 404
    assert world.client.get(f"/api/dev/{world.vmid}", headers=world.as_("alice")).status_code == 200
    assert not [e for e in world.audit() if e[0] == "bob" and e[1] != "open"]
    # Shared containers count toward nobody's quota but their owner's.
    me = world.client.get("/api/auth/me", headers=world.as_("bob")).json()
    assert me["containersHeld"] == 0
    assert ("bob", "open", "console") in world.audit()


def test_taking_a_share_back_closes_the_open_console_and_shuts_every_route(
    world: World,
) -> None:
    assert world.share("bob", "use").status_code == 201
    with connect(world.console_url(), additional_headers=world.as_("bob"), open_timeout=10) as ws:
        ConsoleClient(ws).ask("$$")
        assert world.unshare("bob").status_code == 204
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=10)
        assert (ws.close_code, ws.close_reason) == (1008, "access revoked")
    assert _reach(world, "bob") == NOTHING
    assert world.unshare("bob").status_code == 404  # nothing left to take back
    assert [(a, act, d) for a, act, d in world.audit() if act in {"share", "unshare"}] == [
        ("alice", "unshare", "bob"),
        ("alice", "share", "bob use"),
    ]


def test_turning_use_into_view_closes_the_console_too(world: World) -> None:
    assert world.share("bob", "use").status_code == 201
    with connect(world.console_url(), additional_headers=world.as_("bob"), open_timeout=10) as ws:
        ConsoleClient(ws).ask("$$")
        changed = world.share("bob", "view")
        assert changed.status_code == 200  # the same share, another role
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=10)
    assert (
        world.client.get(f"/api/dev/{world.vmid}/files", headers=world.as_("bob")).status_code
        == 404
    )


def test_a_guest_may_drop_their_own_share_and_nobody_elses(world: World) -> None:
    assert world.share("bob", "use").status_code == 201
    assert world.share("carol", "view").status_code == 201
    assert world.unshare("carol", by="bob").status_code == 404
    assert world.unshare("bob", by="carol").status_code == 404
    assert world.unshare("bob", by="bob").status_code == 204
    shares = world.client.get(f"/api/dev/{world.vmid}/shares", headers=world.as_("alice")).json()
    assert [s["user"] for s in shares] == ["carol"]


def test_admins_see_and_manage_shares(world: World) -> None:
    assert world.share("bob", "view").status_code == 201
    admin = world.as_("root")
    seen = world.client.get(f"/api/dev/{world.vmid}", headers=admin).json()
    assert [(s["user"], s["role"]) for s in seen["shares"]] == [("bob", "view")]
    assert world.unshare("bob", by="root").status_code == 204
    assert ("root", "unshare", "bob") in world.audit()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user": "nobody", "role": "use"}, "no user 'nobody'"),
        ({"user": "alice", "role": "use"}, "alice owns container"),
        ({"user": "bob", "role": "admin"}, "role"),
        ({"user": "", "role": "use"}, "user"),
        ({"user": "bob"}, "role"),
    ],
)
def test_a_share_that_makes_no_sense_is_422_naming_it_and_changes_nothing(
    world: World, body: dict[str, str], field: str
) -> None:
    answer = world.client.post(
        f"/api/dev/{world.vmid}/shares", json=body, headers=world.as_("alice")
    )
    assert answer.status_code == 422, answer.text
    assert field in json.dumps(answer.json())
    shares = world.client.get(f"/api/dev/{world.vmid}/shares", headers=world.as_("alice"))
    assert shares.json() == []


def test_a_disabled_user_gets_no_share(world: World) -> None:
    accounts.disable_user(services(world.app).db, "carol")
    answer = world.share("carol", "use")
    assert answer.status_code == 422
    assert answer.json()["message"] == "user carol is disabled"
