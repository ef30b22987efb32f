"""The audit log: who created, opened, deleted what, when, and from which address.

The address is the client's as ``zlh.api.guard`` resolved it for the request being served
(``request_address``); entries no request caused (the provisioner's own failures after a
restart) have none. ``via`` names the credential when it was an API token (``token <name>``),
noted on the request's :class:`Credential` once the token is verified.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select

from zlh.api.clientaddr import request_address
from zlh.api.db import AuditEntry, Database

__all__ = ["Action", "AuditLog", "Credential", "audit_entry", "request_credential"]


@dataclass
class Credential:
    """What the request being served authenticated with, beyond the user: set per request by
    ``zlh.api.guard`` and filled in by the dependency that verifies an API token. Mutable on
    purpose: sync dependencies run in a copied context, so only a shared object carries the
    note back to the route and the threads it starts."""

    via: str | None = None


request_credential: ContextVar[Credential | None] = ContextVar("request_credential", default=None)


class Action(StrEnum):
    LOGIN = "login"
    LOGIN_FAILED = "login-failed"  # detail: the user name tried
    PASSWORD = "password"  # a user changed its own password (detail: sessions ended)
    LOGOUT = "logout"
    CREATE = "create"
    OPEN = "open"  # recorded by whatever opens the IDE or console (the front, relays)
    DELETE = "delete"
    STOP = "stop"  # detail: the reason (by whom, or idle for how long)
    START = "start"
    RESTART = "restart"
    REBUILD = "rebuild"
    FAILED = "failed"
    TAILNET_VIEW = "tailnet-view"  # GET /api/dev/{vmid}/tailnet (detail: key shown or not)
    TAILNET_REGENERATE = "tailnet-regenerate"
    FILE_UPLOAD = "file-upload"  # the files relay (detail: path and size)
    FILE_DELETE = "file-delete"  # the files relay (detail: path, recursive or not)
    FILE_MKDIR = "file-mkdir"  # the files relay (detail: path)
    FILE_MOVE = "file-move"  # the files relay (detail: from -> to)
    ADMIN_IDE_OPEN = "admin-ide-open"  # an admin got a ticket for another user's IDE
    RUNTIME_CHANGE = "runtime-change"  # asked (detail: runtime old -> new), or failed (system)
    RUNTIME_REMOVE = "runtime-remove"  # an inactive runtime version removed (detail: which)
    SHARE = "share"  # shared with a user, or the role changed (detail: user and role)
    UNSHARE = "unshare"  # a share taken back, or dropped by its user (detail: the user)
    TOKEN_CREATE = "token-create"  # an API token made (detail: name, scopes, expiry)
    TOKEN_REVOKE = "token-revoke"  # an API token revoked (detail: name, whose)
    TOKEN_USE = "token-use"  # a request made with an API token (detail: method and path)
    PREVIEW_PUBLIC = "preview-public"  # a port's preview served to anyone (detail: the port)
    PREVIEW_PRIVATE = "preview-private"  # ... its owner's only again (detail: the port)


def audit_entry(
    actor: str, action: Action, vmid: int | None = None, detail: str = "", *, via: str | None = None
) -> AuditEntry:
    """An entry of the request being served (its address and credential), not yet stored."""
    credential = request_credential.get()
    return AuditEntry(
        actor=actor,
        action=action.value,
        vmid=vmid,
        detail=detail,
        address=request_address.get(),
        via=via or (credential.via if credential is not None else None),
    )


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, actor: str, action: Action, vmid: int | None = None, detail: str = "") -> None:
        with self.db.session() as session:
            session.add(audit_entry(actor, action, vmid, detail))

    def entries(
        self,
        *,
        vmid: int | None = None,
        actor: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[AuditEntry]:
        """Newest first; ``before_id`` pages backwards."""
        query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
        if vmid is not None:
            query = query.where(AuditEntry.vmid == vmid)
        if actor is not None:
            query = query.where(AuditEntry.actor == actor)
        if before_id is not None:
            query = query.where(AuditEntry.id < before_id)
        with self.db.session() as session:
            return list(session.scalars(query))
