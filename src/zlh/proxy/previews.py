"""Port previews: a container's own web servers on the IDE origin, the rules both sides share.

``/dev/{vmid}/port/{port}/…`` on the IDE origin (path and second-port forms), or with a
wildcard ``ide_origin`` the host ``{port}-{vmid}.<domain>`` (one origin per preview, the app at
``/``). The front serves them like the IDE (same cookie, ownership and readiness checks); the
API builds their URLs and the portal links them. Two modes in the path forms:

* prefix stripped (the default): the app sees ``/…``, as code-server's ``/proxy/<port>/``;
* prefix kept: the app sees ``/dev/{vmid}/port/{port}/…``, for apps given that base path.

The mode is the browser's: a page load with ``?zlh-prefix=keep`` (or ``strip``) is answered
with a 303 to the same URL without the flag and a cookie (:data:`MODE_COOKIE`, scoped to that
preview's path) that keeps the choice for every later request of the page, its assets and its
WebSockets. Neither the flag nor the cookie reaches the app.

Ports below 1024 and the platform's own (the agent's, code-server's) are never previewed.
"""

from __future__ import annotations

import re
from typing import Final

from zlh.ports import AGENT_PORT, CODE_SERVER_PORT

__all__ = [
    "MODE_COOKIE",
    "MODE_FLAG",
    "is_previewable",
    "landing",
    "refusal",
    "take_mode_flag",
]

MODE_FLAG: Final = "zlh-prefix"  # ?zlh-prefix=keep|strip on a page load
MODE_COOKIE: Final = "zlh_prefix"  # "keep" while the prefix is kept; absent: stripped
_FLAG: Final = MODE_FLAG.encode() + b"="
_MODES: Final = (b"keep", b"strip")
# A path on the same origin: one leading slash, no backslash, nothing a browser would read as
# another host or strip (controls, spaces).
_SAME_ORIGIN_PATH: Final = re.compile(r"/(?![/\\])[!-~]*")


def is_previewable(port: int, code_server_port: int = CODE_SERVER_PORT) -> bool:
    """Ports 1024..65535, except the agent's and code-server's (``code_server_port``: where
    this container's runs, when a backend moves it)."""
    return 1024 <= port <= 65535 and port not in (AGENT_PORT, CODE_SERVER_PORT, code_server_port)


def refusal(port: int) -> str:
    """Why ``port`` is not previewed, in the words the front's page and the API use."""
    return (
        f"port {port} cannot be previewed: only ports 1024..65535 are, and never the "
        f"platform's own (agent {AGENT_PORT}, code-server {CODE_SERVER_PORT})"
    )


def take_mode_flag(query: bytes) -> tuple[bytes | None, bytes]:
    """``(mode, query without the flag)``: mode is ``keep``/``strip``, b"" for another value,
    None when the query has no flag."""
    if _FLAG not in query:
        return None, query
    mode: bytes | None = None
    kept = []
    for part in query.split(b"&"):
        if part.startswith(_FLAG):
            value = part[len(_FLAG) :]
            mode = value if value in _MODES else b""
        elif part:
            kept.append(part)
    return mode, b"&".join(kept)


def landing(next_path: str, vmid: int, *, own_host: bool) -> str | None:
    """Where a ticket exchange for a preview of ``vmid`` lands: ``next_path`` if it is one of
    its previews' paths (on a preview's own host: any path), else None."""
    if not _SAME_ORIGIN_PATH.fullmatch(next_path) or ".." in next_path:
        return None
    if own_host or next_path.startswith(f"/dev/{vmid}/port/"):
        return next_path
    return None
