"""A simulated agent and a backend that runs one per "container", over real HTTP on loopback.

The agent speaks the real wire protocol (``ProvisionPayload`` in, ``AgentStatus`` out, Bearer
secret checked) and walks through the lifecycle's steps on a timer, so the API's provisioning,
poller and SSE paths run for real without building runtimes. Knobs make it misbehave:
``never_ready`` (stays provisioning), ``fail_with`` (ends failed), ``forget()`` (loses its
payload like a restarted agent), ``silent`` (/status hangs). A ready agent changes its runtime
version (``POST /runtime``) once ``changes_go`` is set, and reports its installed versions as
the real one does, or ``claimed_runtimes`` instead (a tenant who forged its status).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from aiohttp import web

from zlh.agent.ports import listening_ports
from zlh.backends import (
    Backend,
    BackendError,
    ContainerExists,
    ContainerInfo,
    ContainerSpec,
    RunState,
    Usage,
)
from zlh.schemas import (
    AgentState,
    AgentStatus,
    ListeningPort,
    ListeningPorts,
    Progress,
    ProvisionError,
    ProvisionPayload,
    RuntimeChange,
    RuntimeChangeState,
    RuntimeSpec,
)
from zlh.schemas.status import InstalledRuntime, ProvisionStep

STEPS = [
    (ProvisionStep.DEV_USER, 5.0),
    (ProvisionStep.RUNTIME_DOWNLOAD, 40.0),
    (ProvisionStep.RUNTIME_EXTRACT, 70.0),
    (ProvisionStep.RUNTIME_ACTIVATE, 90.0),
]


class SimAgent:
    def __init__(self, secret: str, *, step_s: float = 0.05) -> None:
        self.secret = secret
        self.step_s = step_s
        self.state = AgentState.IDLE
        self.progress: Progress | None = None
        self.error: ProvisionError | None = None
        self.payloads: list[ProvisionPayload] = []
        self.never_ready = False
        self.fail_with: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._speaking = asyncio.Event()
        self._speaking.set()
        self.status_calls = 0
        self.installed: list[RuntimeSpec] = []  # the last one active
        self.runtime_change: RuntimeChange | None = None
        self.changes_go = asyncio.Event()
        self.changes_go.set()
        self.claimed_runtimes: list[InstalledRuntime] | None = None
        self._runner: web.AppRunner | None = None
        self._work: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        app = web.Application()
        app.router.add_get("/status", self._status)
        app.router.add_post("/provision", self._provision)
        app.router.add_post("/runtime", self._change_runtime)
        app.router.add_get("/ports", self._ports)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, shutdown_timeout=0.1)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._work is not None:
            self._work.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def silent(self) -> bool:
        return not self._speaking.is_set()

    @silent.setter
    def silent(self, value: bool) -> None:
        """Settable from the test's thread: the change is made on the agent's loop."""
        change = self._speaking.clear if value else self._speaking.set
        if self._loop is None:
            change()
        else:
            self._loop.call_soon_threadsafe(change)

    def forget(self) -> None:
        """Lose the payload, as an agent whose container was recreated would."""
        if self._work is not None:
            self._work.cancel()
        self.state, self.progress, self.error = AgentState.IDLE, None, None

    def _authorised(self, request: web.Request) -> bool:
        expected = f"Bearer {self.secret}".encode()
        return hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected)

    async def _ports(self, request: web.Request) -> web.Response:
        """The real agent's answer: this host's listening sockets (a sim shares its network)."""
        if not self._authorised(request):
            return web.json_response({"message": "unauthorized"}, status=401)
        found = listening_ports()
        ports = [
            ListeningPort(port=p, address=a) for p, a in sorted(found.items()) if p != self.port
        ]
        return web.json_response(text=ListeningPorts(ports=ports).model_dump_json())

    async def _status(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"message": "unauthorized"}, status=401)
        self.status_calls += 1
        await self._speaking.wait()  # a silent agent hangs here
        return self._status_response()

    def _status_response(self, code: int = 200) -> web.Response:
        ready = self.state is AgentState.READY
        status = AgentStatus(
            workspace_root="/home/dev/workspace",
            runtime_install_path=self._install_path(),
            runtime_installed=ready,
            code_server_installed=ready and bool(self.payloads[-1].addons),
            code_server_running=ready and bool(self.payloads[-1].addons),
            state=self.state,
            progress=self.progress,
            error=self.error,
            runtime_change=self.runtime_change,
            runtimes=self._runtimes(),
            agent_version="sim",
        )
        return web.Response(
            body=status.model_dump_json(by_alias=True),
            content_type="application/json",
            status=code,
        )

    def _runtimes(self) -> list[InstalledRuntime]:
        if self.claimed_runtimes is not None:
            return self.claimed_runtimes
        return [
            InstalledRuntime(
                name=r.name.value,
                version=r.version,
                path=f"/opt/zlh/runtimes/{r.name.value}/{r.version}",
                sha256=r.artifact.sha256,
                active=r is self.installed[-1],
            )
            for r in self.installed
        ]

    async def _change_runtime(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"message": "unauthorized"}, status=401)
        spec = RuntimeSpec.model_validate_json(await request.read())
        if self.state is not AgentState.READY:
            return web.json_response({"message": f"the container is {self.state}"}, status=409)
        self.runtime_change = RuntimeChange(
            name=spec.name.value,
            version=spec.version,
            sha256=spec.artifact.sha256,
            state=RuntimeChangeState.INSTALLING,
        )
        self._work = asyncio.get_running_loop().create_task(self._install(spec))
        return self._status_response(202)

    async def _install(self, spec: RuntimeSpec) -> None:
        await self.changes_go.wait()
        await asyncio.sleep(self.step_s)
        self.installed.append(spec)
        assert self.runtime_change is not None
        self.runtime_change = self.runtime_change.model_copy(
            update={"state": RuntimeChangeState.ACTIVE}
        )

    def _install_path(self) -> str | None:
        if not self.payloads:
            return None
        runtime = self.payloads[-1].runtime
        return f"/opt/zlh/runtimes/{runtime.name}/{runtime.version}"

    async def _provision(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"message": "unauthorized"}, status=401)
        payload = ProvisionPayload.model_validate_json(await request.read())
        self.payloads.append(payload)
        if self.state is not AgentState.PROVISIONING:
            self.state = AgentState.PROVISIONING
            self._work = asyncio.get_running_loop().create_task(self._run())
        return web.json_response({"accepted": True}, status=202)

    async def _run(self) -> None:
        for step, percent in STEPS:
            self.progress = Progress(step=step, percent=percent, message=f"{step} ...")
            await asyncio.sleep(self.step_s)
        if self.fail_with is not None:
            self.error = ProvisionError(
                code="digest-mismatch", message=self.fail_with, step=ProvisionStep.RUNTIME_EXTRACT
            )
            self.state = AgentState.FAILED
            return
        if self.never_ready:
            await asyncio.Event().wait()  # until cancelled
        self.progress = Progress(step=ProvisionStep.READY, percent=100.0, message="ready")
        if self.payloads[-1].runtime not in self.installed:
            self.installed.append(self.payloads[-1].runtime)
        self.state = AgentState.READY


class SimBackend(Backend):
    """Containers are SimAgents in this process; ``create_delay_s`` slows create down."""

    name: ClassVar[str] = "sim"

    def __init__(self, *, create_delay_s: float = 0.0, step_s: float = 0.05) -> None:
        self.create_delay_s = create_delay_s
        self.step_s = step_s
        self.agents: dict[int, SimAgent] = {}
        self.running: set[int] = set()
        self.creates = 0
        # Each container's system: its template's generation (a rebuild takes the newest).
        self.template = 1
        self.systems: dict[int, int] = {}
        self.fail_create: str | None = None
        self.fail_rebuild: str | None = None
        # Called with each new agent, to make it misbehave.
        self.on_agent: Callable[[SimAgent], None] = lambda agent: None
        self.usage_of = Usage(cpu_seconds=1.5, memory_bytes=64 * 1024 * 1024)

    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        if spec.vmid in self.agents:
            raise ContainerExists(f"container {spec.vmid} exists")
        if self.fail_create is not None:
            raise BackendError(self.fail_create)
        await asyncio.sleep(self.create_delay_s)
        self.creates += 1
        agent = SimAgent(spec.agent_secret, step_s=self.step_s)
        self.on_agent(agent)
        self.agents[spec.vmid] = agent
        self.systems[spec.vmid] = self.template
        return await self.status(spec.vmid)

    async def rebuild(self, spec: ContainerSpec) -> ContainerInfo:
        """A fresh agent (it knows no payload) on the newest template."""
        if spec.vmid not in self.agents:
            raise BackendError(f"no container {spec.vmid}")
        if spec.vmid in self.running:
            raise BackendError(f"container {spec.vmid} runs: stop it before a rebuild")
        if self.fail_rebuild is not None:
            raise BackendError(self.fail_rebuild)
        agent = SimAgent(spec.agent_secret, step_s=self.step_s)
        self.on_agent(agent)
        self.agents[spec.vmid] = agent
        self.systems[spec.vmid] = self.template
        return await self.status(spec.vmid)

    async def start(self, vmid: int) -> ContainerInfo:
        agent = self.agents.get(vmid)
        if agent is None:
            raise BackendError(f"no container {vmid}")
        if vmid not in self.running:
            await agent.start()
            self.running.add(vmid)
        return await self.status(vmid)

    async def stop(self, vmid: int, *, timeout_s: float = 10.0) -> None:
        if vmid in self.running:
            await self.agents[vmid].stop()
            self.running.discard(vmid)

    async def destroy(self, vmid: int) -> None:
        await self.stop(vmid)
        self.agents.pop(vmid, None)

    async def status(self, vmid: int) -> ContainerInfo:
        agent = self.agents.get(vmid)
        if agent is None:
            return ContainerInfo(vmid=vmid, state=RunState.ABSENT)
        template = f"sim-{self.systems[vmid]}"
        if vmid not in self.running:
            return ContainerInfo(vmid=vmid, state=RunState.STOPPED, template=template)
        return ContainerInfo(
            vmid=vmid,
            state=RunState.RUNNING,
            address="127.0.0.1",
            agent_port=agent.port,
            code_server_port=6000,
            template=template,
        )

    async def list(self) -> list[ContainerInfo]:
        return [await self.status(vmid) for vmid in sorted(self.agents)]

    async def usage(self, vmids: Sequence[int]) -> dict[int, Usage]:
        """Fixed figures per running container (the simulated agents share this process)."""
        return {v: self.usage_of for v in vmids if v in self.running}

    def get_state(self) -> dict[str, Any]:
        return {"vmids": sorted(self.agents)}

    async def aclose(self) -> None:
        """Stop every agent server (tests call this on the app's loop before it ends)."""
        for vmid in list(self.running):
            await self.stop(vmid)
