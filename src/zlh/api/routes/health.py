"""``/api/health``: whether this API can serve, for load balancers, systemd and operators.

Unauthenticated, so it says nothing but the verdict and which check failed: the database
answering a trivial query is what every other route needs. ``service`` names the platform, so
``zlh doctor`` can tell its own running front from something else on the port.

``/api/health/ready`` is what a load balancer checks before sending new connections here: not
ready while the process drains (SIGTERM: open WebSockets run on, new ones are refused) or
while the database does not answer.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from zlh.api.deps import Svc

router = APIRouter(prefix="/api", tags=["health"])
SERVICE = "zlh"


@router.get("/health", responses={503: {"description": "a check failed"}})
def health(svc: Svc) -> JSONResponse:
    """``{"service": "zlh", "status": "ok", "database": "ok"}``, or 503 naming the failing
    check."""
    reason = _database_problem(svc)
    if reason is not None:
        return JSONResponse(
            {"service": SERVICE, "status": "failing", "database": reason}, status_code=503
        )
    return JSONResponse({"service": SERVICE, "status": "ok", "database": "ok"})


@router.get("/health/ready", responses={503: {"description": "draining, or the database fails"}})
def ready(svc: Svc, request: Request) -> JSONResponse:
    """``{"ready": true}``, or 503 ``{"ready": false, "reason": "draining"}`` (or the
    database's failure)."""
    if getattr(request.app.state, "draining", False):
        return JSONResponse({"ready": False, "reason": "draining"}, status_code=503)
    reason = _database_problem(svc)
    if reason is not None:
        return JSONResponse({"ready": False, "reason": f"database: {reason}"}, status_code=503)
    return JSONResponse({"ready": True})


def _database_problem(svc: Svc) -> str | None:
    try:
        with svc.db.session() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}"
    return None
