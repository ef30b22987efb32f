"""Wire models of the workspace file browser, shared by the agent and the API relay.

Paths on the wire are relative to the workspace root (``src/main.py``, ``""`` for the root);
``display`` is what the portal shows (``workspace/src/main.py``).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from zlh.schemas._base import WireModel

__all__ = ["DirListing", "EntryType", "FileEntry", "MkdirRequest", "MoveRequest", "PathResult"]


class EntryType(StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    OTHER = "other"


class FileEntry(WireModel):
    name: str
    path: str
    type: EntryType
    size: int
    mtime: float = Field(description="seconds since the epoch")
    mode: int = Field(description="permission bits, e.g. 420 for 0o644")
    target: str | None = Field(
        default=None,
        description="a symlink's target relative to the workspace, only when it stays inside",
    )


class DirListing(WireModel):
    path: str
    display: str
    entries: list[FileEntry]


class MkdirRequest(WireModel):
    path: str = Field(min_length=1, max_length=4096)
    parents: bool = False


class MoveRequest(WireModel):
    source: str = Field(min_length=1, max_length=4096)
    destination: str = Field(min_length=1, max_length=4096)
    overwrite: bool = False


class PathResult(WireModel):
    """What a write answers: the path it touched, and the size for an upload."""

    path: str
    display: str
    size: int | None = None
