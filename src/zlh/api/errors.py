"""Exceptions of the control plane, each with the HTTP status it maps to.

::

    ZlhError (zlh.errors)
     └── ApiError                      anything a route reports; one handler renders ErrorBody
          ├── NotAuthenticated   401   no token, bad signature/algorithm, expired, revoked
          ├── Forbidden          403   authenticated but not allowed (admin-only)
          ├── NotFound           404   unknown, or not the caller's (no existence leak)
          ├── Conflict           409   the state does not allow it (e.g. user exists)
          │    └── NotRunning          the container is stopped, stopping or starting
          ├── InvalidRequest     422   names the field(s) in ``validations``
          ├── RateLimited        429   carries ``retry_after_s``
          ├── QuotaExceeded      429   a per-user limit is reached (waiting does not help)
          └── AgentError         502   an agent refused or failed a request
               └── AgentUnreachable    connect error, timeout or broken HTTP

Backend errors (``zlh.backends.BackendError``) and catalog errors are ZlhErrors already and go
through the same handler. The agents' connect and HTTP errors are translated in ``agent_client``.
"""

from __future__ import annotations

from zlh.errors import ZlhError
from zlh.schemas import FieldProblem

__all__ = [
    "AgentError",
    "AgentUnreachable",
    "ApiError",
    "Conflict",
    "Forbidden",
    "InvalidRequest",
    "NotAuthenticated",
    "NotFound",
    "NotRunning",
    "RateLimited",
]


class ApiError(ZlhError):
    status_code = 400


class NotAuthenticated(ApiError):
    status_code = 401


class Forbidden(ApiError):
    status_code = 403


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    status_code = 409


class NotRunning(Conflict):
    """The container is stopped (or stopping, or starting): start it, or wait."""

    def __init__(self, message: str, *, state: str) -> None:
        super().__init__(message)
        self.state = state


class InvalidRequest(ApiError):
    status_code = 422

    def __init__(self, message: str, *, field: str, reason: str = "") -> None:
        super().__init__(message, reason=reason)
        self.validations = [FieldProblem(field=field, detail=message)]


class RateLimited(ApiError):
    status_code = 429

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QuotaExceeded(ApiError):
    status_code = 429


class AgentError(ApiError):
    status_code = 502


class AgentUnreachable(AgentError):
    status_code = 504
