"""The one narrow interface between the API and the public front (``zlh.proxy``).

It belongs to neither: the API (``zlh.api``) writes it, the front (``zlh.proxy.feed``) reads
it, and both import it from here, so the front never imports the control plane.

The front needs to know, for every request to ``/dev/<vmid>/ide/…`` (and its port previews):
who owns ``<vmid>``, where its code-server listens, whether it is ready, which ports' previews
are public, and whether the caller's session was revoked. It keeps that in memory and learns
it here:

- ``feed.snapshot()`` — every route and every revoked (still unexpired) session id, now;
- ``async with feed.subscribe() as changes:`` — then ``await changes.get()`` yields
  :class:`RouteSet`, :class:`RouteRemoved` and :class:`SessionRevoked`, in order, from the
  moment of subscribing (take the snapshot after subscribing to miss nothing).

Token checks stay on the front's side: ``zlh.api.auth.decode_token(key, token)`` verifies a
session token with the key file the API uses (``ApiSettings.jwt_key_path``); a session id in
the revoked set, or revoked later, is refused. Disabling a user revokes its sessions, and a
deleted container's route is removed, so both reach the front as events. Revocations made by
another process (``zlh user disable`` on the command line, another replica) are picked up by
the API's revocation sync every ``REVOCATION_SYNC_S``, and at once on PostgreSQL, where the
revoking transaction sends a NOTIFY (``zlh.api.notify``, ``zlh.api.follower``).

A subscriber that cannot keep up (its queue of ``QUEUE_SIZE`` fills) is closed: it gets a
:class:`Resync` and must take a new snapshot. The feed lives in the API's process; the front
runs in the same process tree and is handed the object by ``zlh up``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

__all__ = [
    "REVOCATION_SYNC_S",
    "FeedEvent",
    "FeedRoute",
    "FeedSnapshot",
    "Resync",
    "RouteFeed",
    "RouteRemoved",
    "RouteSet",
    "SessionRevoked",
]

QUEUE_SIZE = 10_000
REVOCATION_SYNC_S = 2.0


@dataclass(frozen=True, kw_only=True)
class FeedRoute:
    """A container's route as the API publishes it; the front turns it into its own
    :class:`zlh.proxy.Route` (zlh.proxy.feed)."""

    vmid: int
    owner_id: int
    # Users the owner shared it with to use (IDE, console, files) -- not those who may only view.
    guest_ids: frozenset[int] = frozenset()
    state: str  # zlh.api.db.ContainerState value
    address: str | None
    code_server_port: int | None
    code_server_running: bool
    # Ports whose preview the owner made public (``PUT /api/dev/{vmid}/previews/{port}/public``).
    public_ports: frozenset[int] = frozenset()

    @property
    def ready(self) -> bool:
        return self.state == "ready" and self.address is not None and self.code_server_running

    @property
    def reason(self) -> str:
        """Why it is not ready, for the front's 503 page ("" when ready)."""
        if self.ready:
            return ""
        if self.state == "ready":
            return "code-server is not running"
        return {
            "failed": "provisioning failed",
            "unreachable": "the container does not answer",
            "deleting": "the container is being deleted",
            "stopping": "the container is stopping",
            "stopped": "the container is stopped; open it from the portal to start it",
            "starting": "the container is starting",
            "rebuilding": "the container is being rebuilt",
        }.get(self.state, "still provisioning")


@dataclass(frozen=True)
class RouteSet:
    route: FeedRoute


@dataclass(frozen=True)
class RouteRemoved:
    vmid: int


@dataclass(frozen=True)
class SessionRevoked:
    sid: str


@dataclass(frozen=True)
class Resync:
    """The subscriber fell behind; take a new snapshot."""


FeedEvent = RouteSet | RouteRemoved | SessionRevoked | Resync


@dataclass(frozen=True)
class FeedSnapshot:
    routes: dict[int, FeedRoute]
    revoked_sessions: frozenset[str]


class RouteFeed:
    def __init__(self) -> None:
        self._routes: dict[int, FeedRoute] = {}
        self._revoked: set[str] = set()
        self._subscribers: set[asyncio.Queue[FeedEvent]] = set()

    def snapshot(self) -> FeedSnapshot:
        return FeedSnapshot(dict(self._routes), frozenset(self._revoked))

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[FeedEvent]]:
        queue: asyncio.Queue[FeedEvent] = asyncio.Queue(QUEUE_SIZE + 1)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    # -- written by the API -------------------------------------------------------------

    def set_route(self, route: FeedRoute) -> None:
        if self._routes.get(route.vmid) != route:
            self._routes[route.vmid] = route
            self._emit(RouteSet(route))

    def remove_route(self, vmid: int) -> None:
        if self._routes.pop(vmid, None) is not None:
            self._emit(RouteRemoved(vmid))

    def revoke(self, sids: list[str]) -> None:
        for sid in sids:
            if sid not in self._revoked:
                self._revoked.add(sid)
                self._emit(SessionRevoked(sid))

    def replace_revocations(self, sids: list[str]) -> None:
        """Adopt the database's set (expired sessions drop out; new ones are emitted)."""
        current = set(sids)
        self.revoke([sid for sid in sids if sid not in self._revoked])
        self._revoked &= current

    def _emit(self, event: FeedEvent) -> None:
        for queue in list(self._subscribers):
            if queue.qsize() >= QUEUE_SIZE:
                queue.put_nowait(Resync())
                self._subscribers.discard(queue)
            else:
                queue.put_nowait(event)
