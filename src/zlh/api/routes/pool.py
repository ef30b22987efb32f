"""``/api/pool``: the warm pool, for administrators (its containers are in their listing)."""

from __future__ import annotations

from fastapi import APIRouter

from zlh.api.apitokens import Scope
from zlh.api.bodies import PoolOut
from zlh.api.deps import AdminUser, Svc, require_scope
from zlh.api.routes import ERRORS

router = APIRouter(prefix="/api", tags=["pool"], responses=ERRORS)


@router.get("/pool")
@require_scope(Scope.ADMIN)
async def pool(admin: AdminUser, svc: Svc) -> PoolOut:
    """How many containers the platform keeps ready ahead of demand, how many are ready and
    being built, and the memory they may use."""
    summary = await svc.pool.summary()
    return PoolOut(
        wanted=summary.wanted,
        ready=summary.ready,
        building=summary.building,
        memory_mb=summary.memory_mb,
    )
