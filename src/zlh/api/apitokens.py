"""API tokens: long-lived, scoped credentials for programs, sent as ``Authorization: Bearer``.

A token is ``zlh_`` followed by 43 URL-safe characters of a random 256-bit secret. Only its
sha256 is stored: a password needs a slow hash (argon2) because people choose guessable ones,
but nobody can enumerate a 2^256 space, so one fast hash is as safe here and costs nothing per
request. A token is found by its digest (an index lookup on a value an attacker cannot steer)
and the stored digest is compared again in constant time.

The secret is answered once, when the token is made. Every token expires (at most
``api_token_max_days`` after it was made), carries the scopes it was made with (``Scope``) and
is refused (401) once expired, revoked or while its user is disabled. A password change does
not end tokens (as GitHub keeps personal access tokens): revoke them one by one instead.
Tokens are made, listed and revoked with a signed-in session only, never with a token, so a
leaked token cannot mint a longer-lived or wider one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Final

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from zlh.api.audit import Action, audit_entry
from zlh.api.db import ApiToken, Database, User
from zlh.api.db.models import utcnow
from zlh.api.errors import Forbidden, InvalidRequest, NotAuthenticated, NotFound
from zlh.api.notify import REVOCATIONS, announce

__all__ = [
    "MAX_NAME_CHARS",
    "NAME_PATTERN",
    "PREFIX",
    "ApiTokens",
    "Scope",
    "TokenUse",
    "is_api_token",
    "revocation_key",
]

PREFIX: Final = "zlh_"
SECRET_BYTES: Final = 32  # 256 bits
MAX_NAME_CHARS: Final = 64
NAME_PATTERN: Final = r"^[A-Za-z0-9](?:[A-Za-z0-9 ._:@-]*[A-Za-z0-9])?$"
_SECRET_RE = re.compile(r"^zlh_[A-Za-z0-9_-]{43}$")


class Scope(StrEnum):
    """What a token may do; every API route that takes tokens names the one it needs."""

    CONTAINERS_READ = "containers:read"
    CONTAINERS_WRITE = "containers:write"
    FILES = "files"
    CONSOLE = "console"
    ADMIN = "admin"
    METRICS = "metrics"


# Scopes that read or change the whole platform: only administrators may put them on a token.
ADMIN_SCOPES: Final = frozenset({Scope.ADMIN, Scope.METRICS})


@dataclass(frozen=True)
class TokenUse:
    """A verified token: whose, which, and what it may do."""

    user: User
    token_id: int
    name: str
    scopes: frozenset[str]

    @property
    def via(self) -> str:
        """The audit log's note of the credential."""
        return f"token {self.name}"


def is_api_token(credential: str) -> bool:
    """An API token by its prefix (session tokens are JWTs, which never start with it)."""
    return credential.startswith(PREFIX)


def revocation_key(token_id: int) -> str:
    """The route feed's key for a revoked token (session ids never contain ``:``): open
    WebSockets made with the token close on it, as they do for a revoked session."""
    return f"api-token:{token_id}"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_scopes(scopes: list[Scope], user: User) -> list[str]:
    """The body's schema already refused unknown scopes and an empty list."""
    above = sorted(set(scopes) & ADMIN_SCOPES)
    if above and not user.is_admin:
        raise Forbidden(f"only administrators may make a token with the {above[0]} scope")
    return sorted({scope.value for scope in scopes})


class ApiTokens:
    def __init__(self, db: Database, *, max_days: int) -> None:
        self.db = db
        self.max_days = max_days

    def create(
        self, user: User, name: str, scopes: list[Scope], expires_in_days: int | None
    ) -> tuple[ApiToken, str]:
        """The new token's row and its secret (the only time the secret exists in full). The
        name's form and the scopes' names are the body schema's to check."""
        if expires_in_days is None:
            expires_in_days = self.max_days
        if not 1 <= expires_in_days <= self.max_days:
            raise InvalidRequest(
                f"expires_in_days must be 1 to {self.max_days} (api_token_max_days)",
                field="expires_in_days",
            )
        now = utcnow()
        secret = PREFIX + secrets.token_urlsafe(SECRET_BYTES)
        row = ApiToken(
            user_id=user.id,
            name=name,
            scopes=_check_scopes(scopes, user),
            secret_sha256=_digest(secret),
            created_at=now,
            expires_at=now + timedelta(days=expires_in_days),
        )
        try:
            with self.db.session() as session:
                session.add(row)
                session.flush()
                session.refresh(row)
        except IntegrityError:
            raise InvalidRequest(
                f"you already have a token named {name!r}; revoke it or pick another name",
                field="name",
            ) from None
        return row, secret

    def listed(self, user_id: int | None) -> list[ApiToken]:
        """Unrevoked tokens (expired ones included) of ``user_id``, or everybody's for None."""
        query = select(ApiToken).where(ApiToken.revoked_at.is_(None)).order_by(ApiToken.id)
        if user_id is not None:
            query = query.where(ApiToken.user_id == user_id)
        with self.db.session() as session:
            return list(session.scalars(query))

    def revoke(self, token_id: int, caller: User) -> ApiToken:
        """Revoke the caller's token (admins: anybody's); 404 alike for unknown and foreign."""
        with self.db.session() as session:
            row = session.get(ApiToken, token_id)
            if (
                row is None
                or row.revoked_at is not None
                or (row.user_id != caller.id and not caller.is_admin)
            ):
                raise NotFound(f"no token {token_id}")
            row.revoked_at = utcnow()
            announce(session, REVOCATIONS)
            return row

    def verify(self, secret: str, use: str) -> TokenUse:
        """The token's user and scopes, or NotAuthenticated naming why. Each use stamps
        ``last_used_at`` and is audited (``use``: what was asked, e.g. ``GET /api/dev``)."""
        if not _SECRET_RE.fullmatch(secret):
            raise NotAuthenticated("malformed API token")
        digest = _digest(secret)
        now = utcnow()
        with self.db.session() as session:
            row = session.scalar(select(ApiToken).where(ApiToken.secret_sha256 == digest))
            if row is None or not hmac.compare_digest(row.secret_sha256, digest):
                raise NotAuthenticated("unknown API token")
            if row.revoked_at is not None:
                raise NotAuthenticated(f"API token {row.name!r} was revoked")
            if row.expires_at <= now:
                raise NotAuthenticated(f"API token {row.name!r} expired")
            if row.user.disabled:
                raise NotAuthenticated("account disabled")
            row.last_used_at = now
            found = TokenUse(row.user, row.id, row.name, frozenset(row.scopes))
            session.add(audit_entry(row.user.username, Action.TOKEN_USE, detail=use, via=found.via))
        return found

    def revoked_keys(self) -> list[str]:
        """Revocation keys of every unexpired token that no longer works (revoked, or its user
        disabled), for the route feed's periodic sync."""
        query = (
            select(ApiToken.id)
            .join(User, User.id == ApiToken.user_id)
            .where(
                ApiToken.expires_at > utcnow(),
                or_(ApiToken.revoked_at.is_not(None), User.disabled.is_(True)),
            )
        )
        with self.db.session() as session:
            return [revocation_key(token_id) for token_id in session.scalars(query)]
