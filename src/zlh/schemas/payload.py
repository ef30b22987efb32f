"""The provisioning payload: what the API sends to an agent's ``POST /provision``."""

from __future__ import annotations

import posixpath
from typing import Annotated

from pydantic import AfterValidator, Field

from zlh.schemas._base import REVEAL_SECRETS, WireModel
from zlh.schemas.addons import AddonSpec
from zlh.schemas.artifact import Artifact, Version
from zlh.schemas.catalog import RuntimeName

__all__ = [
    "MAX_VMID",
    "MIN_VMID",
    "DevUser",
    "ProvisionPayload",
    "RuntimeSpec",
    "TokenChange",
    "ide_base_path",
]

# Proxmox VE's vmid range; the platform uses the same numbers on every backend.
MIN_VMID = 100
MAX_VMID = 999_999_999


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
    # A warm-pool container's payload: the runtime installed and activated and the add-ons'
    # artifacts installed, but no home for the dev user and no add-on configured or started
    # (nothing personal: the container's real payload follows when a user takes it).
    pool: bool = False

    def json_with_secrets(self, *, indent: int | None = None) -> str:
        """The payload with its secrets in clear: only for the agent, in the request body the
        API sends it and in its own 0600 state file."""
        return self.model_dump_json(indent=indent, context={REVEAL_SECRETS: True})

    def addon(self, name: str) -> AddonSpec | None:
        return next((a for a in self.addons if a.name == name), None)


class TokenChange(WireModel):
    """The body of the agent's ``PUT /token``: the container secret it accepts from now on
    (the request itself is authenticated with the current one)."""

    token: str = Field(min_length=32, max_length=256, pattern=r"^[A-Za-z0-9_-]+$")
