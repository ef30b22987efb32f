"""The addon interface: install, configure, start, stop, health.

Every addon is installed the same verified way as a runtime (into
``/opt/zlh/services/<addon>``); what differs is how it is configured, run and checked. The
provisioner calls, in order, ``install`` → ``configure`` → ``start`` for each addon of a
payload, and ``stop`` when a newer payload drops or changes it. Guarantees:

- ``install`` returns only once the artifact is installed and verified (or raises); it does
  nothing when the marker already matches.
- ``configure`` is idempotent and keeps what the user changed that is not ours to enforce.
- ``start`` returns once the addon is healthy, raises :class:`~zlh.agent.errors.AddonError`
  when it cannot get there; on an addon that already runs as configured it changes nothing.
- ``stop`` returns once the addon's processes are gone; stopping a stopped addon is fine.
- ``health`` never blocks: it reports the last observation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from zlh.agent.config import AgentConfig
from zlh.agent.devuser import DevEnvironment
from zlh.agent.paths import Layout
from zlh.agent.supervise import ProcessSpec, Supervisor
from zlh.install.installed import read_marker
from zlh.install.installer import Installer, InstallRequest
from zlh.install.progress import ProgressTracker
from zlh.schemas import AddonHealth, AddonSpecBase, ArtifactKind, addon_type

__all__ = ["Addon", "AddonContext", "install_request"]

SpecT = TypeVar("SpecT", bound=AddonSpecBase[Any])


def install_request(spec: AddonSpecBase[Any], layout: Layout) -> InstallRequest:
    """The verified install of ``spec``'s artifact into its service dir."""
    return InstallRequest(
        kind=ArtifactKind.ADDON,
        name=spec.name,
        version=spec.version,
        artifact=spec.artifact,
        target=layout.service(addon_type(spec.name).service_dir),
    )


@dataclass(frozen=True)
class AddonContext:
    layout: Layout
    config: AgentConfig
    installer: Installer
    dev: DevEnvironment
    vmid: int
    # PATH entries for processes the addon starts (the active runtimes' bin dirs).
    runtime_path: tuple[str, ...] = ()


class Addon(ABC, Generic[SpecT]):
    name: ClassVar[str]

    def __init__(self, spec: SpecT, ctx: AddonContext) -> None:
        self.spec: SpecT = spec
        self.ctx = ctx
        self.target = ctx.layout.service(addon_type(self.name).service_dir)

    def same_as(self, spec: SpecT, ctx: AddonContext) -> bool:
        """Whether this instance already serves ``spec`` in ``ctx`` (nothing to restart)."""
        return spec == self.spec and ctx == self.ctx

    @property
    def installed(self) -> bool:
        marker = read_marker(self.target)
        return marker is not None and marker.sha256 == self.spec.artifact.sha256

    async def install(self, tracker: ProgressTracker) -> bool:
        request = install_request(self.spec, self.ctx.layout)
        _marker, installed_now = await self.ctx.installer.ensure(request, tracker)
        return installed_now

    def supervisor_for(self, process: ProcessSpec) -> Supervisor:
        """A supervisor for one of this addon's processes, with the agent's crash policy."""
        layout, config = self.ctx.layout, self.ctx.config
        return Supervisor(
            process,
            pid_file=layout.pid_file(process.name),
            log_file=layout.log_file(process.name),
            max_fast_exits=config.max_fast_exits,
            fast_exit_s=config.fast_exit_s,
        )

    @classmethod
    async def warm(cls, spec: SpecT, layout: Layout) -> None:
        """Work a warm-pool container does ahead of its user, with nobody's home yet (its
        artifact is installed); nothing by default."""

    @abstractmethod
    async def configure(self) -> None: ...

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    def health(self) -> AddonHealth: ...
