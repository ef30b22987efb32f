"""The platform's public front: IDEs on the IDE origin, everything else to the API.

Two kinds of origin, never mixed (zlh.proxy.ideorigin): the portal's, where the API and the
portal live, and the IDE origin, where only IDEs and ``/_zlh/auth`` are served. A request is on
the IDE origin when it arrived on the IDE listener (:meth:`Front.start_ide`, the second-port
form) or its ``Host`` is ``ide_origin``'s host (or, for ``*.`` origins, ``<vmid>.`` that host).

Every request target must be a path (origin form): absolute-form and ``*`` get 400.

On the portal's origin, ``/dev/{vmid}/ide...`` serves nothing: a page load is sent (303) to the
portal's ``/c/{vmid}/ide``, which signs in if needed and fetches a ticket; anything else is 404.
Everything else is relayed to the API unchanged (cookies and Authorization included); WebSocket
upgrades to it must come from the portal's origin (``public_origin``) or the request's own host.

On the IDE origin, per request (each step fails closed):

1. ``/_zlh/auth?ticket=...``: the ticket (zlh.proxy.tickets) is taken once; a forged, expired or
   used one is 401, one for another container (the wildcard form's host names it) or for one
   the caller may not open is 404. Else 303 to the IDE with the IDE cookie, scoped to this
   container (Path ``/dev/{vmid}/``, or its own host), ``HttpOnly``, ``SameSite=Lax``, ``Secure``
   over TLS.
2. Path forms: ``/dev/{vmid}/ide`` without the slash: 308 to ``/dev/{vmid}/ide/`` (query kept);
   anything else that is not ``/dev/{vmid}/ide/...``: 404. Wildcard form: every path is the IDE
   of the vmid in the host name. Both forms: the session notice's script and state
   (zlh.proxy.sessionnotice) are the front's own answers.
3. WebSocket upgrades: ``Origin`` must be the request's own origin; else 403. No Origin at all
   means not a browser: allowed, since only a browser attaches cookies on a page's behalf.
4. The IDE cookie for this very container (one for another is the 404 of step 5), else
   ``Authorization: Bearer <session token>`` for programs. The portal's session cookie counts
   for nothing here. Neither revoked; else 401 -- or for a browser loading a page, a 303 to the
   portal's ``/c/{vmid}/ide`` (when the portal's origin is known), which comes back with a
   ticket.
5. The caller owns ``vmid`` (admins only with ``admin_ide_access``); else 404 with the API's
   body, the same whether the container exists or not.
6. The container is ready; else 503 saying why (provisioning, code-server down), at once. A
   browser loading a page of a stopped container goes (303) to the portal's ``/c/{vmid}/ide``,
   which starts it, shows its progress and comes back once it is ready.
7. Relay with the path form's ``/dev/{vmid}/ide`` stripped, the platform's cookies and
   ``Authorization`` removed, ``Host`` kept and ``X-Forwarded-*`` set; 502/504 when the container
   does not answer. Its responses lose any ``Set-Cookie`` that would shadow a platform cookie and
   get ``frame-ancestors 'self' <portal>``, ``nosniff`` and a ``Referrer-Policy``; the IDE's
   first page gets the session notice's script tag.

Port previews (zlh.proxy.previews) take the same path on the IDE origin: ``/dev/{vmid}/port/
{port}/...`` (308 without the slash), or every path of the host ``{port}-{vmid}.`` in the
wildcard form (its ``/_zlh/auth`` included). Ports below 1024 and the platform's own are 403.
A port the owner made public (``Route.public_ports``) is relayed for anyone, no credentials
forwarded, WebSockets from any origin, sandboxed on a shared origin; else steps 3 to 6, except
that nobody signed in gets 404 and the container need only run. The relay goes to that port of
the container, the prefix stripped unless the ``zlh_prefix`` cookie (set by a page load with
``?zlh-prefix=keep``) keeps it. A ticket's ``next`` lands on a preview of its container.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Final, cast
from urllib.parse import parse_qs, quote

from zlh.proxy import responses, sessionnotice
from zlh.proxy.auth import Authenticator, Principal, SessionCookieSplitter, bearer_token
from zlh.proxy.deferred import Deferred
from zlh.proxy.headers import PORTAL_RULES, RequestHead, ResponseRules, upstream_request_head
from zlh.proxy.ideorigin import IdeOrigin
from zlh.proxy.listener import ClientConnection, Handler
from zlh.proxy.metrics import FrontStats, RouteStats
from zlh.proxy.pool import Pool, UpstreamAddress, UpstreamConnection
from zlh.proxy.previews import MODE_COOKIE, is_previewable, landing, refusal, take_mode_flag
from zlh.proxy.relay import Exchange, LocalResponse
from zlh.proxy.routes import CLOSE_POLICY, Route, RouteTable
from zlh.proxy.settings import ProxySettings
from zlh.proxy.tickets import AUTH_PATH, IDE_COOKIE, Ticket, TicketDesk
from zlh.proxy.websocket import Tunnel

__all__ = ["Front"]

# Seconds a client is told to wait before trying a container that is not ready again.
_NOT_READY_RETRY_S: Final = 5
# A preview's requests count as use of its container (idle auto-stop), told at most this often.
_PREVIEW_NOTE_S: Final = 1.0
_PREVIEW_NOTED_MAX: Final = 256  # containers whose last preview note is remembered
_AUTH_PATH: Final = AUTH_PATH.encode()
_IDE_COOKIE: Final = IDE_COOKIE.encode()
_SELF_ONLY: Final = b"Content-Security-Policy: frame-ancestors 'self'\r\n"
_MODE_COOKIE: Final = MODE_COOKIE.encode()
# A public preview on an origin other containers' IDEs share runs in an opaque origin: its
# scripts, anyone's code, must not reach a visitor's IDE cookies for other paths.
_SANDBOX: Final = (
    b"Content-Security-Policy: sandbox allow-scripts allow-forms allow-popups allow-modals "
    b"allow-downloads\r\n"
)
_FOREVER: Final = 4102444800.0  # 2100-01-01: a public preview's visitor has no session to end


class Front:
    def __init__(
        self,
        settings: ProxySettings,
        routes: RouteTable,
        authenticator: Authenticator,
        api_upstream: UpstreamAddress | str,
        *,
        tickets: TicketDesk | None = None,
        on_ide_open: Callable[[Principal, int], None] | None = None,
        on_activity: Callable[[int, str], None] | None = None,
        reuse_port: bool = False,
    ) -> None:
        """``tickets`` takes ``/_zlh/auth`` tickets and verifies IDE cookies (without it the
        IDE origin takes Bearer tokens only). ``on_ide_open(principal, vmid)`` is told of each
        page load of an IDE (the workbench document, not its assets or sockets), for the audit
        log; ``on_activity(vmid, kind)`` of each use of an IDE its page reports (idle
        auto-stop). Neither may block. ``reuse_port``: listen with ``SO_REUSEPORT``, so that
        front workers in other processes share the ports (zlh.proxy.worker)."""
        self.settings = settings
        self._reuse_port = reuse_port
        # Set when the process drains: new WebSockets get 503, open ones run on.
        self.draining = False
        self._on_ide_open = on_ide_open
        self._on_activity = on_activity
        # When each container's preview use was last reported (at most every _PREVIEW_NOTE_S).
        self._preview_noted: dict[int, float] = {}
        self.routes = routes
        self.authenticator = authenticator
        self._tickets = tickets
        self.api = (
            api_upstream
            if isinstance(api_upstream, UpstreamAddress)
            else UpstreamAddress.parse(api_upstream)
        )
        self.pool = Pool(settings)
        self._connections: set[ClientConnection] = set()
        self._tunnels: set[Tunnel] = set()
        self.stats = FrontStats()  # read by zlh.api.metrics at scrape time
        self._server: asyncio.Server | None = None
        self._ide_server: asyncio.Server | None = None
        names = settings.platform_cookies
        # On the IDE origin: the IDE cookie is read, every platform cookie removed.
        self._ide_cookies = SessionCookieSplitter(_IDE_COOKIE, drop=names)
        self._mode_cookies = SessionCookieSplitter(_MODE_COOKIE)
        self._proto = settings.forwarded_proto
        origin = settings.public_origin
        self._public_origin = origin.encode() if origin else None
        self._default_host = origin.split("://", 1)[1].encode() if origin else b"localhost"
        self._admin_ide_access = settings.admin_ide_access
        ide = IdeOrigin.parse(settings.ide_origin) if settings.ide_origin else None
        self._ide_host = ide.netloc.encode() if ide is not None and not ide.wildcard else None
        self._ide_suffix = b"." + ide.netloc.encode() if ide is not None and ide.wildcard else None
        self._ide_by_host = ide is not None
        self._secure = ide.secure if ide is not None else self._proto == b"https"
        frames = (
            _SELF_ONLY if origin is None else _SELF_ONLY[:-2] + b" " + origin.encode() + b"\r\n"
        )
        cookie_names = frozenset((*(n.lower() for n in names), _MODE_COOKIE))
        self._ide_rules = ResponseRules(frames, always=True, cookie_names=cookie_names)
        self._sandbox_rules = ResponseRules(
            frames + _SANDBOX, always=True, cookie_names=cookie_names
        )

    # ---------------------------------------------------------------- lifecycle
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
        """Listen for the portal's origin (and a host-named IDE origin) on ``host:port``
        (port 0: any free one, see :attr:`port`)."""
        self._server = await self._listen(self._dispatch, host, port)
        return self._server

    async def start_ide(self, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
        """Listen for the IDE origin only on ``host:port`` (the second-port form): nothing
        but IDEs and ``/_zlh/auth`` is served there (see :attr:`ide_port`)."""
        self._ide_server = await self._listen(self._dispatch_ide, host, port)
        return self._ide_server

    async def _listen(
        self, dispatch: Callable[[ClientConnection, RequestHead], Handler], host: str, port: int
    ) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(
            lambda: cast(
                asyncio.Protocol, ClientConnection(dispatch, self.settings, self._connections)
            ),
            host,
            port,
            reuse_address=True,
            reuse_port=self._reuse_port or None,
            backlog=2048,
        )

    @property
    def port(self) -> int:
        return _port_of(self._server)

    @property
    def ide_port(self) -> int:
        return _port_of(self._ide_server)

    async def close(self) -> None:
        """Stop listening and drop every connection, tunnels included."""
        servers = [s for s in (self._server, self._ide_server) if s is not None]
        for server in servers:
            server.close()
        for conn in list(self._connections):
            conn.abort()
        for tunnel in list(self._tunnels):
            tunnel.terminate(1001, "going away")
        self.pool.close()
        for server in servers:
            await server.wait_closed()
        self._server = self._ide_server = None

    # ---------------------------------------------------------------- per request
    def _dispatch(self, conn: ClientConnection, req: RequestHead) -> Handler:
        refused = self._refused(conn, req)
        if refused is not None:
            return refused
        if self._ide_by_host and req.host is not None:
            host = req.host.strip().lower()
            if host == self._ide_host:
                return self._ide_paths(conn, req)
            suffix = self._ide_suffix
            if suffix is not None and (host.endswith(suffix) or host == suffix[1:]):
                # The bare domain is no container's, and not the portal's either: its
                # subdomains' pages may set cookies for it.
                return self._ide_wildcard(conn, req, host[: max(0, len(host) - len(suffix))])
        if req.target.startswith(b"/dev/"):
            return self._portal_dev(conn, req)
        return self._to_api(conn, req)

    def _dispatch_ide(self, conn: ClientConnection, req: RequestHead) -> Handler:
        refused = self._refused(conn, req)
        if refused is not None:
            return refused
        return self._ide_paths(conn, req)

    def _refused(self, conn: ClientConnection, req: RequestHead) -> Handler | None:
        if not req.target.startswith(b"/"):
            # Absolute-form would let the target's authority disagree with Host, which picks
            # the origin; asterisk-form (OPTIONS *) asks nothing a browser needs.
            return self._local(
                conn, req, 400, "malformed request target", "send a path (origin form)"
            )
        if req.upgrading and (not req.websocket or req.method != b"GET"):
            return self._local(conn, req, 400, "only WebSocket upgrades (GET) are supported")
        if req.upgrading and self.draining:
            return self._local(
                conn,
                req,
                503,
                "draining",
                "this server is shutting down and takes no new WebSockets; connect again",
                extra=b"Retry-After: 1\r\n",
            )
        return None

    def _portal_dev(self, conn: ClientConnection, req: RequestHead) -> Handler:
        """``/dev/...`` on the portal's origin: IDEs live on the IDE origin."""
        self.stats.api.requests += 1
        parts = req.target.partition(b"?")[0].split(b"/", 4)
        digits = parts[2]
        if (
            len(parts) >= 4
            and parts[3] == b"ide"
            and _is_vmid(digits)
            and req.method in (b"GET", b"HEAD")
            and not req.upgrading
        ):
            return LocalResponse(
                conn,
                responses.redirect(303, b"/c/" + digits + b"/ide", keep_alive=req.keep_alive),
                keep_alive=req.keep_alive,
            )
        return self._local(conn, req, 404, "not found", "IDEs are served on the IDE origin")

    def _ide_paths(self, conn: ClientConnection, req: RequestHead) -> Handler:
        """The IDE origin's path forms: ``/dev/{vmid}/ide/...`` and the ticket exchange."""
        self.stats.ide.requests += 1
        target = req.target
        path, sep, query = target.partition(b"?")
        if path == _AUTH_PATH:
            return self._exchange_ticket(conn, req, query, 0)
        if path == sessionnotice.SCRIPT_PATH:
            return self._notice_script(conn, req)
        parts = path.split(b"/", 4)  # b"", b"dev", vmid, b"ide", rest
        if len(parts) < 4 or parts[1] != b"dev" or not _is_vmid(parts[2]):
            return self._local(conn, req, 404, "not found")
        if path == b"/dev/" + parts[2] + sessionnotice.STATE_PATH:
            return self._session_state(conn, req, int(parts[2]), query)
        if parts[3] != b"ide":
            if parts[3] == b"port" and len(parts) == 5:
                return self._preview_path(conn, req, int(parts[2]), parts[4], sep, query)
            return self._local(conn, req, 404, "not found")
        if len(parts) == 4:
            location = path + b"/" + (b"?" + query if sep else b"")
            return LocalResponse(conn, responses.redirect(308, location), keep_alive=True)
        rest = b"/" + parts[4] + sep + query
        return self._to_ide(conn, req, int(parts[2]), rest, not parts[4], False)

    def _ide_wildcard(self, conn: ClientConnection, req: RequestHead, label: bytes) -> Handler:
        """``<vmid>.<ide host>``: every path is that container's IDE."""
        self.stats.ide.requests += 1
        if not _is_vmid(label):
            return self._preview_host(conn, req, label)
        vmid = int(label)
        target = req.target
        path, _, query = target.partition(b"?")
        if path == _AUTH_PATH:
            return self._exchange_ticket(conn, req, query, vmid)
        if path == sessionnotice.SCRIPT_PATH:
            return self._notice_script(conn, req)
        if path == sessionnotice.STATE_PATH:
            return self._session_state(conn, req, vmid, query)
        return self._to_ide(conn, req, vmid, target, path == b"/", True)

    def _to_ide(
        self,
        conn: ClientConnection,
        req: RequestHead,
        vmid: int,
        rest: bytes,
        page: bool,
        wildcard: bool,
    ) -> Handler:
        if req.websocket and not _same_origin(req):
            return self._local(conn, req, 403, "WebSocket from a foreign origin refused")
        admitted = self._admit(conn, req, vmid, None)
        if not isinstance(admitted, tuple):
            return admitted
        principal, route, other_cookies = admitted
        if self._on_ide_open is not None and page and req.method == b"GET":
            self._on_ide_open(principal, vmid)
        tail = b""
        if page and req.method == b"GET" and req.wants_html and not req.upgrading:
            tail = self._notice_tag(req, vmid, wildcard)
        return self._relay(
            conn, req, vmid, principal, rest, other_cookies, route.upstream, self._ide_rules, tail
        )

    def _relay(
        self,
        conn: ClientConnection,
        req: RequestHead,
        vmid: int,
        principal: Principal,
        rest: bytes,
        cookies: tuple[bytes, ...],
        address: UpstreamAddress,
        rules: ResponseRules,
        tail: bytes = b"",
    ) -> Handler:
        """Step 7: relay to ``address`` as ``rest``, a WebSocket as a tunnel of
        ``principal``'s; ``tail`` (the session notice's tag) goes into the page."""
        head = upstream_request_head(
            req,
            rest,
            client_ip=conn.peer_ip,
            proto=self._proto,
            default_host=self._default_host,
            cookies=cookies,
            authorization=False,
        )
        if tail:
            head = sessionnotice.without_accept_encoding(head)
        on_upgrade = None
        if req.websocket:

            def on_upgrade(client: ClientConnection, up: UpstreamConnection, rest: bytes) -> None:
                self._tunnel(client, up, rest, vmid=vmid, principal=principal)

        exchange = Exchange(
            conn,
            req,
            head,
            address=address,
            pool=self.pool,
            settings=self.settings,
            vmid=vmid,
            on_upgrade=on_upgrade,
            rules=rules,
            tail=tail,
            stats=self.stats.ide,
        )
        exchange.start()
        return exchange

    def _admit(
        self,
        conn: ClientConnection,
        req: RequestHead,
        vmid: int,
        preview: tuple[int, bytes] | None,
    ) -> tuple[Principal, Route, tuple[bytes, ...]] | Handler:
        """Steps 4 to 6: who is calling, may they open ``vmid``, is it ready; the caller, its
        route and the Cookie headers without the platform's, else the answer that refuses.
        ``preview`` is a preview's port and the page asked for (the portal's IDE page comes
        back to it); with one, nobody signed in gets the 404 of a preview that is not public,
        and the container must be running, not its code-server."""
        principal, other_cookies = self._caller(req)
        if principal is None:
            if preview is not None:
                return self._local(conn, req, 404, "not found", "open previews from the portal")
            return self._unauthenticated(conn, req, vmid)
        route = self.routes.get(vmid)
        if route is None or not self._may_open(principal, vmid, route):
            return self._local(conn, req, 404, f"no container {vmid}")  # the API's very words
        if route.stopped:
            resume = b""
            if preview is not None:
                port, page = preview
                resume = b"?port=%d&next=%s" % (port, quote(page, safe="/").encode())
            start = self._portal_redirect(conn, req, vmid, resume)
            if start is not None:
                return start  # the portal's IDE page starts it and comes back when it is ready
        if not (route.ready if preview is None else route.running):
            return self._not_ready(conn, req, vmid, route)
        return principal, route, other_cookies

    def _caller(self, req: RequestHead) -> tuple[Principal | None, tuple[bytes, ...]]:
        """Who the IDE cookie (else a Bearer token) proves, unrevoked; and the Cookie headers
        without the platform's."""
        token, other_cookies = self._ide_cookies.split(req.cookies)
        if token and self._tickets is not None:
            return self._checked(self._tickets.authenticator, token), other_cookies
        return self._checked(self.authenticator, bearer_token(req.authorization)), other_cookies

    def _not_ready(
        self, conn: ClientConnection, req: RequestHead, vmid: int, route: Route
    ) -> Handler:
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
            vmid=vmid,
        )

    # ---------------------------------------------------------------- previews
    def _preview_path(
        self,
        conn: ClientConnection,
        req: RequestHead,
        vmid: int,
        after: bytes,
        sep: bytes,
        query: bytes,
    ) -> Handler:
        """``/dev/{vmid}/port/{after}``: ``{port}/...``; without the slash, 308 to it."""
        digits, slash, tail = after.partition(b"/")
        if not _is_vmid(digits) or len(digits) > 5:
            return self._local(conn, req, 404, "not found")
        if not slash:
            location = b"/dev/%d/port/%s/" % (vmid, digits) + (b"?" + query if sep else b"")
            return LocalResponse(conn, responses.redirect(308, location), keep_alive=True)
        return self._to_preview(conn, req, vmid, int(digits), b"/" + tail, query, False)

    def _preview_host(self, conn: ClientConnection, req: RequestHead, label: bytes) -> Handler:
        """``{port}-{vmid}.<ide host>``: every path is that preview's, the app at ``/``."""
        digits, dash, vmid_digits = label.partition(b"-")
        if not dash or not _is_vmid(digits) or len(digits) > 5 or not _is_vmid(vmid_digits):
            return self._local(conn, req, 404, "not found")
        vmid, port = int(vmid_digits), int(digits)
        path, _, query = req.target.partition(b"?")
        if path == _AUTH_PATH:
            return self._exchange_ticket(conn, req, query, vmid, port)
        return self._to_preview(conn, req, vmid, port, path, query, True)

    def _to_preview(
        self,
        conn: ClientConnection,
        req: RequestHead,
        vmid: int,
        port: int,
        path: bytes,
        query: bytes,
        own_host: bool,
    ) -> Handler:
        """The IDE's checks, then the container's ``port``. A public preview skips them and
        carries nobody's credentials (so its WebSockets may come from any origin)."""
        if not is_previewable(port):
            return self._local(conn, req, 403, "not previewable", refusal(port), vmid=vmid)
        route = self.routes.get(vmid)
        flag, query = take_mode_flag(query)
        if route is not None and port in route.public_ports:
            if not route.running:
                return self._not_ready(conn, req, vmid, route)
            caller, other_cookies = self._caller(req)
            if caller is not None and self._may_open(caller, vmid, route):
                principal = caller  # its owner: making it private again leaves it open
            else:
                principal = Principal("", "", False, _FOREVER, vmid=vmid, public_port=port)
        else:
            if req.websocket and not _same_origin(req):
                return self._local(conn, req, 403, "WebSocket from a foreign origin refused")
            target = path + (b"?" + query if query else b"")
            if not own_host:
                target = b"/dev/%d/port/%d" % (vmid, port) + target
            if flag is not None:
                target += (b"&" if query else b"?") + b"zlh-prefix=" + flag
            admitted = self._admit(conn, req, vmid, (port, target))
            if not isinstance(admitted, tuple):
                return admitted
            principal, route, other_cookies = admitted
        if port == route.port:
            return self._local(conn, req, 403, "not previewable", refusal(port), vmid=vmid)
        mode, other_cookies = self._mode_cookies.split(other_cookies)
        if flag is not None:
            if not flag:
                return self._local(
                    conn, req, 400, "zlh-prefix must be keep or strip", "e.g. ?zlh-prefix=keep"
                )
            if req.method in (b"GET", b"HEAD") and not req.upgrading:
                return self._choose_mode(conn, req, vmid, port, path, query, flag, own_host)
            mode = flag
        keep = mode == b"keep" and not own_host
        rest = (b"/dev/%d/port/%d" % (vmid, port) if keep else b"") + path
        if query:
            rest += b"?" + query
        if self._on_activity is not None:
            now = time.monotonic()
            if now - self._preview_noted.get(vmid, 0.0) >= _PREVIEW_NOTE_S:
                if len(self._preview_noted) >= _PREVIEW_NOTED_MAX:
                    # A note older than the interval tells nothing: forget those (deleted
                    # containers' too), so the map holds only the last second's.
                    noted = self._preview_noted
                    self._preview_noted = {
                        v: t for v, t in noted.items() if now - t < _PREVIEW_NOTE_S
                    }
                self._preview_noted[vmid] = now
                self._on_activity(vmid, "preview")
        # Anyone's code on an origin other containers' IDEs share runs sandboxed.
        shared_origin = route.owner_id != principal.user_id and not own_host
        rules = self._sandbox_rules if shared_origin else self._ide_rules
        address = UpstreamAddress(route.host, port)
        return self._relay(conn, req, vmid, principal, rest, other_cookies, address, rules)

    def _choose_mode(
        self,
        conn: ClientConnection,
        req: RequestHead,
        vmid: int,
        port: int,
        path: bytes,
        query: bytes,
        mode: bytes,
        own_host: bool,
    ) -> Handler:
        """A page load with ``?zlh-prefix=``: 303 to the same page without the flag, and the
        mode cookie for this preview's path (none on a preview's own host: always ``/``)."""
        base = b"" if own_host else b"/dev/%d/port/%d" % (vmid, port)
        location = base + path + (b"?" + query if query else b"")
        cookie = b""
        if not own_host:
            cookie = b"Set-Cookie: %s=%s; Path=%s/; %sHttpOnly; SameSite=Lax%s\r\n" % (
                _MODE_COOKIE,
                mode,
                base,
                b"Max-Age=0; " if mode == b"strip" else b"",
                b"; Secure" if self._secure else b"",
            )
        keep_alive = req.keep_alive
        return LocalResponse(
            conn,
            responses.redirect(303, location, keep_alive=keep_alive, extra=cookie),
            keep_alive=keep_alive,
        )

    # ---------------------------------------------------------------- tickets
    def _exchange_ticket(
        self,
        conn: ClientConnection,
        req: RequestHead,
        query: bytes,
        host_vmid: int,
        host_port: int = 0,
    ) -> Handler:
        """``/_zlh/auth?ticket=...``: the IDE cookie for a good ticket, once (step 1). With
        ``next``, one of the container's previews' paths, the browser lands there instead
        (``host_port``: the preview whose own host this is)."""
        tickets = self._tickets
        if tickets is None or req.method not in (b"GET", b"HEAD") or req.upgrading:
            return self._local(conn, req, 404, "not found")
        fields = parse_qs(query.decode("latin-1"))
        given = fields.get("ticket", [""])[0]
        if not given:
            return self._ticket_taken(conn, req, fields, None, host_vmid, host_port)
        # Taking it may write to the database the replicas share: off the event loop.
        return Deferred(
            tickets.take(given),
            lambda ticket: self._ticket_taken(conn, req, fields, ticket, host_vmid, host_port),
        )

    def _ticket_taken(
        self,
        conn: ClientConnection,
        req: RequestHead,
        fields: dict[str, list[str]],
        ticket: Ticket | None,
        host_vmid: int,
        host_port: int,
    ) -> Handler:
        """The answer to ``/_zlh/auth`` once its ticket was taken (None: refused)."""
        tickets = self._tickets
        assert tickets is not None
        if ticket is None:
            return self._local(
                conn,
                req,
                401,
                "This IDE link has expired or was already used",
                "open the IDE from the portal again",
            )
        vmid = ticket.vmid
        principal = Principal(
            user_id=ticket.user_id,
            sid=ticket.sid,
            is_admin=ticket.admin,
            expires_at=ticket.session_expires_at,
            issued_at=ticket.session_issued_at,
            vmid=vmid,
        )
        if self.routes.is_revoked(principal):
            return self._local(conn, req, 401, "session ended", "log in to the portal again")
        route = self.routes.get(vmid)
        if (host_vmid and host_vmid != vmid) or route is None:
            return self._local(conn, req, 404, f"no container {host_vmid or vmid}")
        if not self._may_open(principal, vmid, route):
            return self._local(conn, req, 404, f"no container {vmid}")
        location = _landing(vmid, host_vmid != 0)
        if "next" in fields:
            found = landing(fields["next"][0], vmid, own_host=host_port != 0)
            if found is None:
                return self._local(conn, req, 400, "next is not a preview of this container")
            location = found.encode("latin-1")
        value, max_age = tickets.cookie_value(ticket)
        wildcard = host_vmid != 0
        path = b"/" if wildcard else b"/dev/%d/" % vmid
        cookie = b"Set-Cookie: %s=%s; Path=%s; Max-Age=%d; HttpOnly; SameSite=Lax%s\r\n" % (
            _IDE_COOKIE,
            value.encode(),
            path,
            max_age,
            b"; Secure" if self._secure else b"",
        )
        keep_alive = req.keep_alive
        return LocalResponse(
            conn,
            responses.redirect(303, location, keep_alive=keep_alive, extra=cookie),
            keep_alive=keep_alive,
        )

    def _notice_script(self, conn: ClientConnection, req: RequestHead) -> Handler:
        if req.method not in (b"GET", b"HEAD") or req.upgrading:
            return self._local(conn, req, 404, "not found")
        data = sessionnotice.script_response(
            keep_alive=req.keep_alive, head_only=req.method == b"HEAD"
        )
        return LocalResponse(conn, data, keep_alive=req.keep_alive)

    def _notice_tag(self, req: RequestHead, vmid: int, wildcard: bool) -> bytes:
        """The session notice's script tag for the IDE page of ``vmid``."""
        sign_in = _landing(vmid, wildcard).decode()
        portal = self._portal_origin(req)
        return sessionnotice.script_tag(
            sessionnotice.state_path(vmid, wildcard),
            sign_in,
            sign_in if portal is None else portal.decode("latin-1") + "/",
        )

    def _session_state(
        self, conn: ClientConnection, req: RequestHead, vmid: int, query: bytes
    ) -> Handler:
        """Whether the IDE cookie still opens ``vmid``: 204, else 401 or 404 as the IDE's own
        requests would get (zlh.proxy.sessionnotice). A ``POST ?activity=ide|terminal`` asks
        the same and, when it is 204, tells ``on_activity`` that a person used the IDE."""
        activity = sessionnotice.activity_kind(query) if req.method == b"POST" else None
        if (req.method not in (b"GET", b"HEAD") and activity is None) or req.upgrading:
            return self._local(conn, req, 404, "not found")
        token, _ = self._ide_cookies.split(req.cookies)
        tickets = self._tickets
        principal = (
            self._checked(tickets.authenticator, token) if token and tickets is not None else None
        )
        if principal is None:
            return self._local(conn, req, 401, "session ended", "sign in to the portal again")
        if not self._still_allowed(vmid, principal):
            return self._local(conn, req, 404, f"no container {vmid}")
        if activity is not None and self._on_activity is not None:
            self._on_activity(vmid, activity)
        return LocalResponse(conn, responses.empty(req.keep_alive), keep_alive=req.keep_alive)

    def _to_api(self, conn: ClientConnection, req: RequestHead) -> Handler:
        self.stats.api.requests += 1
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
            rules=PORTAL_RULES,
            stats=self.stats.api,
        )
        exchange.start()
        return exchange

    # ---------------------------------------------------------------- checks
    def _checked(self, authenticator: Authenticator, token: bytes) -> Principal | None:
        if not token:
            return None
        principal = authenticator.authenticate(token)
        if principal is None or self.routes.is_revoked(principal):
            return None
        return principal

    def _may_open(self, principal: Principal, vmid: int, route: Route) -> bool:
        """Owner, a user it is shared with to use, or admin where admins may; an IDE cookie
        opens only its own container."""
        if principal.vmid and principal.vmid != vmid:
            return False
        return route.admits(principal.user_id) or (principal.is_admin and self._admin_ide_access)

    def _origin_ok(self, req: RequestHead) -> bool:
        if req.origin is None:
            return True
        origin = req.origin.strip().lower()
        if self._public_origin is not None and origin == self._public_origin:
            return True
        return _same_origin(req)

    def _portal_origin(self, req: RequestHead) -> bytes | None:
        """The portal's origin as this request's browser reaches it, or None when it is
        unknown (no ``public_origin``, and the IDE origin is not a second port)."""
        if self._public_origin is not None:
            return self._public_origin
        if self._server is not None and req.host is not None and not self._ide_by_host:
            return b"%s://%s:%d" % (self._proto, _hostname(req.host), self.port)
        return None

    def _portal_page(self, req: RequestHead, vmid: int, resume: bytes = b"") -> bytes | None:
        """The portal's ``/c/{vmid}/ide`` (plus ``resume``, its query) as an absolute URL, or
        None (``_portal_origin``)."""
        origin = self._portal_origin(req)
        return None if origin is None else origin + b"/c/%d/ide" % vmid + resume

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
        vmid: int = 0,
    ) -> Handler:
        """An error page (JSON for clients, the portal's look for browsers) linking back to
        the portal, to container ``vmid``'s page when given."""
        keep_alive = req.keep_alive and not req.upgrading
        as_html = req.wants_html and not req.upgrading
        home, back = "/", None
        if as_html:
            home = (self._portal_origin(req) or b"").decode("latin-1") + "/"
            if vmid:
                back = (f"{home}c/{vmid}", f"Container {vmid} in the portal")
        data = responses.error(
            status,
            message,
            detail,
            as_html=as_html,
            keep_alive=keep_alive,
            head_only=req.method == b"HEAD",
            extra=extra,
            refresh_s=refresh_s,
            home=home,
            back=back,
        )
        return LocalResponse(conn, data, keep_alive=keep_alive)

    def _portal_redirect(
        self, conn: ClientConnection, req: RequestHead, vmid: int, resume: bytes = b""
    ) -> Handler | None:
        """A browser's page load goes (303) to the portal's IDE page of ``vmid``, if known."""
        if req.wants_html and req.method in (b"GET", b"HEAD") and not req.upgrading:
            location = self._portal_page(req, vmid, resume)
            if location is not None:
                keep_alive = req.keep_alive
                return LocalResponse(
                    conn,
                    responses.redirect(303, location, keep_alive=keep_alive),
                    keep_alive=keep_alive,
                )
        return None

    def _unauthenticated(self, conn: ClientConnection, req: RequestHead, vmid: int) -> Handler:
        redirect = self._portal_redirect(conn, req, vmid)
        if redirect is not None:
            return redirect
        return self._local(
            conn,
            req,
            401,
            "Not authenticated",
            "open the IDE from the portal, or send Authorization: Bearer <token>",
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
            stats=self.stats.ide if vmid else self.stats.api,
        )
        tunnel.start(client_rest, upstream_rest)
        if principal is not None and not self._still_allowed(vmid, principal):
            tunnel.terminate(CLOSE_POLICY, "access revoked")  # revoked during the handshake

    def open_tunnels(self) -> int:
        """How many WebSocket tunnels are open now, of every route class."""
        return len(self._tunnels)

    def open_websockets(self, stats: RouteStats) -> int:
        """How many WebSocket tunnels of the route class ``stats`` are open now."""
        return sum(1 for tunnel in list(self._tunnels) if tunnel.stats is stats)

    def _still_allowed(self, vmid: int, principal: Principal) -> bool:
        route = self.routes.get(vmid)
        if principal.public_port:
            return route is not None and principal.public_port in route.public_ports
        return (
            route is not None
            and not self.routes.is_revoked(principal)
            and self._may_open(principal, vmid, route)
        )

    def _api_tunnel(
        self, client: ClientConnection, upstream: UpstreamConnection, upstream_rest: bytes
    ) -> None:
        self._tunnel(client, upstream, upstream_rest)


def _port_of(server: asyncio.Server | None) -> int:
    if server is None:
        raise RuntimeError("the front is not listening there; call start() first")
    # typeshed says tuple, asyncio returns a list: untyped, so compiled code checks neither.
    found: Any = server
    return int(found.sockets[0].getsockname()[1])


def _landing(vmid: int, wildcard: bool) -> bytes:
    """The IDE's first page on the IDE origin: where a ticket lands and sign-in comes back to."""
    return b"/" if wildcard else b"/dev/%d/ide/" % vmid


def _is_vmid(digits: bytes) -> bool:
    return digits.isdigit() and digits[0] != 48


def _hostname(host: bytes) -> bytes:
    """``Host`` without its port (an IPv6 address keeps its brackets)."""
    host = host.strip()
    if host.startswith(b"["):
        return host.partition(b"]")[0] + b"]"
    return host.partition(b":")[0]


def _same_origin(req: RequestHead) -> bool:
    """No Origin (not a browser), or the request's own scheme-less origin: its Host."""
    if req.origin is None:
        return True
    scheme, sep, netloc = req.origin.strip().lower().partition(b"://")
    host = req.host
    return (
        bool(sep)
        and scheme in (b"http", b"https")
        and host is not None
        and netloc == host.strip().lower()
    )
