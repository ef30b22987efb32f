"""The front's settings: timeouts, limits, the portal's and the IDEs' origins, cookie names.

Plain pydantic (frozen, validated) so the API's pydantic-settings config can embed it as one
field and an operator sets it from the same file/environment as everything else.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from zlh.proxy.ideorigin import IdeOrigin
from zlh.proxy.tickets import IDE_COOKIE
from zlh.retired_settings import drop_retired

__all__ = ["ProxySettings"]

_COOKIE_PREFIXES = ("__Host-", "__Secure-")


class ProxySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    public_origin: str | None = Field(
        default=None,
        description="The portal's origin as browsers see it (`https://zlh.example.com`). "
        "WebSocket upgrades whose Origin is neither this nor the request's own Host are refused "
        "(403); it also sets X-Forwarded-Proto. Unset: same-host check only, proto `http`.",
    )
    session_cookie: str = Field(
        default="zlh_session",
        description="Name of the portal's session cookie. The IDE origin takes it for nothing: "
        "it, its `__Host-`/`__Secure-` forms and the IDE cookie are removed before a request "
        "reaches a container, and a container's Set-Cookie of any of them is dropped.",
    )
    ide_origin: str | None = Field(
        default=None,
        description="The origin IDEs are served on (zlh.proxy.ideorigin): "
        "`https://ide.example.com` or `https://*.ide.example.com`, recognised by `Host`. "
        "Unset: only a listener opened with `Front.start_ide` serves IDEs (the second-port "
        "form). The portal's origin never serves them.",
    )
    admin_ide_access: bool = Field(
        default=False,
        description="Whether an admin's IDE cookie opens other users' IDEs. Off: admins get "
        "the 404 of any non-owner (they still see the containers in the portal).",
    )
    connect_timeout_s: float = Field(
        default=5.0, gt=0, description="Opening a TCP/unix connection to an upstream."
    )
    read_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="From a request fully sent upstream to the response head (504 after). "
        "Does not cover streamed response bodies (SSE, downloads) nor WebSockets.",
    )
    header_timeout_s: float = Field(
        default=30.0, gt=0, description="A client must send a complete request head within it."
    )
    keepalive_timeout_s: float = Field(
        default=75.0,
        gt=0,
        description="An idle HTTP keep-alive client connection is closed after it. Never "
        "applies to an upgraded WebSocket connection.",
    )
    upstream_idle_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A pooled, idle upstream connection is closed after it. Never applies to "
        "a WebSocket tunnel.",
    )
    max_idle_per_upstream: int = Field(
        default=64, ge=0, description="Idle keep-alive connections kept per upstream."
    )
    max_header_bytes: int = Field(
        default=32 * 1024,
        ge=1024,
        description="Request line plus headers; more gets 431.",
    )
    close_tunnels_at_session_expiry: bool = Field(
        default=True,
        description="Close a WebSocket tunnel (close code 4401) when the session that opened "
        "it expires. This is the only time limit on a tunnel; there is no idle timeout.",
    )
    close_grace_s: float = Field(
        default=2.0,
        gt=0,
        description="When the front closes a tunnel (revocation), how long it waits for a "
        "frame boundary and for the client's close reply before dropping the connection.",
    )

    @model_validator(mode="before")
    @classmethod
    def _retired(cls, values: Any) -> Any:
        return drop_retired(
            values,
            {"login_path": "a signed-out browser opening an IDE goes to the portal's sign-in"},
            table="front",
        )

    @field_validator("public_origin")
    @classmethod
    def _origin_shape(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError(f"public_origin must look like https://host[:port], got {value!r}")
        return f"{parts.scheme}://{parts.netloc}".lower()

    @field_validator("ide_origin")
    @classmethod
    def _ide_origin_shape(cls, value: str | None) -> str | None:
        return None if value is None else IdeOrigin.parse(value).origin

    @field_validator("session_cookie")
    @classmethod
    def _cookie_name(cls, value: str) -> str:
        if not value or any(c in value for c in "=; \t,"):
            raise ValueError(f"session_cookie must be a plain cookie name, got {value!r}")
        return value

    @property
    def platform_cookies(self) -> tuple[bytes, ...]:
        """Cookie names only the platform sets: the session cookie with and without the
        ``__Host-``/``__Secure-`` prefixes, and the IDE cookie."""
        base = self.session_cookie
        for prefix in _COOKIE_PREFIXES:
            base = base.removeprefix(prefix)
        names = (base, *(prefix + base for prefix in _COOKIE_PREFIXES), IDE_COOKIE)
        return tuple(name.encode() for name in names)

    @property
    def forwarded_proto(self) -> bytes:
        if self.public_origin is None:
            return b"http"
        return self.public_origin.split(":", 1)[0].encode()
