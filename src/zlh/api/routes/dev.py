"""``/api/dev``: dev requests, the caller's containers, one container, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from zlh.api.bodies import ContainerOut, DevRequest
from zlh.api.containers import container_out
from zlh.api.deps import CurrentUser, OwnedContainer, Svc
from zlh.api.routes import ERRORS

router = APIRouter(prefix="/api/dev", tags=["dev"], responses=ERRORS)


@router.post("", status_code=202)
async def request_dev(body: DevRequest, user: CurrentUser, svc: Svc) -> ContainerOut:
    """Ask for a dev container. Checked against the catalog (422 names what is unknown);
    the answer is the recorded container, which then provisions in the background
    (follow it at ``/api/dev/{vmid}/events``)."""
    container = await svc.provisioning.request(user, body)
    return container_out(container, admin_ide_access=svc.settings.admin_ide_access)


@router.get("")
def list_dev(
    user: CurrentUser,
    svc: Svc,
    owner: Annotated[
        str | None, Query(max_length=64, description="admins: only this user's containers")
    ] = None,
) -> list[ContainerOut]:
    """The caller's containers; an admin sees everybody's (or ``owner``'s)."""
    if user.is_admin:
        containers = svc.registry.list_for(None, owner_name=owner)
    else:
        containers = [
            c for c in svc.registry.list_for(user.id) if owner is None or owner == user.username
        ]
    access = svc.settings.admin_ide_access
    return [container_out(c, admin_ide_access=access) for c in containers]


@router.get("/{vmid}")
def get_dev(container: OwnedContainer, svc: Svc) -> ContainerOut:
    """One container with the agent's last polled ``/status``."""
    return container_out(container, admin_ide_access=svc.settings.admin_ide_access)


@router.delete("/{vmid}", status_code=204)
async def delete_dev(container: OwnedContainer, user: CurrentUser, svc: Svc) -> Response:
    """Destroy the container and forget it."""
    await svc.provisioning.delete(container.vmid, user.username)
    return Response(status_code=204)
