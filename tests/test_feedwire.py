"""zlh.feedwire over a real unix socket: routefeed's contract, unchanged by the wire.

The snapshot comes first, then every change in order; a reader that falls so far behind that
its subscription overflows gets a new snapshot instead of the changes it missed, and ends up
with exactly the feed's state.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from zlh import feedwire, routefeed


def route(
    vmid: int, *, port: int = 6000, guests: frozenset[int] = frozenset()
) -> routefeed.FeedRoute:
    return routefeed.FeedRoute(
        vmid=vmid,
        owner_id=1,
        guest_ids=guests,
        state="ready",
        address="10.0.3.7",
        code_server_port=port,
        code_server_running=True,
        public_ports=frozenset({3000}),
    )


@asynccontextmanager
async def served(feed: routefeed.RouteFeed) -> AsyncIterator[asyncio.StreamReader]:
    """A reader of ``feed`` as a worker has it: over a unix socket."""
    path = Path(tempfile.mkdtemp(prefix="zlh-feedwire-")) / "feed.sock"
    senders: list[tuple[asyncio.Task[None], asyncio.StreamWriter]] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        senders.append((asyncio.create_task(feedwire.send_feed(feed, writer)), writer))

    server = await asyncio.start_unix_server(accept, str(path))
    reader, writer = await asyncio.open_unix_connection(str(path), limit=feedwire.LINE_LIMIT)
    try:
        yield reader
    finally:
        for sender, server_side in senders:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            server_side.close()
        writer.close()
        server.close()
        await server.wait_closed()


async def next_received(received: AsyncIterator[feedwire.Received]) -> feedwire.Received:
    return await asyncio.wait_for(anext(received), timeout=10)


def test_the_snapshot_then_every_change_in_order_arrive_intact() -> None:
    async def main() -> None:
        feed = routefeed.RouteFeed()
        feed.set_route(route(100, guests=frozenset({2, 3})))
        feed.revoke(["old-sid"])
        async with served(feed) as reader:
            received = feedwire.read_feed(reader)
            snapshot = await next_received(received)
            assert snapshot == routefeed.FeedSnapshot(
                {100: route(100, guests=frozenset({2, 3}))}, frozenset({"old-sid"})
            )
            feed.set_route(route(101))
            feed.remove_route(100)
            feed.revoke(["sid-2"])
            assert [await next_received(received) for _ in range(3)] == [
                routefeed.RouteSet(route(101)),
                routefeed.RouteRemoved(100),
                routefeed.SessionRevoked("sid-2"),
            ]

    asyncio.run(main())


def test_a_reader_that_falls_behind_gets_a_new_snapshot_with_the_feeds_state() -> None:
    async def main() -> None:
        feed = routefeed.RouteFeed()
        async with served(feed) as reader:
            received = feedwire.read_feed(reader)
            assert await next_received(received) == routefeed.FeedSnapshot({}, frozenset())
            # Not reading: the socket's buffers fill, then the subscription's queue overflows.
            for i in range(routefeed.QUEUE_SIZE * 3):
                feed.set_route(route(100 + i % 50, port=i))
                if i % 1000 == 0:
                    await asyncio.sleep(0)  # let the sender write what the socket takes
            state = feed.snapshot().routes
            routes: dict[int, routefeed.FeedRoute] = {}
            snapshots = changes = 0
            while routes != state:
                got = await next_received(received)
                if isinstance(got, routefeed.FeedSnapshot):
                    routes, snapshots = dict(got.routes), snapshots + 1
                else:
                    assert isinstance(got, routefeed.RouteSet)
                    routes[got.route.vmid] = got.route
                    changes += 1
            assert snapshots == 1  # a new one, in place of the changes it could not take
            assert changes < routefeed.QUEUE_SIZE * 3

    asyncio.run(main())


@pytest.mark.parametrize(
    "line",
    [b"not json\n", b"[1]\n", b'{"t": "set", "route": {"vmid": 1}}\n', b'{"t": "nope"}\n'],
)
def test_a_malformed_line_is_a_wire_error(line: bytes) -> None:
    async def main() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(line)
        reader.feed_eof()
        with pytest.raises(feedwire.WireError):
            async for _ in feedwire.read_feed(reader):
                pass

    asyncio.run(main())
