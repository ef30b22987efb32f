"""A hand-out's secret rotation converges whatever a crash left: the API's record and a real
``zlh agent`` end on the new secret, whether the agent had taken it already or not; an agent
that holds neither secret is not recorded as rotated. And what ``warm_pool`` means."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from agent_helpers import (
    AgentProcess,
    artifact,
    artifact_server,
    payload,
    runtime_members,
    tarball,
)
from agent_sim import SimBackend
from api_kit import PINS, add_user, make_app, running, services, wait_for
from zlh.api.accounts import get_user
from zlh.api.containers import Quota
from zlh.api.db import Container, ContainerState, Pins
from zlh.api.errors import AgentError
from zlh.api.keys import agent_secret
from zlh.api.pool import wanted_sizes
from zlh.api.settings import ApiSettings
from zlh.schemas import Artifact, ArtifactFormat, ArtifactKind, Catalog

NEXT = "f" * 32


@dataclass
class HandOut:
    app: FastAPI
    container: Container
    agent: AgentProcess

    def secret(self, nonce: str) -> str:
        key = services(self.app).provisioning.agent_key
        return agent_secret(key, self.container.vmid, nonce)

    def accepts(self, nonce: str) -> bool:
        headers = {"Authorization": f"Bearer {self.secret(nonce)}"}
        status = httpx.get(f"{self.agent.url}/status", headers=headers).status_code
        assert status in (200, 401)
        return status == 200

    def rotate(self) -> None:
        svc = services(self.app)
        assert svc.registry._loop is not None
        coro = svc.provisioning.rotate_secret(self.container.vmid)
        asyncio.run_coroutine_threadsafe(coro, svc.registry._loop).result(timeout=30)

    def record(self) -> Container:
        container = services(self.app).registry.get(self.container.vmid)
        assert container is not None
        return container


@pytest.fixture
def hand_out(tmp_path: Path) -> Iterator[HandOut]:
    """alice's container as a crash in the middle of its hand-out leaves it (``creating``, a
    ``next_nonce`` recorded), on a real agent process holding the secret ``hand_out`` is
    given (the test writes the token file before the agent starts)."""
    app = make_app(tmp_path / "data", SimBackend())
    with running(app):
        add_user(app, "alice")
        svc = services(app)
        container = svc.registry.allocate(
            owner=get_user(svc.db, "alice"),
            runtime="node",
            version="22",
            addons=[],
            pins=PINS,
            quota=Quota(containers=3, running=3),
        )
        agent = AgentProcess(tmp_path / "root")
        updated = svc.registry.update(
            container.vmid,
            state=ContainerState.CREATING,
            next_nonce=NEXT,
            address="127.0.0.1",
            agent_port=agent.port,
        )
        assert updated is not None
        try:
            yield HandOut(app, updated, agent)
        finally:
            agent.stop()


def _start_with(hand_out: HandOut, nonce: str) -> None:
    token = hand_out.agent.root.parent / f"{hand_out.agent.root.name}.token"
    token.write_text(hand_out.secret(nonce))
    hand_out.agent.start()


@pytest.mark.parametrize("agent_had_swapped", [False, True])
def test_the_rotation_converges_on_the_new_secret(
    hand_out: HandOut, agent_had_swapped: bool
) -> None:
    old = hand_out.container.agent_nonce
    _start_with(hand_out, NEXT if agent_had_swapped else old)
    hand_out.rotate()
    record = hand_out.record()
    assert (record.agent_nonce, record.next_nonce) == (NEXT, None)
    assert hand_out.accepts(NEXT)
    assert not hand_out.accepts(old)


def test_an_agent_holding_neither_secret_is_not_recorded_as_rotated(hand_out: HandOut) -> None:
    old = hand_out.container.agent_nonce
    _start_with(hand_out, "0" * 32)  # a container that is not the one the record names
    with pytest.raises(AgentError, match="refused the container secret"):
        hand_out.rotate()
    record = hand_out.record()
    assert (record.agent_nonce, record.next_nonce) == (old, NEXT)
    assert not hand_out.accepts(NEXT)


def test_a_hand_out_is_driven_even_while_the_pool_builds_drive_is_still_finishing(
    hand_out: HandOut,
) -> None:
    # The pool build's drive can still be ending (its last record update) when the agent
    # already reports ready and a request takes the container: the hand-out must not be lost.
    _start_with(hand_out, hand_out.container.agent_nonce)
    svc = services(hand_out.app)
    loop = svc.registry._loop
    assert loop is not None
    vmid = hand_out.container.vmid

    async def finishing_build() -> asyncio.Event:
        release = asyncio.Event()
        svc.provisioning.tasks.spawn(vmid, release.wait, f"build-{vmid}")
        svc.provisioning.spawn_held(vmid, svc.provisioning.jobs.hold_now(vmid), running=True)
        return release

    release = asyncio.run_coroutine_threadsafe(finishing_build(), loop).result(timeout=10)
    assert hand_out.record().next_nonce == NEXT  # queued behind the build, not run yet
    loop.call_soon_threadsafe(release.set)
    wait_for(lambda: hand_out.record().next_nonce is None, what="the hand-out's rotation")
    assert hand_out.accepts(NEXT)


def _catalog(*runtimes: str) -> Catalog:
    catalog = Catalog()
    art = Artifact(url="x.tar.gz", sha256="a" * 64, size=1, format=ArtifactFormat.TAR_GZ)
    for name in runtimes:
        catalog = catalog.with_version(ArtifactKind.RUNTIME, name, "1", art)
    return catalog


@pytest.mark.parametrize(
    ("setting", "runtimes", "wanted"),
    [
        (None, ("python", "node"), {"node": 1}),  # the default: 1 of node
        (None, ("python", "go"), {"python": 1}),  # no node: the catalog's first runtime
        (None, (), {}),
        (2, ("node",), {"node": 2}),
        (0, ("node",), {}),
        ({}, ("node",), {}),
        ({"python": 1, "node": 0}, ("node", "python"), {"python": 1}),
    ],
)
def test_warm_pool_sizes(
    setting: dict[str, int] | int | None, runtimes: tuple[str, ...], wanted: dict[str, int]
) -> None:
    assert wanted_sizes(setting, _catalog(*runtimes)) == wanted


@pytest.mark.parametrize(
    ("setting", "says"),
    [({"nodee": 1}, "unknown runtime 'nodee'"), ({"node": -1}, "0 or more"), (-2, "0 or more")],
)
def test_a_bad_warm_pool_setting_is_refused_naming_it(
    setting: dict[str, int] | int, says: str, tmp_path: Path
) -> None:
    with pytest.raises(ValidationError, match="warm_pool") as raised:
        ApiSettings(data_dir=tmp_path, warm_pool=setting)
    assert says in str(raised.value)


def test_a_handed_out_container_whose_agent_still_holds_the_pool_payload_gets_its_own(
    hand_out: HandOut,
) -> None:
    """A crash after the rotation but before the real payload: the poller sees the agent's
    pool payload on a container that is no longer the pool's and sends the real one."""
    runtime = tarball(runtime_members())
    with artifact_server() as server:
        art = artifact(server.add("node.tar.gz", runtime), runtime)
        svc = services(hand_out.app)
        _start_with(hand_out, NEXT)
        vmid = hand_out.container.vmid
        pool_payload = payload(art, vmid=vmid, pool=True)
        agent_auth = {"Authorization": f"Bearer {hand_out.secret(NEXT)}"}
        sent = httpx.post(f"{hand_out.agent.url}/provision", json=pool_payload, headers=agent_auth)
        assert sent.status_code == 202
        home = hand_out.agent.root / "home" / "dev"

        def agent_status() -> dict[str, object]:
            answer = httpx.get(f"{hand_out.agent.url}/status", headers=agent_auth)
            body: dict[str, object] = answer.json()
            return body

        wait_for(lambda: agent_status()["state"] == "ready", what="the pool payload")
        assert agent_status()["pool"] is True and not home.exists()
        pins = Pins(runtime=Artifact.model_validate(art))
        svc.registry.update(
            vmid,
            agent_nonce=NEXT,
            next_nonce=None,
            pins=pins,
            state=ContainerState.PROVISIONING,
        )
        svc.poller.wake()
        wait_for(
            lambda: (c := hand_out.record()).state == "ready" and c.status and not c.status.pool,
            what="the container's own payload",
        )
        assert agent_status()["pool"] is False
        assert (home / "workspace" / "README.md").is_file()
