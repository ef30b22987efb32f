"""Dev requests through the real app and a simulated agent: 202 → ready over SSE, ownership,
catalog checks, delete, quota, audit."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agent_sim import SimBackend
from api_kit import add_user, login, make_app, running, services, sse_events
from zlh.api.bodies import DevRequest
from zlh.api.routes.dev import router as dev_router
from zlh.api.routes.events import router as events_router
from zlh.api.routes.ide import router as ide_router
from zlh.schemas import validation_problems


def test_a_dev_request_goes_from_202_to_ready_observed_over_sse(tmp_path: Path) -> None:
    backend = SimBackend()
    app = make_app(tmp_path, backend)
    add_user(app, "alice")
    with running(app) as client:
        alice = login(client, "alice")
        response = client.post(
            "/api/dev", json={"runtime": "node", "addons": ["code-server"]}, headers=alice
        )
        assert response.status_code == 202
        created = response.json()
        assert (created["owner"], created["runtime"], created["version"]) == ("alice", "node", "22")
        vmid = created["vmid"]
        events = sse_events(client, f"/api/dev/{vmid}/events", alice)
        states = [e["state"] for e in events]
        assert states[-1] == "ready"
        assert events[-1]["runtimeInstalled"] is True
        assert any(e["progress"] and e["progress"]["percent"] < 100 for e in events), events
        record = client.get(f"/api/dev/{vmid}", headers=alice).json()
        assert record["status"]["runtimeInstallPath"] == "/opt/zlh/runtimes/node/22"
        assert record["status"]["codeServerRunning"] is True
        payload = backend.agents[vmid].payloads[0]
        assert payload.runtime.artifact.url == "http://127.0.0.1:9/artifacts/node-22.tar.gz"
        assert payload.runtime.artifact.sha256 == "a" * 64
        code_server = payload.addon("code-server")
        assert code_server is not None
        assert code_server.options.base_path == f"/dev/{vmid}/ide"  # type: ignore[union-attr]
        # Once ready, a new stream ends after the current state.
        assert [e["state"] for e in sse_events(client, f"/api/dev/{vmid}/events", alice)] == [
            "ready"
        ]


def _vmid_routes() -> list[tuple[str, str]]:
    routes = []
    for router in (dev_router, events_router, ide_router):
        for route in router.routes:
            path = getattr(route, "path", "")
            if "{vmid}" in path:
                routes.extend((method, path) for method in getattr(route, "methods", ()))
    return routes


def test_only_the_owner_and_admins_see_a_container(tmp_path: Path) -> None:
    app = make_app(tmp_path, SimBackend())
    for name in ("alice", "bob"):
        add_user(app, name)
    add_user(app, "root", admin=True)
    with running(app) as client:
        alice, bob, root = (login(client, n) for n in ("alice", "bob", "root"))
        vmid = client.post("/api/dev", json={"runtime": "node"}, headers=alice).json()["vmid"]
        routes = _vmid_routes()
        assert {p for _, p in routes} >= {
            "/api/dev/{vmid}",
            "/api/dev/{vmid}/events",
            "/api/dev/{vmid}/ide-url",
        }
        for method, path in routes:
            url = path.replace("{vmid}", str(vmid))
            for headers in (bob, {}):
                answer = client.request(method, url, headers=headers)
                expected = 404 if headers else 401
                assert answer.status_code == expected, (method, path, headers)
            # and the same as for a vmid that does not exist at all
            missing = client.request(method, path.replace("{vmid}", "999999"), headers=bob)
            assert missing.status_code == 404
            assert answer.json().keys() == missing.json().keys()
        assert client.get("/api/dev", headers=bob).json() == []
        assert [c["vmid"] for c in client.get("/api/dev", headers=alice).json()] == [vmid]
        assert [c["vmid"] for c in client.get("/api/dev", headers=root).json()] == [vmid]
        assert client.get("/api/dev?owner=bob", headers=root).json() == []
        assert client.get(f"/api/dev/{vmid}", headers=root).status_code == 200
        assert client.delete(f"/api/dev/{vmid}", headers=root).status_code == 204
        assert client.get(f"/api/dev/{vmid}", headers=alice).status_code == 404


@pytest.mark.parametrize(
    ("body", "field", "named"),
    [
        ({"runtime": "ruby"}, "runtime", "ruby"),
        ({"runtime": "node", "version": "99"}, "version", "99"),
        ({"runtime": "node", "addons": ["jupyter"]}, "addons", "jupyter"),
        ({"runtime": "node", "addons": ["code-server", "code-server"]}, "addons", "twice"),
    ],
)
def test_unknown_runtime_version_or_addon_is_422_and_creates_nothing(
    tmp_path: Path, body: dict[str, object], field: str, named: str
) -> None:
    backend = SimBackend()
    app = make_app(tmp_path, backend)
    add_user(app, "alice")
    with running(app) as client:
        alice = login(client, "alice")
        response = client.post("/api/dev", json=body, headers=alice)
        assert response.status_code == 422
        error = response.json()
        assert named in error["message"]
        assert error["validations"][0]["field"] == field
        assert client.get("/api/dev", headers=alice).json() == []
        assert backend.creates == 0
        assert services(app).audit.entries() == [] or all(
            e.action == "login" for e in services(app).audit.entries()
        )


def test_a_dev_request_naming_an_unregistered_addon_is_invalid() -> None:
    with pytest.raises(ValidationError) as info:
        DevRequest(runtime="node", addons=["code-server", "jupyter"])
    (problem,) = validation_problems(info.value)
    assert problem.field == "addons"
    assert problem.detail == "unknown addon 'jupyter' (known: code-server, tailscale)"


def test_malformed_requests_get_the_error_envelope(tmp_path: Path) -> None:
    app = make_app(tmp_path, SimBackend())
    add_user(app, "alice")
    with running(app) as client:
        alice = login(client, "alice")
        response = client.post("/api/dev", json={"runtime": "node", "extra": 1}, headers=alice)
        assert response.status_code == 422
        assert response.json()["validations"][0]["field"] == "extra"
        assert client.get("/api/dev/abc", headers=alice).status_code == 422
        assert client.get("/api/dev/5", headers=alice).status_code == 422  # below vmid range
        unknown = client.get("/api/nothing-here", headers=alice)
        assert unknown.status_code == 404 and unknown.json()["message"]


def test_quota_and_audit_and_delete(tmp_path: Path) -> None:
    backend = SimBackend()
    app = make_app(tmp_path, backend, max_containers_per_user=1)
    add_user(app, "alice")
    add_user(app, "root", admin=True)
    with running(app) as client:
        alice, root = login(client, "alice"), login(client, "root")
        vmid = client.post("/api/dev", json={"runtime": "node"}, headers=alice).json()["vmid"]
        assert client.get("/api/auth/me", headers=alice).json()["containersHeld"] == 1
        over = client.post("/api/dev", json={"runtime": "node"}, headers=alice)
        assert over.status_code == 429
        assert over.json()["message"].startswith("container quota reached: alice holds 1 of 1")
        assert client.get("/api/auth/me", headers=alice).json()["containerLimit"] == 1
        sse_events(client, f"/api/dev/{vmid}/events", alice)
        assert client.delete(f"/api/dev/{vmid}", headers=alice).status_code == 204
        assert vmid not in backend.agents
        assert client.get("/api/audit", headers=alice).status_code == 403
        audit = client.get("/api/audit", headers=root).json()
        actions = [(e["actor"], e["action"], e["vmid"]) for e in audit if e["action"] != "login"]
        assert actions == [("alice", "delete", vmid), ("alice", "create", vmid)]
        again = client.post("/api/dev", json={"runtime": "python"}, headers=alice)
        assert again.status_code == 202
        events = sse_events(client, f"/api/dev/{again.json()['vmid']}/events", alice)
        assert events[-1]["state"] == "ready"


def test_a_container_name_is_the_owners_own_unique_among_theirs_and_checked(
    tmp_path: Path,
) -> None:
    app = make_app(tmp_path, SimBackend())
    add_user(app, "alice")
    add_user(app, "bob")
    with running(app) as client:
        alice, bob = login(client, "alice"), login(client, "bob")
        made = client.post("/api/dev", json={"runtime": "node", "name": "shop api"}, headers=alice)
        assert made.status_code == 202 and made.json()["name"] == "shop api"
        vmid = made.json()["vmid"]
        assert client.get(f"/api/dev/{vmid}", headers=alice).json()["name"] == "shop api"
        again = client.post("/api/dev", json={"runtime": "node", "name": "shop api"}, headers=alice)
        assert again.status_code == 409 and "'shop api'" in again.json()["message"]
        theirs = client.post("/api/dev", json={"runtime": "node", "name": "shop api"}, headers=bob)
        assert theirs.status_code == 202  # bob's names are bob's
        unnamed = [client.post("/api/dev", json={"runtime": "node"}, headers=alice) for _ in (1, 2)]
        assert [r.status_code for r in unnamed] == [202, 202]  # no name never clashes
        for bad in ("", " lead", "trail ", "a/b", "x" * 41, "<script>"):
            refused = client.post("/api/dev", json={"runtime": "node", "name": bad}, headers=bob)
            assert refused.status_code == 422, bad
            assert refused.json()["validations"][0]["field"] == "name"
        held = [c["name"] for c in client.get("/api/dev", headers=alice).json()]
        assert sorted(held, key=str) == sorted(["shop api", None, None], key=str)
