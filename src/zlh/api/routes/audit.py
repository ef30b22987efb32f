"""``/api/audit``: the audit log, for administrators."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from zlh.api.apitokens import Scope
from zlh.api.bodies import AuditOut
from zlh.api.deps import AdminUser, Svc, require_scope
from zlh.api.routes import ERRORS
from zlh.schemas.payload import MAX_VMID, MIN_VMID

router = APIRouter(prefix="/api", tags=["audit"], responses=ERRORS)


@router.get("/audit")
@require_scope(Scope.ADMIN)
def audit(
    admin: AdminUser,
    svc: Svc,
    vmid: Annotated[int | None, Query(ge=MIN_VMID, le=MAX_VMID)] = None,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="page: ids below")] = None,
) -> list[AuditOut]:
    """Newest first: who logged in (or failed to), created, opened, changed and deleted what,
    when, and from which address."""
    entries = svc.audit.entries(vmid=vmid, actor=actor, limit=limit, before_id=before)
    return [
        AuditOut(
            id=e.id,
            at=e.at,
            actor=e.actor,
            action=e.action,
            vmid=e.vmid,
            detail=e.detail,
            address=e.address,
            via=e.via,
        )
        for e in entries
    ]
