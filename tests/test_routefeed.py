"""The route feed the front reads: snapshot, ordered changes, revocations, resync."""

from __future__ import annotations

import asyncio

from zlh import routefeed
from zlh.routefeed import (
    FeedRoute,
    Resync,
    RouteFeed,
    RouteRemoved,
    RouteSet,
    SessionRevoked,
)


def route(vmid: int, state: str = "ready", running: bool = True) -> FeedRoute:
    return FeedRoute(
        vmid=vmid,
        owner_id=1,
        state=state,
        address="10.0.3.5",
        code_server_port=6000,
        code_server_running=running,
    )


def test_changes_arrive_in_order_after_subscribing() -> None:
    async def scenario() -> list[object]:
        feed = RouteFeed()
        feed.set_route(route(100, "provisioning"))
        async with feed.subscribe() as changes:
            feed.set_route(route(100, "provisioning"))  # no change: not emitted
            feed.set_route(route(100))
            feed.revoke(["sid-1", "sid-1"])
            feed.remove_route(100)
            feed.remove_route(100)  # already gone: not emitted
            return [changes.get_nowait() for _ in range(changes.qsize())]

    assert asyncio.run(scenario()) == [
        RouteSet(route(100)),
        SessionRevoked("sid-1"),
        RouteRemoved(100),
    ]


def test_snapshot_and_readiness_reasons() -> None:
    feed = RouteFeed()
    feed.set_route(route(100))
    feed.set_route(route(101, "provisioning", running=False))
    feed.set_route(route(102, "ready", running=False))
    feed.replace_revocations(["a", "b"])
    feed.replace_revocations(["b"])  # "a" expired
    snap = feed.snapshot()
    assert snap.revoked_sessions == frozenset({"b"})
    assert [(r.vmid, r.ready, r.reason) for r in snap.routes.values()] == [
        (100, True, ""),
        (101, False, "still provisioning"),
        (102, False, "code-server is not running"),
    ]


def test_a_subscriber_that_falls_behind_is_told_to_resync() -> None:
    async def scenario() -> tuple[object, int]:
        feed = RouteFeed()
        async with feed.subscribe() as changes:
            for vmid in range(100, 100 + routefeed.QUEUE_SIZE + 5):
                feed.set_route(route(vmid))
            items = [changes.get_nowait() for _ in range(changes.qsize())]
            return items[-1], len(items)

    last, count = asyncio.run(scenario())
    assert isinstance(last, Resync)
    assert count == routefeed.QUEUE_SIZE + 1
