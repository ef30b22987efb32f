"""The demo's admin account: created once, its password kept in the data dir.

The password comes from ``$ZLH_ADMIN_PASSWORD`` when set (and is then made the account's
password), else from ``<data dir>/admin-password``, else it is generated. It is written to that
file (0600, like ``jwt.key`` next to it) so every run can print it again; an operator who does
not want it on disk sets the variable and removes the file after the first run.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from zlh.api import accounts
from zlh.api.commands import open_database
from zlh.api.settings import ApiSettings
from zlh.atomic import write_atomically
from zlh.errors import ZlhError

__all__ = ["ADMIN_USER", "PASSWORD_ENV", "PASSWORD_FILE", "Credentials", "ensure_admin"]

ADMIN_USER = "admin"
PASSWORD_ENV = "ZLH_ADMIN_PASSWORD"
PASSWORD_FILE = "admin-password"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    password_file: Path
    created: bool


def ensure_admin(settings: ApiSettings) -> Credentials:
    """The admin account exists and signs in with the password this returns."""
    path = settings.data_dir / PASSWORD_FILE
    given = os.environ.get(PASSWORD_ENV) or None
    kept = path.read_text().strip() if path.is_file() else None
    password = given or kept or secrets.token_urlsafe(16)
    db = open_database(settings)
    try:
        exists = any(u.username == ADMIN_USER for u in accounts.list_users(db))
        if not exists:
            accounts.create_user(db, ADMIN_USER, password, admin=True)
        elif given is not None:
            accounts.set_password(db, ADMIN_USER, password)
        elif accounts.authenticate(db, ADMIN_USER, password) is None:
            where = f"the one in {path}" if kept else f"known: {path} is missing"
            raise ZlhError(
                f"the {ADMIN_USER!r} account exists but its password is not {where}; run again "
                f"with {PASSWORD_ENV}=<a new password> to set it"
            )
    finally:
        db.dispose()
    if password != kept:
        write_atomically(path, password + "\n", mode=0o600)
    return Credentials(ADMIN_USER, password, path, created=not exists)
