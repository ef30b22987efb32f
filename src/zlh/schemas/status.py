"""The agent's ``GET /status`` document, polled by the API (the agent never pushes).

The five fields of the container contract (docs/architecture.md), ``workspaceRoot``,
``runtimeInstallPath``, ``runtimeInstalled``, ``codeServerInstalled``, ``codeServerRunning``,
are carried verbatim; the rest is ours.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from zlh.schemas._base import WireModel
from zlh.schemas.artifact import ArtifactMetadata

__all__ = [
    "AddonHealth",
    "AgentState",
    "AgentStatus",
    "InstalledRuntime",
    "Progress",
    "ProvisionError",
    "ProvisionStep",
    "RuntimeChange",
    "RuntimeChangeState",
]


class AgentState(StrEnum):
    IDLE = "idle"
    PROVISIONING = "provisioning"
    READY = "ready"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in {AgentState.READY, AgentState.FAILED}


class ProvisionStep(StrEnum):
    """The container lifecycle, in order: runtime, then addons, then ready."""

    DEV_USER = "dev-user"
    RUNTIME_DOWNLOAD = "runtime-download"
    RUNTIME_EXTRACT = "runtime-extract"
    RUNTIME_ACTIVATE = "runtime-activate"
    ADDON_DOWNLOAD = "addon-download"
    ADDON_INSTALL = "addon-install"
    ADDON_START = "addon-start"
    READY = "ready"


class Progress(WireModel):
    step: ProvisionStep
    percent: float = Field(default=0.0, ge=0.0, le=100.0)
    bytes_done: int = Field(default=0, ge=0)
    bytes_total: int | None = Field(default=None, ge=0)
    message: str = ""


class ProvisionError(WireModel):
    code: str
    message: str
    step: ProvisionStep


class InstalledRuntime(WireModel):
    name: str
    version: str
    path: str
    sha256: str
    active: bool = False
    metadata: ArtifactMetadata = Field(default_factory=ArtifactMetadata)


class RuntimeChangeState(StrEnum):
    INSTALLING = "installing"
    ACTIVE = "active"
    FAILED = "failed"


class RuntimeChange(WireModel):
    """The last change of a ready container's runtime version (``POST /runtime``).

    While it installs the container stays ready (IDE, console and files keep working) and
    ``progress`` follows the download. ``active``: the version is installed, ``current`` points
    at it and the payload the agent restores after a restart names it. ``failed``: nothing
    changed, the previous version stays active, ``error`` says why.
    """

    name: str
    version: str
    sha256: str
    state: RuntimeChangeState
    error: ProvisionError | None = None


class AddonHealth(WireModel):
    name: str
    version: str | None = None
    installed: bool = False
    running: bool = False
    restarts: int = Field(default=0, ge=0)
    message: str = ""


class AgentStatus(WireModel):
    # The contract's dev fields, verbatim on the wire.
    workspace_root: str
    runtime_install_path: str | None = None
    runtime_installed: bool = False
    code_server_installed: bool = False
    code_server_running: bool = False
    # Ours.
    state: AgentState = AgentState.IDLE
    progress: Progress | None = None
    error: ProvisionError | None = None
    runtime_change: RuntimeChange | None = None
    runtimes: list[InstalledRuntime] = Field(default_factory=list)
    addons: list[AddonHealth] = Field(default_factory=list)
    dev_user: str = "dev"
    tailscale_installed: bool = False
    tailscale_running: bool = False
    tailscale_ip: str | None = None
    agent_version: str
    # Provisioned for the warm pool (ProvisionPayload.pool): ready to be handed out, not used.
    pool: bool = False
