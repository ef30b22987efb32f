"""What a layer holds, file by file, so that a change on disk is found before a container
mounts it.

A manifest lists every entry of the tree (path, type, mode, size, and the sha256 of a file's
bytes or a link's target) and, per entry, the ``mtime_ns`` and ``ctime_ns`` it had when the layer
was built. Two checks read it:

- :func:`quick_check`, before every use: the tree's entries and their stat figures against the
  manifest. Any write to a file, any chmod, chown, rename, new or removed entry changes a
  ``ctime``, which no user-space call can set back, so this finds every change made through the
  file system in one ``lstat`` per entry, without reading the bytes.
- :func:`full_check`, on demand (``zlh layers verify``): the bytes themselves, hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from zlh.atomic import write_atomically

__all__ = ["Entry", "Manifest", "full_check", "quick_check", "read_manifest", "scan"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the layer's top; "." for the top itself
    kind: str  # "d", "f" or "l"
    mode: int
    size: int
    mtime_ns: int
    ctime_ns: int
    digest: str = ""  # a file's sha256, a link's target

    def same_stat(self, other: Entry) -> bool:
        return (self.kind, self.mode, self.size, self.mtime_ns, self.ctime_ns) == (
            other.kind,
            other.mode,
            other.size,
            other.mtime_ns,
            other.ctime_ns,
        )


@dataclass(frozen=True)
class Manifest:
    sha256: str  # the artifact the layer was built from
    entries: tuple[Entry, ...]

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries if e.kind == "f")

    def write(self, path: Path) -> None:
        rows = [
            [e.path, e.kind, e.mode, e.size, e.mtime_ns, e.ctime_ns, e.digest] for e in self.entries
        ]
        write_atomically(path, json.dumps({"sha256": self.sha256, "entries": rows}), mode=0o644)


def read_manifest(path: Path) -> Manifest | None:
    """The manifest at ``path``, or None when it is missing or unreadable."""
    try:
        raw = json.loads(path.read_bytes())
        entries = tuple(
            Entry(str(p), str(k), int(m), int(s), int(mt), int(ct), str(d))
            for p, k, m, s, mt, ct, d in raw["entries"]
        )
        return Manifest(sha256=str(raw["sha256"]), entries=entries)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _walk(top: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry below ``top`` (and ``top`` itself as "."), never following a link."""
    yield ".", os.lstat(top)
    stack = [(top, "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as found:
            entries = sorted(found, key=lambda e: e.name)
        for entry in entries:
            rel = prefix + entry.name
            info = entry.stat(follow_symlinks=False)
            yield rel, info
            if stat.S_ISDIR(info.st_mode):
                stack.append((Path(entry.path), rel + "/"))


def _kind(info: os.stat_result) -> str:
    if stat.S_ISDIR(info.st_mode):
        return "d"
    if stat.S_ISREG(info.st_mode):
        return "f"
    if stat.S_ISLNK(info.st_mode):
        return "l"
    raise ValueError(f"not a file, directory or link (mode {info.st_mode:o})")


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _entry(top: Path, rel: str, info: os.stat_result, *, hashed: bool) -> Entry:
    kind = _kind(info)
    digest = ""
    if kind == "l":
        digest = os.readlink(top / rel)
    elif kind == "f" and hashed:
        digest = _digest(top / rel)
    size = info.st_size if kind != "d" else 0
    mode = stat.S_IMODE(info.st_mode)
    return Entry(rel, kind, mode, size, info.st_mtime_ns, info.st_ctime_ns, digest)


def scan(top: Path, sha256: str) -> Manifest:
    """The manifest of the tree at ``top`` as it is now (every file hashed)."""
    entries = tuple(_entry(top, rel, info, hashed=True) for rel, info in _walk(top))
    return Manifest(sha256=sha256, entries=entries)


def quick_check(top: Path, manifest: Manifest) -> str | None:
    """None when the tree still has exactly the manifest's entries with their stat figures;
    else what differs first, for a person."""
    expected = {e.path: e for e in manifest.entries}
    try:
        for rel, info in _walk(top):
            entry = expected.pop(rel, None)
            if entry is None:
                return f"{rel} was added"
            if not _entry(top, rel, info, hashed=False).same_stat(entry):
                return f"{rel} was changed"
    except (OSError, ValueError) as exc:
        return f"it cannot be read: {exc}"
    if expected:
        return f"{min(expected)} was removed"
    return None


def full_check(top: Path, manifest: Manifest) -> str | None:
    """:func:`quick_check`, then every file's bytes and every link's target against the
    manifest's digests."""
    problem = quick_check(top, manifest)
    if problem is not None:
        return problem
    for entry in manifest.entries:
        if entry.kind == "d":
            continue
        try:
            found = (
                os.readlink(top / entry.path) if entry.kind == "l" else _digest(top / entry.path)
            )
        except OSError as exc:
            return f"{entry.path} cannot be read: {exc.strerror}"
        if found != entry.digest:
            return f"{entry.path} does not have the bytes it was built with"
    return None
