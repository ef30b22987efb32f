"""The warm pool: containers created, started and provisioned ahead of demand.

A pool container is the default request for its runtime (the catalog's default version, the
add-on ``code-server``), owned by the platform's :data:`~zlh.api.db.models.POOL_USER` (a
disabled row nobody can sign in as), provisioned with ``ProvisionPayload.pool``: the runtime
installed and activated and the add-ons' artifacts installed, but no home for ``dev`` and no
add-on configured or started. Its agent then reports ready, and the container is ``ready``
for the pool.

A request that matches one (runtime, resolved version, add-ons and their pins all equal) takes
it (:meth:`WarmPool.take`): one conditional UPDATE gives it the requester as owner and a new
agent nonce (``next_nonce``) and leaves the pool for good; the provisioning driver then rotates
the agent's secret, sends the container's real payload (dev's home, a new code-server) and the
poller marks it ready as any other. Nothing of this is built while a request waits.

:meth:`WarmPool.run` keeps the pool at its wanted size (``warm_pool``) in the background: at
start, once a taken container is ready (its replacement is not built beside the hand-out a
customer waits on), and every ``poll_interval_s`` (which catches pool containers that
failed: they are deleted and built again, after a wait that doubles with each failure in a row
of that runtime). Pool containers of a version or add-on pin the
catalog no longer defaults to are replaced; runtimes no longer wanted, and a surplus after
``warm_pool`` was lowered, are deleted. A restart adopts the pool as it stands.

Replicas sharing PostgreSQL keep one pool between them: ``warm_pool`` is the platform's size,
not each replica's. Any replica takes from it (the conditional UPDATE hands a container out
once), only the one that :meth:`~zlh.api.replicas.Membership.leads` :data:`FILL_DUTY` fills it
(``leads``). Its count is read from the database and includes the containers still being
built, whoever began them: a pool container is a provisioning job like any other, so one
that a replica which died was building is finished by another (``zlh.api.jobs``), and the
next leader counts it instead of building another. A take on another replica reaches the
leader as that container's announcement (``zlh.api.follower``): :meth:`WarmPool.announced`.
While the live set changes, two replicas may each believe they lead for up to one heartbeat
and both build; the surplus is deleted by the next pass (as after ``warm_pool`` was lowered).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zlh.api.audit import Action, AuditLog
from zlh.api.bodies import DevRequest
from zlh.api.catalog import CatalogSource
from zlh.api.containers import ContainerRegistry, Quota, Within
from zlh.api.db import Container, ContainerState, Pins, User
from zlh.api.db.models import POOL_USER
from zlh.api.errors import InvalidRequest
from zlh.api.provisioning import Provisioning, resolve_request
from zlh.api.settings import ApiSettings
from zlh.errors import ZlhError
from zlh.schemas import Catalog

__all__ = ["FILL_DUTY", "POOL_ADDONS", "PoolSummary", "WarmPool", "read_summary", "wanted_sizes"]

logger = logging.getLogger(__name__)

# What a pool container carries besides its runtime: the portal's default request.
POOL_ADDONS = ("code-server",)
# The platform-wide duty of filling the pool (zlh.api.replicas.Membership.leads).
FILL_DUTY = "warm-pool"
# Pool containers in these states are not counted (they are on their way out).
_LEAVING = {ContainerState.FAILED.value, ContainerState.DELETING.value}
# The longest wait before building again for a runtime whose pool containers keep failing.
_MAX_BACKOFF_S = 600.0
# The longest a refill waits for the hand-out it replaces to be ready (see WarmPool.take).
HANDOUT_GRACE_S = 15.0
# The states in which a hand-out is still on its way to ready.
_HANDING_OUT = {
    ContainerState.REQUESTED.value,
    ContainerState.CREATING.value,
    ContainerState.PROVISIONING.value,
}


def default_runtime(catalog: Catalog) -> str | None:
    """``node`` when the catalog has it, else its first runtime (None: it has none)."""
    names = [str(name) for name in catalog.runtimes]
    return "node" if "node" in names else (names[0] if names else None)


def wanted_sizes(setting: dict[str, int] | int | None, catalog: Catalog) -> dict[str, int]:
    """How many ready pool containers to keep per runtime (the ``warm_pool`` setting)."""
    if isinstance(setting, dict):
        return {name: n for name, n in setting.items() if n > 0}
    runtime = default_runtime(catalog)
    size = 1 if setting is None else setting
    return {runtime: size} if runtime is not None and size > 0 else {}


@dataclass(frozen=True)
class PoolSummary:
    """What the pool holds: ``ready`` of ``wanted``, ``building`` on the way, and the memory
    its containers may use (their limit, ``container_memory_mb`` each)."""

    wanted: int
    ready: int
    building: int
    memory_mb: int

    def line(self) -> str:
        building = f", {self.building} being built" if self.building else ""
        return f"{self.ready} ready of {self.wanted} wanted{building}, {self.memory_mb} MB"


def summarize(
    containers: Iterable[Container], wanted: dict[str, int], memory_mb: int
) -> PoolSummary:
    live = [c for c in containers if c.state not in _LEAVING]
    ready = sum(1 for c in live if c.state == ContainerState.READY)
    return PoolSummary(
        wanted=sum(wanted.values()),
        ready=ready,
        building=len(live) - ready,
        memory_mb=len(live) * memory_mb,
    )


def pool_containers(registry: ContainerRegistry) -> list[Container]:
    with registry.db.session() as session:
        return _pool_rows(session)


def _pool_rows(session: Session) -> list[Container]:
    query = select(Container).where(Container.pool.is_(True)).order_by(Container.vmid)
    return list(session.scalars(query).unique())


def _same_addons(a: Iterable[str], b: Iterable[str]) -> bool:
    return sorted(a) == sorted(b)


def read_summary(data_dir: Path, store: Path) -> PoolSummary | None:
    """The pool of the platform whose data dir this is, read from its database (``zlh
    doctor``); None when it has no database yet. ZlhError when it cannot be read."""
    from zlh.api.db.engine import read_once
    from zlh.api.settings import load_settings
    from zlh.artifacts.store import ArtifactStore

    settings = load_settings(data_dir=data_dir)
    if (url := settings.existing_db_url) is None:
        return None
    catalog = ArtifactStore(store).catalog()
    containers = read_once(url, _pool_rows, what="the warm pool")
    wanted = wanted_sizes(settings.warm_pool, catalog)
    return summarize(containers, wanted, settings.container_memory_mb)


class WarmPool:
    def __init__(
        self,
        *,
        settings: ApiSettings,
        registry: ContainerRegistry,
        provisioning: Provisioning,
        catalog: CatalogSource,
        audit: AuditLog,
        leads: Callable[[], bool] = lambda: True,
    ) -> None:
        self.settings = settings
        self.leads = leads  # whether this process fills the pool (every process takes)
        self.registry = registry
        self.provisioning = provisioning
        self.catalog = catalog
        self.audit = audit
        self._wake = asyncio.Event()
        self._user: User | None = None
        # Per runtime: pool builds that failed in a row, and when the next one may start
        # (a broken artifact must not have the pool rebuild it every few seconds).
        self._failures: dict[str, int] = {}
        # Why a wanted runtime has no pool (not in the catalog), as already logged.
        self._told: set[tuple[str, str]] = set()
        self._retry_at: dict[str, float] = {}
        # Taken containers not ready yet, and the tasks that wait for them.
        self._handouts: set[int] = set()
        # The pool containers the last pass saw: one announced by another replica may have
        # been taken there (see announced).
        self._pooled: set[int] = set()
        self._waiters: set[asyncio.Task[None]] = set()

    # -- who owns it ----------------------------------------------------------------------------

    def owner(self) -> User:
        """The pool's user row, made on first use: disabled, no password verifies against it."""
        if self._user is None:
            with self.registry.db.session() as session:
                user = session.scalar(select(User).where(User.username == POOL_USER))
            if user is None:
                try:
                    with self.registry.db.session() as session:
                        user = User(username=POOL_USER, password_hash="!", disabled=True)
                        session.add(user)
                except IntegrityError:  # another process made it at the same moment
                    with self.registry.db.session() as session:
                        user = session.scalar(select(User).where(User.username == POOL_USER))
            self._user = user
        assert self._user is not None
        return self._user

    # -- taking ---------------------------------------------------------------------------------

    async def take(
        self,
        user: User,
        request: DevRequest,
        version: str,
        pins: Pins,
        quota: Quota,
        *,
        within: Within | None = None,
    ) -> Container | None:
        """A ready pool container matching the request, now ``user``'s (state ``creating``,
        rotating its agent secret); None when none matches (or another request took it).
        ``within``: written in the same transaction as the take (its provisioning job)."""
        candidates = [
            c
            for c in await asyncio.to_thread(pool_containers, self.registry)
            if c.state == ContainerState.READY
            and c.runtime == request.runtime
            and c.version == version
            and _same_addons(c.addons, request.addons)
            and c.pins == pins
        ]
        reason = f"requested by user {user.username} (from the warm pool)"
        for candidate in candidates:
            taken = await asyncio.to_thread(
                self.registry.take_from_pool,
                candidate.vmid,
                owner=user,
                quota=quota,
                name=request.name,
                reason=reason,
                within=within,
            )
            if taken is not None:
                self._pooled.discard(taken.vmid)
                self._refill_after(taken.vmid)
                return taken
        return None

    def _refill_after(self, vmid: int) -> None:
        """Build the replacement once the hand-out ``vmid`` is ready or failed (or after
        ``HANDOUT_GRACE_S``), not beside it: a container start and its layers' check would take
        the host's CPU (and the API's GIL) from the request a customer is waiting on."""
        self._handouts.add(vmid)

        async def wait() -> None:
            try:
                async with asyncio.timeout(HANDOUT_GRACE_S):
                    async with self.registry.bus.subscribe(vmid) as events:
                        while self._handing_out(vmid):
                            await events.get()
            except TimeoutError:
                pass
            finally:
                self._handouts.discard(vmid)
                self.wake()

        task = asyncio.get_running_loop().create_task(wait(), name=f"pool-handout-{vmid}")
        self._waiters.add(task)
        task.add_done_callback(self._waiters.discard)

    def _handing_out(self, vmid: int) -> bool:
        container = self.registry.get(vmid)
        return container is not None and not container.pool and container.state in _HANDING_OUT

    def announced(self, vmid: int) -> None:
        """Another replica changed container ``vmid``: if it was in the pool, it may have been
        taken there, and the filling replica builds its replacement as after its own take."""
        if vmid in self._pooled and self.leads():
            self._pooled.discard(vmid)
            self._refill_after(vmid)

    # -- keeping it filled ------------------------------------------------------------------------

    def wake(self) -> None:
        """Check the pool now (a container was taken)."""
        self._wake.set()

    async def run(self) -> None:
        """Keep the pool filled until cancelled: now, when woken, every ``poll_interval_s``."""
        try:
            while True:
                self._wake.clear()
                try:
                    await self.fill()
                except ZlhError as exc:
                    logger.warning("filling the warm pool failed: %s", exc)
                except Exception:  # a bug must not end the pool for good
                    logger.exception("filling the warm pool failed")
                try:
                    async with asyncio.timeout(self.settings.poll_interval_s):
                        await self._wake.wait()
                except TimeoutError:
                    pass
        finally:
            for task in self._waiters:
                task.cancel()
            await asyncio.gather(*self._waiters, return_exceptions=True)

    async def wanted(self) -> dict[str, int]:
        return wanted_sizes(self.settings.warm_pool, await self.catalog.get())

    async def summary(self) -> PoolSummary:
        containers = await asyncio.to_thread(pool_containers, self.registry)
        return summarize(containers, await self.wanted(), self.settings.container_memory_mb)

    async def fill(self) -> None:
        """One pass: delete the pool containers that failed, are no longer wanted or are out of
        date, then build what is missing (never more than wanted per runtime). Nothing unless
        this process ``leads``."""
        if not self.leads():
            self._pooled.clear()
            return
        catalog = await self.catalog.get()
        wanted = wanted_sizes(self.settings.warm_pool, catalog)
        targets: dict[str, tuple[str, Pins]] = {}
        for runtime in wanted:
            try:
                targets[runtime] = resolve_request(catalog, self._request(runtime))
            except InvalidRequest as exc:
                if (runtime, exc.message) not in self._told:  # once, not every pass
                    self._told.add((runtime, exc.message))
                    logger.warning("no warm pool for %s: %s", runtime, exc.message)
        keep: dict[str, list[Container]] = {runtime: [] for runtime in targets}
        drop: list[tuple[Container, str]] = []
        containers = await asyncio.to_thread(pool_containers, self.registry)
        self._pooled = {c.vmid for c in containers if c.state != ContainerState.DELETING}
        for container in containers:
            target = targets.get(container.runtime)
            if container.state == ContainerState.DELETING:
                continue
            if container.state == ContainerState.FAILED:
                drop.append((container, f"failed: {container.error}"))
                self._failed(container.runtime)
            elif target is None:
                drop.append((container, "its runtime is no longer in warm_pool"))
            elif (container.version, container.pins) != target or not _same_addons(
                container.addons, POOL_ADDONS
            ):
                drop.append((container, f"replaced by {container.runtime} {target[0]}"))
            else:
                keep[container.runtime].append(container)
                if container.state == ContainerState.READY:
                    self._failures.pop(container.runtime, None)
        for runtime, containers in keep.items():
            # The surplus after warm_pool was lowered: the ones still building go first.
            containers.sort(key=lambda c: (c.state == ContainerState.READY, -c.vmid))
            surplus = len(containers) - wanted[runtime]
            drop += [(c, "warm_pool lowered") for c in containers[: max(surplus, 0)]]
        for container, why in drop:
            await self._delete(container, why)
        if self._handouts:
            return  # built once they are ready (_refill_after)
        now = asyncio.get_running_loop().time()
        for runtime, containers in keep.items():
            if now < self._retry_at.get(runtime, 0.0):
                continue
            for _ in range(wanted[runtime] - len(containers)):
                await self._build(runtime, *targets[runtime])

    def _failed(self, runtime: str) -> None:
        """Back off the next build for ``runtime``: the poll interval, doubling per failure
        in a row, at most ``_MAX_BACKOFF_S``."""
        failures = self._failures[runtime] = self._failures.get(runtime, 0) + 1
        delay = min(self.settings.poll_interval_s * 2**failures, _MAX_BACKOFF_S)
        self._retry_at[runtime] = asyncio.get_running_loop().time() + delay
        logger.warning(
            "a warm-pool container of %s failed (%d in a row): the next is built in %.0f s",
            runtime,
            failures,
            delay,
        )

    @staticmethod
    def _request(runtime: str) -> DevRequest:
        return DevRequest(runtime=runtime, addons=list(POOL_ADDONS))

    async def _build(self, runtime: str, version: str, pins: Pins) -> None:
        container, token = await self.provisioning.allocate(
            owner=self.owner(),
            runtime=runtime,
            version=version,
            addons=list(POOL_ADDONS),
            pins=pins,
            quota=Quota(containers=0, running=0),  # not checked: pool=True
            reason="built for the warm pool",
            pool=True,
        )
        await asyncio.to_thread(
            self.audit.record,
            "system",
            Action.CREATE,
            container.vmid,
            f"warm pool: {runtime} {version} addons={','.join(POOL_ADDONS)}",
        )
        self.provisioning.spawn_held(container.vmid, token)

    async def _delete(self, container: Container, why: str) -> None:
        # Only while it is still in the pool: a request may have taken it since it was read.
        if not await asyncio.to_thread(self.registry.leave_pool, container.vmid):
            return
        logger.info("deleting warm-pool container %s: %s", container.vmid, why)
        try:
            await self.provisioning.delete(container.vmid, "system")
        except ZlhError as exc:
            logger.warning("deleting warm-pool container %s failed: %s", container.vmid, exc)
