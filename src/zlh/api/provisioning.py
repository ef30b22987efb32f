"""Dev requests from catalog check to a provisioning agent, resumable after a crash.

A request is checked against the catalog (unknown runtime, version or addon: 422, nothing
created), recorded with its vmid and resolved artifacts (state ``requested``), answered 202,
and then driven in the background:

``requested`` → (``creating``: backend create + start) → (``provisioning``: payload sent to the
agent) → the poller takes over until ``ready`` or ``failed``.

The row is written before the backend is called and ``creating`` before ``create``, and
with the row its provisioning job (``zlh.api.jobs``), held by this replica while it drives:
if this replica dies, another (or this one, restarted) takes the job once its lease ran out
and drives the container again from where it stood. Driving again converges: a container the
backend already has under a vmid in ``creating`` (or later) is ours and adopted, never created
twice; the payload is sent again, and the agent joins or skips what it has done. The job ends
when the container is ``ready`` or ``failed`` (the poller's verdict) or deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from zlh.api.agent_client import AgentClient
from zlh.api.audit import Action, AuditLog
from zlh.api.bodies import ContainerEvent, DevRequest
from zlh.api.catalog import CatalogSource
from zlh.api.containers import ContainerRegistry, Quota, Within
from zlh.api.db import AddonPin, Container, ContainerState, KeyValue, Pins, User
from zlh.api.db.models import utcnow
from zlh.api.errors import AgentError, AgentUnreachable, InvalidRequest
from zlh.api.jobs import IN_FLIGHT, Claim, JobKind, Jobs
from zlh.api.keys import agent_secret
from zlh.api.layers import collect_garbage, mounts_for
from zlh.api.metrics import Metrics
from zlh.api.replicas import Share, everything
from zlh.api.settings import ApiSettings
from zlh.api.tailnet.service import Tailnet
from zlh.api.tasks import ContainerTasks
from zlh.backends import (
    Backend,
    BackendError,
    ContainerExists,
    ContainerInfo,
    ContainerSpec,
    LayerMount,
    Resources,
    RunState,
)
from zlh.errors import ZlhError
from zlh.layers import LayerStore
from zlh.schemas import (
    AddonType,
    Artifact,
    ArtifactKind,
    Catalog,
    CatalogLookupError,
    CodeServerOptions,
    ProvisionPayload,
    RuntimeName,
    RuntimeSpec,
    TailscaleOptions,
    addon_type,
    ide_base_path,
    tailnet_addon,
)
from zlh.schemas._base import WireModel

if TYPE_CHECKING:
    from zlh.api.pool import WarmPool

__all__ = ["CONTAINER_START", "Provisioning", "resolve_request"]

# The step label of the backend's create and start (zlh.api.metrics), before the agent's own.
CONTAINER_START = "container-start"
# Containers a start re-finds on the backend at once (Provisioning.resume).
_REATTACH_AT_ONCE = 32
# What each kind of job does, in the words of a container's error.
_WORK = {
    JobKind.PROVISION: "provisioning",
    JobKind.STOP: "a stop",
    JobKind.START: "a start",
    JobKind.RESTART: "a restart",
    JobKind.REBUILD: "a rebuild",
}

logger = logging.getLogger(__name__)


def resolve_request(catalog: Catalog, request: DevRequest) -> tuple[str, Pins]:
    """The runtime version and the pinned artifacts a request means, or InvalidRequest."""
    try:
        version, runtime = catalog.resolve(ArtifactKind.RUNTIME, request.runtime, request.version)
        addons: dict[str, AddonPin] = {}
        for name in request.addons:
            if name in addons:
                raise CatalogLookupError(f"addon {name!r} is listed twice", field="addons")
            addon_version, artifact = catalog.resolve(ArtifactKind.ADDON, name)
            addons[name] = AddonPin(version=addon_version, artifact=artifact)
    except CatalogLookupError as exc:
        raise InvalidRequest(exc.message, field=exc.field) from exc
    return version, Pins(runtime=runtime, addons=addons)


class Provisioning:
    def __init__(
        self,
        *,
        settings: ApiSettings,
        registry: ContainerRegistry,
        backend: Backend,
        agents: AgentClient,
        catalog: CatalogSource,
        audit: AuditLog,
        agent_key: bytes,
        artifact_base_url: str,
        metrics: Metrics,
        tailnet: Tailnet | None = None,
        layers: LayerStore | None = None,
    ) -> None:
        self.settings = settings
        # Shared layers, where the backend mounts them and the settings want them.
        self.layers = layers if settings.layers else None
        self.metrics = metrics
        self.tailnet = tailnet
        self.registry = registry
        self.backend = backend
        self.agents = agents
        self.catalog = catalog
        self.audit = audit
        self.agent_key = agent_key
        self.artifact_base_url = artifact_base_url.rstrip("/")
        self.tasks = ContainerTasks()
        self.jobs = Jobs(
            registry.db,
            holder=settings.replica_name,
            lease_s=settings.job_lease_s,
            max_attempts=settings.job_max_attempts,
        )
        # Ready containers provisioned ahead of demand (None: no warm pool).
        self.pool: WarmPool | None = None
        # Told when a container starts provisioning (the poller's wake-up).
        self.on_provisioning: Callable[[], None] = lambda: None
        # Told the vmid of every deleted container (whose number a new one may get).
        self.on_deleted: Callable[[int], None] = lambda vmid: None
        # The work of the lifecycle's jobs (zlh.api.lifecycle): a job of that kind on that
        # container, continued from the container's state (a taken-over job's too).
        self.job_work: Callable[[JobKind, int], Coroutine[Any, Any, None]] | None = None

    def secret(self, container: Container) -> str:
        return agent_secret(self.agent_key, container.vmid, container.agent_nonce)

    async def rotate_secret(self, vmid: int) -> None:
        """Move the agent from ``agent_nonce``'s secret to ``next_nonce``'s, then record that.

        The record changes only once the agent took the new one; an agent that already refuses
        the old secret but takes the new one had swapped before a crash: recorded too.
        """
        container = self.registry.get(vmid)
        if container is None or container.next_nonce is None or container.agent_url is None:
            return
        new = agent_secret(self.agent_key, vmid, container.next_nonce)
        timeout_s = self.settings.agent_request_timeout_s
        try:
            await self.agents.change_token(
                container.agent_url, self.secret(container), new, timeout_s=timeout_s
            )
        except AgentUnreachable:
            raise
        except AgentError:
            await self.agents.change_token(container.agent_url, new, new, timeout_s=timeout_s)
        self.registry.update(vmid, agent_nonce=container.next_nonce, next_nonce=None)

    # -- requests ----------------------------------------------------------------------------

    async def request(self, user: User, request: DevRequest) -> Container:
        """Check, record and start driving a dev request; returns the ``requested`` record."""
        needs_tailnet = tailnet_addon(request.addons)
        if needs_tailnet is not None and self.tailnet is None:
            raise InvalidRequest(
                f"the {needs_tailnet} addon needs a tailnet, and none is configured on this "
                "platform",
                field="addons",
            )
        version, pins = resolve_request(await self.catalog.get(), request)
        quota = Quota(
            containers=self.settings.max_containers_per_user,
            running=self.settings.max_running_per_user,
        )
        container = None
        held: list[str] = []
        if self.pool is not None:
            container = await self.pool.take(
                user, request, version, pins, quota, within=self.hold_into(held)
            )
        taken = container is not None
        if container is None:
            container, token = await self.allocate(
                owner=user,
                runtime=request.runtime,
                version=version,
                addons=list(request.addons),
                pins=pins,
                quota=quota,
                reason=f"requested by user {user.username}",
                name=request.name,
            )
            held.append(token)
        # A pool container already runs: its drive goes straight to its agent.
        self.spawn_held(container.vmid, held[0], running=taken)
        await asyncio.to_thread(
            self.audit.record,
            user.username,
            Action.CREATE,
            container.vmid,
            f"{request.runtime} {version} addons={','.join(request.addons) or '-'}"
            + (f" name={request.name!r}" if request.name else "")
            + (" (from the warm pool)" if taken else ""),
        )
        return container

    async def allocate(self, **fields: Any) -> tuple[Container, str]:
        """``ContainerRegistry.allocate`` (vmids the backend suggests) with the new container's
        provisioning job held by this replica, in one transaction; the row and the job's token."""
        held: list[str] = []
        container = await asyncio.to_thread(
            self.registry.allocate,
            suggest_vmid=self.backend.suggest_vmid,
            within=self.hold_into(held),
            **fields,
        )
        return container, held[0]

    def hold_into(self, held: list[str], kind: JobKind = JobKind.PROVISION) -> Within:
        """A ``within`` for the registry: hold ``vmid``'s job of ``kind`` in the same
        transaction as the change it carries; its token is appended to ``held``."""

        def hold(session: Any, vmid: int) -> None:
            held.append(self.jobs.hold(session, vmid, kind))

        return hold

    async def delete(self, vmid: int, actor: str) -> None:
        """Destroy the container and forget it. Raises BackendError (state stays deleting).

        Its job goes first: a replica driving it elsewhere stops at its next lease renewal."""
        await self.tasks.cancel(vmid)
        await asyncio.to_thread(self.jobs.drop, vmid)
        self.registry.update(vmid, state=ContainerState.DELETING)
        try:
            await self.backend.destroy(vmid)
        except BackendError as exc:
            self.registry.update(vmid, error=f"delete failed: {exc.message}")
            raise
        await self._save_backend_state()
        if self.tailnet is not None:
            try:
                await self.tailnet.release(vmid)
            except ZlhError as exc:
                logger.warning("the tailnet keys of container %s stay valid: %s", vmid, exc)
        self.registry.remove(vmid)
        self.on_deleted(vmid)
        await asyncio.to_thread(self.audit.record, actor, Action.DELETE, vmid)
        if self.layers is not None:
            await collect_garbage(self.layers, self.backend, self.catalog)

    # -- the background drive -------------------------------------------------------------------

    async def resume(self, share: Share = everything) -> None:
        """After a start: re-find the running containers of its ``share``, finish their
        deletes. Unfinished provisioning is the jobs' (:meth:`run_jobs`): a provisioning
        container with a job is left to it. At most ``_REATTACH_AT_ONCE`` backend calls are
        under way at once (10,000 containers must not be 10,000 Proxmox requests at once)."""
        driven = await asyncio.to_thread(self.jobs.vmids)
        polled = [
            c
            for c in self.registry.in_states(
                [ContainerState.PROVISIONING, ContainerState.READY, ContainerState.UNREACHABLE]
            )
            if share(c.vmid) and (c.state != ContainerState.PROVISIONING or c.vmid not in driven)
        ]
        at_once = asyncio.Semaphore(_REATTACH_AT_ONCE)

        async def reattach(container: Container) -> None:
            async with at_once:
                await self._reattach(container)

        await asyncio.gather(*(reattach(c) for c in polled))
        for container in self.registry.in_states([ContainerState.DELETING]):
            if not share(container.vmid):
                continue
            try:
                await self.delete(container.vmid, "system")
            except ZlhError as exc:
                logger.warning("deleting container %s failed again: %s", container.vmid, exc)

    async def _reattach(self, container: Container) -> None:
        try:
            info = await self.backend.status(container.vmid)
            if info.state is RunState.ABSENT:
                self._fail(container.vmid, "the container disappeared from the backend")
                return
            if info.state is not RunState.RUNNING or not info.address:
                # It ran before the platform (or the host) went down: it comes back running.
                self.registry.update(
                    container.vmid,
                    state=ContainerState.STARTING,
                    state_reason="host restarted",
                    provision_started_at=utcnow(),
                )
                await self.backend.start(container.vmid)
                info = await self.backend.wait_running(
                    container.vmid, timeout_s=self.settings.container_start_timeout_s
                )
            self.record_address(container.vmid, info)
        except ZlhError as exc:
            logger.warning("container %s could not be reattached: %s", container.vmid, exc)

    # -- jobs ------------------------------------------------------------------------------------

    async def run_jobs(self) -> None:
        """Take and drive jobs until cancelled: at once those this replica's previous run left
        (and containers left without a job), then every third of a lease those whose holder
        stopped renewing them."""
        own = True
        while True:
            try:
                if own:
                    adopted = await asyncio.to_thread(self.jobs.adopt_orphans)
                    if adopted:
                        logger.info("unfinished containers given a job: %s", adopted)
                await self.take_jobs(own=own)
                own = False
            except (ZlhError, SQLAlchemyError) as exc:
                logger.warning("looking for provisioning jobs failed: %s", exc)
            except Exception:  # a bug must not end the search for good
                logger.exception("looking for provisioning jobs failed")
            await asyncio.sleep(self.jobs.renew_every_s)

    async def take_jobs(self, *, own: bool = False) -> list[Claim]:
        """Claim every job free to take now and drive each; the claims."""
        claims: list[Claim] = []
        while True:
            taken = [c.vmid for c in claims]
            claim = await asyncio.to_thread(self.jobs.claim_next, own=own, skip=taken)
            if claim is None:
                return claims
            claims.append(claim)
            if claim.exhausted:
                limit = self.jobs.max_attempts
                self._fail(
                    claim.vmid,
                    f"{_WORK[claim.kind]} was begun {claim.attempts} times and each time the "
                    f"replica driving it stopped before the end (job_max_attempts={limit}): "
                    "given up",
                )
            else:
                logger.info(
                    "container %s: %s job taken (attempt %s)",
                    claim.vmid,
                    claim.kind,
                    claim.attempts,
                )
                self.spawn_job(claim.vmid, claim.token, claim.kind)

    def spawn_held(self, vmid: int, token: str, *, running: bool = False) -> None:
        """Drive ``vmid`` as its task, holding its job ``token`` (see :meth:`run_held`),
        after whatever task the container still has: a pool build's drive can still be ending
        when its agent already reports ready and a request takes it (``running``)."""
        drive = partial(self.drive, vmid, running=running)
        work = partial(self.run_held, vmid, token, JobKind.PROVISION, drive)
        self.tasks.spawn(vmid, work, f"provision-{vmid}")

    def spawn_job(self, vmid: int, token: str, kind: JobKind) -> None:
        """Do ``vmid``'s job of ``kind`` as its task, holding ``token``: a provisioning's drive,
        or the lifecycle's work (:attr:`job_work`)."""
        if kind is JobKind.PROVISION:
            self.spawn_held(vmid, token)
            return
        assert self.job_work is not None, "the lifecycle registers its jobs' work"
        work = partial(self.run_held, vmid, token, kind, partial(self.job_work, kind, vmid))
        self.tasks.spawn(vmid, work, f"{kind}-{vmid}")

    async def run_held(
        self, vmid: int, token: str, kind: JobKind, work: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        """``work()`` while holding ``vmid``'s job (``token``), renewing its lease every third
        of it until the work is done and the container out of the kind's states
        (:data:`~zlh.api.jobs.IN_FLIGHT`); then the job ends. A job found gone or taken at a
        renewal stops the work; if the container itself is gone (deleted on another replica),
        whatever the work made of it is destroyed."""
        drive = asyncio.create_task(work(), name=f"{kind}-{vmid}")
        try:
            kept = await self._keep_lease(vmid, token, kind, drive)
        finally:
            drive.cancel()
            await asyncio.gather(drive, return_exceptions=True)
        if kept:
            await asyncio.to_thread(self.jobs.finish, vmid, token)
            return
        logger.info("container %s: its job was cancelled or taken over; stopped driving", vmid)
        if await asyncio.to_thread(self.registry.get, vmid) is None:
            try:
                await self.backend.destroy(vmid)
            except ZlhError as exc:
                logger.warning("deleted container %s may remain on the backend: %s", vmid, exc)

    async def _keep_lease(
        self, vmid: int, token: str, kind: JobKind, drive: asyncio.Task[None]
    ) -> bool:
        """Renew the lease every third of it until ``drive`` is done and the container is out
        of the kind's states (True: told at once by this replica's own updates, e.g. its
        poller's ``ready``; at the next renewal otherwise), or until a renewal finds the job no
        longer ours (False), or the work raised an exception it was not made for (False,
        logged). A database that does not answer is tried again at the next renewal, until the
        lease has run out: then another replica may have the job, and this one stops."""
        loop = asyncio.get_running_loop()
        every, lease = self.jobs.renew_every_s, self.settings.job_lease_s
        renewed = loop.time()
        async with self.registry.bus.subscribe(vmid) as changes:
            while True:
                left = max(renewed + every - loop.time(), 0.0)
                try:
                    if not drive.done():
                        await asyncio.wait({drive}, timeout=left)
                    elif not drive.cancelled() and (error := drive.exception()) is not None:
                        # A bug: the job is left to run out, then taken again (and counted).
                        logger.error(
                            "container %s: its %s job's work failed", vmid, kind, exc_info=error
                        )
                        return False
                    elif not await asyncio.to_thread(self._in_flight, vmid, kind):
                        return True
                    else:
                        await _changed(changes, IN_FLIGHT[kind], timeout_s=left)
                    if loop.time() >= renewed + every:
                        if not await asyncio.to_thread(self.jobs.renew, vmid, token):
                            return False
                        renewed = loop.time()
                except SQLAlchemyError as exc:
                    if loop.time() - renewed >= lease:
                        return False
                    logger.warning("container %s: its job's lease was not renewed: %s", vmid, exc)
                    await asyncio.sleep(min(every, 1.0))

    def _in_flight(self, vmid: int, kind: JobKind) -> bool:
        """Still in one of the states a job of ``kind`` carries it through (the poller moves
        it on from ``provisioning`` and ``starting``)."""
        container = self.registry.get(vmid)
        return container is not None and ContainerState(container.state) in IN_FLIGHT[kind]

    # -- the background drive -------------------------------------------------------------------

    async def drive(self, vmid: int, *, running: bool = False) -> None:
        """Take a ``requested``, ``creating`` or ``provisioning`` container to ``provisioning``
        with its payload accepted (the poller does the rest); failures end it ``failed`` with
        the reason. ``running``: a pool container just taken (it runs at its recorded address:
        no backend call), whose agent secret is rotated first. A ``provisioning`` one (its job
        taken over) is made to run again if it does not, and gets its payload again."""
        try:
            container = self.registry.get(vmid)
            if container is None or not ContainerState(container.state).is_provisioning:
                return
            if not running:
                started = asyncio.get_running_loop().time()
                async with asyncio.timeout(self.settings.container_start_timeout_s):
                    info = await self._create_and_start(container)
                took = asyncio.get_running_loop().time() - started
                self.metrics.provision_step_seconds.labels(CONTAINER_START).observe(took)
                self.record_address(vmid, info)
            if container.next_nonce is not None:
                await self.rotate_secret(vmid)
            container = self.registry.update(vmid, state=ContainerState.PROVISIONING)
            if container is not None:
                await self.ensure_tailnet(container)
                await self.send_payload(container, wait_s=self.settings.agent_answer_timeout_s)
                self.on_provisioning()
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            self._fail(
                vmid,
                f"the container did not start within {self.settings.container_start_timeout_s:g}s",
            )
        except ZlhError as exc:
            self._fail(vmid, exc.message + (f" ({exc.reason})" if exc.reason else ""))
        except Exception as exc:  # a bug or an untranslated backend error: fail, never hang
            logger.exception("provisioning container %s failed", vmid)
            self._fail(vmid, f"internal error: {exc.__class__.__name__}")

    async def _create_and_start(self, container: Container) -> ContainerInfo:
        vmid = container.vmid
        info = await self.backend.status(vmid)
        if info.state is RunState.ABSENT:
            self.registry.update(vmid, state=ContainerState.CREATING)
            try:
                await self._create(await self.spec(container))
            except ContainerExists:
                # Someone else's container holds this vmid on the backend: never touch it.
                raise BackendError(
                    f"vmid {vmid} is already used on the backend by a container this API did "
                    "not create"
                ) from None
            await self._save_backend_state()
        elif container.state == ContainerState.REQUESTED:
            raise BackendError(
                f"vmid {vmid} is already used on the backend by a container this API did not create"
            )
        if info.state is not RunState.RUNNING:
            await self.backend.start(vmid)
        return await self.backend.wait_running(
            vmid, timeout_s=self.settings.container_start_timeout_s
        )

    async def _create(self, spec: ContainerSpec) -> None:
        """``backend.create``, waited out even by a cancelled drive: a create cannot be taken
        back halfway (a blocking backend's runs on in its thread), and what it made must exist
        by the time the drive ends, for a drive stopped by a delete elsewhere to destroy it."""
        create = asyncio.ensure_future(self.backend.create(spec))
        try:
            await asyncio.shield(create)
        except asyncio.CancelledError:
            await asyncio.wait({create})
            raise

    async def repin(self, container: Container) -> Pins:
        """The container's runtime version and add-ons as the catalog pins them now (a rebuild
        takes the current code-server); its recorded pins if the catalog no longer has them."""
        request = DevRequest(
            runtime=container.runtime, version=container.version, addons=list(container.addons)
        )
        try:
            _, pins = resolve_request(await self.catalog.get(), request)
        except InvalidRequest as exc:
            logger.warning("container %s keeps its pins: %s", container.vmid, exc.message)
            return container.pins
        return pins

    async def spec(self, container: Container, pins: Pins | None = None) -> ContainerSpec:
        """What the backend makes (or remakes) the container with, for ``pins`` (default: its
        own); where layers are mounted, theirs are built first (once per artifact)."""
        layers: tuple[LayerMount, ...] = ()
        if self.layers is not None:
            layers = await mounts_for(
                self.layers,
                container.runtime,
                container.version,
                pins or container.pins,
                base_url=self.artifact_base_url,
            )
        return ContainerSpec(
            vmid=container.vmid,
            agent_secret=self.secret(container),
            resources=Resources(
                memory_mb=self.settings.container_memory_mb, cores=self.settings.container_cores
            ),
            tun=any(addon_type(name).needs_tun for name in container.addons),
            layers=layers,
        )

    def record_address(self, vmid: int, info: ContainerInfo) -> None:
        self.registry.update(
            vmid,
            address=info.address,
            agent_port=info.agent_port,
            code_server_port=info.code_server_port,
            template=info.template,
        )

    async def send_payload(self, container: Container, *, wait_s: float) -> None:
        """POST the payload, retrying while the agent does not answer yet (it may be booting)."""
        url = container.agent_url
        if url is None:
            raise BackendError(f"container {container.vmid} has no address yet")
        payload = self.payload(container)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        delay = 0.1
        while True:
            try:
                await self.agents.provision(
                    url,
                    self.secret(container),
                    payload,
                    timeout_s=self.settings.agent_request_timeout_s,
                )
                break
            except AgentUnreachable:
                if loop.time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.registry.update(container.vmid, provision_started_at=utcnow(), error=None)

    def payload(self, container: Container) -> ProvisionPayload:
        pins = container.pins
        addons = []
        for name, pin in pins.addons.items():
            addon = addon_type(name)
            options = self._options(addon, container)
            addons.append(
                addon.build(
                    version=pin.version, artifact=self.resolved(pin.artifact), options=options
                )
            )
        runtime = RuntimeSpec(
            name=RuntimeName(container.runtime),
            version=container.version,
            artifact=self.resolved(pins.runtime),
        )
        return ProvisionPayload(
            vmid=container.vmid, runtime=runtime, addons=addons, pool=container.pool
        )

    def resolved(self, artifact: Artifact) -> Artifact:
        """The pinned artifact with its url made absolute against the artifact server."""
        return artifact.model_copy(update={"url": artifact.resolved_url(self.artifact_base_url)})

    def _options(self, addon: AddonType[Any, Any], container: Container) -> WireModel:
        """What only the API knows of this container, as the addon's options."""
        if addon.options is CodeServerOptions and addon.port is not None:
            # The backend's port when it has code-server listen elsewhere (the process backend).
            port = container.code_server_port or addon.port
            return CodeServerOptions(base_path=ide_base_path(container.vmid), port=port)
        if addon.options is TailscaleOptions:
            access = self.tailnet.store.get(container.vmid) if self.tailnet is not None else None
            if self.tailnet is None or access is None:
                raise AgentError(f"container {container.vmid} has no tailnet keys")
            return self.tailnet.container_options(access)
        raise AgentError(f"addon {addon.name!r} needs options this API cannot fill in yet")

    async def ensure_tailnet(self, container: Container) -> None:
        """The container's Headscale keys, made once before its first payload (kept for resends)."""
        if tailnet_addon(container.addons) is not None and self.tailnet is not None:
            await self.tailnet.ensure_access(
                container.vmid, user_id=container.owner_id, username=container.owner.username
            )

    def provision_overdue(self, container: Container) -> bool:
        started = container.provision_started_at
        limit = timedelta(seconds=self.settings.provision_timeout_s)
        return started is not None and utcnow() - started > limit

    def _fail(self, vmid: int, message: str) -> None:
        logger.warning("container %s failed: %s", vmid, message)
        if self.registry.update(vmid, state=ContainerState.FAILED, error=message) is not None:
            self.audit.record("system", Action.FAILED, vmid, message)

    async def _save_backend_state(self) -> None:
        state = self.backend.get_state()
        key = f"backend:{self.backend.name}"
        with self.registry.db.session() as session:
            row = session.get(KeyValue, key)
            if row is None:
                session.add(KeyValue(key=key, value=state))
            elif row.value != state:
                row.value = state

    def load_backend_state(self) -> None:
        with self.registry.db.session() as session:
            row = session.get(KeyValue, f"backend:{self.backend.name}")
        if row is not None:
            self.backend.load_state(row.value)

    async def close(self) -> None:
        await self.tasks.close()
        try:
            await asyncio.to_thread(self.jobs.release)
        except SQLAlchemyError as exc:
            logger.warning("the jobs this replica held wait for their lease to end: %s", exc)
        if self.layers is not None:
            await self.layers.close()


async def _changed(
    changes: asyncio.Queue[ContainerEvent],
    states: frozenset[ContainerState],
    *,
    timeout_s: float,
) -> None:
    """Until the container's state leaves ``states`` (or it is deleted), or ``timeout_s``:
    its progress updates alone do not end the wait."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            while True:
                event = await changes.get()
                if event.state not in states:
                    return
