"""Where a running LXC container's cgroup is, and what it has used (CPU time, memory).

Read straight from the cgroup files, no ``lxc-cgroup`` process per value, so a scrape over
many containers costs a few file reads each. LXC 4 and later name the container's cgroup
``lxc.payload.<name>`` (older releases ``lxc/<name>``) below the hierarchy's root: on a
unified (v2) host that is one directory, on v1 one per controller (``cpuacct``, ``memory``).
A container elsewhere (``lxc.cgroup.dir`` set, a relative cgroup) is found through its init
process's ``/proc/<pid>/cgroup``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from zlh.backends.base import Usage

__all__ = ["CGROUP_ROOT", "cgroup_version", "dirs_of_pid", "payload_dirs", "read_usage"]

CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
_NS_PER_S: Final = 1e9
_US_PER_S: Final = 1e6

# (cpu, memory): the directories the two figures are read from.
Dirs = tuple[Path, Path]


def cgroup_version(root: Path = CGROUP_ROOT) -> int:
    """2 on a unified cgroup host, 1 when the memory controller is on a v1 hierarchy."""
    return 2 if (root / "cgroup.controllers").exists() else 1


def _dirs(relative: str, version: int, root: Path) -> Dirs:
    relative = relative.strip("/")
    if version == 2:
        return root / relative, root / relative
    return root / "cpuacct" / relative, root / "memory" / relative


def payload_dirs(name: str, version: int, root: Path = CGROUP_ROOT) -> Dirs | None:
    """The cgroup of the running container ``name`` where LXC puts it by default, or None."""
    for relative in (f"lxc.payload.{name}", f"lxc/{name}"):
        dirs = _dirs(relative, version, root)
        if dirs[0].is_dir() and dirs[1].is_dir():
            return dirs
    return None


def dirs_of_pid(pid: int, version: int, root: Path = CGROUP_ROOT) -> Dirs | None:
    """The cgroup of process ``pid`` from ``/proc/<pid>/cgroup``, or None when it is gone."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    paths: dict[str, str] = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    if version == 2:
        return _dirs(paths[""], 2, root) if "" in paths else None
    if "cpuacct" not in paths or "memory" not in paths:
        return None
    return (
        _dirs(paths["cpuacct"], 1, root)[0],
        _dirs(paths["memory"], 1, root)[1],
    )


def read_usage(dirs: Dirs, version: int) -> Usage:
    """CPU seconds and memory bytes charged to the cgroup. OSError when it is gone."""
    cpu, memory = dirs
    if version == 2:
        stat = (cpu / "cpu.stat").read_text().split()
        usec = int(stat[stat.index("usage_usec") + 1])
        return Usage(
            cpu_seconds=usec / _US_PER_S,
            memory_bytes=int((memory / "memory.current").read_text()),
        )
    return Usage(
        cpu_seconds=int((cpu / "cpuacct.usage").read_text()) / _NS_PER_S,
        memory_bytes=int((memory / "memory.usage_in_bytes").read_text()),
    )
