"""``/api/health``: whether this API can serve, for load balancers, systemd and operators.

Unauthenticated, so it says nothing but the verdict and which check failed: the database
answering a trivial query is what every other route needs. ``service`` names the platform, so
``zlh doctor`` can tell its own running front from something else on the port.
"""

from __future__ import annotations

from fastapi import APIRouter
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
    try:
        with svc.db.session() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        reason = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}"
        return JSONResponse(
            {"service": SERVICE, "status": "failing", "database": reason}, status_code=503
        )
    return JSONResponse({"service": SERVICE, "status": "ok", "database": "ok"})
