"""The platform's public front: IDE requests go to containers, everything else to the API.

Per request under ``/dev/``, in this order (each step fails closed):

1. ``/dev/{vmid}/ide`` without the slash: 308 to ``/dev/{vmid}/ide/`` (query kept); any other
   shape under ``/dev/`` that is not ``/dev/{vmid}/ide/...``: 404.
2. WebSocket upgrades: ``Origin`` must be the portal's (``public_origin``) or the request's own
   host; else 403 (cross-site WebSocket hijacking). No Origin at all means not a browser: allowed,
   since only a browser attaches cookies on another site's behalf.
3. A session (portal cookie or Bearer token) that verifies and is not revoked; else 401 -- or for
   a browser navigating to a page (GET/HEAD with ``Accept: text/html``, not an upgrade) a 303 to
   ``login_path?next=<the page>`` so the user lands back in the IDE after logging in.
4. The caller owns ``vmid`` (admins own everything); else 404 with the API's body, the same
   whether the container exists or not.
5. The container is ready; else 503 saying why (provisioning, code-server down), at once.
6. Relay with ``/dev/{vmid}/ide`` stripped, the portal's session cookie and ``Authorization``
   removed, ``Host`` kept and ``X-Forwarded-*`` set; 502/504 when the container does not answer.

Everything else is relayed to the API app unchanged (cookies and Authorization included), with
the same relay code; WebSocket upgrades to it get the same Origin check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final, cast
from urllib.parse import quote

import httptools

from zlh.proxy import responses
from zlh.proxy.auth import Authenticator, Principal, SessionCookieSplitter, bearer_token
from zlh.proxy.headers import RequestHead, upstream_request_head
from zlh.proxy.listener import ClientConnection, Handler
from zlh.proxy.pool import Pool, UpstreamAddress, UpstreamConnection
from zlh.proxy.relay import Exchange, LocalResponse
from zlh.proxy.routes import CLOSE_POLICY, RouteTable
from zlh.proxy.settings import ProxySettings
from zlh.proxy.websocket import Tunnel

__all__ = ["Front"]

# Seconds a client is told to wait before trying a container that is not ready again.
_NOT_READY_RETRY_S: Final = 5


class Front:
    def __init__(
        self,
        settings: ProxySettings,
        routes: RouteTable,
        authenticator: Authenticator,
        api_upstream: UpstreamAddress | str,
        *,
        on_ide_open: Callable[[Principal, int], None] | None = None,
    ) -> None:
        """``on_ide_open(principal, vmid)`` is told of each page load of an IDE (the workbench
        document, not its assets or sockets), for the audit log; it must not block."""
        self.settings = settings
        self._on_ide_open = on_ide_open
        self.routes = routes
        self.authenticator = authenticator
        self.api = (
            api_upstream
            if isinstance(api_upstream, UpstreamAddress)
            else UpstreamAddress.parse(api_upstream)
        )
        self.pool = Pool(settings)
        self._connections: set[ClientConnection] = set()
        self._tunnels: set[Tunnel] = set()
        self._server: asyncio.Server | None = None
        self._cookies = SessionCookieSplitter(settings.session_cookie.encode())
        self._proto = settings.forwarded_proto
        origin = settings.public_origin
        self._public_origin = origin.encode() if origin else None
        self._default_host = origin.split("://", 1)[1].encode() if origin else b"localhost"

    # ---------------------------------------------------------------- lifecycle
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
        """Listen on ``host:port`` (port 0: any free one, see :attr:`port`)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: cast(
                asyncio.Protocol, ClientConnection(self._dispatch, self.settings, self._connections)
            ),
            host,
            port,
            reuse_address=True,
            backlog=2048,
        )
        return self._server

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the front is not listening; call start() first")
        # typeshed says tuple, asyncio returns a list: untyped, so compiled code checks neither.
        server: Any = self._server
        return int(server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and drop every connection, tunnels included."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.abort()
        for tunnel in list(self._tunnels):
            tunnel.terminate(1001, "going away")
        self.pool.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # ---------------------------------------------------------------- per request
    def _dispatch(self, conn: ClientConnection, req: RequestHead) -> Handler:
        target = req.target
        if not target.startswith(b"/"):
            if target == b"*":
                return self._to_api(conn, req)
            try:
                url = httptools.parse_url(target)
            except httptools.HttpParserInvalidURLError:
                return self._local(conn, req, 400, "malformed request target")
            target = (url.path or b"/") + (b"?" + url.query if url.query else b"")
            req.target = target
        if req.upgrading and (not req.websocket or req.method != b"GET"):
            return self._local(conn, req, 400, "only WebSocket upgrades (GET) are supported")
        if target.startswith(b"/dev/"):
            return self._to_ide(conn, req, target)
        return self._to_api(conn, req)

    def _to_ide(self, conn: ClientConnection, req: RequestHead, target: bytes) -> Handler:
        path, sep, query = target.partition(b"?")
        parts = path.split(b"/", 4)  # b"", b"dev", vmid, b"ide", rest
        digits = parts[2]
        if len(parts) < 4 or parts[3] != b"ide" or not digits.isdigit() or digits[0] == 48:
            return self._local(conn, req, 404, "not found")
        vmid = int(digits)
        if len(parts) == 4:
            location = path + b"/" + (b"?" + query if sep else b"")
            return LocalResponse(conn, responses.redirect(308, location), keep_alive=True)
        if req.websocket and not self._origin_ok(req):
            return self._local(conn, req, 403, "WebSocket from a foreign origin refused")
        token, other_cookies = self._cookies.split(req.cookies)
        principal = self._principal(token or bearer_token(req.authorization))
        if principal is None:
            return self._unauthenticated(conn, req)
        route = self.routes.get(vmid)
        if route is None or (route.owner_id != principal.user_id and not principal.is_admin):
            return self._local(conn, req, 404, f"no container {vmid}")  # the API's very words
        if not route.ready:
            # A browser waiting on the page reloads it when the Retry-After is up, so the IDE
            # opens by itself once provisioning ends or code-server is back.
            return self._local(
                conn,
                req,
                503,
                f"container {vmid} is not ready",
                route.reason or "it is still being provisioned",
                extra=b"Retry-After: %d\r\n" % _NOT_READY_RETRY_S,
                refresh_s=_NOT_READY_RETRY_S,
            )
        rest = b"/" + parts[4] + sep + query
        if self._on_ide_open is not None and not parts[4] and req.method == b"GET":
            self._on_ide_open(principal, vmid)
        head = upstream_request_head(
            req,
            rest,
            client_ip=conn.peer_ip,
            proto=self._proto,
            default_host=self._default_host,
            cookies=other_cookies,
            authorization=False,
        )
        on_upgrade = None
        if req.websocket:

            def on_upgrade(client: ClientConnection, up: UpstreamConnection, rest: bytes) -> None:
                self._tunnel(client, up, rest, vmid=vmid, principal=principal)

        exchange = Exchange(
            conn,
            req,
            head,
            address=route.upstream,
            pool=self.pool,
            settings=self.settings,
            vmid=vmid,
            on_upgrade=on_upgrade,
        )
        exchange.start()
        return exchange

    def _to_api(self, conn: ClientConnection, req: RequestHead) -> Handler:
        if req.websocket and not self._origin_ok(req):
            return self._local(conn, req, 403, "WebSocket from a foreign origin refused")
        head = upstream_request_head(
            req,
            req.target,
            client_ip=conn.peer_ip,
            proto=self._proto,
            default_host=self._default_host,
            cookies=req.cookies,
            authorization=True,
            forwarded_chain=True,
        )
        exchange = Exchange(
            conn,
            req,
            head,
            address=self.api,
            pool=self.pool,
            settings=self.settings,
            vmid=0,
            on_upgrade=self._api_tunnel if req.websocket else None,
        )
        exchange.start()
        return exchange

    # ---------------------------------------------------------------- checks
    def _principal(self, token: bytes) -> Principal | None:
        if not token:
            return None
        principal = self.authenticator.authenticate(token)
        if principal is None or self.routes.is_revoked(principal):
            return None
        return principal

    def _origin_ok(self, req: RequestHead) -> bool:
        if req.origin is None:
            return True
        origin = req.origin.strip().lower()
        if self._public_origin is not None and origin == self._public_origin:
            return True
        scheme, sep, netloc = origin.partition(b"://")
        host = req.host
        return (
            bool(sep)
            and scheme in (b"http", b"https")
            and host is not None
            and (netloc == host.strip().lower())
        )

    # ---------------------------------------------------------------- local answers
    def _local(
        self,
        conn: ClientConnection,
        req: RequestHead,
        status: int,
        message: str,
        detail: str = "",
        *,
        extra: bytes = b"",
        refresh_s: int = 0,
    ) -> Handler:
        keep_alive = req.keep_alive and not req.upgrading
        data = responses.error(
            status,
            message,
            detail,
            as_html=req.wants_html and not req.upgrading,
            keep_alive=keep_alive,
            head_only=req.method == b"HEAD",
            extra=extra,
            refresh_s=refresh_s,
        )
        return LocalResponse(conn, data, keep_alive=keep_alive)

    def _unauthenticated(self, conn: ClientConnection, req: RequestHead) -> Handler:
        if req.wants_html and req.method in (b"GET", b"HEAD") and not req.upgrading:
            location = self.settings.login_path.encode() + b"?next=" + quote(req.target).encode()
            keep_alive = req.keep_alive
            return LocalResponse(
                conn,
                responses.redirect(303, location, keep_alive=keep_alive),
                keep_alive=keep_alive,
            )
        return self._local(
            conn,
            req,
            401,
            "Not authenticated",
            "log in to the portal (session cookie) or send Authorization: Bearer <token>",
            extra=b'WWW-Authenticate: Bearer realm="zlh"\r\n',
        )

    # ---------------------------------------------------------------- WebSockets
    def _tunnel(
        self,
        client: ClientConnection,
        upstream: UpstreamConnection,
        upstream_rest: bytes,
        *,
        vmid: int = 0,
        principal: Principal | None = None,
    ) -> None:
        client_transport, client_rest = client.detach()
        tunnel = Tunnel(
            client_transport,
            upstream.transport,
            routes=self.routes,
            settings=self.settings,
            live=self._tunnels,
            vmid=vmid,
            principal=principal,
        )
        tunnel.start(client_rest, upstream_rest)
        if principal is not None and not self._still_allowed(vmid, principal):
            tunnel.terminate(CLOSE_POLICY, "access revoked")  # revoked during the handshake

    def _still_allowed(self, vmid: int, principal: Principal) -> bool:
        route = self.routes.get(vmid)
        return (
            route is not None
            and not self.routes.is_revoked(principal)
            and (principal.is_admin or route.owner_id == principal.user_id)
        )

    def _api_tunnel(
        self, client: ClientConnection, upstream: UpstreamConnection, upstream_rest: bytes
    ) -> None:
        self._tunnel(client, upstream, upstream_rest)
