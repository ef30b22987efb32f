"""The platform's public front (``zlh.proxy``): a raw asyncio listener, not an ASGI app.

It serves the IDEs itself, on an origin of their own (``ide_origin``: IDE cookie from a one-time
ticket, ownership, readiness, then a streamed HTTP relay or a spliced WebSocket to the
container's code-server) and relays everything else to the API app. It learns routes and
revocations through :class:`RouteTable`, which :func:`zlh.proxy.feed.follow` keeps equal to the
API's route feed. Wiring, on the API's loop::

    routes = RouteTable()
    front = Front(
        ProxySettings(public_origin="https://zlh.example.com"),
        routes,
        JwtAuthenticator(signing_key, issuer="zlh"),
        "unix:/run/zlh/api.sock",
        tickets=TicketDesk(signing_key, issuer="zlh"),       # zlh.proxy.tickets
    )
    follower = asyncio.create_task(follow(feed, routes))   # zlh.proxy.feed
    await front.start("0.0.0.0", 8780)                      # the portal's origin
    await front.start_ide("0.0.0.0", 8781)                  # the IDE origin, as a second port
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
