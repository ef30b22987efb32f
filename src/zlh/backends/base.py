"""The one interface every container backend implements (lxc, proxmox, process).

The API never cares which backend runs; it calls these methods and stores ``get_state()``.
Guarantees every implementation keeps, and the tests in ``tests/backends/`` check:

- ``create`` makes a stopped container with the agent secret inside, or raises
  :class:`ContainerExists` without touching an existing container of that vmid.
- ``start`` returns once the container runs (not once the agent answers: see
  :meth:`Backend.wait_running`). Starting a running container is a no-op.
- ``stop`` returns only once the container is stopped: gracefully first, then hard after
  ``timeout_s``; it logs instead of hanging. Stopping a stopped container is a no-op.
- ``destroy`` is idempotent: destroying an absent container succeeds. Its address is free again.
- ``rebuild`` replaces a stopped container's system with a fresh one from the current template
  and keeps ``/home/dev`` as it is (files, owners, modes, links planted by the tenant: never
  followed); the container stays stopped with its vmid and address, the new agent secret in it,
  and ``template`` naming the template its system now comes from. It refuses a running or absent
  container with :class:`BackendError`. An interrupted rebuild never loses the home, refuses to
  ``start``, and the next ``rebuild`` finishes it.
- ``status`` never raises for an unknown vmid: it reports ``RunState.ABSENT``.
- ``list`` finds every container this backend created, also after an API restart (from the
  host's own records: container names/config, not memory).

Any method may raise :class:`BackendError` (or a subclass) with a message for a person;
implementations translate lxc/Proxmox/OS errors at this boundary with ``raise ... from exc``.
Methods are called from one event loop; implementations serialise what must not run
concurrently for one vmid.
"""

from __future__ import annotations

import abc
import asyncio
import builtins
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from zlh.errors import ZlhError
from zlh.ports import AGENT_PORT, CODE_SERVER_PORT

__all__ = [
    "AGENT_PORT",
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "BlockingBackend",
    "ContainerExists",
    "ContainerInfo",
    "ContainerSpec",
    "LayerMount",
    "Resources",
    "RunState",
]

# The agent's port inside a container (LXC, Proxmox). The process backend allocates its own.


class BackendError(ZlhError):
    """A backend operation failed; ``message`` says what and, where known, why."""

    status_code = 502


class BackendUnavailable(BackendError):
    """The backend cannot run on this host (missing package, not root, cluster unreachable)."""

    status_code = 503


class ContainerExists(BackendError):
    status_code = 409


class RunState(StrEnum):
    """Whether a container exists and runs, as its host sees it (the API's lifecycle, which
    includes provisioning and the agent's health, is zlh.api.db.ContainerState)."""

    ABSENT = "absent"
    STOPPED = "stopped"
    RUNNING = "running"

    @property
    def exists(self) -> bool:
        return self is not RunState.ABSENT


@dataclass(frozen=True, kw_only=True)
class Resources:
    memory_mb: int = 2048
    cores: int = 2
    pids: int = 2048
    disk_gb: int = 8

    def __post_init__(self) -> None:
        for name in ("memory_mb", "cores", "pids", "disk_gb"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


@dataclass(frozen=True)
class LayerMount:
    """A host directory (a shared layer, zlh.layers) shown read-only at ``target`` inside."""

    source: Path
    target: str  # an absolute container path: /opt/zlh/runtimes/<rt>/<ver>, /opt/zlh/services/…

    def __post_init__(self) -> None:
        if not self.source.is_absolute() or not self.target.startswith("/"):
            raise ValueError(f"a layer mount needs absolute paths: {self.source} -> {self.target}")
        if any(part in {"", ".", ".."} for part in self.target.strip("/").split("/")):
            raise ValueError(f"{self.target!r} is not a plain container path")


@dataclass(frozen=True, kw_only=True)
class ContainerSpec:
    vmid: int
    agent_secret: str
    resources: Resources = field(default_factory=Resources)
    # Give the container /dev/net/tun (the tailscale addon wants kernel networking).
    tun: bool = False
    # Shared layers to mount read-only (only where ``Backend.layers_dir`` is not None).
    layers: tuple[LayerMount, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ContainerInfo:
    """Where a container is and how to reach its services from the API host."""

    vmid: int
    state: RunState
    address: str | None = None  # the container's IP as seen from the API host
    agent_port: int = AGENT_PORT
    code_server_port: int = CODE_SERVER_PORT  # what the payload says, what the proxy targets
    node: str | None = None  # Proxmox node, or the host name
    # The template the container's system was made from (lxc: the template version), from the
    # host's records; None where the backend does not know (process, proxmox).
    template: str | None = None

    @property
    def agent_url(self) -> str | None:
        return f"http://{self.address}:{self.agent_port}" if self.address else None


@dataclass(frozen=True, kw_only=True)
class Usage:
    """What a running container uses now, as its host measures it."""

    memory_bytes: int
    cpu_seconds: float | None = None  # CPU time used since it started (lxc, process)
    cpu_cores: float | None = None  # cores in use now, where only a rate is known (proxmox)


class Backend(abc.ABC):
    """A place where dev containers run. Subclasses must implement every abstract method."""

    name: ClassVar[str]

    @abc.abstractmethod
    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        """Create a stopped container holding ``spec.agent_secret``. Raises ContainerExists."""

    @abc.abstractmethod
    async def start(self, vmid: int) -> ContainerInfo:
        """Start it; returns once it runs. Raises BackendError if absent."""

    @abc.abstractmethod
    async def stop(self, vmid: int, *, timeout_s: float = 10.0) -> None:
        """Stop gracefully, then hard after ``timeout_s``; returns once stopped."""

    @abc.abstractmethod
    async def destroy(self, vmid: int) -> None:
        """Stop if needed and remove everything; succeeds when already absent."""

    @abc.abstractmethod
    async def rebuild(self, spec: ContainerSpec) -> ContainerInfo:
        """Replace a stopped container's system with a fresh one from the current template,
        keeping /home/dev as it is; it stays stopped, with the same vmid and address, and
        spec.agent_secret written anew. BackendError if it is absent or running."""

    @abc.abstractmethod
    async def status(self, vmid: int) -> ContainerInfo:
        """Current state; ``RunState.ABSENT`` for an unknown vmid, never an exception."""

    @abc.abstractmethod
    async def list(self) -> list[ContainerInfo]:
        """Every container this backend created, found from the host's records."""

    @abc.abstractmethod
    async def usage(self, vmids: Sequence[int]) -> dict[int, Usage]:
        """CPU and memory of those of ``vmids`` that run (read at scrape time, cached by
        zlh.api.usage). A container that is not running or cannot be read is left out, never
        an error for the others; BackendError only when the host cannot be asked at all."""

    def suggest_vmid(self, minimum: int = 100) -> int:
        """A vmid at or above ``minimum`` the backend can use. Local backends take the API's
        choice; Proxmox asks the cluster (vmids are cluster-wide there). ``create`` still
        raises ContainerExists if another client takes it first: ask again and retry."""
        return minimum

    def layers_dir(self) -> Path | None:
        """Where shared layers must live for ``create`` and ``rebuild`` to mount
        ``ContainerSpec.layers`` (somewhere the containers' root can reach); None where this
        backend mounts no host directories."""
        return None

    def mounted_layers(self) -> dict[int, builtins.list[Path]]:
        """The layer directories each container's configuration mounts, from the host's
        records (what ``zlh layers gc`` keeps); empty where layers are not mounted."""
        return {}

    def _lock(self, vmid: int) -> asyncio.Lock:
        """The lock that serialises every operation on one container."""
        locks: dict[int, asyncio.Lock] = self.__dict__.setdefault("_vmid_locks", {})
        return locks.setdefault(vmid, asyncio.Lock())

    def get_state(self) -> dict[str, Any]:
        """Opaque JSON-able state the control plane stores; ``load_state`` gets it back."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Reattach after an API restart from what ``get_state`` returned earlier."""

    async def wait_running(self, vmid: int, *, timeout_s: float = 60.0) -> ContainerInfo:
        """Wait until the container runs and has an address (the agent may still be booting)."""
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        while True:
            info = await self.status(vmid)
            if info.state is RunState.RUNNING and info.address:
                return info
            if time.monotonic() > deadline:
                raise BackendError(
                    f"container {vmid} did not come up within {timeout_s:.0f}s "
                    f"(state {info.state.value})"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


class BlockingBackend(Backend):
    """A backend whose operations are blocking calls (``lxc-*`` commands, Proxmox REST).

    Subclasses implement the synchronous ``_create`` … ``_list_all`` and ``_rebuild``; each
    runs in a worker thread so the event loop never waits on them, and operations on one vmid
    are serialised.
    """

    @abc.abstractmethod
    def _create(self, spec: ContainerSpec) -> ContainerInfo: ...

    @abc.abstractmethod
    def _start(self, vmid: int) -> ContainerInfo: ...

    @abc.abstractmethod
    def _stop(self, vmid: int, timeout_s: float) -> None: ...

    @abc.abstractmethod
    def _destroy(self, vmid: int) -> None: ...

    @abc.abstractmethod
    def _rebuild(self, spec: ContainerSpec) -> ContainerInfo: ...

    @abc.abstractmethod
    def _info(self, vmid: int) -> ContainerInfo: ...

    @abc.abstractmethod
    def _list_all(self) -> list[ContainerInfo]: ...

    @abc.abstractmethod
    def _usage(self, vmids: list[int]) -> dict[int, Usage]: ...

    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        async with self._lock(spec.vmid):
            return await asyncio.to_thread(self._create, spec)

    async def start(self, vmid: int) -> ContainerInfo:
        async with self._lock(vmid):
            return await asyncio.to_thread(self._start, vmid)

    async def stop(self, vmid: int, *, timeout_s: float = 10.0) -> None:
        async with self._lock(vmid):
            await asyncio.to_thread(self._stop, vmid, timeout_s)

    async def destroy(self, vmid: int) -> None:
        async with self._lock(vmid):
            await asyncio.to_thread(self._destroy, vmid)

    async def rebuild(self, spec: ContainerSpec) -> ContainerInfo:
        async with self._lock(spec.vmid):
            return await asyncio.to_thread(self._rebuild, spec)

    async def status(self, vmid: int) -> ContainerInfo:
        return await asyncio.to_thread(self._info, vmid)

    async def list(self) -> list[ContainerInfo]:
        return await asyncio.to_thread(self._list_all)

    async def usage(self, vmids: Sequence[int]) -> dict[int, Usage]:
        return await asyncio.to_thread(self._usage, list(vmids))
