"""The bodies of the API's HTTP requests and responses. Shared agent/API types live in
``zlh.schemas``; these are only spoken between the API and its clients (portal, CLI)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, field_validator

from zlh.api.accounts import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from zlh.api.apitokens import MAX_NAME_CHARS, NAME_PATTERN, Scope
from zlh.api.db import ShareRole
from zlh.schemas import AgentStatus, Progress, registered_addon
from zlh.schemas._base import WireModel
from zlh.schemas.artifact import VERSION_PATTERN, Version

__all__ = [
    "AuditOut",
    "ContainerEvent",
    "ContainerOut",
    "DevRequest",
    "IdeUrl",
    "LoginRequest",
    "LoginResponse",
    "PasswordChange",
    "PoolOut",
    "RuntimeChangeRequest",
    "TokenCreate",
    "TokenCreated",
    "TokenOut",
    "UserOut",
]


class LoginRequest(WireModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class PasswordChange(WireModel):
    """``POST /api/auth/password``: the caller's current password and the new one."""

    current: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)
    new: str = Field(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)


class LoginResponse(WireModel):
    token: str
    expires_at: datetime


class UserOut(WireModel):
    id: int
    username: str
    is_admin: bool
    disabled: bool


class MeOut(UserOut):
    """``GET /api/auth/me``: the signed-in user and how much of their quota is used."""

    containers_held: int = Field(description="containers this user holds now")
    container_limit: int = Field(description="max_containers_per_user: how many they may hold")
    containers_running: int = Field(description="of those, the ones not stopped")
    running_limit: int = Field(description="max_running_per_user: how many they may run")


CONTAINER_NAME = r"^[A-Za-z0-9](?:[A-Za-z0-9 ._-]*[A-Za-z0-9])?$"


class DevRequest(WireModel):
    """``POST /api/dev``: what to put into a new container; checked against the catalog."""

    runtime: str = Field(min_length=1, max_length=32, examples=["node"])
    version: str | None = Field(default=None, min_length=1, max_length=64, examples=["22"])
    addons: list[str] = Field(default_factory=list, max_length=8, examples=[["code-server"]])
    name: str | None = Field(
        default=None,
        max_length=40,
        pattern=CONTAINER_NAME,
        description="optional; unique among the caller's containers (409 otherwise): letters, "
        "digits, '.', '_', '-' and inner spaces",
        examples=["shop api"],
    )

    @field_validator("addons")
    @classmethod
    def _addons_are_registered(cls, names: list[str]) -> list[str]:
        """An addon the platform does not know is refused by name before the catalog is read."""
        return [registered_addon(name) for name in names]


class Activity(WireModel):
    """The last thing a person did in a container (what idle auto-stop counts from)."""

    at: datetime
    kind: str = Field(description="ide, terminal, console, files or preview", examples=["ide"])


class RuntimeChangeRequest(WireModel):
    """``PATCH /api/dev/{vmid}``: the catalog version of the container's runtime to switch to."""

    runtime: str = Field(min_length=1, max_length=32, examples=["node"])
    version: Version = Field(pattern=VERSION_PATTERN, examples=["24"])


class ShareRequest(WireModel):
    """``POST /api/dev/{vmid}/shares``: share the container with ``user``."""

    user: str = Field(min_length=1, max_length=64, examples=["bob"])
    role: ShareRole = Field(
        description="use: opens the IDE, the console and the files; view: sees the status only",
        examples=["use"],
    )


class ShareOut(WireModel):
    user: str
    role: ShareRole
    created_at: datetime


class ContainerOut(WireModel):
    vmid: int
    name: str | None = Field(default=None, description="the owner's name for it, if any")
    owner: str
    runtime: str
    version: str
    addons: list[str]
    state: str
    state_reason: str | None = Field(
        default=None,
        description="why it is in this state",
        examples=["stopped by alice", "stopped after 60 min idle", "host restarted"],
    )
    state_changed_at: datetime | None = None
    last_activity: Activity | None = None
    template: str | None = Field(
        default=None, description="the template its system was made from (lxc: its version)"
    )
    idle_stop_at: datetime | None = Field(
        default=None,
        description="when it stops for being idle unless someone uses it (ready ones only; "
        "none when idle_stop_after is 0)",
    )
    error: str | None = None
    role: ShareRole | None = Field(
        default=None,
        description="the caller's share of it when its owner shared it with the caller (use, "
        "view); none for its owner and admins",
    )
    shares: list[ShareOut] = Field(
        default_factory=list,
        description="who else may use or view it (shown to its owner and admins)",
    )
    # The portal's page that opens the IDE: it fetches a ticket (GET /api/dev/{vmid}/ide-url)
    # and sends the browser to the IDE origin with it.
    ide_path: str
    # Admins may open this container's IDE (the setting admin_ide_access): each opening is
    # audited, and the portal says so on the container's page.
    admin_ide_access: bool = False
    pool: bool = Field(
        default=False,
        description="a warm-pool container, provisioned ahead of demand (admins' listing only)",
    )
    # The agent's last /status document, the contract's fields verbatim; ``runtimes`` lists
    # the installed versions (``active`` marks the one in use), ``runtimeChange`` the last
    # version change and, if it failed, why.
    status: AgentStatus | None = None
    created_at: datetime
    updated_at: datetime


class IdeUrl(WireModel):
    """``GET /api/dev/{vmid}/ide-url``: where the browser goes to open the IDE."""

    url: str = Field(
        description="the IDE origin's /_zlh/auth with a one-time ticket (60 s, single use)",
        examples=["https://ide.example.com/_zlh/auth?ticket=eyJ..."],
    )


class Preview(WireModel):
    """A port of the container and its preview on the IDE origin (zlh.proxy.previews)."""

    port: int
    listening: bool = Field(description="a server listens on it now (false: public, not up)")
    address: str | None = Field(
        default=None,
        description="where it listens; a loopback address is out of the front's reach (start "
        "the dev server with --host 0.0.0.0)",
        examples=["0.0.0.0", "127.0.0.1"],
    )
    reachable: bool = Field(description="listening on an address the front reaches")
    public: bool = Field(description="anyone may open it, signed in or not")
    url: str = Field(
        description="the preview, prefix stripped: the app sees /",
        examples=["https://ide.example.com/dev/5001/port/5173/?zlh-prefix=strip"],
    )
    url_keep_prefix: str = Field(
        description="the preview, prefix kept: the app sees /dev/{vmid}/port/{port}/",
        examples=["https://ide.example.com/dev/5001/port/5173/?zlh-prefix=keep"],
    )


class Previews(WireModel):
    """``GET /api/dev/{vmid}/ports``: the ports listening in the container, and the public ones."""

    running: bool = Field(description="false: the container is not ready, only public ports")
    previews: list[Preview]


class ContainerEvent(WireModel):
    """One SSE ``status`` event: the container's state and the agent's provisioning progress."""

    vmid: int
    state: str
    state_reason: str | None = None
    progress: Progress | None = None
    error: str | None = None
    runtime_installed: bool = False
    code_server_running: bool = False


class PoolOut(WireModel):
    """The warm pool: containers provisioned ahead of demand (``warm_pool``)."""

    wanted: int = Field(description="ready containers the platform keeps, over all runtimes")
    ready: int = Field(description="ready to be handed out now")
    building: int = Field(description="being built or replaced")
    memory_mb: int = Field(description="the memory they may use: their limits, added up")


class AuditOut(WireModel):
    id: int
    at: datetime
    actor: str
    action: str
    vmid: int | None
    detail: str
    address: str | None = Field(
        default=None, description="the client's address, if a request caused it"
    )
    via: str | None = Field(
        default=None, description="the credential when it was an API token: token <name>"
    )


class TokenCreate(WireModel):
    """``POST /api/tokens``."""

    name: str = Field(
        min_length=1,
        max_length=MAX_NAME_CHARS,
        pattern=NAME_PATTERN,
        description="unique among your unrevoked tokens",
    )
    scopes: list[Scope] = Field(min_length=1, description="admin and metrics: admins only")
    expires_in_days: int | None = Field(
        default=None,
        ge=1,
        le=3650,
        description="at most api_token_max_days (default: that maximum)",
    )


class TokenOut(WireModel):
    """An API token as listed: never its secret."""

    id: int
    name: str
    owner: str
    scopes: list[Scope]
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    expired: bool


class TokenCreated(TokenOut):
    """The answer to ``POST /api/tokens``: the only one that carries the secret."""

    token: str = Field(description="send as Authorization: Bearer; not shown again")
