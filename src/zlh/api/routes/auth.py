"""``/api/auth``: login (token + cookie), logout (revokes the session), whoami, password change.

Login is throttled per (user name, client address) and per client address
(``zlh.api.ratelimit``): while an address backs off it gets 429 with ``Retry-After`` and the
password is not even checked, so guessing stops; the same user elsewhere is unaffected.
"""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Request, Response

from zlh.api import accounts
from zlh.api.apitokens import Scope
from zlh.api.audit import Action
from zlh.api.bodies import LoginRequest, LoginResponse, MeOut, PasswordChange
from zlh.api.deps import CurrentUser, Svc, client_address, require_scope
from zlh.api.errors import Forbidden, NotAuthenticated, RateLimited
from zlh.api.routes import ERRORS
from zlh.api.services import Services

router = APIRouter(prefix="/api/auth", tags=["auth"], responses=ERRORS)

# Strict, not Lax: the portal's pages are static and fetch everything with the cookie from
# their own origin, so a link from another site costs at most one extra sign-in page view,
# and no cross-site request ever carries the cookie (the Origin check of zlh.api.guard is the
# second line).
SAME_SITE: Final = "strict"


def _throttled(svc: Services, username: str, address: str) -> None:
    wait = svc.login_throttle.retry_after_s(username, address)
    if wait > 0:
        raise RateLimited(
            f"too many failed logins from {address}; try again in {wait:.0f}s",
            retry_after_s=wait,
        )


@router.post("/login")
def login(body: LoginRequest, request: Request, response: Response, svc: Svc) -> LoginResponse:
    """Exchange user name and password for a session token (also set as an HttpOnly cookie)."""
    address = client_address(request)
    _throttled(svc, body.username, address)
    user = accounts.authenticate(svc.db, body.username, body.password)
    if user is None:
        svc.metrics.login_failures.inc()
        svc.login_throttle.failed(body.username, address)
        svc.audit.record(body.username, Action.LOGIN_FAILED, detail="wrong password or user name")
        raise NotAuthenticated("invalid user name or password")
    svc.login_throttle.succeeded(body.username, address)
    issued = svc.tokens.issue(user)
    svc.audit.record(user.username, Action.LOGIN)  # the address has its own column
    response.set_cookie(
        svc.settings.session_cookie_name,
        issued.token,
        max_age=svc.settings.session_ttl_s,
        path="/",
        httponly=True,
        samesite=SAME_SITE,
        secure=svc.settings.session_cookie_secure,
    )
    return LoginResponse(token=issued.token, expires_at=issued.expires_at)


@router.post("/logout", status_code=204)
def logout(user: CurrentUser, request: Request, response: Response, svc: Svc) -> None:
    """End this session: its token stops working at once, here and at the front."""
    sid: str = request.state.sid
    svc.tokens.revoke(sid)
    svc.registry.call_on_loop(lambda: svc.feed.revoke([sid]))
    svc.audit.record(user.username, Action.LOGOUT)
    response.delete_cookie(
        svc.settings.session_cookie_name,
        path="/",
        httponly=True,
        samesite=SAME_SITE,
        secure=svc.settings.session_cookie_secure,
    )


@router.post("/password", status_code=204)
def change_password(body: PasswordChange, user: CurrentUser, request: Request, svc: Svc) -> None:
    """Change the caller's password (the current one is required): every other session of the
    caller ends at once, here and at the front; this one stays. 403 for a wrong current
    password (throttled like a failed login), 422 for a new one that is too short."""
    address = client_address(request)
    _throttled(svc, user.username, address)
    sid: str = request.state.sid
    try:
        revoked = accounts.change_password(svc.db, user.id, body.current, body.new, keep=sid)
    except Forbidden:
        svc.metrics.login_failures.inc()
        svc.login_throttle.failed(user.username, address)
        raise
    svc.registry.call_on_loop(lambda: svc.feed.revoke(revoked))
    detail = f"ended {len(revoked)} other session(s)"
    svc.audit.record(user.username, Action.PASSWORD, detail=detail)


@router.get("/me")
@require_scope(Scope.CONTAINERS_READ)
def me(user: CurrentUser, svc: Svc) -> MeOut:
    """The logged-in user, with the containers they hold and run, and may hold and run."""
    held, running = svc.registry.counts(user.id)
    return MeOut(
        id=user.id,
        username=user.username,
        is_admin=user.is_admin,
        disabled=user.disabled,
        containers_held=held,
        container_limit=svc.settings.max_containers_per_user,
        containers_running=running,
        running_limit=svc.settings.max_running_per_user,
    )
