"""Port previews: ``GET /api/dev/{vmid}/ports`` and ``PUT``/``DELETE
/api/dev/{vmid}/previews/{port}/public``.

The ports come from the container's agent (``GET /ports``: listening TCP sockets, the
platform's own left out), each with its preview's URLs in both modes on the IDE origin
(zlh.proxy.previews). A preview is private (its owner's, like the IDE) unless the owner makes
it public: then the front serves it to anyone, signed in or not, until it is made private
again, which closes its visitors' WebSockets at once. Owner (or admin) only, as every vmid
route, except that only the owner makes a preview public; each change is audited.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from zlh.api.apitokens import Scope
from zlh.api.audit import Action
from zlh.api.bodies import Preview, Previews
from zlh.api.db import Container, ContainerState
from zlh.api.deps import CurrentUser, OwnedContainer, Svc, UsableContainer, require_scope
from zlh.api.errors import InvalidRequest, NotFound
from zlh.api.routes import ERRORS
from zlh.api.routes.ide import request_ide_origin
from zlh.proxy.ideorigin import IdeOrigin
from zlh.proxy.previews import is_previewable, refusal

__all__ = ["router"]

router = APIRouter(prefix="/api/dev", tags=["dev"], responses=ERRORS)

PortParam = Annotated[int, Path(description="a port of the container, 1024..65535")]


@router.get("/{vmid}/ports")
@require_scope(Scope.CONTAINERS_READ)
async def ports(container: UsableContainer, request: Request, svc: Svc) -> Previews:
    """The ports listening in the container (asked of its agent now) and the public ones, with
    their preview URLs. A container that is not ready lists its public ports only. Users it is
    shared with to use see them too (and may open the previews)."""
    origin = request_ide_origin(request, svc)
    public = container.public_ports
    url = container.agent_url
    if container.state != ContainerState.READY or url is None:
        return Previews(running=False, previews=[_preview(origin, container, p) for p in public])
    found = await svc.agents.ports(
        url, svc.provisioning.secret(container), timeout_s=svc.settings.agent_request_timeout_s
    )
    listening = {
        p.port: p.address
        for p in found.ports
        if is_previewable(p.port, container.code_server_port or 0)
    }
    every = sorted(listening.keys() | public)
    return Previews(
        running=True,
        previews=[_preview(origin, container, p, listening.get(p)) for p in every],
    )


@router.put("/{vmid}/previews/{port}/public")
@require_scope(Scope.CONTAINERS_WRITE)
async def make_public(
    container: OwnedContainer, user: CurrentUser, request: Request, svc: Svc, port: PortParam
) -> Preview:
    """Serve this port's preview to anyone, signed in or not (never so by default). The
    owner's decision alone: an admin gets the 404 of any other user."""
    if container.owner_id != user.id:
        raise NotFound(f"no container {container.vmid}")
    return await _set_public(container, user.username, request, svc, port, True)


@router.delete("/{vmid}/previews/{port}/public", status_code=204)
@require_scope(Scope.CONTAINERS_WRITE)
async def make_private(
    container: OwnedContainer, user: CurrentUser, request: Request, svc: Svc, port: PortParam
) -> Response:
    """Its owner's only again: its URL answers 404 to others and their WebSockets close (an
    admin may do this too, to take a preview down)."""
    await _set_public(container, user.username, request, svc, port, False)
    return Response(status_code=204)


async def _set_public(
    container: Container, actor: str, request: Request, svc: Svc, port: int, public: bool
) -> Preview:
    if not is_previewable(port, container.code_server_port or 0):
        raise InvalidRequest(refusal(port), field="port")
    origin = request_ide_origin(request, svc)
    vmid = container.vmid
    changed = await asyncio.to_thread(svc.registry.set_public, vmid, port, public)
    if changed is None:
        raise NotFound(f"no container {vmid}")
    action = Action.PREVIEW_PUBLIC if public else Action.PREVIEW_PRIVATE
    await asyncio.to_thread(svc.audit.record, actor, action, vmid, f"port {port}")
    return _preview(origin, changed, port)


def _preview(
    origin: IdeOrigin, container: Container, port: int, address: str | None = None
) -> Preview:
    url, url_keep_prefix = origin.preview_urls(container.vmid, port)
    return Preview(
        port=port,
        listening=address is not None,
        address=address,
        reachable=address is not None and not ipaddress.ip_address(address).is_loopback,
        public=port in container.public_ports,
        url=url,
        url_keep_prefix=url_keep_prefix,
    )
