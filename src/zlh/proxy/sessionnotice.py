"""The IDE tab's notice that its access ended, and what the front serves for it.

Signing out (or an expired session, a password change, a container deleted or handed to someone
else) ends an open IDE's access at once: the front closes its WebSockets and refuses its next
requests. code-server only sees a lost connection and goes on trying to reconnect. So the front
appends one script tag to the IDE's page (code-server's CSP allows scripts of its own origin);
the script asks the front whether the IDE cookie still opens the container (when a WebSocket
closes, when the tab comes back to the front, every few seconds) and, once it does not, covers
the IDE with a notice that links to signing in again: the IDE's own address, which goes
through the portal's sign-in and comes back.

On the IDE origin, answered by the front, never by a container:

* :data:`SCRIPT_PATH`: the script.
* ``/dev/{vmid}/_zlh/session`` (path forms: inside the IDE cookie's Path, outside the IDE's own
  paths) or :data:`STATE_PATH` (wildcard form): 204 while the IDE cookie opens the container,
  401 once the session ended, 404 once the container is gone or not the caller's. The script
  also reports that a person is using the IDE there (``POST ?activity=ide`` or ``terminal``,
  at most every 15 s while keys are pressed or the pointer clicks): idle auto-stop counts it.
  A page the container serves on the IDE origin could report it too; it would only keep awake
  containers its visitor may open.

Only a ``200 text/html`` answer to a page load of the IDE's first page gets the tag, asked for
without compression so that the tag can be appended as it is; everything else passes untouched.
"""

from __future__ import annotations

import html
import re
from importlib.resources import files
from typing import Final

from zlh.proxy import responses
from zlh.proxy.headers import ResponseHead

__all__ = [
    "ACTIVITY_KINDS",
    "SCRIPT_PATH",
    "STATE_PATH",
    "activity_kind",
    "is_plain_html",
    "script_response",
    "script_tag",
    "state_path",
    "without_accept_encoding",
]

SCRIPT_PATH: Final = b"/_zlh/session.js"
STATE_PATH: Final = b"/_zlh/session"
_SCRIPT: Final = files("zlh.proxy").joinpath("static/session-notice.js").read_bytes()
_ACCEPT_ENCODING: Final = re.compile(rb"\r\naccept-encoding:[^\r\n]*", re.IGNORECASE)


ACTIVITY_KINDS: Final = {b"ide": "ide", b"terminal": "terminal"}


def activity_kind(query: bytes) -> str | None:
    """The activity a ``POST`` to the state path reports (``activity=ide|terminal``), or None."""
    for pair in query.split(b"&"):
        name, _, value = pair.partition(b"=")
        if name == b"activity":
            return ACTIVITY_KINDS.get(value)
    return None


def state_path(vmid: int, wildcard: bool) -> bytes:
    """Where the script asks about ``vmid``'s IDE: under the IDE cookie's Path."""
    return STATE_PATH if wildcard else b"/dev/%d%s" % (vmid, STATE_PATH)


def script_tag(state: bytes, sign_in: str, portal: str) -> bytes:
    """The tag appended to the IDE's page. After ``</html>`` a parser puts it in the body and
    runs it before the page's module scripts, so it sees every WebSocket code-server opens."""
    state_url = html.escape(state.decode("latin-1"))
    return (
        f'<script src="{SCRIPT_PATH.decode()}" data-state="{state_url}"'
        f' data-signin="{html.escape(sign_in)}" data-portal="{html.escape(portal)}"></script>'
    ).encode()


def script_response(*, keep_alive: bool, head_only: bool) -> bytes:
    return responses.content(
        200,
        b"text/javascript; charset=utf-8",
        _SCRIPT,
        keep_alive=keep_alive,
        head_only=head_only,
    )


def without_accept_encoding(head: bytes) -> bytes:
    """The upstream request ``head`` asking for an uncompressed body."""
    return _ACCEPT_ENCODING.sub(b"", head)


def is_plain_html(head: ResponseHead) -> bool:
    """A 200 HTML page sent as it is (no Content-Encoding), which a tag can be appended to."""
    if head.status != 200:
        return False
    html_page = False
    for line in head.lines:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
            return False
        if name == b"content-type":
            html_page = value.strip().lower().startswith(b"text/html")
    return html_page
