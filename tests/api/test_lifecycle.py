"""Stop, start and restart through the API, over simulated agents on real HTTP: the states
and their reasons, who may, what is refused, the running quota, poll traffic and a restart of
the platform."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from agent_sim import SimBackend
from api_kit import add_user, login, make_app, running, services, sse_events, wait_for
from zlh.api import accounts
from zlh.api.db import Container, ContainerState


@contextmanager
def _platform(
    tmp_path: Path, **settings: Any
) -> Iterator[tuple[SimBackend, FastAPI, httpx.Client, dict[str, str]]]:
    """The API on simulated agents with ``settings``, served, and alice signed in."""
    backend = SimBackend()
    app = make_app(tmp_path, backend, **settings)
    add_user(app, "alice")
    with running(app) as client:
        yield backend, app, client, login(client, "alice")


def _ready(client: httpx.Client, headers: dict[str, str]) -> int:
    response = client.post("/api/dev", json={"runtime": "node"}, headers=headers)
    assert response.status_code == 202, response.text
    vmid = int(response.json()["vmid"])
    assert sse_events(client, f"/api/dev/{vmid}/events", headers)[-1]["state"] == "ready"
    return vmid


def _get(client: httpx.Client, headers: dict[str, str], vmid: int) -> dict[str, Any]:
    return dict(client.get(f"/api/dev/{vmid}", headers=headers).json())


def _in_state(client: httpx.Client, headers: dict[str, str], vmid: int, state: str) -> Any:
    return wait_for(
        lambda: (c := _get(client, headers, vmid))["state"] == state and c,
        what=f"container {vmid} to be {state}",
    )


def test_stop_then_start_moves_through_the_states_with_their_reasons(tmp_path: Path) -> None:
    with _platform(tmp_path) as (backend, app, client, alice):
        vmid = _ready(client, alice)
        assert _get(client, alice, vmid)["stateReason"] == "requested by user alice"

        stop = client.post(f"/api/dev/{vmid}/stop", headers=alice)
        assert stop.status_code == 202, stop.text
        assert stop.json()["state"] == "stopping"
        events = sse_events(client, f"/api/dev/{vmid}/events", alice)  # ends once stopped
        assert events[-1]["state"] == "stopped"
        stopped = _get(client, alice, vmid)
        assert stopped["stateReason"] == "stopped by user alice"
        assert stopped["stateChangedAt"] >= stop.json()["stateChangedAt"]
        assert vmid not in backend.running

        start = client.post(f"/api/dev/{vmid}/start", headers=alice)
        assert start.status_code == 202, start.text
        assert start.json()["state"] == "starting"
        events = sse_events(client, f"/api/dev/{vmid}/events", alice)
        assert events[-1]["state"] == "ready"
        assert events[-1]["stateReason"] == "started by user alice"
        assert vmid in backend.running
        assert backend.creates == 1  # the same container, started again

        restart = client.post(f"/api/dev/{vmid}/restart", headers=alice)
        assert restart.status_code == 202, restart.text
        ready = _in_state(client, alice, vmid, "ready")
        assert ready["stateReason"] == "restarted by user alice"
        actions = [e.action for e in services(app).audit.entries(vmid=vmid)]
        assert actions[:3] == ["restart", "start", "stop"]


def test_what_its_state_does_not_allow_is_refused_with_409_naming_the_state(
    tmp_path: Path,
) -> None:
    with _platform(tmp_path) as (_, _app, client, alice):
        vmid = _ready(client, alice)
        refused = client.post(f"/api/dev/{vmid}/start", headers=alice)
        assert refused.status_code == 409
        assert refused.json()["message"] == f"container {vmid} is ready: it cannot start now"
        assert client.post(f"/api/dev/{vmid}/stop", headers=alice).status_code == 202
        _in_state(client, alice, vmid, "stopped")
        for action in ("stop", "restart"):
            refused = client.post(f"/api/dev/{vmid}/{action}", headers=alice)
            assert refused.status_code == 409, action
            assert f"is stopped: it cannot {action} now" in refused.json()["message"]
        assert _get(client, alice, vmid)["state"] == "stopped"


def test_only_the_owner_and_admins_stop_or_start_a_container(tmp_path: Path) -> None:
    backend = SimBackend()
    app = make_app(tmp_path, backend)
    add_user(app, "alice")
    add_user(app, "bob")
    add_user(app, "root", admin=True)
    with running(app) as client:
        alice, bob, root = (login(client, n) for n in ("alice", "bob", "root"))
        vmid = _ready(client, alice)
        for action in ("stop", "start", "restart"):
            answer = client.post(f"/api/dev/{vmid}/{action}", headers=bob)
            assert answer.status_code == 404, action
        assert vmid in backend.running
        assert client.post(f"/api/dev/{vmid}/stop", headers=root).status_code == 202
        assert _in_state(client, alice, vmid, "stopped")["stateReason"] == "stopped by admin root"
        unauthenticated = client.post(f"/api/dev/{vmid}/start")
        assert unauthenticated.status_code == 401


def test_the_running_quota_counts_only_running_containers(tmp_path: Path) -> None:
    with _platform(tmp_path, max_running_per_user=1) as (_, _app, client, alice):
        first = _ready(client, alice)
        refused = client.post("/api/dev", json={"runtime": "node"}, headers=alice)
        assert refused.status_code == 429
        assert refused.json()["message"] == (
            "running quota reached: alice runs 1 of 1 (max_running_per_user); "
            "stop one to start another"
        )
        client.post(f"/api/dev/{first}/stop", headers=alice)
        _in_state(client, alice, first, "stopped")
        second = _ready(client, alice)  # a stopped container does not count
        me = client.get("/api/auth/me", headers=alice).json()
        assert (me["containersHeld"], me["containersRunning"], me["runningLimit"]) == (2, 1, 1)
        refused = client.post(f"/api/dev/{first}/start", headers=alice)
        assert refused.status_code == 429
        assert "alice runs 1 of 1" in refused.json()["message"]
        assert _get(client, alice, first)["state"] == "stopped"
        client.post(f"/api/dev/{second}/stop", headers=alice)
        _in_state(client, alice, second, "stopped")
        assert client.post(f"/api/dev/{first}/start", headers=alice).status_code == 202
        _in_state(client, alice, first, "ready")


def test_a_stopped_container_is_not_polled(tmp_path: Path) -> None:
    with _platform(tmp_path) as (backend, app, client, alice):
        quiet, busy = _ready(client, alice), _ready(client, alice)
        client.post(f"/api/dev/{quiet}/stop", headers=alice)
        _in_state(client, alice, quiet, "stopped")
        # Its agent answers again behind the platform's back: a poll would reach it now.
        stopped = backend.agents[quiet]
        loop = services(app).registry._loop
        assert loop is not None
        asyncio.run_coroutine_threadsafe(stopped.start(), loop).result(timeout=10)
        calls_before, other_before = stopped.status_calls, backend.agents[busy].status_calls
        # Five polls of the other container later, the stopped one has had none.
        wait_for(
            lambda: backend.agents[busy].status_calls >= other_before + 5,
            what="the poller to go round",
        )
        assert stopped.status_calls == calls_before
        asyncio.run_coroutine_threadsafe(stopped.stop(), loop).result(timeout=10)


def test_a_poll_under_way_does_not_undo_a_stop(tmp_path: Path) -> None:
    with _platform(tmp_path) as (_backend, app, client, alice):
        vmid = _ready(client, alice)
        registry = services(app).registry
        registry.update(vmid, state=ContainerState.STOPPING)
        # What the poller writes when its answer of "ready" lands after the stop began.
        polled = [s for s in ContainerState if s.is_polled]
        registry.update(vmid, only_from=polled, state=ContainerState.READY)
        assert _get(client, alice, vmid)["state"] == "stopping"


def test_after_a_platform_restart_stopped_ones_stay_stopped_and_running_ones_run(
    tmp_path: Path,
) -> None:
    with _platform(tmp_path) as (backend, _app, client, alice):
        kept_stopped, kept_running = _ready(client, alice), _ready(client, alice)
        client.post(f"/api/dev/{kept_stopped}/stop", headers=alice)
        _in_state(client, alice, kept_stopped, "stopped")
    # The host went down: nothing of the backend runs any more.
    assert backend.running == set()
    again = make_app(tmp_path, backend)
    with running(again) as client:
        alice = login(client, "alice")
        ready = _in_state(client, alice, kept_running, "ready")
        assert ready["stateReason"] == "host restarted"
        assert _get(client, alice, kept_stopped)["state"] == "stopped"
        assert _get(client, alice, kept_stopped)["stateReason"] == "stopped by user alice"
        assert kept_stopped not in backend.running


def test_files_and_console_of_a_stopped_container_answer_409_naming_the_state(
    tmp_path: Path,
) -> None:
    with _platform(tmp_path) as (_, _app, client, alice):
        vmid = _ready(client, alice)
        client.post(f"/api/dev/{vmid}/stop", headers=alice)
        _in_state(client, alice, vmid, "stopped")
        listing = client.get(f"/api/dev/{vmid}/files", headers=alice)
        assert listing.status_code == 409
        assert listing.json() == {
            "message": f"container {vmid} is stopped: start it first",
            "detail": "",
            "validations": [],
            "state": "stopped",
        }
        url = f"ws://{client.base_url.host}:{client.base_url.port}/api/dev/{vmid}/console"
        with pytest.raises(InvalidStatus) as refused, connect(url, additional_headers=alice):
            pass
        assert refused.value.response.status_code == 409
        assert json.loads(refused.value.response.body or b"{}")["state"] == "stopped"


def _keep_using(app: Any, vmid: int, every_s: float) -> asyncio.Future[None]:
    """Report a use of ``vmid`` every ``every_s`` seconds on the app's loop, as the front and
    the relays do for keys typed in the IDE or the console, until cancelled."""
    loop = services(app).registry._loop
    assert loop is not None

    async def use() -> None:
        while True:
            services(app).lifecycle.note_activity(vmid, "terminal")
            await asyncio.sleep(every_s)

    return asyncio.run_coroutine_threadsafe(use(), loop)


def test_an_unused_container_stops_as_idle_and_says_why_while_a_used_one_runs_on(
    tmp_path: Path,
) -> None:
    with _platform(tmp_path, idle_stop_after=2, idle_check_interval_s=0.1) as (
        _,
        app,
        client,
        alice,
    ):
        unused, used = _ready(client, alice), _ready(client, alice)
        using = _keep_using(app, used, 0.2)
        try:
            assert _get(client, alice, unused)["idleStopAt"] is not None
            stopped = _in_state(client, alice, unused, "stopped")
            assert stopped["stateReason"] == "stopped after 2 s idle"
            still = _get(client, alice, used)
            assert still["state"] == "ready"
            assert still["lastActivity"]["kind"] == "terminal"
            # Its deadline moves on with each use: still (nearly) the whole limit away.
            left = datetime.fromisoformat(still["idleStopAt"]) - datetime.now(UTC)
            assert left.total_seconds() > 1.0
        finally:
            using.cancel()
        # Once nobody uses it any more, it goes the same way, naming its last activity.
        reason = _in_state(client, alice, used, "stopped")["stateReason"]
        assert reason.startswith("stopped after 2 s idle (last activity: terminal input at ")
        audit = services(app).audit.entries(vmid=unused)
        assert (audit[0].actor, audit[0].action) == ("system", "stop")


def test_an_admin_may_exempt_a_user_from_idle_stop(tmp_path: Path) -> None:
    app = make_app(tmp_path, SimBackend(), idle_stop_after=1, idle_check_interval_s=0.1)
    add_user(app, "alice")
    add_user(app, "bob")
    accounts.set_idle_stop_after(services(app).db, "alice", 0)
    with running(app) as client:
        alice, bob = login(client, "alice"), login(client, "bob")
        kept, stopped = _ready(client, alice), _ready(client, bob)
        assert _get(client, alice, kept)["idleStopAt"] is None
        _in_state(client, bob, stopped, "stopped")
        # bob's stop came after at least one more sweep of alice's: she is not stopped.
        assert _get(client, alice, kept)["state"] == "ready"


def test_a_rebuild_gives_a_fresh_system_on_the_newest_template_provisioned_again(
    tmp_path: Path,
) -> None:
    backend = SimBackend()
    app = make_app(tmp_path, backend)
    add_user(app, "alice")
    add_user(app, "bob")
    with running(app) as client:
        alice, bob = login(client, "alice"), login(client, "bob")
        vmid = _ready(client, alice)
        assert _get(client, alice, vmid)["template"] == "sim-1"
        old_agent = backend.agents[vmid]
        backend.template = 2  # the operator built a new template
        assert client.post(f"/api/dev/{vmid}/rebuild", headers=bob).status_code == 404
        rebuild = client.post(f"/api/dev/{vmid}/rebuild", headers=alice)
        assert rebuild.status_code == 202, rebuild.text
        assert rebuild.json()["state"] == "rebuilding"
        events = sse_events(client, f"/api/dev/{vmid}/events", alice)
        states = [e["state"] for e in events]
        assert states[-1] == "ready", events
        assert "provisioning" in states  # the fresh agent got the payload again
        rebuilt = _get(client, alice, vmid)
        assert rebuilt["template"] == "sim-2"
        assert rebuilt["stateReason"] == "rebuilt by user alice"
        assert backend.agents[vmid] is not old_agent
        assert len(backend.agents[vmid].payloads) == 1
        assert backend.creates == 1  # the same container, its system replaced
        # A stopped container can be rebuilt too; one being rebuilt cannot be again.
        client.post(f"/api/dev/{vmid}/stop", headers=alice)
        _in_state(client, alice, vmid, "stopped")
        assert client.post(f"/api/dev/{vmid}/rebuild", headers=alice).status_code == 202
        again = client.post(f"/api/dev/{vmid}/rebuild", headers=alice)
        assert again.status_code == 409
        assert "it cannot rebuild now" in again.json()["message"]
        _in_state(client, alice, vmid, "ready")
        actions = [e.action for e in services(app).audit.entries(vmid=vmid)]
        assert actions.count("rebuild") == 2


def test_a_backend_that_cannot_rebuild_leaves_the_container_failed_saying_why(
    tmp_path: Path,
) -> None:
    with _platform(tmp_path) as (backend, _app, client, alice):
        vmid = _ready(client, alice)
        backend.fail_rebuild = "lxc-copy: no space left on device"
        client.post(f"/api/dev/{vmid}/rebuild", headers=alice)
        failed = _in_state(client, alice, vmid, "failed")
        assert failed["error"] == "rebuild failed: lxc-copy: no space left on device"


def test_a_deleted_containers_activity_is_forgotten_with_it(tmp_path: Path) -> None:
    """A later container given the same vmid (a backend's choice) starts with no activity."""
    with _platform(tmp_path) as (_, app, client, alice):
        vmid = _ready(client, alice)
        using = _keep_using(app, vmid, 0.05)
        try:
            wait_for(
                lambda: _get(client, alice, vmid)["lastActivity"] is not None,
                what="the activity to be seen",
            )
        finally:
            using.cancel()
        assert client.delete(f"/api/dev/{vmid}", headers=alice).status_code == 204
        successor = Container(vmid=vmid, last_activity_at=None, last_activity_kind=None)
        assert services(app).lifecycle.last_activity(successor) is None
