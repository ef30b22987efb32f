"""Error answers outside the route handlers' exception path: plain ASGI and WebSocket upgrades."""

from __future__ import annotations

from fastapi import WebSocket
from fastapi.responses import JSONResponse

from zlh.errors import ZlhError
from zlh.schemas import ErrorBody

__all__ = ["deny_websocket", "error_json"]


def error_json(exc: ZlhError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The error's status and body: message, detail, the fields it names and, when the
    container's state refused it, that state."""
    body = ErrorBody(
        message=exc.message,
        detail=exc.reason,
        validations=getattr(exc, "validations", []),
        state=getattr(exc, "state", None),
    )
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True),
        status_code=exc.status_code,
        headers=headers,
    )


async def deny_websocket(websocket: WebSocket, exc: ZlhError) -> None:
    """Refuse the upgrade with the error's HTTP status and body where the server allows it."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_json(exc))
    else:
        await websocket.close(code=1008, reason=exc.message[:120])
