"""``/api/dev/{vmid}/shares``: who else may use or view a container.

Its owner (or an admin) shares it and takes shares back; a user it is shared with may drop
their own share (``DELETE …/shares/{their name}``). See ``zlh.api.shares``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from zlh.api.apitokens import Scope
from zlh.api.bodies import ContainerOut, ShareOut, ShareRequest
from zlh.api.containers import share_out
from zlh.api.deps import CurrentUser, OwnedContainer, Svc, VisibleContainer, require_scope
from zlh.api.errors import NotFound
from zlh.api.routes import ERRORS

router = APIRouter(prefix="/api/dev", tags=["shares"], responses=ERRORS)

UserPath = Annotated[str, Path(min_length=1, max_length=64, description="the user's name")]


@router.get("/{vmid}/shares")
@require_scope(Scope.CONTAINERS_READ)
def list_shares(container: OwnedContainer) -> list[ShareOut]:
    """The users it is shared with, oldest first."""
    return [share_out(s) for s in container.shares]


@router.post("/{vmid}/shares", status_code=201)
@require_scope(Scope.CONTAINERS_WRITE)
async def share(
    body: ShareRequest, container: OwnedContainer, user: CurrentUser, svc: Svc, response: Response
) -> ContainerOut:
    """Share it with ``user`` as ``use`` (the IDE, the console, the files, starting it) or
    ``view`` (its status). 201 for a new share, 200 when it changes the role of one (taking
    ``use`` away closes that user's IDE and console at once). 422 for an unknown or disabled
    user, or its owner."""
    changed, created = await svc.shares.grant(container, user, body.user, body.role)
    response.status_code = 201 if created else 200
    return svc.lifecycle.out(changed, viewer=user)


@router.delete("/{vmid}/shares/{username}", status_code=204)
@require_scope(Scope.CONTAINERS_WRITE)
async def unshare(
    username: UserPath, container: VisibleContainer, user: CurrentUser, svc: Svc
) -> Response:
    """Take the share of ``username`` back: their open IDE and console close within seconds.
    Its owner and admins may; a user it is shared with may drop only their own. 404 if it is
    not shared with ``username``."""
    if container.role_of(user.id) is not None and username != user.username:
        raise NotFound(f"container {container.vmid} is not shared with {username!r}")
    await svc.shares.revoke(container, user, username)
    return Response(status_code=204)
