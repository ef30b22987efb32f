"""Provisioning over real HTTP against a real (misbehaving on purpose) artifact server."""

from __future__ import annotations

import os
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_helpers import (
    ArtifactServer,
    InProcessAgent,
    artifact,
    directory,
    file,
    hardlink,
    in_process_agent,
    payload,
    poll,
    runtime_members,
    settled,
    sha256,
    special,
    symlink,
    tarball,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def agent(root: Path) -> Iterator[InProcessAgent]:
    with in_process_agent(root) as running:
        yield running


def provision_and_settle(agent: InProcessAgent, body: dict[str, Any]) -> dict[str, Any]:
    resp = agent.provision(body)
    assert resp.status_code == 202, resp.text
    return agent.wait_for(settled)


def leftovers(root: Path) -> list[str]:
    base = root / "opt/zlh/runtimes/node"
    return sorted(p.name for p in base.iterdir()) if base.is_dir() else []


def test_runtime_installs_activates_and_lands_on_the_dev_path(
    agent: InProcessAgent, server: ArtifactServer, root: Path
) -> None:
    data = tarball(runtime_members())
    status = provision_and_settle(agent, payload(artifact(server.add("n.tgz", data), data)))

    target = root / "opt/zlh/runtimes/node/22"
    assert status["state"] == "ready", status
    assert status["runtimeInstalled"] is True
    assert status["runtimeInstallPath"] == str(target)
    assert status["workspaceRoot"] == str(root / "home/dev/workspace")
    assert (root / "home/dev/workspace").is_dir()
    assert status["runtimes"] == [
        {**status["runtimes"][0], "name": "node", "version": "22", "sha256": sha256(data)}
    ]
    assert status["runtimes"][0]["active"] is True
    assert os.readlink(root / "opt/zlh/runtimes/node/current") == "22"
    # The hardlink is a hardlink, the symlink stays relative and inside.
    assert (target / "lib/data-again.txt").stat().st_ino == (target / "lib/data.txt").stat().st_ino
    assert os.readlink(target / "bin/hi") == "hello"
    # A login shell that sources the profile script finds the runtime's binaries on PATH.
    profile = root / "etc/profile.d/zlh-runtimes.sh"
    out = subprocess.run(
        ["sh", "-c", f". {profile} && hi"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "hello from the runtime"


def test_same_payload_again_downloads_nothing_and_status_is_unchanged(
    agent: InProcessAgent, server: ArtifactServer
) -> None:
    data = tarball(runtime_members())
    body = payload(artifact(server.add("n.tgz", data), data))
    first = provision_and_settle(agent, body)
    assert first["state"] == "ready"
    assert len(server.gets("n.tgz")) == 1

    resp = agent.provision(body)
    assert resp.status_code == 202
    second = agent.wait_for(settled)
    assert len(server.gets("n.tgz")) == 1, "the guarded second provisioning downloaded again"
    assert second == first


EVIL: list[tuple[str, Any, str, str]] = [
    ("dotdot", [directory("t"), file("t/../evil")], "unsafe-archive", "contains '..'"),
    ("absolute", [file("/etc/evil")], "unsafe-archive", "absolute path"),
    (
        "symlink-to-etc",
        [directory("t"), symlink("t/etc", "/etc")],
        "unsafe-archive",
        "points to the absolute path '/etc'",
    ),
    (
        "symlink-up-and-out",
        [directory("t"), directory("t/a"), symlink("t/a/up", "../../..")],
        "unsafe-archive",
        "points outside the target",
    ),
    (
        "write-through-symlink",
        [directory("t"), directory("t/d"), symlink("t/l", "d"), file("t/l/x")],
        "unsafe-archive",
        "written through the symlink",
    ),
    (
        "hardlink-out",
        [directory("t"), hardlink("t/passwd", "etc/passwd")],
        "unsafe-archive",
        "points outside the target",
    ),
    ("fifo", [directory("t"), special("t/fifo", tarfile.FIFOTYPE)], "unsafe-archive", "fifo"),
    ("chardev", [directory("t"), special("t/null", tarfile.CHRTYPE)], "unsafe-archive", "device"),
    ("setuid", [directory("t"), file("t/su", b"x", 0o4755)], "unsafe-archive", "setuid"),
]


@pytest.mark.parametrize(("case", "members", "code", "words"), EVIL, ids=[e[0] for e in EVIL])
def test_hostile_tarball_fails_precisely_and_leaves_nothing(
    agent: InProcessAgent,
    server: ArtifactServer,
    root: Path,
    case: str,
    members: Any,
    code: str,
    words: str,
) -> None:
    data = tarball(members)
    status = provision_and_settle(agent, payload(artifact(server.add(f"{case}.tgz", data), data)))
    assert status["state"] == "failed"
    assert status["error"]["code"] == code
    assert words in status["error"]["message"]
    assert status["error"]["step"] in ("runtime-download", "runtime-extract")
    assert status["runtimeInstalled"] is False
    assert leftovers(root) == []
    assert not (root / "etc/evil").exists() and not (root / "opt/zlh/runtimes/evil").exists()


BAD_BYTES: list[tuple[str, dict[str, Any], dict[str, Any], str, str]] = [
    ("wrong-sha256", {}, {"sha256": "0" * 64}, "digest-mismatch", "sha256 mismatch"),
    ("size-too-small", {}, {"size": 100}, "size-mismatch", "the payload pins 100"),
    ("size-too-big", {}, {"size": 10**7}, "size-mismatch", "the payload pins 10000000"),
    ("truncated-file", {"truncate": 50}, {}, "size-mismatch", "the server sends 50 bytes"),
    (
        "connection-always-dropped",
        {"drop_at": 200, "drops": -1},
        {},
        "download-failed",
        "at byte 200 of",
    ),
]


@pytest.mark.parametrize(
    ("case", "behaviour", "override", "code", "words"), BAD_BYTES, ids=[b[0] for b in BAD_BYTES]
)
def test_bad_download_fails_precisely_and_leaves_nothing(
    agent: InProcessAgent,
    server: ArtifactServer,
    root: Path,
    case: str,
    behaviour: dict[str, Any],
    override: dict[str, Any],
    code: str,
    words: str,
) -> None:
    data = tarball(runtime_members())
    served = data[: behaviour.pop("truncate")] if "truncate" in behaviour else data
    url = server.add(f"{case}.tgz", served, **behaviour)
    status = provision_and_settle(agent, payload(artifact(url, data, **override)))
    assert status["state"] == "failed", status
    assert status["error"]["code"] == code
    assert words in status["error"]["message"]
    assert status["error"]["step"] == "runtime-download"
    assert leftovers(root) == []


def test_dropped_connection_resumes_with_a_range_request(
    agent: InProcessAgent, server: ArtifactServer, root: Path
) -> None:
    data = tarball([*runtime_members(), file("node-v22/lib/big", os.urandom(600_000))])
    half = len(data) // 2
    url = server.add("n.tgz", data, drop_at=half, drops=1)
    status = provision_and_settle(agent, payload(artifact(url, data)))
    assert status["state"] == "ready", status
    assert [r.range for r in server.gets("n.tgz")] == [None, f"bytes={half}-"]
    assert (root / "opt/zlh/runtimes/node/22/lib/big").stat().st_size == 600_000


def test_two_concurrent_provisions_cause_exactly_one_download(
    agent: InProcessAgent, server: ArtifactServer
) -> None:
    data = tarball([*runtime_members(), file("node-v22/lib/big", os.urandom(300_000))])
    gate = threading.Event()
    url = server.add("n.tgz", data, gate_at=len(data) // 2, gate=gate)
    body = payload(artifact(url, data))
    first = agent.provision(body)
    poll(agent.status, lambda s: s["progress"]["bytesDone"] > 0)
    same = agent.provision(body)
    other_vmid = agent.provision({**body, "vmid": 102})  # another payload, same runtime target
    assert [r.status_code for r in (first, same, other_vmid)] == [202, 202, 202]
    assert same.headers["X-Zlh-Joined"] == "true"
    assert other_vmid.headers["X-Zlh-Joined"] == "false"
    gate.set()
    status = agent.wait_for(settled)
    assert status["state"] == "ready", status
    assert len(server.gets("n.tgz")) == 1


def test_another_runtime_version_is_added_beside_the_first(
    agent: InProcessAgent, server: ArtifactServer, root: Path
) -> None:
    v22, v24 = tarball(runtime_members("a")), tarball(runtime_members("b"))
    provision_and_settle(agent, payload(artifact(server.add("22.tgz", v22), v22)))
    status = provision_and_settle(
        agent, payload(artifact(server.add("24.tgz", v24), v24), version="24")
    )
    assert status["state"] == "ready"
    assert [(r["version"], r["active"]) for r in status["runtimes"]] == [
        ("22", False),
        ("24", True),
    ]
    assert status["runtimeInstallPath"] == str(root / "opt/zlh/runtimes/node/24")


def test_activate_and_remove_versions(
    agent: InProcessAgent, server: ArtifactServer, root: Path
) -> None:
    v22, v24 = tarball(runtime_members("a")), tarball(runtime_members("b"))
    provision_and_settle(agent, payload(artifact(server.add("22.tgz", v22), v22)))
    provision_and_settle(agent, payload(artifact(server.add("24.tgz", v24), v24), version="24"))

    refused = agent.http.delete("/runtimes/node/24")
    assert refused.status_code == 409
    assert "active version" in refused.json()["message"]
    assert agent.http.post("/runtimes/node/20/activate").status_code == 404
    assert agent.http.delete("/runtimes/node/20").status_code == 404
    bad = agent.http.post("/runtimes/ruby/1/activate")
    assert bad.status_code == 422
    assert bad.json()["validations"][0]["field"] == "name"

    switched = agent.http.post("/runtimes/node/22/activate")
    assert switched.status_code == 200
    assert switched.json()["runtimeInstallPath"] == str(root / "opt/zlh/runtimes/node/22")
    assert os.readlink(root / "opt/zlh/runtimes/node/current") == "22"
    removed = agent.http.delete("/runtimes/node/24")
    assert removed.status_code == 200
    assert [r["version"] for r in removed.json()["runtimes"]] == ["22"]
    assert leftovers(root) == ["22", "current"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"vmid": 101}, "runtime"),
        ({"vmid": 1, "runtime": {"name": "node", "version": "22"}}, "vmid"),
        ({"vmid": 101, "runtime": {"name": "cobol", "version": "1"}}, "runtime.name"),
    ],
)
def test_invalid_payload_is_422_naming_the_field(
    agent: InProcessAgent, body: dict[str, Any], field: str
) -> None:
    resp = agent.provision(body)
    assert resp.status_code == 422
    fields = [v["field"] for v in resp.json()["validations"]]
    assert any(f.startswith(field) for f in fields), fields
    assert agent.status()["state"] == "idle"


def test_body_that_is_not_json_is_422(agent: InProcessAgent) -> None:
    resp = agent.http.post("/provision", content=b"{nope", headers={"Content-Type": "x"})
    assert resp.status_code == 422
    assert resp.json()["validations"][0]["field"] == "(body)"
