"""The front's traffic counters: plain integers, bumped on the hot path, read at scrape time.

Each route class (``ide``, ``preview``, ``api``) has one :class:`RouteStats`; the front adds 1
to ``requests`` per request it routes there, and the relays add the bytes they pass on. No
lock, no label lookup per request: a scrape (zlh.api.metrics) reads the integers as they
are. Compiled with the rest of the hot path (setup.py's HOT_PATH), so an increment is a
native attribute update.
"""

from __future__ import annotations

__all__ = ["ROUTE_CLASSES", "FrontStats", "RouteStats"]

ROUTE_CLASSES = ("ide", "preview", "api")


class RouteStats:
    """Counters of one route class. ``bytes_in``: what clients sent (request heads as relayed,
    bodies, WebSocket frames); ``bytes_out``: what went back to them from upstream."""

    __slots__ = ("bytes_in", "bytes_out", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.bytes_in = 0
        self.bytes_out = 0


class FrontStats:
    """One :class:`RouteStats` per route class of one front."""

    __slots__ = ("api", "ide", "preview")

    def __init__(self) -> None:
        self.ide = RouteStats()
        self.preview = RouteStats()
        self.api = RouteStats()

    def by_class(self) -> list[tuple[str, RouteStats]]:
        return [("ide", self.ide), ("preview", self.preview), ("api", self.api)]
