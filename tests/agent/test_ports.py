"""``GET /ports`` of a real ``zlh agent`` process: listening sockets from /proc, the platform's
own ports left out, the container secret required."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent_helpers import AgentProcess
from zlh.agent.ports import listening_ports
from zlh.ports import CODE_SERVER_PORT


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    process = AgentProcess(tmp_path / "root").start()
    yield process
    process.stop()


def listener(host: str, family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen()
    return sock


def test_the_agent_lists_listening_ports_with_their_address_but_not_its_own(
    agent: AgentProcess,
) -> None:
    with (
        listener("0.0.0.0") as everywhere,
        listener("127.0.0.1") as loopback,
        listener("::1", socket.AF_INET6) as loopback6,
        socket.socket() as bound_only,  # bound, not listening: not a server
    ):
        bound_only.bind(("0.0.0.0", 0))
        answer = agent.http.get("/ports")
        assert answer.status_code == 200
        found = {p["port"]: p["address"] for p in answer.json()["ports"]}
        assert found[everywhere.getsockname()[1]] == "0.0.0.0"
        assert found[loopback.getsockname()[1]] == "127.0.0.1"
        assert found[loopback6.getsockname()[1]] == "::1"
        assert bound_only.getsockname()[1] not in found
        assert agent.port not in found and CODE_SERVER_PORT not in found
        closed = everywhere.getsockname()[1]
    assert closed not in {p["port"] for p in agent.http.get("/ports").json()["ports"]}


def test_the_ports_need_the_container_secret(agent: AgentProcess) -> None:
    assert httpx.get(agent.url + "/ports").status_code == 401
    wrong = {"Authorization": "Bearer not-the-secret"}
    assert httpx.get(agent.url + "/ports", headers=wrong).status_code == 401


def test_a_wildcard_listener_wins_over_a_loopback_one_on_the_same_port() -> None:
    with listener("127.0.0.1") as loopback:
        port = loopback.getsockname()[1]
        with socket.socket(socket.AF_INET6) as everywhere:
            everywhere.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            everywhere.bind(("::", port))
            everywhere.listen()
            assert listening_ports()[port] == "::"
