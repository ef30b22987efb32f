"""``/api/dev``: dev requests, the caller's containers, one container, stop/start/restart,
rebuild, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from zlh.api.apitokens import Scope
from zlh.api.bodies import ContainerOut, DevRequest
from zlh.api.db import Container, User
from zlh.api.deps import (
    CurrentUser,
    OwnedContainer,
    Svc,
    UsableContainer,
    VisibleContainer,
    require_scope,
)
from zlh.api.routes import ERRORS

router = APIRouter(prefix="/api/dev", tags=["dev"], responses=ERRORS)


@router.post("", status_code=202)
@require_scope(Scope.CONTAINERS_WRITE)
async def request_dev(body: DevRequest, user: CurrentUser, svc: Svc) -> ContainerOut:
    """Ask for a dev container. Checked against the catalog (422 names what is unknown);
    the answer is the recorded container, which then provisions in the background
    (follow it at ``/api/dev/{vmid}/events``)."""
    container = await svc.provisioning.request(user, body)
    return svc.lifecycle.out(container)


@router.get("")
@require_scope(Scope.CONTAINERS_READ)
def list_dev(
    user: CurrentUser,
    svc: Svc,
    owner: Annotated[
        str | None, Query(max_length=64, description="admins: only this user's containers")
    ] = None,
) -> list[ContainerOut]:
    """The caller's containers and those shared with the caller (``role`` set); an admin
    sees everybody's (or ``owner``'s)."""
    if user.is_admin:
        containers = svc.registry.list_for(None, owner_name=owner)
    else:
        containers = [
            c
            for c in [*svc.registry.list_for(user.id), *svc.registry.shared_with(user.id)]
            if owner is None or owner == c.owner.username
        ]
    return [svc.lifecycle.out(c, viewer=user) for c in containers]


@router.get("/{vmid}")
@require_scope(Scope.CONTAINERS_READ)
def get_dev(container: VisibleContainer, user: CurrentUser, svc: Svc) -> ContainerOut:
    """One container with the agent's last polled ``/status``."""
    return svc.lifecycle.out(container, viewer=user)


@router.delete("/{vmid}", status_code=204)
@require_scope(Scope.CONTAINERS_WRITE)
async def delete_dev(container: OwnedContainer, user: CurrentUser, svc: Svc) -> Response:
    """Destroy the container and forget it."""
    await svc.provisioning.delete(container.vmid, user.username)
    return Response(status_code=204)


def _by(user: User, container: Container) -> str:
    """Who did it, as the container's page says it."""
    role = "user" if user.id == container.owner_id else "admin" if user.is_admin else "guest"
    return f"{role} {user.username}"


@router.post("/{vmid}/stop", status_code=202)
@require_scope(Scope.CONTAINERS_WRITE)
async def stop_dev(container: OwnedContainer, user: CurrentUser, svc: Svc) -> ContainerOut:
    """Stop it: its agent and code-server get SIGTERM, then a bounded wait, then a kill. Its
    disk stays; it uses no memory and is not polled until started. 409 unless it is ready,
    unreachable or failed."""
    stopping = await svc.lifecycle.stop(
        container.vmid, actor=user.username, reason=f"stopped by {_by(user, container)}"
    )
    return svc.lifecycle.out(stopping)


@router.post("/{vmid}/start", status_code=202)
@require_scope(Scope.CONTAINERS_WRITE)
async def start_dev(container: UsableContainer, user: CurrentUser, svc: Svc) -> ContainerOut:
    """Start a stopped container; it is ready again once its agent has restored its runtime
    and add-ons (follow ``/api/dev/{vmid}/events``). 409 unless stopped; 429 when its owner
    already runs ``max_running_per_user`` containers. A user it is shared with to use may
    start it too (opening its IDE does)."""
    starting = await svc.lifecycle.start(
        container.vmid, actor=user.username, reason=f"started by {_by(user, container)}"
    )
    return svc.lifecycle.out(starting, viewer=user)


@router.post("/{vmid}/restart", status_code=202)
@require_scope(Scope.CONTAINERS_WRITE)
async def restart_dev(container: OwnedContainer, user: CurrentUser, svc: Svc) -> ContainerOut:
    """Stop, then start. 409 unless it is ready, unreachable or failed."""
    stopping = await svc.lifecycle.restart(
        container.vmid, actor=user.username, reason=f"restarted by {_by(user, container)}"
    )
    return svc.lifecycle.out(stopping)


@router.post("/{vmid}/rebuild", status_code=202)
@require_scope(Scope.CONTAINERS_WRITE)
async def rebuild_dev(container: OwnedContainer, user: CurrentUser, svc: Svc) -> ContainerOut:
    """A fresh system from the current template and catalog pins, same vmid and URL, keeping
    ``/home/dev`` (workspace, dotfiles, code-server settings and extensions): how a container
    gets a fixed template or a new code-server. Anything installed outside the home is gone.
    409 unless it is ready, unreachable, failed or stopped."""
    rebuilding = await svc.lifecycle.rebuild(
        container.vmid, actor=user.username, reason=f"rebuilt by {_by(user, container)}"
    )
    return svc.lifecycle.out(rebuilding)
