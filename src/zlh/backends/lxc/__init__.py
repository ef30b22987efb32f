"""The default backend, real LXC containers on this host: the backend itself (``backend``),
its network and isolation rules (``net``), the host-wide registry of addresses and names
(``slots``), the unprivileged id mapping (``idmap``) and the debootstrapped template
(``template``)."""

from zlh.backends.lxc.backend import LxcBackend, cgroup_version, require_lxc

__all__ = ["LxcBackend", "cgroup_version", "require_lxc"]
