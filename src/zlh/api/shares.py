"""Sharing a container with another user: ``use`` (IDE, console, files, and starting it when
it is stopped) or ``view`` (its status only).

Only the owner (or an admin) shares and takes a share back; a user it is shared with may drop
their own share. A share changes who the front lets in, so every change republishes the
container's route: a share taken back (or turned into ``view``) closes that user's IDE
WebSockets at once, and the console relay follows the same feed. Shares never count toward
anybody's quota; they go with the container and with the user.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import delete, select

from zlh.api import accounts
from zlh.api.audit import Action, AuditLog
from zlh.api.containers import ContainerRegistry
from zlh.api.db import Container, Database, Share, ShareRole, User
from zlh.api.errors import InvalidRequest, NotFound
from zlh.api.notify import CONTAINERS, announce

__all__ = ["Shares"]


class Shares:
    def __init__(self, db: Database, registry: ContainerRegistry, audit: AuditLog) -> None:
        self.db = db
        self.registry = registry
        self.audit = audit

    async def grant(
        self, container: Container, actor: User, username: str, role: ShareRole
    ) -> tuple[Container, bool]:
        """Share ``container`` with ``username`` as ``role`` (or change the role); returns the
        container and whether the share is new."""
        created = await asyncio.to_thread(self._grant, container, username, role)
        await asyncio.to_thread(
            self.audit.record, actor.username, Action.SHARE, container.vmid, f"{username} {role}"
        )
        return self.registry.republish(container.vmid) or container, created

    def _grant(self, container: Container, username: str, role: ShareRole) -> bool:
        try:
            guest = accounts.get_user(self.db, username)
        except NotFound:
            raise InvalidRequest(f"no user {username!r}", field="user") from None
        if guest.id == container.owner_id:
            raise InvalidRequest(
                f"{username} owns container {container.vmid}; share it with someone else",
                field="user",
            )
        if guest.disabled:
            raise InvalidRequest(f"user {username} is disabled", field="user")
        with self.db.session() as session:
            announce(session, CONTAINERS, str(container.vmid))
            share = session.get(Share, (container.vmid, guest.id))
            if share is not None:
                share.role = role.value
                return False
            session.add(Share(vmid=container.vmid, user_id=guest.id, role=role.value))
            return True

    async def revoke(self, container: Container, actor: User, username: str) -> Container:
        """Take ``username``'s share back (NotFound if there is none)."""
        await asyncio.to_thread(self._revoke, container, username)
        await asyncio.to_thread(
            self.audit.record, actor.username, Action.UNSHARE, container.vmid, username
        )
        return self.registry.republish(container.vmid) or container

    def _revoke(self, container: Container, username: str) -> None:
        with self.db.session() as session:
            user_id = session.scalar(select(User.id).where(User.username == username))
            removed = session.execute(
                delete(Share).where(Share.vmid == container.vmid, Share.user_id == user_id)
            )
            if user_id is None or not removed.rowcount:  # type: ignore[attr-defined]
                raise NotFound(f"container {container.vmid} is not shared with {username!r}")
            announce(session, CONTAINERS, str(container.vmid))
