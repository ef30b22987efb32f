"""``GET /api/dev/{vmid}/ide-url``: a one-time ticket to the container's IDE on the IDE origin.

The IDE never shares the portal's origin (``zlh.proxy.ideorigin``), so the portal's session
does not open it; this answers the URL of the IDE origin's ``/_zlh/auth`` with a fresh ticket
(``zlh.proxy.tickets``: 60 s, single use, bound to the caller, the container and this portal
session, so ending the session ends the IDE cookie it leads to). Its owner and users it is
shared with to use; an admin gets the 404 of anyone else unless ``admin_ide_access`` is on,
and then each ticket is audited.

With ``port`` and ``next`` the ticket opens one of the container's port previews instead
(zlh.proxy.previews): the front's page for a signed-out browser sends it here that way, so it
comes back to the very page it asked for.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response

from zlh.api.audit import Action
from zlh.api.auth import ISSUER
from zlh.api.bodies import IdeUrl
from zlh.api.db import Session, ShareRole
from zlh.api.deps import CurrentUser, Svc, UsableContainer
from zlh.api.errors import InvalidRequest, NotAuthenticated, NotFound
from zlh.api.routes import ERRORS
from zlh.api.services import Services
from zlh.proxy.ideorigin import IdeOrigin
from zlh.proxy.previews import is_previewable, landing, refusal
from zlh.proxy.tickets import AUTH_PATH, mint_ticket

router = APIRouter(prefix="/api/dev", tags=["dev"], responses=ERRORS)


@router.get("/{vmid}/ide-url")
def ide_url(
    container: UsableContainer,
    user: CurrentUser,
    request: Request,
    response: Response,
    svc: Svc,
    port: Annotated[int | None, Query(description="a port preview's, with next")] = None,
    next_path: Annotated[
        str | None,
        Query(alias="next", description="the preview's path to land on", examples=["/"]),
    ] = None,
) -> IdeUrl:
    """The IDE origin's URL that opens this container's IDE, with a one-time ticket (or with
    ``port`` and ``next``, the page of that port's preview)."""
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
    origin = request_ide_origin(request, svc)
    base = origin.base_url(container.vmid)
    after = ""
    if port is not None or next_path is not None:
        if port is None or next_path is None:
            raise InvalidRequest("port and next go together", field="port")
        if not is_previewable(port):
            raise InvalidRequest(refusal(port), field="port")
        base = origin.preview_base_url(container.vmid, port)
        if landing(next_path, container.vmid, own_host=origin.wildcard) is None:
            raise InvalidRequest("next is not a path of this container's previews", field="next")
        after = "&next=" + quote(next_path, safe="/")
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
    return IdeUrl(url=f"{base}{AUTH_PATH}?ticket={ticket}{after}")


def request_ide_origin(request: Request, svc: Services) -> IdeOrigin:
    """The IDE origin as the browser that sent ``request`` to the portal reaches it."""
    scheme = request.headers.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
    try:
        return svc.settings.ide_origin_for(request.headers.get("host", ""), scheme)
    except ValueError as exc:
        raise InvalidRequest(f"cannot tell the IDE origin: {exc}", field="Host") from None
