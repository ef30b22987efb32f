"""Port previews in the API: ``GET /api/dev/{vmid}/ports`` (the agent's listening ports with
their preview URLs), ``PUT``/``DELETE /api/dev/{vmid}/previews/{port}/public`` (owner only,
audited, fed to the front), and ``ide-url`` with a preview's ``port``/``next``. The front's
side is tests/proxy/test_previews.py; the agent's tests/agent/test_ports.py."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from agent_sim import SimBackend
from api_kit import add_user, login, make_app, running, services, wait_for
from zlh.api.db.models import PublicPreview
from zlh.ports import AGENT_PORT, CODE_SERVER_PORT


def ready_container(client: httpx.Client, headers: dict[str, str]) -> int:
    vmid: int = client.post("/api/dev", json={"runtime": "node"}, headers=headers).json()["vmid"]
    wait_for(
        lambda: client.get(f"/api/dev/{vmid}", headers=headers).json()["state"] == "ready",
        what="the container to be ready",
    )
    return vmid


def listener(host: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((host, 0))
    sock.listen()
    return sock


def public_ports(app: object, vmid: int) -> frozenset[int]:
    return services(app).feed.snapshot().routes[vmid].public_ports  # type: ignore[arg-type]


def test_the_owner_sees_listening_ports_with_both_preview_urls(tmp_path: Path) -> None:
    app = make_app(tmp_path, SimBackend(), ide_origin="https://ide.example.com")
    add_user(app, "alice")
    add_user(app, "bob")
    with running(app) as client, listener("0.0.0.0") as dev, listener("127.0.0.1") as local:
        alice, bob = login(client, "alice"), login(client, "bob")
        vmid = ready_container(client, alice)
        answer = client.get(f"/api/dev/{vmid}/ports", headers=alice)
        assert answer.status_code == 200 and answer.json()["running"] is True
        found = {p["port"]: p for p in answer.json()["previews"]}
        port = dev.getsockname()[1]
        assert found[port] == {
            "port": port,
            "listening": True,
            "address": "0.0.0.0",
            "reachable": True,
            "public": False,  # never public by default
            "url": f"https://ide.example.com/dev/{vmid}/port/{port}/?zlh-prefix=strip",
            "urlKeepPrefix": f"https://ide.example.com/dev/{vmid}/port/{port}/?zlh-prefix=keep",
        }
        assert found[local.getsockname()[1]]["reachable"] is False  # needs --host
        assert all(1024 <= p <= 65535 and p not in (AGENT_PORT, CODE_SERVER_PORT) for p in found)
        assert client.get(f"/api/dev/{vmid}/ports", headers=bob).status_code == 404
        assert client.get(f"/api/dev/{vmid}/ports").status_code == 401


def test_the_wildcard_origin_gives_each_preview_its_own_host(tmp_path: Path) -> None:
    app = make_app(tmp_path, SimBackend(), ide_origin="https://*.ide.example.com")
    add_user(app, "alice")
    with running(app) as client:
        alice = login(client, "alice")
        vmid = ready_container(client, alice)
        made = client.put(f"/api/dev/{vmid}/previews/5173/public", headers=alice).json()
    assert made["url"] == f"https://5173-{vmid}.ide.example.com/"
    assert made["urlKeepPrefix"] == f"https://5173-{vmid}.ide.example.com/dev/{vmid}/port/5173/"


def test_only_the_owner_makes_a_preview_public_and_the_front_learns_it(tmp_path: Path) -> None:
    app = make_app(tmp_path, SimBackend())
    for name, admin in (("alice", False), ("bob", False), ("root", True)):
        add_user(app, name, admin=admin)
    with running(app) as client:
        alice, bob, root = (login(client, n) for n in ("alice", "bob", "root"))
        vmid = ready_container(client, alice)
        url = f"/api/dev/{vmid}/previews/5173/public"
        assert client.put(url, headers=bob).status_code == 404
        assert client.put(url, headers=root).status_code == 404  # the owner's decision only
        assert client.put(url).status_code == 401
        assert public_ports(app, vmid) == frozenset()
        made = client.put(url, headers=alice)
        assert made.status_code == 200 and made.json()["public"] is True
        assert client.put(url, headers=alice).status_code == 200  # twice is fine
        assert public_ports(app, vmid) == {5173}
        listed = client.get(f"/api/dev/{vmid}/ports", headers=alice).json()["previews"]
        assert {"port": 5173, "public": True, "listening": False}.items() <= next(
            p for p in listed if p["port"] == 5173
        ).items()
        assert client.delete(url, headers=bob).status_code == 404
        assert client.delete(url, headers=root).status_code == 204  # an admin may take it down
        assert public_ports(app, vmid) == frozenset()
        assert client.put(url, headers=alice).status_code == 200
        assert client.delete(url, headers=alice).status_code == 204
        assert client.delete(url, headers=alice).status_code == 204
        assert public_ports(app, vmid) == frozenset()
    actions = [(e.actor, e.action, e.detail) for e in services(app).audit.entries()]
    assert ("alice", "preview-public", "port 5173") in actions
    assert ("root", "preview-private", "port 5173") in actions


@pytest.mark.parametrize("port", ["80", "1023", str(AGENT_PORT), str(CODE_SERVER_PORT), "65536"])
def test_low_and_platform_ports_are_refused_by_name(tmp_path: Path, port: str) -> None:
    app = make_app(tmp_path, SimBackend())
    add_user(app, "alice")
    with running(app) as client:
        alice = login(client, "alice")
        vmid = ready_container(client, alice)
        refused = client.put(f"/api/dev/{vmid}/previews/{port}/public", headers=alice)
        assert refused.status_code == 422
        body = refused.json()
        assert "cannot be previewed" in body["message"]
        assert body["validations"][0]["field"] == "port"
        assert client.put(f"/api/dev/{vmid}/previews/x/public", headers=alice).status_code == 422
    assert public_ports(app, vmid) == frozenset()


def test_public_previews_survive_a_restart_and_go_with_their_container(
    tmp_path: Path, db_url: str
) -> None:
    app = make_app(tmp_path, SimBackend(), database_url=db_url)
    add_user(app, "alice")
    with running(app) as client:
        alice = login(client, "alice")
        vmid = ready_container(client, alice)
        assert client.put(f"/api/dev/{vmid}/previews/3000/public", headers=alice).is_success
        assert client.post(f"/api/dev/{vmid}/stop", headers=alice).status_code == 202
        wait_for(
            lambda: client.get(f"/api/dev/{vmid}", headers=alice).json()["state"] == "stopped",
            what="the container to stop",
        )
        stopped = client.get(f"/api/dev/{vmid}/ports", headers=alice).json()
        assert stopped["running"] is False
        assert [(p["port"], p["public"]) for p in stopped["previews"]] == [(3000, True)]
    again = make_app(tmp_path, SimBackend(), database_url=db_url)
    with running(again) as client:
        assert public_ports(again, vmid) == {3000}  # the front's table is rebuilt from it
        alice = login(client, "alice")
        assert client.delete(f"/api/dev/{vmid}", headers=alice).status_code in (200, 202, 204)
        wait_for(lambda: services(again).registry.get(vmid) is None, what="the deletion")
        with services(again).db.session() as session:
            assert session.query(PublicPreview).filter_by(vmid=vmid).count() == 0


def test_ide_url_takes_a_preview_to_land_on(tmp_path: Path) -> None:
    app = make_app(tmp_path, SimBackend(), ide_origin="https://ide.example.com")
    add_user(app, "alice")
    add_user(app, "bob")
    with running(app) as client:
        alice, bob = login(client, "alice"), login(client, "bob")
        vmid = ready_container(client, alice)
        target = f"/dev/{vmid}/port/5173/app?x=1&zlh-prefix=keep"
        answer = client.get(
            f"/api/dev/{vmid}/ide-url", params={"port": 5173, "next": target}, headers=alice
        )
        assert answer.status_code == 200
        url = urlsplit(answer.json()["url"])
        assert (url.netloc, url.path) == ("ide.example.com", "/_zlh/auth")
        assert parse_qs(url.query)["next"] == [target]
        for params in (
            {"port": "5173"},
            {"port": "5173", "next": "//evil.example/"},
            {"port": "5173", "next": "/dev/1/port/5173/"},
            {"port": "22", "next": f"/dev/{vmid}/port/22/"},
        ):
            bad = client.get(f"/api/dev/{vmid}/ide-url", params=params, headers=alice)
            assert bad.status_code == 422, params
            assert bad.json()["validations"], params
        theirs = client.get(
            f"/api/dev/{vmid}/ide-url", params={"port": 5173, "next": target}, headers=bob
        )
        assert theirs.status_code == 404
