"""Tables: users, sessions, API tokens, containers, audit, and a small key-value table for
backend state.

Times are stored as naive UTC and handed back timezone-aware (SQLite keeps no zone).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import Field
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    func,
    select,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.orm import Session as OrmSession

from zlh.schemas import AddonName, AgentStatus, Artifact
from zlh.schemas._base import WireModel
from zlh.schemas.artifact import Version

__all__ = [
    "POOL_USER",
    "AddonPin",
    "ApiToken",
    "AuditEntry",
    "Base",
    "Container",
    "ContainerState",
    "Job",
    "KeyValue",
    "LoginFailures",
    "Pins",
    "PublicPreview",
    "Replica",
    "Session",
    "Share",
    "ShareRole",
    "User",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def db_now(session: OrmSession) -> datetime:
    """The database's clock (UTC), one clock for every replica (SQLite is one node: its
    process's clock is the only one)."""
    if session.get_bind().dialect.name == "postgresql":
        now = session.scalar(select(func.timezone("UTC", func.statement_timestamp())))
        assert isinstance(now, datetime)
        return now.replace(tzinfo=UTC)
    return utcnow()


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


ModelT = TypeVar("ModelT", bound=WireModel)


class ModelJSON(TypeDecorator[ModelT], Generic[ModelT]):
    """A JSON column that holds one pydantic model: dumped on write, parsed once on load.

    The column stays plain JSON (the same document the wire carries); the rest of the API
    only ever sees the model.
    """

    impl = JSON
    cache_ok = True

    def __init__(self, model: type[ModelT]) -> None:
        super().__init__()
        self.model = model

    def process_bind_param(self, value: ModelT | None, dialect: Dialect) -> Any:
        return None if value is None else value.model_dump(mode="json")

    def process_result_value(self, value: Any, dialect: Dialect) -> ModelT | None:
        return None if value is None else self.model.model_validate(value)


class AddonPin(WireModel):
    version: Version
    artifact: Artifact


class Pins(WireModel):
    """The catalog artifacts a dev request resolved to: what gets installed even if the catalog
    changes before the payload is (re)sent."""

    runtime: Artifact
    addons: dict[AddonName, AddonPin] = Field(default_factory=dict)


class ContainerState(StrEnum):
    """A container's life as the API sees it.

    requested → creating → provisioning → ready; any of them → failed; provisioning/ready ⇄
    unreachable (the poller missed the agent N times); ready/unreachable/failed → stopping →
    stopped → starting → ready (its agent restores what it had); ready/unreachable/failed/stopped
    → rebuilding → creating → provisioning → ready (a fresh system, the home kept); any →
    deleting → (row removed).
    """

    REQUESTED = "requested"
    CREATING = "creating"
    PROVISIONING = "provisioning"
    READY = "ready"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    STOPPING = "stopping"
    STOPPED = "stopped"
    STARTING = "starting"
    REBUILDING = "rebuilding"
    DELETING = "deleting"

    @property
    def is_terminal(self) -> bool:
        """No more progress comes without a new request: the SSE stream ends here."""
        return self in {ContainerState.READY, ContainerState.FAILED}

    @property
    def is_starting(self) -> bool:
        """The provisioner still owns it (resumed after a restart)."""
        return self in {ContainerState.REQUESTED, ContainerState.CREATING}

    @property
    def is_provisioning(self) -> bool:
        """A provisioning job carries it (``zlh.api.jobs``) until it is ready or failed."""
        return self.is_starting or self is ContainerState.PROVISIONING

    @property
    def is_polled(self) -> bool:
        return self in {
            ContainerState.PROVISIONING,
            ContainerState.READY,
            ContainerState.UNREACHABLE,
            ContainerState.STARTING,
        }

    @property
    def is_running(self) -> bool:
        """Holds the host's memory (what ``max_running_per_user`` counts)."""
        return self not in {
            ContainerState.STOPPING,
            ContainerState.STOPPED,
            ContainerState.DELETING,
        }


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[str]: JSON}


# The platform's own user row that owns the warm pool's containers: a name no account can
# have (zlh.api.accounts refuses it), disabled, and a password hash nothing verifies against.
POOL_USER = "(pool)"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(default=False)
    disabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # An admin's choice for this user's containers, in seconds (0: never); None: the setting.
    idle_stop_after: Mapped[int | None] = mapped_column(default=None)


class Session(Base):
    """One login. Its id is the token's ``sid`` claim; revoking it kills the token at once."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class ApiToken(Base):
    """A user's API token: only the sha256 of its secret is kept (``zlh.api.apitokens``).

    Revoked rows stay, so a revoked token is told apart from an unknown one; a live (unrevoked)
    token's name is unique per user, a revoked one's name may be used again.
    """

    __tablename__ = "api_tokens"
    __table_args__ = (
        Index(
            "uq_api_tokens_live_name",
            "user_id",
            "name",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]]
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    user: Mapped[User] = relationship(lazy="joined")


class Container(Base):
    __tablename__ = "containers"
    # Names are the owner's own: two users may both have an "api"; NULLs never clash.
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_containers_owner_name"),)

    vmid: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(40), default=None)
    runtime: Mapped[str] = mapped_column(String(32))
    version: Mapped[str] = mapped_column(String(64))
    addons: Mapped[list[str]]
    pins: Mapped[Pins] = mapped_column(ModelJSON(Pins))
    state: Mapped[str] = mapped_column(String(16), index=True)
    # The agent secret is HMAC(agent key, vmid:nonce); only the nonce is stored.
    agent_nonce: Mapped[str] = mapped_column(String(64))
    # The nonce a warm-pool hand-out rotates the agent to; agent_nonce until the agent took it.
    next_nonce: Mapped[str | None] = mapped_column(String(64), default=None)
    # Provisioned ahead of demand, owned by the platform's POOL_USER until a request takes it
    # (then never again: a handed-out container does not go back to the pool).
    pool: Mapped[bool] = mapped_column(default=False, server_default=false(), index=True)
    address: Mapped[str | None] = mapped_column(String(255), default=None)
    agent_port: Mapped[int | None] = mapped_column(default=None)
    code_server_port: Mapped[int | None] = mapped_column(default=None)
    # The agent's last /status, parsed when it arrived (or when the row is loaded).
    status: Mapped[AgentStatus | None] = mapped_column(ModelJSON(AgentStatus), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the payload was last accepted by the agent (provision timeout counts from here).
    provision_started_at: Mapped[datetime | None] = mapped_column(default=None)
    # Why the state last changed ("stopped by alice", "idle for 60 min", "host restarted")
    # and when; kept while the poller moves it on (starting → ready).
    state_reason: Mapped[str | None] = mapped_column(Text, default=None)
    state_changed_at: Mapped[datetime | None] = mapped_column(default=None)
    # The last thing a person did in it (IDE input, console input, a file written) and when.
    last_activity_at: Mapped[datetime | None] = mapped_column(default=None)
    last_activity_kind: Mapped[str | None] = mapped_column(String(32), default=None)
    # The template its system was made from, as the backend reports it (lxc: a version).
    template: Mapped[str | None] = mapped_column(String(64), default=None)
    owner: Mapped[User] = relationship(lazy="joined")
    # Who else may see or use it (loaded with it: the route feed and every check need them).
    shares: Mapped[list[Share]] = relationship(
        lazy="selectin", order_by="Share.created_at", passive_deletes=True
    )

    # The ports whose preview its owner made public (none by default), loaded with it: the
    # route feed carries them to the front.
    public_previews: Mapped[list[PublicPreview]] = relationship(
        lazy="selectin", order_by="PublicPreview.port", passive_deletes=True
    )

    def role_of(self, user_id: int) -> str | None:
        """``user_id``'s share of this container (``use``, ``view``), None if not shared."""
        return next((s.role for s in self.shares if s.user_id == user_id), None)

    @property
    def public_ports(self) -> frozenset[int]:
        return frozenset(p.port for p in self.public_previews)

    @property
    def agent_url(self) -> str | None:
        if self.address is None or self.agent_port is None:
            return None
        return f"http://{self.address}:{self.agent_port}"


class ShareRole(StrEnum):
    """What a user a container is shared with may do: ``use`` opens the IDE, the console and
    the files (and starts it when stopped); ``view`` sees its status only."""

    USE = "use"
    VIEW = "view"


class Share(Base):
    """Container ``vmid`` shared by its owner with ``user``; gone with either."""

    __tablename__ = "shares"

    vmid: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("containers.vmid", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    user: Mapped[User] = relationship(lazy="joined")


class PublicPreview(Base):
    """A port of a container whose preview anyone may open, signed in or not."""

    __tablename__ = "public_previews"

    vmid: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("containers.vmid", ondelete="CASCADE"), primary_key=True
    )
    port: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    made_public_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    vmid: Mapped[int | None] = mapped_column(BigInteger, default=None, index=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    # The client's address (zlh.api.clientaddr); None for what no request caused.
    address: Mapped[str | None] = mapped_column(String(64), default=None)
    # The credential when it was not a session: "token <name>" (zlh.api.apitokens).
    via: Mapped[str | None] = mapped_column(String(80), default=None)


class KeyValue(Base):
    """Small JSON documents the control plane keeps, e.g. ``backend:<name>`` state."""

    __tablename__ = "kv"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[dict[str, Any]]


class Job(Base):
    """Background work on one container, driven by the replica that holds its lease
    (``zlh.api.jobs``). Gone with its container (a delete cancels the work)."""

    __tablename__ = "jobs"

    vmid: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("containers.vmid", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    # Changed by every claim: a renewal or a finish counts only with the token it was given,
    # so a holder that lost the job (taken over, handed out again) cannot touch the new one.
    token: Mapped[str] = mapped_column(String(32))
    lease_holder: Mapped[str] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime] = mapped_column(index=True)
    # How many times a replica began driving it (the first drive counts).
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LoginFailures(Base):
    """Failed logins of one key (``zlh.api.ratelimit``), shared by replicas on PostgreSQL.

    ``key`` is the sha256 of what is counted (a user name and address, or an address), so
    its length is fixed whatever a client sends. Times are the replicas' wall clock in epoch
    seconds; a row is stale from ``forget_at`` and swept away.
    """

    __tablename__ = "login_failures"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    last_s: Mapped[float] = mapped_column(Float)
    wait_s: Mapped[float] = mapped_column(Float)
    forget_at: Mapped[float] = mapped_column(Float, index=True)


class UsedTicket(Base):
    """An IDE ticket already taken (``zlh.proxy.ticket_db.DbLedger``): the sha256 of its ``jti``
    and its expiry in epoch seconds, after which the row is swept away. Shared by the front
    processes of every replica, so a ticket is taken once whichever host it is shown to."""

    __tablename__ = "used_tickets"

    jti_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)


class Replica(Base):
    """An API process among those sharing this database (zlh.api.replicas): alive while its
    heartbeat is younger than the lease. ``holder`` tells two processes under one name apart."""

    __tablename__ = "replicas"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime]
    started_at: Mapped[datetime]
