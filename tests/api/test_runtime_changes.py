"""Runtime upgrades, switches and removal in a running container, for real: `zlh up` with the
process backend, real agents over HTTP, real Node 22 and 24 artifacts from the built-in store.

alice's node 22 container upgrades to 24 with ``PATCH /api/dev/{vmid}``: the download streams
over SSE while the container stays ready, ``current`` points at 24, a new login shell's
``node --version`` prints v24, the container records 24 and its pin. Removing 22 frees its
directory; removing 24 (active) is 409 naming it. An artifact whose catalog digest is wrong
leaves 24 active and the container ready, its status saying why. bob gets 404 on both routes
of alice's container; unknown versions, another language and path tricks are 422, a container
that is not ready 409; a version directory planted as a symlink is never followed.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_kit import add_cli_users, login, sse_events, wait_for, zlh_up
from support import free_port_pair

pytestmark = pytest.mark.slow

BROKEN = "25"  # node 24's tarball under a catalog entry with a wrong sha256


def _store(node_store: Path, dest: Path) -> Path:
    """node_store (22 and 24) hard-linked, plus node 25: 24's bytes pinned to a wrong digest."""
    shutil.copytree(node_store, dest, copy_function=os.link)
    catalog_file = dest / "catalog.json"
    catalog_file.unlink()  # a fresh file, not the session store's (hard link)
    catalog = json.loads((node_store / "catalog.json").read_text())
    versions = catalog["runtimes"]["node"]["versions"]
    good = next(v for v in versions if v["version"] == "24")
    broken = json.loads(json.dumps(good))
    broken["version"] = BROKEN
    broken["artifact"]["sha256"] = "0" * 64
    versions.append(broken)
    catalog_file.write_text(json.dumps(catalog))
    return dest


def _prepared(node_store: Path, tmp_path: Path) -> tuple[Path, Path, int]:
    """A data dir with alice, bob and root, the store of :func:`_store`, a free port."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    add_cli_users(data_dir)
    return data_dir, _store(node_store, tmp_path / "store"), free_port_pair()


@contextmanager
def _served(data_dir: Path, store: Path, port: int) -> Iterator[httpx.Client]:
    with (
        zlh_up(data_dir, store, port),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        yield client


@pytest.fixture
def platform(node_store: Path, tmp_path: Path) -> Iterator[tuple[httpx.Client, Path]]:
    data_dir, store, port = _prepared(node_store, tmp_path)
    with _served(data_dir, store, port) as client:
        yield client, data_dir


def _ready_container(client: httpx.Client, headers: dict[str, str]) -> int:
    created = client.post("/api/dev", json={"runtime": "node", "version": "22"}, headers=headers)
    assert created.status_code == 202, created.text
    vmid = int(created.json()["vmid"])
    assert sse_events(client, f"/api/dev/{vmid}/events", headers)[-1]["state"] == "ready"
    return vmid


def _runtimes_dir(data_dir: Path, vmid: int) -> Path:
    return data_dir / "process" / str(vmid) / "root" / "opt" / "zlh" / "runtimes" / "node"


def _login_shell_node(data_dir: Path, vmid: int) -> str:
    """``node --version`` in a fresh shell that reads the agent's PATH profile, as a new
    terminal does (nothing of this test's environment but HOME)."""
    profile = data_dir / "process" / str(vmid) / "root" / "etc" / "profile.d" / "zlh-runtimes.sh"
    done = subprocess.run(
        ["/bin/bash", "--noprofile", "--norc", "-c", f". {profile} && node --version"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.strip()


def _container(client: httpx.Client, headers: dict[str, str], vmid: int) -> dict[str, Any]:
    answer = client.get(f"/api/dev/{vmid}", headers=headers)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _installed(record: dict[str, Any]) -> dict[str, bool]:
    return {r["version"]: r["active"] for r in record["status"]["runtimes"]}


def test_upgrade_switches_current_records_the_version_and_removes_the_old_one(
    platform: tuple[httpx.Client, Path],
) -> None:
    client, data_dir = platform
    alice, root = login(client, "alice"), login(client, "root")
    vmid = _ready_container(client, alice)
    runtimes = _runtimes_dir(data_dir, vmid)
    assert os.readlink(runtimes / "current") == "22"
    assert _login_shell_node(data_dir, vmid) == "v22.20.0"

    answer = client.patch(
        f"/api/dev/{vmid}", json={"runtime": "node", "version": "24"}, headers=alice
    )
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert accepted["version"] == "22"  # recorded once the agent reports 24 active
    assert accepted["state"] == "ready"
    assert accepted["status"]["runtimeChange"]["state"] == "installing"
    events = sse_events(client, f"/api/dev/{vmid}/events", alice)
    assert {e["state"] for e in events} == {"ready"}  # usable all along
    assert any(e["progress"]["step"] == "runtime-download" for e in events if e["progress"])
    assert events[-1]["progress"]["step"] == "ready"

    record = wait_for(
        lambda: (r := _container(client, alice, vmid))["version"] == "24" and r,
        what="the container to record node 24",
    )
    assert record["status"]["runtimeChange"]["state"] == "active"
    assert _installed(record) == {"22": False, "24": True}
    assert record["status"]["runtimeInstallPath"].endswith("/node/24")
    assert record["status"]["runtimeInstalled"] is True
    assert os.readlink(runtimes / "current") == "24"
    assert _login_shell_node(data_dir, vmid) == "v24.19.0"
    catalog = client.get("/api/catalog", headers=alice).json()
    pinned = next(v for v in catalog["runtimes"]["node"]["versions"] if v["version"] == "24")
    assert record["status"]["runtimes"][1]["sha256"] == pinned["artifact"]["sha256"]

    active = client.delete(f"/api/dev/{vmid}/runtimes/node/24", headers=alice)
    assert active.status_code == 409, active.text
    assert "node 24 is the active version" in active.json()["message"]
    assert (runtimes / "24").is_dir()
    assert client.delete(f"/api/dev/{vmid}/runtimes/node/22", headers=alice).status_code == 204
    assert not (runtimes / "22").exists()
    assert _installed(_container(client, alice, vmid)) == {"24": True}
    gone = client.delete(f"/api/dev/{vmid}/runtimes/node/22", headers=alice)
    assert gone.status_code == 404, gone.text
    assert "not installed" in gone.json()["message"]

    audit = client.get("/api/audit", params={"vmid": vmid}, headers=root).json()
    assert [(e["actor"], e["action"], e["detail"]) for e in audit[:2]] == [
        ("alice", "runtime-remove", "node 22"),
        ("alice", "runtime-change", "node 22 -> 24"),
    ]


def test_an_upgrade_the_platform_did_not_record_before_it_stopped_is_recorded_after_it_starts(
    node_store: Path, tmp_path: Path
) -> None:
    """The agent finished the change, the platform went down before writing it down (its
    record says 22 again): after ``zlh up`` the container records 24, the version it runs."""
    data_dir, store, port = _prepared(node_store, tmp_path)
    with _served(data_dir, store, port) as client:
        alice = login(client, "alice")
        vmid = _ready_container(client, alice)
        answer = client.patch(
            f"/api/dev/{vmid}", json={"runtime": "node", "version": "24"}, headers=alice
        )
        assert answer.status_code == 202, answer.text
        wait_for(
            lambda: _container(client, alice, vmid)["version"] == "24",
            what="the container to record node 24",
        )
    with sqlite3.connect(data_dir / "zlh.db") as db:
        db.execute("UPDATE containers SET version = '22' WHERE vmid = ?", (vmid,))

    with _served(data_dir, store, port) as client:
        alice = login(client, "alice")
        record = wait_for(
            lambda: (r := _container(client, alice, vmid))["version"] == "24" and r,
            what="the restarted platform to record node 24 again",
        )
        assert _installed(record) == {"22": False, "24": True}
        assert _login_shell_node(data_dir, vmid) == "v24.19.0"


def test_a_broken_artifact_leaves_the_old_version_active_and_says_why(
    platform: tuple[httpx.Client, Path],
) -> None:
    client, data_dir = platform
    alice = login(client, "alice")
    vmid = _ready_container(client, alice)
    change = {"runtime": "node", "version": BROKEN}
    assert client.patch(f"/api/dev/{vmid}", json=change, headers=alice).status_code == 202
    sse_events(client, f"/api/dev/{vmid}/events", alice)
    record = wait_for(
        lambda: (
            (r := _container(client, alice, vmid))["status"]["runtimeChange"]["state"] == "failed"
            and r
        ),
        what="the change to fail",
    )
    assert record["state"] == "ready" and record["version"] == "22"
    error = record["status"]["runtimeChange"]["error"]
    assert error["code"] == "digest-mismatch", error
    assert error["step"] == "runtime-download"
    assert _installed(record) == {"22": True}
    assert os.readlink(_runtimes_dir(data_dir, vmid) / "current") == "22"
    assert not (_runtimes_dir(data_dir, vmid) / BROKEN).exists()
    assert _login_shell_node(data_dir, vmid) == "v22.20.0"
    root = login(client, "root")
    audit = client.get("/api/audit", params={"vmid": vmid}, headers=root).json()
    failures = [e["detail"] for e in audit if e["actor"] == "system"]
    assert len(failures) == 1, audit  # once, by the poller that saw it fail
    assert failures[0].startswith(f"node {BROKEN} not installed: "), failures
    # Still usable: another change goes through.
    upgrade = {"runtime": "node", "version": "24"}
    assert client.patch(f"/api/dev/{vmid}", json=upgrade, headers=alice).status_code == 202
    wait_for(lambda: _container(client, alice, vmid)["version"] == "24", what="node 24")


def test_refusals_at_the_edge_and_from_the_tenants_seat(
    platform: tuple[httpx.Client, Path],
) -> None:
    client, data_dir = platform
    alice, bob = login(client, "alice"), login(client, "bob")
    vmid = _ready_container(client, alice)
    url = f"/api/dev/{vmid}"

    def field_of(answer: httpx.Response) -> str:
        assert answer.status_code == 422, answer.text
        return str(answer.json()["validations"][0]["field"])

    # Another user's container does not exist for them.
    assert (
        client.patch(url, json={"runtime": "node", "version": "24"}, headers=bob).status_code == 404
    )
    assert client.delete(f"{url}/runtimes/node/22", headers=bob).status_code == 404
    # The catalog decides; the language stays.
    assert (
        field_of(client.patch(url, json={"runtime": "node", "version": "7"}, headers=alice))
        == "version"
    )
    assert (
        field_of(client.patch(url, json={"runtime": "cobol", "version": "1"}, headers=alice))
        == "runtime"
    )
    other = client.patch(url, json={"runtime": "python", "version": "3.12"}, headers=alice)
    assert other.status_code == 422, other.text
    for bad in ("..", "../22", "22/../../etc", "a/b"):
        assert (
            field_of(client.patch(url, json={"runtime": "node", "version": bad}, headers=alice))
            == "version"
        )
    assert field_of(client.delete(f"{url}/runtimes/node/..%2E", headers=alice)) == "version"
    assert field_of(client.delete(f"{url}/runtimes/cobol/1", headers=alice)) == "runtime"
    same = client.patch(url, json={"runtime": "node", "version": "22"}, headers=alice)
    assert same.status_code == 409, same.text

    # A version directory planted as a symlink is never followed: not listed, not removed
    # through, not activated (in a real container /opt/zlh is root's; here we plant it).
    elsewhere = data_dir / "elsewhere"
    shutil.copytree(_runtimes_dir(data_dir, vmid) / "22", elsewhere, symlinks=True)
    (_runtimes_dir(data_dir, vmid) / "24").symlink_to(elsewhere)
    assert client.delete(f"{url}/runtimes/node/24", headers=alice).status_code == 404
    assert (elsewhere / "bin" / "node").exists()
    assert "24" not in _installed(_container(client, alice, vmid))
    assert (
        client.patch(url, json={"runtime": "node", "version": "24"}, headers=alice).status_code
        == 202
    )
    record = wait_for(
        lambda: (r := _container(client, alice, vmid))["version"] == "24" and r, what="node 24"
    )
    assert not (_runtimes_dir(data_dir, vmid) / "24").is_symlink()
    assert (elsewhere / "bin" / "node").exists()
    assert _login_shell_node(data_dir, vmid) == "v24.19.0"

    # Only a ready container changes.
    busy = client.post("/api/dev", json={"runtime": "node"}, headers=alice).json()["vmid"]
    early = client.patch(
        f"/api/dev/{busy}", json={"runtime": "node", "version": "24"}, headers=alice
    )
    assert early.status_code == 409, early.text
    assert "must be ready" in early.json()["message"]
    assert record["state"] == "ready"
