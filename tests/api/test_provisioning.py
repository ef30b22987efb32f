"""Provisioning and polling edge cases: failing backends and agents, lost payloads, silent
agents, slow agents, and a restart in the middle of provisioning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent_sim import SimBackend
from api_kit import add_user, login, make_app, running, services, sse_events, wait_for
from proxmox_server import ProxmoxServer, backend_for, self_signed_cert


def _request(client: Any, headers: dict[str, str], **body: Any) -> int:
    response = client.post("/api/dev", json={"runtime": "node", **body}, headers=headers)
    assert response.status_code == 202, response.text
    return int(response.json()["vmid"])


def _state(client: Any, headers: dict[str, str], vmid: int) -> dict[str, Any]:
    return dict(client.get(f"/api/dev/{vmid}", headers=headers).json())


def test_a_backend_that_fails_to_create_ends_failed_with_its_message(tmp_path: Path) -> None:
    backend = SimBackend()
    backend.fail_create = "lxc-copy: template missing"
    app = make_app(tmp_path, backend)
    add_user(app, "alice")
    with running(app) as client:
        alice = login(client, "alice")
        vmid = _request(client, alice)
        events = sse_events(client, f"/api/dev/{vmid}/events", alice)
        assert events[-1]["state"] == "failed"
        assert "lxc-copy: template missing" in events[-1]["error"]
        assert any(e.action == "failed" for e in services(app).audit.entries(vmid=vmid))


def test_a_slow_backend_past_the_start_timeout_ends_failed(tmp_path: Path) -> None:
    app = make_app(tmp_path, SimBackend(create_delay_s=30), container_start_timeout_s=0.3)
    add_user(app, "alice")
    with running(app) as client:
        alice = login(client, "alice")
        vmid = _request(client, alice)
        events = sse_events(client, f"/api/dev/{vmid}/events", alice)
        assert events[-1]["state"] == "failed"
        assert "did not start within 0.3s" in events[-1]["error"]


def test_an_agent_failure_reaches_the_client_with_the_agents_error(tmp_path: Path) -> None:
    backend = SimBackend()
    app = make_app(tmp_path, backend)
    add_user(app, "alice")
    with running(app) as client:
        alice = login(client, "alice")
        backend.on_agent = lambda agent: setattr(agent, "fail_with", "sha256 mismatch")
        vmid = _request(client, alice)
        events = sse_events(client, f"/api/dev/{vmid}/events", alice)
        assert events[-1]["state"] == "failed"
        assert "sha256 mismatch" in events[-1]["error"]
        assert _state(client, alice, vmid)["status"]["error"]["code"] == "digest-mismatch"


def test_an_agent_that_never_gets_ready_fails_after_the_provision_timeout(tmp_path: Path) -> None:
    backend = SimBackend()
    app = make_app(tmp_path, backend, provision_timeout_s=0.5)
    add_user(app, "alice")
    with running(app) as client:
        alice = login(client, "alice")
        backend.on_agent = lambda agent: setattr(agent, "never_ready", True)
        vmid = _request(client, alice)
        events = sse_events(client, f"/api/dev/{vmid}/events", alice)
        assert events[-1]["state"] == "failed"
        assert "provision_timeout_s" in events[-1]["error"]


def test_an_agent_that_lost_its_payload_gets_it_again(tmp_path: Path) -> None:
    backend = SimBackend()
    app = make_app(tmp_path, backend)
    add_user(app, "alice")
    with running(app) as client:
        alice = login(client, "alice")
        vmid = _request(client, alice)
        assert sse_events(client, f"/api/dev/{vmid}/events", alice)[-1]["state"] == "ready"
        agent = backend.agents[vmid]
        assert len(agent.payloads) == 1
        agent.forget()  # e.g. its container was rebuilt underneath it
        wait_for(lambda: len(agent.payloads) == 2, what="the payload to be sent again")
        wait_for(lambda: _state(client, alice, vmid)["state"] == "ready", what="ready again")
        assert agent.payloads[0] == agent.payloads[1]
        assert backend.creates == 1


def test_a_silent_agent_becomes_unreachable_without_delaying_the_others(tmp_path: Path) -> None:
    backend = SimBackend()
    app = make_app(tmp_path, backend, unreachable_after_misses=2, poll_timeout_s=2.0)
    add_user(app, "alice")
    with running(app) as client:
        alice = login(client, "alice")
        quiet, busy = _request(client, alice), _request(client, alice)
        for vmid in (quiet, busy):
            assert sse_events(client, f"/api/dev/{vmid}/events", alice)[-1]["state"] == "ready"
        silent, other = backend.agents[quiet], backend.agents[busy]
        silent.silent = True
        hangs_before, calls_before = silent.status_calls, other.status_calls
        wait_for(
            lambda: _state(client, alice, quiet)["state"] == "unreachable",
            timeout_s=30,
            what="the silent agent to be marked unreachable",
        )
        assert "missed 2 polls" in _state(client, alice, quiet)["error"]
        # Each poll of the silent agent hung for 2 s. Polled one after the other, the busy agent
        # would get about one poll per hang; on its own 0.2 s pace it gets about ten. Four per
        # hang leaves room for a loaded machine and none for polls queued behind a silent agent.
        hangs = silent.status_calls - hangs_before
        assert hangs >= 2
        assert other.status_calls - calls_before >= 4 * hangs
        assert _state(client, alice, busy)["state"] == "ready"
        silent.silent = False
        wait_for(lambda: _state(client, alice, quiet)["state"] == "ready", what="back to ready")


def test_a_restart_mid_provisioning_resumes_and_creates_nothing_twice(tmp_path: Path) -> None:
    backend = SimBackend(create_delay_s=0.3, step_s=0.2)
    first = make_app(tmp_path, backend)
    add_user(first, "alice")
    with running(first) as client:
        alice = login(client, "alice")
        vmid = _request(client, alice)
        wait_for(lambda: _state(client, alice, vmid)["state"] == "creating", what="creating")
    # The first API is gone mid-create (its drive task cancelled); a new one takes over.
    second = make_app(tmp_path, backend)
    with running(second) as client:
        alice = login(client, "alice")
        events = sse_events(client, f"/api/dev/{vmid}/events", alice)
        assert events[-1]["state"] == "ready"
        assert [c["vmid"] for c in client.get("/api/dev", headers=alice).json()] == [vmid]
        assert backend.creates == 1
        assert list(backend.agents) == [vmid]


def test_vmids_come_from_the_backend_skipping_those_another_tool_took(tmp_path: Path) -> None:
    """On a Proxmox cluster other tools create CTs too: the platform takes the cluster's
    next free vmid at or above its own next one, never a vmid already in use."""
    cert = self_signed_cert(tmp_path)
    with ProxmoxServer(*cert) as pve:
        pve.state.nodes = {"pve1": {"status": "online", "mem": 1e9, "maxmem": 8e9}}
        pve.state.cts[100] = {"node": "pve1", "status": "running", "name": "db", "config": {}}
        app = make_app(tmp_path / "data", backend_for(pve, cert))
        add_user(app, "alice")
        with running(app) as client:
            alice = login(client, "alice")
            first = _request(client, alice)
            # Another tool creates the next CT between two requests.
            pve.state.cts[first + 1] = {"node": "pve1", "status": "stopped", "name": "ci",
                                        "config": {}}  # fmt: skip
            second = _request(client, alice)
    assert (first, second) == (101, 103)
    assert pve.state.cts[100]["name"] == "db"  # the other tool's CT was left alone
