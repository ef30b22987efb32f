"""Tailnet access for a container: its Headscale keys, sealed at rest, shown to its owner once.

When a dev request asks for the ``tailscale`` addon, :meth:`Tailnet.create_access` makes two
single-use pre-auth keys in the owner's Headscale user:

- the **container key**, tagged ``tag:zlh-vm-<vmid>``: it goes into the provisioning payload
  (``TailscaleOptions.authKey``) and nowhere else: never logged, never in ``GET /api/dev/{vmid}``;
- the **customer key**, untagged: the owner joins their own machine with it. It is shown once by
  ``GET /api/dev/{vmid}/tailnet``; later reads show a masked hint, the login server and the
  expiry, and ``POST …/tailnet/regenerate`` expires it and shows a fresh one (once again).

Both keys are kept AES-256-GCM sealed in the database (table ``kv``, key ``tailnet:<vmid>``)
with a key from ``<data dir>/tailnet.key``; each sealed blob is bound to its container and
purpose, so a blob copied into another record does not open. The container key is kept so a
payload can be sent again after an API restart.

Headscale users are named ``zlh-<platform user id>-<username>``: the id makes the name unique
(two platform users never share a Headscale identity), the name is only for people reading
Headscale's lists.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, SecretStr

from zlh.api.db import Database, KeyValue
from zlh.api.keys import load_or_create_key
from zlh.api.tailnet.headscale import (
    HeadscaleClient,
    HeadscaleError,
    HeadscaleNotFound,
    HeadscaleSettings,
)
from zlh.errors import ZlhError
from zlh.schemas import TailscaleOptions
from zlh.schemas._base import WireModel

__all__ = [
    "KeySealer",
    "Tailnet",
    "TailnetAccess",
    "TailnetError",
    "TailnetInfo",
    "TailnetStore",
    "container_hostname",
    "container_tag",
    "headscale_user_name",
    "mask_key",
]

logger = logging.getLogger(__name__)

_SEALED_PREFIX = "v1."
_NONCE_BYTES = 12


class TailnetError(ZlhError):
    status_code = 502


def container_tag(vmid: int) -> str:
    return f"tag:zlh-vm-{vmid}"


def container_hostname(vmid: int) -> str:
    return f"zlh-{vmid}"


def headscale_user_name(user_id: int, username: str) -> str:
    """``zlh-<id>-<name>``: unique by the id; ``_`` (which Headscale refuses) becomes ``.``."""
    readable = re.sub(r"[^a-z0-9.-]", ".", username.lower())[:40].strip(".-") or "user"
    return f"zlh-{user_id}-{readable}"


def mask_key(key: str) -> str:
    """What may be shown of a key: Headscale's public prefix part, never the secret part."""
    match = re.match(r"^(hskey-auth-[A-Za-z0-9_-]{12})-", key)
    if match:
        return match.group(1) + "-…"
    return key[:6] + "…"


class KeySealer:
    """AES-256-GCM with a random nonce; the context (vmid, purpose) is authenticated data."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the tailnet sealing key must have at least 32 bytes")
        self._aead = AESGCM(key[:32])

    @classmethod
    def from_file(cls, path: Path) -> KeySealer:
        return cls(load_or_create_key(path))

    def seal(self, secret: SecretStr, *, context: str) -> str:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.get_secret_value().encode(), context.encode())
        return _SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, sealed: str, *, context: str) -> SecretStr:
        if not sealed.startswith(_SEALED_PREFIX):
            raise TailnetError(f"sealed tailnet key in an unknown format ({context})")
        try:
            raw = base64.urlsafe_b64decode(sealed.removeprefix(_SEALED_PREFIX))
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode())
        except (InvalidTag, ValueError):
            raise TailnetError(
                f"a sealed tailnet key does not open ({context}): tailnet.key changed, or the "
                "record was copied from another container"
            ) from None
        return SecretStr(plain.decode())


class TailnetAccess(BaseModel):
    """What the API keeps per container (sealed keys included). Never sent to a client."""

    model_config = ConfigDict(extra="forbid")

    vmid: int
    headscale_user_id: int
    headscale_user: str
    login_server: str
    container_key_id: int
    container_key_sealed: str
    container_key_expires_at: datetime
    customer_key_id: int
    customer_key_sealed: str
    customer_key_hint: str
    customer_key_expires_at: datetime
    customer_key_shown_at: datetime | None = None
    regenerations: int = 0


class TailnetInfo(WireModel):
    """``GET /api/dev/{vmid}/tailnet``. ``authKey`` is set in one answer only: the first read
    after the key was made (or regenerated). Later answers carry the hint and a ``note``."""

    vmid: int
    login_server: str
    hostname: str
    tag: str
    headscale_user: str
    auth_key: str | None = None
    auth_key_hint: str
    expires_at: datetime
    expired: bool
    shown_at: datetime | None
    join_command: str
    container_ip: str | None = None
    note: str


class TailnetStore:
    """Tailnet records in the ``kv`` table, one per container."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def _key(vmid: int) -> str:
        return f"tailnet:{vmid}"

    def get(self, vmid: int) -> TailnetAccess | None:
        with self.db.session() as session:
            row = session.get(KeyValue, self._key(vmid))
            return None if row is None else TailnetAccess.model_validate(row.value)

    def put(self, access: TailnetAccess) -> None:
        value = access.model_dump(mode="json")
        with self.db.session() as session:
            row = session.get(KeyValue, self._key(access.vmid))
            if row is None:
                session.add(KeyValue(key=self._key(access.vmid), value=value))
            else:
                row.value = value

    def delete(self, vmid: int) -> None:
        with self.db.session() as session:
            row = session.get(KeyValue, self._key(vmid))
            if row is not None:
                session.delete(row)


class Tailnet:
    """The tailnet side of a container's life. One instance per API process.

    Reads that reveal a key and regenerations of one container are serialised by a lock per
    vmid, so "shown once" holds, and no regenerated key is lost, for concurrent requests to
    one API process (the API runs as one process).
    """

    def __init__(
        self,
        settings: HeadscaleSettings,
        sealer: KeySealer,
        store: TailnetStore,
        *,
        client_factory: Callable[[], HeadscaleClient] | None = None,
    ) -> None:
        self.settings = settings
        self.sealer = sealer
        self.store = store
        self._client_factory = client_factory or (lambda: HeadscaleClient.from_settings(settings))
        self._locks: dict[int, asyncio.Lock] = {}

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def _lock(self, vmid: int) -> asyncio.Lock:
        return self._locks.setdefault(vmid, asyncio.Lock())

    # -- provisioning ------------------------------------------------------------------------

    async def ensure_access(self, vmid: int, *, user_id: int, username: str) -> TailnetAccess:
        """The container's record, creating the Headscale user and both keys the first time.

        Called before the payload is built; after a restart it finds the record it made. If the
        second key cannot be made the first is expired again: nothing is left half-done.
        """
        existing = await asyncio.to_thread(self.store.get, vmid)
        if existing is not None:
            return existing
        now = datetime.now(UTC)
        container_expiry = now + timedelta(seconds=self.settings.container_key_lifetime_s)
        customer_expiry = now + timedelta(seconds=self.settings.customer_key_lifetime_s)
        async with self._client_factory() as client:
            user = await client.ensure_user(headscale_user_name(user_id, username))
            container_key = await client.create_preauth_key(
                user.id, expiration=container_expiry, acl_tags=[container_tag(vmid)]
            )
            try:
                customer_key = await client.create_preauth_key(user.id, expiration=customer_expiry)
            except HeadscaleError:
                await self._expire_quietly(client, user.id, container_key.key, vmid)
                raise
        access = TailnetAccess(
            vmid=vmid,
            headscale_user_id=user.id,
            headscale_user=user.name,
            login_server=self.settings.login_server,
            container_key_id=container_key.id,
            container_key_sealed=self.sealer.seal(container_key.key, context=f"{vmid}:container"),
            container_key_expires_at=container_key.expiration or container_expiry,
            customer_key_id=customer_key.id,
            customer_key_sealed=self.sealer.seal(customer_key.key, context=f"{vmid}:customer"),
            customer_key_hint=mask_key(customer_key.key.get_secret_value()),
            customer_key_expires_at=customer_key.expiration or customer_expiry,
        )
        await asyncio.to_thread(self.store.put, access)
        logger.info(
            "tailnet keys made for container %s (headscale user %s, key ids %s and %s)",
            vmid,
            user.name,
            container_key.id,
            customer_key.id,
        )
        return access

    def container_options(self, access: TailnetAccess) -> TailscaleOptions:
        """The payload's tailscale options, with the container key opened."""
        return TailscaleOptions(
            login_server=access.login_server,
            auth_key=self.sealer.open(
                access.container_key_sealed, context=f"{access.vmid}:container"
            ),
            hostname=container_hostname(access.vmid),
        )

    async def release(self, vmid: int) -> None:
        """On delete: expire both keys (unknown keys count as done) and forget the record."""
        access = await asyncio.to_thread(self.store.get, vmid)
        if access is None:
            return
        async with self._client_factory() as client:
            for sealed, purpose in (
                (access.container_key_sealed, "container"),
                (access.customer_key_sealed, "customer"),
            ):
                key = self.sealer.open(sealed, context=f"{vmid}:{purpose}")
                await self._expire_quietly(client, access.headscale_user_id, key, vmid, strict=True)
        await asyncio.to_thread(self.store.delete, vmid)
        self._locks.pop(vmid, None)

    # -- the owner's view ----------------------------------------------------------------------

    async def reveal(self, vmid: int, *, container_ip: str | None = None) -> TailnetInfo | None:
        """The owner's view; carries the key if it was never shown, and marks it shown."""
        async with self._lock(vmid):
            access = await asyncio.to_thread(self.store.get, vmid)
            if access is None:
                return None
            key: SecretStr | None = None
            if access.customer_key_shown_at is None:
                key = self.sealer.open(access.customer_key_sealed, context=f"{vmid}:customer")
                access = access.model_copy(update={"customer_key_shown_at": datetime.now(UTC)})
                await asyncio.to_thread(self.store.put, access)
            return self._info(access, key, container_ip)

    async def regenerate(self, vmid: int, *, container_ip: str | None = None) -> TailnetInfo | None:
        """Expire the customer key, make a new one and show it (this answer counts as the one
        showing). The old key is expired first: if making the new one fails, the old one is
        dead anyway and the record says so."""
        async with self._lock(vmid):
            return await self._regenerate(vmid, container_ip)

    async def _regenerate(self, vmid: int, container_ip: str | None) -> TailnetInfo | None:
        access = await asyncio.to_thread(self.store.get, vmid)
        if access is None:
            return None
        old = self.sealer.open(access.customer_key_sealed, context=f"{vmid}:customer")
        expiry = datetime.now(UTC) + timedelta(seconds=self.settings.customer_key_lifetime_s)
        async with self._client_factory() as client:
            await self._expire_quietly(client, access.headscale_user_id, old, vmid, strict=True)
            try:
                new = await client.create_preauth_key(access.headscale_user_id, expiration=expiry)
            except HeadscaleError:
                dead = access.model_copy(update={"customer_key_expires_at": datetime.now(UTC)})
                await asyncio.to_thread(self.store.put, dead)
                raise
        access = access.model_copy(
            update={
                "customer_key_id": new.id,
                "customer_key_sealed": self.sealer.seal(new.key, context=f"{vmid}:customer"),
                "customer_key_hint": mask_key(new.key.get_secret_value()),
                "customer_key_expires_at": new.expiration or expiry,
                "customer_key_shown_at": datetime.now(UTC),
                "regenerations": access.regenerations + 1,
            }
        )
        await asyncio.to_thread(self.store.put, access)
        logger.info("tailnet customer key of container %s regenerated (key id %s)", vmid, new.id)
        return self._info(access, new.key, container_ip)

    def _info(
        self, access: TailnetAccess, key: SecretStr | None, container_ip: str | None
    ) -> TailnetInfo:
        now = datetime.now(UTC)
        expired = access.customer_key_expires_at <= now
        shown = key is None
        if expired:
            note = "The key has expired: regenerate it to join another machine."
        elif shown:
            note = (
                f"The key was shown once, at {access.customer_key_shown_at:%Y-%m-%d %H:%M} UTC. "
                f"Regenerate it (POST /api/dev/{access.vmid}/tailnet/regenerate) for a new one; "
                "the old one stops working. Machines that already joined stay joined."
            )
        else:
            note = (
                "This key is shown only in this answer: copy it now. It joins one machine, once, "
                "until it expires. DNS on your machine is left alone (--accept-dns=false)."
            )
        placeholder = "<shown once; regenerate for a new key>"
        auth = key.get_secret_value() if key is not None else placeholder
        return TailnetInfo(
            vmid=access.vmid,
            login_server=access.login_server,
            hostname=container_hostname(access.vmid),
            tag=container_tag(access.vmid),
            headscale_user=access.headscale_user,
            auth_key=key.get_secret_value() if key is not None else None,
            auth_key_hint=access.customer_key_hint,
            expires_at=access.customer_key_expires_at,
            expired=expired,
            shown_at=None if key is not None else access.customer_key_shown_at,
            join_command=(
                f"tailscale up --login-server={access.login_server} --auth-key={auth} "
                "--accept-dns=false --accept-routes=false"
            ),
            container_ip=container_ip,
            note=note,
        )

    @staticmethod
    async def _expire_quietly(
        client: HeadscaleClient, user_id: int, key: SecretStr, vmid: int, *, strict: bool = False
    ) -> None:
        """Expire ``key``; a key Headscale no longer knows is already harmless. With ``strict``
        other failures propagate (the caller must not pretend the key is dead)."""
        try:
            await client.expire_preauth_key(user_id, key)
        except HeadscaleNotFound:
            pass
        except HeadscaleError as exc:
            if strict:
                raise
            logger.warning("could not expire a tailnet key of container %s: %s", vmid, exc)
