"""The route feed (``zlh.routefeed``) over a unix socket, for front workers in other processes.

The API process serves its :class:`~zlh.routefeed.RouteFeed` on ``<data dir>/run/feed.sock``
(mode 0600; zlh.api.frontworkers accepts only the worker processes it started, by their
``SO_PEERCRED`` pid). Each line is one JSON object, ``"t"`` naming its kind.

API to worker, with routefeed's contract: the server subscribes, then sends a ``snapshot``
(every route, every revoked session), then each change in order (``set``, ``removed``,
``revoked``); when the subscription falls behind it subscribes again and sends a new
``snapshot``, which the worker applies in place of everything it had. ``drain`` asks the worker
to stop taking new WebSockets.

Worker to API: ``hello`` (its index, once it listens), ``ide_open`` (a page load of an IDE,
for the audit log), ``activity`` (a use of a container, for idle auto-stop) and ``stats`` (its
counters, every :data:`STATS_S`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any, Final

from zlh import routefeed

__all__ = [
    "DRAIN",
    "LINE_LIMIT",
    "STATS_S",
    "Received",
    "WireError",
    "decode",
    "encode",
    "read_feed",
    "send_feed",
]

LINE_LIMIT: Final = 64 * 1024 * 1024  # a snapshot of every route is one line
STATS_S: Final = 1.0
DRAIN: Final = "drain"


class WireError(ValueError):
    """A line that is not one of the messages above."""


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise WireError(f"not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise WireError("not a message: an object with a string 't' is expected")
    return message


def _route_to_wire(route: routefeed.FeedRoute) -> dict[str, Any]:
    fields = asdict(route)
    fields["guest_ids"] = sorted(route.guest_ids)
    fields["public_ports"] = sorted(route.public_ports)
    return fields


def _route_from_wire(fields: dict[str, Any]) -> routefeed.FeedRoute:
    try:
        return routefeed.FeedRoute(
            **{
                **fields,
                "guest_ids": frozenset(fields["guest_ids"]),
                "public_ports": frozenset(fields["public_ports"]),
            }
        )
    except (KeyError, TypeError) as exc:
        raise WireError(f"bad route: {exc}") from None


def _snapshot_line(snapshot: routefeed.FeedSnapshot) -> bytes:
    return encode(
        {
            "t": "snapshot",
            "routes": [_route_to_wire(r) for r in snapshot.routes.values()],
            "revoked": sorted(snapshot.revoked_sessions),
        }
    )


def _event_line(event: routefeed.FeedEvent) -> bytes | None:
    if isinstance(event, routefeed.RouteSet):
        return encode({"t": "set", "route": _route_to_wire(event.route)})
    if isinstance(event, routefeed.RouteRemoved):
        return encode({"t": "removed", "vmid": event.vmid})
    if isinstance(event, routefeed.SessionRevoked):
        return encode({"t": "revoked", "sid": event.sid})
    return None  # Resync: the server's own business


async def send_feed(feed: routefeed.RouteFeed, writer: asyncio.StreamWriter) -> None:
    """Send ``feed`` to one worker until cancelled or the worker is gone (OSError)."""
    while True:
        async with feed.subscribe() as changes:
            writer.write(_snapshot_line(feed.snapshot()))
            await writer.drain()
            while True:
                line = _event_line(await changes.get())
                if line is None:
                    break  # fell behind: subscribe again, then a new snapshot
                writer.write(line)
                await writer.drain()


Received = routefeed.FeedSnapshot | routefeed.FeedEvent | str


async def read_feed(reader: asyncio.StreamReader) -> AsyncIterator[Received]:
    """What the API sends, decoded: snapshots, events, and ``DRAIN``; ends at EOF."""
    while line := await reader.readline():
        message = decode(line)
        kind = message["t"]
        try:
            if kind == "snapshot":
                routes = [_route_from_wire(r) for r in message["routes"]]
                yield routefeed.FeedSnapshot(
                    {r.vmid: r for r in routes}, frozenset(message["revoked"])
                )
            elif kind == "set":
                yield routefeed.RouteSet(_route_from_wire(message["route"]))
            elif kind == "removed":
                yield routefeed.RouteRemoved(int(message["vmid"]))
            elif kind == "revoked":
                yield routefeed.SessionRevoked(str(message["sid"]))
            elif kind == DRAIN:
                yield DRAIN
            else:
                raise WireError(f"unknown message {kind!r}")
        except (KeyError, TypeError, ValueError) as exc:
            raise WireError(f"bad {kind!r} message: {exc}") from None
