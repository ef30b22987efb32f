"""``zlh agent`` as a real process: the bearer secret, kill -9 mid-install, restarts."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import httpx

from agent_helpers import (
    AUTH,
    TOKEN,
    AgentProcess,
    ArtifactServer,
    artifact,
    directory,
    file,
    payload,
    poll,
    runtime_members,
    settled,
    tarball,
)
from zlh.install.installed import read_marker


def start(agents: list[AgentProcess], root: Path) -> AgentProcess:
    agent = AgentProcess(root).start()
    agents.append(agent)
    return agent


ENDPOINTS = [
    ("GET", "/status"),
    ("POST", "/provision"),
    ("POST", "/runtimes/node/22/activate"),
    ("DELETE", "/runtimes/node/22"),
    ("GET", "/no-such-route"),
]
BAD_AUTH: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"bearer{TOKEN}"},
    {"Authorization": f"Basic {TOKEN}"},
]


def test_every_endpoint_refuses_a_missing_or_wrong_token(
    agents: list[AgentProcess], tmp_path: Path
) -> None:
    agent = start(agents, tmp_path / "root")
    for method, path in ENDPOINTS:
        for headers in BAD_AUTH:
            resp = httpx.request(method, agent.url + path, headers=headers, json={})
            assert resp.status_code == 401, (method, path, headers, resp.text)
            assert resp.json()["message"] == "missing or wrong bearer token"
    # The right token opens the same doors.
    assert httpx.get(agent.url + "/status", headers=AUTH).status_code == 200
    assert httpx.get(agent.url + "/no-such-route", headers=AUTH).status_code == 404


def test_kill_9_mid_extraction_then_restart_ends_installed_and_verified(
    agents: list[AgentProcess], server: ArtifactServer, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    members = [*runtime_members(), directory("node-v22/many")]
    members += [file(f"node-v22/many/f{i:03}", os.urandom(40_000)) for i in range(60)]
    data = tarball(members)
    gate = threading.Event()
    url = server.add("n.tgz", data, gate_at=len(data) // 2, gate=gate)
    body = payload(artifact(url, data))
    parent = root / "opt/zlh/runtimes/node"

    first = start(agents, root)
    assert first.provision(body).status_code == 202

    def extracting() -> dict[str, object]:
        staging = [p for p in parent.glob(".staging~22~*") if any((p / "many").glob("f*"))]
        return {"staging": [str(p) for p in staging]}

    poll(extracting, lambda s: bool(s["staging"]), what="extraction to begin")
    first.kill9()
    gate.set()
    assert not (parent / "22").exists()
    assert list(parent.glob(".staging~*")), "the crash should have left a staging dir behind"

    second = start(agents, root)  # recovers the persisted payload on its own ...
    assert second.provision(body).status_code == 202  # ... and the same payload joins or skips
    status = second.wait_for(settled)
    assert status["state"] == "ready", status
    assert status["runtimeInstalled"] is True
    marker = read_marker(parent / "22")
    assert marker is not None and marker.sha256 == body["runtime"]["artifact"]["sha256"]
    assert sorted(p.name for p in parent.iterdir()) == ["22", "current"]
    assert len(list((parent / "22/many").iterdir())) == 60
    assert len(server.gets("n.tgz")) == 2


def test_a_restarted_agent_reports_the_same_state(
    agents: list[AgentProcess], server: ArtifactServer, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    data = tarball(runtime_members())
    body = payload(artifact(server.add("n.tgz", data), data))
    first = start(agents, root)
    first.provision(body)
    before = first.wait_for(settled)
    assert before["state"] == "ready"
    first.stop()

    second = start(agents, root)
    after = second.wait_for(settled)
    assert after == before
    assert len(server.gets("n.tgz")) == 1


def test_bad_listen_and_token_file_are_usage_errors(tmp_path: Path) -> None:
    from support import zlh

    empty = tmp_path / "token"
    empty.write_text("\n")
    result = zlh("agent", "--listen", "nowhere", "--token-file", str(empty), check=False)
    assert result.returncode == 2 and "HOST:PORT" in result.stderr
    result = zlh("agent", "--listen", "127.0.0.1:1", "--token-file", str(empty), check=False)
    assert result.returncode == 2 and "is empty" in result.stderr
