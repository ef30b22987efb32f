"""What is installed: completion markers, and the leftovers a crash can leave beside a target.

Reading this needs none of the installing machinery (HTTP client, tar, threads), so ``/status``
and the runtime routes import only this module; :mod:`zlh.install.installer` writes the markers.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from zlh.schemas import ArtifactFormat, ArtifactKind, ArtifactMetadata
from zlh.schemas._base import WireModel

__all__ = [
    "MARKER_NAME",
    "Marker",
    "is_mount_point",
    "read_marker",
    "retire",
    "sweep",
    "sweep_all",
]

MARKER_NAME = ".zlh-install.json"
# '~' cannot appear in a version, so '.staging~22~*' never matches version 22-1's staging dir.
_LEFTOVER_PREFIXES = (".staging~", ".old~", ".removing~")


class Marker(WireModel):
    """What was installed, from which artifact. Written last, inside the tree it describes."""

    kind: ArtifactKind
    name: str
    version: str
    sha256: str
    size: int
    url: str
    format: ArtifactFormat
    strip_components: int
    bin: list[str]
    metadata: ArtifactMetadata
    installed_at: datetime


def read_marker(target: Path) -> Marker | None:
    """The marker of ``target``, or None if it is missing or unreadable (= not installed).

    A ``target`` that is itself a symlink is never installed, whatever it points at: installs
    are real directories the agent renamed into place, so a planted link is never read
    through (activated, reported or counted as present)."""
    if target.is_symlink():
        return None
    try:
        return Marker.model_validate_json((target / MARKER_NAME).read_bytes())
    except (OSError, ValidationError):
        return None


def is_mount_point(path: Path) -> bool:
    """Whether something is mounted at ``path`` (a host layer, zlh.layers), read from
    ``/proc/self/mountinfo``: ``os.path.ismount`` misses a bind mount from the same file
    system, where device numbers are equal."""
    where = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as info:
            for line in info:
                fields = line.split(" ", 5)
                if len(fields) > 4 and _unescape(fields[4]) == where:
                    return True
    except OSError:
        return os.path.ismount(path)
    return False


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def leftover_name(prefix: str, target: Path) -> str:
    return f"{prefix}{target.name}~"


def sweep(target: Path) -> None:
    """Remove what a crashed install, swap or removal of ``target`` left beside it."""
    if not target.parent.is_dir():
        return
    names = tuple(leftover_name(p, target) for p in _LEFTOVER_PREFIXES)
    for entry in target.parent.iterdir():
        if entry.name.startswith(names):
            shutil.rmtree(entry, ignore_errors=True)


def sweep_all(parents: list[Path]) -> None:
    """At startup, nothing is being installed: every leftover under ``parents`` goes."""
    for parent in parents:
        if parent.is_dir():
            for entry in parent.iterdir():
                if entry.name.startswith(_LEFTOVER_PREFIXES):
                    shutil.rmtree(entry, ignore_errors=True)


def retire(target: Path) -> None:
    """Make ``target`` disappear atomically (rename aside), then delete it."""
    aside = target.parent / (leftover_name(".removing~", target) + os.urandom(4).hex())
    os.rename(target, aside)
    shutil.rmtree(aside, ignore_errors=True)
