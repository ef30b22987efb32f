"""Deterministic tarballs: the same tree always packs to the same bytes.

Entries are written in sorted order with a fixed mtime, uid/gid 0 and normalised modes, and
the gzip header carries no name and no time, so a rebuild of the same inputs hashes the same.
Only directories, regular files and symlinks that stay inside the tree are packed: a tree that
holds anything else (devices, fifos, sockets, links pointing out) is refused, because the agent
would refuse to extract it anyway.
"""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from zlh.artifacts.errors import ArtifactError

__all__ = ["FIXED_MTIME", "tree_size", "write_tarball"]

# 2024-01-01T00:00:00Z. Any constant works; a plausible date keeps `tar -tv` listings sane.
FIXED_MTIME = 1_704_067_200
_COMPRESS_LEVEL = 6
_CHUNK = 1 << 20


def write_tarball(
    tree: Path,
    target: Path,
    *,
    arcname: str,
    advance: Callable[[int], None] | None = None,
) -> None:
    """Pack ``tree`` as ``arcname/…`` into the gzipped tarball ``target``.

    ``advance`` is told how many file bytes were packed so far, for a progress bar.
    """
    if not tree.is_dir():
        raise ArtifactError(f"cannot pack {tree}: not a directory")
    with (
        target.open("wb") as raw,
        gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=_COMPRESS_LEVEL
        ) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path, relative in _walk(tree):
            info = _tarinfo(tree, path, f"{arcname}/{relative}" if relative else arcname)
            if info.isreg():
                with path.open("rb") as data:
                    tar.addfile(info, data)
                if advance is not None:
                    advance(info.size)
            else:
                tar.addfile(info)


def tree_size(tree: Path) -> int:
    """Total bytes of the regular files below ``tree`` (what ``write_tarball`` reports)."""
    return sum(p.lstat().st_size for p, _ in _walk(tree) if p.is_file() and not p.is_symlink())


def _walk(tree: Path) -> Iterator[tuple[Path, str]]:
    """Every entry below ``tree`` (itself first), depth first, names sorted bytewise."""
    yield tree, ""
    yield from _walk_dir(tree, "")


def _walk_dir(directory: Path, prefix: str) -> Iterator[tuple[Path, str]]:
    for child in sorted(os.scandir(directory), key=lambda e: os.fsencode(e.name)):
        relative = f"{prefix}{child.name}"
        yield Path(child.path), relative
        if child.is_dir(follow_symlinks=False):
            yield from _walk_dir(Path(child.path), relative + "/")


def _tarinfo(tree: Path, path: Path, name: str) -> tarfile.TarInfo:
    st = path.lstat()
    info = tarfile.TarInfo(name)
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    executable = bool(st.st_mode & 0o111)
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    elif stat.S_ISREG(st.st_mode):
        info.type = tarfile.REGTYPE
        info.mode = 0o755 if executable else 0o644
        info.size = st.st_size
    elif stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.mode = 0o777
        info.linkname = _inside_link(tree, path)
    else:
        raise ArtifactError(f"cannot pack {path}: not a file, directory or symlink")
    return info


def _inside_link(tree: Path, path: Path) -> str:
    """The link's target, refused when it is absolute or climbs out of ``tree``."""
    target = os.readlink(path)
    depth = len(path.relative_to(tree).parts) - 1  # directories between the tree and the link
    for part in PurePosixPath(target).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            break
    if depth >= 0 and not target.startswith("/"):
        return target
    raise ArtifactError(f"cannot pack {path}: symlink to {target!r} points outside the tree")
