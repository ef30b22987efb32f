"""Stop, start and restart a container: its disk stays; its memory and its polls go.

::

    stop     ready | unreachable | failed → stopping → (backend stop) → stopped
    start    stopped → starting → (backend start, address recorded) → ready
    restart  ready | unreachable | failed → stopping → stopped → starting → ready

The backend's stop is clean: the container's init (the process backend: the agent) gets
SIGTERM, then a bounded wait (``container_stop_timeout_s``), then a kill. A started container's
agent restores what it had (runtime, add-ons, code-server) by itself; the poller sees it ready.
Each change carries its reason (``stopped by user alice``, ``host restarted``) and its time.

The routes answer at once with the new state (202); the work runs as the container's task
(``zlh.api.tasks``), so a start asked for while the stop is still finishing runs after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from functools import partial

from zlh.api.audit import Action, AuditLog
from zlh.api.containers import ContainerRegistry
from zlh.api.db import Container, ContainerState
from zlh.api.db.models import utcnow
from zlh.api.provisioning import Provisioning
from zlh.api.settings import ApiSettings
from zlh.backends import Backend, RunState
from zlh.errors import ZlhError

__all__ = ["Lifecycle"]

logger = logging.getLogger(__name__)

STOPPABLE = (ContainerState.READY, ContainerState.UNREACHABLE, ContainerState.FAILED)


class Lifecycle:
    def __init__(
        self,
        *,
        settings: ApiSettings,
        registry: ContainerRegistry,
        backend: Backend,
        audit: AuditLog,
        provisioning: Provisioning,
        wake_poller: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.backend = backend
        self.audit = audit
        self.provisioning = provisioning
        self.tasks = provisioning.tasks
        self._wake_poller = wake_poller

    # -- what the routes call --------------------------------------------------------------

    async def stop(self, vmid: int, *, actor: str, reason: str) -> Container:
        container = await self._stop_transition(vmid, reason, "stop")
        await self._audit(actor, Action.STOP, vmid, reason)
        self.tasks.spawn(vmid, lambda: self._stop(vmid), f"stop-{vmid}")
        return container

    async def start(self, vmid: int, *, actor: str, reason: str) -> Container:
        container = await self._begin_start(vmid, reason)
        await self._audit(actor, Action.START, vmid, reason)
        self.tasks.spawn(vmid, lambda: self._start(vmid), f"start-{vmid}")
        return container

    async def restart(self, vmid: int, *, actor: str, reason: str) -> Container:
        container = await self._stop_transition(vmid, reason, "restart")
        await self._audit(actor, Action.RESTART, vmid, reason)

        async def stop_then_start() -> None:
            if await self._stop(vmid):
                await self._begin_start(vmid, reason, running_limit=False)
                await self._start(vmid)

        self.tasks.spawn(vmid, stop_then_start, f"restart-{vmid}")
        return container

    async def resume(self) -> None:
        """After the platform started: finish what was under way, keep stopped ones stopped."""
        for container in self.registry.in_states([ContainerState.STOPPING]):
            vmid = container.vmid
            self.tasks.spawn(vmid, partial(self._stop, vmid), f"stop-{vmid}")
        for container in self.registry.in_states([ContainerState.STARTING]):
            vmid = container.vmid
            self.tasks.spawn(vmid, partial(self._start, vmid), f"start-{vmid}")
        for container in self.registry.in_states([ContainerState.STOPPED]):
            try:
                if (await self.backend.status(container.vmid)).state is RunState.RUNNING:
                    await self.backend.stop(
                        container.vmid, timeout_s=self.settings.container_stop_timeout_s
                    )
            except ZlhError as exc:
                logger.warning("stopped container %s still runs: %s", container.vmid, exc)

    # -- the work ------------------------------------------------------------------------------

    async def _stop(self, vmid: int) -> bool:
        """Stop on the backend; True once the container is stopped."""
        try:
            await self.backend.stop(vmid, timeout_s=self.settings.container_stop_timeout_s)
        except ZlhError as exc:
            logger.warning("stopping container %s failed: %s", vmid, exc)
            # Still running, or no one knows: the poller finds out which.
            self.registry.update(
                vmid,
                only_from=[ContainerState.STOPPING],
                state=ContainerState.UNREACHABLE,
                error=f"stop failed: {exc.message}",
            )
            return False
        self.registry.update(
            vmid, only_from=[ContainerState.STOPPING], state=ContainerState.STOPPED, error=None
        )
        return True

    async def _start(self, vmid: int) -> None:
        try:
            async with asyncio.timeout(self.settings.container_start_timeout_s):
                await self.backend.start(vmid)
                info = await self.backend.wait_running(
                    vmid, timeout_s=self.settings.container_start_timeout_s
                )
        except (ZlhError, TimeoutError) as exc:
            message = (
                exc.message
                if isinstance(exc, ZlhError)
                else f"not running within {self.settings.container_start_timeout_s:g}s"
            )
            logger.warning("starting container %s failed: %s", vmid, message)
            with contextlib.suppress(ZlhError):  # whatever half-started goes down again
                await self.backend.stop(vmid, timeout_s=self.settings.container_stop_timeout_s)
            self.registry.update(
                vmid,
                only_from=[ContainerState.STARTING],
                state=ContainerState.STOPPED,
                error=f"start failed: {message}",
            )
            return
        self.provisioning.record_address(vmid, info)
        self._wake_poller()  # it takes over: starting → ready once the agent says so

    async def _begin_start(
        self, vmid: int, reason: str, *, running_limit: bool = True
    ) -> Container:
        limit = self.settings.max_running_per_user if running_limit else None
        return await asyncio.to_thread(
            partial(
                self.registry.transition,
                vmid,
                allowed=[ContainerState.STOPPED],
                to=ContainerState.STARTING,
                reason=reason,
                action="start",
                running_limit=limit,
                provision_started_at=utcnow(),
                error=None,
            )
        )

    async def _stop_transition(self, vmid: int, reason: str, action: str) -> Container:
        return await asyncio.to_thread(
            partial(
                self.registry.transition,
                vmid,
                allowed=STOPPABLE,
                to=ContainerState.STOPPING,
                reason=reason,
                action=action,
            )
        )

    async def _audit(self, actor: str, action: Action, vmid: int, detail: str) -> None:
        await asyncio.to_thread(self.audit.record, actor, action, vmid, detail)
