"""The poller's back-off and ``unreachable``: kept for an agent that answered and went silent,
never applied to a provisioning container whose agent is still booting.

The poller runs for real on a real registry (SQLite) with a virtual clock; the agent is a
script of answers (refused connection, or a status document) instead of an HTTP server.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType
from typing import Any

from api_kit import PINS
from zlh.api import accounts
from zlh.api.agent_client import AgentClient
from zlh.api.containers import ContainerRegistry, Quota
from zlh.api.db import Container, ContainerState, Database
from zlh.api.errors import AgentUnreachable
from zlh.api.events import EventBus
from zlh.api.poller import Poller
from zlh.api.settings import ApiSettings
from zlh.routefeed import RouteFeed
from zlh.schemas import AgentState, AgentStatus

REFUSED = AgentUnreachable("agent at http://10.0.3.2:7100/status is unreachable: refused")
PROVISIONING = AgentStatus(
    workspace_root="/home/dev/workspace", state=AgentState.PROVISIONING, agent_version="test"
)
READY = AgentStatus(
    workspace_root="/home/dev/workspace", state=AgentState.READY, agent_version="test"
)


class ScriptedAgent:
    """``status_body`` answers what ``answer`` holds: an AgentStatus, or an error to raise."""

    parse_status = staticmethod(AgentClient.parse_status)

    def __init__(self, advance: Callable[[float], None]) -> None:
        self.answer: AgentStatus | Exception = REFUSED
        self.polls = 0
        self.advance = advance  # moves the rig's clock
        self.takes_s = 0.0  # how long each answer takes

    async def status_body(self, url: str, secret: str, *, timeout_s: float) -> bytes:
        self.polls += 1
        self.advance(self.takes_s)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer.model_dump_json(by_alias=True).encode()


class Rig:
    """A poller over one container in ``state`` and its scripted agent, on a virtual clock."""

    def __init__(self, registry: ContainerRegistry, vmid: int, settings: ApiSettings) -> None:
        self.registry = registry
        self.vmid = vmid
        self.now = 1000.0
        self.agent = ScriptedAgent(self._advance)
        self.states: list[str] = []  # every state the registry was told, in order

        async def resend(_container: Container) -> None:
            return None

        self.poller = Poller(
            settings=settings,
            registry=registry,
            agents=self.agent,  # type: ignore[arg-type]
            secret=lambda _c: "secret",
            resend=resend,
            overdue=lambda _c: False,
            clock=lambda: self.now,
        )
        update = registry.update

        def recording_update(vmid: int, **changes: Any) -> Container | None:
            if "state" in changes:
                self.states.append(str(changes["state"]))
            return update(vmid, **changes)

        registry.update = recording_update  # type: ignore[method-assign]

    def _advance(self, seconds: float) -> None:
        self.now += seconds

    @property
    def state(self) -> str:
        container = self.registry.get(self.vmid)
        assert container is not None
        return container.state

    async def poll(self) -> float:
        """Move the clock to the container's next poll, poll; seconds until the next one."""
        target = self.poller._targets.get(self.vmid)
        if target is not None:
            self.now = max(self.now, target.due)
        await self.poller.poll_once()
        return self.poller._targets[self.vmid].due - self.now


def run_rig(tmp_path: Path, state: ContainerState, body: Callable[[Rig], Awaitable[None]]) -> None:
    settings = ApiSettings(
        data_dir=tmp_path,
        poll_interval_s=5.0,
        poll_interval_provisioning_s=0.5,
        poll_max_backoff_s=60.0,
        unreachable_after_misses=3,
        agent_answer_timeout_s=120.0,
    )
    db = Database(settings.db_url)
    db.migrate()
    owner = accounts.create_user(db, "alice", "correct horse battery")
    registry = ContainerRegistry(db, EventBus(), RouteFeed())
    container = registry.allocate(
        owner=owner, runtime="node", version="22", addons=[], pins=PINS, quota=Quota(3, 3)
    )
    registry.update(
        container.vmid, state=state, address="10.0.3.2", agent_port=7100, code_server_port=6000
    )

    async def main() -> None:
        registry.bind_loop(asyncio.get_running_loop())
        await body(Rig(registry, container.vmid, settings))

    try:
        asyncio.run(main())
    finally:
        db.dispose()


def test_a_provisioning_container_whose_agent_still_boots_is_neither_backed_off_nor_unreachable(
    tmp_path: Path,
) -> None:
    async def body(rig: Rig) -> None:
        # Ten refused polls (five seconds of boot): each next poll at the provisioning pace.
        gaps = [await rig.poll() for _ in range(10)]
        assert gaps == [0.5] * 10
        assert rig.state == ContainerState.PROVISIONING
        rig.agent.answer = PROVISIONING  # the agent is up
        assert await rig.poll() == 0.5
        rig.agent.answer = READY
        await rig.poll()
        assert rig.state == ContainerState.READY
        assert ContainerState.UNREACHABLE not in rig.states

    run_rig(tmp_path, ContainerState.PROVISIONING, body)


def test_an_answered_poll_is_due_again_one_interval_after_it_started_however_long_it_took(
    tmp_path: Path,
) -> None:
    """The poller ticks every provisioning interval from the tick that launched a poll: a next
    poll due after the last one ended would miss its tick and wait a whole interval more."""

    async def body(rig: Rig) -> None:
        rig.agent.answer = PROVISIONING
        rig.agent.takes_s = 0.05
        started = rig.now
        await rig.poll()
        assert rig.poller._targets[rig.vmid].due == started + 0.5
        rig.agent.answer = READY
        started = rig.now = rig.poller._targets[rig.vmid].due
        await rig.poll()
        assert rig.state == ContainerState.READY
        started = rig.now = rig.poller._targets[rig.vmid].due
        await rig.poll()  # the same document again: the steady state
        assert rig.poller._targets[rig.vmid].due == started + 5.0

    run_rig(tmp_path, ContainerState.PROVISIONING, body)


def test_a_provisioning_agent_that_never_answers_is_unreachable_after_the_agent_answer_timeout(
    tmp_path: Path,
) -> None:
    async def body(rig: Rig) -> None:
        await rig.poll()
        rig.now += 120.0  # agent_answer_timeout_s: no longer a boot
        gaps = [await rig.poll() for _ in range(3)]
        assert gaps == [1.0, 2.0, 4.0]
        assert rig.state == ContainerState.UNREACHABLE

    run_rig(tmp_path, ContainerState.PROVISIONING, body)


def test_a_provisioning_agent_that_answered_and_went_silent_is_backed_off_and_unreachable(
    tmp_path: Path,
) -> None:
    async def body(rig: Rig) -> None:
        rig.agent.answer = PROVISIONING
        assert await rig.poll() == 0.5
        rig.agent.answer = REFUSED
        gaps = [await rig.poll() for _ in range(3)]
        assert gaps == [1.0, 2.0, 4.0]
        assert rig.state == ContainerState.UNREACHABLE

    run_rig(tmp_path, ContainerState.PROVISIONING, body)


def test_a_ready_container_whose_agent_goes_silent_is_backed_off_up_to_the_cap_and_unreachable(
    tmp_path: Path,
) -> None:
    async def body(rig: Rig) -> None:
        rig.agent.answer = READY
        assert 0.0 <= await rig.poll() < 5.0  # its phase in the interval
        assert await rig.poll() == 5.0
        rig.agent.answer = REFUSED
        gaps = [await rig.poll() for _ in range(2)]
        assert gaps == [10.0, 20.0]
        assert rig.state == ContainerState.READY
        assert await rig.poll() == 40.0
        assert rig.state == ContainerState.UNREACHABLE
        assert [await rig.poll() for _ in range(2)] == [60.0, 60.0]  # poll_max_backoff_s
        rig.agent.answer = READY
        await rig.poll()
        assert rig.state == ContainerState.READY

    run_rig(tmp_path, ContainerState.READY, body)


def test_a_ready_container_found_after_a_restart_is_backed_off_from_its_first_miss(
    tmp_path: Path,
) -> None:
    """The boot allowance is for provisioning containers only: a ready container's agent
    that does not answer the poller's first polls is a silent agent."""

    async def body(rig: Rig) -> None:
        gaps = [await rig.poll() for _ in range(3)]
        assert gaps == [10.0, 20.0, 40.0]
        assert rig.state == ContainerState.UNREACHABLE

    run_rig(tmp_path, ContainerState.READY, body)


def test_an_agent_is_read_at_the_last_tick_before_it_is_due_never_after(tmp_path: Path) -> None:
    """A tick launches every poll due before the next tick: two reads of an agent are at most
    its interval apart, however the ticks fall."""

    async def body(rig: Rig) -> None:
        rig.agent.answer = READY
        await rig.poll()  # its phase
        started = rig.now = rig.poller._targets[rig.vmid].due
        await rig.poll()
        due = rig.poller._targets[rig.vmid].due
        assert due == started + 5.0
        polls = rig.agent.polls
        rig.now = due - 0.2
        await rig.poller.poll_once(before=due - 0.1)  # a tick whose next comes before it
        assert rig.agent.polls == polls
        rig.now = due - 0.05
        await rig.poller.poll_once(before=due + 0.05)  # the last tick before it
        assert rig.agent.polls == polls + 1
        assert rig.poller._targets[rig.vmid].due == due - 0.05 + 5.0

    run_rig(tmp_path, ContainerState.READY, body)


def test_containers_taken_on_together_are_read_again_spread_over_the_interval(
    tmp_path: Path,
) -> None:
    """A start or a takeover reads every container of the share at once; their next reads are
    spread over the interval (and never later than it), not one burst every interval whose
    queue would make the last reads late."""

    async def body(rig: Rig) -> None:
        rig.agent.answer = READY
        _add_ready_containers(rig.registry, 199)
        started = rig.now
        await rig.poller.poll_once()
        assert rig.agent.polls == 200
        dues = sorted(t.due for t in rig.poller._targets.values())
        assert started <= dues[0] and dues[-1] < started + 5.0
        # Evenly spread: no half second of the interval holds more than a seventh of them.
        busiest = max(sum(1 for d in dues if t <= d < t + 0.5) for t in dues)
        assert busiest <= 200 // 7
        # From the second read on, each is read one interval after the last.
        for target in sorted(rig.poller._targets.values(), key=lambda t: t.due):
            rig.now = max(rig.now, target.due)
            await rig.poller.poll_once()
        assert rig.agent.polls == 400
        assert all(t.due == t.launched + 5.0 for t in rig.poller._targets.values())

    run_rig(tmp_path, ContainerState.READY, body)


def test_a_reload_runs_no_garbage_collection_and_leaves_the_collector_on(tmp_path: Path) -> None:
    """A reload's rows are garbage when it returns: a collection while it runs would only
    promote them towards the oldest generation, whose full passes stop the event loop."""

    async def body(rig: Rig) -> None:
        _add_ready_containers(rig.registry, 299)
        collections: list[int] = []

        reload_code = inspect.unwrap(Poller._reload).__code__

        def seen(phase: str, info: dict[str, int]) -> None:
            frame: FrameType | None = sys._getframe(1)
            while phase == "start" and frame is not None:
                if frame.f_code is reload_code:
                    collections.append(info["generation"])
                frame = frame.f_back

        gc.callbacks.append(seen)
        try:
            rig.poller._reload()
        finally:
            gc.callbacks.remove(seen)
        assert len(rig.poller._targets) == 300
        assert collections == []
        assert gc.isenabled()

    run_rig(tmp_path, ContainerState.READY, body)


def _add_ready_containers(registry: ContainerRegistry, count: int) -> None:
    """``count`` more ready containers of alice's beside the rig's."""
    owner = accounts.get_user(registry.db, "alice")
    for _ in range(count):
        container = registry.allocate(
            owner=owner, runtime="node", version="22", addons=[], pins=PINS, quota=Quota(999, 999)
        )
        registry.update(
            container.vmid,
            state=ContainerState.READY,
            address="10.0.3.2",
            agent_port=7100,
            code_server_port=6000,
        )
