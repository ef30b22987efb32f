"""Unprivileged LXC: the subordinate id range containers map their root into, and the shift.

Every container of the lxc backend runs in a user namespace: container uid ``n`` is host uid
``start + n`` for ``n`` below ``count`` (``lxc.idmap = u 0 <start> <count>``, the same for gids),
so root in a container is an unprivileged, unnamed user on the host. The range is the platform's
own subordinate range, registered in ``/etc/subuid`` and ``/etc/subgid`` for ``root`` (the user
the platform runs as) so that no other user of the host is ever given the same ids: an existing
``root`` range of at least ``count`` ids is used as it is, else the lowest free aligned range
from ``FIRST_ID`` is added with ``usermod --add-subuids/--add-subgids``.

A root filesystem made on the host (debootstrap, ``cp -a``) belongs to host root; before an
unprivileged container can use it, every entry's owner is shifted into the range once
(:func:`shift_tree`). ``lchown`` clears setuid/setgid bits and file capabilities, so both are put
back afterwards, capabilities as namespaced (v3) ones whose root is the mapped root: the kernel
honours a plain (v2) capability only for the initial namespace's root.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from zlh.backends.base import BackendError, BackendUnavailable

__all__ = [
    "COUNT",
    "IdMap",
    "SubIdFile",
    "container_idmap",
    "platform_idmap",
    "shift_tree",
    "userns_problem",
]

log = logging.getLogger(__name__)

PRIVILEGED_WARNING = (
    "containers run PRIVILEGED: root in a container is root on this host, and a customer who "
    "gains root in theirs owns the host and every other container"
)
SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")
OWNER = "root"
FIRST_ID = 100_000
COUNT = 65_536
_CAPABILITY = "security.capability"
_CAP_V2 = 0x02000000
_CAP_V3 = 0x03000000
_CAP_REVISION_MASK = 0xFF000000


@dataclass(frozen=True)
class IdMap:
    """Container ids ``0 .. count-1`` are host ids ``uid_start ..`` and ``gid_start ..``."""

    uid_start: int
    gid_start: int
    count: int = COUNT

    @property
    def root_uid(self) -> int:
        """Container root, as the host sees it."""
        return self.uid_start

    @property
    def root_gid(self) -> int:
        return self.gid_start

    def config_lines(self) -> list[str]:
        return [
            "lxc.include = /usr/share/lxc/config/userns.conf",
            f"lxc.idmap = u 0 {self.uid_start} {self.count}",
            f"lxc.idmap = g 0 {self.gid_start} {self.count}",
        ]

    @property
    def label(self) -> str:
        """One line for logs and ``zlh doctor``."""
        return (
            f"uids {self.uid_start}-{self.uid_start + self.count - 1}, "
            f"gids {self.gid_start}-{self.gid_start + self.count - 1}"
        )

    @classmethod
    def from_config(cls, text: str) -> IdMap | None:
        """The map an LXC config declares, or None for a privileged container."""
        uid = gid = count = None
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if not sep or key.strip() != "lxc.idmap":
                continue
            kind, inside, outside, size = value.split()
            if inside != "0":
                continue
            if kind == "u":
                uid, count = int(outside), int(size)
            elif kind == "g":
                gid = int(outside)
        if uid is None or gid is None or count is None:
            return None
        return cls(uid, gid, count)


@dataclass(frozen=True)
class SubIdFile:
    """``/etc/subuid`` or ``/etc/subgid``: ``name:start:count`` per line."""

    path: Path
    flag: str  # usermod's option that adds a range to this file

    def ranges(self) -> list[tuple[str, int, int]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        found = []
        for line in text.splitlines():
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                found.append((parts[0], int(parts[1]), int(parts[2])))
        return found

    def owned(self, owner: str, count: int) -> int | None:
        """The start of ``owner``'s first range of at least ``count`` ids."""
        for name, start, size in self.ranges():
            if name == owner and size >= count:
                return start
        return None

    def free_start(self, count: int) -> int:
        """The lowest ``count``-aligned range from FIRST_ID that no entry overlaps."""
        taken = [(start, start + size) for _, start, size in self.ranges()]
        start = FIRST_ID
        while any(start < end and begin < start + count for begin, end in taken):
            start += count
        return start

    def register(self, owner: str, count: int) -> int:
        """``owner``'s range, added with usermod when it has none."""
        start = self.owned(owner, count)
        if start is not None:
            return start
        start = self.free_start(count)
        usermod = shutil.which("usermod")
        if usermod is None:
            raise BackendUnavailable(
                f"cannot register a subordinate id range in {self.path}: usermod is missing "
                "(apt-get install passwd)"
            )
        span = f"{start}-{start + count - 1}"
        result = subprocess.run(
            [usermod, self.flag, span, owner], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise BackendUnavailable(
                f"cannot register {owner}:{start}:{count} in {self.path}: "
                f"{(result.stderr or result.stdout).strip()}; add the line by hand"
            )
        return start


def platform_idmap(count: int = COUNT) -> IdMap:
    """The platform's subordinate range (registered for root on first use)."""
    uid = SubIdFile(SUBUID, "--add-subuids").register(OWNER, count)
    gid = SubIdFile(SUBGID, "--add-subgids").register(OWNER, count)
    return IdMap(uid, gid, count)


def userns_problem() -> str | None:
    """Why this host cannot run unprivileged containers, or None when it can.

    Tried for real: a child enters a new user namespace and maps root (``unshare``).
    """
    limit = Path("/proc/sys/user/max_user_namespaces")
    try:
        if int(limit.read_text()) == 0:
            return (
                "user namespaces are disabled (user.max_user_namespaces = 0): "
                "sysctl -w user.max_user_namespaces=15000 (and set it in /etc/sysctl.d/)"
            )
    except (OSError, ValueError):
        pass
    tool = shutil.which("unshare")
    if tool is None:
        return "unshare (util-linux) is missing, so user namespaces cannot be checked"
    result = subprocess.run(
        [tool, "--user", "--map-root-user", "true"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        reason = (result.stderr or result.stdout).strip() or f"exit {result.returncode}"
        return f"this kernel refuses to create a user namespace ({reason})"
    return None


def container_idmap(*, allow_privileged: bool) -> IdMap | None:
    """The id map for this host's containers; None means privileged containers.

    Unprivileged whenever the host can; privileged only where it cannot *and* the operator
    asked for it by name (``--allow-privileged``). Never a silent fall-back.
    """
    problem = userns_problem()
    if problem is None:
        return platform_idmap()
    if not allow_privileged:
        raise BackendUnavailable(
            f"the lxc backend runs unprivileged containers and this host cannot: {problem}. "
            "Fix that (zlh doctor), or use --allow-privileged to run privileged containers "
            "(container root is then host root; not for untrusted users)"
        )
    log.warning("WARNING: %s (--allow-privileged; %s)", PRIVILEGED_WARNING, problem)
    return None


def _namespaced_capability(raw: bytes, root_uid: int) -> bytes:
    """A file capability xattr rewritten as v3 (namespaced) with ``root_uid`` as its root."""
    (magic,) = struct.unpack_from("<I", raw)
    if magic & _CAP_REVISION_MASK not in (_CAP_V2, _CAP_V3):
        raise BackendError(f"unknown file capability format {magic:#x}")
    data = raw[4:20]
    return (
        struct.pack("<I", _CAP_V3 | (magic & ~_CAP_REVISION_MASK))
        + data
        + struct.pack("<I", root_uid)
    )


def shift_tree(root: Path, idmap: IdMap) -> int:
    """Shift every entry of ``root`` (not following links) from host ids to mapped ids.

    Ids already inside the range are left alone (a hard link is seen once), so a shift that
    was interrupted can simply be run again. Returns how many entries changed owner.
    """
    changed = 0

    def shift(path: str) -> None:
        nonlocal changed
        info = os.lstat(path)
        if info.st_uid >= idmap.count and info.st_gid >= idmap.count:
            return  # already shifted
        if info.st_uid >= idmap.count or info.st_gid >= idmap.count:
            raise BackendError(f"{path}: owner {info.st_uid}:{info.st_gid} is half shifted")
        is_link = stat.S_ISLNK(info.st_mode)
        capability = None
        if not is_link:
            try:
                capability = os.getxattr(path, _CAPABILITY, follow_symlinks=False)
            except OSError:
                capability = None
        os.lchown(path, idmap.uid_start + info.st_uid, idmap.gid_start + info.st_gid)
        if not is_link and info.st_mode & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(path, stat.S_IMODE(info.st_mode))
        if capability is not None:
            value = _namespaced_capability(capability, idmap.root_uid)
            os.setxattr(path, _CAPABILITY, value, follow_symlinks=False)
        changed += 1

    shift(str(root))
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            shift(os.path.join(directory, name))
    return changed
