"""Keep-alive connections to upstreams (code-server in a container, the API app), pooled.

A connection is taken for one request/response exchange and put back once the response has
been read completely and both sides agreed to keep it alive. Idle connections are closed after
``upstream_idle_timeout_s`` and whenever the upstream closes them. An idle connection can still
turn out to be dead when it is used (the container restarted between two requests): the relay
then retries once on a fresh connection, but only for a request without a body (see
:mod:`zlh.proxy.relay`).

Responses are parsed with httptools (llhttp), except one that arrives whole in one read with a
Content-Length body: :func:`~zlh.proxy.scan.scan_response` takes that in one call.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, NamedTuple, cast

import httptools

from zlh.proxy.headers import ResponseHead
from zlh.proxy.scan import COMPILED, scan_response
from zlh.proxy.settings import ProxySettings

if TYPE_CHECKING:
    from zlh.proxy.relay import Exchange

__all__ = ["Pool", "UpstreamAddress", "UpstreamConnection"]

# Whether a whole head is first offered to the one-pass scanner (compiled only, see
# zlh.proxy.scan). Not Final: benchmarks and tests switch it off to compare with llhttp alone.
SCANNING = COMPILED


class UpstreamAddress(NamedTuple):
    """``host:port`` or a unix socket ``path``. (A tuple: it keys the pool on every request.)"""

    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> UpstreamAddress:
        """``unix:/run/zlh/api.sock``, ``/run/zlh/api.sock`` or ``127.0.0.1:8781``."""
        if text.startswith("unix:"):
            text = text[5:]
        if text.startswith("/"):
            return cls(path=text)
        host, _, port = text.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"upstream must be host:port or a unix socket path, got {text!r}")
        return cls(host=host.strip("[]"), port=int(port))

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"


class UpstreamConnection:
    """One connection to an upstream, parsing its responses for the current :class:`Exchange`.
    An asyncio protocol by its methods, like :class:`~zlh.proxy.listener.ClientConnection`."""

    def __init__(self, pool: Pool, address: UpstreamAddress) -> None:
        self.pool = pool
        self.address = address
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # connection_made
        self.exchange: Exchange | None = None
        self.loop = asyncio.get_running_loop()
        self.head = ResponseHead()
        self.reused = False  # has answered a request before: may be stale when taken from idle
        self.open = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._between = True  # llhttp is between two messages (fed none, or whole ones)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.open = True

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:  # an idle connection talking (a late 408, garbage): not reusable
            self.close()
            return
        if SCANNING and self._between and not exchange.head_only:
            found = scan_response(data)
            if found is not None:  # one whole response in this read: no llhttp callbacks
                self.head, body_start = found
                exchange.on_response_head(self.head)
                if body_start < len(data):
                    exchange.on_response_body(data[body_start:])
                exchange.on_response_complete()
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self.exchange is exchange:
                exchange.on_upgraded(data[exc.args[0] :])
            return
        except httptools.HttpParserError as exc:
            if self.exchange is exchange:
                exchange.on_upstream_broken(f"invalid HTTP response: {exc}")
            self.close()
            return
        if self.exchange is exchange:
            exchange.flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.on_upstream_lost(exc)
        else:
            self.pool.forget(self)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_paused()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_resumed()

    # ---------------------------------------------------------------- parser callbacks
    def on_message_begin(self) -> None:
        self._between = False
        self.head = ResponseHead()

    def on_status(self, status: bytes) -> None:
        self.head.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head.add(name, value)

    def on_headers_complete(self) -> None:
        head = self.head
        head.status = self._parser.get_status_code()
        head.keep_alive = self._parser.should_keep_alive()
        if self.exchange is not None:
            self.exchange.on_response_head(head)

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.on_response_body(body)

    def on_message_complete(self) -> None:
        self._between = True
        if self.exchange is not None:
            self.exchange.on_response_complete()

    # ----------------------------------------------------------------
    def close(self) -> None:
        self.exchange = None
        if self.open:
            self.open = False
            self.transport.close()


class Pool:
    def __init__(self, settings: ProxySettings) -> None:
        self._settings = settings
        self._idle: dict[UpstreamAddress, list[UpstreamConnection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def take(self, address: UpstreamAddress) -> UpstreamConnection | None:
        """An idle connection to ``address`` (most recently used first), or None."""
        conns = self._idle.get(address)
        while conns:
            conn = conns.pop()
            if conn.open:
                return conn
        return None

    async def connect(self, address: UpstreamAddress) -> UpstreamConnection:
        """A fresh connection. Raises OSError (refused, unreachable) or TimeoutError."""
        loop = asyncio.get_running_loop()
        conn = UpstreamConnection(self, address)
        protocol = cast(asyncio.Protocol, conn)
        async with asyncio.timeout(self._settings.connect_timeout_s):
            if address.path:
                await loop.create_unix_connection(lambda: protocol, address.path)
            else:
                await loop.create_connection(lambda: protocol, address.host, address.port)
        return conn

    def put(self, conn: UpstreamConnection) -> None:
        """Keep ``conn`` for reuse (its exchange is over and it is clean), or close it."""
        conn.exchange = None
        conns = self._idle.setdefault(conn.address, [])
        if not conn.open or len(conns) >= self._settings.max_idle_per_upstream:
            conn.close()
            return
        conn.reused = True
        conn.idle_since = conn.loop.time()
        conns.append(conn)
        if self._sweeper is None:
            self._schedule_sweep(conn.loop)

    def forget(self, conn: UpstreamConnection) -> None:
        conns = self._idle.get(conn.address)
        if conns and conn in conns:
            conns.remove(conn)

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _schedule_sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        delay = max(0.05, self._settings.upstream_idle_timeout_s / 2)
        self._sweeper = loop.call_later(delay, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweeper = None
        deadline = loop.time() - self._settings.upstream_idle_timeout_s
        for address, conns in list(self._idle.items()):
            keep = []
            for conn in conns:
                if conn.open and conn.idle_since > deadline:
                    keep.append(conn)
                else:
                    conn.close()
            if keep:
                self._idle[address] = keep
            else:
                del self._idle[address]
        if self._idle:
            self._schedule_sweep(loop)
