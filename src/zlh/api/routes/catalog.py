"""``/api/catalog``: the runtime catalog of the configured artifact server."""

from __future__ import annotations

from fastapi import APIRouter

from zlh.api.apitokens import Scope
from zlh.api.deps import CurrentUser, Svc, require_scope
from zlh.api.routes import ERRORS
from zlh.schemas import Catalog

router = APIRouter(prefix="/api", tags=["catalog"], responses=ERRORS)


@router.get("/catalog")
@require_scope(Scope.CONTAINERS_READ)
async def catalog(user: CurrentUser, svc: Svc) -> Catalog:
    """Runtimes and addons that can be requested, with their versions and pinned artifacts."""
    return await svc.catalog.get()
