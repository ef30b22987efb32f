"""The demo's container: the one it made, found again through the record in the data dir,
never another user's (an admin's list holds everyone's containers)."""

from __future__ import annotations

from pathlib import Path

from agent_sim import SimBackend
from api_kit import PASSWORD, add_user, login, make_app, running
from zlh.demo.client import DemoClient


def test_the_demo_reuses_the_container_it_made_and_leaves_other_users_alone(
    tmp_path: Path,
) -> None:
    app = make_app(tmp_path / "data", SimBackend())
    add_user(app, "admin", admin=True)
    add_user(app, "bob")
    record = tmp_path / "data" / "demo-container"
    said: list[str] = []
    with running(app) as client:
        demo = DemoClient(str(client.base_url))
        try:
            demo.sign_in("admin", PASSWORD)
            first = demo.demo_container(record, said.append)
            assert record.read_text() == f"{first.vmid}\n"
            bob = login(client, "bob")
            body = {"runtime": "node", "addons": ["code-server"]}
            theirs = client.post("/api/dev", json=body, headers=bob).json()  # newer, same kind
            again = demo.demo_container(record, said.append)
            assert again.vmid == first.vmid != theirs["vmid"]
            assert said[-1].startswith(f"reusing demo container {first.vmid} ")
            # A recorded container deleted since is replaced by a new one of the admin's.
            admin = login(client, "admin")
            assert client.delete(f"/api/dev/{first.vmid}", headers=admin).status_code == 204
            replaced = demo.demo_container(record, said.append)
            assert replaced.vmid not in (first.vmid, theirs["vmid"])
            assert record.read_text() == f"{replaced.vmid}\n"
            mine = client.get(f"/api/dev/{theirs['vmid']}", headers=bob)
            assert mine.status_code == 200 and mine.json()["state"] != "deleting"
        finally:
            demo.close()
