"""Runtime versions of a ready container: upgrade or switch (``PATCH /api/dev/{vmid}``) and
removal of an inactive version (``DELETE /api/dev/{vmid}/runtimes/{runtime}/{version}``).

A change is resolved in the catalog exactly like a dev request (``resolve_request``: 422 naming
the field), must keep the container's language (another language is another container) and
needs a ``ready`` container (409 naming its state). The agent installs the version with the
same verified, atomic, per-version-locked install as provisioning, then points ``current`` at
it (``POST /runtime``); the container stays ready and usable meanwhile. This module then reads
the agent's ``/status`` at the provisioning poll interval, so the container's SSE stream carries
the download's progress, until the agent reports the change:

- ``active``: the container's ``version`` and pinned runtime artifact are recorded now, and
  only now (the payload re-sent to an agent that lost it names the new version from here on);
- ``failed`` (a digest mismatch, say): nothing is recorded, the previous version stays active,
  and the container's ``status.runtimeChange.error`` says why until the next change.

A platform that stops while it follows a change follows it again when it starts (``resume``);
an agent restarted after the change reports the version as its active one, which counts too.
"""

from __future__ import annotations

import asyncio
import logging

from zlh.api.audit import Action
from zlh.api.bodies import DevRequest
from zlh.api.db import Container, ContainerState, Pins
from zlh.api.errors import AgentError, Conflict, InvalidRequest
from zlh.api.provisioning import Provisioning, resolve_request
from zlh.api.replicas import Share, everything
from zlh.schemas import (
    AgentState,
    AgentStatus,
    RuntimeChange,
    RuntimeChangeState,
    RuntimeName,
    RuntimeSpec,
)

__all__ = ["RuntimeChanges"]

# The states in which an agent may still be carrying out a change asked for earlier.
_FOLLOWED = [
    ContainerState.READY,
    ContainerState.UNREACHABLE,
    ContainerState.PROVISIONING,
    ContainerState.STARTING,
]

logger = logging.getLogger(__name__)


class RuntimeChanges:
    def __init__(self, provisioning: Provisioning) -> None:
        """Works with the provisioning's settings, records, agents, catalog and audit log."""
        self.provisioning = provisioning
        self.settings = provisioning.settings
        self.registry = provisioning.registry
        self.agents = provisioning.agents
        self.catalog = provisioning.catalog
        self.audit = provisioning.audit
        self._watches: dict[int, asyncio.Task[None]] = {}

    # -- upgrade / switch ----------------------------------------------------------------------

    async def change(
        self, container: Container, actor: str, runtime: str, version: str
    ) -> Container:
        """Ask the agent for ``runtime`` ``version``; returns the container (status: installing)."""
        version, pins = resolve_request(
            await self.catalog.get(), DevRequest(runtime=runtime, version=version)
        )
        if runtime != container.runtime:
            raise InvalidRequest(
                f"container {container.vmid} runs {container.runtime}; switching to {runtime} is "
                "not an upgrade: request a new container for it",
                field="runtime",
            )
        url = self._ready_agent(container, f"change its {runtime} version")
        if version == container.version:
            raise Conflict(f"container {container.vmid} already runs {runtime} {version}")
        spec = RuntimeSpec(
            name=RuntimeName(runtime),
            version=version,
            artifact=self.provisioning.resolved(pins.runtime),
        )
        status = await self.agents.change_runtime(
            url,
            self.provisioning.secret(container),
            spec,
            timeout_s=self.settings.agent_request_timeout_s,
        )
        updated = self.registry.update(container.vmid, status=status) or container
        await asyncio.to_thread(
            self.audit.record,
            actor,
            Action.RUNTIME_CHANGE,
            container.vmid,
            f"{runtime} {container.version} -> {version}",
        )
        pinned = container.pins.model_copy(update={"runtime": pins.runtime})
        self._watch(container.vmid, spec, pinned)
        return updated

    async def resume(self, share: Share = everything) -> None:
        """After the platform started: follow again the changes of its ``share`` that were
        followed when it stopped.

        A change the agent reports (installing, or active but not yet recorded here) whose
        version the catalog still pins to the same digest is watched as if just asked for; one
        the catalog no longer has is left as the agent reports it, with a warning.
        """
        catalog = await self.catalog.get()
        for container in self.registry.in_states(_FOLLOWED):
            if not share(container.vmid):
                continue
            change = container.status.runtime_change if container.status else None
            if (
                change is None
                or change.state is RuntimeChangeState.FAILED
                or change.name != container.runtime
                or change.version == container.version
            ):
                continue
            try:
                version, pins = resolve_request(
                    catalog, DevRequest(runtime=change.name, version=change.version)
                )
            except InvalidRequest:
                version = ""
            if version != change.version or pins.runtime.sha256 != change.sha256:
                logger.warning(
                    "container %s: its change to %s %s is no longer in the catalog",
                    container.vmid,
                    change.name,
                    change.version,
                )
                continue
            spec = RuntimeSpec(
                name=RuntimeName(change.name),
                version=version,
                artifact=self.provisioning.resolved(pins.runtime),
            )
            pinned = container.pins.model_copy(update={"runtime": pins.runtime})
            self._watch(container.vmid, spec, pinned)

    def _ready_agent(self, container: Container, what: str) -> str:
        url = container.agent_url
        if container.state != ContainerState.READY or url is None:
            raise Conflict(
                f"container {container.vmid} is {container.state}; it must be ready to {what}"
            )
        return url

    def _watch(self, vmid: int, spec: RuntimeSpec, pins: Pins) -> None:
        old = self._watches.pop(vmid, None)
        if old is not None:
            old.cancel()
        task = asyncio.get_running_loop().create_task(
            self._follow(vmid, spec, pins), name=f"runtime-change-{vmid}"
        )
        self._watches[vmid] = task
        task.add_done_callback(
            lambda t: self._watches.pop(vmid, None) if self._watches.get(vmid) is t else None
        )

    async def _follow(self, vmid: int, spec: RuntimeSpec, pins: Pins) -> None:
        """Read the agent's status until it reports this change active or failed."""
        settings = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.provision_timeout_s
        while loop.time() < deadline:
            await asyncio.sleep(settings.poll_interval_provisioning_s)
            container = self.registry.get(vmid)
            if container is None or container.agent_url is None:
                return
            try:
                status = await self.agents.status(
                    container.agent_url,
                    self.provisioning.secret(container),
                    timeout_s=settings.poll_timeout_s,
                )
            except AgentError:
                continue  # the poller counts misses; this only follows progress
            self.registry.update(vmid, status=status)
            if status.state is not AgentState.READY:
                continue  # a restarted agent restores its payload first
            change = status.runtime_change
            if change is None and _runs(status, spec):
                # The agent restarted after the change: its restored payload names the version.
                self.registry.update(vmid, version=spec.version, pins=pins)
                return
            if change is None or not _is(change, spec):
                return  # another payload or change took over
            if change.state is RuntimeChangeState.ACTIVE:
                self.registry.update(vmid, version=spec.version, pins=pins)
                return
            if change.state is RuntimeChangeState.FAILED:
                reason = change.error.message if change.error else "no reason given"
                await asyncio.to_thread(
                    self.audit.record,
                    "system",
                    Action.RUNTIME_CHANGE,
                    vmid,
                    f"{spec.name.value} {spec.version} not installed: {reason}",
                )
                return
        logger.warning("container %s: the change to %s is still not done", vmid, spec.version)

    # -- removal -------------------------------------------------------------------------------

    async def remove(self, container: Container, actor: str, runtime: str, version: str) -> None:
        """Remove an installed version that is not the active one (NotFound, Conflict)."""
        url = self._ready_agent(container, f"remove a {runtime} version")
        status = await self.agents.remove_runtime(
            url,
            self.provisioning.secret(container),
            runtime,
            version,
            timeout_s=self.settings.agent_request_timeout_s,
        )
        self.registry.update(container.vmid, status=status)
        await asyncio.to_thread(
            self.audit.record, actor, Action.RUNTIME_REMOVE, container.vmid, f"{runtime} {version}"
        )

    async def close(self) -> None:
        tasks = list(self._watches.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _runs(status: AgentStatus, spec: RuntimeSpec) -> bool:
    """The agent reports ``spec``'s version, with ``spec``'s digest, as the active one."""
    return any(
        r.active
        and r.name == spec.name.value
        and r.version == spec.version
        and r.sha256 == spec.artifact.sha256
        for r in status.runtimes
    )


def _is(change: RuntimeChange, spec: RuntimeSpec) -> bool:
    return (
        change.name == spec.name.value
        and change.version == spec.version
        and change.sha256 == spec.artifact.sha256
    )
