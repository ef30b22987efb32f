"""The provisioning payload: what the API sends to an agent's ``POST /provision``."""

from __future__ import annotations

import posixpath
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr, SerializationInfo, field_serializer

from zlh.ports import CODE_SERVER_PORT
from zlh.schemas._base import WireModel
from zlh.schemas.catalog import Artifact, RuntimeName, Version

__all__ = [
    "CODE_SERVER_PORT",
    "MAX_VMID",
    "MIN_VMID",
    "AddonSpec",
    "CodeServerAddon",
    "CodeServerOptions",
    "DevUser",
    "ProvisionPayload",
    "RuntimeSpec",
    "TailscaleAddon",
    "TailscaleOptions",
    "ide_base_path",
]

# Proxmox VE's vmid range; the platform uses the same numbers on every backend.
MIN_VMID = 100
MAX_VMID = 999_999_999
# Serialization context key that makes SecretStr fields dump in clear (json_with_secrets).
_REVEAL = "reveal_secrets"


def ide_base_path(vmid: int) -> str:
    """The public path of a container's IDE: ``/dev/<vmid>/ide`` (docs/architecture.md)."""
    return f"/dev/{vmid}/ide"


def _check_absolute_path(value: str) -> str:
    if not value.startswith("/") or "\x00" in value or posixpath.normpath(value) != value:
        raise ValueError(f"{value!r} must be a normalised absolute path")
    return value


AbsolutePath = Annotated[str, AfterValidator(_check_absolute_path)]


class RuntimeSpec(WireModel):
    name: RuntimeName
    version: Version
    artifact: Artifact


class CodeServerOptions(WireModel):
    base_path: str = Field(pattern=r"^/dev/[0-9]+/ide$")
    port: int = Field(default=CODE_SERVER_PORT, ge=1, le=65535)


class TailscaleOptions(WireModel):
    login_server: str = Field(pattern=r"^https?://")
    # The container's pre-auth key: a secret, never logged, never shown by repr, masked in
    # every dump but ProvisionPayload.json_with_secrets.
    auth_key: SecretStr
    hostname: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")

    @field_serializer("auth_key")
    def _auth_key(self, value: SecretStr, info: SerializationInfo) -> str | SecretStr:
        return value.get_secret_value() if (info.context or {}).get(_REVEAL) else value


class CodeServerAddon(WireModel):
    name: Literal["code-server"]
    version: Version
    artifact: Artifact
    options: CodeServerOptions


class TailscaleAddon(WireModel):
    name: Literal["tailscale"]
    version: Version
    artifact: Artifact
    options: TailscaleOptions


AddonSpec = Annotated[CodeServerAddon | TailscaleAddon, Field(discriminator="name")]


class DevUser(WireModel):
    """The container's dev environment: user ``dev``, home ``/home/dev``, workspace below it."""

    name: str = Field(default="dev", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    home: AbsolutePath = "/home/dev"
    workspace: AbsolutePath = "/home/dev/workspace"


class ProvisionPayload(WireModel):
    vmid: int = Field(ge=MIN_VMID, le=MAX_VMID)
    runtime: RuntimeSpec
    addons: list[AddonSpec] = Field(default_factory=list)
    dev_user: DevUser = Field(default_factory=DevUser)

    def json_with_secrets(self, *, indent: int | None = None) -> str:
        """The payload with its secrets in clear: only for the agent, in the request body the
        API sends it and in its own 0600 state file."""
        return self.model_dump_json(indent=indent, context={_REVEAL: True})

    def addon(self, name: str) -> CodeServerAddon | TailscaleAddon | None:
        return next((a for a in self.addons if a.name == name), None)
