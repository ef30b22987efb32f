"""Real parts for the front's tests: an event loop thread running the front and an upstream.

The upstream is a small aiohttp app standing in for code-server (and for the API): it echoes
what it received (method, path, headers), streams bodies both ways on command, and echoes
WebSocket messages. Tests drive it all with real clients (httpx, websockets, raw sockets) from
the test thread.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import jwt
import uvloop
from aiohttp import WSMsgType, web

from zlh.proxy import Front, JwtAuthenticator, Principal, ProxySettings, Route, RouteTable
from zlh.proxy.tickets import Ticket, TicketDesk, mint_ticket

KEY = b"k" * 32 + b"-test-signing-key"
COOKIE = "zlh_session"
T = TypeVar("T")
_vmids = itertools.count(200)


def next_vmid() -> int:
    """A vmid no other test uses, so tests sharing one front do not see each other's routes."""
    return next(_vmids)


def token(
    user: str, *, sid: str = "", admin: bool = False, ttl_s: float = 3600, key: bytes = KEY
) -> str:
    now = time.time()
    claims: dict[str, Any] = {
        "sub": user,
        "sid": sid or f"sid-{user}-{now}",
        "iat": int(now),
        "exp": int(now + ttl_s),
    }
    if admin:
        claims["admin"] = True
    return jwt.encode(claims, key, algorithm="HS256")


def ide_cookie(
    user: str, vmid: int, *, sid: str = "", admin: bool = False, ttl_s: float = 3600
) -> str:
    """The IDE cookie's value for ``vmid``, as the front's ticket exchange writes it."""
    now = time.time()
    ticket = Ticket(user, sid or f"sid-{user}-{now}", vmid, admin, now, now + ttl_s)
    return TicketDesk(KEY).cookie_value(ticket)[0]


def ide_session(user: str, vmid: int, **kwargs: Any) -> dict[str, str]:
    """Headers of a browser holding the IDE cookie for ``vmid``."""
    return {"Cookie": f"zlh_ide={ide_cookie(user, vmid, **kwargs)}"}


def ticket(
    user: str,
    vmid: int,
    *,
    sid: str = "",
    admin: bool = False,
    now: float | None = None,
    session_ttl_s: float = 3600,
) -> str:
    """A ticket as ``GET /api/dev/{vmid}/ide-url`` mints it."""
    now = time.time() if now is None else now
    return mint_ticket(
        KEY,
        user_id=user,
        sid=sid or f"sid-{user}-{now}",
        vmid=vmid,
        admin=admin,
        session_issued_at=now,
        session_expires_at=now + session_ttl_s,
        now=now,
    )


def wait_until(condition: Callable[[], bool], *, timeout_s: float = 5.0, what: str = "") -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what or condition}")
        time.sleep(0.01)


@dataclass
class UpstreamLog:
    """What the upstream saw, shared with the test thread."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    upload_received: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, request: web.Request) -> dict[str, Any]:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        seen = {
            "peer_port": peer[1] if isinstance(peer, tuple) else None,
            "method": request.method,
            "path": request.raw_path,
            "headers": [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
        }
        with self.lock:
            self.requests.append(seen)
        return seen


PAGE = b"<!DOCTYPE html><html><head></head><body>IDE</body></html>"


def upstream_app(log: UpstreamLog) -> web.Application:
    async def echo(request: web.Request) -> web.StreamResponse:
        """What it saw as JSON; ``?html=length|chunked|gzip`` answers :data:`PAGE` instead, so
        framed (gzip: compressed, with a Content-Length)."""
        seen = log.record(request)
        framing = request.query.get("html")
        if framing:
            response = web.StreamResponse(headers={"Content-Type": "text/html; charset=utf-8"})
            body = gzip.compress(PAGE) if framing == "gzip" else PAGE
            if framing == "chunked":
                response.enable_chunked_encoding()
            else:
                response.content_length = len(body)
            if framing == "gzip":
                response.headers["Content-Encoding"] = "gzip"
            await response.prepare(request)
            await response.write(body)
            await response.write_eof()
            return response
        seen["body_len"] = len(await request.read())
        return web.json_response(seen, headers={"Set-Cookie": "up=1; Path=/"})

    async def cookies(request: web.Request) -> web.StreamResponse:
        """Sets cookies named like the platform's and one of its own, with a CSP of its own;
        ``?chunked=1`` streams the body (the head then goes through llhttp, not the scanner)."""
        log.record(request)
        response = web.StreamResponse(
            headers={"Content-Security-Policy": "default-src 'self'", "Content-Type": "text/plain"}
        )
        for name in ("zlh_session", "__Host-zlh_session", "__Secure-ZLH_SESSION", "zlh_ide"):
            response.headers.add("Set-Cookie", f"{name}=planted; Path=/")
        response.headers.add("Set-Cookie", "mine=1; Path=/")
        if request.query.get("chunked"):
            response.enable_chunked_encoding()
        else:
            response.content_length = 2
        await response.prepare(request)
        await response.write(b"ok")
        await response.write_eof()
        return response

    async def upload(request: web.Request) -> web.StreamResponse:
        log.record(request)
        total = 0
        async for data in request.content.iter_any():
            total += len(data)
            with log.lock:
                log.upload_received = total
        return web.json_response({"received": total})

    async def stream(request: web.Request) -> web.StreamResponse:
        """A chunked response: first chunk, then the rest once the test sets ``release``."""
        log.record(request)
        size = int(request.query.get("size", "65536"))
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"a" * size)
        await asyncio.to_thread(log.release.wait, 10)
        await response.write(b"b" * size)
        await response.write_eof()
        return response

    async def big(request: web.Request) -> web.StreamResponse:
        size = int(request.query["size"])
        response = web.StreamResponse(headers={"Content-Length": str(size)})
        await response.prepare(request)
        piece = b"x" * 65536
        sent = 0
        while sent < size:
            n = min(len(piece), size - sent)
            await response.write(piece[:n])
            sent += n
        return response

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(float(request.query.get("s", "30")))
        return web.Response(text="late")

    async def ws(request: web.Request) -> web.StreamResponse:
        log.record(request)
        sock = web.WebSocketResponse(autoping=False, max_msg_size=0)
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == WSMsgType.TEXT and msg.data.startswith("close:"):
                _, code, reason = msg.data.split(":", 2)
                await sock.close(code=int(code), message=reason.encode())
            elif msg.type == WSMsgType.TEXT:
                await sock.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await sock.send_bytes(msg.data)
            elif msg.type == WSMsgType.PING:
                await sock.pong(msg.data)
        return sock

    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/upload", upload)
    app.router.add_get("/cookies", cookies)
    app.router.add_get("/stream", stream)
    app.router.add_get("/big", big)
    app.router.add_get("/slow", slow)
    app.router.add_get("/ws", ws)
    app.router.add_get("/api/ws", ws)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


class Harness:
    """An event loop thread with one upstream and a default front; more fronts on demand."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.log = UpstreamLog()
        self._runner: web.AppRunner | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="zlh-proxy-test-")
        self.unix_path = os.path.join(self._tmp.name, "api.sock")
        self.upstream_port = self.run(self._start_upstream())
        self.routes = RouteTable()
        self.front = self.start_front(self.routes)

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the loop (the route table is the loop's) and return its result."""

        async def call() -> T:
            return fn(*args, **kwargs)

        return self.run(call())

    async def _start_upstream(self) -> int:
        self._runner = web.AppRunner(upstream_app(self.log), handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        await web.UnixSite(self._runner, self.unix_path).start()
        port: int = self._runner.addresses[0][1]
        return port

    @contextmanager
    def other_upstream(self) -> Iterator[tuple[int, UpstreamLog]]:
        """Another upstream like the default one (a dev server on another port of the
        container), with a log of its own."""
        log = UpstreamLog()
        runner = web.AppRunner(upstream_app(log), handle_signals=False)

        async def start() -> int:
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            port: int = runner.addresses[0][1]
            return port

        try:
            yield self.run(start()), log
        finally:
            self.run(runner.cleanup())

    def start_front(
        self,
        routes: RouteTable,
        api_upstream: str = "",
        *,
        on_ide_open: Callable[[Principal, int], None] | None = None,
        on_activity: Callable[[int, str], None] | None = None,
        clock: Callable[[], float] = time.time,
        **settings: Any,
    ) -> Front:
        """A front listening for the portal's origin (``port``) and, as a second port, for
        the IDE origin (``ide_port``)."""
        front = Front(
            ProxySettings(**settings),
            routes,
            JwtAuthenticator(KEY),
            api_upstream or f"127.0.0.1:{self.upstream_port}",
            tickets=TicketDesk(KEY, clock=clock),
            on_ide_open=on_ide_open,
            on_activity=on_activity,
        )
        self.run(front.start("127.0.0.1", 0))
        self.run(front.start_ide("127.0.0.1", 0))
        return front

    @contextmanager
    def other_front(
        self, api_upstream: str = "", **settings: Any
    ) -> Iterator[tuple[Front, RouteTable]]:
        """A front of its own (``settings`` and ``clock`` as :meth:`start_front` takes them)."""
        routes = RouteTable()
        front = self.start_front(routes, api_upstream, **settings)
        try:
            yield front, routes
        finally:
            self.run(front.close())

    def add_route(
        self,
        owner: str,
        *,
        ready: bool = True,
        reason: str = "",
        stopped: bool = False,
        routes: RouteTable | None = None,
        public_ports: frozenset[int] = frozenset(),
    ) -> int:
        vmid = next_vmid()
        route = Route(
            owner_id=owner,
            host="127.0.0.1",
            port=self.upstream_port,
            ready=ready,
            reason=reason,
            stopped=stopped,
            public_ports=public_ports,
        )
        self.call((self.routes if routes is None else routes).update, vmid, route)
        return vmid

    def seen(self, path_prefix: str) -> list[dict[str, Any]]:
        with self.log.lock:
            return [r for r in self.log.requests if r["path"].startswith(path_prefix)]

    def close(self) -> None:
        self.run(self.front.close())
        if self._runner is not None:
            self.run(self._runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
        self._tmp.cleanup()


def ide_client(port: int) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)


def headers_of(seen: dict[str, Any]) -> dict[str, str]:
    """Lower-cased header names → values (joined with ', ' when repeated)."""
    out: dict[str, str] = {}
    for name, value in seen["headers"]:
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def body_json(data: bytes) -> Any:
    return json.loads(data)
