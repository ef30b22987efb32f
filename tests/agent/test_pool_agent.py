"""The agent's part of the warm pool, on a real ``zlh agent`` process: the pool payload
installs without a dev home or a running add-on, and ``PUT /token`` rotates the secret for good
(the old one refused at once and after a restart; nobody else can rotate it)."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

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
    runtime_members,
    settled,
    tarball,
)
from zlh.install.installed import read_marker

NEW = "n" * 64


def _token_file(agent: AgentProcess) -> Path:
    return agent.root.parent / f"{agent.root.name}.token"


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _pool_payload(server: ArtifactServer) -> dict[str, Any]:
    runtime = tarball(runtime_members())
    # Its lib/node answers --help as code-server 4.99 does (the pool asks it ahead).
    help_text = b"#!/bin/sh\necho '  --base-path <path>   Base path'\n"
    addon = tarball(
        [
            directory("code-server-4.99.0"),
            file("code-server-4.99.0/bin/code-server", b"#!"),
            file("code-server-4.99.0/lib/node", help_text, mode=0o755),
        ]
    )
    spec = {
        "name": "code-server",
        "version": "4.99.0",
        "artifact": artifact(server.add("cs.tar.gz", addon), addon),
        "options": {"basePath": "/dev/101/ide", "port": 6000},
    }
    return payload(artifact(server.add("node.tar.gz", runtime), runtime), addons=[spec], pool=True)


def test_a_pool_payload_installs_the_runtime_and_addons_but_makes_no_home_and_starts_nothing(
    agents: list[AgentProcess], server: ArtifactServer, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    agent = AgentProcess(root).start()
    agents.append(agent)
    assert agent.provision(_pool_payload(server)).status_code == 202
    status = agent.wait_for(settled)
    assert status["state"] == "ready", status
    assert status["pool"] is True
    assert status["runtimeInstalled"] is True
    assert status["codeServerInstalled"] is True
    assert status["codeServerRunning"] is False
    assert status["addons"] == []  # nothing configured or supervised
    assert read_marker(root / "opt/zlh/services/code-server") is not None
    assert not (root / "home").exists()  # no home for dev, nothing personal
    assert not (root / "var/lib/zlh-agent/run/code-server.pid").exists()
    # What the hand-out would otherwise ask code-server first is known already.
    flags = json.loads((root / "var/lib/zlh-agent/code-server-help.json").read_text())
    assert list(flags.values()) == [["--base-path"]]


def test_put_token_rotates_the_secret_in_memory_and_on_disk_for_good(
    agents: list[AgentProcess], tmp_path: Path
) -> None:
    agent = AgentProcess(tmp_path / "root").start()
    agents.append(agent)
    resp = httpx.put(f"{agent.url}/token", json={"token": NEW}, headers=AUTH)
    assert resp.status_code == 204, resp.text
    assert httpx.get(f"{agent.url}/status", headers=AUTH).status_code == 401
    assert httpx.get(f"{agent.url}/status", headers=_bearer(NEW)).status_code == 200
    token_file = _token_file(agent)
    assert token_file.read_text() == NEW
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    # The same rotation again, under the new secret (a retry after a lost answer): no change.
    again = httpx.put(f"{agent.url}/token", json={"token": NEW}, headers=_bearer(NEW))
    assert again.status_code == 204

    agent.kill9()
    agent.start()  # the same --token-file
    assert httpx.get(f"{agent.url}/status", headers=AUTH).status_code == 401
    assert httpx.get(f"{agent.url}/status", headers=_bearer(NEW)).status_code == 200


def test_nobody_without_the_current_secret_can_rotate_it(
    agents: list[AgentProcess], tmp_path: Path
) -> None:
    agent = AgentProcess(tmp_path / "root").start()
    agents.append(agent)
    for headers in ({}, _bearer("wrong"), _bearer(NEW)):
        resp = httpx.put(f"{agent.url}/token", json={"token": NEW}, headers=headers)
        assert resp.status_code == 401, resp.text
    for body, field in [
        ({"token": "short"}, "token"),
        ({"token": "x" * 40 + "\n"}, "token"),
        ({}, "token"),
        ({"token": NEW, "x": 1}, "x"),
    ]:
        resp = httpx.put(f"{agent.url}/token", json=body, headers=AUTH)
        assert resp.status_code == 422, resp.text
        assert [v["field"] for v in resp.json()["validations"]] == [field], resp.text
    assert _token_file(agent).read_text().strip() == TOKEN
    assert httpx.get(f"{agent.url}/status", headers=AUTH).status_code == 200
