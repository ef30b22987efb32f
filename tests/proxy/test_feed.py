"""The front follows the API's real route feed: snapshot, then changes, then resyncs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from zlh import routefeed
from zlh.proxy import Principal, RouteTable
from zlh.proxy.feed import follow


def api_route(vmid: int, *, owner: int = 7, state: str = "ready") -> routefeed.FeedRoute:
    return routefeed.FeedRoute(
        vmid=vmid,
        owner_id=owner,
        state=state,
        address="10.0.3.5",
        code_server_port=6000,
        code_server_running=True,
    )


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - plain state, polled with a deadline
            await asyncio.sleep(0.005)


def test_route_table_follows_snapshot_changes_and_resyncs() -> None:
    async def scenario() -> None:
        feed, table = routefeed.RouteFeed(), RouteTable()
        feed.set_route(api_route(1))
        feed.revoke(["old-sid"])
        task = asyncio.create_task(follow(feed, table))
        try:
            await until(lambda: table.get(1) is not None)
            route = table.get(1)
            assert route is not None and (route.owner_id, route.host, route.port) == (
                "7",
                "10.0.3.5",
                6000,
            )
            assert route.ready
            revoked = Principal("7", "old-sid", False, time.time() + 60, time.time())
            assert table.is_revoked(revoked)

            feed.set_route(api_route(2, state="provisioning"))
            await until(lambda: table.get(2) is not None)
            waiting = table.get(2)
            assert waiting is not None and not waiting.ready
            assert waiting.reason == "still provisioning"
            feed.remove_route(1)
            await until(lambda: table.get(1) is None)
            feed.revoke(["new-sid"])
            await until(lambda: table.is_revoked(Principal("7", "new-sid", False, 0, 0)))

            # A subscriber that fell behind gets Resync and starts over from a snapshot.
            for queue in list(feed._subscribers):
                queue.put_nowait(routefeed.Resync())
            feed._routes[3] = api_route(3)  # only in the snapshot, never as an event
            await until(lambda: table.get(3) is not None)
        finally:
            task.cancel()

    asyncio.run(scenario())
