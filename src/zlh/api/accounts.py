"""User accounts: argon2 password hashes, an admin flag, disabling (which revokes sessions)."""

from __future__ import annotations

import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from zlh.api.db import Database, Session, User
from zlh.api.db.models import utcnow
from zlh.api.errors import Conflict, InvalidRequest, NotFound

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "authenticate",
    "configure_hashing",
    "create_user",
    "disable_user",
    "get_user",
    "list_users",
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


def _check_password(password: str) -> str:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidRequest(
            f"password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters",
            field="password",
        )
    return password


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
        user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no user {username!r}")
    return user


def list_users(db: Database) -> list[User]:
    with db.session() as session:
        return list(session.scalars(select(User).order_by(User.username)))


def set_password(db: Database, username: str, password: str) -> None:
    digest = _hasher.hash(_check_password(password))
    with db.session() as session:
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            raise NotFound(f"no user {username!r}")
        user.password_hash = digest


def disable_user(db: Database, username: str) -> list[str]:
    """Disable ``username`` and revoke its open sessions; returns the revoked session ids."""
    now = utcnow()
    with db.session() as session:
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            raise NotFound(f"no user {username!r}")
        user.disabled = True
        sids = list(
            session.scalars(
                select(Session.id).where(Session.user_id == user.id, Session.revoked_at.is_(None))
            )
        )
        session.execute(update(Session).where(Session.id.in_(sids)).values(revoked_at=now))
    return sids


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
