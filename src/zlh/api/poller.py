"""The status poller: reads every container's agent ``GET /status`` (agents never push).

Each tick launches a poll for every container that is due and not already being polled, and
does not wait for them: a slow or dead agent holds one slot of the semaphore until its own
timeout, never the others. After a miss, an agent's next poll is pushed back exponentially
(up to ``poll_max_backoff_s``); after ``unreachable_after_misses`` misses in a row the
container shows ``unreachable``. Not so while a provisioning container's agent has not answered
yet: it is still booting (the poller can see the container before the provisioning driver's
payload gets through), so a miss is polled again at the provisioning pace and counts for
nothing, for at most ``agent_answer_timeout_s`` (the time the driver allows a booting agent
before it fails the container). Results are compared with the last one in memory, and the
database is written (and SSE/route-feed subscribers told) only when something changed.

The set of containers to poll is reloaded from the database every ``poll_interval_s`` and on
:meth:`Poller.wake` (a container just entered ``provisioning`` or was started, or the live
replicas changed). Stopped and stopping containers are not polled at all. With several replicas
on one database, each polls only its share (``share``: zlh.api.replicas); a container another
replica drives (provisions, starts, hands out from the warm pool) is still polled by its share's
owner only, so two pollers never race on one container's state. That replica cannot wake the
owner's poller; the database's announcement of the write does (:meth:`Poller.announced`, from
zlh.api.follower): the owner re-reads just those rows.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, select

from zlh.api.agent_client import AgentClient
from zlh.api.containers import ContainerRegistry
from zlh.api.db import Container, ContainerState
from zlh.api.db.models import utcnow
from zlh.api.errors import AgentError
from zlh.api.metrics import Metrics
from zlh.api.replicas import Share, everything
from zlh.api.settings import ApiSettings
from zlh.errors import ZlhError
from zlh.schemas import AgentState, AgentStatus, RuntimeChangeState

__all__ = ["PollTarget", "Poller"]

logger = logging.getLogger(__name__)

_POLLED = [s for s in ContainerState if s.is_polled]  # stopped ones cost no poll traffic
_TICK_SLACK = 0.1  # a wake this close (in ticks) before the next tick counts as that tick
_LOAD_CHUNK = 500  # rows loaded whole per query (an IN list PostgreSQL and SQLite both take)

Resend = Callable[[Container], Awaitable[None]]
Overdue = Callable[[Container], bool]
Secret = Callable[[Container], str]
# What to record of a ready agent's runtime (zlh.api.runtime_changes: RuntimeChanges.observed).
RuntimeSeen = Callable[[Container, AgentStatus], Awaitable[dict[str, Any]]]


@contextmanager
def _collector_held_off() -> Iterator[None]:
    """No garbage collection while the function runs (a reload, which never yields to the
    loop). Its rows, one per container of the share, are garbage when it returns; a
    collection in between would only promote them towards the oldest generation, whose full
    passes stop the event loop for tenths of a second at 10,000 containers
    (zlh.proxy.serving)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class PollTarget:
    container: Container
    secret: str
    misses: int = 0
    due: float = 0.0
    launched: float = 0.0  # when its last poll started
    last_status: AgentStatus | None = None
    last_body: bytes = b""
    in_flight: bool = False
    resending: bool = field(default=False)
    since: float = 0.0  # when the poller took this container on
    answered: bool = False  # its agent has answered a poll since
    phased: bool = False  # its ready-pace polls have their phase in the interval (_next_due)
    step: str | None = None  # the provisioning step its polls last showed, and since when
    step_since: float = 0.0


class Poller:
    def __init__(
        self,
        *,
        settings: ApiSettings,
        registry: ContainerRegistry,
        agents: AgentClient,
        secret: Secret,
        resend: Resend,
        overdue: Overdue,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
        share: Share = everything,
        runtime_seen: RuntimeSeen | None = None,
    ) -> None:
        """``metrics`` gets the cycle times, failures and provisioning times (a fresh
        :class:`~zlh.api.metrics.Metrics` of its own when not given); ``share`` says whether a
        vmid is this replica's to poll (default: every one, a single node); ``runtime_seen``
        says what of a ready agent's runtime (a version change it made) to record."""
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.registry = registry
        self.agents = agents
        self._secret = secret
        self._share = share
        self._resend = resend
        self._overdue = overdue
        self._runtime_seen = runtime_seen
        self._clock = clock
        self._sem = asyncio.Semaphore(settings.poll_concurrency)
        self._targets: dict[int, PollTarget] = {}
        self._reload_at = 0.0
        self._announced: set[int] = set()  # vmids of its share written elsewhere, to re-read
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()

    # -- driving -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Tick until cancelled. Ticks are as fine as the provisioning interval, on a cadence
        of their own; a wake in between launches what is due before the next tick, as the tick
        itself would have."""
        tick = min(self.settings.poll_interval_provisioning_s, self.settings.poll_interval_s)
        next_tick = self._clock()
        try:
            while True:
                now = self._clock()
                if now >= next_tick - tick * _TICK_SLACK:  # a timer may fire a hair early
                    next_tick = max(next_tick, now) + tick
                polls = self._launch_due(before=next_tick)
                if polls:
                    self._time_cycle(polls)
                self._wake.clear()
                try:
                    async with asyncio.timeout(max(0.0, next_tick - self._clock())):
                        await self._wake.wait()
                except TimeoutError:
                    pass
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def poll_once(self, before: float | None = None) -> float:
        """Poll every container due by ``before`` (default: now) and wait for all of them;
        returns the cycle's seconds."""
        start = self._clock()
        await asyncio.gather(*self._launch_due(start if before is None else before))
        return self._clock() - start

    def _time_cycle(self, polls: list[asyncio.Task[None]]) -> None:
        start = self._clock()

        def ended(_: object) -> None:
            self.metrics.poll_cycle_seconds.observe(self._clock() - start)

        asyncio.gather(*polls, return_exceptions=True).add_done_callback(ended)

    def watched(self) -> set[int]:
        """The vmids it polls now."""
        return set(self._targets)

    def wake(self) -> None:
        """Reload the containers now (one just started provisioning)."""
        self._reload_at = 0.0
        self._wake.set()

    def announced(self, vmid: int) -> None:
        """Container ``vmid`` was written, by any replica (its database announcement): if it
        is this poller's to poll, re-read its row before the next polls."""
        if self._share(vmid):
            self._announced.add(vmid)
            self._wake.set()

    def _launch_due(self, before: float) -> list[asyncio.Task[None]]:
        """Launch the poll of every target due by ``before``, the next tick: a poll is sent at
        the last tick before it is due, never after it, so that two reads of an agent are at
        most its interval apart (give or take the loop's own lateness)."""
        now = self._clock()
        if now >= self._reload_at:
            self._announced.clear()  # read with all the rest
            self._reload()
            self._reload_at = now + self.settings.poll_interval_s
        elif self._announced:
            vmids, self._announced = self._announced, set()
            self._reload(vmids)
        launched = []
        for target in self._targets.values():
            if target.in_flight or target.due > before:
                continue
            target.in_flight = True
            target.launched = now
            task = asyncio.get_running_loop().create_task(self._poll(target))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            launched.append(task)
        return launched

    @_collector_held_off()
    def _reload(self, vmids: set[int] | None = None) -> None:
        """Re-read which containers to poll: every one, or just ``vmids`` (announced); those
        no longer polled (stopped, deleted) are dropped. Only rows that changed since their
        target was loaded (``updated_at``, bumped by every registry write) are loaded whole: at
        10,000 containers, loading and parsing every row each interval would cost more than the
        polls (bench/scale.py)."""
        if vmids is None:
            current, considered = self._polled_rows(), list(self._targets)
        else:
            current, considered = {}, sorted(vmids)
            for chunk in _chunks(considered):
                current |= self._polled_rows(Container.vmid.in_(chunk))
        for vmid in considered:
            if vmid not in current:
                self._targets.pop(vmid, None)
        self._take_on(current)

    def _polled_rows(self, *where: ColumnElement[bool]) -> dict[int, datetime]:
        """vmid → ``updated_at`` of the polled containers of its share (and ``where``)."""
        query = select(Container.vmid, Container.updated_at).where(
            Container.state.in_([str(s) for s in _POLLED]),
            Container.address.is_not(None),
            Container.agent_port.is_not(None),
            *where,
        )
        with self.registry.db.session() as session:
            rows = session.execute(query).all()
        return {vmid: updated for vmid, updated in rows if self._share(vmid)}

    def _take_on(self, rows: dict[int, datetime]) -> None:
        """Load whole the rows that are new or changed since their target's copy."""
        stale = [
            vmid
            for vmid, updated in rows.items()
            if (target := self._targets.get(vmid)) is None or target.container.updated_at != updated
        ]
        for chunk in _chunks(stale):
            for container in self._load(chunk):
                self._refresh(container)
        self.metrics.poller_share.set(len(self._targets))

    def _load(self, vmids: list[int]) -> list[Container]:
        query = select(Container).where(
            Container.vmid.in_(vmids), Container.state.in_([str(s) for s in _POLLED])
        )
        with self.registry.db.session() as session:
            return list(session.scalars(query).unique())

    def _refresh(self, container: Container) -> None:
        """Take ``container`` (as just loaded) on, or update its target with it."""
        target = self._targets.get(container.vmid)
        if target is not None and (
            target.container.agent_nonce != container.agent_nonce
            or target.container.agent_url != container.agent_url
        ):
            if target.in_flight:
                return  # replaced on the next reload, after this poll lands
            target = None  # another container (or address) now: start afresh
        if target is None:
            self._targets[container.vmid] = PollTarget(
                container,
                self._secret(container),
                last_status=container.status,
                since=self._clock(),
            )
        elif not target.in_flight:
            target.container = container
            if target.misses == 0:  # a runtime change just asked for: its pace from now on
                target.due = min(target.due, target.launched + self._interval(container))

    # -- one poll ------------------------------------------------------------------------------

    async def _poll(self, target: PollTarget) -> None:
        url = target.container.agent_url or ""
        try:
            async with self._sem:
                body = await self.agents.status_body(
                    url, target.secret, timeout_s=self.settings.poll_timeout_s
                )
            target.answered = True
            if body == target.last_body and target.container.state == ContainerState.READY:
                # The steady state of most containers: same document, nothing to parse or write.
                target.misses = 0
                target.due = self._next_due(target)
                return
            status = self.agents.parse_status(url, body)
        except AgentError as exc:
            self.metrics.poll_failures.inc()
            self._missed(target, exc)
        except asyncio.CancelledError:
            raise
        else:
            await self._observed(target, status)
            target.last_body = body
        finally:
            target.in_flight = False

    def _next_due(self, target: PollTarget) -> float:
        """When an answered target is due again: one interval from its poll's start, as the
        ticks are (from its end, every poll would miss the tick it is due at by its own
        duration). The first poll at the ready pace instead sets the target a phase of its own
        within the interval, by its vmid: containers taken on together (a start, a takeover)
        would otherwise be polled in one burst every interval, whose queue makes reads late."""
        interval = self._interval(target.container)
        if not target.phased and interval == self.settings.poll_interval_s:
            target.phased = True
            return target.launched + interval * _phase(target.container.vmid)
        return target.launched + interval

    def _interval(self, container: Container) -> float:
        """The provisioning pace while ``container`` provisions, starts or installs a runtime
        change (live progress); the ready pace otherwise."""
        change = container.status.runtime_change if container.status else None
        if container.state in (ContainerState.PROVISIONING, ContainerState.STARTING) or (
            change is not None and change.state is RuntimeChangeState.INSTALLING
        ):
            return self.settings.poll_interval_provisioning_s
        return self.settings.poll_interval_s

    def _booting(self, target: PollTarget) -> bool:
        """A provisioning container whose agent has not answered yet, within the time an agent
        may take to come up: its misses are a start, not an agent gone silent."""
        return (
            not target.answered
            and target.container.state == ContainerState.PROVISIONING
            and self._clock() - target.since < self.settings.agent_answer_timeout_s
        )

    def _missed(self, target: PollTarget, exc: AgentError) -> None:
        container = target.container
        if container.state == ContainerState.STARTING:
            # Its agent is booting: no back-off, and not unreachable until the start is overdue.
            target.due = self._clock() + self._interval(container)
            if self._overdue(container):
                limit = self.settings.provision_timeout_s
                self._apply(
                    target,
                    state=ContainerState.FAILED,
                    error=f"the agent did not answer within provision_timeout_s={limit:g}s "
                    f"of the start: {exc.message}",
                )
            return
        if self._booting(target):
            target.due = self._clock() + self._interval(container)
            return
        target.misses += 1
        backoff = self._interval(container) * 2 ** min(target.misses, 16)
        target.due = self._clock() + min(backoff, self.settings.poll_max_backoff_s)
        if (
            target.misses >= self.settings.unreachable_after_misses
            and container.state != ContainerState.UNREACHABLE
        ):
            self._apply(
                target,
                state=ContainerState.UNREACHABLE,
                error=f"agent missed {target.misses} polls: {exc.message}",
            )

    async def _observed(self, target: PollTarget, status: AgentStatus) -> None:
        target.misses = 0
        self._time_step(target, status)
        container = target.container
        changes: dict[str, Any] = {}
        if status != target.last_status:
            changes["status"] = status
        if status.pool and not container.pool:
            # A pool container just handed out whose real payload has not landed yet.
            changes.update(state=ContainerState.PROVISIONING)
            await self._resend_payload(target)
        elif status.state is AgentState.READY:
            changes.update(state=ContainerState.READY, error=None)
            if self._runtime_seen is not None:
                changes.update(await self._runtime_seen(container, status))
        elif status.state is AgentState.FAILED:
            error = status.error
            message = f"{error.step}: {error.message} ({error.code})" if error else "agent failed"
            changes.update(state=ContainerState.FAILED, error=message)
        elif status.state is AgentState.PROVISIONING:
            # A started container's agent restores its runtime and add-ons: still starting.
            if container.state != ContainerState.STARTING:
                changes.update(state=ContainerState.PROVISIONING)
            changes.update(error=None)
            if self._overdue(container):
                limit = self.settings.provision_timeout_s
                changes.update(
                    state=ContainerState.FAILED,
                    error=f"not ready within provision_timeout_s={limit:g}s",
                )
        else:  # idle: the agent has no payload (new, or it lost it) → send it (again)
            changes.update(state=ContainerState.PROVISIONING)
            await self._resend_payload(target)
        self._apply(target, **changes)
        target.due = self._next_due(target)

    async def _resend_payload(self, target: PollTarget) -> None:
        try:
            await self._resend(target.container)
        except ZlhError as exc:
            logger.warning("re-sending the payload to %s failed: %s", target.container.vmid, exc)

    def _time_step(self, target: PollTarget, status: AgentStatus) -> None:
        """A step's time: from the first poll that shows it to the first that shows another
        step, or the agent ready or failed."""
        progress = status.progress
        step = (
            progress.step.value
            if progress is not None and status.state is AgentState.PROVISIONING
            else None
        )
        if step == target.step:
            return
        now = self._clock()
        if target.step is not None:
            self.metrics.provision_step_seconds.labels(target.step).observe(now - target.step_since)
        target.step, target.step_since = step, now

    def _apply(self, target: PollTarget, **changes: Any) -> None:
        container = target.container
        for key in [k for k, v in changes.items() if k != "status" and getattr(container, k) == v]:
            del changes[key]
        if not changes:
            return
        # A poll under way when the owner stopped the container must not undo the stop.
        updated = self.registry.update(container.vmid, only_from=_POLLED, **changes)
        if updated is None:
            self._targets.pop(container.vmid, None)
            return
        if updated.state == ContainerState.READY and container.state == ContainerState.PROVISIONING:
            waited = utcnow() - updated.created_at
            self.metrics.provision_seconds.observe(waited.total_seconds())
        target.container = updated
        target.last_status = updated.status
        if not ContainerState(updated.state).is_polled:
            self._targets.pop(container.vmid, None)


def _phase(vmid: int) -> float:
    """A fraction in [0, 1) spread evenly over consecutive vmids (Fibonacci hashing)."""
    return ((vmid * 0x9E3779B1) & 0xFFFFFFFF) / 2**32


def _chunks(vmids: list[int]) -> Iterator[list[int]]:
    """``vmids`` in lists of at most ``_LOAD_CHUNK`` (one IN list per query)."""
    for start in range(0, len(vmids), _LOAD_CHUNK):
        yield vmids[start : start + _LOAD_CHUNK]
