"""The agent with the Foundation builders' real artifacts: Node, and code-server kept running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from agent_helpers import (
    AgentProcess,
    artifact_server,
    payload,
    settled,
)
from support import free_port
from zlh.artifacts.store import ArtifactStore
from zlh.schemas import Artifact, ArtifactKind

pytestmark = pytest.mark.slow


def store_artifact(store: Path, kind: ArtifactKind, name: str) -> tuple[str, Artifact, bytes]:
    version, art = ArtifactStore(store).catalog().resolve(kind, name)
    return version, art, (store / art.url).read_bytes()


def test_real_node_installs_runs_and_is_skipped_the_second_time(
    node_store: Path, node_server: str, agents: list[AgentProcess], tmp_path: Path
) -> None:
    version, art, _ = store_artifact(node_store, ArtifactKind.RUNTIME, "node")
    wire = art.model_dump(mode="json") | {"url": art.resolved_url(node_server)}
    body = payload(wire, version=version)
    root = tmp_path / "root"
    agent = AgentProcess(root).start()
    agents.append(agent)
    assert agent.provision(body).status_code == 202
    first = agent.wait_for(settled, timeout_s=300)
    assert first["state"] == "ready", first

    node = root / "opt/zlh/runtimes/node" / version / "bin/node"
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"v{art.metadata.upstream_version}"
    assert first["runtimes"][0]["metadata"]["source"] == art.metadata.source

    # The same payload again, through a server that records every request: no download.
    with artifact_server() as recorder:
        _, _, data = store_artifact(node_store, ArtifactKind.RUNTIME, "node")
        recorder.add("node.tar.gz", data)
        again = agent.provision(body)
        assert again.status_code == 202
        second = agent.wait_for(settled)
        assert recorder.requests == []
    assert second == first


def test_code_server_runs_answers_and_comes_back_after_being_killed(
    node_store: Path,
    code_server_store: Path,
    agents: list[AgentProcess],
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    port = free_port()
    with artifact_server() as server:
        version, art, data = store_artifact(node_store, ArtifactKind.RUNTIME, "node")
        node_url = server.add("node.tar.gz", data)
        cs_version, cs_art, cs_data = store_artifact(
            code_server_store, ArtifactKind.ADDON, "code-server"
        )
        cs_url = server.add("code-server.tar.gz", cs_data)
        body = payload(
            art.model_dump(mode="json") | {"url": node_url},
            version=version,
            addons=[
                {
                    "name": "code-server",
                    "version": cs_version,
                    "artifact": cs_art.model_dump(mode="json") | {"url": cs_url},
                    "options": {"basePath": "/dev/101/ide", "port": port},
                }
            ],
        )
        agent = AgentProcess(root).start()
        agents.append(agent)
        try:
            assert agent.provision(body).status_code == 202
            status = agent.wait_for(settled, timeout_s=600)
            assert status["state"] == "ready", status
            assert status["codeServerInstalled"] is True
            assert status["codeServerRunning"] is True

            workspace = root / "home/dev/workspace"
            ide = f"http://127.0.0.1:{port}"
            page = httpx.get(f"{ide}/?folder={quote(str(workspace))}", timeout=30)
            assert page.status_code == 200
            settings = root / "home/dev/.local/share/code-server/User/settings.json"
            written = json.loads(settings.read_text())
            assert written["chat.disableAIFeatures"] is True
            assert written["workbench.startupEditor"] == "readme"
            assert "ZeroLagHub" in (workspace / "README.md").read_text()  # what it opens on

            pid_file = root / "var/lib/zlh-agent/run/code-server.pid"
            record = json.loads(pid_file.read_text())
            argv = record["argv"]
            assert argv[:2] == [str(root / "opt/zlh/services/code-server/lib/node"),
                                str(root / "opt/zlh/services/code-server")]  # fmt: skip
            assert argv[argv.index("--auth") + 1] == "none"
            assert "--base-path" not in argv  # code-server 4.x's --help does not list it
            assert "--disable-getting-started-override" in argv  # it does list this one
            assert argv[-1] == str(workspace)
            old = int(record["pid"])
            os.killpg(old, signal.SIGKILL)
            agent.wait_for(lambda s: not s["codeServerRunning"], timeout_s=30)
            back = agent.wait_for(lambda s: s["codeServerRunning"], timeout_s=120)
            assert int(json.loads(pid_file.read_text())["pid"]) != old
            health = {a["name"]: a for a in back["addons"]}["code-server"]
            assert health["restarts"] == 1
            assert httpx.get(f"{ide}/healthz", timeout=30).status_code == 200

            # The same payload again: nothing downloaded, code-server left alone.
            pid = int(json.loads(pid_file.read_text())["pid"])
            gets = len(server.requests)
            assert agent.provision(body).status_code == 202
            again = agent.wait_for(settled)
            assert again["state"] == "ready" and again["codeServerRunning"] is True
            assert int(json.loads(pid_file.read_text())["pid"]) == pid
            assert {a["name"]: a for a in again["addons"]}["code-server"]["restarts"] == 1
            assert len(server.requests) == gets
        finally:
            agent.stop()
