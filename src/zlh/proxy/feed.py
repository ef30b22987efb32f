"""Keeps a :class:`RouteTable` equal to the API's route feed (``zlh.routefeed``).

The API owns the truth (containers, owners, addresses, readiness, revoked sessions) and
publishes it as a snapshot plus a stream of changes; :func:`follow` subscribes first, applies
the snapshot, then every change in order, and starts over from a new snapshot when the feed
says it fell behind (``Resync``). Run it as a task next to the front for as long as it serves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from zlh import feedwire, routefeed
from zlh.proxy.routes import Route, RouteTable

__all__ = ["follow", "follow_socket", "to_route"]

log = logging.getLogger(__name__)


def to_route(route: routefeed.FeedRoute) -> Route:
    ready = route.ready and route.code_server_port is not None
    return Route(
        owner_id=str(route.owner_id),
        guests=frozenset(str(g) for g in route.guest_ids),
        host=route.address or "",
        port=route.code_server_port or 0,
        ready=ready,
        reason="" if ready else (route.reason or "code-server has no port yet"),
        stopped=route.state == "stopped",
        public_ports=route.public_ports,
        running=route.state == "ready" and bool(route.address),
    )


async def follow(feed: routefeed.RouteFeed, routes: RouteTable) -> None:
    """Apply ``feed`` to ``routes`` until cancelled."""
    while True:
        async with feed.subscribe() as changes:
            snapshot = feed.snapshot()
            _apply_snapshot(snapshot, routes)
            while _apply(await changes.get(), routes):
                pass
            log.warning("route feed: fell behind, taking a new snapshot")


async def follow_socket(
    reader: asyncio.StreamReader,
    routes: RouteTable,
    *,
    on_snapshot: Callable[[], None],
    on_drain: Callable[[], None],
) -> None:
    """Apply the feed a front worker reads from the API's feed socket (zlh.feedwire) to
    ``routes`` until the API closes it; ``on_snapshot`` after each snapshot (the first one
    means the worker knows every route), ``on_drain`` when the API asks it to drain."""
    async for received in feedwire.read_feed(reader):
        if isinstance(received, routefeed.FeedSnapshot):
            _apply_snapshot(received, routes)
            on_snapshot()
        elif received == feedwire.DRAIN:
            on_drain()
        elif not isinstance(received, str):
            _apply(received, routes)


def _apply_snapshot(snapshot: routefeed.FeedSnapshot, routes: RouteTable) -> None:
    routes.replace_all(
        {vmid: to_route(r) for vmid, r in snapshot.routes.items()}, snapshot.revoked_sessions
    )


def _apply(event: routefeed.FeedEvent, routes: RouteTable) -> bool:
    """Apply one change; False for a Resync (take a new snapshot)."""
    if isinstance(event, routefeed.RouteSet):
        routes.update(event.route.vmid, to_route(event.route))
    elif isinstance(event, routefeed.RouteRemoved):
        routes.remove(event.vmid)
    elif isinstance(event, routefeed.SessionRevoked):
        routes.revoke_session(event.sid)
    else:
        return False
    return True
