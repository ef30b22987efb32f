"""Provisioning jobs: dev user → runtime → addons → ready, in the background, one at a time.

``submit`` answers at once. A payload identical to the newest pending job joins it (no second
install); any other payload queues behind the running job, so a payload for another runtime
version adds that version next to the first (installs are idempotent, so queued jobs redo
nothing that is already in place). The last accepted payload is persisted; when the agent
starts, it is submitted again: installed parts pass their guard in milliseconds, leftovers of a
crash are swept, supervised addons are adopted or restarted. One code path for "provision",
"re-provision" and "recover after a restart".

Provisioning activates the payload's runtime version: the payload is the container's desired
state, so the same payload always yields the same container.

A ready container's runtime version changes through :meth:`Provisioner.change_runtime`: the
same verified install (one lock per version), then ``current`` moves to it, and only then does
the persisted payload name the new version. The container stays ready meanwhile; a failed
change leaves the previous version active and the payload as it was, and says why in
``/status`` (``runtimeChange``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from zlh.agent.config import AgentConfig
from zlh.agent.errors import AgentError, Conflict
from zlh.agent.paths import Layout
from zlh.agent.runtimes import Runtimes
from zlh.atomic import write_atomically
from zlh.install.installed import sweep_all
from zlh.install.progress import ProgressTracker
from zlh.schemas import (
    AgentState,
    ArtifactKind,
    ProvisionError,
    ProvisionPayload,
    ProvisionStep,
    RuntimeChange,
    RuntimeChangeState,
    RuntimeSpec,
)

if TYPE_CHECKING:
    from zlh.agent.addons.base import Addon
    from zlh.agent.devuser import DevEnvironment
    from zlh.install.installer import Installer

__all__ = ["Provisioner"]

log = logging.getLogger("zlh.agent")


class Provisioner:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.layout = Layout(config.root)
        self._installer: Installer | None = None
        self.runtimes = Runtimes(self.layout)
        self.tracker = ProgressTracker()
        self.state = AgentState.IDLE
        self.error: ProvisionError | None = None
        self.payload: ProvisionPayload | None = None
        self.runtime_change: RuntimeChange | None = None
        self.dev: DevEnvironment | None = None
        self.addons: dict[str, Addon[Any]] = {}
        self._jobs: list[tuple[ProvisionPayload, asyncio.Task[None]]] = []
        self._one_at_a_time = asyncio.Lock()

    @property
    def installer(self) -> Installer:
        """The installing machinery (HTTP client, tar, threads), loaded on first use: an agent
        with nothing to install keeps none of it in memory."""
        if self._installer is None:
            from zlh.install.installer import Installer

            config = self.config
            self._installer = Installer(
                policy=config.retry, artifact_base_url=config.artifact_base_url
            )
        return self._installer

    # -- accepting work -------------------------------------------------------------------

    def submit(self, payload: ProvisionPayload) -> bool:
        """Start (or queue) provisioning ``payload``; True if it joined an identical job."""
        self._jobs = [(p, t) for p, t in self._jobs if not t.done()]
        if self._jobs and self._jobs[-1][0] == payload:
            return True
        self._persist(payload)
        self.payload = payload
        self.state = AgentState.PROVISIONING
        self.error = None
        self.runtime_change = None
        task = asyncio.create_task(self._serially(payload), name=f"provision-{payload.vmid}")
        self._jobs.append((payload, task))
        return False

    def change_runtime(self, runtime: RuntimeSpec) -> None:
        """Install ``runtime`` beside the active version and switch to it, in the background.

        Raises Conflict unless the container is ready and no change is running, and when
        ``runtime`` is another language than the payload's (that is a new container).
        """
        payload = self.payload
        if payload is None or self.state is not AgentState.READY:
            raise Conflict(f"the container is {self.state.value}, not ready")
        if self.runtime_change and self.runtime_change.state is RuntimeChangeState.INSTALLING:
            busy = self.runtime_change
            raise Conflict(f"{busy.name} {busy.version} is being installed; try again when done")
        if runtime.name != payload.runtime.name:
            raise Conflict(
                f"the container's runtime is {payload.runtime.name.value}; "
                f"{runtime.name.value} needs a new container"
            )
        change = self.runtime_change = RuntimeChange(
            name=runtime.name.value,
            version=runtime.version,
            sha256=runtime.artifact.sha256,
            state=RuntimeChangeState.INSTALLING,
        )
        # Progress says so from the first /status on, not the last provisioning's "ready".
        label = f"{runtime.name.value} {runtime.version}"
        self.tracker.enter(ProvisionStep.RUNTIME_DOWNLOAD, f"waiting to install runtime {label}")
        target = payload.model_copy(update={"runtime": runtime})
        task = asyncio.create_task(
            self._change(payload, target, change), name=f"runtime-{runtime.version}"
        )
        self._jobs.append((target, task))

    async def _change(
        self, previous: ProvisionPayload, target: ProvisionPayload, change: RuntimeChange
    ) -> None:
        async with self._one_at_a_time:
            try:
                await self._install_runtime(target.runtime)
            except Exception as exc:
                step = self.tracker.step or ProvisionStep.RUNTIME_DOWNLOAD
                if isinstance(exc, AgentError):
                    code, message = exc.code, exc.message
                else:
                    log.exception("changing to %s %s failed", change.name, change.version)
                    code, message = "internal-error", f"{type(exc).__name__}: {exc}"
                log.error("changing to %s %s failed: %s", change.name, change.version, message)
                # Activation is the last step: undo it if it got that far (the PATH profile).
                with contextlib.suppress(AgentError, OSError):
                    await asyncio.to_thread(
                        self.runtimes.activate, change.name, previous.runtime.version
                    )
                failed = change.model_copy(
                    update={
                        "state": RuntimeChangeState.FAILED,
                        "error": ProvisionError(code=code, message=message, step=step),
                    }
                )
                self._settle(change, failed, f"ready; {change.name} {change.version} not installed")
                return
            if self.runtime_change is change:  # no newer payload arrived meanwhile
                self._persist(target)
                self.payload = target
            active = change.model_copy(update={"state": RuntimeChangeState.ACTIVE})
            self._settle(change, active, "ready")

    def _settle(self, change: RuntimeChange, outcome: RuntimeChange, message: str) -> None:
        """Report how ``change`` ended, unless a newer payload took over meanwhile."""
        if self.runtime_change is change:
            self.runtime_change = outcome
            self.tracker.enter(ProvisionStep.READY, message)

    def _persist(self, payload: ProvisionPayload) -> None:
        if payload == self.payload:
            return  # already on disk (the guarded re-provisioning path stays write-free)
        path = self.layout.payload_file
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomically(path, payload.json_with_secrets(indent=2), mode=0o600)

    async def restore(self) -> None:
        """At startup: sweep crash leftovers, then re-provision the last accepted payload."""
        parents = [self.layout.services]
        if self.layout.runtimes.is_dir():
            parents += [d for d in self.layout.runtimes.iterdir() if d.is_dir()]
        await asyncio.to_thread(sweep_all, parents)
        try:
            raw = self.layout.payload_file.read_bytes()
        except FileNotFoundError:
            return
        try:
            payload = ProvisionPayload.model_validate_json(raw)
        except ValidationError as exc:
            log.error("ignoring the persisted payload %s: %s", self.layout.payload_file, exc)
            return
        self.payload = payload  # it is on disk already
        self.submit(payload)

    async def wait_idle(self) -> None:
        """Wait until no job is pending (tests, benchmarks, shutdown)."""
        while self._jobs:
            _payload, task = self._jobs[0]
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)
            self._jobs = [(p, t) for p, t in self._jobs if not t.done()]

    async def close(self) -> None:
        for _payload, task in self._jobs:
            task.cancel()
        for _payload, task in self._jobs:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for addon in self.addons.values():
            await addon.stop()
        if self._installer is not None:
            await self._installer.close()

    # -- doing it --------------------------------------------------------------------------

    async def _serially(self, payload: ProvisionPayload) -> None:
        async with self._one_at_a_time:
            final, error = await self._run(payload)
        # A newer job queued behind this one owns the state from now on.
        if self._jobs and self._jobs[-1][1] is asyncio.current_task():
            self.state, self.error = final, error

    async def _run(self, payload: ProvisionPayload) -> tuple[AgentState, ProvisionError | None]:
        self.state, self.error = AgentState.PROVISIONING, None
        from zlh.agent.devuser import ensure_dev_environment

        tracker = self.tracker
        try:
            if payload.pool:
                await self._install_runtime(payload.runtime)
                await self._install_addons(payload)
                tracker.enter(ProvisionStep.READY, "ready for the warm pool")
                return AgentState.READY, None
            tracker.enter(ProvisionStep.DEV_USER, f"preparing the dev user {payload.dev_user.name}")
            self.dev = await ensure_dev_environment(self.layout, payload.dev_user)
            await self._install_runtime(payload.runtime)
            await self._provision_addons(payload, self.dev)
        except AgentError as exc:
            step = tracker.step or ProvisionStep.DEV_USER
            log.error("provisioning failed at %s: %s", step.value, exc.message)
            return AgentState.FAILED, ProvisionError(code=exc.code, message=exc.message, step=step)
        except Exception as exc:
            step = tracker.step or ProvisionStep.DEV_USER
            log.exception("provisioning failed at %s", step.value)
            message = f"{type(exc).__name__}: {exc}"
            return AgentState.FAILED, ProvisionError(
                code="internal-error", message=message, step=step
            )
        tracker.enter(ProvisionStep.READY, "ready")
        return AgentState.READY, None

    async def _install_runtime(self, runtime: RuntimeSpec) -> None:
        from zlh.install.installer import InstallRequest

        name = runtime.name.value
        request = InstallRequest(
            kind=ArtifactKind.RUNTIME,
            name=name,
            version=runtime.version,
            artifact=runtime.artifact,
            target=self.layout.runtime(name, runtime.version),
        )
        await self.installer.ensure(request, self.tracker)
        self.tracker.enter(ProvisionStep.RUNTIME_ACTIVATE, f"activating {name} {runtime.version}")
        await asyncio.to_thread(self.runtimes.activate, name, runtime.version)

    async def _install_addons(self, payload: ProvisionPayload) -> None:
        """The add-ons' artifacts only (a warm-pool payload), and what each does ahead of its
        user: nothing configured or started."""
        from zlh.agent.addons import addon_class
        from zlh.agent.addons.base import install_request

        for spec in payload.addons:
            await self.installer.ensure(install_request(spec, self.layout), self.tracker)
            await addon_class(spec.name).warm(spec, self.layout)

    def _runtime_path(self, runtime: RuntimeSpec) -> tuple[str, ...]:
        name = runtime.name.value
        marker = self.runtimes.marker(name, runtime.version)
        return tuple(str(self.layout.current(name) / rel) for rel in (marker.bin if marker else []))

    async def _provision_addons(self, payload: ProvisionPayload, dev: DevEnvironment) -> None:
        from zlh.agent.addons import make_addon
        from zlh.agent.addons.base import AddonContext

        ctx = AddonContext(
            layout=self.layout,
            config=self.config,
            installer=self.installer,
            dev=dev,
            vmid=payload.vmid,
            runtime_path=self._runtime_path(payload.runtime),
        )
        wanted = {spec.name for spec in payload.addons}
        for name in [n for n in self.addons if n not in wanted]:
            await self.addons.pop(name).stop()
        for spec in payload.addons:
            addon = self.addons.get(spec.name)
            if addon is None or not addon.same_as(spec, ctx):
                if addon is not None:
                    await addon.stop()
                addon = self.addons[spec.name] = make_addon(spec, ctx)
            await addon.install(self.tracker)
            self.tracker.enter(ProvisionStep.ADDON_INSTALL, f"configuring {spec.name}")
            await addon.configure()
            self.tracker.enter(ProvisionStep.ADDON_START, f"starting {spec.name}")
            await addon.start()
