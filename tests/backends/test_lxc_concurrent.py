"""Containers created at once by a backend object whose network is not set up yet.

That is what a freshly started platform does with the first requests arriving together: every
create sets up the backend's network first, which adopts the data dir's existing containers
into the slot registry. A clone another create has just made (copied, not yet configured) is
not such a container: adopting it wrote network lines into its config while its own create
configured it, and the container then failed to start ("ABORTING").

Needs root and the lxc backend's packages, like the other LXC tests (tests/backends/test_lxc.py).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxc_kit import agent_status, lxc_backend

from zlh.backends import ContainerInfo, ContainerSpec
from zlh.backends.lxc import LxcBackend
from zlh.backends.lxc.net import file_lock
from zlh.backends.lxc.template import current_template

pytestmark = [pytest.mark.root, pytest.mark.slow]

VMIDS = range(9301, 9311)
UNDER_WAY, OTHER = 9311, 9312


@pytest.fixture(scope="module")
def backend() -> Iterator[LxcBackend]:
    yield from lxc_backend(*VMIDS, UNDER_WAY, OTHER)


async def _create_and_start_all(backend: LxcBackend) -> list[ContainerInfo]:
    specs = [ContainerSpec(vmid=vmid, agent_secret=f"secret-{vmid}") for vmid in VMIDS]
    await asyncio.gather(*(backend.create(spec) for spec in specs))
    return await asyncio.gather(*(backend.start(vmid) for vmid in VMIDS))


def test_containers_created_at_once_by_a_fresh_backend_all_start_on_their_own_address(
    backend: LxcBackend,
) -> None:
    fresh = LxcBackend(data_dir=backend.data_dir)  # nothing of its network set up yet
    infos = asyncio.run(_create_and_start_all(fresh))
    for info in infos:
        config = (backend.lxcpath / f"zlh-{info.vmid}" / "config").read_text()
        assert config.count("lxc.net.0.ipv4.address") == 1, config
        assert f"# zlh: container {info.vmid}" in config, config
        assert agent_status(info, f"secret-{info.vmid}") == 200
    assert len({info.address for info in infos}) == len(infos)


def _waits_for(lock: Path, deadline_s: float = 60.0) -> None:
    """Until some process waits for the flock on ``lock`` (a ``->`` line of /proc/locks)."""
    info = lock.stat()
    inode = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino} "
    deadline = time.monotonic() + deadline_s
    while not any(
        "->" in line and inode in line for line in Path("/proc/locks").read_text().splitlines()
    ):
        assert time.monotonic() < deadline, f"nobody waited for {lock}"
        time.sleep(0.01)


def test_a_clone_another_create_is_making_is_left_to_it(backend: LxcBackend) -> None:
    """A create under way holds the create lock from its copy of the template until it is
    configured: a fresh backend's first create waits for it before adopting anything."""
    lock = backend.lxcpath / ".zlh-create.lock"
    template = current_template(backend.lxcpath)
    assert template is not None
    fresh = LxcBackend(data_dir=backend.data_dir)
    spec = ContainerSpec(vmid=OTHER, agent_secret=f"secret-{OTHER}")
    creating = threading.Thread(target=lambda: asyncio.run(fresh.create(spec)))
    with file_lock(lock):
        clone = ["-n", template.name, "-N", f"zlh-{UNDER_WAY}", "-s", "-B", "overlay"]
        subprocess.run(
            ["lxc-copy", "-P", str(backend.lxcpath), *clone], check=True, capture_output=True
        )
        creating.start()
        _waits_for(lock)
        config = (backend.lxcpath / f"zlh-{UNDER_WAY}" / "config").read_text()
    creating.join()
    assert "lxc.net.0.ipv4.address" not in config, config
    info = asyncio.run(fresh.start(OTHER))
    assert agent_status(info, f"secret-{OTHER}") == 200
