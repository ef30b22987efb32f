"""Container backends behind one interface: ``lxc`` (default), ``proxmox``, ``process``."""

from zlh.backends.base import (
    AGENT_PORT,
    Backend,
    BackendError,
    BackendUnavailable,
    ContainerExists,
    ContainerInfo,
    ContainerSpec,
    ContainerState,
    Resources,
)

__all__ = [
    "AGENT_PORT",
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "ContainerExists",
    "ContainerInfo",
    "ContainerSpec",
    "ContainerState",
    "Resources",
]
