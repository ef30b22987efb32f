"""Confinement of the file browser to the workspace root, and its blocking operations.

Exceptions::

    ZlhError
     └── WorkspaceError            500 unless a subclass says otherwise
          ├── BadPath              400 hostile or malformed path, symlink in the way, bad request
          ├── Forbidden            403 the dev user may not do this
          ├── NotFound             404
          ├── Conflict             409 exists, not empty, is a directory
          ├── TooLarge             413 upload over the limit
          └── NoSpace              507 disk full or quota

Two layers:

* :func:`parse_client_path` turns what a client sent into a :class:`RelPath` (a tuple of names) or
  refuses it: NUL bytes, backslashes, absolute paths, ``..`` above the root, broken UTF-8
  (overlong sequences arrive as U+FFFD or fail strict decoding), and any name whose further
  URL-decoding (double encoding) or Unicode NFC/NFKC form contains a separator, a NUL or is a
  dot name (``%2e%2e``, fullwidth solidus U+FF0F, two-dot leader U+2025). Names are otherwise
  used byte for byte: Linux does not normalise names, so neither do we.
* :class:`Workspace` walks a :class:`RelPath` from an ``O_PATH`` descriptor of the root, one
  component at a time with ``openat(..., O_NOFOLLOW | O_DIRECTORY)``, and performs the final
  operation relative to the parent's descriptor (``*at`` calls, ``dir_fd=``). No symlink is ever
  followed, inside or out: a symlink swapped in for a directory between two requests (or during
  one) makes the walk fail instead of redirecting it, and a directory renamed after we opened it
  keeps receiving what we write. We walk rather than use ``openat2(RESOLVE_BENEATH)`` so there is
  one code path with the same semantics on every kernel; the walk costs one syscall per path
  component. Symlinks are listed as links, their target shown only if it stays inside.

Every method here blocks; run them through :class:`zlh.agent.runas.FsRunner` so they execute
with the dev user's filesystem identity.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import shutil
import stat
import unicodedata
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from zlh.errors import ZlhError
from zlh.schemas.files import DirListing, EntryType, FileEntry

__all__ = [
    "BadPath",
    "Conflict",
    "Forbidden",
    "NoSpace",
    "NotFound",
    "RelPath",
    "TooLarge",
    "Upload",
    "Workspace",
    "WorkspaceError",
    "parse_client_path",
]

DISPLAY_ROOT = "workspace/"
MAX_PATH_CHARS = 4096
MAX_NAME_BYTES = 255
_DECODE_ROUNDS = 4
_RENAME_NOREPLACE = 1

_WALK = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class WorkspaceError(ZlhError):
    status_code = 500


class BadPath(WorkspaceError):
    status_code = 400


class Forbidden(WorkspaceError):
    status_code = 403


class NotFound(WorkspaceError):
    status_code = 404


class Conflict(WorkspaceError):
    status_code = 409


class TooLarge(WorkspaceError):
    status_code = 413


class NoSpace(WorkspaceError):
    status_code = 507


@dataclass(frozen=True)
class RelPath:
    """A path below the workspace root as a tuple of plain names (no ``.``, ``..`` or ``/``)."""

    parts: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return "/".join(self.parts)

    @property
    def display(self) -> str:
        return DISPLAY_ROOT + self.text

    @property
    def is_root(self) -> bool:
        return not self.parts

    @property
    def parent(self) -> RelPath:
        return RelPath(self.parts[:-1])

    @property
    def name(self) -> str:
        return self.parts[-1]

    def child(self, name: str) -> RelPath:
        return RelPath((*self.parts, name))

    def contains(self, other: RelPath) -> bool:
        return other.parts[: len(self.parts)] == self.parts


def _refuse(raw: str, why: str) -> BadPath:
    return BadPath(f"path {raw!r} refused: {why}", reason="hostile-path")


def _fully_decoded(raw: str) -> str:
    """URL-decode until nothing changes, strictly as UTF-8 (overlong sequences fail here)."""
    text = raw
    for _ in range(_DECODE_ROUNDS):
        try:
            decoded = urllib.parse.unquote_to_bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise _refuse(
                raw, "not valid UTF-8 once decoded (overlong or broken sequence)"
            ) from None
        if decoded == text:
            return text
        text = decoded
    raise _refuse(raw, f"percent-encoded more than {_DECODE_ROUNDS} times")


def _hidden_forms(text: str) -> tuple[str, ...]:
    """What other layers might turn ``text`` into: decoded, then NFC and NFKC normalised."""
    decoded = _fully_decoded(text)
    return (
        decoded,
        unicodedata.normalize("NFC", decoded),
        unicodedata.normalize("NFKC", decoded),
        unicodedata.normalize("NFKC", text),
    )


def parse_client_path(raw: str) -> RelPath:
    """The workspace-relative path a client means by ``raw`` (already URL-decoded once)."""
    if "\x00" in raw:
        raise _refuse(raw, "contains a NUL byte")
    if "\ufffd" in raw:
        raise _refuse(raw, "not valid UTF-8 (overlong or broken byte sequence)")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse(raw, "not valid UTF-8 (lone surrogate)") from None
    if len(raw) > MAX_PATH_CHARS:
        raise _refuse(raw[:64] + "...", f"longer than {MAX_PATH_CHARS} characters")
    if "\\" in raw:
        raise _refuse(raw, "contains a backslash; separate names with '/'")
    if raw.startswith("/"):
        raise _refuse(raw, "absolute; give a path relative to workspace/")
    for form in _hidden_forms(raw):
        if "\x00" in form:
            raise _refuse(raw, "contains an encoded NUL byte")
        if "\\" in form:
            raise _refuse(raw, "contains an encoded or lookalike backslash")
        if form.startswith("/"):
            raise _refuse(raw, "absolute once decoded or normalised")
    parts: list[str] = []
    for name in raw.split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            if not parts:
                raise _refuse(raw, "'..' leaves workspace/")
            parts.pop()
            continue
        _check_name(raw, name)
        parts.append(name)
    return RelPath(tuple(parts))


def _check_name(raw: str, name: str) -> None:
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise _refuse(raw, f"a name is longer than {MAX_NAME_BYTES} bytes")
    for form in _hidden_forms(name):
        if "/" in form:
            raise _refuse(raw, f"{name!r} hides a '/' (encoded or a lookalike)")
        if form in (".", ".."):
            raise _refuse(raw, f"{name!r} hides {form!r} (encoded or a lookalike)")


def _translate(exc: OSError, where: str, doing: str) -> WorkspaceError:
    """``exc`` as the :class:`WorkspaceError` a person can act on; ``where`` names the path."""
    table: dict[int, WorkspaceError] = {
        errno.ENOENT: NotFound(f"{where} does not exist"),
        errno.EEXIST: Conflict(f"{where} already exists"),
        errno.ENOTEMPTY: Conflict(f"{where} is not empty; pass recursive=true to delete it"),
        errno.EISDIR: Conflict(f"{where} is a directory"),
        errno.ENOTDIR: BadPath(f"a component of {where} is not a directory"),
        errno.ELOOP: _symlink(where),
        errno.EACCES: Forbidden(f"the dev user may not {doing} {where}"),
        errno.EPERM: Forbidden(f"the dev user may not {doing} {where}"),
        errno.ENAMETOOLONG: BadPath(f"{where} is too long"),
        errno.EINVAL: BadPath(f"cannot {doing} {where}: {exc.strerror}"),
        errno.EXDEV: BadPath(f"cannot {doing} {where} across filesystems"),
        errno.ENOSPC: NoSpace(f"no space left to {doing} {where}"),
        errno.EDQUOT: NoSpace(f"disk quota exceeded to {doing} {where}"),
    }
    known = table.get(exc.errno or 0)
    return known or WorkspaceError(f"{doing} {where} failed: {exc.strerror or exc}")


def _symlink(where: str) -> BadPath:
    return BadPath(f"{where} is a symbolic link; the agent does not follow links", reason="symlink")


Translate = Callable[[OSError, RelPath, str], WorkspaceError]


def _rename_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """``renameat2(RENAME_NOREPLACE)``; falls back to check-then-rename where unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is not None:
        if renameat2(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, os.strerror(err), dst)
    try:
        os.stat(dst, dir_fd=dst_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        return
    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)


class Upload:
    """A file being written: a hidden temp file in the target directory, renamed on commit."""

    def __init__(
        self, parent_fd: int, rel: RelPath, *, overwrite: bool, translate: Translate
    ) -> None:
        self.rel = rel
        self._translate = translate
        self.size = 0
        self._parent = parent_fd
        self._overwrite = overwrite
        self._temp = f".zlh-upload-{secrets.token_hex(8)}"
        try:
            self._fd = os.open(self._temp, _TEMP, 0o644, dir_fd=parent_fd)
        except OSError as exc:
            os.close(parent_fd)
            raise translate(exc, rel, "upload to") from exc
        self._open = True

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            self.abort()
            raise self._translate(exc, self.rel, "write") from exc
        self.size += len(data)

    def commit(self) -> None:
        """fsync, then move into place (atomic); on any failure nothing is left behind."""
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            if self._overwrite:
                os.rename(
                    self._temp, self.rel.name, src_dir_fd=self._parent, dst_dir_fd=self._parent
                )
            else:
                _rename_noreplace(self._parent, self._temp, self._parent, self.rel.name)
            dir_fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self._parent)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            self.abort()
            raise self._translate(exc, self.rel, "upload to") from exc
        self._close()

    def abort(self) -> None:
        """Remove the temp file. Safe to call more than once."""
        if not self._open:
            return
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temp, dir_fd=self._parent)
        self._close()

    def _close(self) -> None:
        if self._open:
            os.close(self._parent)
            self._open = False


class Workspace:
    """The workspace root and every operation below it, confined as the module doc explains.

    ``label`` is how messages name the root: ``workspace/`` for the file browser's clients, the
    absolute path (``/home/dev/``) where the agent itself works below a dev-writable directory.
    """

    def __init__(self, root: Path, *, label: str = DISPLAY_ROOT) -> None:
        if not root.is_absolute():
            raise ValueError(f"workspace root must be absolute, got {root}")
        self.root = root
        self.label = label

    def show(self, rel: RelPath) -> str:
        """``rel`` as messages name it."""
        return self.label + rel.text

    def _translate(self, exc: OSError, rel: RelPath, doing: str) -> WorkspaceError:
        return _translate(exc, self.show(rel), doing)

    # -- walking -------------------------------------------------------------------------------

    def _open_root(self) -> int:
        try:
            return os.open(self.root, _WALK)
        except FileNotFoundError:
            raise NotFound(f"{self.label} does not exist yet") from None
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                message = f"{self.label} is not a directory (symbolic links are not followed)"
                raise Conflict(message) from exc
            raise self._translate(exc, RelPath(), "open") from exc

    def _open_dir(self, rel: RelPath, *, create: bool = False) -> int:
        """An ``O_PATH`` descriptor of directory ``rel``, walked without following symlinks."""
        fd = self._open_root()
        try:
            for depth, name in enumerate(rel.parts):
                here = RelPath(rel.parts[: depth + 1])
                if create:
                    with contextlib.suppress(FileExistsError):
                        self._mkdir_at(fd, name, here)
                try:
                    child = os.open(name, _WALK, dir_fd=fd)
                except OSError as exc:
                    raise self._explain(fd, name, here, exc, "open") from exc
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def _dir(self, rel: RelPath) -> Iterator[int]:
        fd = self._open_dir(rel)
        try:
            yield fd
        finally:
            os.close(fd)

    def _explain(
        self, dir_fd: int, name: str, rel: RelPath, exc: OSError, doing: str
    ) -> WorkspaceError:
        """Name a symlink met on the way as such (``O_NOFOLLOW`` reports ELOOP or ENOTDIR)."""
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            with contextlib.suppress(OSError):
                if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                    return _symlink(self.show(rel))
                return BadPath(f"{self.show(rel)} is not a directory")
        return self._translate(exc, rel, doing)

    def _open_final(self, rel: RelPath, flags: int, doing: str) -> int:
        if rel.is_root:
            with self._dir(rel) as fd:
                try:
                    return os.open(".", flags | os.O_CLOEXEC, dir_fd=fd)
                except OSError as exc:
                    raise self._translate(exc, rel, doing) from exc
        with self._dir(rel.parent) as parent:
            try:
                return os.open(rel.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            except OSError as exc:
                raise self._explain(parent, rel.name, rel, exc, doing) from exc

    def _mkdir_at(self, dir_fd: int, name: str, rel: RelPath) -> None:
        try:
            os.mkdir(name, 0o755, dir_fd=dir_fd)
        except FileExistsError:
            raise
        except OSError as exc:
            raise self._translate(exc, rel, "create") from exc

    # -- operations ----------------------------------------------------------------------------

    def list_dir(self, rel: RelPath) -> DirListing:
        fd = self._open_final(rel, os.O_RDONLY | os.O_DIRECTORY, "list")
        try:
            entries = [e for name in sorted(os.listdir(fd)) if (e := self._entry(fd, rel, name))]
        finally:
            os.close(fd)
        return DirListing(path=rel.text, display=self.show(rel), entries=entries)

    def _entry(self, dir_fd: int, rel: RelPath, name: str) -> FileEntry | None:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            target = os.readlink(name, dir_fd=dir_fd) if stat.S_ISLNK(st.st_mode) else None
        except FileNotFoundError:
            return None  # removed while we listed
        shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return FileEntry(
            name=shown,
            path=rel.child(shown).text,
            type=_entry_type(st.st_mode),
            size=st.st_size,
            mtime=st.st_mtime,
            mode=stat.S_IMODE(st.st_mode),
            target=None if target is None else self._inside_target(rel, target),
        )

    def _inside_target(self, rel: RelPath, target: str) -> str | None:
        """A link target as a workspace-relative path, or None if it points outside."""
        root = str(self.root).rstrip("/")
        if target.startswith("/"):
            if target != root and not target.startswith(root + "/"):
                return None
            parts: list[str] = []
            target = target[len(root) :]
        else:
            parts = list(rel.parts)
        for name in target.split("/"):
            if name in ("", "."):
                continue
            if name == "..":
                if not parts:
                    return None
                parts.pop()
            else:
                parts.append(name)
        return "/".join(parts)

    def open_read(self, rel: RelPath) -> tuple[int, int]:
        """A descriptor of regular file ``rel`` and its size; the caller closes it."""
        fd = self._open_final(rel, _READ, "read")
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            if stat.S_ISDIR(st.st_mode):
                raise BadPath(f"{self.show(rel)} is a directory; list it with GET /files")
            raise BadPath(f"{self.show(rel)} is not a regular file")
        return fd, st.st_size

    def lstat(self, rel: RelPath) -> os.stat_result | None:
        """What ``rel`` itself is (a link is not followed), or None if nothing has that name."""
        try:
            parent = self._open_dir(rel.parent)
        except NotFound:
            return None
        try:
            if rel.is_root:
                return os.fstat(parent)
            return os.stat(rel.name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._translate(exc, rel, "inspect") from exc
        finally:
            os.close(parent)

    def begin_upload(self, rel: RelPath, *, overwrite: bool) -> Upload:
        if rel.is_root:
            raise Conflict(f"{self.label} is a directory")
        parent = self._open_dir(rel.parent)
        try:
            st = os.stat(rel.name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            pass
        except OSError as exc:
            os.close(parent)
            raise self._translate(exc, rel, "upload to") from exc
        else:
            if stat.S_ISDIR(st.st_mode) or not overwrite:
                os.close(parent)
                what = "is a directory" if stat.S_ISDIR(st.st_mode) else "already exists"
                raise Conflict(f"{self.show(rel)} {what}")
        return Upload(parent, rel, overwrite=overwrite, translate=self._translate)

    def mkdir(self, rel: RelPath, *, parents: bool) -> None:
        if parents:
            os.close(self._open_dir(rel, create=True))
            return
        if rel.is_root:
            raise Conflict(f"{self.label} already exists")
        with self._dir(rel.parent) as parent:
            try:
                self._mkdir_at(parent, rel.name, rel)
            except FileExistsError:
                raise Conflict(f"{self.show(rel)} already exists") from None

    def move(self, source: RelPath, destination: RelPath, *, overwrite: bool) -> None:
        if source.is_root or destination.is_root:
            raise BadPath(f"{self.label} itself cannot be moved or replaced")
        if source.contains(destination):
            moved, into = self.show(source), self.show(destination)
            raise BadPath(f"cannot move {moved} into itself ({into})")
        with self._dir(source.parent) as src, self._dir(destination.parent) as dst:
            try:
                os.stat(source.name, dir_fd=src, follow_symlinks=False)
            except OSError as exc:
                raise self._translate(exc, source, "move") from exc
            try:
                if overwrite:
                    os.rename(source.name, destination.name, src_dir_fd=src, dst_dir_fd=dst)
                else:
                    _rename_noreplace(src, source.name, dst, destination.name)
            except OSError as exc:
                raise self._translate(exc, destination, "move to") from exc

    def delete(self, rel: RelPath, *, recursive: bool) -> None:
        if rel.is_root:
            raise BadPath(f"{self.label} itself cannot be deleted")
        with self._dir(rel.parent) as parent:
            try:
                st = os.stat(rel.name, dir_fd=parent, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    os.unlink(rel.name, dir_fd=parent)
                elif recursive:
                    shutil.rmtree(rel.name, dir_fd=parent)
                else:
                    os.rmdir(rel.name, dir_fd=parent)
            except OSError as exc:
                raise self._translate(exc, rel, "delete") from exc


def _entry_type(mode: int) -> EntryType:
    if stat.S_ISLNK(mode):
        return EntryType.SYMLINK
    if stat.S_ISDIR(mode):
        return EntryType.DIR
    if stat.S_ISREG(mode):
        return EntryType.FILE
    return EntryType.OTHER
