"""``/api/auth``: login (token + cookie), logout (revokes the session), whoami."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from zlh.api import accounts
from zlh.api.audit import Action
from zlh.api.deps import CurrentUser, Svc, client_address
from zlh.api.errors import NotAuthenticated, RateLimited
from zlh.api.models import LoginRequest, LoginResponse, UserOut
from zlh.api.routes import ERRORS

router = APIRouter(prefix="/api/auth", tags=["auth"], responses=ERRORS)


def _secure(request: Request, svc: Svc) -> bool:
    if svc.settings.cookie_secure is not None:
        return svc.settings.cookie_secure
    proto = request.headers.get("x-forwarded-proto", request.url.scheme)
    return proto.split(",")[0].strip() == "https"


@router.post("/login")
def login(body: LoginRequest, request: Request, response: Response, svc: Svc) -> LoginResponse:
    """Exchange user name and password for a session token (also set as an HttpOnly cookie)."""
    user_key = body.username.lower()
    address = client_address(request)
    wait = max(svc.user_limiter.retry_after_s(user_key), svc.address_limiter.retry_after_s(address))
    if wait > 0:
        raise RateLimited(f"too many failed logins; try again in {wait:.0f}s", retry_after_s=wait)
    user = accounts.authenticate(svc.db, body.username, body.password)
    if user is None:
        svc.user_limiter.fail(user_key)
        svc.address_limiter.fail(address)
        raise NotAuthenticated("invalid user name or password")
    svc.user_limiter.reset(user_key)
    issued = svc.tokens.issue(user)
    svc.audit.record(user.username, Action.LOGIN, detail=f"from {address}")
    response.set_cookie(
        svc.settings.cookie_name,
        issued.token,
        max_age=svc.settings.session_ttl_s,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request, svc),
    )
    return LoginResponse(token=issued.token, expires_at=issued.expires_at)


@router.post("/logout", status_code=204)
def logout(user: CurrentUser, request: Request, response: Response, svc: Svc) -> None:
    """End this session: its token stops working at once, here and at the front."""
    sid: str = request.state.sid
    svc.tokens.revoke(sid)
    svc.registry.call_on_loop(lambda: svc.feed.revoke([sid]))
    svc.audit.record(user.username, Action.LOGOUT)
    response.delete_cookie(svc.settings.cookie_name, path="/", httponly=True, samesite="strict")


@router.get("/me")
def me(user: CurrentUser) -> UserOut:
    """The logged-in user."""
    return UserOut(
        id=user.id, username=user.username, is_admin=user.is_admin, disabled=user.disabled
    )
