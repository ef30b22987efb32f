"""The client side of the front: one :class:`ClientConnection` per accepted TCP connection.

It parses requests with httptools (llhttp) -- or, for a plain GET/HEAD head that arrives whole
in one read while the connection is idle, with :func:`~zlh.proxy.scan.scan_request` in one
call -- and hands each to a :class:`Handler` picked by the front, one at a time: pipelined
requests wait in order (reading pauses meanwhile, so a flood costs at most one read buffer)
and responses go out in request order. Body bytes are passed to the handler as they arrive;
nothing buffers a whole body.

Traps handled here: ``should_keep_alive()``/``should_upgrade()`` are only meaningful inside
``on_headers_complete`` (read afterwards, they are always false); after an upgrade request the
parser stops at the upgrade and the bytes after it belong to the WebSocket.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol, cast

import httptools

from zlh.proxy import responses
from zlh.proxy.headers import RequestHead
from zlh.proxy.scan import COMPILED, scan_request
from zlh.proxy.settings import ProxySettings

__all__ = ["ClientConnection", "Handler"]

log = logging.getLogger(__name__)

# Whether a whole head is first offered to the one-pass scanner (compiled only, see
# zlh.proxy.scan). Not Final: benchmarks and tests switch it off to compare with llhttp alone.
SCANNING = COMPILED

# Reasons reading from a client is paused (bit flags; reading resumes when none is left).
_PIPELINE: Final = 1  # a request waits behind the one in progress
_BODY: Final = 2  # the upstream does not take the request body as fast as the client sends it
_UPGRADE: Final = 4  # bytes after an upgrade request wait for the tunnel (or the refusal)


class Handler(Protocol):
    """What a request is handed to: a relay to an upstream, or a local response."""

    def on_client_body(self, data: bytes) -> None: ...
    def on_client_body_end(self) -> None: ...
    def client_lost(self) -> None: ...
    def client_paused(self) -> None: ...
    def client_resumed(self) -> None: ...
    def check_timeout(self, now: float) -> None: ...


Dispatch = Callable[["ClientConnection", RequestHead], Handler]


class _HeadTooLarge(Exception):
    pass


class _Pending:
    """A parsed request: its head, body bytes that came before its handler, its handler."""

    __slots__ = ("body", "complete", "handler", "head")

    def __init__(self, head: RequestHead) -> None:
        self.head = head
        self.body: list[bytes] = []
        self.complete = False
        self.handler: Handler | None = None


class ClientConnection:
    """An asyncio protocol by its methods: compiled, it cannot subclass asyncio.Protocol (a
    Python class), and as a native class its attributes are struct fields, not a dict."""

    def __init__(
        self, dispatch: Dispatch, settings: ProxySettings, live: set[ClientConnection]
    ) -> None:
        self._dispatch = dispatch
        self._settings = settings
        self._max_head = settings.max_header_bytes  # read per header: a pydantic read is slow
        self._live = live
        self.loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # connection_made
        self.peer_ip = b"unknown"
        self._head = RequestHead()
        self._head_size = 0
        self._head_started = 0.0  # loop time the current head began, 0 when not in a head
        self._parsing: _Pending | None = None
        self._between = True  # llhttp is between two messages (fed none, or whole ones)
        self._current: _Pending | None = None
        self._pipeline: deque[_Pending] = deque()
        self._paused = 0
        self._idle_since = self.loop.time()
        self._closed = False
        self._eof = False
        self._upgraded = False
        self.upgrade_data = b""  # bytes the client sent after its upgrade request
        self._broken: bytes | None = None  # error response to send once the current one is done
        self._detached = False
        shortest = min(settings.header_timeout_s, settings.keepalive_timeout_s)
        shortest = min(shortest, settings.read_timeout_s)
        self._tick_s = min(5.0, max(0.02, shortest / 4))  # timeouts are checked this often
        self._ticker: asyncio.TimerHandle | None = None

    # ---------------------------------------------------------------- transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer_ip = str(peer[0]).encode()
        self._live.add(self)
        self._ticker = self.loop.call_later(self._tick_s, self._tick)

    def data_received(self, data: bytes) -> None:
        if self._upgraded:
            self.upgrade_data += data
            self._pause(_UPGRADE)
            return
        if SCANNING and self._between and self._current is None and not self._pipeline:
            head = scan_request(data, self._max_head)
            if head is not None:
                pending = self._parsing = _Pending(head)
                pending.complete = True
                try:
                    self._start(pending)
                except Exception as exc:
                    self._failed(exc)
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgraded = True
            self.upgrade_data = data[exc.args[0] :]
            self._pause(_UPGRADE)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                limit = self._max_head
                self._refuse(431, "request head too large", f"the limit is {limit} bytes")
            else:
                self._failed(exc.__context__ or exc)
        except httptools.HttpParserError as exc:
            self._refuse(400, "malformed request", str(exc))

    def eof_received(self) -> bool:
        self._eof = True
        # Keep the write side open while a request is being answered; close when idle.
        return self._current is not None or bool(self._pipeline)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._live.discard(self)
        if self._ticker is not None:
            self._ticker.cancel()
        current = self._current
        if current is not None and current.handler is not None:
            current.handler.client_lost()
        self._pipeline.clear()

    def pause_writing(self) -> None:
        if self._current is not None and self._current.handler is not None:
            self._current.handler.client_paused()

    def resume_writing(self) -> None:
        if self._current is not None and self._current.handler is not None:
            self._current.handler.client_resumed()

    # ---------------------------------------------------------------- parser callbacks
    def on_message_begin(self) -> None:
        self._between = False
        self._head = RequestHead()
        self._head_size = 0
        self._head_started = self.loop.time()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        if self._head_size > self._max_head:
            raise _HeadTooLarge
        self._head.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self._max_head:
            raise _HeadTooLarge
        self._head.add(name, value)

    def on_headers_complete(self) -> None:
        head, parser = self._head, self._parser
        head.method = parser.get_method()
        head.version = parser.get_http_version()
        head.keep_alive = parser.should_keep_alive()
        if parser.should_upgrade():
            head.set_upgrading(True)
        self._head_started = 0.0
        pending = self._parsing = _Pending(head)
        if self._current is None:
            self._start(pending)
        else:
            self._pipeline.append(pending)
            self._pause(_PIPELINE)

    def on_body(self, body: bytes) -> None:
        pending = self._parsing
        if pending is None:
            return
        if pending.handler is not None:
            pending.handler.on_client_body(body)
        else:
            pending.body.append(body)

    def on_message_complete(self) -> None:
        self._between = True
        pending = self._parsing
        if pending is None:
            return
        pending.complete = True
        if pending.handler is not None:
            pending.handler.on_client_body_end()

    # ---------------------------------------------------------------- for handlers
    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def pause_body(self) -> None:
        self._pause(_BODY)

    def resume_body(self) -> None:
        self._resume(_BODY)

    def done(self, keep_alive: bool) -> None:
        """The handler has written its whole response (or given up); go on with the next."""
        current, self._current = self._current, None
        if self._closed or self._detached:
            return
        if not keep_alive or current is None or not current.head.keep_alive or not current.complete:
            self.close()
        elif self._broken is not None:
            self.transport.write(self._broken)
            self.close()
        elif self._pipeline:
            self.loop.call_soon(self._start_next)
        elif self._upgraded or self._eof:
            self.close()
        else:
            self._idle_since = self.loop.time()

    def detach(self) -> tuple[asyncio.Transport, bytes]:
        """Give the connection up to a WebSocket tunnel: its transport and the bytes already
        read after the upgrade request. Reading stays paused until the tunnel resumes it."""
        self._detached = True
        self._current = None
        self._live.discard(self)
        if self._ticker is not None:
            self._ticker.cancel()
        data, self.upgrade_data = self.upgrade_data, b""
        return self.transport, data

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.transport.close()

    def abort(self) -> None:
        self._closed = True
        self.transport.abort()

    # ---------------------------------------------------------------- internals
    def _start(self, pending: _Pending) -> None:
        self._current = pending
        handler = pending.handler = self._dispatch(self, pending.head)
        body, pending.body = pending.body, []
        for chunk in body:
            handler.on_client_body(chunk)
        if pending.complete:
            handler.on_client_body_end()

    def _failed(self, exc: BaseException) -> None:
        """Handling a request raised: a bug of ours. Never leave the client hanging on it."""
        log.error("request handling failed", exc_info=exc)
        if self._current is None or self._current.handler is None:  # nothing sent yet
            self.transport.write(responses.error(500, "internal error", keep_alive=False))
            self.close()
        else:
            self.abort()

    def _start_next(self) -> None:
        if self._closed or self._current is not None or not self._pipeline:
            return
        pending = self._pipeline.popleft()
        if not self._pipeline:
            self._resume(_PIPELINE)
        self._start(pending)

    def _refuse(self, status: int, message: str, detail: str) -> None:
        """The parser gave up: answer now if nothing is in flight, else after it; then close."""
        self._parsing = None
        response = responses.error(status, message, detail, keep_alive=False)
        current = self._current
        if current is None:
            self.transport.write(response)
            self.close()
        elif not current.complete and current.handler is not None:
            current.handler.client_lost()  # its body is broken: nothing sane to relay
            self.abort()
        else:
            self._broken = response
            self._pipeline.clear()
            self._pause(_PIPELINE)

    def _pause(self, reason: int) -> None:
        if not self._paused and not self._closed:
            self.transport.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and not self._closed:
                self.transport.resume_reading()

    def _tick(self) -> None:
        if self._closed or self._detached:
            return
        now = self.loop.time()
        settings = self._settings
        current = self._current
        if current is not None:
            if current.handler is not None:
                current.handler.check_timeout(now)
        elif self._head_started:
            if now - self._head_started > settings.header_timeout_s:
                self.transport.write(
                    responses.error(408, "request head not received in time", keep_alive=False)
                )
                self.close()
                return
        elif not self._pipeline and now - self._idle_since > settings.keepalive_timeout_s:
            self.close()
            return
        self._ticker = self.loop.call_later(self._tick_s, self._tick)
