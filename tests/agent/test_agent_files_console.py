"""``zlh agent`` as a real process: the file browser and console on the provisioned workspace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from agent_helpers import (
    AUTH,
    AgentProcess,
    artifact,
    artifact_server,
    payload,
    runtime_members,
    settled,
    tarball,
)
from support import ConsoleClient


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    process = AgentProcess(tmp_path / "root").start()
    yield process
    process.stop()


def test_files_and_console_wait_for_provisioning_then_work_in_the_workspace(
    agent: AgentProcess,
) -> None:
    ws_url = "ws" + agent.url.removeprefix("http") + "/console"
    assert agent.http.get("/files").status_code == 503
    with pytest.raises(InvalidStatus) as early, connect(ws_url, additional_headers=AUTH):
        pass
    assert early.value.response.status_code == 503

    with artifact_server() as server:
        data = tarball(runtime_members())
        agent.provision(payload(artifact(server.add("n.tgz", data), data)))
        assert agent.wait_for(settled)["state"] == "ready"

    workspace = agent.root / "home/dev/workspace"
    put = agent.http.put("/files/content", params={"path": "hello.txt"}, content=b"hi")
    assert put.status_code == 201
    assert (workspace / "hello.txt").read_bytes() == b"hi"
    names = [e["name"] for e in agent.http.get("/files").json()["entries"]]
    assert "hello.txt" in names
    with connect(ws_url, additional_headers=AUTH, open_timeout=10) as ws:
        term = ConsoleClient(ws)
        assert term.ask("$(pwd)") == str(workspace)
        assert term.ask("$(cat hello.txt)") == "hi"


def test_files_and_console_refuse_a_missing_token(agent: AgentProcess) -> None:
    assert httpx.get(agent.url + "/files").status_code == 401
    assert httpx.put(agent.url + "/files/content?path=x", content=b"x").status_code == 401
    ws_url = "ws" + agent.url.removeprefix("http") + "/console"
    with pytest.raises(InvalidStatus) as refused, connect(ws_url):
        pass
    assert refused.value.response.status_code == 401
