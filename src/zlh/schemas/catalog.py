"""The runtime catalog: the single source of truth for what can be installed.

Every artifact is pinned by url, sha256 and size; the agent refuses anything that does not
match. The catalog is plain data: loading it from disk or HTTP lives in ``zlh.artifacts``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field, model_validator

from zlh.schemas._base import WireModel
from zlh.schemas.addons import AddonName
from zlh.schemas.artifact import Artifact, Version

__all__ = [
    "SCHEMA_VERSION",
    "ArtifactKind",
    "Catalog",
    "CatalogEntry",
    "CatalogLookupError",
    "RuntimeName",
    "VersionEntry",
]

SCHEMA_VERSION = 1


class RuntimeName(StrEnum):
    NODE = "node"
    PYTHON = "python"
    GO = "go"
    JAVA = "java"
    DOTNET = "dotnet"


class ArtifactKind(StrEnum):
    RUNTIME = "runtime"
    ADDON = "addon"


class VersionEntry(WireModel):
    version: Version
    artifact: Artifact


class CatalogEntry(WireModel):
    """All versions of one runtime or addon, with the version picked when none is asked for."""

    default: Version
    versions: list[VersionEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _versions_unique_and_default_known(self) -> CatalogEntry:
        seen: set[str] = set()
        for entry in self.versions:
            if entry.version in seen:
                raise ValueError(f"duplicate version {entry.version!r}")
            seen.add(entry.version)
        if self.default not in seen:
            raise ValueError(
                f"default version {self.default!r} is not among the versions {sorted(seen)}"
            )
        return self

    def get(self, version: str) -> Artifact | None:
        for entry in self.versions:
            if entry.version == version:
                return entry.artifact
        return None


class CatalogLookupError(LookupError):
    """A request names something the catalog does not have. ``field`` names what was wrong."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class Catalog(WireModel):
    schema_version: Literal[1] = 1
    generated: datetime | None = None
    runtimes: dict[RuntimeName, CatalogEntry] = Field(default_factory=dict)
    addons: dict[AddonName, CatalogEntry] = Field(default_factory=dict)

    def section(self, kind: ArtifactKind) -> dict[str, CatalogEntry]:
        entries = self.runtimes if kind is ArtifactKind.RUNTIME else self.addons
        return {str(name): entry for name, entry in entries.items()}

    def resolve(
        self, kind: ArtifactKind, name: str, version: str | None = None
    ) -> tuple[str, Artifact]:
        """The (version, artifact) a request for ``name`` at ``version`` (or the default) means."""
        field = "runtime" if kind is ArtifactKind.RUNTIME else "addons"
        entry = self.section(kind).get(name)
        if entry is None:
            known = ", ".join(sorted(self.section(kind))) or "none"
            raise CatalogLookupError(f"unknown {kind.value} {name!r} (known: {known})", field=field)
        chosen = version or entry.default
        artifact = entry.get(chosen)
        if artifact is None:
            known = ", ".join(e.version for e in entry.versions)
            raise CatalogLookupError(
                f"{kind.value} {name!r} has no version {chosen!r} (known: {known})",
                field="version" if kind is ArtifactKind.RUNTIME else field,
            )
        return chosen, artifact

    def with_version(
        self,
        kind: ArtifactKind,
        name: str,
        version: str,
        artifact: Artifact,
        *,
        make_default: bool = False,
    ) -> Catalog:
        """A new catalog with ``version`` added or replaced. The first version becomes default."""
        section = self.section(kind)
        old = section.get(name)
        versions = [e for e in (old.versions if old else []) if e.version != version]
        versions.append(VersionEntry(version=version, artifact=artifact))
        versions.sort(key=lambda e: _version_sort_key(e.version))
        default = version if (old is None or make_default) else old.default
        section[name] = CatalogEntry(default=default, versions=versions)
        return self._with_section(kind, section)

    def without_version(self, kind: ArtifactKind, name: str, version: str) -> Catalog:
        """A new catalog without ``version``; the default moves to the newest one left."""
        section = self.section(kind)
        old = section.get(name)
        if old is None or old.get(version) is None:
            raise CatalogLookupError(
                f"{kind.value} {name} {version} is not in the catalog", field="version"
            )
        versions = [e for e in old.versions if e.version != version]
        if versions:
            default = old.default if old.default != version else versions[-1].version
            section[name] = CatalogEntry(default=default, versions=versions)
        else:
            del section[name]
        return self._with_section(kind, section)

    def _with_section(self, kind: ArtifactKind, section: dict[str, CatalogEntry]) -> Catalog:
        key = "runtimes" if kind is ArtifactKind.RUNTIME else "addons"
        data = self.model_dump(mode="json")
        data[key] = {name: entry.model_dump(mode="json") for name, entry in section.items()}
        data["generated"] = datetime.now(UTC).isoformat()
        return Catalog.model_validate(data)


def _version_sort_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Numeric-aware ordering so that 1.25 sorts after 1.9 and 22 after 8."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"[._+-]", version)
    )
