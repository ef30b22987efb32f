"""Session tokens: HS256 JWTs with a session id (``sid``) backed by the sessions table.

A token is valid when its signature verifies with the pinned algorithm, it has not expired,
its session exists and is not revoked, and its user is not disabled. Logout and disabling
revoke the session row, so the token stops working on the next request; the route feed
(``zlh.routefeed``) carries revocations to the public front.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from sqlalchemy import select

from zlh.api.db import Database, Session, User
from zlh.api.db.models import utcnow
from zlh.api.errors import NotAuthenticated
from zlh.api.notify import REVOCATIONS, announce
from zlh.proxy.auth import ALGORITHM, SESSION_CLAIMS, verify_jwt

__all__ = ["ALGORITHM", "Claims", "Issued", "TokenService", "decode_token"]
ISSUER = "zlh"


@dataclass(frozen=True)
class Claims:
    user_id: int
    sid: str
    expires_at: datetime


@dataclass(frozen=True)
class Issued:
    token: str
    sid: str
    expires_at: datetime


def decode_token(key: bytes, token: str) -> Claims:
    """Verify signature (HS256 only), expiry and claims; no database. The front uses this too."""
    try:
        data = verify_jwt(token, key, claims=SESSION_CLAIMS, issuer=ISSUER)
        return Claims(
            user_id=int(data["sub"]),
            sid=str(data["sid"]),
            expires_at=datetime.fromtimestamp(int(data["exp"]), tz=utcnow().tzinfo),
        )
    except jwt.ExpiredSignatureError:
        raise NotAuthenticated("session expired; log in again") from None
    except (jwt.InvalidTokenError, ValueError, TypeError, KeyError):
        raise NotAuthenticated("invalid session token") from None


class TokenService:
    def __init__(self, db: Database, key: bytes, *, ttl_s: int) -> None:
        self.db = db
        self.key = key
        self.ttl_s = ttl_s

    def issue(self, user: User) -> Issued:
        now = utcnow()
        expires = now + timedelta(seconds=self.ttl_s)
        sid = secrets.token_urlsafe(24)
        with self.db.session() as session:
            session.add(Session(id=sid, user_id=user.id, created_at=now, expires_at=expires))
        claims = {
            "iss": ISSUER,
            "sub": str(user.id),
            "sid": sid,
            # The front trusts this without a database: only admins may open others' IDEs.
            "admin": bool(user.is_admin),
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
        }
        return Issued(jwt.encode(claims, self.key, algorithm=ALGORITHM), sid, expires)

    def verify(self, token: str) -> tuple[User, str]:
        """The token's user and session id, or NotAuthenticated."""
        claims = decode_token(self.key, token)
        with self.db.session() as session:
            row = session.execute(
                select(User, Session)
                .join(Session, Session.user_id == User.id)
                .where(Session.id == claims.sid, User.id == claims.user_id)
            ).first()
        if row is None:
            raise NotAuthenticated("invalid session token")
        user, sess = row
        if sess.revoked_at is not None:
            raise NotAuthenticated("session ended; log in again")
        if user.disabled:
            raise NotAuthenticated("account disabled")
        if sess.expires_at <= utcnow():
            raise NotAuthenticated("session expired; log in again")
        return user, sess.id

    def revoke(self, sid: str) -> None:
        with self.db.session() as session:
            sess = session.get(Session, sid)
            if sess is not None and sess.revoked_at is None:
                sess.revoked_at = utcnow()
                announce(session, REVOCATIONS)

    def revoked_since(self, since: datetime | None) -> list[str]:
        """Sessions revoked after ``since`` (all unexpired revoked ones for None)."""
        query = select(Session.id).where(
            Session.revoked_at.is_not(None), Session.expires_at > utcnow()
        )
        if since is not None:
            query = query.where(Session.revoked_at > since)
        with self.db.session() as session:
            return list(session.scalars(query))
