"""Request dependencies: the caller (cookie or Bearer) and the one ownership check.

Every ``/api/dev/{vmid}…`` route takes :data:`OwnedContainer`: 401 without a valid session,
404 when the vmid does not exist *or* belongs to someone else (admins pass), so a
non-owner cannot tell the two apart.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from starlette.datastructures import Headers

from zlh.api.clientaddr import UNKNOWN
from zlh.api.db import Container, User
from zlh.api.errors import Forbidden, NotAuthenticated, NotFound
from zlh.api.services import Services
from zlh.schemas.payload import MAX_VMID, MIN_VMID

__all__ = [
    "AdminUser",
    "CurrentUser",
    "OwnedContainer",
    "Svc",
    "bearer_token",
    "client_address",
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


def owned_container(
    vmid: Annotated[
        int,
        Path(
            ge=MIN_VMID,
            le=MAX_VMID,
            description="the container's vmid",
            # The first container's: generated clients and schemathesis reach a real one.
            examples=[MIN_VMID],
        ),
    ],
    user: CurrentUser,
    svc: Svc,
) -> Container:
    container = svc.registry.get(vmid)
    if container is None or (container.owner_id != user.id and not user.is_admin):
        raise NotFound(f"no container {vmid}")
    return container


OwnedContainer = Annotated[Container, Depends(owned_container)]


def client_address(request: Request) -> str:
    """The caller's address as ``zlh.api.guard`` resolved it (trusted proxies honoured)."""
    address: str = getattr(request.state, "client_address", UNKNOWN)
    return address
