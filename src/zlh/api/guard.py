"""Checks every HTTP request and WebSocket upgrade passes before any route, in one place.

1. The client's address (``zlh.api.clientaddr``, trusted proxies honoured) is resolved once and
   kept on the request (``request.state.client_address``) and in ``request_address`` for the
   audit log, beside a fresh ``request_credential`` that API-token authentication fills in.
2. Cross-site request forgery: a state-changing request (any method but GET/HEAD/OPTIONS, and
   every WebSocket upgrade) that carries the portal's session cookie must come from the
   platform's own pages: a same-origin ``Origin``, or without one ``Sec-Fetch-Site:
   same-origin``. A request with ``Authorization: Bearer`` is judged by its token alone
   (``deps.session_token``) and is exempt: a browser never adds that header for another site
   without CORS, which the API does not grant. A state-changing request whose ``Origin`` is
   another site is refused even without the cookie, so no other site can log a browser in to an
   account of its choosing either.

"Same origin" is ``front.public_origin``, or the request's own ``Host`` (which the front passes
on as the browser sent it) with http or https: the front's WebSocket check, applied here to the
API. Refusals are 403 with the error envelope.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import WebSocket
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from zlh.api.audit import Credential, request_credential
from zlh.api.clientaddr import Network, request_address, resolve_client
from zlh.api.deps import bearer_token
from zlh.api.errors import Forbidden
from zlh.api.responses import deny_websocket, error_json
from zlh.api.settings import ApiSettings

__all__ = ["RequestGuard", "cross_site_problem"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _same_origin(origin: str, host: str | None, public_origin: str | None) -> bool:
    origin = origin.strip().lower()
    if public_origin is not None and origin == public_origin:
        return True
    parts = urlsplit(origin)
    return (
        parts.scheme in ("http", "https")
        and host is not None
        and parts.netloc == host.strip().lower()
        and f"{parts.scheme}://{parts.netloc}" == origin
    )


def cross_site_problem(
    conn: HTTPConnection, *, cookie_name: str, public_origin: str | None
) -> str | None:
    """Why this request must be refused as possibly forged by another site, or None."""
    what = "WebSocket upgrade" if conn.scope["type"] == "websocket" else conn.scope["method"]
    if what in SAFE_METHODS or bearer_token(conn.headers) is not None:
        return None
    origin = conn.headers.get("origin")
    if origin is not None:
        if _same_origin(origin, conn.headers.get("host"), public_origin):
            return None
        return (
            f"cross-origin {what} refused: Origin {origin[:100]} is not this site's; "
            "API clients authenticate with Authorization: Bearer"
        )
    if cookie_name not in conn.cookies or conn.headers.get("sec-fetch-site") == "same-origin":
        return None
    return (
        f"{what} with the session cookie refused: it carries no Origin (nor Sec-Fetch-Site: "
        "same-origin) to show it comes from this site; API clients use Authorization: Bearer"
    )


class RequestGuard:
    """Pure ASGI middleware (it sees WebSocket upgrades too, unlike a route dependency)."""

    def __init__(self, app: ASGIApp, *, settings: ApiSettings) -> None:
        self.app = app
        self.cookie_name = settings.session_cookie_name
        self.public_origin = settings.front.public_origin
        self.trusted: tuple[Network, ...] = settings.trusted_networks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        peer = conn.client.host if conn.client is not None and conn.client.host else None
        address = resolve_client(peer, conn.headers.getlist("x-forwarded-for"), self.trusted)
        scope.setdefault("state", {})["client_address"] = address
        token = request_address.set(address)
        credential = request_credential.set(Credential())
        try:
            problem = cross_site_problem(
                conn, cookie_name=self.cookie_name, public_origin=self.public_origin
            )
            if problem is None:
                await self.app(scope, receive, send)
                return
            refusal = Forbidden(problem, reason="cross-origin")
            if scope["type"] == "websocket":
                await deny_websocket(WebSocket(scope, receive, send), refusal)
            else:
                await error_json(refusal)(scope, receive, send)
        finally:
            request_credential.reset(credential)
            request_address.reset(token)
