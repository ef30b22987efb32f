"""User accounts: argon2 password hashes, an admin flag, disabling.

Whatever changes what a session may do -- a new password, the admin flag granted or removed,
disabling -- revokes that user's sessions (all of them, or all but the caller's own when users
change their own password), so no token outlives the facts it was issued on. Callers pass the
returned session ids to the route feed; another process's revocations reach it by the API's
periodic sync, and at once on PostgreSQL (``zlh.api.notify``).
"""

from __future__ import annotations

import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as DbSession

from zlh.api.db import Database, Session, User
from zlh.api.db.models import POOL_USER, utcnow
from zlh.api.errors import Conflict, Forbidden, InvalidRequest, NotFound
from zlh.api.notify import REVOCATIONS, announce

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "authenticate",
    "change_password",
    "configure_hashing",
    "create_user",
    "disable_user",
    "get_user",
    "list_users",
    "set_admin",
    "set_password",
]

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
_USERNAME_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,63}$")
_hasher = PasswordHasher()
# Verified against when the user does not exist, so timing does not tell whether it does.
_dummy_hash = _hasher.hash("not a real password, only for timing")


def configure_hashing(*, time_cost: int, memory_kib: int, parallelism: int) -> None:
    """Argon2 parameters for new hashes (stored hashes keep theirs and still verify)."""
    global _hasher, _dummy_hash
    _hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)
    _dummy_hash = _hasher.hash("not a real password, only for timing")


def _check_username(username: str) -> str:
    if not _USERNAME_RE.fullmatch(username):
        raise InvalidRequest(
            "user name must be 1-64 characters: lowercase letters, digits, '_', '.', '-', "
            "starting with a letter or '_'",
            field="username",
        )
    return username


def _check_password(password: str, field: str = "password") -> str:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidRequest(
            f"password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters",
            field=field,
        )
    return password


def _revoke_sessions(session: DbSession, user_id: int, *, keep: str | None = None) -> list[str]:
    """Revoke ``user_id``'s open sessions but ``keep``; the ids revoked."""
    query = select(Session.id).where(Session.user_id == user_id, Session.revoked_at.is_(None))
    if keep is not None:
        query = query.where(Session.id != keep)
    sids = list(session.scalars(query))
    session.execute(update(Session).where(Session.id.in_(sids)).values(revoked_at=utcnow()))
    if sids:
        announce(session, REVOCATIONS)
    return sids


def _user_row(session: DbSession, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no user {username!r}")
    return user


def create_user(db: Database, username: str, password: str, *, admin: bool = False) -> User:
    user = User(
        username=_check_username(username),
        password_hash=_hasher.hash(_check_password(password)),
        is_admin=admin,
    )
    try:
        with db.session() as session:
            session.add(user)
    except IntegrityError:
        raise Conflict(f"user {username!r} already exists") from None
    return user


def get_user(db: Database, username: str) -> User:
    with db.session() as session:
        return _user_row(session, username)


def list_users(db: Database) -> list[User]:
    with db.session() as session:
        query = select(User).where(User.username != POOL_USER).order_by(User.username)
        return list(session.scalars(query))


def set_password(db: Database, username: str, password: str) -> list[str]:
    """Set ``username``'s password (an operator's reset) and revoke all its sessions."""
    digest = _hasher.hash(_check_password(password))
    with db.session() as session:
        user = _user_row(session, username)
        user.password_hash = digest
        return _revoke_sessions(session, user.id)


def change_password(db: Database, user_id: int, current: str, new: str, *, keep: str) -> list[str]:
    """A user's own change: ``current`` must verify (else Forbidden); every session of the user
    but ``keep`` (the caller's) is revoked. Returns the revoked session ids."""
    _check_password(new, "new")
    if new == current:
        raise InvalidRequest("the new password must differ from the current one", field="new")
    digest = _hasher.hash(new)
    with db.session() as session:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound(f"no user #{user_id}")
        try:
            _hasher.verify(user.password_hash, current)
        except (VerificationError, InvalidHashError):
            raise Forbidden("the current password is wrong") from None
        user.password_hash = digest
        return _revoke_sessions(session, user.id, keep=keep)


def set_admin(db: Database, username: str, admin: bool) -> list[str]:
    """Grant or remove the admin flag; a change revokes all the user's sessions."""
    with db.session() as session:
        user = _user_row(session, username)
        if user.is_admin == admin:
            return []
        user.is_admin = admin
        return _revoke_sessions(session, user.id)


def set_idle_stop_after(db: Database, username: str, seconds: int | None) -> None:
    """``username``'s containers stop after ``seconds`` idle (0: never; None: the setting)."""
    if seconds is not None and seconds < 0:
        raise InvalidRequest("the idle limit is seconds, 0 or more", field="seconds")
    with db.session() as session:
        _user_row(session, username).idle_stop_after = seconds


def disable_user(db: Database, username: str) -> list[str]:
    """Disable ``username`` and revoke its open sessions; returns the revoked session ids."""
    with db.session() as session:
        user = _user_row(session, username)
        user.disabled = True
        announce(session, REVOCATIONS)  # its API tokens stop working too
        return _revoke_sessions(session, user.id)


def authenticate(db: Database, username: str, password: str) -> User | None:
    """The enabled user whose password this is, else None (same work either way)."""
    with db.session() as session:
        user = session.scalar(select(User).where(User.username == username))
    try:
        _hasher.verify(user.password_hash if user else _dummy_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or user.disabled:
        return None
    return user
