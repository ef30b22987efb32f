"""The platform's public front (``zlh.proxy``): a raw asyncio listener, not an ASGI app.

It serves ``/dev/{vmid}/ide/...`` itself (JWT session, ownership, readiness, then a streamed
HTTP relay or a spliced WebSocket to the container's code-server) and relays everything else to
the API app. It learns routes and revocations through :class:`RouteTable`, which
:func:`zlh.proxy.feed.follow` keeps equal to the API's route feed. Wiring, on the API's loop::

    routes = RouteTable()
    front = Front(
        ProxySettings(public_origin="https://zlh.example.com"),
        routes,
        JwtAuthenticator(signing_key, issuer="zlh"),
        "unix:/run/zlh/api.sock",
    )
    follower = asyncio.create_task(follow(feed, routes))   # zlh.proxy.feed
    await front.start("0.0.0.0", 8780)
    ...
    follower.cancel()
    await front.close()
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
