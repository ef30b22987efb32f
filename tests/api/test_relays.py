"""The API's files and console relays against a real agent (files + console routes) over HTTP."""

from __future__ import annotations

import json
import os
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
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
from zlh.api.containers import Quota
from zlh.api.routes.relays import ANSWER_MAX_BYTES

LIMIT = 128 * 1024


@dataclass
class World:
    client: httpx.Client
    vmid: int
    workspace: Path
    outside: Path
    alice: dict[str, str]
    bob: dict[str, str]
    app: Any

    @property
    def ws_base(self) -> str:
        return "ws" + str(self.client.base_url).rstrip("/").removeprefix("http")

    def audit(self) -> list[tuple[str, str, str]]:
        entries = services(self.app).audit.entries(vmid=self.vmid)
        return [(e.actor, e.action, e.detail) for e in entries]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("relays")
    app = make_app(base / "data", SimBackend(), poll_interval_s=3600.0)
    svc = services(app)
    alice = accounts.create_user(svc.db, "alice", PASSWORD)
    accounts.create_user(svc.db, "bob", PASSWORD)
    container = svc.registry.allocate(
        owner=alice, runtime="node", version="22", addons=[], pins=PINS, quota=Quota(5, 5)
    )
    workspace, outside = base / "workspace", base / "outside"
    workspace.mkdir()
    outside.mkdir()
    (outside / "canary").write_text("canary")
    (workspace / "out").symlink_to(outside)
    with (
        ready_on_a_real_agent(app, container, base, max_upload_bytes=LIMIT),
        running(app) as client,
    ):
        yield World(
            client=client,
            vmid=container.vmid,
            workspace=workspace,
            outside=outside,
            alice=login(client, "alice"),
            bob=login(client, "bob"),
            app=app,
        )


def test_owner_uploads_lists_downloads_moves_and_deletes(world: World) -> None:
    client, base = world.client, f"/api/dev/{world.vmid}/files"
    data = os.urandom(100_000)
    put = client.put(
        f"{base}/content", params={"path": "up.bin"}, content=data, headers=world.alice
    )
    assert put.status_code == 201, put.text
    assert put.json() == {"path": "up.bin", "display": "workspace/up.bin", "size": len(data)}
    assert (world.workspace / "up.bin").read_bytes() == data
    listing = client.get(base, headers=world.alice).json()
    assert {e["name"]: e["type"] for e in listing["entries"]}["out"] == "symlink"
    got = client.get(f"{base}/content", params={"path": "up.bin"}, headers=world.alice)
    assert got.status_code == 200 and got.content == data
    part = client.get(
        f"{base}/content",
        params={"path": "up.bin"},
        headers={**world.alice, "Range": "bytes=10-19"},
    )
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    made = client.post(f"{base}/mkdir", json={"path": "d/e", "parents": True}, headers=world.alice)
    assert made.status_code == 201
    moved = client.post(
        f"{base}/move", json={"source": "up.bin", "destination": "d/e/up.bin"}, headers=world.alice
    )
    assert moved.status_code == 200 and moved.json()["path"] == "d/e/up.bin"
    refused = client.delete(base, params={"path": "d"}, headers=world.alice)
    assert refused.status_code == 409 and "recursive=true" in refused.json()["message"]
    gone = client.delete(base, params={"path": "d", "recursive": "true"}, headers=world.alice)
    assert gone.status_code == 204
    assert not (world.workspace / "d").exists()
    actions = [(actor, action) for actor, action, _ in world.audit()]
    for action in ("file-upload", "file-mkdir", "file-move", "file-delete"):
        assert ("alice", action) in actions
    assert ("alice", "file-move", "moved workspace/up.bin to workspace/d/e/up.bin") in world.audit()
    entries = services(world.app).audit.entries(vmid=world.vmid, actor="alice")
    assert {e.address for e in entries} == {"127.0.0.1"}  # every entry names the client


def files_routes(vmid: int) -> list[tuple[str, str, dict[str, Any]]]:
    base = f"/api/dev/{vmid}/files"
    return [
        ("GET", base, {}),
        ("GET", f"{base}/content?path=canary.txt", {}),
        ("PUT", f"{base}/content?path=bob.txt", {"content": b"bob was here"}),
        ("POST", f"{base}/mkdir", {"json": {"path": "bobdir"}}),
        ("POST", f"{base}/move", {"json": {"source": "seed.txt", "destination": "bob.txt"}}),
        ("DELETE", f"{base}?path=seed.txt", {}),
    ]


@pytest.mark.parametrize("index", range(6))
def test_a_non_owner_gets_404_on_every_files_route_and_nothing_happens(
    world: World, index: int
) -> None:
    (world.workspace / "seed.txt").write_text("seed")
    before = sorted(os.listdir(world.workspace))
    for vmid in (world.vmid, 999_999):  # someone else's and one that does not exist: alike
        method, url, kwargs = files_routes(vmid)[index]
        response = world.client.request(method, url, headers=world.bob, **kwargs)
        assert response.status_code == 404, response.text
        assert response.json()["message"] == f"no container {vmid}"
    assert sorted(os.listdir(world.workspace)) == before


@pytest.mark.parametrize("index", range(6))
def test_no_session_is_401_on_every_files_route(world: World, index: int) -> None:
    method, url, kwargs = files_routes(world.vmid)[index]
    assert world.client.request(method, url, **kwargs).status_code == 401


@pytest.mark.parametrize(
    "path", ["../outside/canary", "out/canary", "%2e%2e/outside/canary", "/etc/passwd"]
)
def test_hostile_paths_through_the_relay_get_the_agents_400(world: World, path: str) -> None:
    base = f"/api/dev/{world.vmid}/files"
    for method, kwargs in (("GET", {}), ("PUT", {"content": b"pwned"})):
        response = world.client.request(
            method, f"{base}/content", params={"path": path}, headers=world.alice, **kwargs
        )
        assert response.status_code == 400, response.text
        assert response.json()["message"]
    assert os.listdir(world.outside) == ["canary"]
    assert (world.outside / "canary").read_text() == "canary"


def test_an_upload_over_the_agents_limit_is_413_and_leaves_nothing(world: World) -> None:
    response = world.client.put(
        f"/api/dev/{world.vmid}/files/content",
        params={"path": "huge.bin"},
        content=b"x" * (LIMIT + 1),
        headers=world.alice,
    )
    assert response.status_code == 413
    assert not (world.workspace / "huge.bin").exists()


def test_an_upload_cut_off_at_the_api_leaves_no_file_on_the_agent(world: World) -> None:
    url = urllib.parse.urlsplit(str(world.client.base_url))
    head = (
        f"PUT /api/dev/{world.vmid}/files/content?path=cut.bin HTTP/1.1\r\n"
        f"Host: {url.netloc}\r\nAuthorization: {world.alice['Authorization']}\r\n"
        f"Content-Length: {LIMIT}\r\n\r\n"
    )

    def temp_files() -> list[str]:
        return [n for n in os.listdir(world.workspace) if n.startswith(".zlh-upload-")]

    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(head.encode() + b"z" * (LIMIT // 2))
        wait_for(temp_files, what="the relayed upload to reach the agent")
    wait_for(lambda: not temp_files(), what="the agent to drop the cut upload")
    assert not (world.workspace / "cut.bin").exists()


def test_the_console_relays_a_shell_in_the_workspace_and_closing_kills_it(world: World) -> None:
    url = f"{world.ws_base}/api/dev/{world.vmid}/console?rows=33&cols=101"
    with connect(url, additional_headers=world.alice, open_timeout=10) as ws:
        term = ConsoleClient(ws)
        assert term.ask("$(pwd)") == str(world.workspace)
        assert term.ask("$(stty size)") == "33 101"
        ws.send(json.dumps({"type": "resize", "rows": 20, "cols": 70}))
        assert term.ask("$(stty size)") == "20 70"
        shell = int(term.ask("$$"))
    wait_for(lambda: pid_gone(shell), what="the relayed shell to be killed")
    assert ("alice", "open", "console") in world.audit()


@pytest.mark.parametrize(
    ("who", "vmid", "status"),
    [("bob", None, 404), ("bob", 999_999, 404), ("bob", 10**30, 404), ("nobody", None, 401)],
)
def test_a_non_owner_or_anonymous_console_is_refused_before_the_upgrade(
    world: World, who: str, vmid: int | None, status: int
) -> None:
    headers = world.bob if who == "bob" else {}
    url = f"{world.ws_base}/api/dev/{vmid or world.vmid}/console"
    with pytest.raises(InvalidStatus) as refused, connect(url, additional_headers=headers):
        pass
    assert refused.value.response.status_code == status
    if status == 404:
        assert json.loads(refused.value.response.body or b"{}")["message"].startswith(
            "no container"
        )


def test_logging_out_closes_an_open_console(world: World) -> None:
    session = login(world.client, "alice")
    url = f"{world.ws_base}/api/dev/{world.vmid}/console"
    with connect(url, additional_headers=session, open_timeout=10) as ws:
        term = ConsoleClient(ws)
        shell = int(term.ask("$$"))
        assert world.client.post("/api/auth/logout", headers=session).status_code in (200, 204)
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=10)
        assert ws.close_code == 1008
    wait_for(lambda: pid_gone(shell), what="the shell of the revoked session to be killed")


def _cookie(session: dict[str, str]) -> dict[str, str]:
    """The same session as the portal's cookie (what a browser sends), not as Bearer."""
    return {"Cookie": f"zlh_session={session['Authorization'].split()[1]}"}


def test_a_cross_origin_upload_with_the_cookie_is_403_and_writes_nothing(world: World) -> None:
    url = f"/api/dev/{world.vmid}/files/content"
    cookie = _cookie(world.alice)
    forged = world.client.put(
        url,
        params={"path": "forged.txt"},
        content=b"x",
        headers={**cookie, "Origin": "https://evil.example"},
    )
    assert forged.status_code == 403 and forged.json()["detail"] == "cross-origin"
    assert not (world.workspace / "forged.txt").exists()
    own = {**cookie, "Origin": str(world.client.base_url).rstrip("/")}
    made = world.client.put(url, params={"path": "own.txt"}, content=b"x", headers=own)
    assert made.status_code == 201


def test_a_console_upgrade_with_the_cookie_needs_this_sites_origin(world: World) -> None:
    url = f"{world.ws_base}/api/dev/{world.vmid}/console"
    cookie = _cookie(world.alice)
    for origin in ("https://evil.example", None):
        with (
            pytest.raises(InvalidStatus) as refused,
            connect(url, origin=origin, additional_headers=cookie),  # type: ignore[arg-type]
        ):
            pass
        assert refused.value.response.status_code == 403
        assert json.loads(refused.value.response.body or b"{}")["detail"] == "cross-origin"
    own = str(world.client.base_url).rstrip("/")
    with connect(url, origin=own, additional_headers=cookie, open_timeout=10) as ws:  # type: ignore[arg-type]
        assert ConsoleClient(ws).ask("$(pwd)") == str(world.workspace)


def test_a_password_change_closes_the_consoles_of_the_other_sessions(world: World) -> None:
    svc = services(world.app)
    accounts.create_user(svc.db, "root", PASSWORD, admin=True)  # admins open any console
    old, current = login(world.client, "root"), login(world.client, "root")
    url = f"{world.ws_base}/api/dev/{world.vmid}/console"
    with connect(url, additional_headers=old, open_timeout=10) as ws:
        shell = int(ConsoleClient(ws).ask("$$"))
        change = {"current": PASSWORD, "new": "a new password for root"}
        changed = world.client.post("/api/auth/password", json=change, headers=current)
        assert changed.status_code == 204, changed.text
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=5)
        assert ws.close_code == 1008
    wait_for(lambda: pid_gone(shell), what="the shell of the old session to be killed")
    assert world.client.get("/api/auth/me", headers=old).status_code == 401
    assert world.client.get("/api/auth/me", headers=current).status_code == 200


def test_an_agent_streaming_a_listing_without_end_gets_502_not_the_apis_memory(
    world: World,
) -> None:
    """Root in a container can put any server on the agent's port: one that answers a listing
    with an endless body is cut off at the relay's limit, and the API answers 502."""
    svc = services(world.app)
    sent = [0]
    listener = socket.create_server(("127.0.0.1", 0))

    def endless() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000000000\r\n\r\n"
            )
            chunk = b"x" * 65536
            try:
                while True:
                    conn.sendall(chunk)
                    sent[0] += len(chunk)
            except OSError:
                pass  # the API hung up

    server = threading.Thread(target=endless, daemon=True)
    server.start()
    own = svc.registry.get(world.vmid)
    assert own is not None
    hostile = svc.registry.allocate(
        owner=own.owner, runtime="node", version="22", addons=[], pins=PINS, quota=Quota(5, 5)
    )
    svc.registry.update(
        hostile.vmid, state="ready", address="127.0.0.1", agent_port=listener.getsockname()[1]
    )
    try:
        answer = world.client.get(f"/api/dev/{hostile.vmid}/files", headers=world.alice)
        server.join(timeout=30)
        assert answer.status_code == 502
        assert f"answered more than {ANSWER_MAX_BYTES} bytes" in answer.json()["message"]
        assert not server.is_alive()  # the API closed the connection
        assert sent[0] < 4 * ANSWER_MAX_BYTES
    finally:
        listener.close()
        svc.registry.remove(hostile.vmid)
