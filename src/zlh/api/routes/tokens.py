"""``/api/tokens``: the caller's API tokens (``zlh.api.apitokens``): make, list, revoke.

Only a signed-in session may use these routes (no scope is declared, so every API token is
refused): a leaked token cannot make a longer-lived or wider one, nor hide by revoking others.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from zlh.api.apitokens import revocation_key
from zlh.api.audit import Action
from zlh.api.bodies import TokenCreate, TokenCreated, TokenOut
from zlh.api.db import ApiToken
from zlh.api.db.models import utcnow
from zlh.api.deps import CurrentUser, Svc
from zlh.api.errors import Forbidden
from zlh.api.routes import ERRORS

router = APIRouter(prefix="/api/tokens", tags=["tokens"], responses=ERRORS)

NO_STORE = {"Cache-Control": "no-store"}


def _out(row: ApiToken) -> TokenOut:
    return TokenOut(
        id=row.id,
        name=row.name,
        owner=row.user.username,
        scopes=row.scopes,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        expired=row.expires_at <= utcnow(),
    )


@router.post("", status_code=201)
def create_token(
    body: TokenCreate, user: CurrentUser, svc: Svc, response: Response
) -> TokenCreated:
    """Make an API token; its secret (``token``) is in this answer only. 422 names a bad or
    duplicate name, scope or expiry; 403 for the admin or metrics scope asked by a
    non-admin."""
    row, secret = svc.api_tokens.create(user, body.name, body.scopes, body.expires_in_days)
    detail = f"{row.name}: {', '.join(row.scopes)}, expires {row.expires_at:%Y-%m-%d %H:%M}Z"
    svc.audit.record(user.username, Action.TOKEN_CREATE, detail=detail)
    response.headers.update(NO_STORE)
    return TokenCreated(**_out(row).model_dump(), token=secret)


@router.get("")
def list_tokens(
    user: CurrentUser,
    svc: Svc,
    all_users: Annotated[
        bool, Query(alias="all", description="admins: every user's tokens")
    ] = False,
) -> list[TokenOut]:
    """The caller's unrevoked tokens, expired ones included (never a secret); an admin's
    with ``all=true`` everybody's."""
    if all_users and not user.is_admin:
        raise Forbidden("only administrators may list every user's tokens")
    return [_out(row) for row in svc.api_tokens.listed(None if all_users else user.id)]


@router.delete("/{token_id}", status_code=204)
def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=2**31 - 1, description="the token's id")],
    user: CurrentUser,
    svc: Svc,
) -> Response:
    """Revoke a token at once (its open console WebSockets close too). Another user's token
    is 404, as an unknown one; admins may revoke anybody's."""
    row = svc.api_tokens.revoke(token_id, user)
    svc.registry.call_on_loop(lambda: svc.feed.revoke([revocation_key(row.id)]))
    whose = "" if row.user_id == user.id else f" of {row.user.username}"
    svc.audit.record(user.username, Action.TOKEN_REVOKE, detail=f"{row.name}{whose}")
    return Response(status_code=204)
