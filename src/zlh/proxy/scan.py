"""Whole message heads scanned in one pass, for the common case only.

Most requests through the front are a GET or HEAD whose head arrives whole in one read, and
most upstream answers are a head with a Content-Length followed by the whole body in the same
read. For those the front skips llhttp and its per-header callbacks: one call here checks the
head byte by byte, classifies each header with :mod:`zlh.proxy.headers`' tables and returns the
head as the callbacks would have built it. Anything else -- a partial head, more bytes than the
one message, a body to stream, chunked or close-delimited framing, an upgrade, a Connection
header naming other headers, obsolete line folding, a header value with surrounding
whitespace, any byte outside the plain grammar -- returns None, and the caller feeds the bytes
to llhttp as before. So this module only has to be right about what it accepts, and it accepts
a strict subset of what llhttp accepts. What it does with each header mirrors
``RequestHead.add``/``ResponseHead.add`` on purpose (calling them per header would cost what
the scan saves); tests/proxy/test_scan.py holds both paths to the same heads.

It is compiled with Cython (``scan.pxd`` gives the locals C types: ``p[i]`` reads a byte, the
loops are C loops) when the build is told ``ZLH_COMPILE_FRONT=1``; otherwise the same code
runs as Python, with the same results but slower than llhttp, so the front then leaves it alone
(:data:`COMPILED`).
"""

from __future__ import annotations

import string
from typing import Final

from zlh.proxy.headers import (
    ACCEPT,
    AUTH,
    CONNECTION,
    COOKIE,
    CSP,
    DROP,
    FORWARDED_FOR,
    HOST,
    LENGTH,
    NOSNIFF,
    ORIGIN,
    REFERRER,
    REQUEST_HEADERS,
    RESPONSE_HEADERS,
    SET_COOKIE,
    RequestHead,
    ResponseHead,
)

__all__ = ["COMPILED", "scan_request", "scan_response"]

# Whether this module runs compiled. As plain Python its byte loops cost more than llhttp's
# callbacks, and callers should not use it.
COMPILED: Final = not __file__.endswith(".py")

_CR: Final = 13
_LF: Final = 10
_SP: Final = 32
_HTAB: Final = 9
_COLON: Final = 58
# What the Connection header said (see _connection).
_NONE: Final = 0
_KEEP_ALIVE: Final = 1
_CLOSE: Final = 2
_OTHER: Final = 3


def _table(allowed: bytes) -> bytes:
    return bytes(1 if c in allowed else 0 for c in range(256))


# Bytes of a header name (RFC 9110 token).
_NAME: Final = _table(b"!#$%&'*+-.^_`|~" + (string.ascii_letters + string.digits).encode())
# Bytes of a header value or reason phrase: HTAB, SP, visible ASCII, obs-text.
_VALUE: Final = _table(bytes([_HTAB, *range(_SP, 0x7F), *range(0x80, 0x100)]))
# Bytes of an origin-form request target we take without llhttp (no '#', nothing non-ASCII).
_TARGET: Final = _table(bytes(c for c in range(0x21, 0x7F) if c != ord("#")))


def _by_length(kinds: dict[bytes, int]) -> list[list[tuple[bytes, int]]]:
    """``kinds`` (:mod:`zlh.proxy.headers`' tables) as lists of (name, kind) by name length,
    so that a header is classified by comparing bytes in place, without a lower-cased copy."""
    table: list[list[tuple[bytes, int]]] = [[] for _ in range(max(map(len, kinds)) + 1)]
    for name, kind in kinds.items():
        table[len(name)].append((name, kind))
    return table


_REQUEST_KINDS: Final = _by_length(REQUEST_HEADERS)
_RESPONSE_KINDS: Final = _by_length(RESPONSE_HEADERS)


def _literal(p: bytes, n: int, i: int, text: bytes) -> bool:
    """Whether ``p[i:]`` starts with ``text``."""
    size = len(text)
    if n - i < size:
        return False
    for k in range(size):  # noqa: SIM110 - Cython makes all(<genexpr>) a generator here
        if p[i + k] != text[k]:
            return False
    return True


def _lower_is(p: bytes, start: int, end: int, text: bytes) -> bool:
    """Whether ``p[start:end]`` is ``text`` (lower-case letters only) in any case."""
    if end - start != len(text):
        return False
    for k in range(end - start):  # noqa: SIM110 - as above
        if p[start + k] | 0x20 != text[k]:
            return False
    return True


def _kind(table: list[list[tuple[bytes, int]]], p: bytes, start: int, end: int) -> int:
    """The kind of the header named ``p[start:end]`` in ``table`` (0: none, pass it on)."""
    if end - start >= len(table):
        return 0
    for name, kind in table[end - start]:
        if _lower_is(p, start, end, name):
            return kind
    return 0


def _connection(p: bytes, start: int, end: int, seen: int) -> int:
    """What a Connection header says: ``_KEEP_ALIVE`` or ``_CLOSE``; ``_OTHER`` for any other
    value or a second Connection header (the caller declines: llhttp's to judge)."""
    if seen != _NONE:
        return _OTHER
    if _lower_is(p, start, end, b"keep-alive"):
        return _KEEP_ALIVE
    if _lower_is(p, start, end, b"close"):
        return _CLOSE
    return _OTHER


def _keeps_alive(http11: bool, connection: int) -> bool:
    """llhttp's should_keep_alive() for a message framed without reading until close."""
    return connection != _CLOSE if http11 else connection == _KEEP_ALIVE


def _header_at(p: bytes, n: int, i: int) -> tuple[int, int, int]:
    """The header line starting at ``p[i]``: where its name ends (at the colon), where its
    value starts and ends (at the line's CRLF). The name end is -1 when the line is not a
    plain ``name: value`` line: empty name or value, whitespace around the value (llhttp trims
    some), a bare LF, obsolete folding, a control byte."""
    name_ok = _NAME
    value_ok = _VALUE
    start = i
    while i < n and name_ok[p[i]]:
        i += 1
    name_end = i
    if name_end == start or i >= n or p[i] != _COLON:
        return -1, 0, 0
    i += 1
    while i < n and (p[i] == _SP or p[i] == _HTAB):
        i += 1
    value_start = i
    while i < n and value_ok[p[i]]:
        i += 1
    if i + 1 >= n or p[i] != _CR or p[i + 1] != _LF or i == value_start:
        return -1, 0, 0
    if p[i - 1] == _SP or p[i - 1] == _HTAB:
        return -1, 0, 0
    return name_end, value_start, i


def _line(p: bytes, start: int, name_end: int, value_start: int, end: int) -> bytes:
    """The header line as the front forwards it, ``Name: value\\r\\n`` (one slice when it was
    sent that way)."""
    if value_start == name_end + 2 and p[name_end + 1] == _SP:
        return p[start : end + 2]
    return p[start : name_end + 1] + b" " + p[value_start : end + 2]


def scan_request(data: bytes, limit: int) -> RequestHead | None:
    """``data`` as the parsed head of one GET or HEAD without a body, if it is exactly that
    and plain; else None (feed it to llhttp). ``limit`` is the front's max_header_bytes."""
    p = data
    n = len(data)
    if n > limit or n < 18:
        return None
    if _literal(p, n, 0, b"GET /"):
        method = b"GET"
        i = 4
    elif _literal(p, n, 0, b"HEAD /"):
        method = b"HEAD"
        i = 5
    else:
        return None
    target_start = i
    target_ok = _TARGET
    while i < n and target_ok[p[i]]:
        i += 1
    target_end = i
    if not _literal(p, n, i, b" HTTP/1.") or n - i < 11:
        return None
    i += 8
    if p[i] == 49:  # "1"
        http11 = True
    elif p[i] == 48:  # "0"
        http11 = False
    else:
        return None
    if p[i + 1] != _CR or p[i + 2] != _LF:
        return None
    i += 3
    head = RequestHead()
    connection = _NONE
    while i < n and p[i] != _CR:
        name_end, value_start, end = _header_at(p, n, i)
        if name_end < 0:
            return None
        kind = _kind(_REQUEST_KINDS, p, i, name_end)
        if kind == 0 or kind in (ACCEPT, ORIGIN):
            head.lines.append(_line(p, i, name_end, value_start, end))
            if kind == ACCEPT:
                head.accept = p[value_start:end]
            elif kind == ORIGIN:
                head.origin = p[value_start:end]
        elif kind == HOST:
            head.host = p[value_start:end]
        elif kind == COOKIE:
            head.cookies.append(p[value_start:end])
        elif kind == AUTH:
            head.authorization = p[value_start:end]
        elif kind == FORWARDED_FOR:
            head.forwarded_for.append(p[value_start:end])
        elif kind == CONNECTION:
            connection = _connection(p, value_start, end, connection)
            if connection == _OTHER:
                return None
        elif kind != DROP:  # Upgrade, Content-Length, Transfer-Encoding: llhttp's to judge
            return None
        i = end + 2
    if i + 2 != n or p[i + 1] != _LF:
        return None
    head.method = method
    head.target = p[target_start:target_end]
    head.version = "1.1" if http11 else "1.0"
    head.keep_alive = _keeps_alive(http11, connection)
    return head


def scan_response(data: bytes) -> tuple[ResponseHead, int] | None:
    """``data`` as one whole response with a Content-Length body, if it is exactly that and
    plain: its parsed head and where its body starts; else None (feed it to llhttp). Not for
    the answer to a HEAD request (its Content-Length announces no body)."""
    p = data
    n = len(data)
    if n < 16 or not _literal(p, n, 0, b"HTTP/1."):
        return None
    if p[7] == 49:
        http11 = True
    elif p[7] == 48:
        http11 = False
    else:
        return None
    if p[8] != _SP or p[12] != _SP:
        return None
    status = 0
    for i in range(9, 12):
        if not 48 <= p[i] <= 57:
            return None
        status = status * 10 + p[i] - 48
    if status < 200 or status > 599 or status == 204 or status == 304:
        return None
    i = 13
    value_ok = _VALUE
    while i < n and value_ok[p[i]]:
        i += 1
    reason_end = i
    if i + 1 >= n or p[i] != _CR or p[i + 1] != _LF:
        return None
    i += 2
    head = ResponseHead()
    connection = _NONE
    length = -1
    while i < n and p[i] != _CR:
        name_end, value_start, end = _header_at(p, n, i)
        if name_end < 0:
            return None
        kind = _kind(_RESPONSE_KINDS, p, i, name_end)
        if kind == 0 or kind >= NOSNIFF:
            head.lines.append(_line(p, i, name_end, value_start, end))
            if kind == NOSNIFF:
                head.nosniff = True
            elif kind == REFERRER:
                head.referrer = True
            elif kind == CSP:
                head.csp = True
            elif kind == SET_COOKIE:
                head.set_cookie = True
        elif kind == LENGTH:
            if length >= 0 or end - value_start > 15:
                return None
            length = 0
            for k in range(value_start, end):
                if not 48 <= p[k] <= 57:
                    return None
                length = length * 10 + p[k] - 48
            head.length = p[value_start:end]
        elif kind == CONNECTION:
            connection = _connection(p, value_start, end, connection)
            if connection == _OTHER:
                return None
        elif kind != DROP:  # Upgrade, Transfer-Encoding: llhttp's to judge
            return None
        i = end + 2
    if i + 1 >= n or p[i + 1] != _LF or length < 0 or n - (i + 2) != length:
        return None
    head.status = status
    head.reason = p[13:reason_end]
    head.keep_alive = _keeps_alive(http11, connection)
    return head, i + 2
