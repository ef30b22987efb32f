"""HTTP/1.1 to the agents, lean: keep-alive connections per agent, responses parsed by llhttp.

The poller reads every agent's ``/status`` every few seconds: at 10,000 containers and a 5 s
interval that is 2,000 requests a second for one replica, and the survivor of a dead replica
takes on the other's too. aiohttp's client request costs several times the CPU of this bare
asyncio protocol around httptools' parser (the front's llhttp), which bounded how many agents
one replica could poll (bench/poller.py, bench/scale.py: docs/performance.md). It speaks only
what the agents do: ``http://host:port``, a body with a Content-Length or chunked, keep-alive.

An agent runs in its tenant's container, where the tenant is root: whatever it answers is
untrusted. A body over ``max_body`` bytes ends the request and its connection (it is never
held in memory whole), bytes sent when no request is waiting close the connection (so nothing
an agent sends early is read as the answer to a later request), and every request is bounded
by its timeout.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Final, cast
from urllib.parse import urlsplit

import httptools

__all__ = ["AgentHttp", "AgentHttpError", "agent_address"]

MAX_BODY: Final = 1 << 20  # an agent's largest answer: a status document is a few KB
_IDLE_PER_AGENT: Final = 2  # the poller uses one at a time; a provisioning call may overlap


class AgentHttpError(Exception):
    """The agent broke HTTP or closed the connection: the message says how."""


@functools.lru_cache(maxsize=65536)
def agent_address(base_url: str) -> tuple[str, int]:
    """``http://host:port`` as (host, port), parsed once per agent rather than per request."""
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        raise ValueError(f"an agent's URL is http://host:port, got {base_url!r}")
    return parts.hostname, parts.port


class _Connection(asyncio.Protocol):
    """One connection to an agent."""

    def __init__(self, pool: AgentHttp, address: tuple[str, int]) -> None:
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None
        self._body: list[bytes] = []
        self._size = 0
        self.heard = False  # any byte of the current response arrived

    # ---------------------------------------------------------------- protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._answer is None:  # talking out of turn: not to be read as a later answer
            self.close()
            return
        self.heard = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail("switched protocols without being asked")
        except httptools.HttpParserError as exc:
            self._fail(f"sent an invalid HTTP response ({exc})")

    def eof_received(self) -> bool:
        return False  # close

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._pool.forget(self)
        self._fail("closed the connection" + (f" ({exc})" if exc else ""))

    # ---------------------------------------------------------------- parser callbacks
    def on_message_begin(self) -> None:
        if self._answer is None:  # a second response to one request
            self.close()
        self._body, self._size = [], 0

    def on_body(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._pool.max_body:
            self._fail(f"answered more than {self._pool.max_body} bytes")
        elif self._answer is not None:
            self._body.append(data)

    def on_message_complete(self) -> None:
        answer, self._answer = self._answer, None
        if answer is None or answer.done():
            return
        answer.set_result((self._parser.get_status_code(), b"".join(self._body)))
        self._body = []
        if self._parser.should_keep_alive():
            self._pool.put(self)
        else:
            self.close()

    # ----------------------------------------------------------------
    def send(self, request: bytes, answer: asyncio.Future[tuple[int, bytes]]) -> None:
        assert self.transport is not None
        self._answer, self.heard = answer, False
        self.transport.write(request)

    def _fail(self, reason: str) -> None:
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_exception(AgentHttpError(reason))
        self.close()

    def close(self) -> None:
        self._answer = None
        if self.transport is not None:
            self.transport.close()
            self.transport = None
            self._pool.forget(self)


class AgentHttp:
    def __init__(self, *, idle_timeout_s: float = 30.0, max_body: int = MAX_BODY) -> None:
        """Idle connections are closed after ``idle_timeout_s`` (the agents keep theirs
        longer); answers over ``max_body`` bytes are refused."""
        self.max_body = max_body
        self._idle_timeout_s = idle_timeout_s
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    async def request(
        self,
        base_url: str,
        method: str,
        target: str,
        headers: str,
        body: bytes | None,
        timeout_s: float,
    ) -> tuple[int, bytes]:
        """``method target`` to the agent at ``base_url`` with ``headers`` (CRLF-terminated
        lines) and ``body``: its status code and body. Raises TimeoutError, OSError (connect)
        or AgentHttpError. A GET on a kept-alive connection the agent had closed meanwhile is
        sent again once on a new one."""
        address = agent_address(base_url)
        request = f"{method} {target} HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n{headers}"
        if body is not None:
            request += f"Content-Length: {len(body)}\r\n"
        data = (request + "\r\n").encode("latin-1") + (body or b"")
        async with asyncio.timeout(timeout_s):
            # Only a GET may be sent twice: anything else goes on a new connection.
            conn = self._take(address) if method == "GET" else None
            if conn is not None:
                try:
                    return await self._exchange(conn, data)
                except AgentHttpError:
                    if conn.heard:
                        raise
            return await self._exchange(await self._connect(address), data)

    async def _exchange(self, conn: _Connection, data: bytes) -> tuple[int, bytes]:
        answer: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        conn.send(data, answer)
        try:
            return await answer
        except asyncio.CancelledError:  # the timeout: a late answer must not be read as another's
            conn.close()
            raise

    async def _connect(self, address: tuple[str, int]) -> _Connection:
        conn = _Connection(self, address)
        await asyncio.get_running_loop().create_connection(lambda: conn, *address)
        return conn

    def _take(self, address: tuple[str, int]) -> _Connection | None:
        conns = self._idle.get(address)
        while conns:
            conn = conns.pop()
            if conn.transport is not None:
                return conn
        return None

    def put(self, conn: _Connection) -> None:
        """Keep ``conn`` for the agent's next request, or close it."""
        conns = self._idle.setdefault(conn.address, [])
        if len(conns) >= _IDLE_PER_AGENT:
            conn.close()
            return
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        conns.append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._idle_timeout_s / 2, self._sweep)

    def forget(self, conn: _Connection) -> None:
        conns = self._idle.get(conn.address)
        if conns and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._idle[conn.address]

    def _sweep(self) -> None:
        """Close connections idle for ``idle_timeout_s`` (stopped or deleted containers')."""
        loop = asyncio.get_running_loop()
        self._sweeper = None
        deadline = loop.time() - self._idle_timeout_s
        for conns in list(self._idle.values()):
            for conn in [c for c in conns if c.idle_since <= deadline]:
                conn.close()
        if self._idle:
            self._sweeper = loop.call_later(self._idle_timeout_s / 2, self._sweep)

    def close(self) -> None:
        """Close every idle connection."""
        for conns in list(self._idle.values()):
            for conn in list(conns):
                conn.close()
        self._idle.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
