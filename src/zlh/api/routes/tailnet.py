"""``/api/dev/{vmid}/tailnet``: the owner's key for joining their own machine to the tailnet.

The first ``GET`` after the key was made answers it (``authKey`` and a ready ``joinCommand``);
every later ``GET`` answers the login server, the hostname, the expiry and a masked hint, with
``authKey: null`` and a note saying how to get a new key. ``POST …/regenerate`` expires the
old key in Headscale and answers a new one, once. Both are owner-only (404 for anybody else,
like every ``/api/dev/{vmid}`` route) and audited. The container's own key is never answered.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from zlh.api.audit import Action
from zlh.api.db import Container
from zlh.api.deps import CurrentUser, OwnedContainer, Svc
from zlh.api.errors import Conflict, NotFound
from zlh.api.routes import ERRORS
from zlh.api.tailnet.service import Tailnet, TailnetInfo
from zlh.schemas import tailnet_addon

router = APIRouter(prefix="/api/dev", tags=["tailnet"], responses={**ERRORS, 409: ERRORS[404]})

NO_STORE = {"Cache-Control": "no-store"}


def tailnet_service(request: Request) -> Tailnet:
    tailnet: Tailnet | None = getattr(request.app.state, "tailnet", None)
    if tailnet is None or not tailnet.enabled:
        raise NotFound("the tailnet is not enabled on this platform")
    return tailnet


TailnetDep = Annotated[Tailnet, Depends(tailnet_service)]


def _missing(container: Container) -> Exception:
    if tailnet_addon(container.addons) is None:
        return NotFound(f"container {container.vmid} was not requested with the tailscale addon")
    return Conflict(
        f"the tailnet keys of container {container.vmid} are not made yet: try again once it "
        "provisions"
    )


def _tailnet_ip(container: Container) -> str | None:
    status = container.status
    return status.tailscale_ip if status is not None else None


@router.get("/{vmid}/tailnet")
async def get_tailnet(
    container: OwnedContainer,
    user: CurrentUser,
    svc: Svc,
    tailnet: TailnetDep,
    response: Response,
) -> TailnetInfo:
    """How to join your own machine. ``authKey`` is in the first answer only; afterwards
    regenerate for a new key."""
    info = await tailnet.reveal(container.vmid, container_ip=_tailnet_ip(container))
    if info is None:
        raise _missing(container)
    shown = "key shown" if info.auth_key is not None else "key not shown (shown before)"
    await asyncio.to_thread(
        svc.audit.record, user.username, Action.TAILNET_VIEW, container.vmid, shown
    )
    response.headers.update(NO_STORE)
    return info


@router.post("/{vmid}/tailnet/regenerate")
async def regenerate_tailnet(
    container: OwnedContainer,
    user: CurrentUser,
    svc: Svc,
    tailnet: TailnetDep,
    response: Response,
) -> TailnetInfo:
    """Expire the customer key and answer a new one (shown in this answer only). Machines
    that already joined stay joined."""
    info = await tailnet.regenerate(container.vmid, container_ip=_tailnet_ip(container))
    if info is None:
        raise _missing(container)
    await asyncio.to_thread(
        svc.audit.record,
        user.username,
        Action.TAILNET_REGENERATE,
        container.vmid,
        f"new key {info.auth_key_hint}",
    )
    response.headers.update(NO_STORE)
    return info
