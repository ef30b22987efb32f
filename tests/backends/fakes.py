"""Misbehaving backends for the API's tests, injected through the one Backend interface.

``MemoryBackend`` keeps the interface's guarantees with containers in a dict (no agent);
the others break one thing each, the way real backends do:

- ``SlowBackend``: every operation takes ``delay_s`` (a Proxmox cluster under load).
- ``NeverReadyBackend``: ``start`` returns but the container never runs with an address,
  so ``wait_running`` times out (a container whose init hangs).
- ``CrashingBackend``: the operations named in ``fail`` raise BackendError, and a started
  container dies after ``crash_after`` status calls (an OOM-killed container).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from zlh.backends import (
    Backend,
    BackendError,
    ContainerExists,
    ContainerInfo,
    ContainerSpec,
    RunState,
    Usage,
)

__all__ = ["CrashingBackend", "MemoryBackend", "NeverReadyBackend", "SlowBackend"]


class MemoryBackend(Backend):
    name = "memory"

    def __init__(self) -> None:
        self.containers: dict[int, ContainerInfo] = {}
        self.secrets: dict[int, str] = {}
        self.calls: list[tuple[str, int]] = []

    def _set(self, vmid: int, state: RunState) -> ContainerInfo:
        address = f"127.0.0.{vmid % 250 + 2}" if state is RunState.RUNNING else None
        info = ContainerInfo(vmid=vmid, state=state, address=address, node="memory")
        self.containers[vmid] = info
        return info

    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        self.calls.append(("create", spec.vmid))
        if spec.vmid in self.containers:
            raise ContainerExists(f"container {spec.vmid} already exists")
        self.secrets[spec.vmid] = spec.agent_secret
        return self._set(spec.vmid, RunState.STOPPED)

    async def start(self, vmid: int) -> ContainerInfo:
        self.calls.append(("start", vmid))
        if vmid not in self.containers:
            raise BackendError(f"container {vmid} does not exist")
        return self._set(vmid, RunState.RUNNING)

    async def stop(self, vmid: int, *, timeout_s: float = 10.0) -> None:
        self.calls.append(("stop", vmid))
        if vmid in self.containers:
            self._set(vmid, RunState.STOPPED)

    async def destroy(self, vmid: int) -> None:
        self.calls.append(("destroy", vmid))
        self.containers.pop(vmid, None)
        self.secrets.pop(vmid, None)

    async def rebuild(self, spec: ContainerSpec) -> ContainerInfo:
        self.calls.append(("rebuild", spec.vmid))
        info = self.containers.get(spec.vmid)
        if info is None or info.state is RunState.RUNNING:
            raise BackendError(f"container {spec.vmid} is absent or running")
        self.secrets[spec.vmid] = spec.agent_secret
        return info

    async def status(self, vmid: int) -> ContainerInfo:
        return self.containers.get(vmid) or ContainerInfo(vmid=vmid, state=RunState.ABSENT)

    async def list(self) -> list[ContainerInfo]:
        return sorted(self.containers.values(), key=lambda info: info.vmid)

    async def usage(self, vmids: Sequence[int]) -> dict[int, Usage]:
        return {}  # nothing runs


class SlowBackend(MemoryBackend):
    name = "slow"

    def __init__(self, delay_s: float = 1.0) -> None:
        super().__init__()
        self.delay_s = delay_s

    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        await asyncio.sleep(self.delay_s)
        return await super().create(spec)

    async def start(self, vmid: int) -> ContainerInfo:
        await asyncio.sleep(self.delay_s)
        return await super().start(vmid)

    async def stop(self, vmid: int, *, timeout_s: float = 10.0) -> None:
        await asyncio.sleep(self.delay_s)
        await super().stop(vmid, timeout_s=timeout_s)

    async def destroy(self, vmid: int) -> None:
        await asyncio.sleep(self.delay_s)
        await super().destroy(vmid)

    async def status(self, vmid: int) -> ContainerInfo:
        await asyncio.sleep(self.delay_s)
        return await super().status(vmid)


class NeverReadyBackend(MemoryBackend):
    name = "never-ready"

    async def start(self, vmid: int) -> ContainerInfo:
        self.calls.append(("start", vmid))
        if vmid not in self.containers:
            raise BackendError(f"container {vmid} does not exist")
        return self.containers[vmid]  # stays stopped, without an address


class CrashingBackend(MemoryBackend):
    name = "crashing"

    def __init__(self, *, fail: Iterable[str] = (), crash_after: int | None = None) -> None:
        super().__init__()
        self.fail = set(fail)
        self.crash_after = crash_after
        self._status_calls: dict[int, int] = {}

    def _maybe_fail(self, operation: str, vmid: int) -> None:
        if operation in self.fail:
            raise BackendError(f"{operation} of container {vmid} failed: injected failure")

    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        self._maybe_fail("create", spec.vmid)
        return await super().create(spec)

    async def start(self, vmid: int) -> ContainerInfo:
        self._maybe_fail("start", vmid)
        self._status_calls[vmid] = 0
        return await super().start(vmid)

    async def stop(self, vmid: int, *, timeout_s: float = 10.0) -> None:
        self._maybe_fail("stop", vmid)
        await super().stop(vmid, timeout_s=timeout_s)

    async def destroy(self, vmid: int) -> None:
        self._maybe_fail("destroy", vmid)
        await super().destroy(vmid)

    async def status(self, vmid: int) -> ContainerInfo:
        info = await super().status(vmid)
        if self.crash_after is not None and info.state is RunState.RUNNING:
            self._status_calls[vmid] = self._status_calls.get(vmid, 0) + 1
            if self._status_calls[vmid] > self.crash_after:
                return self._set(vmid, RunState.STOPPED)
        return info
