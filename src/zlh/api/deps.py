"""Request dependencies: the caller (cookie or Bearer) and the one ownership check.

Every ``/api/dev/{vmid}…`` route takes :data:`OwnedContainer`, :data:`UsableContainer` or
:data:`VisibleContainer`: 401 without a valid session, 404 when the vmid does not exist *or*
the caller may not reach it (admins pass; users it is shared with pass where their role
allows), so nobody else can tell the two apart.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import Depends, Path, Request
from starlette.datastructures import Headers

from zlh.api.clientaddr import UNKNOWN
from zlh.api.db import Container, ShareRole, User
from zlh.api.errors import Forbidden, NotAuthenticated, NotFound
from zlh.api.services import Services
from zlh.schemas.payload import MAX_VMID, MIN_VMID

__all__ = [
    "AdminUser",
    "CurrentUser",
    "OwnedContainer",
    "Svc",
    "UsableContainer",
    "VisibleContainer",
    "bearer_token",
    "client_address",
    "container_for",
    "current_user",
    "owned_container",
]


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


Svc = Annotated[Services, Depends(services)]


def bearer_token(headers: Headers) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def session_token(request: Request, svc: Services) -> str | None:
    """``Authorization: Bearer``, else the portal's cookie. Never a query parameter.

    Bearer first: a request that carries one is judged by it alone, which is what exempts it
    from the Origin check of cookie-authenticated requests (``zlh.api.guard``).
    """
    return bearer_token(request.headers) or request.cookies.get(svc.settings.session_cookie_name)


def current_user(request: Request, svc: Svc) -> User:
    token = session_token(request, svc)
    if token is None:
        raise NotAuthenticated("not logged in: send the session cookie or a Bearer token")
    user, sid = svc.tokens.verify(token)
    request.state.sid = sid
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def admin_user(user: CurrentUser) -> User:
    if not user.is_admin:
        raise Forbidden("only administrators may do this")
    return user


AdminUser = Annotated[User, Depends(admin_user)]


# Who, besides its owner and admins, may use a container (IDE, console, files, start) and who
# may see it.
USERS: Final = frozenset({ShareRole.USE})
VIEWERS: Final = frozenset({ShareRole.USE, ShareRole.VIEW})

VmidPath = Annotated[
    int,
    Path(
        ge=MIN_VMID,
        le=MAX_VMID,
        description="the container's vmid",
        # The first container's: generated clients and schemathesis reach a real one.
        examples=[MIN_VMID],
    ),
]


def container_for(
    vmid: int, user: User, svc: Services, *, shared: frozenset[ShareRole] = frozenset()
) -> Container:
    """Container ``vmid`` if ``user`` owns it, is an admin, or holds one of the ``shared``
    roles on it; else NotFound, whether or not it exists."""
    container = svc.registry.get(vmid)
    if container is None or not (
        container.owner_id == user.id or user.is_admin or container.role_of(user.id) in shared
    ):
        raise NotFound(f"no container {vmid}")
    return container


def owned_container(vmid: VmidPath, user: CurrentUser, svc: Svc) -> Container:
    return container_for(vmid, user, svc)


def usable_container(vmid: VmidPath, user: CurrentUser, svc: Svc) -> Container:
    return container_for(vmid, user, svc, shared=USERS)


def visible_container(vmid: VmidPath, user: CurrentUser, svc: Svc) -> Container:
    return container_for(vmid, user, svc, shared=VIEWERS)


# Its owner or an admin: everything that changes it or its shares.
OwnedContainer = Annotated[Container, Depends(owned_container)]
# Also a user it is shared with to use: the IDE, the console, the files, a start.
UsableContainer = Annotated[Container, Depends(usable_container)]
# Also a user it is shared with to view: its status and events.
VisibleContainer = Annotated[Container, Depends(visible_container)]


def client_address(request: Request) -> str:
    """The caller's address as ``zlh.api.guard`` resolved it (trusted proxies honoured)."""
    address: str = getattr(request.state, "client_address", UNKNOWN)
    return address
