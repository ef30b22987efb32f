"""Container backends behind one interface: ``lxc`` (default), ``proxmox``, ``process``.

``create_backend(name, data_dir=…)`` is how the API picks one; implementation modules are
imported only when chosen (proxmoxer is an API-only dependency, lxc needs root).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal, get_args

from zlh.backends.base import (
    AGENT_PORT,
    Backend,
    BackendError,
    BackendUnavailable,
    ContainerExists,
    ContainerInfo,
    ContainerSpec,
    LayerMount,
    Resources,
    RunState,
    Usage,
)

__all__ = [
    "AGENT_PORT",
    "BACKENDS",
    "LOCAL_BACKENDS",
    "Backend",
    "BackendError",
    "BackendName",
    "BackendUnavailable",
    "ContainerExists",
    "ContainerInfo",
    "ContainerSpec",
    "LayerMount",
    "Resources",
    "RunState",
    "Usage",
    "create_backend",
]

BackendName = Literal["lxc", "process", "proxmox"]
BACKENDS: Final[tuple[str, ...]] = get_args(BackendName)
# The ones that run containers on this very host (what `zlh demo` can use).
LOCAL_BACKENDS: Final = ("lxc", "process")


def create_backend(name: str, *, data_dir: Path, **settings: Any) -> Backend:
    """The backend called ``name``; ``settings`` go to its constructor (Proxmox: url, token…).

    Raises BackendUnavailable (saying what to install or configure) when it cannot run here,
    and ValueError for an unknown name.
    """
    if name == "lxc":
        from zlh.backends.lxc import LxcBackend

        return LxcBackend(data_dir=data_dir, **settings)
    if name == "process":
        from zlh.backends.process import ProcessBackend

        return ProcessBackend(data_dir=data_dir, **settings)
    if name == "proxmox":
        from zlh.backends.proxmox import ProxmoxBackend, ProxmoxSettings

        config = settings.pop("config", None) or ProxmoxSettings.from_env(**settings)
        return ProxmoxBackend(config, data_dir=data_dir)
    raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
