"""The one-pass head scanner takes only what llhttp takes, and makes of it what llhttp makes.

Each head the scanner accepts is also run through the front's llhttp path (a real
ClientConnection with the scanner switched off, or llhttp's response parser with the callbacks
the upstream side uses) and must come out the same, field by field. The corpus is hand-written
cases plus random mutations of them; the scanner as plain Python (its source, loaded uncompiled)
must agree with the compiled one and never index past the end.
"""

from __future__ import annotations

import asyncio
import importlib.util
import random
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import httptools
import pytest

from zlh.proxy import listener, scan
from zlh.proxy.headers import RequestHead, ResponseHead
from zlh.proxy.listener import ClientConnection
from zlh.proxy.relay import LocalResponse
from zlh.proxy.settings import ProxySettings

LIMIT = ProxySettings().max_header_bytes
TOKEN = b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"

REQUESTS = [
    b"GET /dev/100/ide/small.json HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    b"Cookie: zlh_session=" + TOKEN + b"; session=x\r\n\r\n",
    b"GET /dev/100/ide/static/out/vs/workbench.js?v=1&x=%20 HTTP/1.1\r\n"
    b"Host: ide.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"
    b"Accept: text/html,application/xhtml+xml\r\nAccept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\nReferer: https://ide.example.com/dev/100/ide/\r\n"
    b"Connection: keep-alive\r\nCookie: a=1\r\nCookie: zlh_session=" + TOKEN + b"\r\n"
    b'Sec-Fetch-Dest: script\r\nIf-None-Match: W/"1f-abc"\r\n'
    b"Origin: https://ide.example.com\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n"
    b"Keep-Alive: 300\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\n\r\n",
    b"HEAD /api/health HTTP/1.0\r\nhost:x\r\nCONNECTION: Keep-Alive\r\n"
    b"Authorization: Bearer " + TOKEN + b"\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Thing:\t\tspaced out\r\n\r\n",
    b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",  # declined: not ASCII
    b"GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n",  # declined: '#'
    b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",  # declined: a body
    b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",  # declined: framing header
    b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: x \r\n\r\n",
    b"GET /a HTTP/1.1\nHost: x\r\n\r\n",
    b"GET http://x/a HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: x\r\n",
    b"GET /a HTTP/2.0\r\nHost: x\r\n\r\n",
    b"GET /a HTTP/1.1\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
    b"GET /a HTTP/1.1\r\nX-Empty:\r\n\r\n",
]

BODY = b'{"ok":true}'
RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n"
    b"Date: Sat, 28 Nov 2026 11:00:00 GMT\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5"
    b"\r\n\r\n" + BODY,
    b"HTTP/1.1 404 Not Found\r\ncontent-length:11\r\nX-Content-Type-Options: nosniff\r\n"
    b"Referrer-Policy: no-referrer\r\nContent-Security-Policy: default-src 'self'\r\n"
    b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nConnection: close\r\nTrailer: x\r\n\r\n" + BODY,
    b"HTTP/1.0 200 \r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
    b"HTTP/1.0 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",  # declined: chunked
    b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n" + BODY,  # declined: body still coming
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1",  # declined: more than one
    b"HTTP/1.1 200 OK\r\n\r\n" + BODY,  # declined: delimited by close
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n",
]
REQUEST_FIELDS = [
    "accept",
    "authorization",
    "connection_named",
    "cookies",
    "host",
    "keep_alive",
    "length",
    "lines",
    "method",
    "origin",
    "target",
    "te_chunked",
    "upgrade",
    "upgrading",
    "version",
    "websocket",
]
RESPONSE_FIELDS = [
    "connection_named",
    "csp",
    "keep_alive",
    "length",
    "lines",
    "nosniff",
    "reason",
    "referrer",
    "status",
    "te_chunked",
    "upgrade",
]


class _Transport:
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else default


def _fields(head: object, names: list[str]) -> dict[str, object]:
    found = {name: getattr(head, name) for name in names}
    found["lines"] = b"".join(found["lines"])  # type: ignore[arg-type]
    return found


def _request_via_llhttp(data: bytes) -> RequestHead | None:
    """What the front's llhttp path parses ``data`` into (None: it refuses or wants more)."""

    async def run() -> RequestHead | None:
        heads: list[RequestHead] = []

        def dispatch(conn: ClientConnection, head: RequestHead) -> LocalResponse:
            heads.append(head)
            return LocalResponse(conn, b"", keep_alive=True)

        conn = ClientConnection(dispatch, ProxySettings(), set())
        conn.connection_made(_Transport())  # type: ignore[arg-type]
        conn.data_received(data)
        conn.connection_lost(None)
        return heads[0] if len(heads) == 1 else None

    saved = listener.SCANNING
    listener.SCANNING = False
    try:
        return asyncio.run(run())
    finally:
        listener.SCANNING = saved


def _response_via_llhttp(data: bytes) -> tuple[ResponseHead, bytes] | None:
    """What the upstream side's llhttp callbacks make of ``data`` when it is one whole
    response (None otherwise)."""
    head = ResponseHead()
    body: list[bytes] = []
    done: list[bool] = []

    class Callbacks:
        def on_status(self, status: bytes) -> None:
            head.reason += status

        def on_header(self, name: bytes, value: bytes) -> None:
            head.add(name, value)

        def on_headers_complete(self) -> None:
            head.status = parser.get_status_code()
            head.keep_alive = parser.should_keep_alive()

        def on_body(self, data: bytes) -> None:
            body.append(data)

        def on_message_complete(self) -> None:
            done.append(True)

    parser = httptools.HttpResponseParser(Callbacks())
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        return None
    return (head, b"".join(body)) if done == [True] else None


def _pure_scanner() -> ModuleType:
    """scan.py loaded from source as plain Python, whatever the installed build is."""
    source = scan.__file__
    assert source is not None
    path = source.rsplit("/", 1)[0] + "/scan.py"
    spec = importlib.util.spec_from_file_location("zlh_proxy_scan_as_python", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mutations(seeds: list[bytes], count: int, rng: random.Random) -> Iterator[bytes]:
    interesting = b"\r\n\t :#,;\x00\x7f\x80\xffAa0-/"
    for _ in range(count):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data) + 1)
            edit = rng.randrange(4)
            if edit == 0 and at < len(data):
                data[at] = rng.choice(interesting)
            elif edit == 1:
                data.insert(at, rng.choice(interesting))
            elif edit == 2 and at < len(data):
                del data[at]
            else:
                del data[at:]
        yield bytes(data)


def _check_request(data: bytes, scanner: Callable[[bytes, int], RequestHead | None]) -> bool:
    scanned = scanner(data, LIMIT)
    if scanned is None:
        return False
    parsed = _request_via_llhttp(data)
    assert parsed is not None, f"scanned what llhttp refuses: {data!r}"
    assert _fields(scanned, REQUEST_FIELDS) == _fields(parsed, REQUEST_FIELDS), data
    return True


def _check_response(data: bytes, scanner: Callable[[bytes], Any]) -> bool:
    scanned = scanner(data)
    if scanned is None:
        return False
    head, body_start = scanned
    parsed = _response_via_llhttp(data)
    assert parsed is not None, f"scanned what llhttp does not take whole: {data!r}"
    assert _fields(head, RESPONSE_FIELDS) == _fields(parsed[0], RESPONSE_FIELDS), data
    assert data[body_start:] == parsed[1], data
    return True


def test_plain_requests_are_scanned_exactly_as_llhttp_parses_them() -> None:
    accepted = [_check_request(data, scan.scan_request) for data in REQUESTS]
    assert accepted == [True] * 5 + [False] * (len(REQUESTS) - 5)


def test_plain_responses_are_scanned_exactly_as_llhttp_parses_them() -> None:
    accepted = [_check_response(data, scan.scan_response) for data in RESPONSES]
    assert accepted == [True] * 4 + [False] * (len(RESPONSES) - 4)


def test_the_scanner_drops_hop_by_hop_and_client_forwarding_headers() -> None:
    head = scan.scan_request(REQUESTS[1], LIMIT)
    assert head is not None
    forwarded = b"".join(head.lines).lower()
    for name in (b"x-forwarded-for", b"forwarded", b"keep-alive", b"te:", b"proxy-auth"):
        assert name not in forwarded
    assert head.cookies == [b"a=1", b"zlh_session=" + TOKEN]
    assert b"user-agent: mozilla" in forwarded and head.origin == b"https://ide.example.com"


def test_a_head_over_the_limit_is_left_to_llhttp() -> None:
    assert scan.scan_request(REQUESTS[0], len(REQUESTS[0])) is not None
    assert scan.scan_request(REQUESTS[0], len(REQUESTS[0]) - 1) is None


@pytest.mark.parametrize("side", ["request", "response"])
def test_mutated_messages_are_scanned_as_llhttp_parses_them_or_left_to_it(side: str) -> None:
    rng = random.Random(6)
    pure = _pure_scanner()
    seeds = REQUESTS[:5] if side == "request" else RESPONSES[:4]
    accepted = 0
    for data in _mutations(seeds, 3000, rng):
        if side == "request":
            assert pure.scan_request(data, LIMIT) is None or scan.scan_request(data, LIMIT)
            accepted += _check_request(data, scan.scan_request)
            _check_request(data, pure.scan_request)
        else:
            assert pure.scan_response(data) is None or scan.scan_response(data)
            accepted += _check_response(data, scan.scan_response)
            _check_response(data, pure.scan_response)
    assert 100 < accepted < 2900  # the mutations reach both sides of the scanner's choice


@pytest.mark.parametrize("byte", range(256))
def test_no_byte_is_scanned_where_llhttp_refuses_it(byte: int) -> None:
    """Each byte value in a request target, header name and value, response reason, header
    name and value: where the scanner takes the message, llhttp takes it the same way."""
    b = bytes([byte])
    requests = (
        b"GET /a" + b + b"b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a" + b + b"b\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-" + b + b"A: ab\r\n\r\n",
    )
    responses = (
        b"HTTP/1.1 200 O" + b + b"K\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a" + b + b"b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-" + b + b"A: ab\r\nContent-Length: 0\r\n\r\n",
    )
    for data in requests:
        _check_request(data, scan.scan_request)
    for data in responses:
        _check_response(data, scan.scan_response)
