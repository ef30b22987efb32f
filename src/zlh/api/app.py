"""The control plane as an ASGI app: ``create_app(settings, backend, …)`` → FastAPI.

Builds the services once (database migrated, keys loaded), mounts the built-in artifact
store when one is given, and in its lifespan resumes unfinished work, runs the status poller
and keeps the route feed's revocations in sync. On PostgreSQL it also follows the other
replicas' changes (``zlh.api.follower``). Every error leaves through one handler as
``ErrorBody`` JSON ``{message, detail, validations}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route
from starlette.types import ASGIApp

from zlh.api.accounts import configure_hashing
from zlh.api.agent_client import AgentClient
from zlh.api.apitokens import ApiTokens
from zlh.api.audit import AuditLog
from zlh.api.auth import TokenService
from zlh.api.catalog import CatalogSource
from zlh.api.containers import ContainerRegistry
from zlh.api.db import Database
from zlh.api.errors import NotAuthenticated, RateLimited
from zlh.api.events import EventBus
from zlh.api.follower import Follower, to_thread_to_the_end
from zlh.api.guard import RequestGuard
from zlh.api.keys import load_or_create_key
from zlh.api.lifecycle import Lifecycle
from zlh.api.metrics import Metrics, UsageCollector, artifact_downloads, container_counts
from zlh.api.openapi import install_security
from zlh.api.poller import Poller
from zlh.api.pool import FILL_DUTY, WarmPool
from zlh.api.provisioning import Provisioning
from zlh.api.ratelimit import LoginThrottle
from zlh.api.replicas import Membership, Share, everything
from zlh.api.responses import error_json
from zlh.api.routes import audit as audit_routes
from zlh.api.routes import auth as auth_routes
from zlh.api.routes import catalog as catalog_routes
from zlh.api.routes import dev as dev_routes
from zlh.api.routes import docs as docs_routes
from zlh.api.routes import events as events_routes
from zlh.api.routes import health as health_routes
from zlh.api.routes import ide as ide_routes
from zlh.api.routes import metrics as metrics_routes
from zlh.api.routes import pool as pool_routes
from zlh.api.routes import previews as preview_routes
from zlh.api.routes import relays as relay_routes
from zlh.api.routes import runtimes as runtime_routes
from zlh.api.routes import shares as share_routes
from zlh.api.routes import tailnet as tailnet_routes
from zlh.api.routes import tokens as token_routes
from zlh.api.runtime_changes import RuntimeChanges
from zlh.api.services import Services
from zlh.api.settings import ApiSettings
from zlh.api.shares import Shares
from zlh.api.tailnet.service import KeySealer, Tailnet, TailnetStore
from zlh.api.usage import UsageCache
from zlh.artifacts.server import ArtifactServer
from zlh.backends import Backend
from zlh.errors import ZlhError
from zlh.layers import LayerStore
from zlh.portal import mount_portal, not_found_page, wants_page
from zlh.routefeed import REVOCATION_SYNC_S, RouteFeed
from zlh.schemas import ErrorBody, FieldProblem

__all__ = ["build_services", "create_app"]

logger = logging.getLogger(__name__)


def build_services(
    settings: ApiSettings,
    backend: Backend,
    *,
    catalog: CatalogSource,
    artifact_base_url: str,
    feed: RouteFeed | None = None,
) -> Services:
    """Open the database (migrating it) and load the keys; nothing runs yet."""
    configure_hashing(
        time_cost=settings.argon2_time_cost,
        memory_kib=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
    )
    db = Database(settings.db_url)
    db.migrate()
    bus = EventBus()
    feed = feed or RouteFeed()
    registry = ContainerRegistry(db, bus, feed)
    metrics = Metrics()
    replicas = None
    if not settings.db_url.startswith("sqlite"):
        replicas = Membership(
            db,
            name=settings.replica_name,
            heartbeat_s=settings.replica_heartbeat_s,
            lease_s=settings.replica_lease_s,
            metrics=metrics,
        )
    share = replicas.owns if replicas is not None else everything
    usage = UsageCache(backend, registry.running_vmids, share=share)
    metrics.register(container_counts(registry.totals), UsageCollector(usage))
    audit_log = AuditLog(db)
    agents = AgentClient()
    tailnet = None
    if settings.headscale.enabled:
        sealer = KeySealer.from_file(settings.data_dir / "tailnet.key")
        tailnet = Tailnet(settings.headscale, sealer, TailnetStore(db))
    provisioning = Provisioning(
        settings=settings,
        registry=registry,
        backend=backend,
        agents=agents,
        catalog=catalog,
        audit=audit_log,
        agent_key=load_or_create_key(settings.agent_key_path),
        artifact_base_url=artifact_base_url,
        metrics=metrics,
        tailnet=tailnet,
        layers=LayerStore(root) if (root := backend.layers_dir()) else None,
    )

    async def resend(container: Any) -> None:
        await provisioning.send_payload(container, wait_s=settings.agent_request_timeout_s)

    runtime_changes = RuntimeChanges(provisioning)
    poller = Poller(
        settings=settings,
        registry=registry,
        agents=agents,
        secret=provisioning.secret,
        resend=resend,
        overdue=provisioning.provision_overdue,
        metrics=metrics,
        share=share,
        runtime_seen=runtime_changes.observed,
    )
    provisioning.on_provisioning = poller.wake
    runtime_changes.on_change = poller.announced
    lifecycle = Lifecycle(
        settings=settings,
        registry=registry,
        backend=backend,
        audit=audit_log,
        provisioning=provisioning,
        wake_poller=poller.wake,
        share=share,
    )
    provisioning.on_deleted = lifecycle.forget
    provisioning.job_work = lifecycle.work
    pool = WarmPool(
        settings=settings,
        registry=registry,
        provisioning=provisioning,
        catalog=catalog,
        audit=audit_log,
        leads=(lambda: replicas.leads(FILL_DUTY)) if replicas is not None else lambda: True,
    )
    if replicas is not None:
        membership = replicas

        def live_changed() -> None:
            poller.wake()  # its share moved
            if membership.leads(FILL_DUTY):
                pool.wake()  # it may fill the pool now

        replicas.on_change = live_changed
    provisioning.pool = pool
    return Services(
        settings=settings,
        db=db,
        backend=backend,
        tokens=TokenService(
            db, load_or_create_key(settings.jwt_key_path), ttl_s=settings.session_ttl_s
        ),
        api_tokens=ApiTokens(db, max_days=settings.api_token_max_days),
        registry=registry,
        provisioning=provisioning,
        lifecycle=lifecycle,
        runtime_changes=runtime_changes,
        shares=Shares(db, registry, audit_log),
        poller=poller,
        agents=agents,
        catalog=catalog,
        audit=audit_log,
        bus=bus,
        feed=feed,
        login_throttle=LoginThrottle(
            free_per_user_address=settings.login_free_failures,
            free_per_address=settings.login_failures_per_address,
            base_s=settings.login_backoff_base_s,
            max_s=settings.login_backoff_max_s,
            forget_s=settings.login_window_s,
            # Replicas share PostgreSQL: a failure on one counts on all of them.
            shared=db if _shared(db) else None,
        ),
        metrics=metrics,
        usage=usage,
        pool=pool,
        tailnet=tailnet,
        replicas=replicas,
    )


def _shared(db: Database) -> bool:
    """Whether other replicas may share this database (only PostgreSQL can be shared)."""
    return db.engine.dialect.name == "postgresql"


async def _sync_revocations(svc: Services, wake: asyncio.Event) -> None:
    """Revocations made by other processes (``zlh user disable``, another replica) reach the
    feed every ``REVOCATION_SYNC_S``, and at once when ``wake`` is set (a replica's NOTIFY);
    API tokens' with them (``apitokens.revocation_key``), so their open WebSockets close too."""
    while True:
        wake.clear()
        try:
            sids = await to_thread_to_the_end(svc.tokens.revoked_since, None)
            keys = await to_thread_to_the_end(svc.api_tokens.revoked_keys)
            svc.feed.replace_revocations(sids + keys)
        except ZlhError as exc:
            logger.warning("syncing session revocations failed: %s", exc)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REVOCATION_SYNC_S):
                await wake.wait()


async def _resume(svc: Services) -> None:
    """What a start of this process takes up again. With replicas, each takes up only the
    containers of its share (the others' are theirs), once it knows who else runs."""
    share: Share = everything
    if svc.replicas is not None:
        await svc.replicas.settled()
        share = svc.replicas.owns
    await svc.provisioning.resume(share)
    await svc.lifecycle.resume(share)
    await svc.pool.run()  # the pool as it stands adopted, then kept filled


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    svc: Services = app.state.services
    svc.registry.bind_loop(asyncio.get_running_loop())
    svc.usage.bind_loop(asyncio.get_running_loop())
    svc.provisioning.load_backend_state()
    revoked = asyncio.Event()
    if svc.replicas is not None:
        await svc.replicas.join()  # before polling: the share follows the live replicas
    tasks = [
        asyncio.create_task(_resume(svc), name="resume"),
        asyncio.create_task(svc.poller.run(), name="poller"),
        asyncio.create_task(svc.provisioning.run_jobs(), name="jobs"),
        asyncio.create_task(_sync_revocations(svc, revoked), name="revocations"),
        asyncio.create_task(svc.lifecycle.run_idle_stop(), name="idle-stop"),
    ]
    if _shared(svc.db):

        def announced(vmid: int) -> None:
            svc.poller.announced(vmid)  # its share's container, written by another replica
            svc.pool.announced(vmid)

        follower = Follower(
            svc.settings.db_url,
            replica=svc.settings.replica_name,
            registry=svc.registry,
            revocations_changed=revoked.set,
            container_announced=announced,
            resynced=svc.poller.wake,  # what it missed while not listening: a full reload
        )
        app.state.follower = follower
        tasks.append(asyncio.create_task(follower.run(), name="follow"))
    if svc.replicas is not None:
        tasks.append(asyncio.create_task(svc.replicas.run(), name="replica-heartbeat"))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if svc.replicas is not None:
            await svc.replicas.leave()
        await svc.provisioning.close()
        await svc.agents.close()
        svc.db.dispose()


def _error(status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True), status_code=status, headers=headers
    )


async def _zlh_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ZlhError)
    headers: dict[str, str] = {}
    if isinstance(exc, NotAuthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    return error_json(exc, headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        if loc and loc[0] in {"body", "query", "path", "header", "cookie"} and len(loc) > 1:
            loc = loc[1:]
        problems.append(FieldProblem(field=".".join(loc) or "(body)", detail=error["msg"]))
    summary = "; ".join(f"{p.field}: {p.detail}" for p in problems[:3])
    return _error(422, ErrorBody(message=f"invalid request: {summary}", validations=problems))


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown path, wrong method) in the envelope; a browser asking
    for a page that does not exist gets the portal's styled "Not found" page."""
    assert isinstance(exc, HTTPException)
    accept = request.headers.get("accept", "")
    if exc.status_code == 404 and wants_page(request.method, request.url.path, accept):
        return not_found_page()
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return _error(exc.status_code, ErrorBody(message=str(exc.detail)), headers)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": ""})
        if match is not Match.NONE and isinstance(route, APIRoute | Route):
            methods |= route.methods or set()
    return sorted(methods)


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error", exc_info=exc)
    return _error(500, ErrorBody(message="internal error", detail=exc.__class__.__name__))


def create_app(
    settings: ApiSettings,
    backend: Backend,
    *,
    catalog: CatalogSource,
    artifact_base_url: str,
    store_app: ASGIApp | None = None,
    feed: RouteFeed | None = None,
) -> FastAPI:
    """The API app. ``store_app`` (the built-in artifact store) is mounted at /artifacts/."""
    app = FastAPI(
        title="ZeroLagHub API",
        version="1",
        # Served behind login by routes.docs, Swagger UI from the vendored package (no CDN).
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=_lifespan,
    )
    app.state.services = build_services(
        settings, backend, catalog=catalog, artifact_base_url=artifact_base_url, feed=feed
    )
    app.add_exception_handler(ZlhError, _zlh_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    app.state.tailnet = app.state.services.tailnet
    routers = (auth_routes, catalog_routes, dev_routes, events_routes, audit_routes, relay_routes)
    for module in (
        *routers,
        health_routes,
        metrics_routes,
        tailnet_routes,
        docs_routes,
        ide_routes,
        preview_routes,
        runtime_routes,
        share_routes,
        token_routes,
        pool_routes,
    ):
        app.include_router(module.router)
    install_security(app)
    if store_app is not None:
        app.mount("/artifacts", store_app)
        if isinstance(store_app, ArtifactServer):
            app.state.services.metrics.register(artifact_downloads(store_app))
    mount_portal(app)
    app.add_middleware(RequestGuard, settings=settings)
    return app
