"""Finished builds kept in the cache, so a fresh store does not pay for a rebuild.

``<cache>/built/<name>/<key>/<file>.tar.gz`` is a checked, packed build and ``<file>.json`` next
to it records the recipe it came from, its sha256 and its provenance labels. The JSON is
written last (temp file + rename), so a tarball without one is never reused, and a tarball whose
bytes no longer match its JSON is built again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from zlh.artifacts.builders.fetch import sha256_file
from zlh.atomic import write_atomically

__all__ = ["CachedBuild", "load_cached", "save_cached"]


@dataclass(frozen=True)
class CachedBuild:
    tarball: Path
    labels: dict[str, str]


def _paths(cache_dir: Path, name: str, key: str, filename: str) -> tuple[Path, Path]:
    directory = cache_dir / "built" / name / key
    return directory / filename, directory / f"{filename}.json"


def load_cached(
    cache_dir: Path, name: str, key: str, filename: str, recipe_id: str
) -> CachedBuild | None:
    """The cached build of exactly ``recipe_id``, if one is there and intact."""
    tarball, sidecar = _paths(cache_dir, name, key, filename)
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("recipe") != recipe_id:
        return None
    labels = record.get("labels")
    if not isinstance(labels, dict) or not tarball.is_file():
        return None
    if sha256_file(tarball) != record.get("sha256"):
        return None
    return CachedBuild(tarball, {str(k): str(v) for k, v in labels.items()})


def save_cached(
    cache_dir: Path,
    name: str,
    key: str,
    built: Path,
    recipe_id: str,
    labels: dict[str, str],
) -> CachedBuild:
    """Move the tarball ``built`` (same filesystem) into the cache and record it."""
    tarball, sidecar = _paths(cache_dir, name, key, built.name)
    tarball.parent.mkdir(parents=True, exist_ok=True)
    sidecar.unlink(missing_ok=True)
    os.replace(built, tarball)
    record = {"recipe": recipe_id, "sha256": sha256_file(tarball), "labels": labels}
    write_atomically(sidecar, json.dumps(record, indent=2, sort_keys=True))
    return CachedBuild(tarball, labels)
