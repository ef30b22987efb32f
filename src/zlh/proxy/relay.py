"""One request relayed to an upstream and its response relayed back, both bodies streamed.

An :class:`Exchange` is a :class:`~zlh.proxy.listener.Handler` for the client side and the
current owner of one pooled :class:`~zlh.proxy.pool.UpstreamConnection`. Body bytes go through as
they arrive; back-pressure is passed on both ways (a full client write buffer pauses reading the
upstream, a full upstream write buffer pauses reading the client), so memory per exchange stays
around one read buffer whatever the body size. What the upstream sends in one read goes to the
client in one write.

Failures before the client saw a byte of the response become clean errors: 502 when the
upstream refuses or breaks the connection, 504 when it does not accept or answer in time. A
pooled connection that turns out dead is retried once on a fresh one, but only for a request
without a body: a streamed body cannot be replayed. After response bytes went out, the only
honest signal left is to drop the client connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from zlh.proxy import responses
from zlh.proxy.headers import (
    LAST_CHUNK,
    Framing,
    RequestHead,
    ResponseHead,
    ResponseRules,
    chunk,
)
from zlh.proxy.headers import client_response_head as _client_head
from zlh.proxy.listener import ClientConnection
from zlh.proxy.metrics import RouteStats
from zlh.proxy.pool import Pool, UpstreamAddress, UpstreamConnection
from zlh.proxy.sessionnotice import is_plain_html
from zlh.proxy.settings import ProxySettings

__all__ = ["Exchange", "LocalResponse", "OnUpgrade"]

# Body bytes held while the upstream connection is being opened before the client is paused.
_PENDING_LIMIT: Final = 256 * 1024
# Body bytes discarded after the response is already decided before the connection is dropped.
_DISCARD_LIMIT: Final = 1024 * 1024

OnUpgrade = Callable[[ClientConnection, UpstreamConnection, bytes], None]


class LocalResponse:
    """A response the front writes itself; the request body, if any, is read and discarded."""

    __slots__ = ("_client", "_discarded", "_done", "_keep_alive")

    def __init__(self, client: ClientConnection, data: bytes, *, keep_alive: bool) -> None:
        client.write(data)
        self._client = client
        self._keep_alive = keep_alive
        self._discarded = 0
        self._done = False

    def on_client_body(self, data: bytes) -> None:
        self._discarded += len(data)
        if self._discarded > _DISCARD_LIMIT and not self._done:
            self._done = True
            self._client.done(False)

    def on_client_body_end(self) -> None:
        if not self._done:
            self._done = True
            self._client.done(self._keep_alive)

    def client_lost(self) -> None:
        pass

    def client_paused(self) -> None:
        pass

    def client_resumed(self) -> None:
        pass

    def check_timeout(self, now: float) -> None:
        pass


class Exchange:
    __slots__ = (
        "_address",
        "_body_done",
        "_chunked_body",
        "_client",
        "_client_framing",
        "_client_paused",
        "_discarded",
        "_done_later",
        "_finished",
        "_framing",
        "_head",
        "_interim",
        "_keep_alive",
        "_loop",
        "_on_upgrade",
        "_out",
        "_pending",
        "_pending_size",
        "_pool",
        "_request",
        "_responded",
        "_retried",
        "_rules",
        "_settings",
        "_stats",
        "_tail",
        "_task",
        "_upgrading",
        "_vmid",
        "_waiting_since",
        "head_only",
        "upstream",
    )

    def __init__(
        self,
        client: ClientConnection,
        request: RequestHead,
        head: bytes,
        *,
        address: UpstreamAddress,
        pool: Pool,
        settings: ProxySettings,
        vmid: int,
        on_upgrade: OnUpgrade | None,
        rules: ResponseRules,
        stats: RouteStats,
        tail: bytes = b"",
    ) -> None:
        """``vmid`` is the container relayed to, 0 for the API (portal pages); ``rules`` what
        the response head gets and loses on its way to the client; ``stats`` the route class's
        counters (zlh.proxy.metrics); ``tail`` what is appended to the body of a 200 HTML page
        sent uncompressed (zlh.proxy.sessionnotice)."""
        self._client = client
        self._request = request
        self._head = head
        self._address = address
        self._pool = pool
        self._settings = settings
        self._vmid = vmid
        self._rules = rules
        self._stats = stats
        self._tail = tail
        self._on_upgrade = on_upgrade
        self._loop = client.loop
        self._chunked_body = request.te_chunked
        self.head_only = request.method == b"HEAD"  # the response's Content-Length has no body
        self.upstream: UpstreamConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._body_done = False
        self._discarded = 0
        self._waiting_since = 0.0  # loop time the request was fully sent, until the head came
        self._responded = False
        self._interim = False
        self._upgrading = False
        self._framing = Framing.NONE  # the upstream's
        self._client_framing = Framing.NONE
        self._keep_alive = request.keep_alive
        self._out: list[bytes] = []
        self._finished = False
        self._done_later: bool | None = None  # done(keep_alive) waiting for the request body
        self._retried = False
        self._client_paused = False

    # ---------------------------------------------------------------- connecting
    def start(self) -> None:
        conn = self._pool.take(self._address)
        if conn is not None:
            self._attach(conn)
        else:
            self._task = self._loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            conn = await self._pool.connect(self._address)
        except TimeoutError:
            self._fail(
                504,
                f"{self._describe()} did not accept a connection in time",
                f"no connection within {self._settings.connect_timeout_s:g} s",
            )
            return
        except OSError as exc:
            self._fail(502, f"{self._describe()} refused the connection", exc.strerror or str(exc))
            return
        if self._finished:
            self._pool.put(conn)
        else:
            self._attach(conn)

    def _attach(self, conn: UpstreamConnection) -> None:
        self.upstream = conn
        conn.exchange = self
        data = self._head
        if self._pending:
            data += b"".join(self._pending)
            self._pending = []
            if self._pending_size > _PENDING_LIMIT:
                self._client.resume_body()
            self._pending_size = 0
        if self._body_done:
            if self._chunked_body:
                data += LAST_CHUNK
            self._waiting_since = self._loop.time()
        self._stats.bytes_in += len(data)
        conn.transport.write(data)

    # ---------------------------------------------------------------- client side (Handler)
    def on_client_body(self, data: bytes) -> None:
        if self._finished:
            self._discard(len(data))
            return
        if self._chunked_body:
            data = chunk(data)
        if self.upstream is not None:
            self._stats.bytes_in += len(data)
            self.upstream.transport.write(data)
            return
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size > _PENDING_LIMIT:
            self._client.pause_body()

    def on_client_body_end(self) -> None:
        self._body_done = True
        if self._finished:
            if self._done_later is not None:
                self._client.done(self._done_later)
            return
        if self.upstream is not None:
            if self._chunked_body:
                self.upstream.transport.write(LAST_CHUNK)
            self._waiting_since = self._loop.time()

    def client_lost(self) -> None:
        self._finished = True
        if self._task is not None:
            self._task.cancel()
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.close()

    def client_paused(self) -> None:
        self._client_paused = True
        if self.upstream is not None:
            self.upstream.transport.pause_reading()

    def client_resumed(self) -> None:
        self._client_paused = False
        if self.upstream is not None:
            self.upstream.transport.resume_reading()

    def check_timeout(self, now: float) -> None:
        if self._waiting_since and now - self._waiting_since > self._settings.read_timeout_s:
            conn, self.upstream = self.upstream, None
            if conn is not None:
                conn.close()
            self._fail(
                504,
                f"{self._describe()} did not answer in time",
                f"no response within {self._settings.read_timeout_s:g} s",
            )

    # ---------------------------------------------------------------- upstream side
    def upstream_paused(self) -> None:
        self._client.pause_body()

    def upstream_resumed(self) -> None:
        self._client.resume_body()

    def on_response_head(self, head: ResponseHead) -> None:
        self._waiting_since = 0.0
        status = head.status
        if status < 200 and status != 101:
            self._interim = True  # 100 Continue and friends: pass on, the real head follows
            self._out.append(b"HTTP/1.1 %d %s\r\n\r\n" % (status, head.reason))
            return
        request = self._request
        if status == 101:
            if self._on_upgrade is None:
                self._broken("switched protocols without being asked")
                return
            self._upgrading = True
        self._framing = framing = head.framing(request.method)
        if self._tail:
            if framing != Framing.NONE and is_plain_html(head):
                framing = Framing.CHUNKED  # the client's Content-Length would be the upstream's
            else:
                self._tail = b""
        data, self._client_framing = _client_head(
            head,
            framing,
            keep_alive=self._keep_alive,
            http11=request.version == "1.1",
            rules=self._rules,
        )
        if self._client_framing == Framing.CLOSE:
            self._keep_alive = False
        self._out.append(data)
        self._responded = True
        if request.method == b"HEAD" and self._framing == Framing.NONE and status >= 200:
            # llhttp cannot be told a response answers HEAD, so it would wait for the body its
            # Content-Length announces: finish here and do not reuse the connection.
            conn, self.upstream = self.upstream, None
            self.flush()
            if conn is not None:
                conn.close()
            self._finish(self._keep_alive)

    def on_response_body(self, data: bytes) -> None:
        if self._client_framing == Framing.CHUNKED:
            self._out.append(chunk(data))
        else:
            self._out.append(data)

    def flush(self) -> None:
        out = self._out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            self._stats.bytes_out += len(data)
            self._client.write(data)
            out.clear()

    def on_response_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self._upgrading:
            return  # the parser raises HttpParserUpgrade next: on_upgraded
        self._end_body()
        self.flush()
        conn, self.upstream = self.upstream, None
        if conn is not None:
            if self._client_paused:
                conn.transport.resume_reading()
            if conn.head.keep_alive and self._body_done:
                self._pool.put(conn)
            else:
                conn.close()
        self._finish(self._keep_alive)

    def on_upgraded(self, rest: bytes) -> None:
        """The upstream switched to WebSocket; ``rest`` is what it sent after its 101 head."""
        self.flush()
        conn, self.upstream = self.upstream, None
        self._finished = True
        if conn is None:
            return
        conn.exchange = None
        if self._on_upgrade is not None:
            self._on_upgrade(self._client, conn, rest)

    def on_upstream_lost(self, exc: Exception | None) -> None:
        conn, self.upstream = self.upstream, None
        if self._finished:
            return
        if not self._responded:
            if (
                conn is not None
                and conn.reused
                and not self._retried
                and self._request.framing == Framing.NONE
            ):
                self._retried = True  # a stale pooled connection: once more on a fresh one
                self._task = self._loop.create_task(self._connect())
                return
            self._fail(502, f"{self._describe()} closed the connection without answering", "")
        elif self._framing == Framing.CLOSE and exc is None:
            self._end_body()
            self.flush()
            self._finish(self._keep_alive)
        else:
            self.flush()
            self._finished = True
            self._client.abort()  # the response is cut short: say so by dropping the connection

    def on_upstream_broken(self, problem: str) -> None:
        self.upstream = None
        self._broken(problem)

    # ---------------------------------------------------------------- endings
    def _end_body(self) -> None:
        if self._tail:
            self.on_response_body(self._tail)
        if self._client_framing == Framing.CHUNKED:
            self._out.append(LAST_CHUNK)

    def _describe(self) -> str:
        return f"code-server in container {self._vmid}" if self._vmid else "the API"

    def _broken(self, problem: str) -> None:
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.close()
        if self._responded:
            self._finished = True
            self._client.abort()
        else:
            self._fail(502, f"{self._describe()} sent an invalid response", problem)

    def _fail(self, status: int, message: str, detail: str) -> None:
        if self._finished:
            return
        request = self._request
        keep_alive = self._keep_alive and not request.upgrading
        self._out.clear()
        self._client.write(
            responses.error(
                status,
                message,
                detail,
                as_html=request.wants_html and not request.upgrading,
                keep_alive=keep_alive,
                head_only=request.method == b"HEAD",
            )
        )
        self._responded = True
        self._finish(keep_alive)

    def _finish(self, keep_alive: bool) -> None:
        self._finished = True
        self._client.resume_body()
        if self._body_done:
            self._client.done(keep_alive)
        else:
            self._done_later = keep_alive

    def _discard(self, size: int) -> None:
        self._discarded += size
        if self._discarded > _DISCARD_LIMIT and self._done_later is not None:
            self._done_later = None
            self._client.done(False)
