"""Stop, start and restart a container: its disk stays; its memory and its polls go.

::

    stop     ready | unreachable | failed → stopping → (backend stop) → stopped
    start    stopped → starting → (backend start, address recorded) → ready
    restart  ready | unreachable | failed → stopping → stopped → starting → ready
    rebuild  ready | unreachable | failed | stopped → rebuilding → (backend stop, backend
             rebuild: a fresh system from the current template, /home/dev kept) → creating
             → provisioning (the payload again: runtime and add-ons installed anew) → ready

The backend's stop is clean: the container's init (the process backend: the agent) gets
SIGTERM, then a bounded wait (``container_stop_timeout_s``), then a kill. A started container's
agent restores what it had (runtime, add-ons, code-server) by itself; the poller sees it ready.
Each change carries its reason (``stopped by user alice``, ``host restarted``) and its time.

The routes answer at once with the new state (202); the work runs as the container's task
(``zlh.api.tasks``), so a start asked for while the stop is still finishing runs after it. Each
action is a job (``zlh.api.jobs``) written with its state change: if the replica doing it dies,
another takes the job once its lease ran out and continues from the state the container is in
(:meth:`Lifecycle.work`); the backend's start, stop and rebuild of a stopped container may be
repeated.

Idle auto-stop: activity is what a person does (:data:`ACTIVITY_KINDS`), told by the front (IDE
input, from the script it adds to the IDE's page) and the relays (console input, file-browser
changes); never CPU or background traffic. A ready container with none for ``idle_stop_after``
seconds (the owner's own limit if an admin set one; counted from when it became ready when it
had none since) is stopped with a reason that says so and names the last activity. Activity is
kept in memory as it comes and written to the container's record at most every
:data:`ACTIVITY_WRITE_S`. With replicas, the one whose poll share holds a container judges it:
from the record, for activity another replica's front saw (at most ACTIVITY_WRITE_S old while
it goes on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from zlh.api.audit import Action, AuditLog
from zlh.api.bodies import Activity, ContainerOut
from zlh.api.containers import ContainerRegistry, container_out, recorded_activity
from zlh.api.db import Container, ContainerState, User
from zlh.api.db.models import utcnow
from zlh.api.jobs import IN_FLIGHT, JobKind
from zlh.api.provisioning import Provisioning
from zlh.api.replicas import Share, everything
from zlh.api.settings import ApiSettings
from zlh.backends import Backend, RunState
from zlh.errors import ZlhError

__all__ = ["Lifecycle"]

logger = logging.getLogger(__name__)

STOPPABLE = (ContainerState.READY, ContainerState.UNREACHABLE, ContainerState.FAILED)
# What counts as use, in the words a stop's reason gives it.
ACTIVITY_KINDS = {
    "ide": "IDE",
    "terminal": "terminal input",
    "console": "console input",
    "files": "file browser",
    "preview": "port preview",
}
ACTIVITY_WRITE_S = 30.0


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


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
        share: Share = everything,
    ) -> None:
        """``share``: the containers whose idle auto-stop is this replica's (every one on a
        single node)."""
        self.settings = settings
        self.registry = registry
        self.backend = backend
        self.audit = audit
        self.provisioning = provisioning
        self._wake_poller = wake_poller
        self._share = share
        # The latest activity of each container, and when it was last written to its record.
        self._activity: dict[int, tuple[datetime, str]] = {}
        self._written: dict[int, datetime] = {}

    # -- what the routes call --------------------------------------------------------------

    async def stop(self, vmid: int, *, actor: str, reason: str) -> Container:
        held: list[str] = []
        container = await self._stop_transition(
            vmid, reason, "stop", within=self.provisioning.hold_into(held, JobKind.STOP)
        )
        await self._audit(actor, Action.STOP, vmid, reason)
        self._wake_poller()  # it lets go of the container at once
        self.provisioning.spawn_job(vmid, held[0], JobKind.STOP)
        return container

    async def start(self, vmid: int, *, actor: str, reason: str) -> Container:
        held: list[str] = []
        container = await self._begin_start(
            vmid, reason, within=self.provisioning.hold_into(held, JobKind.START)
        )
        await self._audit(actor, Action.START, vmid, reason)
        self.provisioning.spawn_job(vmid, held[0], JobKind.START)
        return container

    async def restart(self, vmid: int, *, actor: str, reason: str) -> Container:
        held: list[str] = []
        container = await self._stop_transition(
            vmid, reason, "restart", within=self.provisioning.hold_into(held, JobKind.RESTART)
        )
        await self._audit(actor, Action.RESTART, vmid, reason)
        self._wake_poller()
        self.provisioning.spawn_job(vmid, held[0], JobKind.RESTART)
        return container

    async def rebuild(self, vmid: int, *, actor: str, reason: str) -> Container:
        held: list[str] = []
        container = await self._transition(
            vmid,
            allowed=[*STOPPABLE, ContainerState.STOPPED],
            to=ContainerState.REBUILDING,
            reason=reason,
            action="rebuild",
            running_limit=self.settings.max_running_per_user,
            within=self.provisioning.hold_into(held, JobKind.REBUILD),
        )
        await self._audit(actor, Action.REBUILD, vmid, reason)
        self._wake_poller()
        self.provisioning.spawn_job(vmid, held[0], JobKind.REBUILD)
        return container

    async def work(self, kind: JobKind, vmid: int) -> None:
        """A lifecycle job's work, from the state the container is in: what a request just
        began, or what a replica that died left half done (its job taken over here)."""
        container = await asyncio.to_thread(self.registry.get, vmid)
        if container is None or ContainerState(container.state) not in IN_FLIGHT[kind]:
            return
        state = ContainerState(container.state)
        try:
            if kind is JobKind.STOP:
                await self._stop(vmid)
            elif kind is JobKind.START:
                await self._start(vmid)
            elif kind is JobKind.RESTART:
                reason = container.state_reason or "restarted"
                if state is ContainerState.STOPPING and not await self._stop(vmid):
                    return
                if state is not ContainerState.STARTING:
                    await self._begin_start(vmid, reason, running_limit=False)
                await self._start(vmid)
            elif kind is JobKind.REBUILD:
                if state is ContainerState.REBUILDING and not await self._rebuild(vmid):
                    return
                # A fresh system: the agent knows nothing yet, so it is provisioned anew.
                await self.provisioning.drive(vmid)
        except ZlhError as exc:  # the state moved on meanwhile (deleted, another action)
            logger.warning("container %s: %s stopped: %s", vmid, kind, exc)

    async def _rebuild(self, vmid: int) -> bool:
        """The rebuild's first half: a fresh system, the container ``creating``; False if
        it failed (the container ``failed``, saying why)."""
        container = self.registry.get(vmid)
        if container is None:
            return False
        try:
            pins = await self.provisioning.repin(container)
            await self.backend.stop(vmid, timeout_s=self.settings.container_stop_timeout_s)
            info = await self.backend.rebuild(await self.provisioning.spec(container, pins))
        except ZlhError as exc:
            logger.warning("rebuilding container %s failed: %s", vmid, exc)
            self._settle(vmid, ContainerState.REBUILDING, ContainerState.FAILED, "rebuild", exc)
            return False
        self.provisioning.record_address(vmid, info)
        self.registry.update(
            vmid,
            only_from=[ContainerState.REBUILDING],
            state=ContainerState.CREATING,
            pins=pins,
            status=None,
            error=None,
            provision_started_at=None,
        )
        return True

    async def resume(self, share: Share = everything) -> None:
        """After the platform started: keep the stopped ones of its ``share`` stopped. What
        was under way is the jobs' (``Provisioning.run_jobs``): this replica's own at once, any
        other's whose holder died once its lease ran out."""
        driven = await asyncio.to_thread(self.provisioning.jobs.vmids)
        for container in self.registry.in_states([ContainerState.STOPPED]):
            if container.vmid in driven or not share(container.vmid):
                continue  # a restart between its halves (its job starts it), or another's
            try:
                if (await self.backend.status(container.vmid)).state is RunState.RUNNING:
                    await self.backend.stop(
                        container.vmid, timeout_s=self.settings.container_stop_timeout_s
                    )
            except ZlhError as exc:
                logger.warning("stopped container %s still runs: %s", container.vmid, exc)

    def out(self, container: Container, *, viewer: User | None = None) -> ContainerOut:
        """The container as ``viewer`` sees it (``container_out``), with its latest activity
        and idle deadline."""
        activity = self.last_activity(container)
        return container_out(
            container,
            admin_ide_access=self.settings.admin_ide_access,
            last_activity=activity,
            idle_stop_at=self.idle_stop_at(container, activity),
            viewer=viewer,
        )

    # -- idle auto-stop ------------------------------------------------------------------------

    def note_activity(self, vmid: int, kind: str) -> None:
        """A person used container ``vmid`` (``kind``: one of :data:`ACTIVITY_KINDS`). Cheap:
        called for every reported use; the record is written at most every ACTIVITY_WRITE_S."""
        if kind not in ACTIVITY_KINDS:
            raise ValueError(f"unknown activity kind {kind!r}")
        now = utcnow()
        self._activity[vmid] = (now, kind)
        written = self._written.get(vmid)
        if written is None or (now - written).total_seconds() >= ACTIVITY_WRITE_S:
            self._written[vmid] = now
            update = partial(
                self.registry.update, vmid, last_activity_at=now, last_activity_kind=kind
            )
            asyncio.get_running_loop().run_in_executor(None, update)

    def forget(self, vmid: int) -> None:
        """Container ``vmid`` is gone: a new one given its number starts with no activity."""
        self._activity.pop(vmid, None)
        self._written.pop(vmid, None)

    def last_activity(self, container: Container) -> Activity | None:
        """The container's latest activity: what this process saw, else its record's."""
        recorded = recorded_activity(container)
        seen = self._activity.get(container.vmid)
        if seen is None or (recorded is not None and recorded.at > seen[0]):
            return recorded
        return Activity(at=seen[0], kind=seen[1])

    def idle_limit(self, container: Container) -> int:
        """Seconds of no activity after which ``container`` is stopped; 0: never."""
        own = container.owner.idle_stop_after
        return self.settings.idle_stop_after if own is None else own

    def idle_stop_at(self, container: Container, activity: Activity | None) -> datetime | None:
        """When a ready container stops if nobody uses it before (``activity``: its
        :meth:`last_activity`); None if it never will (a warm-pool container never does)."""
        limit = self.idle_limit(container)
        if container.state != ContainerState.READY or limit == 0 or container.pool:
            return None
        since = [t for t in (container.state_changed_at, container.created_at) if t is not None]
        if activity is not None:
            since.append(activity.at)
        return max(since) + timedelta(seconds=limit)

    async def stop_idle(self) -> list[int]:
        """Stop every ready container of its share that has been idle too long; returns their
        vmids."""
        now = utcnow()
        stopped = []
        for container in self.registry.in_states([ContainerState.READY]):
            if not self._share(container.vmid):
                continue  # another replica's to judge
            activity = self.last_activity(container)
            due = self.idle_stop_at(container, activity)
            if due is None or due > now:
                continue
            reason = f"stopped after {_minutes(self.idle_limit(container))} idle"
            if activity is not None:
                words = ACTIVITY_KINDS.get(activity.kind, activity.kind)
                reason += f" (last activity: {words} at {activity.at:%H:%M} UTC)"
            try:
                await self.stop(container.vmid, actor="system", reason=reason)
            except ZlhError as exc:  # changed state meanwhile (a stop, a delete): not idle now
                logger.info("idle container %s was not stopped: %s", container.vmid, exc)
                continue
            stopped.append(container.vmid)
        return stopped

    async def run_idle_stop(self) -> None:
        """Check for idle containers every ``idle_check_interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.settings.idle_check_interval_s)
            try:
                await self.stop_idle()
            except ZlhError as exc:
                logger.warning("checking for idle containers failed: %s", exc)

    # -- the work ------------------------------------------------------------------------------

    async def _stop(self, vmid: int) -> bool:
        """Stop on the backend; True once the container is stopped."""
        try:
            await self.backend.stop(vmid, timeout_s=self.settings.container_stop_timeout_s)
        except ZlhError as exc:
            logger.warning("stopping container %s failed: %s", vmid, exc)
            # Still running, or no one knows: the poller finds out which.
            self._settle(vmid, ContainerState.STOPPING, ContainerState.UNREACHABLE, "stop", exc)
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
            self._settle(vmid, ContainerState.STARTING, ContainerState.STOPPED, "start", message)
            return
        self.provisioning.record_address(vmid, info)
        self._wake_poller()  # it takes over: starting → ready once the agent says so

    def _settle(
        self,
        vmid: int,
        during: ContainerState,
        to: ContainerState,
        action: str,
        failure: ZlhError | str,
    ) -> None:
        """After a failed ``action``: ``to``, with the reason, unless the container has left
        ``during`` meanwhile (deleted, or another action took it over)."""
        message = failure.message if isinstance(failure, ZlhError) else failure
        self.registry.update(
            vmid, only_from=[during], state=to, error=f"{action} failed: {message}"
        )

    async def _begin_start(
        self, vmid: int, reason: str, *, running_limit: bool = True, **extra: Any
    ) -> Container:
        return await self._transition(
            vmid,
            allowed=[ContainerState.STOPPED],
            to=ContainerState.STARTING,
            reason=reason,
            action="start",
            running_limit=self.settings.max_running_per_user if running_limit else None,
            provision_started_at=utcnow(),
            error=None,
            **extra,
        )

    async def _stop_transition(
        self, vmid: int, reason: str, action: str, **extra: Any
    ) -> Container:
        return await self._transition(
            vmid,
            allowed=STOPPABLE,
            to=ContainerState.STOPPING,
            reason=reason,
            action=action,
            **extra,
        )

    async def _transition(
        self,
        vmid: int,
        *,
        allowed: Sequence[ContainerState],
        to: ContainerState,
        reason: str,
        action: str,
        running_limit: int | None = None,
        **changes: Any,
    ) -> Container:
        """``ContainerRegistry.transition`` off the event loop (it is one transaction)."""
        transition = partial(
            self.registry.transition,
            vmid,
            allowed=allowed,
            to=to,
            reason=reason,
            action=action,
            running_limit=running_limit,
            **changes,
        )
        return await asyncio.to_thread(transition)

    async def _audit(self, actor: str, action: Action, vmid: int, detail: str) -> None:
        await asyncio.to_thread(self.audit.record, actor, action, vmid, detail)
