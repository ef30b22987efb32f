"""Responses the front writes itself: errors in the platform's envelope, redirects.

Every error body is the API's envelope ``{message, detail, validations: []}`` as JSON, or for a
browser navigating to a page (``Accept: text/html``) a tiny HTML page with the same words.
"""

from __future__ import annotations

import html
from http import HTTPStatus

from zlh.schemas.errors import ErrorBody

__all__ = ["content", "empty", "error", "redirect"]

# The portal's look (its colours, top bar and fonts, inline: on the IDE origin the portal's
# stylesheet is another origin's), no favicon request, and a way back to the portal.
_CSS = (
    "body{margin:0;font-family:system-ui,-apple-system,'Segoe UI',Roboto,'Noto Sans',sans-serif;"
    "color:#1c2330;background:#f6f7f9}a{color:#1f6feb}"
    "header{display:flex;align-items:center;padding:.7rem 1.2rem;background:#111827}"
    "header a{color:#fff;font-weight:700;text-decoration:none}"
    "header span{font-weight:400;color:#c6cdd8}"
    "main{max-width:40em;margin:8vh auto;padding:1.2rem;background:#fff;"
    "border:1px solid #d9dee6;border-radius:8px}h1{font-size:1.5rem;margin:.2rem 0 1rem}"
    ".muted{color:#5d6778}"
)
_HTML = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    "<title>{title} · ZeroLagHub</title>{refresh}"
    '<link rel="icon" href="data:,"><style>'
    + _CSS.replace("{", "{{").replace("}", "}}")  # literal braces for str.format
    + "</style></head><body>"
    '<header><a href="{home}">ZeroLagHub <span>dev containers</span></a></header>'
    '<main><h1>{title}</h1><p>{message}</p><p class="muted">{detail}</p>'
    '<p><a href="{back}">{back_label}</a></p></main></body></html>'
)
# The page runs nothing and loads nothing; its only style is the inline one above.
_HTML_CSP = (
    b"Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; img-src data:\r\n"
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
    home: str = "/",
    back: tuple[str, str] | None = None,
) -> bytes:
    """A complete error response. ``extra`` is additional raw header lines; ``refresh_s``
    makes the HTML page reload itself after that many seconds (a page that will work soon).
    The HTML page links ``home`` (the portal) and ``back`` (``(url, label)``, default: the
    portal's list of containers)."""
    if as_html:
        back_url, back_label = back or (home, "Your containers")
        body = _HTML.format(
            refresh=f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else "",
            title=html.escape(f"{status} {HTTPStatus(status).phrase}"),
            message=html.escape(message),
            detail=html.escape(detail),
            home=html.escape(home),
            back=html.escape(back_url),
            back_label=html.escape(back_label),
        ).encode()
        ctype = b"text/html; charset=utf-8"
        extra += _HTML_CSP
    else:
        body = ErrorBody(message=message, detail=detail).model_dump_json(exclude_none=True).encode()
        ctype = b"application/json"
    return content(status, ctype, body, keep_alive=keep_alive, head_only=head_only, extra=extra)


def content(
    status: int,
    ctype: bytes,
    body: bytes,
    *,
    keep_alive: bool = True,
    head_only: bool = False,
    extra: bytes = b"",
) -> bytes:
    """A complete response carrying ``body`` as ``ctype``; ``extra`` is raw header lines."""
    head = _head(status, keep_alive, extra)
    head += b"Content-Type: %s\r\nContent-Length: %d\r\n\r\n" % (ctype, len(body))
    return head if head_only else head + body


def redirect(status: int, location: bytes, *, keep_alive: bool = True, extra: bytes = b"") -> bytes:
    """A redirect to ``location``; ``extra`` is additional raw header lines (Set-Cookie)."""
    head = _head(status, keep_alive, b"Location: " + location + b"\r\n" + extra)
    return head + b"Content-Length: 0\r\n\r\n"


def empty(keep_alive: bool = True) -> bytes:
    """204: nothing to say but yes."""
    return _head(204, keep_alive, b"") + b"\r\n"
