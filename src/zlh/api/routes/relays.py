"""``/api/dev/{vmid}/files…`` and ``/api/dev/{vmid}/console``: relays to the container's agent.

Same routes and query parameters as the agent's, behind the same ownership check as every
vmid route (404 for a container the caller does not own, over HTTP and WebSocket alike). The
agent is called with the container's secret; nothing of the caller's request but the path,
the declared query parameters, the body and ``Range``/``Content-Length`` reaches it, so the
portal's cookie and ``Authorization`` header never do. Bodies stream both ways: an upload is
sent on as it arrives (a client that disconnects halfway cuts the agent's upload too, which
leaves no file), a download is sent on chunk by chunk, console frames one by one. An agent is
its tenant's (root in the container may answer anything): a small JSON answer read whole is
refused past ``ANSWER_MAX_BYTES``, so no agent can stream without end into the API's memory.

Uploads, deletions, new directories, moves and console opens go to the audit log. Each relayed
request opens its own agent connection: file operations are rare, consoles live long, and the
status poller's kept-alive connections (zlh.api.agent_http) must never wait behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Annotated, Any

import aiohttp
from fastapi import APIRouter, Query, Request, Response, WebSocket
from starlette.types import Receive, Send
from starlette.types import Scope as AsgiScope
from starlette.websockets import WebSocketDisconnect

from zlh.api.apitokens import Scope, revocation_key
from zlh.api.audit import Action
from zlh.api.db import Container, ContainerState
from zlh.api.deps import (
    Caller,
    CurrentUser,
    Svc,
    UsableContainer,
    authenticate,
    require_scope,
    usable_container,
)
from zlh.api.errors import AgentError, AgentUnreachable, ApiError, NotFound, NotRunning
from zlh.api.responses import deny_websocket, error_json
from zlh.api.routes import FILE_ERRORS
from zlh.api.services import Services
from zlh.errors import ZlhError
from zlh.routefeed import FeedRoute, Resync, RouteFeed, RouteRemoved, RouteSet, SessionRevoked
from zlh.schemas import DirListing, ErrorBody, MkdirRequest, MoveRequest, PathResult
from zlh.schemas.payload import MAX_VMID, MIN_VMID

__all__ = ["router"]

router = APIRouter(prefix="/api/dev", tags=["files"], responses=FILE_ERRORS)

AGENT_TIMEOUT_S = 30.0
CHUNK_BYTES = 256 * 1024
ANSWER_MAX_BYTES = 16 << 20  # a listing of about 100,000 entries
_PASSED_BACK = (
    "Content-Type",
    "Content-Length",
    "Content-Range",
    "Accept-Ranges",
    "X-Content-Type-Options",
)

PathQuery = Annotated[str, Query(max_length=4096, description="relative to workspace/")]
# A file or directory in the workspace, never the workspace itself.
EntryQuery = Annotated[
    str, Query(min_length=1, max_length=4096, description="relative to workspace/, not empty")
]


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(sock_connect=AGENT_TIMEOUT_S, sock_read=AGENT_TIMEOUT_S),
    )


_NOT_RUNNING = {
    ContainerState.STOPPED: "start it first",
    ContainerState.STOPPING: "it is being stopped",
    ContainerState.STARTING: "try again once it is ready",
    ContainerState.REBUILDING: "it is being rebuilt; try again once it is ready",
}


def _agent(svc: Services, container: Container) -> tuple[str, dict[str, str]]:
    state = ContainerState(container.state)
    if state in _NOT_RUNNING:
        raise NotRunning(
            f"container {container.vmid} is {state}: {_NOT_RUNNING[state]}", state=state.value
        )
    url = container.agent_url
    if url is None:
        raise ApiError(f"container {container.vmid} has no agent address yet", status_code=503)
    return url, {"Authorization": f"Bearer {svc.provisioning.secret(container)}"}


def _refused(url: str, status: int) -> AgentError | None:
    if status == 401:
        return AgentError(f"agent at {url} refused the container secret (401)")
    return None


async def _call(
    svc: Services,
    container: Container,
    method: str,
    path: str,
    *,
    params: Mapping[str, str] | None = None,
    data: Any = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """One agent request whose (small, JSON) answer is passed back as it is."""
    url, auth = _agent(svc, container)
    try:
        async with (
            _session() as http,
            http.request(
                method, url + path, params=params, data=data, headers={**auth, **(headers or {})}
            ) as upstream,
        ):
            body = await _read_bounded(upstream, url + path)
            status = upstream.status
            media_type = upstream.headers.get("Content-Type", "application/json")
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise AgentUnreachable(
            f"agent of container {container.vmid} did not answer: {exc}"
        ) from exc
    refused = _refused(url, status)
    if refused is not None:
        raise refused
    return Response(body, status_code=status, media_type=media_type)


async def _read_bounded(upstream: aiohttp.ClientResponse, url: str) -> bytes:
    """The answer's body; AgentError once it passes :data:`ANSWER_MAX_BYTES` (the connection
    is dropped with the response)."""
    body = bytearray()
    async for chunk in upstream.content.iter_chunked(CHUNK_BYTES):
        body += chunk
        if len(body) > ANSWER_MAX_BYTES:
            raise AgentError(f"agent at {url} answered more than {ANSWER_MAX_BYTES} bytes")
    return bytes(body)


async def _audit(svc: Services, actor: str, action: Action, vmid: int, detail: str) -> None:
    if action in _FILE_CHANGES:  # a person's use of the container (idle auto-stop)
        svc.lifecycle.note_activity(vmid, "files")
    await asyncio.to_thread(svc.audit.record, actor, action, vmid, detail)


_FILE_CHANGES = {Action.FILE_UPLOAD, Action.FILE_DELETE, Action.FILE_MKDIR, Action.FILE_MOVE}


def _display(path: str) -> str:
    return "workspace/" + path.lstrip("/")


# -- files ---------------------------------------------------------------------------------------


@router.get("/{vmid}/files", responses={200: {"model": DirListing}})
@require_scope(Scope.FILES)
async def list_files(container: UsableContainer, svc: Svc, path: PathQuery = "") -> Response:
    """List a directory of the workspace (symlinks shown as links, never followed)."""
    return await _call(svc, container, "GET", "/files", params={"path": path})


@router.delete("/{vmid}/files", status_code=204)
@require_scope(Scope.FILES)
async def delete_file(
    container: UsableContainer,
    user: CurrentUser,
    svc: Svc,
    path: EntryQuery,
    recursive: bool = False,
) -> Response:
    """Delete a file, link or empty directory; a non-empty one only with ``recursive=true``."""
    params = {"path": path, "recursive": "true" if recursive else "false"}
    response = await _call(svc, container, "DELETE", "/files", params=params)
    if response.status_code == 204:
        detail = f"deleted {_display(path)}" + (" (recursive)" if recursive else "")
        await _audit(svc, user.username, Action.FILE_DELETE, container.vmid, detail)
    return response


@router.put("/{vmid}/files/content", status_code=201, responses={201: {"model": PathResult}})
@require_scope(Scope.FILES)
async def upload_file(
    request: Request,
    container: UsableContainer,
    user: CurrentUser,
    svc: Svc,
    path: EntryQuery,
    overwrite: bool = True,
) -> Response:
    """Upload the request body to ``path`` (atomic: a cut upload leaves nothing)."""
    headers = {"Content-Type": "application/octet-stream"}
    if "content-length" in request.headers:
        headers["Content-Length"] = request.headers["content-length"]
    params = {"path": path, "overwrite": "true" if overwrite else "false"}
    response = await _call(
        svc,
        container,
        "PUT",
        "/files/content",
        params=params,
        data=request.stream(),
        headers=headers,
    )
    if response.status_code == 201:
        size = PathResult.model_validate_json(bytes(response.body)).size
        detail = f"uploaded {_display(path)} ({size} bytes)"
        await _audit(svc, user.username, Action.FILE_UPLOAD, container.vmid, detail)
    return response


@router.get(
    "/{vmid}/files/content",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        206: {"content": {"application/octet-stream": {}}},
        416: {"model": ErrorBody},
    },
)
@require_scope(Scope.FILES)
async def download_file(
    request: Request, container: UsableContainer, svc: Svc, path: EntryQuery
) -> Response:
    """Stream a file; a single ``Range: bytes=…`` gets 206."""
    url, auth = _agent(svc, container)
    if "range" in request.headers:
        auth["Range"] = request.headers["range"]
    return _Download(url + "/files/content", {"path": path}, auth, container.vmid)


class _Download(Response):
    """Streams the agent's answer inside the ASGI call, so the agent connection lives exactly as
    long as the download and is closed however it ends (done, client gone, agent gone)."""

    def __init__(
        self, url: str, params: dict[str, str], headers: dict[str, str], vmid: int
    ) -> None:
        super().__init__()
        self._target = (url, params, headers, vmid)

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        url, params, headers, vmid = self._target
        async with _session() as http:
            try:
                upstream = await http.get(url, params=params, headers=headers)
            except (TimeoutError, aiohttp.ClientError) as exc:
                gone = AgentUnreachable(f"agent of container {vmid} did not answer: {exc}")
                await error_json(gone)(scope, receive, send)
                return
            async with upstream:
                refused = _refused(url, upstream.status)
                if refused is not None:
                    await error_json(refused)(scope, receive, send)
                    return
                passed = [
                    (name.lower().encode("latin-1"), upstream.headers[name].encode("latin-1"))
                    for name in _PASSED_BACK
                    if name in upstream.headers
                ]
                await send(
                    {"type": "http.response.start", "status": upstream.status, "headers": passed}
                )
                async for chunk in upstream.content.iter_chunked(CHUNK_BYTES):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})


@router.post("/{vmid}/files/mkdir", status_code=201, responses={201: {"model": PathResult}})
@require_scope(Scope.FILES)
async def make_directory(
    body: MkdirRequest, container: UsableContainer, user: CurrentUser, svc: Svc
) -> Response:
    """Create a directory (``parents: true`` creates the missing ones, like ``mkdir -p``)."""
    data = body.model_dump_json(by_alias=True).encode()
    json_type = {"Content-Type": "application/json"}
    response = await _call(svc, container, "POST", "/files/mkdir", data=data, headers=json_type)
    if response.status_code == 201:
        detail = f"made {_display(body.path)}" + (" (parents)" if body.parents else "")
        await _audit(svc, user.username, Action.FILE_MKDIR, container.vmid, detail)
    return response


@router.post("/{vmid}/files/move", responses={200: {"model": PathResult}})
@require_scope(Scope.FILES)
async def move_file(
    body: MoveRequest, container: UsableContainer, user: CurrentUser, svc: Svc
) -> Response:
    """Move or rename within the workspace; replaces the destination only with ``overwrite``."""
    data = body.model_dump_json(by_alias=True).encode()
    json_type = {"Content-Type": "application/json"}
    response = await _call(svc, container, "POST", "/files/move", data=data, headers=json_type)
    if response.status_code == 200:
        detail = f"moved {_display(body.source)} to {_display(body.destination)}"
        await _audit(svc, user.username, Action.FILE_MOVE, container.vmid, detail)
    return response


# -- console -------------------------------------------------------------------------------------


async def _caller(websocket: WebSocket, svc: Services, vmid: int) -> tuple[Caller, Container]:
    """The HTTP routes' checks, for a WebSocket: credential (401) and scope (403), then
    ownership (404)."""
    caller = await asyncio.to_thread(authenticate, websocket, svc)
    if not MIN_VMID <= vmid <= MAX_VMID:
        raise NotFound(f"no container {vmid}")
    container = await asyncio.to_thread(usable_container, vmid, caller.user, svc)
    return caller, container


@router.websocket("/{vmid}/console")
@require_scope(Scope.CONSOLE)
async def console(
    websocket: WebSocket,
    vmid: int,
    rows: Annotated[int, Query(ge=1, le=1000)] = 24,
    cols: Annotated[int, Query(ge=1, le=1000)] = 80,
) -> None:
    """The agent's console (a login shell as the dev user), frame for frame."""
    svc: Services = websocket.app.state.services
    try:
        caller, container = await _caller(websocket, svc, vmid)
        url, auth = _agent(svc, container)
    except ZlhError as exc:
        await deny_websocket(websocket, exc)
        return
    async with _session() as http:
        try:
            upstream = await http.ws_connect(
                url + "/console",
                params={"rows": str(rows), "cols": str(cols)},
                headers=auth,
                heartbeat=30.0,
                max_msg_size=1024 * 1024,
            )
        except aiohttp.WSServerHandshakeError as exc:
            failure = _refused(url, exc.status) or ApiError(
                f"the agent refused the console ({exc.status}): {exc.message}",
                status_code=429 if exc.status == 429 else 502,
            )
            await deny_websocket(websocket, failure)
            return
        except (TimeoutError, aiohttp.ClientError) as exc:
            await deny_websocket(websocket, AgentUnreachable(f"agent of container {vmid}: {exc}"))
            return
        async with upstream:
            await websocket.accept()
            await _audit(svc, caller.user.username, Action.OPEN, container.vmid, "console")
            # A user it is shared with loses the console when the share is taken back.
            guest = caller.user.id if container.role_of(caller.user.id) is not None else None
            key = _revocation_key(caller)
            await _splice(websocket, upstream, svc, key, container.vmid, guest)


def _revocation_key(caller: Caller) -> str:
    """What the route feed calls the caller's credential when it is revoked."""
    if caller.token is not None:
        return revocation_key(caller.token.token_id)
    assert caller.sid is not None
    return caller.sid


async def _revoked_or_removed(feed: RouteFeed, sid: str, vmid: int, guest: int | None) -> None:
    """Return once ``sid`` (a session's id or an API token's revocation key) is revoked
    (logout, token revoked, user disabled), container ``vmid`` is gone, or (``guest``: the
    user it is shared with) its share to use it is taken back."""

    def lost(route: FeedRoute | None) -> bool:
        return route is None or (guest is not None and guest not in route.guest_ids)

    while True:
        async with feed.subscribe() as queue:
            snapshot = feed.snapshot()
            if sid in snapshot.revoked_sessions or lost(snapshot.routes.get(vmid)):
                return
            while not isinstance(event := await queue.get(), Resync):
                if event == SessionRevoked(sid) or event == RouteRemoved(vmid):
                    return
                if isinstance(event, RouteSet) and event.route.vmid == vmid and lost(event.route):
                    return


async def _splice(
    websocket: WebSocket,
    upstream: aiohttp.ClientWebSocketResponse,
    svc: Services,
    sid: str,
    vmid: int,
    guest: int | None,
) -> None:
    """Copy frames both ways until either side closes, the caller's session (or API token) is
    revoked or their share taken back."""

    async def from_client() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:  # keystrokes (text frames: resizes)
                    svc.lifecycle.note_activity(vmid, "console")
                    await upstream.send_bytes(message["bytes"])
                elif message.get("text") is not None:
                    await upstream.send_str(message["text"])

    async def from_agent() -> None:
        async for message in upstream:
            if message.type == aiohttp.WSMsgType.BINARY:
                await websocket.send_bytes(message.data)
            elif message.type == aiohttp.WSMsgType.TEXT:
                await websocket.send_text(message.data)

    async def revoked() -> None:
        await _revoked_or_removed(svc.feed, sid, vmid, guest)

    tasks = [asyncio.create_task(job()) for job in (from_client, from_agent, revoked)]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await upstream.close()
        reason = "access revoked" if tasks[2].done() and not tasks[2].cancelled() else ""
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.close(code=1008 if reason else 1000, reason=reason)
