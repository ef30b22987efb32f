"""The cgroup files the lxc backend's ``usage`` reads (zlh.backends.lxc.cgroup), on this very
test process's cgroup, and where a container's cgroup is looked for."""

from __future__ import annotations

import os
import time
from pathlib import Path

from zlh.backends.lxc.cgroup import cgroup_version, dirs_of_pid, payload_dirs, read_usage

MIB = 1024 * 1024


def test_cgroup_figures_of_this_process_are_real() -> None:
    version = cgroup_version()
    dirs = dirs_of_pid(os.getpid(), version)
    assert dirs is not None
    before = read_usage(dirs, version)
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # burn CPU the cgroup is charged for
        pass
    after = read_usage(dirs, version)
    assert before.cpu_seconds is not None and after.cpu_seconds is not None
    assert after.cpu_seconds >= before.cpu_seconds + 0.15
    assert after.memory_bytes > 10 * MIB


def test_a_container_not_running_has_no_cgroup(tmp_path: Path) -> None:
    assert payload_dirs("zlh-424242", cgroup_version()) is None
    (tmp_path / "cpuacct" / "lxc.payload.zlh-7").mkdir(parents=True)
    assert payload_dirs("zlh-7", 1, tmp_path) is None  # memory's half is missing
    (tmp_path / "memory" / "lxc.payload.zlh-7").mkdir(parents=True)
    assert payload_dirs("zlh-7", 1, tmp_path) == (
        tmp_path / "cpuacct" / "lxc.payload.zlh-7",
        tmp_path / "memory" / "lxc.payload.zlh-7",
    )
    assert dirs_of_pid(2**22 + 1, 1) is None  # no such process
