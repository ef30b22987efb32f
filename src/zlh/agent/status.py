"""The ``GET /status`` document, built from memory and small reads of the disk, never waiting.

Installed runtimes and addons are read from their markers on every call (a few small files):
what ``/status`` reports is what is on disk, including after a restart. Addon health is the
supervisors' last observation. Paths are where things are on this machine: the contract's own paths
in a container, the same paths beneath ``--root`` elsewhere.
"""

from __future__ import annotations

from zlh import __version__
from zlh.agent.provisioner import Provisioner
from zlh.install.installed import read_marker
from zlh.schemas import AddonHealth, AgentStatus, DevUser, addon_type

__all__ = ["build_status"]


def _addon_installed(prov: Provisioner, name: str) -> bool:
    marker = read_marker(prov.layout.service(addon_type(name).service_dir))
    spec = prov.payload.addon(name) if prov.payload else None
    return marker is not None and (spec is None or marker.sha256 == spec.artifact.sha256)


def _tailscale_ip(prov: Provisioner) -> str | None:
    addon = prov.addons.get("tailscale")
    if addon is None:
        return None
    from zlh.agent.addons.tailscale import Tailscale

    return addon.ip if isinstance(addon, Tailscale) and addon.joined else None


def build_status(prov: Provisioner) -> AgentStatus:
    payload = prov.payload
    dev_user = payload.dev_user if payload else DevUser()
    runtimes = prov.runtimes.installed()
    install_path: str | None = None
    runtime_installed = False
    if payload is not None:
        name, wanted = payload.runtime.name.value, payload.runtime.version
        version = prov.runtimes.active_version(name) or wanted
        install_path = str(prov.layout.runtime(name, version))
        for runtime in runtimes:
            if runtime.name == name and runtime.version == version:
                pinned = payload.runtime.artifact.sha256
                runtime_installed = version != wanted or runtime.sha256 == pinned
    health: dict[str, AddonHealth] = {name: a.health() for name, a in prov.addons.items()}
    code_server, tailscale = health.get("code-server"), health.get("tailscale")
    return AgentStatus(
        workspace_root=str(prov.layout.path(dev_user.workspace)),
        runtime_install_path=install_path,
        runtime_installed=runtime_installed,
        code_server_installed=_addon_installed(prov, "code-server"),
        code_server_running=bool(code_server and code_server.running),
        state=prov.state,
        progress=prov.tracker.snapshot(),
        error=prov.error,
        runtime_change=prov.runtime_change,
        runtimes=runtimes,
        addons=list(health.values()),
        dev_user=dev_user.name,
        tailscale_installed=_addon_installed(prov, "tailscale"),
        tailscale_running=bool(tailscale and tailscale.running),
        tailscale_ip=_tailscale_ip(prov),
        agent_version=__version__,
        pool=bool(payload and payload.pool),
    )
