"""Request dependencies: the caller (cookie or Bearer) and the one ownership check.

Every ``/api/dev/{vmid}…`` route takes :data:`OwnedContainer`, :data:`UsableContainer` or
:data:`VisibleContainer`: 401 without a valid session, 404 when the vmid does not exist *or*
the caller may not reach it (admins pass; users it is shared with pass where their role
allows), so nobody else can tell the two apart.

A caller is a session (the portal's cookie, or its JWT as ``Authorization: Bearer``), which
may do whatever its user may, or an API token (``zlh.api.apitokens``), which may use only the
routes that declare the scope it needs with :func:`require_scope`, and only with that scope.
A route that declares none refuses every token (403): new routes fail closed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final, TypeVar

from fastapi import Depends, Path, Request
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection

from zlh.api.apitokens import Scope, TokenUse, is_api_token
from zlh.api.audit import request_credential
from zlh.api.clientaddr import UNKNOWN
from zlh.api.db import Container, ShareRole, User
from zlh.api.errors import Forbidden, NotAuthenticated, NotFound
from zlh.api.services import Services
from zlh.schemas.payload import MAX_VMID, MIN_VMID

__all__ = [
    "AdminUser",
    "Caller",
    "CurrentUser",
    "OwnedContainer",
    "Svc",
    "UsableContainer",
    "VisibleContainer",
    "authenticate",
    "bearer_token",
    "client_address",
    "container_for",
    "current_user",
    "declared_scope",
    "owned_container",
    "require_scope",
]

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
_SCOPE_ATTR: Final = "zlh_token_scope"


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


Svc = Annotated[Services, Depends(services)]


def bearer_token(headers: Headers) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def session_token(conn: HTTPConnection, svc: Services) -> str | None:
    """``Authorization: Bearer``, else the portal's cookie. Never a query parameter.

    Bearer first: a request that carries one is judged by it alone, which is what exempts it
    from the Origin check of cookie-authenticated requests (``zlh.api.guard``).
    """
    return bearer_token(conn.headers) or conn.cookies.get(svc.settings.session_cookie_name)


def require_scope(scope: Scope) -> Callable[[Endpoint], Endpoint]:
    """Declare (below the route decorator) the scope an API token needs for this route::

        @router.get("/metrics")
        @require_scope(Scope.METRICS)
        def metrics(admin: AdminUser, ...) -> ...:  # an admin's session, or a metrics token

    (only admins may make a token with ``admin`` or ``metrics``, and ``AdminUser`` still
    checks that the token's user is one)."""

    def declare(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, _SCOPE_ATTR, scope)
        return endpoint

    return declare


def declared_scope(route: object) -> Scope | None:
    """The scope ``route`` (a matched ``scope["route"]``) declared; None: tokens refused."""
    scope: Scope | None = getattr(getattr(route, "endpoint", None), _SCOPE_ATTR, None)
    return scope


@dataclass(frozen=True)
class Caller:
    user: User
    sid: str | None  # the session's id; None for an API token
    token: TokenUse | None  # the API token, if that is what it was


def authenticate(conn: HTTPConnection, svc: Services) -> Caller:
    """The session or API token of this request (401 naming what is wrong with it), held to
    the matched route's declared scope (403 naming it). Blocking: database reads."""
    credential = session_token(conn, svc)
    if credential is None:
        raise NotAuthenticated("not logged in: send the session cookie or a Bearer token")
    if not is_api_token(credential):
        user, sid = svc.tokens.verify(credential)
        return Caller(user, sid, None)
    method = conn.scope.get("method", "WEBSOCKET")
    use = svc.api_tokens.verify(credential, f"{method} {conn.url.path}")
    noted = request_credential.get()
    if noted is not None:
        noted.via = use.via
    scope = declared_scope(conn.scope.get("route"))
    if scope is None:
        raise Forbidden(
            f"API tokens are not accepted for {method} {conn.url.path}: use a signed-in session",
            reason="token-refused",
        )
    if scope not in use.scopes:
        raise Forbidden(f"this API token lacks the {scope} scope", reason="missing-scope")
    return Caller(use.user, None, use)


def current_user(request: Request, svc: Svc) -> User:
    caller = authenticate(request, svc)
    request.state.sid = caller.sid
    return caller.user


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
    roles on it; else NotFound, whether or not it exists. A warm-pool container is nobody's
    (admins see it in their listing only)."""
    container = svc.registry.get(vmid)
    if (
        container is None
        or container.pool
        or not (
            container.owner_id == user.id or user.is_admin or container.role_of(user.id) in shared
        )
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
