"""Responses the front writes itself: errors in the platform's envelope, redirects.

Every error body is the API's envelope ``{message, detail, validations: []}`` as JSON, or for a
browser navigating to a page (``Accept: text/html``) a tiny HTML page with the same words.
"""

from __future__ import annotations

import html
from http import HTTPStatus

from zlh.schemas.errors import ErrorBody

__all__ = ["error", "redirect"]

# No favicon request (like the portal's pages), and a way back to the portal.
_HTML = (
    "<!doctype html><html><head><meta charset=utf-8><title>{title}</title>{refresh}"
    '<link rel="icon" href="data:,"></head>'
    '<body style="font-family:sans-serif;max-width:40em;margin:4em auto">'
    '<h1>{title}</h1><p>{message}</p><p>{detail}</p><p><a href="/">Your containers</a></p>'
    "</body></html>"
)
_SECURITY = b"".join(
    (
        b"X-Content-Type-Options: nosniff\r\n",
        b"Referrer-Policy: same-origin\r\n",
        b"Cache-Control: no-store\r\n",
    )
)


def _head(status: int, keep_alive: bool, extra: bytes) -> bytes:
    reason = HTTPStatus(status).phrase.encode()
    connection = b"" if keep_alive else b"Connection: close\r\n"
    return b"HTTP/1.1 %d %s\r\n%s%s%s" % (status, reason, _SECURITY, connection, extra)


def error(
    status: int,
    message: str,
    detail: str = "",
    *,
    as_html: bool = False,
    keep_alive: bool = True,
    head_only: bool = False,
    extra: bytes = b"",
    refresh_s: int = 0,
) -> bytes:
    """A complete error response. ``extra`` is additional raw header lines; ``refresh_s``
    makes the HTML page reload itself after that many seconds (a page that will work soon)."""
    if as_html:
        body = _HTML.format(
            refresh=f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else "",
            title=html.escape(f"{status} {HTTPStatus(status).phrase}"),
            message=html.escape(message),
            detail=html.escape(detail),
        ).encode()
        ctype = b"text/html; charset=utf-8"
    else:
        body = ErrorBody(message=message, detail=detail).model_dump_json().encode()
        ctype = b"application/json"
    head = _head(status, keep_alive, extra)
    head += b"Content-Type: %s\r\nContent-Length: %d\r\n\r\n" % (ctype, len(body))
    return head if head_only else head + body


def redirect(status: int, location: bytes, *, keep_alive: bool = True, extra: bytes = b"") -> bytes:
    """A redirect to ``location``; ``extra`` is additional raw header lines (Set-Cookie)."""
    head = _head(status, keep_alive, b"Location: " + location + b"\r\n" + extra)
    return head + b"Content-Length: 0\r\n\r\n"
