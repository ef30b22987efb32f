"""``GET /api/dev/{vmid}/ide-url``: a one-time ticket to the container's IDE on the IDE origin.

The IDE never shares the portal's origin (``zlh.proxy.ideorigin``), so the portal's session
does not open it; this answers the URL of the IDE origin's ``/_zlh/auth`` with a fresh ticket
(``zlh.proxy.tickets``: 60 s, single use, bound to the caller, the container and this portal
session, so ending the session ends the IDE cookie it leads to). Its owner and users it is
shared with to use; an admin gets the 404 of anyone else unless ``admin_ide_access`` is on,
and then each ticket is audited.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from zlh.api.audit import Action
from zlh.api.auth import ISSUER
from zlh.api.bodies import IdeUrl
from zlh.api.db import Session, ShareRole
from zlh.api.deps import CurrentUser, Svc, UsableContainer
from zlh.api.errors import InvalidRequest, NotAuthenticated, NotFound
from zlh.api.routes import ERRORS
from zlh.proxy.tickets import AUTH_PATH, mint_ticket

router = APIRouter(prefix="/api/dev", tags=["dev"], responses=ERRORS)


@router.get("/{vmid}/ide-url")
def ide_url(
    container: UsableContainer, user: CurrentUser, request: Request, response: Response, svc: Svc
) -> IdeUrl:
    """The IDE origin's URL that opens this container's IDE, with a one-time ticket."""
    settings = svc.settings
    # Not its owner, nor a user it is shared with to use: an admin (if admins may).
    foreign = container.owner_id != user.id and container.role_of(user.id) != ShareRole.USE
    if foreign and not settings.admin_ide_access:
        raise NotFound(f"no container {container.vmid}")
    sid: str = request.state.sid
    with svc.db.session() as session:
        portal_session = session.get(Session, sid)
        if portal_session is None:
            raise NotAuthenticated("invalid session token")
        issued_at = portal_session.created_at.timestamp()
        expires_at = portal_session.expires_at.timestamp()
    scheme = request.headers.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
    try:
        origin = settings.ide_origin_for(request.headers.get("host", ""), scheme)
    except ValueError as exc:
        raise InvalidRequest(f"cannot tell the IDE origin: {exc}", field="Host") from None
    ticket = mint_ticket(
        svc.tokens.key,
        user_id=str(user.id),
        sid=sid,
        vmid=container.vmid,
        admin=bool(user.is_admin),
        session_issued_at=issued_at,
        session_expires_at=expires_at,
        issuer=ISSUER,
    )
    if foreign:
        svc.audit.record(
            user.username,
            Action.ADMIN_IDE_OPEN,
            container.vmid,
            f"owner {container.owner.username}",
        )
    response.headers["Cache-Control"] = "no-store"
    url = f"{origin.base_url(container.vmid)}{AUTH_PATH}?ticket={ticket}"
    return IdeUrl(url=url)
