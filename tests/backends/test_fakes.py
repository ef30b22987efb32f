"""The fake backends misbehave exactly as documented (the API's tests rely on it)."""

from __future__ import annotations

import asyncio
import time

import pytest
from fakes import CrashingBackend, MemoryBackend, NeverReadyBackend, SlowBackend

from zlh.backends import BackendError, ContainerExists, ContainerSpec, RunState


def test_memory_backend_keeps_the_interface_guarantees() -> None:
    backend = MemoryBackend()

    asyncio.run(backend.create(ContainerSpec(vmid=1, agent_secret="a")))
    with pytest.raises(ContainerExists):
        asyncio.run(backend.create(ContainerSpec(vmid=1, agent_secret="b")))
    assert backend.secrets[1] == "a"
    with pytest.raises(BackendError, match="did not come up"):  # created, not started
        asyncio.run(backend.wait_running(1, timeout_s=0.2))

    asyncio.run(backend.rebuild(ContainerSpec(vmid=1, agent_secret="c")))
    assert backend.secrets[1] == "c"

    asyncio.run(backend.start(1))
    assert asyncio.run(backend.wait_running(1, timeout_s=1)).address
    with pytest.raises(BackendError, match="absent or running"):
        asyncio.run(backend.rebuild(ContainerSpec(vmid=1, agent_secret="d")))
    asyncio.run(backend.destroy(1))
    with pytest.raises(BackendError, match="absent or running"):
        asyncio.run(backend.rebuild(ContainerSpec(vmid=1, agent_secret="d")))
    asyncio.run(backend.destroy(1))
    assert asyncio.run(backend.status(1)).state is RunState.ABSENT


def test_slow_backend_takes_its_delay() -> None:
    backend = SlowBackend(delay_s=0.2)
    started = time.monotonic()
    asyncio.run(backend.create(ContainerSpec(vmid=2, agent_secret="s")))
    assert time.monotonic() - started >= 0.2


def test_never_ready_backend_makes_wait_running_time_out() -> None:
    backend = NeverReadyBackend()
    asyncio.run(backend.create(ContainerSpec(vmid=3, agent_secret="s")))
    asyncio.run(backend.start(3))
    with pytest.raises(BackendError, match="container 3 did not come up within 0s"):
        asyncio.run(backend.wait_running(3, timeout_s=0.3))


def test_crashing_backend_fails_named_operations_and_crashes_running_containers() -> None:
    backend = CrashingBackend(fail={"start"})
    asyncio.run(backend.create(ContainerSpec(vmid=4, agent_secret="s")))
    with pytest.raises(BackendError, match="start of container 4 failed"):
        asyncio.run(backend.start(4))

    crashing = CrashingBackend(crash_after=2)
    asyncio.run(crashing.create(ContainerSpec(vmid=5, agent_secret="s")))
    asyncio.run(crashing.start(5))
    states = [asyncio.run(crashing.status(5)).state for _ in range(3)]
    assert states == [RunState.RUNNING, RunState.RUNNING, RunState.STOPPED]
