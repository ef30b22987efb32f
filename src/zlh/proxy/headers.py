"""Parsed message heads and the header rewriting between client and upstream.

Each header is classified once, as the parser hands it over: the few the front acts on are
kept as fields, every other end-to-end header is kept as its ready-to-send line. Hop-by-hop
headers (RFC 9110 §7.6.1: Connection, Keep-Alive, Proxy-Connection, TE, Trailer,
Transfer-Encoding, Upgrade, plus any header a Connection header names) never cross the front;
the front writes its own framing and Connection headers on each side.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Final

__all__ = [
    "PORTAL_RULES",
    "Framing",
    "RequestHead",
    "ResponseHead",
    "ResponseRules",
    "chunk",
    "client_response_head",
    "upstream_request_head",
]

LAST_CHUNK: Final = b"0\r\n\r\n"


class Framing(IntEnum):
    """How a message body is delimited."""

    NONE = 0  # no body
    LENGTH = 1  # Content-Length
    CHUNKED = 2  # Transfer-Encoding: chunked
    CLOSE = 3  # response body until the connection closes


# What on_header does with a header, by lower-case name. (Final: compiled code reads them as
# C constants instead of looking up module globals on every header.)
DROP: Final = 2
HOST: Final = 3
COOKIE: Final = 4
AUTH: Final = 5
ORIGIN: Final = 6
UPGRADE: Final = 7
CONNECTION: Final = 8
LENGTH: Final = 9
TE: Final = 10
ACCEPT: Final = 11
FORWARDED_FOR: Final = 15
REQUEST_HEADERS: Final = {
    b"host": HOST,
    b"cookie": COOKIE,
    b"authorization": AUTH,
    b"origin": ORIGIN,
    b"upgrade": UPGRADE,
    b"connection": CONNECTION,
    b"content-length": LENGTH,
    b"transfer-encoding": TE,
    b"accept": ACCEPT,
    b"keep-alive": DROP,
    b"proxy-connection": DROP,
    b"te": DROP,
    b"trailer": DROP,
    b"proxy-authorization": DROP,
    # The front is the edge: whatever a client claims here is replaced by what the front saw;
    # only X-Forwarded-For goes on to the API, with the front's peer appended, for the API to
    # honour as far as the operator's trusted proxies vouch for it (zlh.api.clientaddr).
    b"x-forwarded-for": FORWARDED_FOR,
    b"x-forwarded-host": DROP,
    b"x-forwarded-proto": DROP,
    b"forwarded": DROP,
}
NOSNIFF: Final = 12
REFERRER: Final = 13
CSP: Final = 14
SET_COOKIE: Final = 15
RESPONSE_HEADERS: Final = {
    b"connection": CONNECTION,
    b"content-length": LENGTH,
    b"transfer-encoding": TE,
    b"upgrade": UPGRADE,
    b"keep-alive": DROP,
    b"proxy-connection": DROP,
    b"te": DROP,
    b"trailer": DROP,
    b"x-content-type-options": NOSNIFF,
    b"referrer-policy": REFERRER,
    b"content-security-policy": CSP,
    b"set-cookie": SET_COOKIE,
}
# Connection tokens that name no header of their own.
_PLAIN_CONNECTION_TOKENS: Final = frozenset((b"keep-alive", b"close", b"upgrade"))
_PLAIN_CONNECTION_VALUES: Final = _PLAIN_CONNECTION_TOKENS | {
    b"upgrade, keep-alive",
    b"keep-alive, upgrade",
}


def _connection_tokens(value: bytes) -> list[bytes]:
    return [t.strip().lower() for t in value.split(b",") if t.strip()]


class _Head:
    """Headers shared by both directions: passthrough lines and Connection-named headers."""

    __slots__ = ("connection_named", "length", "lines", "te_chunked", "upgrade")

    lines: list[bytes]
    length: bytes | None
    te_chunked: bool
    upgrade: bytes | None
    connection_named: set[bytes] | None

    def _note_connection(self, value: bytes) -> None:
        if value.lower() in _PLAIN_CONNECTION_VALUES:
            return
        extra = [t for t in _connection_tokens(value) if t not in _PLAIN_CONNECTION_TOKENS]
        if extra:
            if self.connection_named is None:
                self.connection_named = set()
            self.connection_named.update(extra)

    def passthrough(self) -> list[bytes]:
        """The end-to-end header lines, minus any header the Connection header named."""
        named = self.connection_named
        if not named:
            return self.lines
        return [line for line in self.lines if line.split(b":", 1)[0].lower() not in named]


class RequestHead(_Head):
    __slots__ = (
        "accept",
        "authorization",
        "cookies",
        "forwarded_for",
        "host",
        "keep_alive",
        "method",
        "origin",
        "target",
        "upgrading",
        "version",
        "websocket",
    )

    def __init__(self) -> None:
        self.lines = []
        self.length = None
        self.te_chunked = False
        self.upgrade = None
        self.connection_named = None
        self.method = b""
        self.target = b""
        self.version = "1.1"
        self.keep_alive = True
        self.host: bytes | None = None
        self.cookies: list[bytes] = []
        self.authorization: bytes | None = None
        self.origin: bytes | None = None
        self.forwarded_for: list[bytes] = []
        self.accept = b""
        self.upgrading = False  # the parser saw a valid Upgrade request (Connection: upgrade)
        self.websocket = False  # ... and it asks for a WebSocket (set with ``upgrading``)

    def add(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        kind = REQUEST_HEADERS.get(lname)
        if kind is None or kind == ACCEPT:
            self.lines.append(name + b": " + value + b"\r\n")
            if kind == ACCEPT:
                self.accept = value
        elif kind == HOST:
            self.host = value
        elif kind == COOKIE:
            self.cookies.append(value)
        elif kind == AUTH:
            self.authorization = value
        elif kind == ORIGIN:
            self.origin = value
            self.lines.append(name + b": " + value + b"\r\n")
        elif kind == FORWARDED_FOR:
            self.forwarded_for.append(value)
        elif kind == UPGRADE:
            self.upgrade = value
        elif kind == CONNECTION:
            self._note_connection(value)
        elif kind == LENGTH:
            self.length = value
        elif kind == TE:
            self.te_chunked = True  # the parser refuses any coding that does not end in chunked

    @property
    def framing(self) -> Framing:
        if self.te_chunked:
            return Framing.CHUNKED
        if self.length is not None:
            return Framing.LENGTH
        return Framing.NONE

    def set_upgrading(self, upgrading: bool) -> None:
        """Record the parser's verdict (only meaningful inside on_headers_complete)."""
        self.upgrading = upgrading
        upgrade = self.upgrade
        self.websocket = (
            upgrading and upgrade is not None and upgrade.strip().lower() == b"websocket"
        )

    @property
    def wants_html(self) -> bool:
        return b"text/html" in self.accept


class ResponseHead(_Head):
    __slots__ = ("csp", "keep_alive", "nosniff", "reason", "referrer", "set_cookie", "status")

    def __init__(self) -> None:
        self.lines = []
        self.length = None
        self.te_chunked = False
        self.upgrade = None
        self.connection_named = None
        self.status = 0
        self.reason = b""
        self.keep_alive = True
        self.nosniff = self.referrer = self.csp = self.set_cookie = False

    def add(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        kind = RESPONSE_HEADERS.get(lname)
        if kind is None or kind >= NOSNIFF:
            self.lines.append(name + b": " + value + b"\r\n")
            if kind == NOSNIFF:
                self.nosniff = True
            elif kind == REFERRER:
                self.referrer = True
            elif kind == CSP:
                self.csp = True
            elif kind == SET_COOKIE:
                self.set_cookie = True
        elif kind == CONNECTION:
            self._note_connection(value)
        elif kind == LENGTH:
            self.length = value
        elif kind == TE:
            self.te_chunked = value.rstrip().lower().endswith(b"chunked")
        elif kind == UPGRADE:
            self.upgrade = value

    def framing(self, request_method: bytes) -> Framing:
        if request_method == b"HEAD" or self.status < 200 or self.status in (204, 304):
            return Framing.NONE
        if self.te_chunked:
            return Framing.CHUNKED
        if self.length is not None:
            return Framing.LENGTH
        return Framing.CLOSE


def upstream_request_head(
    req: RequestHead,
    target: bytes,
    *,
    client_ip: bytes,
    proto: bytes,
    default_host: bytes,
    cookies: Sequence[bytes],
    authorization: bool,
    forwarded_chain: bool = False,
) -> bytes:
    """The request as the upstream gets it. ``cookies`` are the Cookie values to send (already
    without the portal's session cookie for a container); ``authorization`` forwards it;
    ``forwarded_chain`` keeps the client's X-Forwarded-For before ``client_ip``."""
    host = req.host if req.host is not None else default_host
    parts = [req.method, b" ", target, b" HTTP/1.1\r\n", *req.passthrough()]
    parts += (b"Host: ", host, b"\r\nX-Forwarded-Host: ", host)
    parts += (b"\r\nX-Forwarded-Proto: ", proto, b"\r\nX-Forwarded-For: ")
    if forwarded_chain:
        for value in req.forwarded_for:
            parts += (value, b", ")
    parts += (client_ip, b"\r\n")
    for value in cookies:
        parts += (b"Cookie: ", value, b"\r\n")
    if authorization and req.authorization is not None:
        parts += (b"Authorization: ", req.authorization, b"\r\n")
    if req.websocket:
        parts.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
    elif req.te_chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    elif req.length is not None:
        parts += (b"Content-Length: ", req.length, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


_SECURITY_NOSNIFF: Final = b"X-Content-Type-Options: nosniff\r\n"
_SECURITY_REFERRER: Final = b"Referrer-Policy: same-origin\r\n"
_SECURITY_FRAMES: Final = b"Content-Security-Policy: frame-ancestors 'self'\r\n"
_COOKIE_PREFIXES: Final = (b"__host-", b"__secure-")


class ResponseRules:
    """What the front adds to and removes from the response heads of one kind of upstream.

    ``frames`` is a ``Content-Security-Policy`` line added to every response (``always``) or
    only where the upstream set no CSP of its own. ``cookie_names`` (lower case, without the
    ``__Host-``/``__Secure-`` prefixes) are names a response must not set: a container could
    otherwise set a cookie the browser sends to the portal (cookies do not separate ports or
    paths from script) in place of the platform's own.
    """

    __slots__ = ("always", "cookie_names", "frames")

    def __init__(self, frames: bytes, *, always: bool, cookie_names: frozenset[bytes]) -> None:
        self.frames = frames
        self.always = always
        self.cookie_names = cookie_names

    def keeps(self, line: bytes) -> bool:
        """Whether a header line may reach the client (only Set-Cookie lines are judged)."""
        name, _, value = line.partition(b":")
        if name.strip().lower() != b"set-cookie":
            return True
        cookie = value.split(b"=", 1)[0].strip().lower()
        for prefix in _COOKIE_PREFIXES:
            if cookie.startswith(prefix):
                cookie = cookie[len(prefix) :]
                break
        return cookie not in self.cookie_names


# The API's pages: framed by the portal itself only, its own cookies untouched.
PORTAL_RULES: Final = ResponseRules(_SECURITY_FRAMES, always=False, cookie_names=frozenset())


def client_response_head(
    resp: ResponseHead,
    framing: Framing,
    *,
    keep_alive: bool,
    http11: bool,
    rules: ResponseRules,
) -> tuple[bytes, Framing]:
    """The response head the client gets, and the framing the front writes its body with.

    Adds ``nosniff`` and ``Referrer-Policy`` where the upstream set none, and the ``rules``'
    CSP and cookie policy. A body the upstream delimits by chunks or by closing goes to an
    HTTP/1.1 client chunked, to an HTTP/1.0 one until close.
    """
    parts = [b"HTTP/1.1 ", str(resp.status).encode(), b" ", resp.reason, b"\r\n"]
    if resp.set_cookie and rules.cookie_names:
        parts += [line for line in resp.passthrough() if rules.keeps(line)]
    else:
        parts += resp.passthrough()
    if not resp.nosniff:
        parts.append(_SECURITY_NOSNIFF)
    if not resp.referrer:
        parts.append(_SECURITY_REFERRER)
    if rules.always or not resp.csp:
        parts.append(rules.frames)
    if resp.status == 101:
        parts.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
    else:
        if framing == Framing.LENGTH or (framing == Framing.NONE and resp.length is not None):
            parts += (b"Content-Length: ", resp.length or b"0", b"\r\n")
        elif framing in (Framing.CHUNKED, Framing.CLOSE):
            if http11:
                parts.append(b"Transfer-Encoding: chunked\r\n")
                framing = Framing.CHUNKED
            else:
                framing, keep_alive = Framing.CLOSE, False
        if not keep_alive:
            parts.append(b"Connection: close\r\n")
        elif not http11:
            parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts), framing


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)
