"""Who touches the workspace: the dev user's identity, and threads that act as that user.

File operations run on a dedicated thread pool whose threads switch their *filesystem* identity
(``setfsuid``/``setfsgid`` and a per-thread ``setgroups``) to the dev user once, when the thread
starts. This was chosen over "do it as root, then ``fchown`` what was created" because the kernel
then checks every open, rename and unlink with the dev user's permissions: changing the fsuid
from 0 drops the thread's filesystem capabilities (``CAP_DAC_OVERRIDE``, ``CAP_FOWNER``, ...), so
even a confinement bug could only reach what ``dev`` itself may reach, and files are created
owned by dev with no window in which they belong to root. These calls are per thread on Linux
(glibc does not broadcast ``setfsuid``; ``setgroups`` is issued as a raw syscall because glibc's
wrapper changes every thread), so the rest of the agent keeps running as root.

When the agent is not root (tests, the process backend) the dev user is the current user and the
pool's threads are plain threads.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import platform
import pwd
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

__all__ = [
    "DevEnvironmentSource",
    "DevIdentity",
    "DevTarget",
    "FsRunner",
    "start_in_as_child",
]

T = TypeVar("T")

# setgroups(2) by architecture; an unknown one fails closed (the pool refuses to start work).
_SYS_SETGROUPS = {"x86_64": 116, "aarch64": 159, "riscv64": 159, "ppc64le": 81, "s390x": 206}
_UNCHANGED = 0xFFFFFFFF  # setfsuid(-1) changes nothing and returns the current fsuid
_CD_THEN_EXEC = 'cd -- "$1" && shift && exec "$@"'


@dataclass(frozen=True)
class DevIdentity:
    """The user whose permissions file operations and console shells get."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: Path
    shell: str = "/bin/bash"

    @classmethod
    def lookup(cls, name: str) -> DevIdentity:
        """A real user from the passwd database (``dev`` in a container)."""
        entry = pwd.getpwnam(name)
        return cls(
            name=entry.pw_name,
            uid=entry.pw_uid,
            gid=entry.pw_gid,
            groups=tuple(os.getgrouplist(entry.pw_name, entry.pw_gid)),
            home=Path(entry.pw_dir),
            shell=entry.pw_shell or "/bin/bash",
        )

    @classmethod
    def current(cls, *, home: Path) -> DevIdentity:
        """The user this process runs as, standing in for dev where no dev user exists."""
        entry = pwd.getpwuid(os.geteuid())
        return cls(
            name=entry.pw_name,
            uid=os.geteuid(),
            gid=os.getegid(),
            groups=tuple(os.getgroups()),
            home=home,
            shell="/bin/bash",
        )

    @property
    def is_current(self) -> bool:
        return self.uid == os.geteuid()


class DevTarget(Protocol):
    """Where the dev user works and who they are (``zlh.agent.devuser.DevEnvironment``)."""

    @property
    def workspace(self) -> Path: ...

    @property
    def identity(self) -> DevIdentity: ...


# The current dev environment, or None until provisioning has created it.
DevEnvironmentSource = Callable[[], DevTarget | None]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _fail(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err) if err else 'refused'}")


def become_on_this_thread(identity: DevIdentity) -> None:
    """Switch the calling thread's filesystem identity to ``identity`` (needs root)."""
    libc = _libc()
    number = _SYS_SETGROUPS.get(platform.machine())
    if number is None:
        raise OSError(f"no per-thread setgroups for {platform.machine()}; refusing to run as dev")
    groups = (ctypes.c_uint * max(len(identity.groups), 1))(*identity.groups)
    if libc.syscall(number, len(identity.groups), groups) != 0:
        raise _fail("setgroups")
    libc.setfsgid.argtypes = [ctypes.c_uint]
    libc.setfsuid.argtypes = [ctypes.c_uint]
    libc.setfsgid(identity.gid)
    libc.setfsuid(identity.uid)
    if libc.setfsgid(_UNCHANGED) != identity.gid or libc.setfsuid(_UNCHANGED) != identity.uid:
        raise _fail(f"switching to uid {identity.uid} gid {identity.gid}")


class FsRunner:
    """Runs blocking filesystem calls on threads that act as the dev user."""

    def __init__(self, identity: DevIdentity, *, threads: int = 4) -> None:
        if not identity.is_current and os.geteuid() != 0:
            raise ValueError(
                f"acting as {identity.name} (uid {identity.uid}) needs root; "
                f"this agent runs as uid {os.geteuid()}"
            )
        initializer = (
            None if identity.is_current else functools.partial(become_on_this_thread, identity)
        )
        self.identity = identity
        self._pool = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix=f"fs-{identity.name}", initializer=initializer
        )

    async def run(self, fn: Callable[..., T], /, *args: object, **kwargs: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def start_in_as_child(
    argv: Sequence[str], cwd: Path | None, user: DevIdentity | None
) -> tuple[list[str], Path | None]:
    """The ``argv`` and ``cwd=`` to spawn a child that runs as ``user`` and starts in ``cwd``.

    ``subprocess`` changes directory *before* it drops root, so a ``cwd`` below the dev home
    (the workspace, which dev may have swapped for a link to a directory only root can reach)
    would be resolved by root. For another user the ``cd`` moves into the child, after exec, as
    that user: ``/bin/sh -c 'cd -- "$1" && shift && exec "$@"'``, same pid.
    """
    if cwd is None or user is None or user.is_current:
        return list(argv), cwd
    return ["/bin/sh", "-c", _CD_THEN_EXEC, "sh", str(cwd), *argv], None
