"""The agent's two middlewares: the container secret, and the one error envelope.

Every request, on every route (including unknown ones), must carry ``Authorization: Bearer
<secret>``; the comparison is constant-time. Every error leaves as ``ErrorBody`` JSON
(``{message, detail, validations}``), whether it was raised as a ``ZlhError``, by aiohttp
(404, 405, 413) or by a bug (500, logged).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from zlh.agent.token import AgentToken
from zlh.errors import ZlhError
from zlh.schemas import ErrorBody, FieldProblem

__all__ = ["InvalidRequest", "Unauthorized", "bearer_auth", "error_envelope", "error_json"]

log = logging.getLogger("zlh.agent")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Unauthorized(ZlhError):
    status_code = 401


class InvalidRequest(ZlhError):
    """422 with the offending fields named."""

    status_code = 422

    def __init__(self, message: str, problems: list[FieldProblem]) -> None:
        super().__init__(message)
        self.problems = problems


def error_json(
    status: int, message: str, detail: str = "", problems: list[FieldProblem] | None = None
) -> web.Response:
    body = ErrorBody(message=message, detail=detail, validations=problems or [])
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    payload = body.model_dump(mode="json", exclude_none=True)
    return web.json_response(payload, status=status, headers=headers)


def bearer_auth(token: AgentToken) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not token.accepts(request.headers.get("Authorization", "").encode()):
            raise Unauthorized("missing or wrong bearer token")
        return await handler(request)

    return middleware


@web.middleware
async def error_envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except InvalidRequest as exc:
        return error_json(exc.status_code, exc.message, exc.reason, exc.problems)
    except ZlhError as exc:
        return error_json(exc.status_code, exc.message, exc.reason)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_json(exc.status, exc.reason, exc.text or "")
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_json(500, "internal error in the agent", "see the agent's log")
