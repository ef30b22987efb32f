"""The platform's public front (``zlh.proxy``): a raw asyncio listener, not an ASGI app.

It serves ``/dev/{vmid}/ide/...`` itself (JWT session, ownership, readiness, then a streamed
HTTP relay or a spliced WebSocket to the container's code-server) and relays everything else to
the API app. The API keeps it informed through :class:`RouteTable`. Wiring::

    routes = RouteTable()
    front = Front(ProxySettings(public_origin="https://zlh.example.com"), routes,
                  JwtAuthenticator(signing_key), "unix:/run/zlh/api.sock")
    await front.start("0.0.0.0", 8780)
    routes.update(100, Route(owner_id="7", host="10.0.3.100", port=6000, ready=True))
    routes.revoke_session(sid, expires_at=exp)          # on logout
"""

from zlh.proxy.auth import Authenticator, JwtAuthenticator, Principal
from zlh.proxy.front import Front
from zlh.proxy.pool import UpstreamAddress
from zlh.proxy.routes import Route, RouteTable
from zlh.proxy.settings import ProxySettings

__all__ = [
    "Authenticator",
    "Front",
    "JwtAuthenticator",
    "Principal",
    "ProxySettings",
    "Route",
    "RouteTable",
    "UpstreamAddress",
]
