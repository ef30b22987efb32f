"""The data dir is private: 0700, its files 0600, whatever the umask or an older install left.

It holds the database (argon2 hashes, sessions, sealed keys), the key files, the settings and
the logs. Every command that writes there calls ``prepare_data_dir`` first: it sets the process
umask to 077 (so the database, its ``-wal``/``-shm``, logs and keys are created 0600) and
tightens what an existing install already has.

Tightening removes others' bits and group read/write: directories ``mode & ~0o067``, files
``mode & ~0o077``. A group traverse bit is kept: the lxc backend grants it on the data dir to
the containers' mapped root group (0710), which must reach the container root filesystems.
Nothing is chowned.

Only the data dir's own files are walked. ``lxc/`` (container root filesystems) is the
backend's and ``layers/`` (shared artifact trees, zlh.layers) the layer store's: both are left
alone; ``artifacts/``, ``cache/`` and ``process/`` can be large trees, so
only their top directory is tightened, which already keeps others out of everything below.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PRIVATE_UMASK",
    "Exposed",
    "exposed",
    "prepare_data_dir",
    "private_entries",
    "tighten",
]

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
DIR_STRIP = 0o067  # others' bits, group read and write; a group traverse bit stays
FILE_STRIP = 0o077  # group's and others' bits
# The lxc backend's container root filesystems, and the shared layers (zlh.layers): artifact
# trees containers read through mounts, nothing secret, whose every mode and ctime is checked.
LEFT_ALONE = frozenset({"lxc", "layers"})
TOP_ONLY = frozenset({"artifacts", "cache", "process"})  # big trees: their top dir only


@dataclass(frozen=True)
class Exposed:
    """A path of the data dir others may read (or list), and the mode it should have."""

    path: Path
    mode: int
    wanted: int

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


def _wanted(mode: int) -> int:
    strip = DIR_STRIP if stat.S_ISDIR(mode) else FILE_STRIP
    return stat.S_IMODE(mode) & ~strip


def private_entries(data_dir: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """The data dir, then its own directories and regular files (never through a symlink),
    within the scope described above."""
    data_dir = data_dir.resolve()  # a symlinked data dir: its target
    try:
        top = data_dir.stat()
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(top.st_mode):
        return
    yield data_dir, top
    yield from _walk(data_dir, top=True)


def _walk(directory: Path, *, top: bool) -> Iterator[tuple[Path, os.stat_result]]:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as exc:
        log.warning("cannot list %s: %s", directory, exc.strerror)
        return
    for entry in entries:
        if top and entry.name in LEFT_ALONE:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # removed meanwhile
            continue
        path = Path(entry.path)
        if stat.S_ISREG(st.st_mode):
            yield path, st
        elif stat.S_ISDIR(st.st_mode):
            yield path, st
            if not (top and entry.name in TOP_ONLY):
                yield from _walk(path, top=False)


def exposed(data_dir: Path, extra_files: Iterable[Path] = ()) -> list[Exposed]:
    """What of the data dir (and ``extra_files``: a database or key elsewhere) is more open
    than it should be."""
    entries = dict(private_entries(data_dir))
    for path in extra_files:
        path = path.absolute()
        if path in entries or path.resolve() in entries:
            continue
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode):
            entries[path] = st
    return [
        Exposed(path, st.st_mode, _wanted(st.st_mode))
        for path, st in entries.items()
        if stat.S_IMODE(st.st_mode) != _wanted(st.st_mode)
    ]


def tighten(data_dir: Path, extra_files: Iterable[Path] = ()) -> list[Exposed]:
    """Remove others' (and group read/write) bits from the data dir's own files and dirs;
    what was changed. A path that cannot be changed (not ours, read-only) is logged, not fatal.
    """
    changed: list[Exposed] = []
    for item in exposed(data_dir, extra_files):
        try:
            os.chmod(item.path, item.wanted, follow_symlinks=False)
        except FileNotFoundError:
            continue
        except (OSError, NotImplementedError) as exc:  # NotImplementedError: now a symlink
            log.warning("cannot make %s private: %s", item.path, exc)
            continue
        log.warning(
            "%s was %s by others (mode %o); now %o%s",
            item.path,
            "listable" if item.is_dir else "readable",
            stat.S_IMODE(item.mode),
            item.wanted,
            "" if item.is_dir else ": if it holds a secret, others may have read it",
        )
        changed.append(item)
    return changed


def prepare_data_dir(data_dir: Path, extra_files: Iterable[Path] = ()) -> list[Exposed]:
    """Umask 077 for this process (and what it starts), the data dir created 0700 if missing,
    an existing one tightened. Call it before anything writes into the data dir."""
    os.umask(PRIVATE_UMASK)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return tighten(data_dir, extra_files)
