"""The container records and the one place that changes them.

Every change goes through :meth:`ContainerRegistry.update`, which writes only when a field
really changes and then tells the SSE subscribers (``EventBus``) and the front's route feed.
Each write also announces the vmid (``zlh.api.notify``, on PostgreSQL): other replicas re-read
the row (:meth:`ContainerRegistry.refresh`) and tell their own subscribers.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zlh.api.bodies import Activity, ContainerEvent, ContainerOut, ShareOut
from zlh.api.db import (
    Container,
    ContainerState,
    Database,
    KeyValue,
    Pins,
    Share,
    ShareRole,
    User,
)
from zlh.api.db.models import PublicPreview, utcnow
from zlh.api.errors import Conflict, NotFound, QuotaExceeded
from zlh.api.events import EventBus
from zlh.api.notify import CONTAINERS, announce
from zlh.routefeed import FeedRoute, RouteFeed
from zlh.schemas.payload import MIN_VMID

__all__ = ["ContainerRegistry", "Quota", "container_out"]

_ALLOCATE_TRIES = 8
# More to write in a new container's own transaction (its provisioning job), given its vmid.
Within = Callable[[Session, int], object]
_VMID_MARK = "vmid:last-allocated"


@dataclass(frozen=True)
class Quota:
    """A user's limits: containers held (``max_containers_per_user``) and running
    (``max_running_per_user``; stopped ones do not count)."""

    containers: int
    running: int


_RUNNING = [s.value for s in ContainerState if s.is_running]


def _count(session: Session, owner_id: int, *, running: bool, leave_out: int | None = None) -> int:
    query = select(func.count()).where(Container.owner_id == owner_id)
    if running:
        query = query.where(Container.state.in_(_RUNNING))
    if leave_out is not None:
        query = query.where(Container.vmid != leave_out)
    return session.scalar(query) or 0


def _check_running(session: Session, owner: User, limit: int, *, starting: int | None) -> None:
    """QuotaExceeded when ``owner`` already runs ``limit`` containers (``starting`` aside)."""
    count = _count(session, owner.id, running=True, leave_out=starting)
    if count >= limit:
        raise QuotaExceeded(
            f"running quota reached: {owner.username} runs {count} of {limit}"
            " (max_running_per_user); stop one to start another"
        )


def _check_new(session: Session, owner: User, quota: Quota, name: str | None) -> None:
    """QuotaExceeded or Conflict (the name) unless ``owner`` may have one more container."""
    held = _count(session, owner.id, running=False)
    if held >= quota.containers:
        raise QuotaExceeded(
            f"container quota reached: {owner.username} holds {held} of "
            f"{quota.containers} (max_containers_per_user); delete one to make another"
        )
    _check_running(session, owner, quota.running, starting=None)
    if name is not None and session.scalar(
        select(Container.vmid).where(Container.owner_id == owner.id, Container.name == name)
    ):
        raise Conflict(f"you already have a container named {name!r}")


def container_out(
    container: Container,
    *,
    admin_ide_access: bool,
    last_activity: Activity | None,
    idle_stop_at: datetime | None,
    viewer: User | None = None,
) -> ContainerOut:
    """The container as the API shows it (zlh.api.lifecycle knows its latest activity, which
    may be newer than the record's, and when it stops for being idle) to ``viewer``: a user it
    is shared with sees their role, not who else it is shared with."""
    role = None if viewer is None else container.role_of(viewer.id)
    return ContainerOut(
        vmid=container.vmid,
        name=container.name,
        owner=container.owner.username,
        runtime=container.runtime,
        version=container.version,
        addons=list(container.addons),
        state=container.state,
        state_reason=container.state_reason,
        state_changed_at=container.state_changed_at,
        last_activity=last_activity,
        idle_stop_at=idle_stop_at,
        template=container.template,
        error=container.error,
        role=role,
        shares=[] if role else [share_out(s) for s in container.shares],
        ide_path=f"/c/{container.vmid}/ide",
        admin_ide_access=admin_ide_access,
        pool=container.pool,
        status=container.status,
        created_at=container.created_at,
        updated_at=container.updated_at,
    )


def recorded_activity(container: Container) -> Activity | None:
    if container.last_activity_at is None or container.last_activity_kind is None:
        return None
    return Activity(at=container.last_activity_at, kind=container.last_activity_kind)


def share_out(share: Share) -> ShareOut:
    return ShareOut(
        user=share.user.username, role=ShareRole(share.role), created_at=share.created_at
    )


def container_event(container: Container) -> ContainerEvent:
    status = container.status
    return ContainerEvent(
        vmid=container.vmid,
        state=container.state,
        state_reason=container.state_reason,
        progress=status.progress if status else None,
        error=container.error,
        runtime_installed=status.runtime_installed if status else False,
        code_server_running=status.code_server_running if status else False,
    )


def _route(container: Container) -> FeedRoute:
    status = container.status
    return FeedRoute(
        vmid=container.vmid,
        owner_id=container.owner_id,
        guest_ids=frozenset(s.user_id for s in container.shares if s.role == ShareRole.USE),
        state=container.state,
        address=container.address,
        code_server_port=container.code_server_port,
        code_server_running=status.code_server_running if status else False,
        public_ports=container.public_ports,
    )


class ContainerRegistry:
    def __init__(self, db: Database, bus: EventBus, feed: RouteFeed) -> None:
        self.db = db
        self.bus = bus
        self.feed = feed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._allocating = threading.Lock()
        # The last event delivered per vmid (on the loop's thread): a re-read that finds what
        # was already delivered (the echo of this replica's own announcement) sends nothing.
        self._delivered: dict[int, ContainerEvent] = {}

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Notifications run on ``loop``; changes made from worker threads are handed over."""
        self._loop = loop
        self._loop_thread = threading.get_ident()
        for container in self.list_for(None):
            self.feed.set_route(_route(container))

    # -- reads -----------------------------------------------------------------------------

    def get(self, vmid: int) -> Container | None:
        with self.db.session() as session:
            return session.get(Container, vmid)

    def list_for(self, owner_id: int | None, *, owner_name: str | None = None) -> list[Container]:
        query = select(Container).order_by(Container.vmid)
        if owner_id is not None:
            query = query.where(Container.owner_id == owner_id)
        if owner_name is not None:
            query = query.join(User, Container.owner_id == User.id).where(
                User.username == owner_name
            )
        with self.db.session() as session:
            return list(session.scalars(query).unique())

    def shared_with(self, user_id: int) -> list[Container]:
        """The containers other users have shared with ``user_id``."""
        query = (
            select(Container)
            .join(Share, Share.vmid == Container.vmid)
            .where(Share.user_id == user_id)
            .order_by(Container.vmid)
        )
        with self.db.session() as session:
            return list(session.scalars(query).unique())

    def counts(self, owner_id: int) -> tuple[int, int]:
        """How many containers ``owner_id`` holds, and how many of them run."""
        with self.db.session() as session:
            return (
                _count(session, owner_id, running=False),
                _count(session, owner_id, running=True),
            )

    def totals(self) -> dict[tuple[str, str], int]:
        """How many containers there are of each (state, runtime): one grouped query."""
        query = select(Container.state, Container.runtime, func.count()).group_by(
            Container.state, Container.runtime
        )
        with self.db.session() as session:
            return {(state, runtime): n for state, runtime, n in session.execute(query)}

    def running_vmids(self) -> list[int]:
        """The vmids of the containers that run (or are starting or stopping)."""
        query = select(Container.vmid).where(Container.state.in_(_RUNNING)).order_by(Container.vmid)
        with self.db.session() as session:
            return list(session.scalars(query))

    def in_states(self, states: Iterable[ContainerState]) -> list[Container]:
        wanted = [str(s) for s in states]
        with self.db.session() as session:
            query = select(Container).where(Container.state.in_(wanted)).order_by(Container.vmid)
            return list(session.scalars(query).unique())

    # -- writes ----------------------------------------------------------------------------

    def allocate(
        self,
        *,
        owner: User,
        runtime: str,
        version: str,
        addons: list[str],
        pins: Pins,
        quota: Quota,
        reason: str | None = None,
        name: str | None = None,
        suggest_vmid: Callable[[int], int] = lambda floor: floor,
        pool: bool = False,
        within: Within | None = None,
    ) -> Container:
        """Record a new container in state ``requested`` under the next free vmid.

        This row is written before the backend creates anything: whatever happens
        afterwards, the vmid is known and a restart resumes it instead of creating another.
        ``suggest_vmid(floor)`` is the backend's choice at or above the platform's own next
        vmid (``Backend.suggest_vmid``: on a Proxmox cluster other tools create CTs too).
        ``pool``: a warm-pool container (``owner`` is the pool's user; no quota applies).
        ``within(session, vmid)`` runs in the row's own transaction (its provisioning job).
        """
        # One allocation at a time in this process; other processes are caught by the
        # primary key and retried.
        with self._allocating:
            return self._allocate(
                owner,
                runtime,
                version,
                addons,
                pins,
                quota,
                reason,
                name,
                suggest_vmid,
                pool,
                within,
            )

    def _allocate(
        self,
        owner: User,
        runtime: str,
        version: str,
        addons: list[str],
        pins: Pins,
        quota: Quota,
        reason: str | None,
        name: str | None,
        suggest_vmid: Callable[[int], int],
        pool: bool,
        within: Within | None,
    ) -> Container:
        for _ in range(_ALLOCATE_TRIES):
            try:
                with self.db.session() as session:
                    if not pool:
                        _check_new(session, owner, quota, name)
                    vmid = self._next_vmid(session, suggest_vmid)
                    now = utcnow()
                    container = Container(
                        vmid=vmid,
                        owner_id=owner.id,
                        name=name,
                        runtime=runtime,
                        version=version,
                        addons=addons,
                        pins=pins,
                        state=ContainerState.REQUESTED.value,
                        state_reason=reason,
                        state_changed_at=now,
                        agent_nonce=secrets.token_hex(16),
                        pool=pool,
                        created_at=now,
                        updated_at=now,
                    )
                    session.add(container)
                    session.flush()
                    if within is not None:
                        within(session, vmid)
                    session.refresh(container)
                    _announce(session, vmid)
            except IntegrityError:
                continue  # another request took that vmid (or name) at the same moment
            self._notify(container)
            return container
        raise Conflict("could not allocate a vmid; try again")

    def take_from_pool(
        self,
        vmid: int,
        *,
        owner: User,
        quota: Quota,
        name: str | None,
        reason: str,
        within: Within | None = None,
    ) -> Container | None:
        """Hand the ready pool container ``vmid`` to ``owner`` (checked against ``quota`` as a
        new container is), in state ``creating`` with a fresh ``next_nonce`` for its agent.

        One conditional UPDATE: of two requests racing for the same container, only one
        changes the row; the other gets None (and builds its own). Once taken, ``pool`` is
        false for good. ``within(session, vmid)`` runs in the same transaction when taken.
        """
        with self._allocating, self.db.session() as session:
            _check_new(session, owner, quota, name)
            now = utcnow()
            container = self._pool_update(
                session,
                vmid,
                [ContainerState.READY],
                pool=False,
                owner_id=owner.id,
                name=name,
                next_nonce=secrets.token_hex(16),
                state=ContainerState.CREATING.value,
                state_reason=reason,
                state_changed_at=now,
                created_at=now,
                updated_at=now,
            )
            if container is not None and within is not None:
                within(session, vmid)
        if container is not None:
            self._notify(container)
        return container

    def leave_pool(self, vmid: int) -> bool:
        """Mark the pool container ``vmid`` ``deleting`` if it is still in the pool (not taken
        meanwhile, whatever its state); whether it was."""
        with self.db.session() as session:
            now = utcnow()
            container = self._pool_update(
                session,
                vmid,
                [s for s in ContainerState if s is not ContainerState.DELETING],
                state=ContainerState.DELETING.value,
                state_changed_at=now,
                updated_at=now,
            )
        if container is not None:
            self._notify(container)
        return container is not None

    def _pool_update(
        self, session: Session, vmid: int, states: Iterable[ContainerState], **values: Any
    ) -> Container | None:
        """One conditional UPDATE of ``vmid`` while it is a pool container in one of
        ``states``: of two racing callers only one changes it. The row after, or None."""
        changed = session.execute(
            update(Container)
            .where(
                Container.vmid == vmid,
                Container.pool.is_(True),
                Container.state.in_([s.value for s in states]),
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if changed.rowcount != 1:  # type: ignore[attr-defined]
            return None
        _announce(session, vmid)
        return session.get(Container, vmid, populate_existing=True)

    @staticmethod
    def _next_vmid(session: Session, suggest_vmid: Callable[[int], int]) -> int:
        """Above every vmid ever handed out: a deleted container's vmid is never reused (the
        front, the audit log and a late poll must never mistake one for the other).

        The mark's row is locked first (PostgreSQL; SQLite has one writer at a time anyway):
        replicas allocating at once take turns, each reading the vmids the one before it
        committed, instead of picking the same one and retrying until one gives up."""
        mark = session.get(KeyValue, _VMID_MARK, with_for_update=True)
        top = session.scalar(select(func.max(Container.vmid))) or 0
        floor = max(MIN_VMID, top + 1, int(mark.value["last"]) + 1 if mark else 0)
        vmid = suggest_vmid(floor)
        if mark is None:
            session.add(KeyValue(key=_VMID_MARK, value={"last": vmid}))
        else:
            mark.value = {"last": vmid}
        return vmid

    def update(
        self, vmid: int, *, only_from: Iterable[ContainerState] | None = None, **changes: Any
    ) -> Container | None:
        """Apply ``changes``; writes (and notifies) only when a value differs. None if gone.

        With ``only_from``, nothing is written unless the stored state is one of those: a
        poll that was under way when the owner stopped the container must not undo the stop.
        A state change stamps ``state_changed_at``.
        """
        if "state" in changes:
            changes["state"] = ContainerState(changes["state"]).value
        with self.db.session() as session:
            container = session.get(Container, vmid)
            if container is None:
                return None
            if only_from is not None and container.state not in {str(s) for s in only_from}:
                return container
            changed = {k: v for k, v in changes.items() if getattr(container, k) != v}
            if not changed:
                return container
            for key, value in changed.items():
                setattr(container, key, value)
            container.updated_at = utcnow()
            if "state" in changed:
                container.state_changed_at = container.updated_at
            _announce(session, vmid)
        self._notify(container)
        return container

    def transition(
        self,
        vmid: int,
        *,
        allowed: Iterable[ContainerState],
        to: ContainerState,
        reason: str,
        action: str,
        running_limit: int | None = None,
        within: Within | None = None,
        **changes: Any,
    ) -> Container:
        """Move to ``to`` if the stored state is one of ``allowed``, in one transaction.

        Conflict names the state it is in; with ``running_limit`` (a start) the owner's other
        running containers are counted in the same transaction (QuotaExceeded);
        ``within(session, vmid)`` runs in it too (the job that carries the change).
        """
        allowed_values = {str(s) for s in allowed}
        with self.db.session() as session:
            container = session.get(Container, vmid)
            if container is None:
                raise NotFound(f"container {vmid} not found")
            if container.state not in allowed_values:
                raise Conflict(f"container {vmid} is {container.state}: it cannot {action} now")
            if running_limit is not None:
                _check_running(session, container.owner, running_limit, starting=vmid)
            now = utcnow()
            for key, value in changes.items():
                setattr(container, key, value)
            container.state = to.value
            container.state_reason = reason
            container.state_changed_at = container.updated_at = now
            if within is not None:
                within(session, vmid)
            _announce(session, vmid)
        self._notify(container)
        return container

    def set_public(self, vmid: int, port: int, public: bool) -> Container | None:
        """Make the preview of ``vmid``'s ``port`` public or private again (either twice is
        fine); the front learns it through the route feed. None if the container is gone."""
        try:
            with self.db.session() as session:
                if not public:
                    session.execute(
                        delete(PublicPreview).where(
                            PublicPreview.vmid == vmid, PublicPreview.port == port
                        )
                    )
                elif session.get(PublicPreview, (vmid, port)) is None:
                    session.add(PublicPreview(vmid=vmid, port=port))
                _announce(session, vmid)
        except IntegrityError:
            pass  # made public at the same moment by another request, or the container is gone
        container = self.get(vmid)
        if container is not None:
            self._notify(container)
        return container

    def remove(self, vmid: int) -> None:
        with self.db.session() as session:
            session.execute(delete(Container).where(Container.vmid == vmid))
            _announce(session, vmid)
        self.call_on_loop(lambda: self._deliver_removal(vmid))

    def republish(self, vmid: int) -> Container | None:
        """Send ``vmid``'s record to the SSE subscribers and the front again (its shares
        changed: who may open it did). The caller announced its change in its transaction."""
        container = self.get(vmid)
        if container is not None:
            self._notify(container)
        return container

    # -- what other replicas changed -------------------------------------------------------

    def refresh(self, vmids: Iterable[int]) -> None:
        """Re-read ``vmids`` (announced by some replica) and deliver what changed here: the
        row as it is now, or its removal. Never announces. Call from a worker thread."""
        wanted = sorted(set(vmids))
        with self.db.session() as session:
            found = session.scalars(select(Container).where(Container.vmid.in_(wanted)))
            rows = {c.vmid: (container_event(c), _route(c)) for c in found.unique()}

        def deliver() -> None:
            known: set[int] | None = None  # taken once, and only if a row is gone
            for vmid in wanted:
                if vmid in rows:
                    self._deliver_changed(*rows[vmid])
                    continue
                if known is None:
                    known = set(self.feed.snapshot().routes) | set(self._delivered)
                if vmid in known:
                    self._deliver_removal(vmid)

        self.call_on_loop(deliver)

    def resync(self) -> None:
        """Deliver every container as the database has it, and the removal of every route
        whose row is gone: what a replica missed while it did not listen. Call from a worker
        thread."""
        rows = [(container_event(c), _route(c)) for c in self.list_for(None)]

        def deliver() -> None:
            for event, route in rows:
                self._deliver_changed(event, route)
            present = {event.vmid for event, _ in rows}
            for vmid in set(self.feed.snapshot().routes) | set(self._delivered):
                if vmid not in present:
                    self._deliver_removal(vmid)

        self.call_on_loop(deliver)

    # -- notifications ---------------------------------------------------------------------

    def _notify(self, container: Container) -> None:
        event = container_event(container)
        route = _route(container)

        def deliver() -> None:
            self._delivered[event.vmid] = event
            self.bus.publish(event)
            self.feed.set_route(route)

        self.call_on_loop(deliver)

    def _deliver_changed(self, event: ContainerEvent, route: FeedRoute) -> None:
        if self._delivered.get(event.vmid) != event:
            self._delivered[event.vmid] = event
            self.bus.publish(event)
        self.feed.set_route(route)  # sends nothing when the route is as it was

    def _deliver_removal(self, vmid: int) -> None:
        self._delivered.pop(vmid, None)
        self.bus.publish(ContainerEvent(vmid=vmid, state="deleted"))
        self.feed.remove_route(vmid)

    def call_on_loop(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the event loop's thread (now, if this is it)."""
        if self._loop is None or threading.get_ident() == self._loop_thread:
            fn()
        else:
            self._loop.call_soon_threadsafe(fn)


def _announce(session: Session, vmid: int) -> None:
    """Tell the other replicas ``vmid`` changed, when ``session`` commits."""
    announce(session, CONTAINERS, str(vmid))
