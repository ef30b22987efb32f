"""Runtime versions of a ready container: upgrade or switch (``PATCH /api/dev/{vmid}``) and
removal of an inactive version (``DELETE /api/dev/{vmid}/runtimes/{runtime}/{version}``).

A change is resolved in the catalog exactly like a dev request (``resolve_request``: 422 naming
the field), must keep the container's language (another language is another container) and
needs a ``ready`` container (409 naming its state). The agent installs the version with the
same verified, atomic, per-version-locked install as provisioning, then points ``current`` at
it (``POST /runtime``); the container stays ready and usable meanwhile.

What follows is the poller's (:meth:`RuntimeChanges.observed`), not the requesting process's:
the container's poller reads the agent at the provisioning pace while the change installs, so
its SSE stream carries the download's progress, and records how it ended:

- the agent's active version is another than the record's (the change went ``active``, or the
  agent finished it and restarted): the container's ``version`` and pinned runtime artifact
  are recorded then, and only then, and only if the catalog pins that version of the
  container's language to the digest the agent reports (the payload re-sent to an agent that
  lost it names the new version from here on);
- ``failed`` (a digest mismatch, say): nothing is recorded, the previous version stays active,
  the audit log says why and so does ``status.runtimeChange.error`` until the next change.

So a change outlives the replica that took the request, and the platform's own restarts: the
owner of the container's poll share, whichever replica that is now, sees what the agent did.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from zlh.api.audit import Action
from zlh.api.bodies import DevRequest
from zlh.api.db import Container, ContainerState
from zlh.api.errors import Conflict, InvalidRequest
from zlh.api.provisioning import Provisioning, resolve_request
from zlh.errors import ZlhError
from zlh.schemas import (
    AgentStatus,
    ArtifactKind,
    CatalogLookupError,
    InstalledRuntime,
    RuntimeChangeState,
    RuntimeName,
    RuntimeSpec,
)

__all__ = ["RuntimeChanges"]

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
        # Told the vmid of a container whose change was just asked for: its poller (this
        # process's, if its share) picks up the pace at once.
        self.on_change: Callable[[int], None] = lambda _vmid: None

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
        self.on_change(container.vmid)
        return updated

    def _ready_agent(self, container: Container, what: str) -> str:
        url = container.agent_url
        if container.state != ContainerState.READY or url is None:
            raise Conflict(
                f"container {container.vmid} is {container.state}; it must be ready to {what}"
            )
        return url

    async def observed(self, container: Container, status: AgentStatus) -> dict[str, Any]:
        """What the poller records of a ready agent's runtime (``status``, just polled):
        ``version`` and ``pins`` when the agent's active version is another than the record's
        and the catalog pins it to the digest the agent reports; nothing otherwise. A change
        failed since the record's status (the request wrote it ``installing``) is audited."""
        change = status.runtime_change
        recorded = container.status.runtime_change if container.status else None
        if change is not None and change.state is RuntimeChangeState.FAILED and change != recorded:
            reason = change.error.message if change.error else "no reason given"
            detail = f"{change.name} {change.version} not installed: {reason}"
            await asyncio.to_thread(
                self.audit.record, "system", Action.RUNTIME_CHANGE, container.vmid, detail
            )
        active = next(
            (r for r in status.runtimes if r.active and r.name == container.runtime), None
        )
        if active is None or active.version == container.version:
            return {}
        try:
            catalog = await self.catalog.get()
            _, artifact = catalog.resolve(ArtifactKind.RUNTIME, active.name, active.version)
        except (ZlhError, CatalogLookupError) as exc:
            return _unrecorded(container, active, exc.message)
        if artifact.sha256 != active.sha256:
            return _unrecorded(container, active, f"the catalog pins sha256 {artifact.sha256}")
        return {
            "version": active.version,
            "pins": container.pins.model_copy(update={"runtime": artifact}),
        }

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


def _unrecorded(container: Container, active: InstalledRuntime, why: str) -> dict[str, Any]:
    logger.warning(
        "container %s runs %s %s (sha256 %s), not recorded: %s",
        container.vmid,
        active.name,
        active.version,
        active.sha256,
        why,
    )
    return {}
