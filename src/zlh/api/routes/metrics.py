"""``GET /metrics``: the platform's Prometheus metrics (zlh.api.metrics) in the text format.

Who may read them is decided by one dependency, :func:`metrics_reader`: an admin's session,
or an admin's API token with the ``metrics`` scope. Prometheus on a private network can instead
scrape the separate ``metrics_listen`` address, which ``zlh up`` serves without authentication
(docs/operations.md).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from zlh.api.apitokens import Scope
from zlh.api.deps import AdminUser, Svc, require_scope
from zlh.api.metrics import CONTENT_TYPE

__all__ = ["metrics_reader", "router"]

router = APIRouter(tags=["metrics"])


def metrics_reader(user: AdminUser) -> None:
    """Who may read ``/metrics``: an admin (cookie or Bearer session, or an API token with the
    ``metrics`` scope, which only admins can make); 401 signed out, 403 for anyone else."""


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"},
        401: {"description": "not signed in"},
        403: {"description": "not an admin"},
    },
)
@require_scope(Scope.METRICS)
def metrics(svc: Svc, _reader: Annotated[None, Depends(metrics_reader)]) -> Response:
    """Every metric of this platform, rendered at scrape time (blocking work runs in
    FastAPI's thread pool, so the loop keeps serving)."""
    return Response(svc.metrics.render(), media_type=CONTENT_TYPE)
