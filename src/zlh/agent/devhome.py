"""Root's work in the dev user's home, done so that nothing dev planted there can redirect it.

dev owns its home, so any name there may be a symlink, a hard link or a FIFO planted to make the
agent (root) chown, overwrite or read something outside it (docs/security.md, "Tenant isolation").
The agent never touches a path there by name. Every operation of :class:`DevHome`:

* runs on an :class:`~zlh.agent.runas.FsRunner` thread (:func:`as_dev`), whose filesystem
  identity is dev's: the kernel checks permissions as dev, and what is created belongs to dev
  without any chown;
* walks from the home one name at a time with ``O_NOFOLLOW`` (a
  :class:`~zlh.agent.workspace.Workspace` rooted at the home) and refuses, naming the path, a
  symlink, a directory that is not one, or a file that is not regular or has more than one hard
  link (a FIFO would hang a read; a hard link may be another name of a file outside);
* replaces a file by writing a temp file beside it and renaming it over the name: the name is
  replaced, never an inode that is linked elsewhere.

The home directory itself is the one thing root creates (:func:`make_home`): its parent
(``/home``) is root's, so dev cannot swap the name; it is made with ``mkdirat`` under a
descriptor of that parent, opened with ``O_NOFOLLOW`` and given to dev with ``fchown`` on its
own descriptor.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from zlh.agent.errors import DevUserError, UnsafeDevHome
from zlh.agent.runas import DevIdentity, FsRunner
from zlh.agent.workspace import BadPath, Conflict, RelPath, Workspace, WorkspaceError

__all__ = ["DevHome", "as_dev", "make_home"]

T = TypeVar("T")

MAX_READ_BYTES = 1024 * 1024
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def make_home(home: Path, identity: DevIdentity) -> None:
    """Create ``home`` if it is missing, owned by ``identity``; an existing one is left as is,
    unless root owns it: that is a fresh volume mounted there (a Proxmox CT's home mount
    point), which dev gets. Only the home itself changes owner, through its descriptor.

    ``home``'s parent must be a directory dev cannot write (``/home``, or the agent's scratch
    root): only the last name is created, and it must be a real directory, not a link.
    """
    home.parent.mkdir(parents=True, exist_ok=True)
    parent = os.open(home.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        created = False
        with contextlib.suppress(FileExistsError):
            os.mkdir(home.name, 0o755, dir_fd=parent)
            created = True
        fd = os.open(home.name, _DIR, dir_fd=parent)
    finally:
        os.close(parent)
    try:
        if not identity.is_current and (created or os.fstat(fd).st_uid == 0):
            os.fchown(fd, identity.uid, identity.gid)
    finally:
        os.close(fd)


async def as_dev(identity: DevIdentity, fn: Callable[..., T], /, *args: object) -> T:
    """Run ``fn(*args)`` on a thread whose filesystem identity is ``identity``."""
    runner = FsRunner(identity, threads=1)
    try:
        return await runner.run(fn, *args)
    finally:
        runner.close()


class DevHome:
    """Files and directories below the dev home, walked without following links.

    Blocking: call the methods through :func:`as_dev`. Failures raise
    :class:`~zlh.agent.errors.UnsafeDevHome` (something planted is in the way) or
    :class:`~zlh.agent.errors.DevUserError`, with the absolute path in the message.
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self._tree = Workspace(home, label=f"{home}/")

    def rel(self, path: Path) -> RelPath:
        """``path`` (absolute, below the home) as names below it."""
        try:
            parts = path.relative_to(self.home).parts
        except ValueError:
            raise DevUserError(f"{path} is not below the dev home {self.home}") from None
        if ".." in parts:
            raise DevUserError(f"{path} has a '..' in it; the agent only works below {self.home}")
        return RelPath(parts)

    def make_dirs(self, *paths: Path) -> None:
        """Create each directory and its missing parents below the home (``mkdir -p``)."""
        for path in paths:
            with _refusals():
                self._tree.mkdir(self.rel(path), parents=True)

    def exists(self, path: Path) -> bool:
        """Whether anything (a link included) is at ``path``."""
        rel = self.rel(path)
        with _refusals():
            return self._tree.lstat(rel) is not None

    def read_bytes(self, path: Path) -> bytes | None:
        """The contents of regular file ``path``, or None if there is none."""
        rel = self.rel(path)
        with _refusals():
            existing = self._tree.lstat(rel)
            if existing is None:
                return None
            self._check_regular(rel, existing)
            fd, _size = self._tree.open_read(rel)  # O_NOFOLLOW | O_NONBLOCK, S_ISREG checked
        with open(fd, "rb") as f:
            self._check_single_link(rel, os.fstat(f.fileno()))
            data = f.read(MAX_READ_BYTES + 1)
        if len(data) > MAX_READ_BYTES:
            raise DevUserError(f"{path} is larger than {MAX_READ_BYTES} bytes; not reading it")
        return data

    def write_bytes(self, path: Path, data: bytes) -> None:
        """Replace ``path`` with ``data`` (temp, then rename); refuse what was planted there."""
        rel = self.rel(path)
        with _refusals():
            existing = self._tree.lstat(rel)
            if existing is not None:
                self._check_regular(rel, existing)
            upload = self._tree.begin_upload(rel, overwrite=True)
            try:
                upload.write(data)
            except BaseException:
                upload.abort()
                raise
            upload.commit()

    def _check_regular(self, rel: RelPath, st: os.stat_result) -> None:
        where = self._tree.show(rel)
        if stat.S_ISLNK(st.st_mode):
            raise _unsafe(f"{where} is a symbolic link; the agent does not follow links")
        if not stat.S_ISREG(st.st_mode):
            raise _unsafe(f"{where} is not a regular file")
        self._check_single_link(rel, st)

    def _check_single_link(self, rel: RelPath, st: os.stat_result) -> None:
        if st.st_nlink > 1:
            raise _unsafe(
                f"{self._tree.show(rel)} has {st.st_nlink} hard links; the agent does not "
                "read or replace a file that has other names"
            )


def _unsafe(why: str) -> UnsafeDevHome:
    return UnsafeDevHome(f"refusing to work in the dev home: {why}")


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """Workspace errors as the agent's: something in the way is unsafe, the rest a failure."""
    try:
        yield
    except (BadPath, Conflict) as exc:
        raise _unsafe(exc.message) from exc
    except WorkspaceError as exc:
        raise DevUserError(exc.message) from exc
